"""Set 10 (the online softmax): every known-wrong implementation is caught, with the right diagnosis.
Written the way learners write them, independently of the grader's misconception models.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

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
    m = max(m1, m2)  # Python's max on tensors of several elements raises
    return m, l1 * torch.exp(m1 - m) + l2 * torch.exp(m2 - m)


# ------------------------------------------------------------------------------------------ running_max_sum


def rms_correct_loop(scores, block_size):
    m = torch.full(scores.shape[:-1], -INF, dtype=scores.dtype)
    l = torch.zeros(scores.shape[:-1], dtype=scores.dtype)
    for start in range(0, scores.shape[-1], block_size):
        block = scores[..., start : start + block_size]
        new_m = torch.maximum(m, block.max(dim=-1).values)
        l = l * torch.exp(m - new_m) + torch.exp(block - new_m.unsqueeze(-1)).sum(-1)
        m = new_m
    return m, l


def rms_no_rescale(scores, block_size):
    m = torch.full(scores.shape[:-1], -INF, dtype=scores.dtype)
    l = torch.zeros_like(m)
    for start in range(0, scores.shape[-1], block_size):
        block = scores[..., start : start + block_size]
        m = torch.maximum(m, block.max(-1).values)
        l = l + torch.exp(block - m[..., None]).sum(-1)
    return m, l


def rms_rescale_upside_down(scores, block_size):
    m = torch.full(scores.shape[:-1], -INF, dtype=scores.dtype)
    l = torch.zeros_like(m)
    for start in range(0, scores.shape[-1], block_size):
        block = scores[..., start : start + block_size]
        new_m = torch.maximum(m, block.max(-1).values)
        factor = torch.exp(new_m - m) if start > 0 else torch.ones_like(m)
        l = l * factor + torch.exp(block - new_m[..., None]).sum(-1)
        m = new_m
    return m, l


def rms_max_from_first_block(scores, block_size):
    m = scores[..., :block_size].max(-1).values
    l = torch.zeros_like(m)
    for start in range(0, scores.shape[-1], block_size):
        l = l + torch.exp(scores[..., start : start + block_size] - m[..., None]).sum(-1)
    return m, l


def rms_full_blocks_only(scores, block_size):
    n_blocks = scores.shape[-1] // block_size
    m = torch.full(scores.shape[:-1], -INF, dtype=scores.dtype)
    l = torch.zeros_like(m)
    for i in range(n_blocks):
        block = scores[..., i * block_size : (i + 1) * block_size]
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
        block = scores[..., start : start + block_size]  # noqa: F841  (forgot start += block_size)


# ------------------------------------------------------------------------------------------ attention


def osa(
    Q,
    K,
    V,
    block_size,
    *,
    rescale_l=True,
    rescale_acc=True,
    divide=True,
    fixed_max=False,
    drop_tail=False,
    scale=True,
):
    """One learner's loop with switches for the slips learners make."""
    T_k = K.shape[1]
    running_max = torch.full(Q.shape[:2] + (1,), -INF, dtype=Q.dtype)
    running_sum = torch.zeros(Q.shape[:2] + (1,), dtype=Q.dtype)
    out = torch.zeros(Q.shape[:2] + (V.shape[2],), dtype=Q.dtype)
    end = T_k - T_k % block_size if drop_tail else T_k
    for j in range(0, end, block_size):
        s = torch.bmm(Q, K[:, j : j + block_size].transpose(1, 2))
        if scale == "d_v":
            s = s / V.shape[-1] ** 0.5
        elif scale == "d":
            s = s / K.shape[-1]
        elif scale:
            s = s / math.sqrt(K.shape[-1])
        if fixed_max and j > 0:
            new_max = running_max
        else:
            new_max = torch.max(running_max, s.max(dim=-1, keepdim=True).values)
        p = torch.exp(s - new_max)
        c = torch.exp(running_max - new_max)
        running_sum = (running_sum * c if rescale_l else running_sum) + p.sum(-1, keepdim=True)
        out = (out * c if rescale_acc else out) + torch.bmm(p, V[:, j : j + block_size])
        running_max = new_max
    return out / running_sum if divide else out


