"""Set 05, attention weights: ``alpha^t = softmax(e^t)``, stably, with masks, lengths and temperature.

Every task normalises over the **last** axis, the key axis: one distribution over source positions per
query. Cases put distinct sizes on every axis (so a softmax over the wrong axis cannot hide), scores of
±1e3 (so a softmax without the max subtraction overflows) and masks with different valid lengths,
including rows whose keys are all masked (their weights must be zeros, not NaN).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ... import worked_example as wx
from ..cases import DTYPE, generator, randn, tied
from ..engine import Case, Misconception, Task
from ..registry import register

NEG_INF = float("-inf")


def _stable(x, dim=-1):
    """Softmax with the max subtracted; a slice that is all -inf gives zeros."""
    x_max = x.amax(dim=dim, keepdim=True)
    x_max = torch.where(torch.isfinite(x_max), x_max, torch.zeros_like(x_max))
    e = torch.exp(x - x_max)
    total = e.sum(dim=dim, keepdim=True)
    return e / torch.where(total > 0, total, torch.ones_like(total))


def _masked(scores, mask):
    return _stable(scores.masked_fill(~mask, NEG_INF))


def _naive(x, dim=-1):
    e = torch.exp(x)
    return e / e.sum(dim=dim, keepdim=True)


def _length_mask(lengths, T_k):
    """``(B, 1, T_k)``: True at key positions ``< lengths[b]``."""
    return (torch.arange(T_k)[None, :] < lengths[:, None]).unsqueeze(1)


def _keep_row_max(scores, mask):
    """``mask`` with each row's largest score kept, so that every row has a key and its max is valid."""
    top = F.one_hot(scores.argmax(-1), scores.shape[-1]).bool()
    return mask | top


def _bool_mask(gen, *shape, p=0.6):
    return torch.rand(shape, generator=gen, dtype=DTYPE) < p


# --------------------------------------------------------------------------------------------- properties


def _weights_of(case, outputs):
    """The learner's weights and the scores they came from, if the shapes agree (else None)."""
    scores, got = case.args[0], outputs[0]
    if not isinstance(got, torch.Tensor) or got.shape != scores.shape:
        return None
    return got


def _negative(case, outputs):
    got = _weights_of(case, outputs)
    if got is not None and (got < -1e-12).any():
        return "some of your weights are negative: a softmax gives weights ≥ 0 (exp is never negative)"
    return None


_negative.key = "negative_weights"


def _not_normalised(case, outputs):
    got = _weights_of(case, outputs)
    if got is None or not torch.isfinite(got).all():
        return None
    sums = got.sum(-1)
    nonzero = sums.abs() > 1e-9  # rows that are all zero are checked by the mask properties
    if not torch.allclose(sums[nonzero], torch.ones_like(sums[nonzero]), atol=1e-6):
        return ("the weights of one query do not sum to 1 over the keys (last axis): "
                f"row sums range from {float(sums.min()):.4f} to {float(sums.max()):.4f}")
    return None


_not_normalised.key = "not_normalised"


def _mask_of(case):
    """The boolean keep-mask of a masked case, broadcast to the scores' shape."""
    scores, second = case.args[0], case.args[1]
    if isinstance(second, torch.Tensor) and second.dtype == torch.bool:
        return second.expand_as(scores)
    return _length_mask(second, scores.shape[-1]).expand_as(scores)


def _masked_not_zero(case, outputs):
    got = _weights_of(case, outputs)
    if got is None:
        return None
    mask = _mask_of(case)
    leaked = got[~mask]
    if leaked.numel() and (leaked.abs() > 1e-12).any():
        return ("masked (padded) keys got a non-zero weight: a removed key must get exactly 0 "
                "(fill its score with -inf before the softmax)")
    return None


_masked_not_zero.key = "masked_weight_not_zero"


# A fully masked row (a query with no key) is owned by the misconceptions nan_fully_masked and
# large_negative_fill, whose messages are more specific; no property is needed for it.


# --------------------------------------------------------------------------------------------- 05.stable_softmax


def _stable_softmax_ref(scores):
    return _stable(scores)


