"""Set 05, attention weights: ``alpha^t = softmax(e^t)``, stably, with masks, lengths and temperature.

Every task normalises over the **last** axis, the key axis: one distribution over source positions per
query. Cases put distinct sizes on every axis (so a softmax over the wrong axis cannot hide), scores of
±1e3 (so a softmax without the max subtraction overflows) and masks with different valid lengths,
including rows whose keys are all masked (their weights must be zeros, not NaN).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from ... import attention as _book
from ... import worked_example as wx
from ..cases import DTYPE, generator, randn, tied
from ..engine import Case, Misconception, Task
from ..registry import register

#: the book's own softmax and attention functions: calling one earns 0 in the tasks of this set
BOOK_SOFTMAX = (
    "attnbook.attention:softmax",
    "attnbook.attention:attention_weights",
    "attnbook.attention:scaled_dot_product_attention",
)

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
        return (
            "the weights of one query do not sum to 1 over the keys (last axis): "
            f"row sums range from {float(sums.min()):.4f} to {float(sums.max()):.4f}"
        )
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
        return (
            "masked (padded) keys got a non-zero weight: a removed key must get exactly 0 "
            "(fill its score with -inf before the softmax)"
        )
    return None


_masked_not_zero.key = "masked_weight_not_zero"


# A fully masked row (a query with no key) is owned by the misconceptions nan_fully_masked and
# large_negative_fill, whose messages are more specific; no property is needed for it.


# --------------------------------------------------------------------------------------------- 05.log_weights


def _log_softmax(x, dim=-1):
    """``log softmax(x)`` along ``dim``, in the log domain: x - m - log Σ exp(x - m)."""
    m = x.amax(dim=dim, keepdim=True)
    return x - m - torch.log(torch.exp(x - m).sum(dim=dim, keepdim=True))


def _log_weights_ref(scores, dim):
    return _log_softmax(scores, dim)


def _log_weights_cases():
    g = generator(50)
    large = randn(g, 2, 3, 5, scale=1e3)
    large[0, 0] = torch.tensor([1000.0, 999.0, 998.0, -1000.0, 0.0], dtype=DTYPE)
    far = torch.tensor(
        [[0.0, -800.0, -1.0, -2000.0], [-5.0, -3.0, -900.0, -4.0], [-1000.0, -1001.0, -1300.0, -999.0]],
        dtype=DTYPE,
    )
    apart = torch.stack([randn(g, 4) - 1000.0, randn(g, 4) + 1000.0, randn(g, 4)])
    return [
        Case(
            "B=2, T_q=3, T_k=5, dim=-1", (randn(g, 2, 3, 5, scale=2.0), -1), dims={"B": 2, "T_q": 3, "T_k": 5}
        ),
        Case(
            "T_q=3, T_k=4, dim=1, rows far apart",
            (apart, 1),
            dims={"T_q": 3, "T_k": 4},
            note="one row near -1000, one near +1000, one near 0",
        ),
        Case(
            "T_q=3, T_k=4, dim=-1, far below the maximum",
            (far, -1),
            dims={"T_q": 3, "T_k": 4},
            note="some weights underflow to 0, but their logs are ordinary numbers such as -800",
        ),
        Case(
            "B=2, T_q=3, T_k=5, dim=1, scores of ±1e3",
            (large, 1),
            dims={"B": 2, "T_q": 3, "T_k": 5},
            note="over the query axis; exp(1000) overflows",
        ),
        Case(
            "B=4, T_k=3, dim=0",
            (randn(g, 4, 3, scale=300.0), 0),
            dims={"B": 4, "T_k": 3},
            note="over the first axis",
        ),
        Case(
            "heads: B=2, h=3, T_q=4, T_k=6, dim=-2",
            (randn(g, 2, 3, 4, 6, scale=3.0), -2),
            dims={"B": 2, "h": 3, "T_q": 4, "T_k": 6},
            note="a middle axis",
        ),
        Case(
            "N=5, dim=0, tied",
            (tied(5, value=-2.5), 0),
            dims={"N": 5},
            note="equal scores: every log-weight is log(1/5)",
        ),
        Case(
            "B=2, T_q=2, T_k=3, dim=2",
            (randn(g, 2, 2, 3, scale=5.0), 2),
            dims={"B": 2, "T_q": 2, "T_k": 3},
            note="a positive axis number",
        ),
    ]


def _log_of(fn):
    return lambda scores, dim: torch.log(fn(scores, dim))


def _global_max_log(scores, dim):
    m = scores.max()
    return scores - m - torch.log(torch.exp(scores - m).sum(dim=dim, keepdim=True))


def _shifted_log(scores, m, dim):
    """log-softmax with the shift m (right only when m is the slice's largest score)."""
    return scores - m - torch.log(torch.exp(scores - m).sum(dim=dim, keepdim=True))


SHIFT_NOT_MAX = (
    "the number you subtracted before exp is not the largest score of each slice (the largest "
    "magnitude, or the smallest score, is another number): on a slice of scores near -1000 or "
    "+1000 the shifted exps then underflow to 0 or overflow to inf, and the log breaks. Only the "
    "slice's largest score makes the biggest exp exactly 1"
)


def _log_not_normalised(case, outputs):
    got, (scores, dim) = outputs[0], case.args
    if not isinstance(got, torch.Tensor) or got.shape != scores.shape or not torch.isfinite(got).all():
        return None
    sums = got.exp().sum(dim=dim)
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-6):
        return (
            f"exp of your log-weights does not sum to 1 over the axis dim={dim}: sums range from "
            f"{float(sums.min()):.4f} to {float(sums.max()):.4f}"
        )
    return None


