"""Set 10, the online softmax: a running maximum and sum, and exact attention one block of keys at a time."""

from __future__ import annotations

import math

import torch

from ..cases import generator, randn
from ..engine import Case, Misconception, Task
from ..registry import register

NEG_INF = float("-inf")

# ------------------------------------------------------------------------------------------ 10.combine_max_sum


def _combine_ref(m1, l1, m2, l2):
    """Two partial (max, sum) pairs of one row -> the pair of the whole row. All (R,) -> (R,), (R,)."""
    m = torch.maximum(m1, m2)
    return m, l1 * torch.exp(m1 - m) + l2 * torch.exp(m2 - m)


def _combine_cases():
    g = generator(101)
    m1, m2 = randn(g, 5, scale=3.0), randn(g, 5, scale=3.0)
    l1, l2 = 1.0 + 4.0 * torch.rand(5, generator=g, dtype=torch.float64), 1.0 + 4.0 * torch.rand(5, generator=g, dtype=torch.float64)
    big1, big2 = randn(g, 3, scale=1e3), randn(g, 3, scale=1e3)
    lb1, lb2 = 1.0 + torch.rand(3, generator=g, dtype=torch.float64), 1.0 + torch.rand(3, generator=g, dtype=torch.float64)
    empty = torch.tensor([float("-inf"), 0.5], dtype=torch.float64)
    return [
        Case("R=5", (m1, l1, m2, l2), dims={"R": 5}, note="the larger maximum is sometimes m1, sometimes m2"),
        Case("maxima of about ±1e3", (big1, lb1, big2, lb2), dims={"R": 3},
             note="exp(m) overflows: work with differences of maxima"),
        Case("an empty first part", (empty, torch.tensor([0.0, 2.0], dtype=torch.float64),
                                     torch.tensor([1.5, -0.5], dtype=torch.float64),
                                     torch.tensor([3.0, 1.0], dtype=torch.float64)),
             dims={"R": 2}, note="m1 = -inf and l1 = 0: a part with no scores (all masked)"),
    ]


register(Task(
    id="10.combine_max_sum",
    title="combine the maximum and sum of two parts",
    points=2,
    reference=_combine_ref,
    cases=_combine_cases,
    output_names=("m", "l"),
    misconceptions=[
        Misconception(
            "sum_not_rescaled",
            "you added l1 and l2 as they are: each was computed relative to its own maximum, so first move "
            "both to the common maximum, l1·exp(m1 - m) + l2·exp(m2 - m)",
            lambda m1, l1, m2, l2: (torch.maximum(m1, m2), l1 + l2),
        ),
        Misconception(
            "rescaled_wrong_way",
            "your rescaling factors are upside down: a sum computed against a smaller maximum must shrink, "
            "so multiply by exp(m_j - m), not exp(m - m_j)",
            lambda m1, l1, m2, l2: (torch.maximum(m1, m2),
                                    l1 * torch.exp(torch.maximum(m1, m2) - m1) + l2 * torch.exp(torch.maximum(m1, m2) - m2)),
        ),
        Misconception(
            "max_not_updated",
            "you kept m1 as the maximum: m must be the larger of m1 and m2 (torch.maximum), and l relative to it",
            lambda m1, l1, m2, l2: (m1, l1 + l2 * torch.exp(m2 - m1)),
        ),
        Misconception(
            "maxima_added",
            "you added the two maxima: the maximum of the whole row is the larger of the two, torch.maximum(m1, m2)",
            lambda m1, l1, m2, l2: (m1 + m2, l1 * torch.exp(m1 - torch.maximum(m1, m2)) + l2 * torch.exp(m2 - torch.maximum(m1, m2))),
        ),
    ],
    hint="m = torch.maximum(m1, m2); l = l1·exp(m1 - m) + l2·exp(m2 - m).",
))

# ------------------------------------------------------------------------------------------ 10.running_max_sum


def _running_ref(scores, block_size):
    """Exact: m = max, l = Σ exp(scores - m) over the last axis. scores (R, T_k) -> (R,), (R,)."""
    m = scores.amax(dim=-1)
    return m, torch.exp(scores - m[..., None]).sum(dim=-1)


def _blocks(T_k, block_size, drop_last=False):
    stop = T_k - T_k % block_size if drop_last else T_k
    return [(s, min(s + block_size, T_k)) for s in range(0, stop, block_size)]