def osa_factor_upside_down(Q, K, V, block_size):
    """exp(new - old) instead of exp(old - new); the first block (old = -inf) handled by a branch."""
    m = l = acc = None
    for j in range(0, K.shape[1], block_size):
        s = Q @ K[:, j : j + block_size].mT / math.sqrt(Q.shape[-1])
        p_max = s.amax(-1, keepdim=True)
        if m is None:
            m = p_max
            p = torch.exp(s - m)
            l, acc = p.sum(-1, keepdim=True), p @ V[:, j : j + block_size]
            continue
        m_new = torch.maximum(m, p_max)
        c = torch.exp(m_new - m)
        p = torch.exp(s - m_new)
        l = l * c + p.sum(-1, keepdim=True)
        acc = acc * c + p @ V[:, j : j + block_size]
        m = m_new
    return acc / l


def osa_per_block_average(Q, K, V, block_size):
    T_k = K.shape[1]
    n = math.ceil(T_k / block_size)
    out = 0
    for j in range(0, T_k, block_size):
        w = torch.softmax(Q @ K[:, j : j + block_size].mT / math.sqrt(Q.shape[-1]), -1)
        out = out + w @ V[:, j : j + block_size]
    return out / n


def osa_last_block_only_values(Q, K, V, block_size):
    """Keeps the weights right but forgets to accumulate the values (overwrites)."""
    T_k = K.shape[1]
    m = torch.full(Q.shape[:2] + (1,), -INF, dtype=Q.dtype)
    l = torch.zeros_like(m)
    acc = None
    for j in range(0, T_k, block_size):
        s = Q @ K[:, j : j + block_size].mT / math.sqrt(Q.shape[-1])
        m_new = torch.maximum(m, s.amax(-1, keepdim=True))
        p = torch.exp(s - m_new)
        l = l * torch.exp(m - m_new) + p.sum(-1, keepdim=True)
        acc = p @ V[:, j : j + block_size]
        m = m_new
    return acc / l


def osa_ignores_block_size(Q, K, V, block_size):
    """Correct: one block of everything. The grader checks values, so this passes (see the test below)."""
    return torch.softmax(Q @ K.mT / math.sqrt(Q.shape[-1]), -1) @ V


def combine_naive(m1, l1, m2, l2):
    m = torch.maximum(m1, m2)
    return m, l1 * torch.exp(m1 - m) + l2 * torch.exp(m2 - m)


def combine_first_kept(m1, l1, m2, l2):
    m = torch.max(m1, m2)
    return m, l1 + l2 * (m2 - m).exp()


def combine_second_kept(m1, l1, m2, l2):
    m = torch.max(m1, m2)
    return m, l1 * (m1 - m).exp() + l2


def combine_swapped(m1, l1, m2, l2):
    m = torch.maximum(m1, m2)
    safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return l1 * torch.exp(m1 - safe) + l2 * torch.exp(m2 - safe), m


def combine_stacked(m1, l1, m2, l2):
    ms, ls = torch.stack([m1, m2]), torch.stack([l1, l2])
    m = ms.amax(0)
    safe = torch.nan_to_num(m, neginf=0.0)
    return m, (ls * (ms - safe).exp()).sum(0)


def combine_logaddexp(m1, l1, m2, l2):
    m = torch.maximum(m1, m2)
    lse = torch.logaddexp(m1 + l1.log(), m2 + l2.log())
    return m, torch.where(torch.isinf(m), torch.zeros_like(m), (lse - m).exp())


def rms_whole_row(scores, block_size):
    m = scores.max(dim=1).values
    return m, (scores - m[:, None]).exp().sum(dim=1)


def rms_logsumexp_row(scores, block_size):
    m = scores.amax(-1)
    return m, torch.exp(torch.logsumexp(scores, -1) - m)


def rms_one_key_at_a_time(scores, block_size):
    m = torch.full(scores.shape[:1], -INF, dtype=scores.dtype)
    l = torch.zeros_like(m)
    for i in range(scores.shape[1]):
        m_new = torch.maximum(m, scores[:, i])
        l = l * torch.exp(m - m_new) + torch.exp(scores[:, i] - m_new)
        m = m_new
    return m, l


def rms_double_blocks(scores, block_size):
    return rms_correct_loop(scores, 2 * block_size)


