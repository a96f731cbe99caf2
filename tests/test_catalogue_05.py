"""Set 05 (attention weights): every known-wrong implementation is caught, with the right diagnosis.

These are written the way learners write them, independently of the grader's misconception models.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnbook.grading import get_task, run_task

# ------------------------------------------------------------------------------ 05.stable_softmax


def softmax_dim1(scores):
    return torch.softmax(scores, dim=1)


def softmax_dim0(scores):
    return F.softmax(scores, 0)


def softmax_flat(scores):
    e = torch.exp(scores - scores.max())
    return e / e.sum()


def exp_only(scores):
    return torch.exp(scores)


def exp_minus_max_only(scores):
    m, _ = scores.max(dim=-1, keepdim=True)
    return (scores - m).exp()


def divide_by_sum(scores):
    return scores / torch.sum(scores, dim=-1, keepdim=True)


def naive_softmax(scores):
    numerator = torch.exp(scores)
    return numerator / numerator.sum(-1, keepdim=True)


def global_max_softmax(scores):
    shifted = scores - torch.max(scores)
    e = torch.exp(shifted)
    return e / e.sum(dim=-1, keepdim=True)


def log_softmax(scores):
    return F.log_softmax(scores, dim=-1)


def softmax_in_place(scores):
    scores -= scores.amax(-1, keepdim=True)
    scores.exp_()
    return scores / scores.sum(-1, keepdim=True)


def softmax_numpy(scores):
    x = scores.numpy()
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def softmax_float32(scores):
    return torch.softmax(scores.float(), dim=-1)


def softmax_detached(scores):
    return torch.softmax(scores.detach(), -1)


def softmax_no_return(scores):
    weights = torch.softmax(scores, -1)  # noqa: F841


def softmax_max_without_keepdim(scores):
    return torch.exp(scores - scores.max(-1).values) / torch.exp(scores - scores.max(-1).values).sum(-1)


def softmax_python_loop(scores):
    return [math.exp(x) for x in scores.flatten().tolist()]


def loops_forever(*args):
    while True:
        pass


# ------------------------------------------------------------------------------ 05.masked_softmax


def masked_after(scores, mask):
    weights = torch.softmax(scores, dim=-1)
    return weights * mask


def masked_fill_zero(scores, mask):
    return torch.softmax(scores.masked_fill(~mask, 0), dim=-1)


def masked_where_zero(scores, mask):
    return torch.where(mask, scores, torch.zeros_like(scores)).softmax(-1)


def masked_inverted(scores, mask):
    weights = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
    return torch.nan_to_num(weights)


def masked_ignored(scores, mask):
    return torch.softmax(scores, dim=-1)


def masked_dim1(scores, mask):
    weights = torch.softmax(scores.masked_fill(mask == 0, float("-inf")), dim=1)
    return torch.nan_to_num(weights)


def masked_nan_rows(scores, mask):
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)


def masked_minus_1e9(scores, mask):
    return F.softmax(scores.masked_fill(mask == False, -1e9), dim=-1)  # noqa: E712 (learner style)


def masked_exp_times_mask(scores, mask):
    e = torch.exp(scores - scores.max(dim=-1, keepdim=True).values) * mask.float()
    return e / e.sum(dim=-1, keepdim=True)


def masked_exp_times_mask_guarded(scores, mask):
    e = torch.exp(scores - scores.max(dim=-1, keepdim=True).values) * mask
    s = e.sum(dim=-1, keepdim=True)
    return e / torch.where(s == 0, torch.ones_like(s), s)


def masked_naive(scores, mask):
    e = scores.exp() * mask
    return e / e.sum(-1, keepdim=True)


def masked_in_place(scores, mask):
    scores.masked_fill_(~mask, float("-inf"))
    return torch.nan_to_num(torch.softmax(scores, dim=-1))


def masked_float_mask(scores, mask):
    return torch.nan_to_num(torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)).float()


# ------------------------------------------------------------------------------ 05.attention_weights_from_lengths


def _rows_to_zero(weights):
    return torch.nan_to_num(weights, nan=0.0)


def lengths_query_axis(scores, lengths):
    B, T_q, T_k = scores.shape
    mask = torch.arange(T_q).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T_q)
    return _rows_to_zero(torch.softmax(scores.masked_fill(~mask[:, :, None], float("-inf")), -1))


def lengths_le(scores, lengths):
    mask = torch.arange(scores.shape[-1])[None, :] <= lengths[:, None]
    return _rows_to_zero(torch.softmax(scores.masked_fill(~mask[:, None, :], float("-inf")), -1))


def lengths_ge(scores, lengths):
    mask = torch.arange(scores.shape[-1])[None, :] >= lengths[:, None]
    return _rows_to_zero(torch.softmax(scores.masked_fill(~mask[:, None, :], float("-inf")), -1))


def lengths_ignored(scores, lengths):
    return torch.softmax(scores, -1)


def lengths_after(scores, lengths):
    mask = (torch.arange(scores.size(2)) < lengths.view(-1, 1)).unsqueeze(1)
    return torch.softmax(scores, -1) * mask


def lengths_zero_fill(scores, lengths):
    out = scores.clone()
    for b, n in enumerate(lengths.tolist()):
        out[b, :, n:] = 0.0
    return torch.softmax(out, -1)


def lengths_dim1(scores, lengths):
    mask = (torch.arange(scores.size(2)) < lengths.view(-1, 1)).unsqueeze(1)
    return _rows_to_zero(torch.softmax(scores.masked_fill(~mask, float("-inf")), 1))


def lengths_naive(scores, lengths):
    mask = (torch.arange(scores.size(2)) < lengths.view(-1, 1)).unsqueeze(1)
    e = torch.exp(scores) * mask
    return e / e.sum(-1, keepdim=True)


def lengths_nan_rows(scores, lengths):
    mask = (torch.arange(scores.size(2)) < lengths.view(-1, 1)).unsqueeze(1)
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)


def lengths_minus_1e9(scores, lengths):
    mask = torch.stack([torch.arange(scores.shape[2]) < n for n in lengths])[:, None, :]
    return torch.softmax(torch.where(mask, scores, torch.tensor(-1e9, dtype=scores.dtype)), -1)


def lengths_loop_in_place(scores, lengths):
    for b in range(scores.shape[0]):
        scores[b, :, int(lengths[b]):] = float("-inf")
    return _rows_to_zero(torch.softmax(scores, -1))


def lengths_float_lengths(scores, lengths):
    mask = torch.arange(scores.shape[-1]) < lengths.float()  # broadcasts (T_k,) with (B,): wrong unless B = T_k
    return _rows_to_zero(torch.softmax(scores.masked_fill(~mask, float("-inf")), -1))


# ------------------------------------------------------------------------------ 05.softmax_with_temperature


def temp_times(scores, tau):
    return torch.softmax(scores * tau, dim=-1)


def temp_ignored(scores, tau):
    return torch.softmax(scores, dim=-1)


def temp_after(scores, tau):
    return torch.softmax(scores, dim=-1) / tau


def temp_power(scores, tau):
    return torch.softmax(scores, dim=-1) ** (1 / tau)


def temp_dim0(scores, tau):
    return torch.softmax(scores / tau, dim=0)


def temp_naive(scores, tau):
    e = torch.exp(scores / tau)
    return e / e.sum(-1, keepdim=True)


def temp_squared(scores, tau):
    return torch.softmax(scores / tau**2, dim=-1)


def temp_in_place(scores, tau):
    scores /= tau
    return torch.softmax(scores, -1)


# ------------------------------------------------------------------------------ 05.hand_weights

E3 = [1.0, 1.5, 0.5, 3.0]  # the worked example's scores at t=3 (exercise 04.hand_scores)


def hand_softmax(scores):
    exps = [math.exp(x) for x in scores]
    return [x / sum(exps) for x in exps]


WRONG = {
    "05.stable_softmax": [
        ("softmax over dim 1", softmax_dim1, "wrong_axis", "sum to 1 over queries, not keys"),
        ("softmax over dim 0", softmax_dim0, "batch_axis", "batch axis"),
        ("one softmax over everything", softmax_flat, "all_entries", "all entries"),
        ("exp only", exp_only, "no_normalisation", "did not divide by the sum"),
        ("exp(x - max) only", exp_minus_max_only, "no_normalisation", "did not divide by the sum"),
        ("divided by the sum, no exp", divide_by_sum, "no_exp", "without taking exp"),
        ("no max subtraction", naive_softmax, "overflow", "Subtract each row's maximum"),
        ("max of the whole tensor", global_max_softmax, "global_max", "whole tensor"),
        ("log_softmax", log_softmax, "log_softmax", "log-probabilities"),
        ("max without keepdim", softmax_max_without_keepdim, "raised", "RuntimeError"),
        ("subtracts in place", softmax_in_place, "mutates_input", "`scores`"),
        ("NumPy", softmax_numpy, "wrong_type", "NumPy"),
        ("float32", softmax_float32, "wrong_dtype", "float32"),
        ("detached", softmax_detached, "breaks_autograd", "autograd"),
        ("no return", softmax_no_return, "returned_none", "return"),
        ("Python list", softmax_python_loop, "wrong_type", "torch.Tensor"),
    ],
    "05.masked_softmax": [
        ("mask after the softmax", masked_after, "mask_after_softmax", "no longer sum to 1"),
        ("masked_fill with 0", masked_fill_zero, "fill_zero", "-inf"),
        ("torch.where with zeros", masked_where_zero, "fill_zero", "exp(0) = 1"),
        ("masked_fill(mask, -inf)", masked_inverted, "mask_polarity", "inverted"),
        ("mask ignored", masked_ignored, "ignored_mask", "ignore the mask"),
        ("softmax over dim 1", masked_dim1, "wrong_axis", "sum to 1 over queries, not keys"),
        ("NaN for an empty row", masked_nan_rows, "nan_fully_masked", "NaN"),
        ("fill with -1e9", masked_minus_1e9, "large_negative_fill", "uniform"),
        ("exp(x - max) * mask", masked_exp_times_mask, "max_includes_masked", "includes the masked scores"),
        ("exp(x - max) * mask, guarded", masked_exp_times_mask_guarded, "max_includes_masked", "Mask first"),
        ("exp(x) * mask", masked_naive, "overflow", "overflows"),
        ("masked_fill_ in place", masked_in_place, "mutates_input", "`scores`"),
        ("float32 result", masked_float_mask, "wrong_dtype", "float32"),
    ],
    "05.attention_weights_from_lengths": [
        ("mask over the queries", lengths_query_axis, "mask_wrong_axis", "queries (rows) instead of keys"),
        ("<= length", lengths_le, "off_by_one", "< length"),
        (">= length kept", lengths_ge, "mask_polarity", "inverted"),
        ("lengths ignored", lengths_ignored, "ignored_mask", "ignore the lengths"),
        ("mask after the softmax", lengths_after, "mask_after_softmax", "no longer sum to 1"),
        ("padded scores set to 0", lengths_zero_fill, "fill_zero", "-inf"),
        ("softmax over dim 1", lengths_dim1, "wrong_axis", "over queries"),
        ("exp(x) * mask", lengths_naive, "overflow", "overflows"),
        ("NaN for length 0", lengths_nan_rows, "nan_fully_masked", "all zeros"),
        ("fill with -1e9", lengths_minus_1e9, "large_negative_fill", "1/T_k"),
        ("writes -inf into scores", lengths_loop_in_place, "mutates_input", "`scores`"),
        ("mask without a batch axis", lengths_float_lengths, "raised", "RuntimeError"),
    ],
    "05.softmax_with_temperature": [
        ("multiplied by tau", temp_times, "multiplied_temperature", "divide them"),
        ("tau ignored", temp_ignored, "ignored_temperature", "do not change with tau"),
        ("divided after the softmax", temp_after, "divided_after_softmax", "after the softmax"),
        ("power 1/tau", temp_power, "power_not_normalised", "without normalising"),
        ("softmax over dim 0", temp_dim0, "wrong_axis", "over queries"),
        ("exp(e / tau) without the max", temp_naive, "overflow", "tau is small"),
        ("divided scores in place", temp_in_place, "mutates_input", "`scores`"),
        ("divided by tau²", temp_squared, "wrong_values", "is wrong"),
    ],
    "05.hand_weights": [
        ("the scores", lambda: E3, "returned_scores", "before the softmax"),
        ("scores over their sum", lambda: [x / sum(E3) for x in E3], "no_exp", "exp(e_i)"),
        ("scaled by 1/2", lambda: hand_softmax([x / 2 for x in E3]), "scaled", "√d = 2"),
        ("step 1", lambda: hand_softmax([2.5, 0.0, 2.0, 0.5]), "wrong_step_1", "t=1"),
        ("step 2", lambda: hand_softmax([0.0, 2.0, 1.5, 1.0]), "wrong_step_2", "t=2"),
        ("uniform", lambda: [0.25] * 4, "wrong_values", "is wrong"),
        ("a tensor", lambda: torch.tensor(hand_softmax(E3)), "wrong_type", "list"),
        ("three numbers", lambda: hand_softmax(E3)[:3], "wrong_values", "is wrong"),
    ],
}

CORRECT = {
    "05.stable_softmax": [
        lambda scores: torch.softmax(scores, dim=-1),
        lambda scores: (lambda e: e / e.sum(-1, keepdim=True))(torch.exp(scores - scores.max(-1, keepdim=True)[0])),
        lambda scores: torch.exp(scores - torch.logsumexp(scores, dim=-1, keepdim=True)),
    ],
    "05.masked_softmax": [
        lambda scores, mask: torch.nan_to_num(torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)),
        lambda scores, mask: torch.where(mask.any(-1, keepdim=True),
                                         torch.softmax(scores.masked_fill(~mask, -1e9), -1), 0.0),
    ],
    "05.attention_weights_from_lengths": [
        lambda scores, lengths: torch.nan_to_num(torch.softmax(scores.masked_fill(
            (torch.arange(scores.shape[-1]) >= lengths[:, None])[:, None, :], float("-inf")), -1)),
    ],
    "05.softmax_with_temperature": [
        lambda scores, tau: torch.softmax(scores / tau, dim=-1),
        lambda scores, tau: F.softmax(scores * (1.0 / tau), -1),
    ],
    "05.hand_weights": [
        lambda: hand_softmax(E3),
        lambda: [0.0939, 0.1549, 0.0570, 0.6942],  # rounded to 4 decimals: within the tolerance of 1e-3
    ],
}


def test_infinite_loop_is_stopped():
    task = dataclasses.replace(get_task("05.stable_softmax"), timeout_s=0.5)
    result = run_task(task, loops_forever)
    assert result.diagnosis == "timeout" and "stopped after 0.5 s" in result.message


def test_a_learner_exception_is_one_line_naming_it():
    def typo(scores):
        return torch.softmax(score, dim=-1)  # noqa: F821 (the learner's typo)

    result = run_task(get_task("05.stable_softmax"), typo)
    assert result.diagnosis == "raised" and "NameError" in result.message and "\n" not in result.message


def test_wrong_signature_is_named():
    result = run_task(get_task("05.masked_softmax"), lambda scores: torch.softmax(scores, -1))
    assert result.diagnosis == "wrong_signature" and "(scores, mask)" in result.message


# Wrong answers that match no known misconception: the property checks must name what is wrong.
def _keep(lengths, n):
    return (torch.arange(n)[None, :] < lengths[:, None])[:, None, :]


def _soft(x, mask=None):
    if mask is not None:
        x = x.masked_fill(~mask, float("-inf"))
    return torch.nan_to_num(torch.softmax(x, -1))


def _plus_one(e):
    return e / (e.sum(-1, keepdim=True) + 1)


WRONG["05.stable_softmax"] += [
    ("subtracts a constant", lambda scores: torch.softmax(scores, -1) - 0.05, "negative_weights", "negative"),
    ("adds 1 to the denominator", lambda scores: _plus_one(torch.exp(scores - scores.amax(-1, keepdim=True))),
     "not_normalised", "do not sum to 1"),
]
WRONG["05.softmax_with_temperature"] += [
    ("adds 1 to the denominator", lambda scores, tau: _plus_one(torch.exp(scores / tau - (scores / tau).amax(-1, keepdim=True))),
     "not_normalised", "do not sum to 1"),
]
WRONG["05.masked_softmax"] += [
    ("subtracts a constant", lambda scores, mask: _soft(scores, mask) - 0.05, "negative_weights", "negative"),
    ("first query's mask for every query", lambda scores, mask: _soft(scores, mask.expand_as(scores)[..., :1, :].expand_as(scores)),
     "masked_weight_not_zero", "non-zero weight"),
    ("damped weights", lambda scores, mask: 0.9 * _soft(scores, mask), "not_normalised", "do not sum to 1"),
]
WRONG["05.attention_weights_from_lengths"] += [
    ("subtracts a constant", lambda scores, lengths: _soft(scores, _keep(lengths, scores.shape[-1])) - 0.05,
     "negative_weights", "negative"),
    ("last key never masked", lambda scores, lengths: _soft(scores, _keep(lengths, scores.shape[-1]) | (torch.arange(scores.shape[-1]) == scores.shape[-1] - 1)),
     "masked_weight_not_zero", "non-zero weight"),
    ("damped weights", lambda scores, lengths: 0.9 * _soft(scores, _keep(lengths, scores.shape[-1])), "not_normalised", "do not sum to 1"),
]
WRONG["05.softmax_with_temperature"] += [
    ("subtracts a constant", lambda scores, tau: torch.softmax(scores / tau, -1) - 0.25, "negative_weights", "negative"),
]