def _running(scores, block_size, *, rescale="right", update_max=True, drop_last=False):
    m = torch.full(scores.shape[:-1], NEG_INF, dtype=scores.dtype)
    l = torch.zeros(scores.shape[:-1], dtype=scores.dtype)
    for i, (a, b) in enumerate(_blocks(scores.shape[-1], block_size, drop_last)):
        block = scores[..., a:b]
        m_new = torch.maximum(m, block.amax(dim=-1)) if (update_max or i == 0) else m
        factor = {"right": torch.exp(m - m_new), "none": torch.ones_like(m), "inverse": torch.exp(m_new - m)}[rescale]
        factor = torch.nan_to_num(factor, nan=0.0)
        l = l * factor + torch.exp(block - m_new[..., None]).sum(dim=-1)
        m = m_new
    return m, l


def _running_cases():
    g = generator(10)
    base = randn(g, 3, 10, scale=2.0)
    increasing = torch.linspace(-5.0, 5.0, 7, dtype=torch.float64).repeat(2, 1)  # the max changes every block
    large = randn(g, 2, 9, scale=1e3)
    return [
        Case("R=3, T_k=10, block 4", (base, 4), dims={"R": 3, "T_k": 10}, note="4 does not divide 10"),
        Case("increasing scores, block 2", (increasing, 2), dims={"R": 2, "T_k": 7},
             note="the maximum grows in every block"),
        Case("R=3, T_k=10, block 1", (base, 1), dims={"R": 3, "T_k": 10}, note="one score at a time"),
        Case("R=3, T_k=10, block 10", (base, 10), dims={"R": 3, "T_k": 10}, note="one block holds everything"),
        Case("R=3, T_k=10, block 16", (base, 16), dims={"R": 3, "T_k": 10}, note="block larger than T_k"),
        Case("scores of ±1e3, block 4", (large, 4), dims={"R": 2, "T_k": 9}, note="exp() overflows without the max"),
    ]


register(Task(
    id="10.running_max_sum",
    title="running maximum and sum of exponentials",
    points=3,
    reference=_running_ref,
    cases=_running_cases,
    output_names=("m", "l"),
    misconceptions=[
        Misconception(
            "sum_not_rescaled",
            "your running sum is not rescaled when the maximum changes: the old sum was computed relative to "
            "the old maximum, so multiply it by exp(m_old - m_new) before adding the new block",
            lambda s, b: _running(s, b, rescale="none"),
        ),
        Misconception(
            "rescaled_wrong_way",
            "you rescaled the running sum by exp(m_new - m_old); it must shrink when the maximum grows: "
            "multiply by exp(m_old - m_new)",
            lambda s, b: _running(s, b, rescale="inverse"),
        ),
        Misconception(
            "max_not_updated",
            "your maximum is the one of the first block only: update it with every block, "
            "m = max(m, max of the block)",
            lambda s, b: _running(s, b, update_max=False),
        ),
        Misconception(
            "last_block_dropped",
            "you dropped the last, shorter block: when block_size does not divide T_k the final block has fewer "
            "scores, but it still counts (range(0, T_k, block_size) and slicing handle it)",
            lambda s, b: _running(s, b, drop_last=True),
        ),
        Misconception(
            "sum_not_shifted",
            "your l is Σ exp(score) without subtracting the maximum: l is defined relative to m, "
            "l = Σ exp(score - m), which is also what keeps exp() from overflowing",
            lambda s, b: (s.amax(dim=-1), torch.exp(s).sum(dim=-1)),
        ),
    ],
    check_grad=False,
    hint="Start with m = -inf and l = 0; per block: m_new = max(m, block max); "
         "l = l·exp(m - m_new) + Σ exp(block - m_new); m = m_new.",
))

# ------------------------------------------------------------------------------------------ 10.online_softmax_attention


def _attention_ref(Q, K, V, block_size):
    w = torch.softmax(Q @ K.transpose(-1, -2) / math.sqrt(Q.shape[-1]), dim=-1)
    return w @ V  # (B, T_q, d_v)