_log_not_normalised.key = "not_normalised"


def _log_positive(case, outputs):
    got, scores = outputs[0], case.args[0]
    if isinstance(got, torch.Tensor) and got.shape == scores.shape and (got > 1e-9).any():
        return "some of your log-weights are positive: a weight is at most 1, so its log is at most 0"
    return None


_log_positive.key = "positive_log_weight"

OVERFLOW = Misconception(
    "overflow",
    "your softmax overflows: exp(1000) is inf in float64 and inf/inf is NaN (and exp(-1000) is 0, so "
    "0/0 is NaN). Shift each row by its own maximum before exp: softmax(x) = softmax(x - max(x))",
    lambda scores: _naive(scores),
)
WRONG_AXIS = Misconception(
    "wrong_axis",
    "your weights sum to 1 over queries, not keys: the softmax must run over the last axis "
    "(the source positions), one distribution per query",
    lambda scores: _stable(scores, dim=-2),
)

register(
    Task(
        id="05.log_weights",
        title="log-weights over any axis, in the log domain",
        points=2,
        reference=_log_weights_ref,
        cases=_log_weights_cases,
        misconceptions=[
            Misconception(
                "log_of_softmax",
                "you took the log of the softmax: a weight that underflows to 0 gives -inf, although its "
                "log is an ordinary number (such as -800). Stay in the log domain: subtract the log-sum-exp "
                "from the scores",
                _log_of(_stable),
            ),
            Misconception(
                "ignores_dim",
                "you normalised over the last axis whatever `dim` says: the log-weights must be normalised "
                "over the axis given by `dim`",
                lambda scores, dim: _log_softmax(scores, -1),
            ),
            Misconception(
                "returned_softmax",
                "you returned the weights themselves; this task asks for their logarithm, log α",
                lambda scores, dim: _stable(scores, dim),
            ),
            Misconception(
                "overflow",
                "your log-sum-exp overflows: log(Σ exp(e)) with e = 1000 is log(inf). Shift by the maximum "
                "first: logsumexp(e) = m + log Σ exp(e - m)",
                lambda scores, dim: scores - torch.log(torch.exp(scores).sum(dim=dim, keepdim=True)),
            ),
            Misconception(
                "overflow",
                "your softmax breaks before you take its log: without the shift by the maximum, exp "
                "overflows for large scores (inf/inf) and underflows for very negative ones (0/0 = NaN). "
                "Stay in the log domain, with the maximum subtracted",
                _log_of(lambda scores, dim: _naive(scores, dim)),
            ),
            Misconception(
                "shift_only",
                "you subtracted the maximum but not the log of the sum: log α_i = e_i - m - log Σ_j exp(e_j - m)",
                lambda scores, dim: scores - scores.amax(dim=dim, keepdim=True),
            ),
            Misconception(
                "forgot_max_in_lse",
                "you subtracted log Σ exp(e_j - m) but not m itself: logsumexp(e) = m + log Σ exp(e_j - m)",
                lambda scores, dim: (
                    scores
                    - torch.log(
                        torch.exp(scores - scores.amax(dim=dim, keepdim=True)).sum(dim=dim, keepdim=True)
                    )
                ),
            ),
            Misconception(
                "lse_sign",
                "you added the log-sum-exp instead of subtracting it: log α_i = e_i - logsumexp(e)",
                lambda scores, dim: scores + torch.logsumexp(scores, dim=dim, keepdim=True),
            ),
            Misconception(
                "global_max",
                "you subtracted the maximum of the whole tensor, not of each slice along `dim`: a slice far "
                "below the global maximum underflows to log(0) = -inf",
                _global_max_log,
            ),
            Misconception(
                "shift_not_max",
                SHIFT_NOT_MAX,
                lambda scores, dim: _shifted_log(scores, scores.abs().amax(dim=dim, keepdim=True), dim),
            ),
            Misconception(
                "shift_not_max",
                SHIFT_NOT_MAX,
                lambda scores, dim: _shifted_log(scores, scores.amin(dim=dim, keepdim=True), dim),
            ),
            Misconception(
                "log_sigmoid",
                "you used a log-sigmoid, which treats every score on its own; log-softmax normalises the "
                "scores against each other along `dim`",
                lambda scores, dim: torch.nn.functional.logsigmoid(scores),
            ),
            Misconception(
                "all_entries",
                "you normalised over all entries at once: each slice along `dim` needs its own normaliser",
                lambda scores, dim: _log_softmax(scores.reshape(-1), 0).reshape(scores.shape),
            ),
        ],
        properties=[_log_positive, _log_not_normalised],
        hint="m = scores.amax(dim=dim, keepdim=True); log α = scores - m - log(Σ exp(scores - m)) along dim.",
        forbidden=BOOK_SOFTMAX,
        shortcut_example=_book.softmax,
        atol=1e-9,
        rtol=1e-9,
    )
)

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
    s7 = randn(g, 2, 3, 5, scale=3.0)
    m7 = _keep_row_max(s7, _bool_mask(g, 2, 3, 5))
    m7[1, 1] = False  # query 1 of sentence 1 has no key; the other queries keep theirs
    s7[1, 1] = 1e3  # ... and its masked scores are huge
    s8 = torch.tensor(
        [
            [[-1000.0, -1900.0, -950.0, 5.0], [-1200.0, -1150.0, -1100.0, -1e4]],
            [[-800.0, -1700.0, 3.0, 2.0], [-3.0, -2.0, -1.0, -4.0]],
        ],
        dtype=DTYPE,
    )
    m8 = _length_mask(torch.tensor([3, 2]), 4)
    return [
        Case(
            "B=2, T_q=3, T_k=5, mask (B, T_q, T_k)",
            (s1, m1),
            dims={"B": 2, "T_q": 3, "T_k": 5},
            note="every query keeps at least one key",
        ),
        Case(
            "B=3, T_q=2, T_k=6, padding mask (B, 1, T_k)",
            (s2, m2),
            dims={"B": 3, "T_q": 2, "T_k": 6},
            note="valid lengths 6, 3, 1",
        ),
        Case(
            "B=2, T_q=4, T_k=3, scores of ±1e3",
            (s3, m3),
            dims={"B": 2, "T_q": 4, "T_k": 3},
            note="exp(1000) overflows float64",
        ),
        Case(
            "B=2, T_q=3, T_k=5, padded scores of 1e3",
            (s4, m4),
            dims={"B": 2, "T_q": 3, "T_k": 5},
            note="valid lengths 2, 4; the padded positions hold scores of 1000",
        ),
        Case(
            "B=3, T_q=2, T_k=4, a length of 0",
            (s5, m5),
            dims={"B": 3, "T_q": 2, "T_k": 4},
            note="valid lengths 4, 0, 2: item 1 has no key at all",
        ),
        Case(
            "B=2, T_q=3, T_k=5, causal mask (T_q, T_k)",
            (s6, m6),
            dims={"B": 2, "T_q": 3, "T_k": 5},
            note="one mask shared by the batch",
        ),
        Case(
            "B=2, T_q=3, T_k=5, one query without a key",
            (s7, m7),
            dims={"B": 2, "T_q": 3, "T_k": 5},
            note="query 1 of item 1 has no key left (its masked scores are 1000); the other queries "
            "of that item keep theirs",
        ),
        Case(
            "B=2, T_q=2, T_k=4, all-negative rows",
            (s8, m8),
            dims={"B": 2, "T_q": 2, "T_k": 4},
            note="rows of scores near -1000 (exp underflows to 0 without the shift), valid lengths 3, 2",
        ),
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
    "must be all zeros, as chapter 5 shows: after the softmax, set the rows that have no key to 0",
    _nan_rows,
    hint="torch.where(mask.any(-1, keepdim=True), weights, 0.0), or torch.nan_to_num(weights).",
)
LARGE_NEGATIVE = Misconception(
    "large_negative_fill",
    "a query with no key left gets uniform weights 1/T_k, spread over keys that are all masked, instead of "
    "all zeros: a masked key never gets weight, not even when every key of its row is masked (a large "
    "negative fill such as -1e9 instead of -inf gives this, and so does replacing the NaN of such a row "
    "by 1/T_k)",
    _fill_value(-1e9),
)
MAX_INCLUDES_MASKED = Misconception(
    "max_includes_masked",
    "you subtracted a maximum that includes the masked scores: when a padded position holds a huge "
    "score, every valid exp underflows to 0 and the row becomes 0/0. Mask first (fill with -inf), "
    "then take the maximum",
    _max_includes_masked,
)
#: a softmax over all keys, then the mask and a renormalisation, gives exactly what a maximum taken over
#: the masked scores gives (the guarded form): both normalise before the mask, so one message names both
NORMALISED_BEFORE_MASK = (
    "your weights were normalised over all the keys, the masked ones included, and the mask came only "
    "afterwards (a softmax followed by the mask and a renormalisation, or a maximum taken over the masked "
    "scores too): when a masked key holds a huge score it takes all the weight first, every kept key's "
    "exp underflows to 0 and nothing is left to renormalise. Mask first, before any maximum or softmax"
)
MASKED_OVERFLOW = Misconception(
    "overflow",
    "your softmax overflows on scores of ±1000 (exp(1000) = inf, inf/inf = NaN): subtract each row's "
    "maximum over the kept keys before exp",
    _naive_masked,
)