def rms_blocks_no_shift(scores, block_size):
    m = torch.full(scores.shape[:-1], -INF, dtype=scores.dtype)
    l = torch.zeros_like(m)
    for start in range(0, scores.shape[-1], block_size):
        block = scores[..., start : start + block_size]
        m = torch.maximum(m, block.amax(-1))
        l = l + block.exp().sum(-1)
    return m, l


def rms_starts_at_zero(scores, block_size):
    m = torch.zeros(scores.shape[:-1], dtype=scores.dtype)
    l = torch.zeros_like(m)
    for block in scores.split(block_size, dim=-1):
        new = torch.maximum(m, block.amax(-1))
        l = l * (m - new).exp() + (block - new[:, None]).exp().sum(-1)
        m = new
    return m, l


def rms_shifts_block_in_place(scores, block_size):
    m = torch.full(scores.shape[:-1], -INF, dtype=scores.dtype)
    l = torch.zeros_like(m)
    for start in range(0, scores.shape[-1], block_size):
        block = scores[:, start : start + block_size]
        m_new = torch.maximum(m, block.amax(-1))
        block -= m_new[:, None]  # a view: this writes into scores
        l = l * torch.exp(m - m_new) + block.exp().sum(-1)
        m = m_new
    return m, l


def rms_book(scores, block_size):
    from attnbook.blockwise import running_max_sum

    return running_max_sum(scores, block_size)


def osa_full_scores_then_blocks(Q, K, V, block_size):
    """Computes the whole (B, T_q, T_k) score matrix first, then walks it in blocks."""
    S = Q @ K.mT / math.sqrt(Q.shape[-1])
    m = torch.full(Q.shape[:2] + (1,), -INF, dtype=Q.dtype)
    l = torch.zeros_like(m)
    acc = torch.zeros(Q.shape[:2] + (V.shape[-1],), dtype=Q.dtype)
    for j in range(0, K.shape[1], block_size):
        s = S[..., j : j + block_size]
        m_new = torch.maximum(m, s.amax(-1, keepdim=True))
        p = torch.exp(s - m_new)
        c = torch.exp(m - m_new)
        l, acc, m = l * c + p.sum(-1, keepdim=True), acc * c + p @ V[:, j : j + block_size], m_new
    return acc / l


def osa_torch_sdpa(Q, K, V, block_size):
    return torch.nn.functional.scaled_dot_product_attention(Q, K, V)


def osa_no_max(Q, K, V, block_size):
    l = torch.zeros(Q.shape[:2] + (1,), dtype=Q.dtype)
    acc = torch.zeros(Q.shape[:2] + (V.shape[-1],), dtype=Q.dtype)
    for j in range(0, K.shape[1], block_size):
        p = torch.exp(Q @ K[:, j : j + block_size].mT / math.sqrt(Q.shape[-1]))
        l, acc = l + p.sum(-1, keepdim=True), acc + p @ V[:, j : j + block_size]
    return acc / l


def osa_float32(Q, K, V, block_size):
    return osa(Q.float(), K.float(), V.float(), block_size).double()


def osa_book(Q, K, V, block_size):
    from attnbook.blockwise import online_softmax_attention

    return online_softmax_attention(Q, K, V, block_size)


def osa_per_query_loop(Q, K, V, block_size):
    """Correct: one query vector at a time, as the chapter does, stacked."""
    rows = []
    for b in range(Q.shape[0]):
        for q in Q[b]:
            m, l = torch.tensor(-INF, dtype=Q.dtype), torch.tensor(0.0, dtype=Q.dtype)
            acc = torch.zeros(V.shape[-1], dtype=Q.dtype)
            for j in range(0, K.shape[1], block_size):
                s = K[b, j : j + block_size] @ q / math.sqrt(Q.shape[-1])
                m_new = torch.maximum(m, s.max())
                p = torch.exp(s - m_new)
                c = torch.exp(m - m_new)
                l, acc, m = l * c + p.sum(), acc * c + p @ V[b, j : j + block_size], m_new
            rows.append(acc / l)
    return torch.stack(rows).reshape(Q.shape[0], Q.shape[1], V.shape[-1])


