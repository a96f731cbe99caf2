"""Set 10, the online softmax: learner-style answers."""

import math

import torch

from ._conventions import task_id

SET = "10"


def _t(fn_name):
    return task_id(SET, fn_name)


NEG_INF = float("-inf")


# ---------------------------------------------------------------- 10.combine_max_sum(m1, l1, m2, l2)
def combine_no_rescale(m1, l1, m2, l2):
    return torch.maximum(m1, m2), l1 + l2


def combine_wrong_direction(m1, l1, m2, l2):
    m = torch.maximum(m1, m2)
    return m, l1 * torch.exp(m - m1) + l2 * torch.exp(m - m2)


def combine_absolute(m1, l1, m2, l2):
    m = torch.maximum(m1, m2)
    return m, (l1 * torch.exp(m1) + l2 * torch.exp(m2)) / torch.exp(m)


def combine_both_empty_nan(m1, l1, m2, l2):
    m = torch.maximum(m1, m2)
    return m, l1 * torch.exp(m1 - m) + l2 * torch.exp(m2 - m)


def combine_only_first_rescaled(m1, l1, m2, l2):
    m = torch.maximum(m1, m2)
    return m, l1 * torch.exp(m1 - m) + l2


def combine_python_max(m1, l1, m2, l2):
    m = max(m1, m2)
    return m, l1 * torch.exp(m1 - m) + l2 * torch.exp(m2 - m)


def combine_swapped(m1, l1, m2, l2):
    m, l = combine_valid(m1, l1, m2, l2)
    return l, m


def combine_valid(m1, l1, m2, l2):
    m = torch.maximum(m1, m2)
    safe = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    return m, l1 * torch.exp(m1 - safe) + l2 * torch.exp(m2 - safe)


def combine_valid_stacked(m1, l1, m2, l2):
    ms, ls = torch.stack([m1, m2]), torch.stack([l1, l2])  # (2, R)
    m = ms.amax(dim=0)
    safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return m, (ls * torch.exp(ms - safe)).sum(dim=0)


# ---------------------------------------------------------------- 10.running_max_sum(scores, block_size)
def _blocks(T_k, block_size):
    return range(0, T_k, block_size)


def running_whole_row(scores, block_size):
    m = scores.amax(dim=-1)
    return m, torch.exp(scores - m[:, None]).sum(dim=-1)


def running_one_column_at_a_time(scores, block_size):
    m = torch.full(scores.shape[:1], NEG_INF, dtype=scores.dtype)
    l = torch.zeros(scores.shape[:1], dtype=scores.dtype)
    for i in range(scores.shape[1]):  # block_size ignored: one key per step
        m_new = torch.maximum(m, scores[:, i])
        l = l * torch.exp(m - m_new) + torch.exp(scores[:, i] - m_new)
        m = m_new
    return m, l


def running_drops_last_block(scores, block_size):
    m = torch.full(scores.shape[:1], NEG_INF, dtype=scores.dtype)
    l = torch.zeros(scores.shape[:1], dtype=scores.dtype)
    for s in range(0, scores.shape[1] - block_size + 1, block_size):
        blk = scores[:, s : s + block_size]
        m_new = torch.maximum(m, blk.amax(dim=-1))
        l = l * torch.exp(m - m_new) + torch.exp(blk - m_new[:, None]).sum(-1)
        m = m_new
    return m, l


def running_no_rescale(scores, block_size):
    m = torch.full(scores.shape[:1], NEG_INF, dtype=scores.dtype)
    l = torch.zeros(scores.shape[:1], dtype=scores.dtype)
    for s in _blocks(scores.shape[1], block_size):
        blk = scores[:, s : s + block_size]
        m_new = torch.maximum(m, blk.amax(dim=-1))
        l = l + torch.exp(blk - m_new[:, None]).sum(-1)
        m = m_new
    return m, l