LOG_WEIGHTS = Misconception(
    "log_softmax",
    "you returned log-probabilities (a log-softmax); the weights are the probabilities themselves",
    lambda scores, mask: _stable(scores.masked_fill(~mask, NEG_INF)).log(),
)
SIGMOID = Misconception(
    "sigmoid",
    "you used a sigmoid, which squashes every score on its own: the weights of one query must be "
    "normalised against each other (a softmax over the keys) so that they sum to 1",
    lambda scores, mask: torch.sigmoid(scores) * mask,
)
BATCH_AXIS_MASKED = Misconception(
    "batch_axis",
    "your weights sum to 1 over the batch axis (the first one): each sentence's weights must be "
    "normalised on their own, over the keys (the last axis)",
    lambda scores, mask: _stable(scores.masked_fill(~mask, NEG_INF), dim=0),
)

register(
    Task(
        id="05.masked_softmax",
        title="softmax with a mask over the keys",
        points=3,
        reference=_masked_softmax_ref,
        cases=_masked_softmax_cases,
        misconceptions=[
            # first: where the padded scores are huge it gives all zeros, like a mask applied after the softmax
            Misconception("normalised_before_mask", NORMALISED_BEFORE_MASK, _max_includes_masked_guarded),
            MASK_AFTER,
            FILL_ZERO,
            POLARITY,
            NO_MASK,
            Misconception(
                WRONG_AXIS.key,
                WRONG_AXIS.message,
                lambda scores, mask: _stable(scores.masked_fill(~mask, NEG_INF), dim=-2),
            ),
            BATCH_AXIS_MASKED,
            NAN_ROWS,  # before the next two: on a row without keys all three give NaN
            MAX_INCLUDES_MASKED,
            MASKED_OVERFLOW,
            LARGE_NEGATIVE,
            Misconception(
                LOG_WEIGHTS.key,
                LOG_WEIGHTS.message,
                lambda scores, mask: torch.log_softmax(scores.masked_fill(~mask, NEG_INF), dim=-1),
            ),
            LOG_WEIGHTS,
            SIGMOID,
        ],
        properties=[_negative, _masked_not_zero, _not_normalised],
        hint="scores.masked_fill(~mask, float('-inf')), then a stable softmax over dim=-1, then zeros for "
        "rows without any key.",
        forbidden=BOOK_SOFTMAX,
        shortcut_example=_book.attention_weights,
        atol=1e-9,
        rtol=1e-9,
    )
)