def osa_lse(Q, K, V, block_size):
    lse = torch.full((*Q.shape[:2], 1), -INF, dtype=Q.dtype)
    out = torch.zeros(*Q.shape[:2], V.shape[-1], dtype=Q.dtype)
    for K_b, V_b in zip(K.split(block_size, dim=1), V.split(block_size, dim=1)):
        sc = torch.einsum("bqd,bkd->bqk", Q, K_b) / math.sqrt(Q.shape[-1])
        new = torch.logaddexp(lse, torch.logsumexp(sc, dim=-1, keepdim=True))
        out = out * torch.exp(lse - new) + torch.exp(sc - new) @ V_b
        lse = new
    return out


def rms_each_block_own_max(scores, block_size):
    m = torch.full(scores.shape[:1], -INF, dtype=scores.dtype)
    total = torch.zeros_like(m)
    for blk in torch.split(scores, block_size, 1):
        top = blk.max(1, keepdim=True).values
        total = total + (blk - top).exp().sum(1)
        m = torch.max(m, top.squeeze(1))
    return m, total


def rms_stale_max(scores, block_size):
    """Subtracts the maximum it had before the block (the old m): exp() overflows in the first block."""
    m = torch.full(scores.shape[:1], -INF, dtype=scores.dtype)
    l = torch.zeros_like(m)
    for a in range(0, scores.shape[1], block_size):
        blk = scores[:, a : a + block_size]
        m_new = torch.maximum(m, blk.amax(1))
        l = l * torch.exp(m - m_new).nan_to_num(0.0) + torch.exp(blk - m[:, None]).sum(1)
        m = m_new
    return m, l


def osa_stale_max(Q, K, V, block_size):
    """The block's exponentials against the previous running maximum."""
    m = torch.full(Q.shape[:2] + (1,), -INF, dtype=Q.dtype)
    l = torch.zeros_like(m)
    acc = torch.zeros(Q.shape[:2] + (V.shape[-1],), dtype=Q.dtype)
    for j in range(0, K.shape[1], block_size):
        s = Q @ K[:, j : j + block_size].mT / math.sqrt(Q.shape[-1])
        p = torch.exp(s - m)
        m_new = torch.maximum(m, s.amax(-1, keepdim=True))
        c = torch.exp(m - m_new)
        l, acc, m = l * c + p.sum(-1, keepdim=True), acc * c + p @ V[:, j : j + block_size], m_new
    return acc / l


def osa_query_blocks(Q, K, V, block_size):
    """Cuts the queries into blocks of block_size, and takes every key at once for each block."""
    out = []
    for i in range(0, Q.shape[1], block_size):
        w = torch.softmax(Q[:, i : i + block_size] @ K.mT / math.sqrt(Q.shape[-1]), dim=-1)
        out.append(w @ V)
    return torch.cat(out, dim=1)


def osa_one_query_all_keys(Q, K, V, block_size):
    """One query at a time, with every key at once."""
    rows = []
    for i in range(Q.shape[1]):
        w = torch.softmax(Q[:, i : i + 1] @ K.mT / math.sqrt(Q.shape[-1]), dim=-1)
        rows.append(w @ V)
    return torch.cat(rows, dim=1)


