"""Set 10 (the online softmax): every known-wrong implementation is caught, with the right diagnosis.
Written the way learners write them, independently of the grader's misconception models.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from attnbook.grading import get_task, run_task

INF = float("inf")

# ------------------------------------------------------------------------------------------ combine_max_sum


def combine_added(m1, l1, m2, l2):
    return torch.max(m1, m2), l1 + l2


def combine_upside_down(m1, l1, m2, l2):
    m = torch.where(m1 > m2, m1, m2)
    return m, l1 / torch.exp(m1 - m) + l2 / torch.exp(m2 - m)


def combine_keeps_m1(m1, l1, m2, l2):
    return m1, l1 + l2 * torch.exp(m2 - m1)


def combine_sums_maxima(m1, l1, m2, l2):
    m = m1 + m2
    big = torch.maximum(m1, m2)
    return m, l1 * (m1 - big).exp() + l2 * (m2 - big).exp()


def combine_through_exp(m1, l1, m2, l2):
    """Exact in real numbers, but exp(m) overflows for maxima of about 1000."""
    total = l1 * torch.exp(m1) + l2 * torch.exp(m2)
    m = torch.maximum(m1, m2)
    return m, total / torch.exp(m)


def combine_python_max(m1, l1, m2, l2):
    m = max(m1, m2)   # Python's max on tensors of several elements raises
    return m, l1 * torch.exp(m1 - m) + l2 * torch.exp(m2 - m)


# ------------------------------------------------------------------------------------------ running_max_sum


def rms_correct_loop(scores, block_size):
    m = torch.full(scores.shape[:-1], -INF, dtype=scores.dtype)
    l = torch.zeros(scores.shape[:-1], dtype=scores.dtype)
    for start in range(0, scores.shape[-1], block_size):
        block = scores[..., start:start + block_size]
        new_m = torch.maximum(m, block.max(dim=-1).values)
        l = l * torch.exp(m - new_m) + torch.exp(block - new_m.unsqueeze(-1)).sum(-1)
        m = new_m
    return m, l


def rms_no_rescale(scores, block_size):
    m = torch.full(scores.shape[:-1], -INF, dtype=scores.dtype)
    l = torch.zeros_like(m)
    for start in range(0, scores.shape[-1], block_size):
        block = scores[..., start:start + block_size]
        m = torch.maximum(m, block.max(-1).values)
        l = l + torch.exp(block - m[..., None]).sum(-1)
    return m, l


def rms_rescale_upside_down(scores, block_size):
    m = torch.full(scores.shape[:-1], -INF, dtype=scores.dtype)
    l = torch.zeros_like(m)
    for start in range(0, scores.shape[-1], block_size):
        block = scores[..., start:start + block_size]
        new_m = torch.maximum(m, block.max(-1).values)
        factor = torch.exp(new_m - m) if start > 0 else torch.ones_like(m)
        l = l * factor + torch.exp(block - new_m[..., None]).sum(-1)
        m = new_m
    return m, l


def rms_max_from_first_block(scores, block_size):
    m = scores[..., :block_size].max(-1).values
    l = torch.zeros_like(m)
    for start in range(0, scores.shape[-1], block_size):
        l = l + torch.exp(scores[..., start:start + block_size] - m[..., None]).sum(-1)
    return m, l


def rms_full_blocks_only(scores, block_size):
    n_blocks = scores.shape[-1] // block_size
    m = torch.full(scores.shape[:-1], -INF, dtype=scores.dtype)
    l = torch.zeros_like(m)
    for i in range(n_blocks):
        block = scores[..., i * block_size:(i + 1) * block_size]
        new_m = torch.maximum(m, block.amax(-1))
        l = l * torch.exp(m - new_m) + torch.exp(block - new_m[..., None]).sum(-1)
        m = new_m
    return m, l


def rms_no_shift(scores, block_size):
    return scores.amax(-1), torch.exp(scores).sum(-1)


def rms_floats(scores, block_size):
    m, l = rms_correct_loop(scores, block_size)
    return m.tolist(), l.tolist()


def rms_only_sum(scores, block_size):
    return rms_correct_loop(scores, block_size)[1]


def rms_in_place_shift(scores, block_size):
    m = scores.amax(-1)
    scores -= m[..., None]
    return m, scores.exp().sum(-1)


def rms_infinite(scores, block_size):
    start = 0
    while start < scores.shape[-1]:
        block = scores[..., start:start + block_size]  # noqa: F841  (forgot start += block_size)


# ------------------------------------------------------------------------------------------ attention


def osa(Q, K, V, block_size, *, rescale_l=True, rescale_acc=True, divide=True, fixed_max=False, drop_tail=False,
        scale=True):
    """One learner's loop with switches for the slips learners make."""
    T_k = K.shape[1]
    running_max = torch.full(Q.shape[:2] + (1,), -INF, dtype=Q.dtype)
    running_sum = torch.zeros(Q.shape[:2] + (1,), dtype=Q.dtype)
    out = torch.zeros(Q.shape[:2] + (V.shape[2],), dtype=Q.dtype)
    end = T_k - T_k % block_size if drop_tail else T_k
    for j in range(0, end, block_size):
        s = torch.bmm(Q, K[:, j:j + block_size].transpose(1, 2))
        if scale:
            s = s / math.sqrt(K.shape[-1])
        if fixed_max and j > 0:
            new_max = running_max
        else:
            new_max = torch.max(running_max, s.max(dim=-1, keepdim=True).values)
        p = torch.exp(s - new_max)
        c = torch.exp(running_max - new_max)
        running_sum = (running_sum * c if rescale_l else running_sum) + p.sum(-1, keepdim=True)
        out = (out * c if rescale_acc else out) + torch.bmm(p, V[:, j:j + block_size])
        running_max = new_max
    return out / running_sum if divide else out