def _online(Q, K, V, block_size, *, rescale_l=True, rescale_acc=True, update_max=True, divide=True,
            drop_last=False, scale=True, per_block_softmax=False):
    B, T_q, T_k = Q.shape[0], Q.shape[1], K.shape[1]
    m = torch.full((B, T_q, 1), NEG_INF, dtype=Q.dtype)
    l = torch.zeros((B, T_q, 1), dtype=Q.dtype)
    acc = torch.zeros((B, T_q, V.shape[-1]), dtype=Q.dtype)
    blocks = _blocks(T_k, block_size, drop_last)
    for i, (a, b) in enumerate(blocks):
        s = Q @ K[:, a:b].transpose(-1, -2) / (math.sqrt(Q.shape[-1]) if scale else 1.0)
        if per_block_softmax:
            acc = acc + torch.softmax(s, dim=-1) @ V[:, a:b] / len(blocks)
            continue
        m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True)) if (update_max or i == 0) else m
        factor = torch.exp(m - m_new)
        p = torch.exp(s - m_new)
        l = (l * factor if rescale_l else l) + p.sum(dim=-1, keepdim=True)
        acc = (acc * factor if rescale_acc else acc) + p @ V[:, a:b]
        m = m_new
    if per_block_softmax:
        return acc
    return acc / l if divide else acc


def _attention_cases():
    g = generator(100)
    Q, K, V = randn(g, 2, 3, 4, scale=2.0), randn(g, 2, 7, 4), randn(g, 2, 7, 5)
    dims = {"B": 2, "T_q": 3, "T_k": 7, "d_k": 4, "d_v": 5}
    cases = [Case(f"T_k=7, block {b}", (Q, K, V, b), dims=dims, note=note) for b, note in [
        (3, "3 does not divide 7: the last block has 1 key"),
        (2, "the last block has 1 key"),
        (1, "one key at a time"),
        (7, "one block holds every key"),
        (10, "block larger than T_k"),
    ]]
    Q2, K2, V2 = randn(g, 3, 5, 2, scale=1e3), randn(g, 3, 11, 2), randn(g, 3, 11, 6)
    cases.append(Case("scores of ±1e3, block 4", (Q2, K2, V2, 4),
                      dims={"B": 3, "T_q": 5, "T_k": 11, "d_k": 2, "d_v": 6},
                      note="exp() overflows unless the running maximum is subtracted"))
    Q3 = torch.linspace(-1.0, 1.0, 6, dtype=torch.float64).reshape(1, 2, 3)
    K3 = torch.arange(8, dtype=torch.float64)[None, :, None].expand(1, 8, 3).contiguous()
    V3 = randn(g, 1, 8, 4)
    cases.append(Case("maximum changes between blocks, block 3", (Q3, K3, V3, 3),
                      dims={"B": 1, "T_q": 2, "T_k": 8, "d_k": 3, "d_v": 4},
                      note="the scores grow (or fall) from key to key"))
    return cases


register(Task(
    id="10.online_softmax_attention",
    title="attention with the online softmax, block by block",
    points=4,
    reference=_attention_ref,
    cases=_attention_cases,
    misconceptions=[
        Misconception(
            "sum_not_rescaled",
            "your running sum and running output are not rescaled when the maximum changes: both were "
            "computed relative to the old maximum, so multiply them by exp(m_old - m_new) before adding the "
            "new block",
            lambda Q, K, V, b: _online(Q, K, V, b, rescale_l=False, rescale_acc=False),
        ),
        Misconception(
            "output_not_rescaled",
            "you rescale the running sum but not the running output (the weighted sum of values): it also "
            "has to be multiplied by exp(m_old - m_new)",
            lambda Q, K, V, b: _online(Q, K, V, b, rescale_acc=False),
        ),
        Misconception(
            "max_not_updated",
            "your maximum is the one of the first block only: update it with every block",
            lambda Q, K, V, b: _online(Q, K, V, b, update_max=False),
        ),
        Misconception(
            "no_final_division",
            "you forgot the final division: the output is the running weighted sum divided by the running "
            "sum l",
            lambda Q, K, V, b: _online(Q, K, V, b, divide=False),
        ),
        Misconception(
            "last_block_dropped",
            "you dropped the last, shorter block: when block_size does not divide T_k the final block has "
            "fewer keys, but they count",
            lambda Q, K, V, b: _online(Q, K, V, b, drop_last=True),
        ),
        Misconception(
            "not_scaled",
            "you did not scale the scores: divide Q Kᵀ by √d_k in every block",
            lambda Q, K, V, b: _online(Q, K, V, b, scale=False),
        ),
        Misconception(
            "softmax_per_block",
            "you normalised each block on its own and averaged the blocks: a block's softmax only knows its "
            "own keys. Keep one running maximum and one running sum across all blocks",
            lambda Q, K, V, b: _online(Q, K, V, b, per_block_softmax=True),
        ),
    ],
    hint="Keep m (B, T_q, 1), l (B, T_q, 1) and acc (B, T_q, d_v); for each block rescale l and acc by "
         "exp(m - m_new), add the block's exp(scores - m_new) terms, and return acc / l at the end.",
))