def _stable_softmax_cases():
    g = generator(50)
    large = randn(g, 2, 3, 5, scale=1e3)
    large[0, 0] = torch.tensor([1000.0, 999.0, 998.0, -1000.0, 0.0], dtype=DTYPE)
    large[1, 2] = torch.tensor([-1000.0, -1001.0, -999.0, -1000.0, -1002.0], dtype=DTYPE)
    far_apart = torch.stack([randn(g, 4) - 1000.0, randn(g, 4) + 1000.0, randn(g, 4)])
    return [
        Case("B=2, T_q=3, T_k=5", (randn(g, 2, 3, 5, scale=2.0),), dims={"B": 2, "T_q": 3, "T_k": 5}),
        Case("T_q=3, T_k=4, rows far apart", (far_apart,), dims={"T_q": 3, "T_k": 4},
             note="one row near -1000, one near +1000, one near 0"),
        Case("B=2, T_q=3, T_k=5, scores of ±1e3", (large,), dims={"B": 2, "T_q": 3, "T_k": 5},
             note="exp(1000) overflows float64"),
        Case("worked example e^3, N=4", (wx.encoder_states() @ wx.decoder_states()[2],), dims={"N": 4},
             note="a single query: scores of shape (N,)"),
        Case("B=3, T_q=2, T_k=4, tied, zero and negative", (torch.stack([tied(2, 4), tied(2, 4, value=0.0),
                                                                         -randn(g, 2, 4).abs()]),),
             dims={"B": 3, "T_q": 2, "T_k": 4}, note="equal scores must give equal weights"),
        Case("heads: B=2, h=3, T_q=4, T_k=6", (randn(g, 2, 3, 4, 6, scale=3.0),),
             dims={"B": 2, "h": 3, "T_q": 4, "T_k": 6}, note="two leading axes"),
    ]


def _over_axis(dim):
    return lambda scores: _stable(scores, dim=dim)


def _all_entries(scores):
    flat = _stable(scores.reshape(-1))
    return flat.reshape(scores.shape)


def _global_max(scores):
    e = torch.exp(scores - scores.max())
    return e / e.sum(-1, keepdim=True)


WRONG_AXIS = Misconception(
    "wrong_axis",
    "your weights sum to 1 over queries, not keys: the softmax must run over the last axis "
    "(dim=-1, the source positions), one distribution per query",
    _over_axis(-2),
)
BATCH_AXIS = Misconception(
    "batch_axis",
    "your weights sum to 1 over the batch axis (dim=0): each sentence's weights must be normalised on "
    "their own, over the last axis (dim=-1)",
    _over_axis(0),
)
OVERFLOW = Misconception(
    "overflow",
    "your softmax overflows: exp(1000) is inf in float64 and inf/inf is NaN (and exp(-1000) is 0, so "
    "0/0 is NaN). Subtract each row's maximum before exp: softmax(x) = softmax(x - max(x))",
    lambda scores: _naive(scores),
)

register(Task(
    id="05.stable_softmax",
    title="a numerically stable softmax over the last axis",
    points=2,
    reference=_stable_softmax_ref,
    cases=_stable_softmax_cases,
    misconceptions=[
        WRONG_AXIS,
        BATCH_AXIS,
        Misconception(
            "all_entries",
            "you normalised over all entries at once: each query (each row along the last axis) "
            "needs its own distribution that sums to 1",
            _all_entries,
        ),
        Misconception(
            "no_normalisation",
            "you computed exp but did not divide by the sum: the weights must sum to 1 over the keys",
            lambda scores: torch.exp(scores - scores.amax(-1, keepdim=True)),
        ),
        Misconception(
            "no_normalisation",
            "you computed exp but did not divide by the sum: the weights must sum to 1 over the keys",
            torch.exp,
        ),
        Misconception(
            "no_exp",
            "you divided the scores by their sum without taking exp first: that can give negative "
            "weights (or divide by zero); softmax is exp(e_i) / Σ_j exp(e_j)",
            lambda scores: scores / scores.sum(-1, keepdim=True),
        ),
        OVERFLOW,
        Misconception(
            "global_max",
            "you subtracted the maximum of the whole tensor, not of each row: a row far below the "
            "global maximum underflows to 0/0. Use scores.amax(dim=-1, keepdim=True)",
            _global_max,
        ),
        Misconception(
            "log_softmax",
            "you returned log-probabilities (log_softmax); the weights are the probabilities themselves",
            lambda scores: torch.log_softmax(scores, dim=-1),
        ),
    ],
    properties=[_negative, _not_normalised],
    hint="Subtract the row maximum (amax over dim=-1, keepdim=True), exponentiate, divide by the row sum.",
))