def running_start_at_zero(scores, block_size):
    m = torch.zeros(scores.shape[:1], dtype=scores.dtype)
    l = torch.zeros(scores.shape[:1], dtype=scores.dtype)
    for s in _blocks(scores.shape[1], block_size):
        blk = scores[:, s : s + block_size]
        m_new = torch.maximum(m, blk.amax(dim=-1))
        l = l * torch.exp(m - m_new) + torch.exp(blk - m_new[:, None]).sum(-1)
        m = m_new
    return m, l


def running_block_max_only(scores, block_size):
    m = torch.full(scores.shape[:1], NEG_INF, dtype=scores.dtype)
    l = torch.zeros(scores.shape[:1], dtype=scores.dtype)
    for s in _blocks(scores.shape[1], block_size):
        blk = scores[:, s : s + block_size]
        m = torch.maximum(m, blk.amax(dim=-1))
        l = l + torch.exp(blk - blk.amax(dim=-1, keepdim=True)).sum(-1)  # each block against its own max
    return m, l


def running_book(scores, block_size):
    from attnbook.blockwise import running_max_sum

    return running_max_sum(scores, block_size)


def running_valid(scores, block_size):
    m = torch.full(scores.shape[:1], NEG_INF, dtype=scores.dtype)
    l = torch.zeros(scores.shape[:1], dtype=scores.dtype)
    for s in _blocks(scores.shape[1], block_size):
        blk = scores[:, s : s + block_size]
        m_new = torch.maximum(m, blk.amax(dim=-1))
        l = l * torch.exp(m - m_new) + torch.exp(blk - m_new[:, None]).sum(-1)
        m = m_new
    return m, l


def running_valid_logsumexp(scores, block_size):
    m = torch.full(scores.shape[:1], NEG_INF, dtype=scores.dtype)
    lse = torch.full(scores.shape[:1], NEG_INF, dtype=scores.dtype)
    for blk in scores.split(block_size, dim=1):
        m = torch.maximum(m, blk.amax(dim=-1))
        lse = torch.logaddexp(lse, torch.logsumexp(blk, dim=-1))
    return m, torch.exp(lse - m)


# ---------------------------------------------------------------- 10.online_softmax_attention
def _online(
    Q,
    K,
    V,
    block_size,
    *,
    scale=None,
    rescale_acc=True,
    m0=NEG_INF,
    dtype=None,
    keepdim=True,
    last_block=True,
):
    if dtype is not None:
        Q, K, V = Q.to(dtype), K.to(dtype), V.to(dtype)
    B, T_q, d_k = Q.shape
    scale = math.sqrt(d_k) if scale is None else scale
    m = torch.full((B, T_q, 1), m0, dtype=Q.dtype)
    l = torch.zeros(B, T_q, 1, dtype=Q.dtype)
    acc = torch.zeros(B, T_q, V.shape[-1], dtype=Q.dtype)
    T_k = K.shape[1]
    stop = T_k if last_block else T_k - block_size + 1
    for s in range(0, stop, block_size):
        sc = Q @ K[:, s : s + block_size].transpose(1, 2) / scale
        m_new = torch.maximum(m, sc.amax(dim=-1, keepdim=keepdim))
        p = torch.exp(sc - m_new)
        factor = torch.exp(m - m_new)
        l = l * factor + p.sum(dim=-1, keepdim=True)
        acc = (acc * factor if rescale_acc else acc) + p @ V[:, s : s + block_size]
        m = m_new
    return acc / l


def online_full_softmax(Q, K, V, block_size):
    w = torch.softmax(Q @ K.transpose(1, 2) / math.sqrt(Q.shape[-1]), dim=-1)
    return w @ V


def online_no_scale(Q, K, V, block_size):
    return _online(Q, K, V, block_size, scale=1.0)


def online_acc_not_rescaled(Q, K, V, block_size):
    return _online(Q, K, V, block_size, rescale_acc=False)


def online_start_at_zero(Q, K, V, block_size):
    return _online(Q, K, V, block_size, m0=0.0)


def online_float32(Q, K, V, block_size):
    return _online(Q, K, V, block_size, dtype=torch.float32).to(Q.dtype)


def online_missing_keepdim(Q, K, V, block_size):
    return _online(Q, K, V, block_size, keepdim=False)