def osa_per_block_average(Q, K, V, block_size):
    T_k = K.shape[1]
    n = math.ceil(T_k / block_size)
    out = 0
    for j in range(0, T_k, block_size):
        w = torch.softmax(Q @ K[:, j:j + block_size].mT / math.sqrt(Q.shape[-1]), -1)
        out = out + w @ V[:, j:j + block_size]
    return out / n


def osa_last_block_only_values(Q, K, V, block_size):
    """Keeps the weights right but forgets to accumulate the values (overwrites)."""
    T_k = K.shape[1]
    m = torch.full(Q.shape[:2] + (1,), -INF, dtype=Q.dtype)
    l = torch.zeros_like(m)
    acc = None
    for j in range(0, T_k, block_size):
        s = Q @ K[:, j:j + block_size].mT / math.sqrt(Q.shape[-1])
        m_new = torch.maximum(m, s.amax(-1, keepdim=True))
        p = torch.exp(s - m_new)
        l = l * torch.exp(m - m_new) + p.sum(-1, keepdim=True)
        acc = p @ V[:, j:j + block_size]
        m = m_new
    return acc / l


def osa_ignores_block_size(Q, K, V, block_size):
    """Correct: one block of everything. The grader checks values, so this passes (see the test below)."""
    return torch.softmax(Q @ K.mT / math.sqrt(Q.shape[-1]), -1) @ V


WRONG = {
    "10.combine_max_sum": [
        ("sums added", combine_added, "sum_not_rescaled", "own maximum"),
        ("divided by the factors", combine_upside_down, "rescaled_wrong_way", "upside down"),
        ("kept m1", combine_keeps_m1, "max_not_updated", "larger of m1 and m2"),
        ("m1 + m2", combine_sums_maxima, "maxima_added", "added the two maxima"),
        ("through exp(m)", combine_through_exp, "not_finite", "NaN or inf"),
        ("Python max", combine_python_max, "raised", "RuntimeError"),
        ("only m", lambda m1, l1, m2, l2: torch.maximum(m1, m2), "wrong_type", "2 values"),
    ],
    "10.running_max_sum": [
        ("no rescaling", rms_no_rescale, "sum_not_rescaled", "exp(m_old - m_new)"),
        ("rescaled by exp(new - old)", rms_rescale_upside_down, "rescaled_wrong_way", "shrink"),
        ("max of the first block", rms_max_from_first_block, "max_not_updated", "first block"),
        ("full blocks only", rms_full_blocks_only, "last_block_dropped", "last, shorter block"),
        ("exp without the shift", rms_no_shift, "sum_not_shifted", "without subtracting the maximum"),
        ("Python floats", rms_floats, "wrong_type", "torch.Tensor"),
        ("only l", rms_only_sum, "wrong_type", "2 values"),
        ("shifts the scores in place", rms_in_place_shift, "mutates_input", "`scores`"),
    ],
    "10.online_softmax_attention": [
        ("nothing rescaled", lambda Q, K, V, b: osa(Q, K, V, b, rescale_l=False, rescale_acc=False),
         "sum_not_rescaled", "exp(m_old - m_new)"),
        ("output not rescaled", lambda Q, K, V, b: osa(Q, K, V, b, rescale_acc=False), "output_not_rescaled",
         "running output"),
        ("maximum of the first block", lambda Q, K, V, b: osa(Q, K, V, b, fixed_max=True), "max_not_updated",
         "first block"),
        ("no final division", lambda Q, K, V, b: osa(Q, K, V, b, divide=False), "no_final_division", "divided by"),
        ("full blocks only", lambda Q, K, V, b: osa(Q, K, V, b, drop_tail=True), "last_block_dropped", "shorter block"),
        ("no √d_k", lambda Q, K, V, b: osa(Q, K, V, b, scale=False), "not_scaled", "√d_k"),
        ("softmax per block, averaged", osa_per_block_average, "softmax_per_block", "running maximum"),
        ("values overwritten", osa_last_block_only_values, "wrong_values", "first big difference"),
        ("sum rescaled, but max never stored",
         lambda Q, K, V, b: osa(Q, K, V, b) * 0 + torch.exp(Q @ K.mT / math.sqrt(Q.shape[-1])) @ V
         / torch.exp(Q @ K.mT / math.sqrt(Q.shape[-1])).sum(-1, keepdim=True), "not_finite", "maximum"),
    ],
}


def test_correct_block_loops_pass():
    assert run_task(get_task("10.running_max_sum"), rms_correct_loop).passed
    assert run_task(get_task("10.online_softmax_attention"), osa).passed


def test_the_book_implementation_passes():
    from attnbook.blockwise import online_softmax_attention, running_max_sum

    assert run_task(get_task("10.running_max_sum"), running_max_sum).passed
    # the book's function has an extra optional `mask` argument; the task's signature has four
    assert run_task(get_task("10.online_softmax_attention"), lambda Q, K, V, b: online_softmax_attention(Q, K, V, b)).passed


def test_values_are_graded_not_the_loop():
    """Known limit: the checker sees only the outputs, so the full softmax passes too (the task text asks
    for blocks; the chapter measures the memory)."""
    assert run_task(get_task("10.online_softmax_attention"), osa_ignores_block_size).passed


def test_infinite_loop_is_stopped():
    task = dataclasses.replace(get_task("10.running_max_sum"), timeout_s=0.5)
    result = run_task(task, rms_infinite)
    assert result.diagnosis == "timeout" and "loop that never ends" in result.message