# --------------------------------------------------------------------------------------------- 05.masked_softmax


def _masked_softmax_ref(scores, mask):
    return _masked(scores, mask)


def _masked_softmax_cases():
    g = generator(51)
    s1 = randn(g, 2, 3, 5, scale=2.0)
    m1 = _keep_row_max(s1, _bool_mask(g, 2, 3, 5))
    s2 = randn(g, 3, 2, 6)
    m2 = _length_mask(torch.tensor([6, 3, 1]), 6)
    s3 = randn(g, 2, 4, 3, scale=1e3)
    m3 = _keep_row_max(s3, _bool_mask(g, 2, 4, 3, p=0.5))
    s4 = randn(g, 2, 3, 5)
    m4 = _length_mask(torch.tensor([2, 4]), 5)
    s4 = s4.masked_fill(~m4, 1e3)  # the padded positions hold huge, meaningless scores
    s5 = randn(g, 3, 2, 4)
    m5 = _length_mask(torch.tensor([4, 0, 2]), 4)
    s6 = randn(g, 2, 3, 5)
    m6 = torch.ones(3, 5, dtype=torch.bool).tril()
    return [
        Case("B=2, T_q=3, T_k=5, mask (B, T_q, T_k)", (s1, m1), dims={"B": 2, "T_q": 3, "T_k": 5},
             note="every query keeps at least one key"),
        Case("B=3, T_q=2, T_k=6, padding mask (B, 1, T_k)", (s2, m2), dims={"B": 3, "T_q": 2, "T_k": 6},
             note="valid lengths 6, 3, 1"),
        Case("B=2, T_q=4, T_k=3, scores of ±1e3", (s3, m3), dims={"B": 2, "T_q": 4, "T_k": 3},
             note="exp(1000) overflows float64"),
        Case("B=2, T_q=3, T_k=5, padded scores of 1e3", (s4, m4), dims={"B": 2, "T_q": 3, "T_k": 5},
             note="valid lengths 2, 4; the padded positions hold scores of 1000"),
        Case("B=3, T_q=2, T_k=4, a length of 0", (s5, m5), dims={"B": 3, "T_q": 2, "T_k": 4},
             note="valid lengths 4, 0, 2: item 1 has no key at all"),
        Case("B=2, T_q=3, T_k=5, causal mask (T_q, T_k)", (s6, m6), dims={"B": 2, "T_q": 3, "T_k": 5},
             note="one mask shared by the batch"),
    ]


def _after_softmax(scores, mask):
    return _stable(scores) * mask


def _fill_value(value):
    return lambda scores, mask: _stable(scores.masked_fill(~mask, value))


def _nan_rows(scores, mask):
    return torch.softmax(scores.masked_fill(~mask, NEG_INF), dim=-1)


def _max_includes_masked(scores, mask):
    e = torch.exp(scores - scores.amax(-1, keepdim=True)) * mask
    return e / e.sum(-1, keepdim=True)


def _max_includes_masked_guarded(scores, mask):
    e = torch.exp(scores - scores.amax(-1, keepdim=True)) * mask
    total = e.sum(-1, keepdim=True)
    return e / torch.where(total > 0, total, torch.ones_like(total))


def _naive_masked(scores, mask):
    e = torch.exp(scores) * mask
    return e / e.sum(-1, keepdim=True)