# --------------------------------------------------------------------------------------------- 05.attention_weights_from_lengths


def _from_lengths_ref(scores, lengths):
    return _masked(scores, _length_mask(lengths, scores.shape[-1]))


def _from_lengths_cases():
    g = generator(52)
    s3 = randn(g, 2, 3, 6, scale=1e3)
    s3[0, 0, 0] = 1000.0
    s5 = torch.tensor([[[-1000.0, -1040.0, 1e3, 1e3]], [[1e3, 1e3, 1e3, 1e3]]], dtype=DTYPE)
    return [
        Case(
            "B=3, T_q=4, T_k=5, lengths 2, 5, 3",
            (randn(g, 3, 4, 5), torch.tensor([2, 5, 3])),
            dims={"B": 3, "T_q": 4, "T_k": 5},
        ),
        Case(
            "B=3, T_q=5, T_k=4, lengths 4, 2, 3",
            (randn(g, 3, 5, 4), torch.tensor([4, 2, 3])),
            dims={"B": 3, "T_q": 5, "T_k": 4},
            note="the chapter's lengths",
        ),
        Case(
            "B=4, T_q=3, T_k=6, lengths 6, 1, 5, 3",
            (randn(g, 4, 3, 6, scale=2.0), torch.tensor([6, 1, 5, 3])),
            dims={"B": 4, "T_q": 3, "T_k": 6},
        ),
        Case(
            "B=2, T_q=3, T_k=6, scores of ±1e3",
            (s3, torch.tensor([3, 6])),
            dims={"B": 2, "T_q": 3, "T_k": 6},
            note="exp(1000) overflows float64",
        ),
        Case(
            "B=3, T_q=2, T_k=5, a length of 0",
            (randn(g, 3, 2, 5), torch.tensor([5, 0, 2])),
            dims={"B": 3, "T_q": 2, "T_k": 5},
            note="item 1 has no valid key: its weights are all 0",
        ),
        Case(
            "B=2, T_q=1, T_k=4, padding holds 1e3, all-negative",
            (s5, torch.tensor([2, 0])),
            dims={"B": 2, "T_q": 1, "T_k": 4},
            note="valid scores near -1000, padded scores of 1000; item 1 has length 0",
        ),
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


def _mask_one_short(lengths, scores):
    return (torch.arange(scores.shape[-1])[None, :] < lengths[:, None] - 1).unsqueeze(1).expand_as(scores)


def _mask_inverted(lengths, scores):
    return ~_length_mask(lengths, scores.shape[-1]).expand_as(scores)


def _with_length_mask(fn):
    return lambda scores, lengths: fn(scores, _length_mask(lengths, scores.shape[-1]))


register(
    Task(
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
            Misconception(
                "off_by_one",
                "your mask removes one real position too many: with length n the valid positions are "
                "0 .. n-1, all n of them, so compare positions < length (not < length - 1)",
                _lengths_with(_mask_one_short),
            ),
            Misconception(
                POLARITY.key,
                "your mask is inverted: positions < length are the real keys (keep "
                "them), positions ≥ length are padding (remove them)",
                _lengths_with(_mask_inverted),
            ),
            Misconception(
                NO_MASK.key,
                "your weights ignore the lengths: padded keys (positions ≥ length) got weight",
                lambda scores, lengths: _stable(scores),
            ),
            Misconception(MASK_AFTER.key, MASK_AFTER.message, _with_length_mask(_after_softmax)),
            Misconception(FILL_ZERO.key, FILL_ZERO.message, _with_length_mask(_fill_value(0.0))),
            Misconception(
                WRONG_AXIS.key,
                WRONG_AXIS.message,
                _with_length_mask(lambda s, m: _stable(s.masked_fill(~m, NEG_INF), dim=-2)),
            ),
            Misconception(NAN_ROWS.key, NAN_ROWS.message, _with_length_mask(_nan_rows)),
            Misconception(MASKED_OVERFLOW.key, MASKED_OVERFLOW.message, _with_length_mask(_naive_masked)),
            Misconception(LARGE_NEGATIVE.key, LARGE_NEGATIVE.message, _with_length_mask(_fill_value(-1e9))),
            Misconception(
                MAX_INCLUDES_MASKED.key,
                MAX_INCLUDES_MASKED.message,
                _with_length_mask(_max_includes_masked_guarded),
            ),
            Misconception(
                "one_length_for_all",
                "you used the length of the first sentence for every sentence of the batch: each sentence b "
                "has its own length lengths[b]",
                _lengths_with(
                    lambda lengths, scores: _length_mask(
                        lengths[:1].expand_as(lengths), scores.shape[-1]
                    ).expand_as(scores)
                ),
            ),
            Misconception(
                BATCH_AXIS_MASKED.key, BATCH_AXIS_MASKED.message, _with_length_mask(BATCH_AXIS_MASKED.fn)
            ),
        ],
        properties=[_negative, _masked_not_zero, _not_normalised],
        forbidden=BOOK_SOFTMAX + ("attnbook.attention:padding_mask",),
        shortcut_example=_book.attention_weights,
        atol=1e-9,
        rtol=1e-9,
        hint="Build the mask as torch.arange(T_k) < lengths[:, None] (shape (B, T_k)), add a query axis with "
        "unsqueeze(1), then use it like in 05.masked_softmax.",
    )
)