WRONG = {
    "10.combine_max_sum": [
        ("sums added", combine_added, "sum_not_rescaled", "own maximum"),
        ("divided by the factors", combine_upside_down, "rescaled_wrong_way", "upside down"),
        ("kept m1", combine_keeps_m1, "max_not_updated", "larger of m1 and m2"),
        ("m1 + m2", combine_sums_maxima, "maxima_added", "added the two maxima"),
        ("through exp(m)", combine_through_exp, "not_finite", "NaN or inf"),
        ("Python max", combine_python_max, "raised", "RuntimeError"),
        ("only m", lambda m1, l1, m2, l2: torch.maximum(m1, m2), "wrong_type", "2 values"),
        ("both parts empty give NaN", combine_naive, "both_empty_nan", "-inf - (-inf)"),
        ("l1 not rescaled", combine_first_kept, "first_not_rescaled", "l1 was computed"),
        ("l2 not rescaled", combine_second_kept, "second_not_rescaled", "l2 was computed"),
        ("returns (l, m)", combine_swapped, "swapped_outputs", "(m, l)"),
    ],
    "10.running_max_sum": [
        ("no rescaling", rms_no_rescale, "sum_not_rescaled", "moved to the new maximum"),
        ("rescaled by exp(new - old)", rms_rescale_upside_down, "rescaled_wrong_way", "shrink"),
        ("max of the first block", rms_max_from_first_block, "max_not_updated", "first block"),
        ("full blocks only", rms_full_blocks_only, "last_block_dropped", "last, shorter block"),
        ("exp without the shift", rms_blocks_no_shift, "sum_not_shifted", "without subtracting the maximum"),
        ("the whole row at once", rms_whole_row, "block_size_ignored", "a whole row of 10 scores at once"),
        ("logsumexp of the whole row", rms_logsumexp_row, "block_size_ignored", "at once"),
        ("one key at a time", rms_one_key_at_a_time, "blocks_too_small", "never worked on block_size"),
        ("blocks twice as wide", rms_double_blocks, "block_size_ignored", "block_size is"),
        ("maximum starts at 0", rms_starts_at_zero, "max_starts_at_zero", "-inf"),
        ("each block against its own maximum", rms_each_block_own_max, "block_own_max", "own maximum"),
        ("subtracts the old maximum", rms_stale_max, "stale_max", "old m"),
        ("the book's running_max_sum", rms_book, "forbidden_call", "0 points"),
        ("Python floats", rms_floats, "wrong_type", "torch.Tensor"),
        ("only l", rms_only_sum, "wrong_type", "2 values"),
        ("shifts each block in place", rms_shifts_block_in_place, "mutates_input", "`scores`"),
    ],
    "10.online_softmax_attention": [
        (
            "nothing rescaled",
            lambda Q, K, V, b: osa(Q, K, V, b, rescale_l=False, rescale_acc=False),
            "sum_not_rescaled",
            "moved to the new maximum",
        ),
        (
            "output not rescaled",
            lambda Q, K, V, b: osa(Q, K, V, b, rescale_acc=False),
            "output_not_rescaled",
            "running output",
        ),
        (
            "maximum of the first block",
            lambda Q, K, V, b: osa(Q, K, V, b, fixed_max=True),
            "max_not_updated",
            "first block",
        ),
        (
            "no final division",
            lambda Q, K, V, b: osa(Q, K, V, b, divide=False),
            "no_final_division",
            "divided by",
        ),
        (
            "full blocks only",
            lambda Q, K, V, b: osa(Q, K, V, b, drop_tail=True),
            "last_block_dropped",
            "shorter block",
        ),
        ("no √d_k", lambda Q, K, V, b: osa(Q, K, V, b, scale=False), "not_scaled", "√d_k"),
        (
            "sum not rescaled, output rescaled",
            lambda Q, K, V, b: osa(Q, K, V, b, rescale_l=False),
            "only_output_rescaled",
            "running sum l",
        ),
        ("factor upside down", osa_factor_upside_down, "rescaled_wrong_way", "upside down"),
        ("scaled by √d_v", lambda Q, K, V, b: osa(Q, K, V, b, scale="d_v"), "scaled_by_d_v", "√d_v"),
        ("scaled by d_k", lambda Q, K, V, b: osa(Q, K, V, b, scale="d"), "scaled_by_d", "square root"),
        ("softmax per block, averaged", osa_per_block_average, "softmax_per_block", "running maximum"),
        ("values overwritten", osa_last_block_only_values, "values_overwritten", "last block"),
        ("no running maximum at all", osa_no_max, "not_finite", "maximum"),
        ("the full score matrix first", osa_full_scores_then_blocks, "block_size_ignored", "block_size is"),
        ("torch's SDPA on all keys", osa_torch_sdpa, "forbidden_call", "scaled_dot_product_attention"),
        (
            "queries in blocks, all keys at once",
            osa_query_blocks,
            "block_size_ignored",
            "all 11 keys at once",
        ),
        (
            "one query at a time, all keys",
            osa_one_query_all_keys,
            "block_size_ignored",
            "all 11 keys at once",
        ),
        ("subtracts the old maximum", osa_stale_max, "first_block_overflow", "the old m"),
        (
            "maximum starts at 0",
            lambda Q, K, V, b: osa_starting_at_zero(Q, K, V, b),
            "max_starts_at_zero",
            "-inf",
        ),
        ("float32 inside", osa_float32, "float32_computation", "float32"),
        ("the book's online_softmax_attention", osa_book, "forbidden_call", "0 points"),
    ],
}