def online_drops_last_block(Q, K, V, block_size):
    return _online(Q, K, V, block_size, last_block=False)


def online_average_of_blocks(Q, K, V, block_size):
    outs = []
    for s in range(0, K.shape[1], block_size):
        w = torch.softmax(Q @ K[:, s : s + block_size].transpose(1, 2) / math.sqrt(Q.shape[-1]), dim=-1)
        outs.append(w @ V[:, s : s + block_size])
    return torch.stack(outs).mean(dim=0)


def online_book(Q, K, V, block_size):
    from attnbook.blockwise import online_softmax_attention

    return online_softmax_attention(Q, K, V, block_size)


def online_valid_detached_max(Q, K, V, block_size):
    B, T_q, d_k = Q.shape
    m = torch.full((B, T_q, 1), NEG_INF, dtype=Q.dtype)
    l = torch.zeros(B, T_q, 1, dtype=Q.dtype)
    acc = torch.zeros(B, T_q, V.shape[-1], dtype=Q.dtype)
    for s in range(0, K.shape[1], block_size):
        sc = Q @ K[:, s : s + block_size].transpose(1, 2) / math.sqrt(d_k)
        m_new = torch.maximum(m, sc.amax(dim=-1, keepdim=True)).detach()  # as FlashAttention does
        factor = torch.exp(m - m_new)
        p = torch.exp(sc - m_new)
        l = l * factor + p.sum(dim=-1, keepdim=True)
        acc = acc * factor + p @ V[:, s : s + block_size]
        m = m_new
    return acc / l


def online_reference(Q, K, V, block_size):
    from attnbook.grading import get_task

    return get_task("10.online_softmax_attention").reference(Q, K, V, block_size)


def online_valid(Q, K, V, block_size):
    return _online(Q, K, V, block_size)


def online_valid_lse(Q, K, V, block_size):
    d_k = Q.shape[-1]
    lse = torch.full((*Q.shape[:2], 1), NEG_INF, dtype=Q.dtype)
    out = torch.zeros(*Q.shape[:2], V.shape[-1], dtype=Q.dtype)
    for K_b, V_b in zip(K.split(block_size, dim=1), V.split(block_size, dim=1)):
        sc = torch.einsum("bqd,bkd->bqk", Q, K_b) / math.sqrt(d_k)
        lse_b = torch.logsumexp(sc, dim=-1, keepdim=True)
        lse_new = torch.logaddexp(lse, lse_b)
        out = out * torch.exp(lse - lse_new) + torch.exp(sc - lse_new) @ V_b  # normalised all along
        lse = lse_new
    return out