# --------------------------------------------------------------------------------------------- 05.softmax_with_temperature


def _temperature_ref(scores, tau):
    return _stable(scores / tau)


def _temperature_cases():
    g = generator(53)
    return [
        Case("T_q=3, T_k=5, tau=2.0", (randn(g, 3, 5, scale=2.0), 2.0), dims={"T_q": 3, "T_k": 5}),
        Case("B=2, T_q=4, T_k=3, tau=0.5", (randn(g, 2, 4, 3), 0.5), dims={"B": 2, "T_q": 4, "T_k": 3}),
        Case(
            "worked example e^3, N=4, tau=0.25",
            (wx.encoder_states() @ wx.decoder_states()[2], 0.25),
            dims={"N": 4},
            note="a single query",
        ),
        Case(
            "T_q=2, T_k=6, tau=0.01",
            (randn(g, 2, 6, scale=10.0), 0.01),
            dims={"T_q": 2, "T_k": 6},
            note="a small temperature makes the scores huge (about ±1000)",
        ),
        Case(
            "T_q=3, T_k=4, tau=100",
            (randn(g, 3, 4), 100.0),
            dims={"T_q": 3, "T_k": 4},
            note="a large temperature: nearly uniform weights",
        ),
        Case(
            "B=2, T_q=3, T_k=5, tau=1",
            (randn(g, 2, 3, 5), 1.0),
            dims={"B": 2, "T_q": 3, "T_k": 5},
            note="tau = 1 is the plain softmax",
        ),
        Case(
            "T_q=2, T_k=4, tau=0.02, close top scores",
            (torch.tensor([[1.0, 0.99, -0.5, 0.2], [0.3, 0.31, 0.305, -2.0]], dtype=DTYPE), 0.02),
            dims={"T_q": 2, "T_k": 4},
            note="a small temperature, but the top scores differ by only 0.01",
        ),
        Case(
            "T_q=2, T_k=5, tau=0.001, near ties",
            (
                torch.tensor(
                    [[0.3, 0.3005, 0.2995, 0.3002, -1.0], [2.0, 2.001, 1.999, 2.0005, 1.0]], dtype=DTYPE
                ),
                0.001,
            ),
            dims={"T_q": 2, "T_k": 5},
            note="a tiny temperature and four nearly tied top scores",
        ),
        Case(
            "T_q=2, T_k=3, tau=3.0",
            (torch.tensor([[2.0, 2.0, -1.0], [-800.0, -801.0, -799.5]], dtype=DTYPE), 3.0),
            dims={"T_q": 2, "T_k": 3},
            note="tied and all-negative scores",
        ),
    ]