def osa_starting_at_zero(Q, K, V, block_size):
    running_max = torch.zeros(Q.shape[:2] + (1,), dtype=Q.dtype)
    running_sum = torch.zeros_like(running_max)
    out = torch.zeros(Q.shape[:2] + (V.shape[2],), dtype=Q.dtype)
    for j in range(0, K.shape[1], block_size):
        s = torch.bmm(Q, K[:, j : j + block_size].transpose(1, 2)) / math.sqrt(K.shape[-1])
        new_max = torch.max(running_max, s.max(dim=-1, keepdim=True).values)
        p, c = torch.exp(s - new_max), torch.exp(running_max - new_max)
        running_sum = running_sum * c + p.sum(-1, keepdim=True)
        out = out * c + torch.bmm(p, V[:, j : j + block_size])
        running_max = new_max
    return out / running_sum


CORRECT = {
    "10.combine_max_sum": [combine_stacked, combine_logaddexp],
    "10.running_max_sum": [rms_correct_loop, lambda s, b: rms_correct_loop(s.clone(), b)],
    "10.online_softmax_attention": [osa, osa_per_query_loop, osa_lse],
}


def test_watched_cases_have_unambiguous_sizes():
    """The block check reads widths from shapes: queries, d_k, d_v and block widths never coincide."""
    for case in get_task("10.online_softmax_attention").cases():
        Q, K, V, block = case.args
        T_q, d_k, T_k, d_v = Q.shape[1], Q.shape[2], K.shape[1], V.shape[2]
        widths = {min(block, T_k - s) for s in range(0, T_k, block)} - {1}
        assert T_q not in widths | {d_k, d_v, T_k}, case.name
        assert not widths & {d_k, d_v}, case.name
        assert T_k not in {d_k, d_v}, case.name  # scores of every key are seen by their width T_k
    for case in get_task("10.running_max_sum").cases():
        scores, block = case.args
        R, T_k = scores.shape
        widths = {min(block, T_k - s) for s in range(0, T_k, block)} - {1}
        assert R not in widths | {T_k}, case.name


def test_the_block_check_is_silent_outside_a_learners_call():
    """The reference and the engine work on the watched tensors without tripping the check."""
    task = get_task("10.online_softmax_attention")
    for case in task.cases():
        task.reference(*case.args)
        assert torch.isfinite(case.args[0] @ case.args[1].mT).all()


def test_infinite_loop_is_stopped():
    # A loop of tensor operations on watched tensors spends most of its time in Python code (the watch);
    # a timeout landing inside the forbidden-call guard's profile hook switches the hook off, which the
    # engine currently reports as tampering (reported to the engine's owner). This loop calls nothing.
    def combine_forever(m1, l1, m2, l2):
        while True:
            pass

    task = dataclasses.replace(get_task("10.combine_max_sum"), timeout_s=0.5)
    result = run_task(task, combine_forever)
    assert result.diagnosis == "timeout" and "loop that never ends" in result.message


def test_running_max_sum_speaks_of_scores_not_keys():
    """The task is given a row of scores: its messages and hints never mention K or V (red team, A4)."""
    for fn in (rms_whole_row, rms_one_key_at_a_time):
        result = run_task(get_task("10.running_max_sum"), fn)
        for text in (result.message, *result.hints):
            assert "K[" not in text and " V" not in text and "keys" not in text, text


def test_a_nan_from_a_subtracted_old_maximum_is_not_called_a_missing_one():
    result = run_task(get_task("10.running_max_sum"), rms_stale_max)
    assert "subtract the maximum first" not in result.message, result.message


# ------------------------------------------------------------------ red team, round 4


def osa_values_one_ahead(Q, K, V, block_size):
    """The values' block starts one row after the keys' block (V[:, j + 1 : j + 1 + block_size])."""
    m = torch.full(Q.shape[:2] + (1,), -INF, dtype=Q.dtype)
    l = torch.zeros_like(m)
    acc = torch.zeros(Q.shape[:2] + (V.shape[-1],), dtype=Q.dtype)
    for j in range(0, K.shape[1], block_size):
        s = Q @ K[:, j : j + block_size].mT / math.sqrt(Q.shape[-1])
        m_new = torch.maximum(m, s.amax(-1, keepdim=True))
        p, c = torch.exp(s - m_new), torch.exp(m - m_new)
        l, acc, m = l * c + p.sum(-1, keepdim=True), acc * c + p @ V[:, j + 1 : j + 1 + block_size], m_new
    return acc / l