MASK_AFTER = Misconception(
    "mask_after_softmax",
    "you applied the mask after the softmax: the masked keys took their share of the probability first, "
    "so the remaining weights no longer sum to 1. Fill the masked scores with -inf, then take the softmax",
    _after_softmax,
)
FILL_ZERO = Misconception(
    "fill_zero",
    "you filled the masked scores with 0 instead of -inf: exp(0) = 1, so masked keys still get weight. "
    "A masked key needs a score of -inf (exp(-inf) = 0)",
    _fill_value(0.0),
)
POLARITY = Misconception(
    "mask_polarity",
    "your mask is inverted: True means the query may attend to the key (keep it), False means remove it; "
    "you removed the keys that should be kept",
    lambda scores, mask: _masked(scores, ~mask),
)
NO_MASK = Misconception(
    "ignored_mask",
    "your weights ignore the mask: masked (padded) keys got weight. Fill their scores with -inf before "
    "the softmax",
    lambda scores, mask: _stable(scores),
)
NAN_ROWS = Misconception(
    "nan_fully_masked",
    "a query whose keys are all masked came out NaN (softmax of a row of -inf is 0/0); its weights "
    "must be all zeros. After the softmax, replace those rows by 0 (e.g. torch.nan_to_num, or "
    "torch.where(mask.any(-1, keepdim=True), weights, 0))",
    _nan_rows,
)
LARGE_NEGATIVE = Misconception(
    "large_negative_fill",
    "you filled masked scores with a large negative number instead of -inf: that works for partly "
    "masked rows, but a query with no key left then gets uniform weights 1/T_k over padding instead "
    "of zeros",
    _fill_value(-1e9),
)
MAX_INCLUDES_MASKED = Misconception(
    "max_includes_masked",
    "you subtracted a maximum that includes the masked scores: when a padded position holds a huge "
    "score, every valid exp underflows to 0 and the row becomes 0/0. Mask first (fill with -inf), "
    "then take the maximum",
    _max_includes_masked,
)
MASKED_OVERFLOW = Misconception(
    "overflow",
    "your softmax overflows on scores of ±1000 (exp(1000) = inf, inf/inf = NaN): subtract each row's "
    "maximum over the kept keys before exp",
    _naive_masked,
)

register(Task(
    id="05.masked_softmax",
    title="softmax with a mask over the keys",
    points=3,
    reference=_masked_softmax_ref,
    cases=_masked_softmax_cases,
    misconceptions=[
        # first: where the padded scores are huge it gives all zeros, like a mask applied after the softmax
        Misconception(MAX_INCLUDES_MASKED.key, MAX_INCLUDES_MASKED.message, _max_includes_masked_guarded),
        MASK_AFTER,
        FILL_ZERO,
        POLARITY,
        NO_MASK,
        Misconception(WRONG_AXIS.key, WRONG_AXIS.message,
                      lambda scores, mask: _stable(scores.masked_fill(~mask, NEG_INF), dim=-2)),
        NAN_ROWS,  # before the next two: on a row without keys all three give NaN
        MAX_INCLUDES_MASKED,
        MASKED_OVERFLOW,
        LARGE_NEGATIVE,
    ],
    properties=[_negative, _masked_not_zero, _not_normalised],
    hint="scores.masked_fill(~mask, float('-inf')), then a stable softmax over dim=-1, then zeros for "
         "rows without any key.",
))

# --------------------------------------------------------------------------------------------- 05.attention_weights_from_lengths


def _from_lengths_ref(scores, lengths):
    return _masked(scores, _length_mask(lengths, scores.shape[-1]))


def _from_lengths_cases():
    g = generator(52)
    s3 = randn(g, 2, 3, 6, scale=1e3)
    s3[0, 0, 0] = 1000.0
    return [
        Case("B=3, T_q=5, T_k=4, lengths 4, 2, 3", (randn(g, 3, 5, 4), torch.tensor([4, 2, 3])),
             dims={"B": 3, "T_q": 5, "T_k": 4}, note="the chapter's lengths"),
        Case("B=4, T_q=3, T_k=6, lengths 6, 1, 5, 3", (randn(g, 4, 3, 6, scale=2.0), torch.tensor([6, 1, 5, 3])),
             dims={"B": 4, "T_q": 3, "T_k": 6}),
        Case("B=2, T_q=3, T_k=6, scores of ±1e3", (s3, torch.tensor([3, 6])),
             dims={"B": 2, "T_q": 3, "T_k": 6}, note="exp(1000) overflows float64"),
        Case("B=3, T_q=2, T_k=5, a length of 0", (randn(g, 3, 2, 5), torch.tensor([5, 0, 2])),
             dims={"B": 3, "T_q": 2, "T_k": 5}, note="item 1 has no valid key: its weights are all 0"),
    ]