def _hard_at_small_tau(case, outputs):
    """Weights that are one-hot where the softmax at this temperature is not (close top scores)."""
    got, (scores, tau) = outputs[0], case.args
    if not isinstance(got, torch.Tensor) or got.shape != scores.shape or not torch.isfinite(got).all():
        return None
    one_hot = ((got == 0) | (got == 1)).all(dim=-1)
    expected = _stable(scores / tau)
    soft = expected.max(dim=-1).values < 0.99
    if (one_hot & soft).any():
        return (
            f"your weights are one-hot (a hard argmax) where the softmax at tau = {tau:g} is not: the "
            "top scores are close, so even a small temperature leaves them weight to share"
        )
    return None


_hard_at_small_tau.key = "hard_argmax"


def _uniform_at_large_tau(case, outputs):
    """Exactly uniform weights where the softmax at this temperature is close to, but not, uniform."""
    got, (scores, tau) = outputs[0], case.args
    if not isinstance(got, torch.Tensor) or got.shape != scores.shape or not torch.isfinite(got).all():
        return None
    uniform = torch.full_like(got, 1.0 / got.shape[-1])
    if torch.allclose(got, uniform, atol=1e-12) and not torch.allclose(
        _stable(scores / tau), uniform, atol=1e-9
    ):
        return (
            f"your weights are exactly uniform at tau = {tau:g}: a large temperature brings the weights "
            "close to 1/T_k, but the order of the scores still shows in them"
        )
    return None


