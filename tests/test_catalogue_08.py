"""Set 08 (attention in matrix form): every known-wrong implementation is caught, with the right diagnosis.

These are written the way learners write them, independently of the grader's misconception models.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F

from attnbook.grading import get_task, run_task


def _masked(scores, mask, fill=float("-inf")):
    return scores if mask is None else scores.masked_fill(mask == False, fill)  # noqa: E712 (learner style)


def sdpa_softmax_dim1(Q, K, V, mask=None):
    scores = torch.bmm(Q, K.transpose(1, 2)) / math.sqrt(K.shape[2])
    weights = F.softmax(_masked(scores, mask), dim=1)
    return torch.bmm(weights, V), weights


def sdpa_no_scale(Q, K, V, mask=None):
    weights = torch.softmax(_masked(Q @ K.mT, mask), -1)
    return weights @ V, weights


def sdpa_divide_by_dk(Q, K, V, mask=None):
    d_k = Q.size(-1)
    weights = torch.softmax(_masked(Q @ K.mT / d_k, mask), -1)
    return weights @ V, weights


def sdpa_scale_dv(Q, K, V, mask=None):
    weights = torch.softmax(_masked(Q @ K.mT / V.shape[-1] ** 0.5, mask), -1)
    return weights @ V, weights


def sdpa_mask_after(Q, K, V, mask=None):
    weights = torch.softmax(Q @ K.mT / math.sqrt(Q.shape[-1]), dim=-1)
    if mask is not None:
        weights = weights.masked_fill(~mask, 0.0)
    return weights @ V, weights


def sdpa_mask_zero(Q, K, V, mask=None):
    scores = Q @ K.mT / math.sqrt(Q.shape[-1])
    if mask is not None:
        scores = torch.where(mask, scores, torch.zeros_like(scores))
    weights = scores.softmax(-1)
    return weights @ V, weights


def sdpa_inverted(Q, K, V, mask=None):
    scores = Q @ K.mT / math.sqrt(Q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(mask, -1e9)
    weights = scores.softmax(-1)
    return weights @ V, weights


def sdpa_keys_as_values(Q, K, V, mask=None):
    weights = torch.softmax(_masked(Q @ K.mT / math.sqrt(Q.shape[-1]), mask), -1)
    return weights @ K, weights


def sdpa_transposed(Q, K, V, mask=None):
    scores = torch.einsum("bkd,bqd->bkq", K, Q) / math.sqrt(Q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask.transpose(1, 2), float("-inf"))
    weights = torch.softmax(scores, dim=2)
    return torch.einsum("bkq,bkv->bqv", weights, V), weights


def sdpa_average(Q, K, V, mask=None):
    weights = torch.ones(Q.shape[0], Q.shape[1], K.shape[1], dtype=Q.dtype)
    if mask is not None:
        weights = weights * mask
    weights = weights / weights.sum(-1, keepdim=True)
    return weights @ V, weights


def sdpa_naive_exp(Q, K, V, mask=None):
    scores = _masked(Q @ K.mT / math.sqrt(Q.shape[-1]), mask)
    e = torch.exp(scores)
    weights = e / e.sum(-1, keepdim=True)
    return weights @ V, weights


def sdpa_output_only(Q, K, V, mask=None):
    return torch.softmax(_masked(Q @ K.mT / math.sqrt(Q.shape[-1]), mask), -1) @ V


def sdpa_swapped_outputs(Q, K, V, mask=None):
    weights = torch.softmax(_masked(Q @ K.mT / math.sqrt(Q.shape[-1]), mask), -1)
    return weights, weights @ V


def sdpa_in_place(Q, K, V, mask=None):
    Q /= math.sqrt(Q.shape[-1])
    weights = torch.softmax(_masked(Q @ K.mT, mask), -1)
    return weights @ V, weights


def sdpa_numpy(Q, K, V, mask=None):
    s = Q.numpy() @ np.swapaxes(K.numpy(), 1, 2) / np.sqrt(Q.shape[-1])
    if mask is not None:
        s = np.where(mask.numpy(), s, -np.inf)
    w = np.exp(s - s.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
    return w @ V.numpy(), w


def sdpa_float32(Q, K, V, mask=None):
    Q, K, V = Q.float(), K.float(), V.float()
    weights = torch.softmax(_masked(Q @ K.mT / math.sqrt(Q.shape[-1]), mask), -1)
    return weights @ V, weights


def sdpa_detached(Q, K, V, mask=None):
    weights = torch.softmax(_masked(Q @ K.mT / math.sqrt(Q.shape[-1]), mask), -1).nan_to_num().detach()
    return weights @ V, weights


def sdpa_forgot_return(Q, K, V, mask=None):
    weights = torch.softmax(_masked(Q @ K.mT / math.sqrt(Q.shape[-1]), mask), -1)
    output = weights @ V  # noqa: F841


def sdpa_loops_forever(Q, K, V, mask=None):
    while True:
        pass


def sdpa_mask_after_renormalised(Q, K, V, mask=None):
    weights = torch.softmax(Q @ K.mT / math.sqrt(Q.shape[-1]), dim=-1)
    if mask is not None:
        weights = weights * mask
        weights = weights / weights.sum(-1, keepdim=True)
    return weights @ V, weights


def sdpa_sqrt_T_k(Q, K, V, mask=None):
    weights = torch.softmax(_masked(Q @ K.mT / math.sqrt(K.size(1)), mask), -1)
    return weights @ V, weights


def sdpa_power_precedence(Q, K, V, mask=None):
    scale = Q.shape[-1] ** 1 / 2  # meant: the square root
    weights = torch.softmax(_masked(Q @ K.mT / scale, mask), -1)
    return weights @ V, weights


def sdpa_softmax_dim0(Q, K, V, mask=None):
    weights = F.softmax(_masked(torch.bmm(Q, K.transpose(1, 2)) / math.sqrt(Q.shape[2]), mask), dim=0)
    return torch.bmm(weights, V), weights


def sdpa_mask_added(Q, K, V, mask=None):
    scores = Q @ K.mT / math.sqrt(Q.shape[-1])
    if mask is not None:
        scores = scores + mask.to(scores.dtype)
    weights = scores.softmax(-1)
    return weights @ V, weights


def sdpa_book_function(Q, K, V, mask=None):
    from attnbook.attention import scaled_dot_product_attention

    return scaled_dot_product_attention(Q, K, V, mask)


def sdpa_finfo_min(Q, K, V, mask=None):
    s = torch.einsum("bqd,bkd->bqk", Q, K) / math.sqrt(Q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, torch.finfo(s.dtype).min)
    w = s.softmax(-1)
    return torch.einsum("bqk,bkv->bqv", w, V), w


def sdpa_loops(Q, K, V, mask=None):
    B, T_q, T_k = Q.shape[0], Q.shape[1], K.shape[1]
    full = torch.ones(B, T_q, T_k, dtype=torch.bool) if mask is None else mask.expand(B, T_q, T_k)
    outs, ws = [], []
    for b in range(B):
        for t in range(T_q):
            keep = full[b, t]
            e = (K[b][keep] @ Q[b, t]) / math.sqrt(Q.shape[-1])
            a = torch.softmax(e, dim=0)
            w = torch.zeros(T_k, dtype=Q.dtype).masked_scatter(keep, a)
            ws.append(w)
            outs.append(w @ V[b])
    return torch.stack(outs).view(B, T_q, -1), torch.stack(ws).view(B, T_q, T_k)


def sdpa_polarity_nan_to_zero(Q, K, V, mask=None):
    scores = Q @ K.mT / math.sqrt(Q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))  # hides the keys it should keep
    weights = torch.nan_to_num(scores.softmax(-1))
    return weights @ V, weights


def sdpa_sqrt_T_q(Q, K, V, mask=None):
    weights = torch.softmax(_masked(Q @ K.mT / math.sqrt(Q.shape[1]), mask), -1)
    return weights @ V, weights


def sdpa_no_key_nan(Q, K, V, mask=None):
    scores = torch.einsum("bqd,bkd->bqk", Q, K) / math.sqrt(Q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)  # a row of -inf: NaN
    return weights @ V, weights


def sdpa_no_key_uniform(Q, K, V, mask=None):
    scores = Q @ K.mT / math.sqrt(Q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, -1e30)
    weights = scores.softmax(-1)
    return weights @ V, weights


def sdpa_nan_to_num(Q, K, V, mask=None):
    weights = torch.nan_to_num(torch.softmax(_masked(Q @ K.mT / math.sqrt(Q.shape[-1]), mask), -1))
    return weights @ V, weights


def sdpa_torch_and_where(Q, K, V, mask=None):
    out = F.scaled_dot_product_attention(Q, K, V, attn_mask=mask)
    weights = torch.softmax(_masked(Q @ K.mT / math.sqrt(Q.shape[-1]), mask, torch.finfo(Q.dtype).min), -1)
    if mask is not None:
        weights = torch.where(mask.any(-1, keepdim=True), weights, torch.zeros_like(weights))
    return out, weights


def sdpa_float32_inside(Q, K, V, mask=None):
    scores = (Q.float() @ K.float().mT / math.sqrt(Q.shape[-1])).double()  # float32 on the way
    weights = torch.nan_to_num(torch.softmax(_masked(scores, mask), -1))
    return weights @ V, weights


WRONG = {
    "08.sdpa": [
        ("softmax over dim 1", sdpa_softmax_dim1, "softmax_over_queries", "over the keys"),
        ("no scaling", sdpa_no_scale, "not_scaled", "√d_k"),
        ("divided by d_k", sdpa_divide_by_dk, "scaled_by_d", "square root"),
        ("scaled by √d_v", sdpa_scale_dv, "scaled_by_d_v", "√d_v"),
        ("mask after softmax", sdpa_mask_after, "mask_after_softmax", "before the softmax"),
        ("masked scores set to 0", sdpa_mask_zero, "mask_filled_with_zero", "-inf"),
        ("mask polarity inverted", sdpa_inverted, "inverted_mask", "MAY attend"),
        ("weighted sum of keys", sdpa_keys_as_values, "keys_as_values", "values"),
        ("K Qᵀ with einsum", sdpa_transposed, "transposed_scores", "rows must be queries"),
        ("plain average", sdpa_average, "ignores_scores", "average"),
        ("exp without the max", sdpa_naive_exp, "not_finite", "subtract the maximum"),
        ("output only", sdpa_output_only, "wrong_type", "2 values"),
        ("outputs swapped", sdpa_swapped_outputs, "swapped_outputs", "(output, weights)"),
        ("divides Q in place", sdpa_in_place, "mutates_input", "`Q`"),
        ("NumPy", sdpa_numpy, "wrong_type", "NumPy"),
        ("float32", sdpa_float32, "wrong_dtype", "float32"),
        ("detached weights", sdpa_detached, "breaks_autograd", "autograd"),
        ("no return", sdpa_forgot_return, "returned_none", "return"),
        (
            "mask after the softmax, renormalised",
            sdpa_mask_after_renormalised,
            "mask_after_softmax_renormalised",
            "underflow",
        ),
        ("√T_k", sdpa_sqrt_T_k, "scaled_by_sqrt_T_k", "number of keys"),
        ("√T_q", sdpa_sqrt_T_q, "scaled_by_sqrt_T_q", "number of queries"),
        ("NaN for a query with no key", sdpa_no_key_nan, "no_key_nan", "no key left"),
        ("scores in float32", sdpa_float32_inside, "float32_computation", "float32"),
        ("-1e30 fill, uniform for a query with no key", sdpa_no_key_uniform, "no_key_uniform", "no key left"),
        ("polarity inverted, NaN set to 0", sdpa_polarity_nan_to_zero, "inverted_mask", "MAY attend"),
        ("d_k ** 1 / 2", sdpa_power_precedence, "scaled_by_half_d_k", "d_k / 2"),
        ("softmax over the batch", sdpa_softmax_dim0, "softmax_over_batch", "batch axis"),
        ("mask added to the scores", sdpa_mask_added, "bool_mask_added", "True counts as 1"),
        ("the book's function", sdpa_book_function, "forbidden_call", "0 points"),
        (
            "Q @ K without the transpose",
            lambda Q, K, V, mask=None: (torch.softmax(Q @ K, -1) @ V, torch.softmax(Q @ K, -1)),
            "raised",
            "RuntimeError",
        ),
    ],
    "08.causal_mask": [
        ("triu", lambda T: torch.triu(torch.ones(T, T)).bool(), "upper_triangle", "LOWER"),
        (
            "tril(-1)",
            lambda T: torch.tril(torch.ones(T, T, dtype=torch.bool), diagonal=-1),
            "strict_triangle",
            "itself",
        ),
        ("j > i", lambda T: torch.arange(T)[None, :] > torch.arange(T)[:, None], "inverted", "inverted"),
        ("no mask at all", lambda T: torch.ones(T, T) > 0, "all_true", "every key"),
        ("float mask", lambda T: torch.tril(torch.ones(T, T)), "wrong_dtype", "torch.bool"),
        (
            "additive float mask",
            lambda T: torch.triu(torch.full((T, T), float("-inf")), 1),
            "wrong_dtype",
            "torch.bool",
        ),
        (
            "batch axis added",
            lambda T: torch.tril(torch.ones(1, T, T, dtype=torch.bool)),
            "wrong_shape",
            "(T=",
        ),
        (
            "nested lists",
            lambda T: [[j <= i for j in range(T)] for i in range(T)],
            "wrong_type",
            "torch.Tensor",
        ),
        (
            "the book's causal_mask",
            lambda T: __import__("attnbook.attention").attention.causal_mask(T),
            "forbidden_call",
            "0 points",
        ),
    ],
    "08.padding_mask": [
        (
            "padding marked True",
            lambda lengths, T_k: (torch.arange(T_k) >= lengths[:, None])[:, None, :],
            "inverted",
            "True at the padding",
        ),
        (
            "<= length",
            lambda lengths, T_k: (torch.arange(T_k)[None] <= lengths.unsqueeze(1)).unsqueeze(1),
            "off_by_one",
            "one position too many",
        ),
        (
            "mask on the query axis",
            lambda lengths, T_k: (torch.arange(T_k)[None] < lengths[:, None])[:, :, None],
            "query_axis",
            "(B, 1, T_k)",
        ),
        (
            "no query axis",
            lambda lengths, T_k: torch.arange(T_k)[None] < lengths[:, None],
            "wrong_shape",
            "(B=3, 1, T_k=6)",
        ),
        (
            "0/1 integers",
            lambda lengths, T_k: (torch.arange(T_k)[None] < lengths[:, None]).long()[:, None],
            "wrong_dtype",
            "torch.bool",
        ),
        (
            "writes into lengths",
            lambda lengths, T_k: (
                (torch.arange(T_k)[None] < lengths.clamp_(max=T_k)[:, None])[:, None]
                & (lengths.sub_(lengths) == 0)[:, None, None]
            ),
            "mutates_input",
            "`lengths`",
        ),
        (
            "the book's padding_mask",
            lambda lengths, T_k: __import__("attnbook.attention").attention.padding_mask(lengths, T_k),
            "forbidden_call",
            "0 points",
        ),
    ],
}


CORRECT = {
    "08.sdpa": [
        sdpa_nan_to_num,
        sdpa_torch_and_where,
        sdpa_loops,
    ],
    "08.causal_mask": lambda T: torch.arange(T)[:, None] >= torch.arange(T)[None, :],
    "08.padding_mask": lambda lengths, T_k: (
        torch.arange(T_k).expand(len(lengths), T_k) < lengths[:, None]
    ).unsqueeze(-2),
}


def test_infinite_loop_is_stopped():
    task = dataclasses.replace(get_task("08.sdpa"), timeout_s=0.5)
    result = run_task(task, sdpa_loops_forever)
    assert result.diagnosis == "timeout" and "stopped twice, after 0.5 s each time" in result.message


# Wrong answers that match no known misconception: the property checks must name what is wrong.
def _soft(x, mask=None):
    if mask is not None:
        x = x.masked_fill(~mask, float("-inf"))
    return torch.nan_to_num(torch.softmax(x, -1))


WRONG["08.sdpa"] += [
    (
        "damped weights",
        lambda Q, K, V, mask=None: (lambda w: (w @ V, w))(
            0.9 * _soft(Q @ K.transpose(-1, -2) / math.sqrt(Q.shape[-1]), mask)
        ),
        "weights_not_normalised",
        "do not sum to 1",
    ),
    (
        "last key never masked",
        lambda Q, K, V, mask=None: (lambda w: (w @ V, w))(
            _soft(
                Q @ K.transpose(-1, -2) / math.sqrt(Q.shape[-1]),
                None if mask is None else mask | (torch.arange(K.shape[-2]) == K.shape[-2] - 1),
            )
        ),
        "masked_weight_not_zero",
        "not 0",
    ),
]


# Hold-out classes the red team found unnamed (issue 14): written here as a learner would.
def pad_without_last_token(lengths, T_k):
    positions = torch.arange(T_k).unsqueeze(0)
    return (positions < (lengths.unsqueeze(1) - 1)).unsqueeze(1)  # "the last index is length - 1"


def pad_two_short(lengths, T_k):
    positions = torch.arange(T_k).unsqueeze(0)
    return (positions < (lengths.unsqueeze(1) - 2).clamp(min=0)).unsqueeze(1)


WRONG["08.padding_mask"] += [
    ("< lengths - 1", pad_without_last_token, "off_by_one", "drops the last real token"),
    ("two short", pad_two_short, "wrong_lengths", "keeps the first"),
]


def pad_longest_for_all(lengths, T_k):
    longest = int(lengths.max())  # "pad everything to the longest sentence"
    return (torch.arange(T_k) < longest).expand(len(lengths), T_k).unsqueeze(1)


WRONG["08.padding_mask"] += [
    ("the longest length for all", pad_longest_for_all, "wrong_lengths", "one length for the whole batch"),
]


# ------------------------------------------------------------------ red team, round 2 (the grader's fixes)


def sdpa_always_causal(Q, K, V, mask=None):
    """ "Attention must not look ahead": a causal mask of its own, on top of the mask given."""
    scores = Q @ K.transpose(-1, -2) / math.sqrt(Q.shape[-1])
    keep = torch.ones(scores.shape[-2:], dtype=torch.bool).tril()
    if mask is not None:
        keep = keep & mask
    w = torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=-1).nan_to_num(0.0)
    return w @ V, w


def sdpa_mask_unused(Q, K, V, mask=None):
    w = torch.softmax(Q @ K.transpose(-1, -2) / math.sqrt(Q.shape[-1]), dim=-1)
    return w @ V, w


def sdpa_additive_mask(Q, K, V, mask=None):
    """Right values; the mask is added as a bias of 0 and -inf, so empty rows send NaN gradients back."""
    scores = Q @ K.transpose(-1, -2) / math.sqrt(Q.shape[-1])
    if mask is not None:
        scores = scores + torch.zeros(mask.shape, dtype=scores.dtype).masked_fill(~mask, float("-inf"))
    w = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return w @ V, w


WRONG["08.sdpa"] += [
    ("a causal mask always", sdpa_always_causal, "causal_not_asked", "causal (look-ahead) mask of your own"),
    ("the mask argument unused", sdpa_mask_unused, "mask_ignored", "ignores its mask argument"),
    ("mask added as a -inf bias", sdpa_additive_mask, "nan_gradient", "checks gradients too"),
]


# ------------------------------------------------------------------ red team, round 4 (sibling gaps)


def sdpa_returns_the_scores(Q, K, V, mask=None):
    scores = Q @ K.transpose(-2, -1) / math.sqrt(K.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(mask == 0, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ V, scores


def sdpa_no_softmax_at_all(Q, K, V, mask=None):
    scores = Q @ K.transpose(-2, -1) / math.sqrt(K.shape[-1])
    return scores @ V, scores


def sdpa_keys_reshaped(Q, K, V, mask=None):
    B, T_k, d_k = K.shape
    scores = Q @ K.view(B, d_k, T_k) / math.sqrt(d_k)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ V, weights


WRONG["08.sdpa"] += [
    ("the scores returned as the weights", sdpa_returns_the_scores, "returned_scores", "before the softmax"),
    ("no softmax at all", sdpa_no_softmax_at_all, "no_softmax", "without the softmax"),
    ("K viewed instead of transposed", sdpa_keys_reshaped, "reshape_not_transpose", "reshape/view"),
]