WRONG = [
    dict(
        task=_t("combine_max_sum"),
        name="no_rescale",
        fn=combine_no_rescale,
        cls="formula",
        mistake="adds l1 and l2 without rescaling to the common maximum",
    ),
    dict(
        task=_t("combine_max_sum"),
        name="wrong_direction",
        fn=combine_wrong_direction,
        cls="formula",
        mistake="rescales by exp(m - m_j) instead of exp(m_j - m)",
    ),
    dict(
        task=_t("combine_max_sum"),
        name="absolute",
        fn=combine_absolute,
        cls="large scores",
        mistake="goes through exp(m1) and exp(m2), which overflow",
    ),
    dict(
        task=_t("combine_max_sum"),
        name="both_empty_nan",
        fn=combine_both_empty_nan,
        cls="empty parts",
        mistake="two empty parts give -inf - (-inf) = NaN",
    ),
    dict(
        task=_t("combine_max_sum"),
        name="only_first_rescaled",
        fn=combine_only_first_rescaled,
        cls="formula",
        mistake="rescales only the first part",
    ),
    dict(
        task=_t("combine_max_sum"),
        name="python_max",
        fn=combine_python_max,
        cls="raw error",
        mistake="uses Python's max on tensors (ambiguous truth value)",
    ),
    dict(
        task=_t("combine_max_sum"),
        name="swapped_order",
        fn=combine_swapped,
        cls="swapped tuple order",
        mistake="returns (l, m)",
    ),
    dict(
        task=_t("running_max_sum"),
        name="whole_row",
        fn=running_whole_row,
        cls="blockwise ignores block_size",
        mistake="reads the whole row at once, ignoring block_size",
    ),
    dict(
        task=_t("running_max_sum"),
        name="one_column",
        fn=running_one_column_at_a_time,
        cls="blockwise ignores block_size",
        mistake="reads one key per step whatever block_size says",
    ),
    dict(
        task=_t("running_max_sum"),
        name="drops_last_block",
        fn=running_drops_last_block,
        cls="ragged last block",
        mistake="drops the last, shorter block",
    ),
    dict(
        task=_t("running_max_sum"),
        name="no_rescale",
        fn=running_no_rescale,
        cls="formula",
        mistake="never rescales the running sum when the maximum grows",
    ),
    dict(
        task=_t("running_max_sum"),
        name="start_at_zero",
        fn=running_start_at_zero,
        cls="all-negative rows",
        mistake="starts the running maximum at 0 instead of -inf",
    ),
    dict(
        task=_t("running_max_sum"),
        name="block_max_only",
        fn=running_block_max_only,
        cls="formula",
        mistake="sums each block against its own maximum",
    ),
    dict(
        task=_t("running_max_sum"),
        name="book_import",
        fn=running_book,
        cls="book shortcut",
        mistake="calls attnbook.blockwise.running_max_sum",
    ),
    dict(
        task=_t("online_softmax_attention"),
        name="full_softmax",
        fn=online_full_softmax,
        cls="blockwise ignores block_size",
        mistake="builds the whole score matrix, ignoring block_size",
    ),
    dict(
        task=_t("online_softmax_attention"),
        name="no_scale",
        fn=online_no_scale,
        cls="wrong scale",
        mistake="forgets 1/sqrt(d_k)",
    ),
    dict(
        task=_t("online_softmax_attention"),
        name="acc_not_rescaled",
        fn=online_acc_not_rescaled,
        cls="formula",
        mistake="rescales l but not acc",
    ),
    dict(
        task=_t("online_softmax_attention"),
        name="start_at_zero",
        fn=online_start_at_zero,
        cls="rows below exp underflow",
        mistake="starts m at 0: rows of very negative scores underflow",
    ),
    dict(
        task=_t("online_softmax_attention"),
        name="float32",
        fn=online_float32,
        cls="float32 in a float64 task",
        mistake="computes in float32",
    ),
    dict(
        task=_t("online_softmax_attention"),
        name="missing_keepdim",
        fn=online_missing_keepdim,
        cls="missing keepdim",
        mistake="block maximum without keepdim",
    ),
    dict(
        task=_t("online_softmax_attention"),
        name="drops_last_block",
        fn=online_drops_last_block,
        cls="ragged last block",
        mistake="drops the last, shorter block",
    ),
    dict(
        task=_t("online_softmax_attention"),
        name="average_of_blocks",
        fn=online_average_of_blocks,
        cls="formula",
        mistake="normalises each block on its own and averages the blocks",
    ),
    dict(
        task=_t("online_softmax_attention"),
        name="book_import",
        fn=online_book,
        cls="book shortcut",
        mistake="calls attnbook.blockwise.online_softmax_attention",
    ),
    dict(
        task=_t("online_softmax_attention"),
        name="grader_reference",
        fn=online_reference,
        cls="book shortcut",
        mistake="returns get_task('10.online_softmax_attention').reference",
    ),
]

VALID = [
    dict(task=_t("combine_max_sum"), name="where_safe", fn=combine_valid),
    dict(task=_t("combine_max_sum"), name="stacked", fn=combine_valid_stacked),
    dict(task=_t("running_max_sum"), name="blocks", fn=running_valid),
    dict(task=_t("running_max_sum"), name="logsumexp_blocks", fn=running_valid_logsumexp),
    dict(task=_t("online_softmax_attention"), name="blocks", fn=online_valid),
    dict(task=_t("online_softmax_attention"), name="logsumexp_blocks", fn=online_valid_lse),
    dict(task=_t("online_softmax_attention"), name="detached_max", fn=online_valid_detached_max),
]