_uniform_at_large_tau.key = "uniform_at_large_tau"


def _other_temperature(case, outputs):
    """Weights that are exactly a softmax of the scores at one other temperature t != tau (tau clamped,
    log(1 + tau), tau + 1, ...): recover t from the log-weights and check the whole case with it."""
    got, (scores, tau) = outputs[0], case.args
    if not isinstance(got, torch.Tensor) or got.shape != scores.shape or not torch.isfinite(got).all():
        return None
    g, e = got.detach().double().reshape(-1, scores.shape[-1]), scores.double().reshape(-1, scores.shape[-1])
    slopes = []
    for w_row, e_row in zip(g, e):
        keep = w_row > 1e-250
        if int(keep.sum()) < 2:
            continue
        x, y = e_row[keep], w_row[keep].log()
        x0 = x - x.mean()
        if float((x0 * x0).sum()) < 1e-24:
            continue
        slopes.append(float((x0 * (y - y.mean())).sum() / (x0 * x0).sum()))
    if not slopes:
        return None
    inv_t = sorted(slopes)[len(slopes) // 2]
    if inv_t <= 0 or not math.isfinite(inv_t):
        return None
    t = 1.0 / inv_t
    if abs(t - tau) <= 1e-6 * max(1.0, tau):
        return None
    if not torch.allclose(g, _stable(e * inv_t), atol=1e-7, rtol=1e-6):
        return None
    return (
        f"your weights are a softmax at another temperature: about t = {t:.4g} where this case asks for "
        f"tau = {tau:g}. The temperature is tau itself, for every tau > 0, with nothing changed or clamped"
    )


_other_temperature.key = "other_temperature"

register(
    Task(
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
            Misconception(
                WRONG_AXIS.key, WRONG_AXIS.message, lambda scores, tau: _stable(scores / tau, dim=-2)
            ),
            Misconception(
                "power_underflow",
                "you raised the weights to the power 1/tau and normalised again: right in exact arithmetic, but "
                "for a small tau the powers underflow to 0 and the row becomes 0/0. Divide the scores by tau "
                "before the softmax instead",
                lambda scores, tau: (lambda w: w / w.sum(-1, keepdim=True))(_stable(scores) ** (1.0 / tau)),
            ),
            Misconception(
                "tau_squared",
                "you divided the scores by tau twice (by tau²): the temperature divides them once, softmax(e / tau)",
                lambda scores, tau: _stable(scores / tau**2),
            ),
            Misconception(
                "sqrt_tau",
                "you divided the scores by √tau: the temperature divides them as it is, softmax(e / tau)",
                lambda scores, tau: _stable(scores / tau**0.5),
            ),
            Misconception(
                "log_softmax",
                "you returned log-probabilities (a log-softmax); the weights are the probabilities themselves",
                lambda scores, tau: _log_softmax(scores / tau, -1),
            ),
            Misconception(
                OVERFLOW.key,
                "your softmax overflows when tau is small: e / tau reaches ±1000 and exp(1000) is inf. "
                "Subtract the row maximum of e / tau before exp",
                lambda scores, tau: _naive(scores / tau),
            ),
        ],
        properties=[
            _negative,
            _not_normalised,
            _hard_at_small_tau,
            _uniform_at_large_tau,
            _other_temperature,
        ],
        hint="softmax(e / tau) over the last axis: tau > 1 flattens the weights, tau < 1 sharpens them.",
        forbidden=BOOK_SOFTMAX,
        shortcut_example=_book.softmax,
        atol=1e-9,
        rtol=1e-9,
    )
)