def osa_through_numpy(Q, K, V, block_size):
    import numpy as np

    q, k, v = Q.detach().numpy(), K.detach().numpy(), V.detach().numpy()
    s = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1])
    w = np.exp(s - s.max(-1, keepdims=True))
    return torch.from_numpy((w / w.sum(-1, keepdims=True)) @ v)


def osa_through_lists(Q, K, V, block_size):
    """Plain Python numbers, one query and one key at a time."""
    out = []
    for qs, ks, vs in zip(Q.tolist(), K.tolist(), V.tolist()):
        rows = []
        for q in qs:
            e = [math.exp(sum(a * b for a, b in zip(q, k)) / math.sqrt(len(q))) for k in ks]
            rows.append([sum(w * v[i] for w, v in zip(e, vs)) / sum(e) for i in range(len(vs[0]))])
        out.append(rows)
    return torch.tensor(out, dtype=Q.dtype)


WRONG["10.online_softmax_attention"] += [
    ("values one row ahead", osa_values_one_ahead, "values_block_misaligned", "not the block of keys"),
    ("all of it in NumPy", osa_through_numpy, "forbidden_call", "computes its answer outside PyTorch"),
    (
        "plain Python numbers, key by key",
        osa_through_lists,
        "forbidden_call",
        "computes its answer outside PyTorch",
    ),
]


# ------------------------------------------------------------------ red team, round 5


def _rms_loop(scores, block_size, *, starts=None, stop=lambda start, block_size: start + block_size, update):
    """A learner's loop over blocks; ``update(m, l, block)`` -> ``(m, l)`` is the step they wrote."""
    m = torch.full(scores.shape[:1], -INF, dtype=scores.dtype)
    l = torch.zeros_like(m)
    for start in starts or range(0, scores.shape[1], block_size):
        m, l = update(m, l, scores[:, start : stop(start, block_size)])
    return m, l


def rms_factor_upside_down_unguarded(scores, block_size):
    """exp(m_new - m) with no branch for the first block: exp(+inf) there, and 0 · inf = NaN."""

    def update(m, l, block):
        m_new = torch.maximum(m, block.amax(1))
        return m_new, l * torch.exp(m_new - m) + torch.exp(block - m_new[:, None]).sum(1)

    return _rms_loop(scores, block_size, update=update)


def rms_terms_against_block_max(scores, block_size):
    """Rescales l to the new running maximum, but the block's terms against the block's own maximum."""

    def update(m, l, block):
        top = block.amax(1)
        m_new = torch.maximum(m, top)
        return m_new, l * torch.exp(m - m_new) + torch.exp(block - top[:, None]).sum(1)

    return _rms_loop(scores, block_size, update=update)


def rms_rescales_after_adding(scores, block_size):
    def update(m, l, block):
        m_new = torch.maximum(m, block.amax(1))
        l = l + torch.exp(block - m_new[:, None]).sum(1)
        return m_new, l * torch.exp(m - m_new)

    return _rms_loop(scores, block_size, update=update)


def _right_update(m, l, block):
    m_new = torch.maximum(m, block.amax(1))
    return m_new, l * torch.exp(m - m_new) + torch.exp(block - m_new[:, None]).sum(1)


def rms_step_one_short(scores, block_size):
    """range(0, T_k, block_size - 1): each block starts at the last score of the one before."""
    return _rms_loop(
        scores, block_size, starts=range(0, scores.shape[1], block_size - 1), update=_right_update
    )


def rms_slices_one_too_long(scores, block_size):
    return _rms_loop(scores, block_size, stop=lambda start, b: start + b + 1, update=_right_update)


def rms_through_numpy(scores, block_size):
    import numpy as np

    s = scores.detach().numpy()
    m = s.max(-1)
    return torch.from_numpy(m), torch.from_numpy(np.exp(s - m[:, None]).sum(-1))