def _lengths_with(mask_fn):
    return lambda scores, lengths: _masked_softmax_like(scores, lengths, mask_fn)


def _masked_softmax_like(scores, lengths, mask_fn):
    return _masked(scores, mask_fn(lengths, scores))


def _mask_queries(lengths, scores):
    T_q = scores.shape[-2]
    return (torch.arange(T_q)[None, :, None] < lengths[:, None, None]).expand_as(scores)


def _mask_off_by_one(lengths, scores):
    return (torch.arange(scores.shape[-1])[None, :] <= lengths[:, None]).unsqueeze(1).expand_as(scores)


def _mask_inverted(lengths, scores):
    return ~_length_mask(lengths, scores.shape[-1]).expand_as(scores)


def _with_length_mask(fn):
    return lambda scores, lengths: fn(scores, _length_mask(lengths, scores.shape[-1]))


register(Task(
    id="05.attention_weights_from_lengths",
    title="attention weights for a padded batch, from the valid lengths",
    points=3,
    reference=_from_lengths_ref,
    cases=_from_lengths_cases,
    misconceptions=[
        Misconception(
            "mask_wrong_axis",
            "you masked queries (rows) instead of keys (columns): lengths[b] says how many source "
            "positions (keys, the last axis) of sentence b are real",
            _lengths_with(_mask_queries),
        ),
        Misconception(
            "off_by_one",
            "your mask keeps one padded position too many: with length n the valid positions are "
            "0 .. n-1, so compare positions < length (not <=)",
            _lengths_with(_mask_off_by_one),
        ),
        Misconception(POLARITY.key, "your mask is inverted: positions < length are the real keys (keep "
                      "them), positions ≥ length are padding (remove them)", _lengths_with(_mask_inverted)),
        Misconception(NO_MASK.key, "your weights ignore the lengths: padded keys (positions ≥ length) got "
                      "weight", lambda scores, lengths: _stable(scores)),
        Misconception(MASK_AFTER.key, MASK_AFTER.message, _with_length_mask(_after_softmax)),
        Misconception(FILL_ZERO.key, FILL_ZERO.message, _with_length_mask(_fill_value(0.0))),
        Misconception(WRONG_AXIS.key, WRONG_AXIS.message,
                      _with_length_mask(lambda s, m: _stable(s.masked_fill(~m, NEG_INF), dim=-2))),
        Misconception(NAN_ROWS.key, NAN_ROWS.message, _with_length_mask(_nan_rows)),
        Misconception(MASKED_OVERFLOW.key, MASKED_OVERFLOW.message, _with_length_mask(_naive_masked)),
        Misconception(LARGE_NEGATIVE.key, LARGE_NEGATIVE.message, _with_length_mask(_fill_value(-1e9))),
    ],
    properties=[_negative, _masked_not_zero, _not_normalised],
    hint="Build the mask as torch.arange(T_k) < lengths[:, None] (shape (B, T_k)), add a query axis with "
         "unsqueeze(1), then use it like in 05.masked_softmax.",
))

# --------------------------------------------------------------------------------------------- 05.softmax_with_temperature


def _temperature_ref(scores, tau):
    return _stable(scores / tau)


def _temperature_cases():
    g = generator(53)
    return [
        Case("T_q=3, T_k=5, tau=2.0", (randn(g, 3, 5, scale=2.0), 2.0), dims={"T_q": 3, "T_k": 5}),
        Case("B=2, T_q=4, T_k=3, tau=0.5", (randn(g, 2, 4, 3), 0.5), dims={"B": 2, "T_q": 4, "T_k": 3}),
        Case("worked example e^3, N=4, tau=0.25", (wx.encoder_states() @ wx.decoder_states()[2], 0.25),
             dims={"N": 4}, note="a single query"),
        Case("T_q=2, T_k=6, tau=0.01", (randn(g, 2, 6, scale=10.0), 0.01), dims={"T_q": 2, "T_k": 6},
             note="a small temperature makes the scores huge (about ±1000)"),
        Case("T_q=3, T_k=4, tau=100", (randn(g, 3, 4), 100.0), dims={"T_q": 3, "T_k": 4},
             note="a large temperature: nearly uniform weights"),
        Case("B=2, T_q=3, T_k=5, tau=1", (randn(g, 2, 3, 5), 1.0), dims={"B": 2, "T_q": 3, "T_k": 5},
             note="tau = 1 is the plain softmax"),
    ]