# --------------------------------------------------------------------------------------------- 05.hand_weights

#: the scores of the by-hand task; the last key is padding. Neither these scores nor their weights appear
#: in the book.
HAND_SCORES = (1.0, 3.0, -1.0, 2.0)


def _hand_e():
    return torch.tensor(HAND_SCORES, dtype=DTYPE)


def _hand_keep():
    return torch.tensor([True, True, True, False])


def _as_list(x):
    return [float(v) for v in x]


register(
    Task(
        id="05.hand_weights",
        title="a masked softmax, by hand",
        points=1,
        reference=lambda: _as_list(_masked(_hand_e(), _hand_keep())),
        cases=lambda: [Case("scores [1, 3, -1, 2], last key padded", (), note="one query, 4 keys")],
        misconceptions=[
            Misconception(
                "ignored_mask",
                "the padded last key got weight: a removed key gets exactly 0, and "
                "the other three share the whole weight",
                lambda: _as_list(_stable(_hand_e())),
            ),
            Misconception(
                "mask_after_softmax",
                "you took the softmax over all four scores and then set the "
                "last weight to 0: the other three no longer sum to 1. Remove the key first",
                lambda: _as_list(_stable(_hand_e()) * _hand_keep()),
            ),
            Misconception(
                "fill_zero",
                "you gave the padded key a score of 0: exp(0) = 1, so it still takes "
                "weight. A removed key's score is -∞ (exp(-∞) = 0)",
                lambda: _as_list(_stable(_hand_e().masked_fill(~_hand_keep(), 0.0))),
            ),
            Misconception(
                "returned_scores",
                "those are the scores; the task asks for the weights (after the softmax)",
                lambda: _as_list(_hand_e()),
            ),
            Misconception(
                "no_exp",
                "you divided each score by the sum of the scores; softmax divides exp(e_i) by Σ_j exp(e_j)",
                lambda: _as_list((_hand_e() * _hand_keep()) / (_hand_e() * _hand_keep()).sum()),
            ),
            Misconception(
                "scaled",
                "you divided the scores by √d = 2 first: here the weights are the softmax "
                "of the scores as given",
                lambda: _as_list(_masked(_hand_e() / 2, _hand_keep())),
            ),
            Misconception(
                "no_normalisation",
                "those are the exponentials exp(e_i); the weights divide each by "
                "their sum over the kept keys",
                lambda: _as_list(torch.exp(_hand_e()) * _hand_keep()),
            ),
            Misconception(
                "no_normalisation",
                "those are the exponentials exp(e_i); the weights divide each by "
                "their sum over the kept keys (and the padded key gets 0)",
                lambda: _as_list(torch.exp(_hand_e())),
            ),
            Misconception(
                "reversed",
                "your weights are in reverse order: list them key by key, from the first "
                "key to the last (the padded one)",
                lambda: _as_list(_masked(_hand_e(), _hand_keep()).flip(0)),
            ),
            Misconception(
                "padded_key_left_out",
                "you left the padded key out: the task asks for four weights, "
                "one per key, the padded key's included",
                lambda: _as_list(_masked(_hand_e(), _hand_keep())[:3]),
            ),
        ],
        atol=1e-3,
        rtol=0.0,
        check_grad=False,
        hint="Drop the padded key (weight 0), then α_i = exp(e_i) / Σ_j exp(e_j) over the three others; they "
        "sum to 1.",
        answer_words="one weight per key, the padded key's included",
        forbidden=BOOK_SOFTMAX,
        shortcut_example=functools.partial(_book.softmax, _hand_e(), -1, _hand_keep()),
    )
)