def _osa_loop(
    Q, K, V, block_size, *, values=lambda V, j, b: V[:, j : j + b], factor=lambda m, m_new: m - m_new
):
    m = torch.full(Q.shape[:2] + (1,), -INF, dtype=Q.dtype)
    l = torch.zeros_like(m)
    acc = torch.zeros(Q.shape[:2] + (V.shape[-1],), dtype=Q.dtype)
    for j in range(0, K.shape[1], block_size):
        K_b = K[:, j : j + block_size]
        s = Q @ K_b.mT / math.sqrt(Q.shape[-1])
        m_new = torch.maximum(m, s.amax(-1, keepdim=True))
        p, c = torch.exp(s - m_new), torch.exp(factor(m, m_new))
        l, acc, m = l * c + p.sum(-1, keepdim=True), acc * c + p @ values(V, j, K_b.shape[1]), m_new
    return acc / l


def osa_first_values_block(Q, K, V, block_size):
    """V[:, :block_size] in every block: raises at the last, shorter block."""
    return _osa_loop(Q, K, V, block_size, values=lambda V, j, b: V[:, :block_size])


def osa_first_values_of_block_length(Q, K, V, block_size):
    """The first rows of V, as many as the block has keys: no error, wrong values."""
    return _osa_loop(Q, K, V, block_size, values=lambda V, j, b: V[:, :b])


def osa_factor_upside_down_unguarded(Q, K, V, block_size):
    return _osa_loop(Q, K, V, block_size, factor=lambda m, m_new: m_new - m)


WRONG["10.running_max_sum"] += [
    (
        "factor upside down, first block unguarded",
        rms_factor_upside_down_unguarded,
        "rescaled_wrong_way",
        "exp(+inf)",
    ),
    (
        "block's terms against the block's maximum",
        rms_terms_against_block_max,
        "block_terms_own_max",
        "own maximum",
    ),
    ("rescaled after adding the block", rms_rescales_after_adding, "rescaled_after_adding", "after adding"),
    ("blocks start block_size - 1 apart", rms_step_one_short, "blocks_overlap", "overlap"),
    ("slices one score too long", rms_slices_one_too_long, "blocks_overlap", "one score too wide"),
    ("all of it in NumPy", rms_through_numpy, "forbidden_call", "computes its answer outside PyTorch"),
]
WRONG["10.online_softmax_attention"] += [
    (
        "V[:, :block_size] in every block",
        osa_first_values_block,
        "values_first_block",
        "first block of values",
    ),
    (
        "the first rows of V in every block",
        osa_first_values_of_block_length,
        "values_first_block",
        "first rows of V",
    ),
    (
        "factor upside down, first block unguarded",
        osa_factor_upside_down_unguarded,
        "first_block_overflow",
        "upside down",
    ),
]


def test_running_max_sum_outside_torch_speaks_of_scores_not_keys():
    result = run_task(get_task("10.running_max_sum"), rms_through_numpy)
    assert "keys" not in result.message and " K" not in result.message, result.message


# TorchScript runs its operations at PyTorch's dispatcher, where only the dispatch watch sees them: both
# graders must judge such a call after it ends, by what it computed (the whole row, all keys at once)


def _full_attention(Q, K, V):
    return torch.softmax(Q @ K.transpose(-1, -2) / math.sqrt(Q.shape[-1]), dim=-1) @ V


def _full_row(scores):
    m = scores.amax(dim=-1)
    return m, torch.exp(scores - m.unsqueeze(-1)).sum(dim=-1)


with warnings.catch_warnings():  # torch.jit.script is deprecated, and still there for a learner to use
    warnings.simplefilter("ignore", DeprecationWarning)
    _scripted_attention, _scripted_row = torch.jit.script(_full_attention), torch.jit.script(_full_row)


def osa_torchscript(Q, K, V, block_size):
    return _scripted_attention(Q, K, V)


def rms_torchscript(scores, block_size):
    return _scripted_row(scores)


WRONG["10.online_softmax_attention"].append(
    ("TorchScript, all keys at once", osa_torchscript, "block_size_ignored", "all 11 keys at once")
)
WRONG["10.running_max_sum"].append(
    ("TorchScript, the whole row at once", rms_torchscript, "block_size_ignored", "a whole row of 10 scores")
)
