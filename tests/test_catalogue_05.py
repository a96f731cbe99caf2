"""Set 05 (attention weights): every known-wrong implementation is caught, with the right diagnosis.

These are written the way learners write them, independently of the grader's misconception models.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F

from attnbook.grading import get_task, run_task

# ------------------------------------------------------------------------------ helpers (05.stable_softmax was replaced by 05.log_weights)


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


def log_softmax_last(scores):
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


# ------------------------------------------------------------------------------ 05.log_weights


def log_of_softmax(scores, dim):
    return torch.log(torch.softmax(scores, dim=dim))


def log_of_naive(scores, dim):
    e = torch.exp(scores)
    return torch.log(e / e.sum(dim, keepdim=True))


def log_last_axis(scores, dim):
    m = scores.max(-1, keepdim=True).values
    return scores - m - (scores - m).exp().sum(-1, keepdim=True).log()


def log_returns_weights(scores, dim):
    e = torch.exp(scores - scores.amax(dim, keepdim=True))
    return e / e.sum(dim, keepdim=True)


def log_no_shift(scores, dim):
    return scores - torch.log(torch.sum(torch.exp(scores), dim=dim, keepdim=True))


def log_shift_only(scores, dim):
    return scores - scores.amax(dim=dim, keepdim=True)


def log_forgot_m(scores, dim):
    m = scores.amax(dim=dim, keepdim=True)
    return scores - torch.log(torch.exp(scores - m).sum(dim=dim, keepdim=True))


def log_plus_lse(scores, dim):
    m = scores.amax(dim=dim, keepdim=True)
    return scores + m + torch.log(torch.exp(scores - m).sum(dim=dim, keepdim=True))


def log_global_max(scores, dim):
    m = scores.max()
    return scores - m - torch.log(torch.exp(scores - m).sum(dim=dim, keepdim=True))


def log_sigmoid(scores, dim):
    return F.logsigmoid(scores)


def log_flat(scores, dim):
    flat = scores.flatten()
    return (flat - torch.logsumexp(flat, 0)).view_as(scores)


def log_no_keepdim(scores, dim):
    m = scores.amax(dim=dim)
    return scores - m - torch.log(torch.exp(scores - m).sum(dim=dim))


def log_in_place(scores, dim):
    scores -= scores.amax(dim=dim, keepdim=True)
    return scores - scores.exp().sum(dim=dim, keepdim=True).log()


def log_float32(scores, dim):
    return torch.log_softmax(scores.float(), dim)


def log_float32_inside(scores, dim):
    x = scores.float()
    m = x.amax(dim=dim, keepdim=True)
    return (x - m - torch.log(torch.exp(x - m).sum(dim=dim, keepdim=True))).double()


def log_detached(scores, dim):
    return torch.log_softmax(scores.detach(), dim)


def log_numpy(scores, dim):
    x = scores.numpy()
    m = x.max(axis=dim, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=dim, keepdims=True))


def log_moved(scores, dim):
    x = scores.movedim(dim, -1)
    m = x.amax(-1, keepdim=True)
    out = x - m - (x - m).exp().sum(-1, keepdim=True).log()
    return out.movedim(-1, dim)


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


def masked_sigmoid(scores, mask):
    return torch.sigmoid(scores) * mask


def masked_log(scores, mask):
    return torch.log_softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)


def masked_batch_axis(scores, mask):
    return torch.nan_to_num(torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=0))


def masked_finfo_min_only(scores, mask):
    return torch.softmax(scores.masked_fill(~mask, torch.finfo(scores.dtype).min), dim=-1)


def masked_empty_sentence_only(scores, mask):
    # zeroes a sentence whose mask is entirely False, but not a single query without keys
    w = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    m = mask.expand_as(scores)
    return torch.where(m.flatten(-2).any(-1)[..., None, None], w, torch.zeros_like(w))


def masked_where_valid(scores, mask):
    w = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return torch.where(mask.any(dim=-1, keepdim=True), w, torch.zeros_like(w))


def masked_finfo_valid(scores, mask):
    w = torch.softmax(scores.masked_fill(~mask, torch.finfo(scores.dtype).min), dim=-1)
    return w * mask.any(-1, keepdim=True)


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
        scores[b, :, int(lengths[b]) :] = float("-inf")
    return _rows_to_zero(torch.softmax(scores, -1))


def lengths_first_only(scores, lengths):
    n = int(lengths[0])
    mask = (torch.arange(scores.shape[-1]) < n)[None, None, :]
    return _rows_to_zero(torch.softmax(scores.masked_fill(~mask, float("-inf")), -1))


def lengths_max_first(scores, lengths):
    mask = (torch.arange(scores.shape[-1])[None, :] < lengths[:, None])[:, None, :]
    e = torch.exp(scores - scores.amax(-1, keepdim=True)) * mask
    s = e.sum(-1, keepdim=True)
    return e / torch.where(s > 0, s, torch.ones_like(s))


def lengths_dim0(scores, lengths):
    mask = (torch.arange(scores.shape[-1])[None, :] < lengths[:, None])[:, None, :]
    return _rows_to_zero(torch.softmax(scores.masked_fill(~mask, float("-inf")), 0))


def lengths_float_lengths(scores, lengths):
    mask = (
        torch.arange(scores.shape[-1]) < lengths.float()
    )  # broadcasts (T_k,) with (B,): wrong unless B = T_k
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


def temp_sqrt(scores, tau):
    return torch.softmax(scores / math.sqrt(tau), dim=-1)


def temp_hard_when_cold(scores, tau):
    if tau < 0.1:
        return F.one_hot(scores.argmax(-1), scores.shape[-1]).to(scores.dtype)
    return torch.softmax(scores / tau, dim=-1)


def temp_uniform_when_hot(scores, tau):
    if tau >= 50:
        return torch.full_like(scores, 1.0 / scores.shape[-1])
    return torch.softmax(scores / tau, dim=-1)


def temp_power_renormalised(scores, tau):
    w = torch.softmax(scores, dim=-1) ** (1 / tau)
    return w / w.sum(-1, keepdim=True)


def temp_log(scores, tau):
    return F.log_softmax(scores / tau, dim=-1)


def temp_float32_inside(scores, tau):
    return torch.softmax(scores.float() / tau, dim=-1).double()


def temp_in_place(scores, tau):
    scores /= tau
    return torch.softmax(scores, -1)


# ------------------------------------------------------------------------------ 05.hand_weights

E = [1.0, 3.0, -1.0, 2.0]  # the scores of the by-hand task; the last key is padding


def hand_softmax(scores):
    exps = [math.exp(x) for x in scores]
    return [x / sum(exps) for x in exps]


WRONG = {
    "05.log_weights": [
        ("log of torch.softmax", log_of_softmax, "log_of_softmax", "log of the softmax"),
        ("log of exp / sum", log_of_naive, "overflow", "log domain"),
        ("always the last axis", log_last_axis, "ignores_dim", "`dim`"),
        ("returns the weights", log_returns_weights, "returned_softmax", "logarithm"),
        ("no max subtraction", log_no_shift, "overflow", "Shift by the maximum"),
        ("subtracts the max only", log_shift_only, "shift_only", "log of the sum"),
        ("forgot m", log_forgot_m, "forgot_max_in_lse", "not m itself"),
        ("adds the log-sum-exp", log_plus_lse, "lse_sign", "instead of subtracting"),
        ("max of the whole tensor", log_global_max, "global_max", "whole tensor"),
        ("log-sigmoid", log_sigmoid, "log_sigmoid", "log-sigmoid"),
        ("one normaliser for everything", log_flat, "all_entries", "all entries"),
        ("no keepdim", log_no_keepdim, "raised", "keepdim"),
        ("subtracts in place", log_in_place, "mutates_input", "`scores`"),
        ("NumPy", log_numpy, "wrong_type", "NumPy"),
        ("float32", log_float32, "wrong_dtype", "float32"),
        ("float32 inside", log_float32_inside, "float32_computation", "float32"),
        ("detached", log_detached, "breaks_autograd", "autograd"),
        ("no return", lambda scores, dim: None, "returned_none", "return"),
        ("one argument", lambda scores: torch.log_softmax(scores, -1), "wrong_signature", "(scores, dim)"),
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
        (
            "exp(x - max) * mask, guarded",
            masked_exp_times_mask_guarded,
            "normalised_before_mask",
            "Mask first",
        ),
        ("exp(x) * mask", masked_naive, "overflow", "overflows"),
        ("masked_fill_ in place", masked_in_place, "mutates_input", "`scores`"),
        ("float32 result", masked_float_mask, "wrong_dtype", "float32"),
        ("sigmoid", masked_sigmoid, "sigmoid", "sigmoid"),
        ("log_softmax", masked_log, "log_softmax", "log-probabilities"),
        ("softmax over the batch", masked_batch_axis, "batch_axis", "batch axis"),
        ("finfo.min, empty rows left uniform", masked_finfo_min_only, "large_negative_fill", "uniform"),
        ("only empty sentences zeroed", masked_empty_sentence_only, "nan_fully_masked", "NaN"),
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
        ("first sentence's length for all", lengths_first_only, "one_length_for_all", "first sentence"),
        (
            "< length - 1",
            lambda scores, lengths: _rows_to_zero(
                torch.softmax(
                    scores.masked_fill(
                        ~(torch.arange(scores.shape[-1]) < lengths[:, None] - 1)[:, None, :], float("-inf")
                    ),
                    -1,
                )
            ),
            "off_by_one",
            "length - 1",
        ),
        (
            "max over the padded scores too",
            lengths_max_first,
            "max_includes_masked",
            "includes the masked scores",
        ),
        ("softmax over the batch", lengths_dim0, "batch_axis", "batch axis"),
    ],
    "05.softmax_with_temperature": [
        ("multiplied by tau", temp_times, "multiplied_temperature", "divide them"),
        ("tau ignored", temp_ignored, "ignored_temperature", "do not change with tau"),
        ("divided after the softmax", temp_after, "divided_after_softmax", "after the softmax"),
        ("power 1/tau", temp_power, "power_not_normalised", "without normalising"),
        ("softmax over dim 0", temp_dim0, "wrong_axis", "over queries"),
        ("exp(e / tau) without the max", temp_naive, "overflow", "tau is small"),
        ("divided scores in place", temp_in_place, "mutates_input", "`scores`"),
        ("divided by tau²", temp_squared, "tau_squared", "twice"),
        ("divided by √tau", temp_sqrt, "sqrt_tau", "√tau"),
        ("argmax when cold", temp_hard_when_cold, "hard_argmax", "one-hot"),
        ("uniform when hot", temp_uniform_when_hot, "uniform_at_large_tau", "exactly uniform"),
        ("weights to the power 1/tau, renormalised", temp_power_renormalised, "power_underflow", "underflow"),
        ("log_softmax", temp_log, "log_softmax", "log-probabilities"),
        ("float32 inside", temp_float32_inside, "float32_computation", "float32"),
    ],
    "05.hand_weights": [
        ("softmax of all four", lambda: hand_softmax(E), "ignored_mask", "padded last key"),
        (
            "softmax, then the last set to 0",
            lambda: hand_softmax(E)[:3] + [0.0],
            "mask_after_softmax",
            "no longer sum to 1",
        ),
        ("padded score 0", lambda: hand_softmax(E[:3] + [0.0]), "fill_zero", "exp(0) = 1"),
        ("the scores", lambda: E, "returned_scores", "scores"),
        ("scores over their sum", lambda: [x / sum(E[:3]) for x in E[:3]] + [0.0], "no_exp", "exp(e_i)"),
        ("halved first", lambda: hand_softmax([x / 2 for x in E[:3]]) + [0.0], "scaled", "√d = 2"),
        ("uniform over three", lambda: [1 / 3, 1 / 3, 1 / 3, 0.0], "wrong_values", "is wrong"),
        ("a tensor", lambda: torch.tensor(hand_softmax(E[:3]) + [0.0]), "wrong_type", "list"),
        ("three numbers", lambda: hand_softmax(E[:3]), "padded_key_left_out", "four weights"),
        (
            "the exponentials",
            lambda: [math.exp(x) for x in E[:3]] + [0.0],
            "no_normalisation",
            "exponentials",
        ),
        ("last key first", lambda: [0.0] + hand_softmax(E[:3])[::-1], "reversed", "reverse order"),
    ],
}

CORRECT = {
    "05.log_weights": [
        lambda scores, dim: torch.log_softmax(scores, dim),
        lambda scores, dim: scores - torch.logsumexp(scores, dim=dim, keepdim=True),
        lambda scores, dim: F.log_softmax(scores, dim=dim),
        log_moved,
    ],
    "05.masked_softmax": [
        lambda scores, mask: torch.nan_to_num(torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)),
        lambda scores, mask: torch.where(
            mask.any(-1, keepdim=True), torch.softmax(scores.masked_fill(~mask, -1e9), -1), 0.0
        ),
        masked_where_valid,
        masked_finfo_valid,
    ],
    "05.attention_weights_from_lengths": [
        lambda scores, lengths: torch.nan_to_num(
            torch.softmax(
                scores.masked_fill(
                    (torch.arange(scores.shape[-1]) >= lengths[:, None])[:, None, :], float("-inf")
                ),
                -1,
            )
        ),
    ],
    "05.softmax_with_temperature": [
        lambda scores, tau: torch.softmax(scores / tau, dim=-1),
        lambda scores, tau: F.softmax(scores * (1.0 / tau), -1),
    ],
    "05.hand_weights": [
        lambda: hand_softmax(E[:3]) + [0.0],
        lambda: [0.1173, 0.8668, 0.0159, 0.0],  # rounded to 4 decimals: within the tolerance of 1e-3
    ],
}


def test_infinite_loop_is_stopped():
    task = dataclasses.replace(get_task("05.log_weights"), timeout_s=0.5)
    result = run_task(task, loops_forever)
    assert result.diagnosis == "timeout" and "stopped twice, after 0.5 s each time" in result.message


def test_a_learner_exception_is_one_line_naming_it():
    def typo(scores, dim):
        return torch.log_softmax(score, dim=dim)  # noqa: F821 (the learner's typo)

    result = run_task(get_task("05.log_weights"), typo)
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


WRONG["05.log_weights"] += [
    ("adds 1", lambda scores, dim: torch.log_softmax(scores, dim) + 1.0, "positive_log_weight", "positive"),
    (
        "subtracts 0.1",
        lambda scores, dim: torch.log_softmax(scores, dim) - 0.1,
        "not_normalised",
        "does not sum to 1",
    ),
]
WRONG["05.softmax_with_temperature"] += [
    (
        "adds 1 to the denominator",
        lambda scores, tau: _plus_one(torch.exp(scores / tau - (scores / tau).amax(-1, keepdim=True))),
        "not_normalised",
        "do not sum to 1",
    ),
]
WRONG["05.masked_softmax"] += [
    ("subtracts a constant", lambda scores, mask: _soft(scores, mask) - 0.05, "negative_weights", "negative"),
    (
        "first query's mask for every query",
        lambda scores, mask: _soft(scores, mask.expand_as(scores)[..., :1, :].expand_as(scores)),
        "masked_weight_not_zero",
        "non-zero weight",
    ),
    ("damped weights", lambda scores, mask: 0.9 * _soft(scores, mask), "not_normalised", "do not sum to 1"),
]
WRONG["05.attention_weights_from_lengths"] += [
    (
        "subtracts a constant",
        lambda scores, lengths: _soft(scores, _keep(lengths, scores.shape[-1])) - 0.05,
        "negative_weights",
        "negative",
    ),
    (
        "last key never masked",
        lambda scores, lengths: _soft(
            scores,
            _keep(lengths, scores.shape[-1]) | (torch.arange(scores.shape[-1]) == scores.shape[-1] - 1),
        ),
        "masked_weight_not_zero",
        "non-zero weight",
    ),
    (
        "damped weights",
        lambda scores, lengths: 0.9 * _soft(scores, _keep(lengths, scores.shape[-1])),
        "not_normalised",
        "do not sum to 1",
    ),
]
WRONG["05.softmax_with_temperature"] += [
    (
        "subtracts a constant",
        lambda scores, tau: torch.softmax(scores / tau, -1) - 0.25,
        "negative_weights",
        "negative",
    ),
]


# Hold-out classes the red team found unnamed or misnamed (issue 14): written here as a learner would.
def log_shift_by_largest_magnitude(scores, dim):
    m = scores.abs().max(dim=dim, keepdim=True).values  # "the biggest number, whatever its sign"
    return scores - m - (scores - m).exp().sum(dim=dim, keepdim=True).log()


def masked_softmax_then_renormalise(scores, mask):
    w = F.softmax(scores, dim=-1).masked_fill(~mask, 0.0)
    total = w.sum(-1, keepdim=True)
    return torch.where(total > 0, w / total, torch.zeros_like(w))


def temp_clamped_for_stability(scores, tau):
    return torch.softmax(scores / max(tau, 0.1), dim=-1)


def temp_one_plus_tau(scores, tau):
    return torch.softmax(scores / (1.0 + tau), dim=-1)


WRONG["05.log_weights"] += [
    (
        "shift by the largest |score|",
        log_shift_by_largest_magnitude,
        "shift_not_max",
        "not the largest score",
    ),
]
WRONG["05.masked_softmax"] += [
    (
        "softmax, then mask and renormalise",
        masked_softmax_then_renormalise,
        "normalised_before_mask",
        "the mask came only afterwards",
    ),
]
WRONG["05.softmax_with_temperature"] += [
    ("tau clamped at 0.1", temp_clamped_for_stability, "other_temperature", "another temperature"),
    ("divides by 1 + tau", temp_one_plus_tau, "other_temperature", "another temperature"),
]


# ------------------------------------------------------------------ red team, round 2 (the grader's fixes)


def masked_nan_to_uniform(scores, mask):
    """-inf, as asked; but a row with no key left is turned from NaN into uniform weights."""
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), -1).nan_to_num(1.0 / scores.shape[-1])


def log_weights_frees_exps(scores, dim):
    """Right values; zeroes its exponentials in place to "free" them, which autograd still needs."""
    x = scores - scores.amax(dim=dim, keepdim=True)
    e = torch.exp(x)
    log_sum = torch.log(e.sum(dim=dim, keepdim=True))
    e.zero_()
    return x - log_sum + e


WRONG["05.masked_softmax"] += [
    ("-inf, then NaN rows made uniform", masked_nan_to_uniform, "large_negative_fill", "replacing the NaN"),
]
WRONG["05.log_weights"] += [
    ("exponentials zeroed in place", log_weights_frees_exps, "breaks_autograd", "checks gradients too"),
]
WRONG["05.hand_weights"] += [
    (
        "rounded to 2 decimals",
        lambda: [round(x, 2) for x in hand_softmax(E[:3])] + [0.0],
        "not_precise",
        "rounded to 2 decimals",
    ),
]


def test_uniform_rows_are_not_blamed_on_a_fill_the_learner_did_not_use():
    """The message names the uniform weights, not a large negative fill as the only cause (red team, A5)."""
    result = run_task(get_task("05.masked_softmax"), masked_nan_to_uniform)
    assert not result.message.startswith("you filled"), result.message
    assert "uniform weights 1/T_k" in result.message, result.message