register(Task(
    id="05.softmax_with_temperature",
    title="softmax with a temperature",
    points=2,
    reference=_temperature_ref,
    cases=_temperature_cases,
    misconceptions=[
        Misconception(
            "multiplied_temperature",
            "you multiplied the scores by tau; divide them: softmax(e / tau). A large tau must flatten "
            "the weights, a small tau must sharpen them",
            lambda scores, tau: _stable(scores * tau),
        ),
        Misconception(
            "ignored_temperature",
            "your weights do not change with tau: divide the scores by tau before the softmax",
            lambda scores, tau: _stable(scores),
        ),
        Misconception(
            "divided_after_softmax",
            "you divided the weights by tau after the softmax, so they no longer sum to 1: divide the "
            "scores (before the softmax)",
            lambda scores, tau: _stable(scores) / tau,
        ),
        Misconception(
            "power_not_normalised",
            "you raised the weights to the power 1/tau without normalising again: that is softmax(e/tau) "
            "up to a factor, so divide by the row sum (or simply take the softmax of e / tau)",
            lambda scores, tau: _stable(scores) ** (1.0 / tau),
        ),
        Misconception(WRONG_AXIS.key, WRONG_AXIS.message, lambda scores, tau: _stable(scores / tau, dim=-2)),
        Misconception(
            OVERFLOW.key,
            "your softmax overflows when tau is small: e / tau reaches ±1000 and exp(1000) is inf. "
            "Subtract the row maximum of e / tau before exp",
            lambda scores, tau: _naive(scores / tau),
        ),
    ],
    properties=[_negative, _not_normalised],
    hint="softmax(e / tau) over the last axis: tau > 1 flattens the weights, tau < 1 sharpens them.",
))

# --------------------------------------------------------------------------------------------- 05.hand_weights


def _hand_scores(step=wx.STEP_ETUDIANT):
    return wx.encoder_states() @ wx.decoder_states()[step - 1]  # e^t: (4,)


def _as_list(x):
    return [float(v) for v in x]


register(Task(
    id="05.hand_weights",
    title="the worked example's weights, by hand",
    points=1,
    reference=lambda: _as_list(_stable(_hand_scores())),
    cases=lambda: [Case("worked example", (), note="step t=3, which emits 'étudiant'")],
    misconceptions=[
        Misconception("returned_scores", "those are the scores e^3 (before the softmax); the task asks for "
                      "the weights α^3 = softmax(e^3)", lambda: _as_list(_hand_scores())),
        Misconception("no_exp", "you divided each score by the sum of the scores; softmax divides exp(e_i) "
                      "by Σ_j exp(e_j)", lambda: _as_list(_hand_scores() / _hand_scores().sum())),
        Misconception("scaled", "you divided the scores by √d = 2 first: this chapter's weights are the "
                      "softmax of the plain dot products", lambda: _as_list(_stable(_hand_scores() / 2.0))),
        Misconception("wrong_step_1", "those are the weights of step t=1 ('je'); the task asks for t=3 "
                      "('étudiant')", lambda: _as_list(_stable(_hand_scores(1)))),
        Misconception("wrong_step_2", "those are the weights of step t=2 ('suis'); the task asks for t=3 "
                      "('étudiant')", lambda: _as_list(_stable(_hand_scores(2)))),
    ],
    atol=1e-3,
    rtol=0.0,
    check_grad=False,
    hint="α^3_i = exp(e^3_i) / Σ_j exp(e^3_j) with e^3 = [1, 1.5, 0.5, 3]; the four numbers sum to 1.",
))
