"""Set 08, attention in matrix form: ``softmax(Q Kᵀ / √d_k) V`` for batches, with padding and causal masks.

Cases put a different size on every axis, widths that are odd or not perfect squares next to ones that are
(so that ``d_k ** 1/2``, ``√T_k`` or an integer square root cannot agree with ``√d_k`` everywhere), masks
that leave the queries of one sentence different numbers of keys (down to a single one), and masked keys
that hold huge scores (a mask applied after the softmax then loses the real keys to underflow). Every
query keeps at least one key, as the task text says, so masking with ``torch.finfo(dtype).min`` and
PyTorch's own ``F.scaled_dot_product_attention`` are right answers. Tolerances are 1e-9 (float64). The
book's own ``attnbook.attention`` functions earn 0.
"""

from __future__ import annotations

import math

import torch

from ... import attention as _book
from ..cases import generator, randn
from ..engine import Case, Misconception, Task
from ..registry import register

NEG_INF = float("-inf")
TOL = 1e-9
#: the book's own implementations (every function of attnbook.attention): calling one earns 0
BOOK_ATTENTION_FIRST = "attnbook.attention:*"

# ------------------------------------------------------------------------------------------ shared pieces


def _scores(Q, K):
    return Q @ K.transpose(-1, -2) / math.sqrt(Q.shape[-1])  # (B, T_q, T_k)


def _softmax(scores, mask):
    """Softmax over keys; masked entries exactly 0; an all-masked row is all zeros (never NaN)."""
    if mask is not None:
        scores = scores.masked_fill(~mask, NEG_INF)
    top = scores.amax(dim=-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    e = torch.exp(scores - top)
    total = e.sum(dim=-1, keepdim=True)
    return e / torch.where(total > 0, total, torch.ones_like(total))


def _lengths_mask(lengths, T_k):
    return (torch.arange(T_k)[None, :] < lengths[:, None])[:, None, :]  # (B, 1, T_k)


# ------------------------------------------------------------------------------------------ 08.sdpa


def _sdpa_ref(Q, K, V, mask=None):
    weights = _softmax(_scores(Q, K), mask)  # (B, T_q, T_k)
    return weights @ V, weights  # (B, T_q, d_v), (B, T_q, T_k)


def _sdpa_cases():
    g = generator(8)
    dims = lambda B, T_q, T_k, d_k, d_v: {"B": B, "T_q": T_q, "T_k": T_k, "d_k": d_k, "d_v": d_v}  # noqa: E731
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    return [
        Case(
            "B=2, T_q=3, T_k=5, d_k=4, d_v=6, no mask",
            (randn(g, 2, 3, 4), randn(g, 2, 5, 4), randn(g, 2, 5, 6)),
            dims=dims(2, 3, 5, 4, 6),
            note="every size different, K ≠ V",
        ),
        Case(
            "B=3, T_q=4, T_k=6, d_k=d_v=2, K ≠ V",
            (randn(g, 3, 4, 2), randn(g, 3, 6, 2), randn(g, 3, 6, 2)),
            dims=dims(3, 4, 6, 2, 2),
            note="keys and values of the same width but different",
        ),
        Case(
            "padding mask, lengths 5, 2, 3",
            (
                randn(g, 3, 2, 7, scale=2.0),
                randn(g, 3, 5, 7),
                randn(g, 3, 5, 4),
                _lengths_mask(torch.tensor([5, 2, 3]), 5),
            ),
            dims=dims(3, 2, 5, 7, 4),
            note="mask (B, 1, T_k): the sentences have different valid lengths",
        ),
        Case(
            "causal mask, T_q=T_k=5",
            (randn(g, 2, 5, 3), randn(g, 2, 5, 3), randn(g, 2, 5, 4), causal),
            dims={"B": 2, "T": 5, "d_k": 3, "d_v": 4},
            note="mask (T_q, T_k): query t sees keys 0..t",
        ),
        Case(
            "padding and causal mask together",
            (
                randn(g, 2, 5, 3),
                randn(g, 2, 5, 3),
                randn(g, 2, 5, 6),
                _lengths_mask(torch.tensor([3, 5]), 5) & causal,
            ),
            dims={"B": 2, "T": 5, "d_k": 3, "d_v": 6},
            note="mask (B, T_q, T_k)",
        ),
        Case(
            "large and negative scores",
            (randn(g, 1, 3, 4, scale=300.0), randn(g, 1, 4, 4, scale=10.0), randn(g, 1, 4, 2)),
            dims=dims(1, 3, 4, 4, 2),
            note="scores of about ±1e3: exp() overflows unless the maximum is subtracted",
        ),
        Case(
            "tied scores",
            (torch.zeros(2, 2, 3, dtype=torch.float64), randn(g, 2, 4, 3), randn(g, 2, 4, 5)),
            dims=dims(2, 2, 4, 3, 5),
            note="all scores equal: the weights are uniform",
        ),
        _large_masked_case(g),
        Case(
            "a different mask for every query",
            (randn(g, 2, 4, 5), randn(g, 2, 6, 5), randn(g, 2, 6, 3), _per_query_mask()),
            dims=dims(2, 4, 6, 5, 3),
            note="mask (B, T_q, T_k): in one sentence some queries keep a single key, one keeps none",
        ),
        Case(
            "padding mask, lengths 4, 0, 2",
            (
                randn(g, 3, 2, 5),
                randn(g, 3, 4, 5),
                randn(g, 3, 4, 6),
                _lengths_mask(torch.tensor([4, 0, 2]), 4),
            ),
            dims=dims(3, 2, 4, 5, 6),
            note="sentence 1 has length 0: its queries have no key at all",
        ),
    ]


def _per_query_mask():
    mask = torch.ones(2, 4, 6, dtype=torch.bool)
    mask[0, 0] = torch.tensor([False, False, True, False, False, False])  # one key left
    mask[0, 2, 3:] = False
    mask[1, 1] = torch.tensor([False, False, False, False, False, True])  # one key left, the last
    mask[1, 3, ::2] = False
    mask[1, 2] = False  # no key left for this query; the others of its sentence keep theirs
    return mask


def _large_masked_case(g):
    """Padded keys whose scores are about 1000 above the real ones: a softmax over every key gives the real
    keys exp(-1000) = 0, so masking after the softmax (and renormalising) loses them."""
    Q = 0.5 + randn(g, 2, 3, 4).abs()  # positive queries
    K = randn(g, 2, 7, 4)
    K[0, 4:], K[1, 2:] = 400.0, 400.0  # the padded keys: huge dot products with every query
    mask = (torch.arange(7)[None, :] < torch.tensor([4, 2])[:, None])[:, None, :]
    return Case(
        "masked keys with huge scores",
        (Q, K, randn(g, 2, 7, 6), mask),
        dims={"B": 2, "T_q": 3, "T_k": 7, "d_k": 4, "d_v": 6},
        note="the padded keys' scores are about 1000 above the real keys' scores",
    )


def _rows_sum_to_one(case, outputs):
    weights = outputs[1]
    Q, K = case.args[0], case.args[1]
    shape = (Q.shape[0], Q.shape[1], K.shape[1])
    if (
        not isinstance(weights, torch.Tensor)
        or tuple(weights.shape) != shape
        or not torch.isfinite(weights).all()
    ):
        return None
    sums = weights.detach().sum(dim=-1)
    if len(case.args) > 3 and case.args[3] is not None:  # a query with no key left sums to 0
        keeps = case.args[3].expand(shape).any(dim=-1)
        sums = torch.where(keeps, sums, torch.ones_like(sums))
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-6):
        return (
            "the weights of a query do not sum to 1 over the keys: the softmax must run over the last axis "
            "(the keys), with the masked keys removed before it"
        )
    return None


_rows_sum_to_one.key = "weights_not_normalised"


def _masked_weights_zero(case, outputs):
    if len(case.args) < 4:
        return None
    weights, mask = outputs[1], case.args[3]
    Q, K = case.args[0], case.args[1]
    shape = (Q.shape[0], Q.shape[1], K.shape[1])
    if not isinstance(weights, torch.Tensor) or tuple(weights.shape) != shape:
        return None
    hidden = ~mask.expand(shape)
    if (weights.detach()[hidden].abs() > 1e-12).any():
        return (
            "a masked key got a weight that is not 0: where the mask is False the score must become -inf "
            "before the softmax"
        )
    return None


_masked_weights_zero.key = "masked_weight_not_zero"


def _wrong_scale(scale_of):
    def fn(Q, K, V, mask=None):
        w = _softmax(Q @ K.transpose(-1, -2) / scale_of(Q, K, V), mask)
        return w @ V, w

    return fn


def _mask_after_softmax(Q, K, V, mask=None):
    w = torch.softmax(_scores(Q, K), dim=-1)
    if mask is not None:
        w = w * mask
    return w @ V, w


def _mask_after_softmax_renormalised(Q, K, V, mask=None):
    w = torch.softmax(_scores(Q, K), dim=-1)
    if mask is not None:
        w = w * mask
        w = w / w.sum(dim=-1, keepdim=True)
    return w @ V, w


def _no_key_nan(Q, K, V, mask=None):
    """-inf masking and a plain softmax: right, except NaN for a query with no key left."""
    s = _scores(Q, K)
    if mask is not None:
        s = s.masked_fill(~mask, NEG_INF)
    w = torch.softmax(s, dim=-1)
    return w @ V, w


def _no_key_uniform(Q, K, V, mask=None):
    """Masking with the most negative number: right, except uniform weights for a query with no key left."""
    s = _scores(Q, K)
    if mask is not None:
        s = s.masked_fill(~mask, torch.finfo(s.dtype).min)
    w = torch.softmax(s, dim=-1)
    return w @ V, w


def _softmax_over_batch(Q, K, V, mask=None):
    s = _scores(Q, K)
    if mask is not None:
        s = s.masked_fill(~mask, NEG_INF)
    w = torch.softmax(s, dim=0)
    return w @ V, w


def _bool_mask_added(Q, K, V, mask=None):
    s = _scores(Q, K)
    if mask is not None:
        s = s + mask
    w = torch.softmax(s, dim=-1)
    return w @ V, w


def _mask_filled_with_zero(Q, K, V, mask=None):
    s = _scores(Q, K)
    if mask is not None:
        s = s.masked_fill(~mask, 0.0)
    w = torch.softmax(s, dim=-1)
    return w @ V, w


def _inverted_mask(fill, nan_to_zero=False):
    """Fill where the mask is True; with fill -inf a row with every key allowed becomes NaN (or zeros, for a
    learner who then replaces NaN by 0), with a large negative number it becomes uniform: learners write all
    three, so all are modelled."""

    def fn(Q, K, V, mask=None):
        s = _scores(Q, K)
        if mask is not None:
            s = s.masked_fill(mask, fill)
        w = torch.softmax(s, dim=-1)
        if nan_to_zero:
            w = torch.nan_to_num(w, nan=0.0)
        return w @ V, w

    return fn


def _softmax_over_queries(fill):
    def fn(Q, K, V, mask=None):
        s = _scores(Q, K)
        if mask is not None:
            s = s.masked_fill(~mask, fill)
        w = torch.softmax(s, dim=-2)
        return w @ V, w

    return fn


def _always_causal(Q, K, V, mask=None):
    """A causal (look-ahead) mask of its own, on top of the mask given (if any)."""
    T_q, T_k = Q.shape[-2], K.shape[-2]
    causal = torch.ones(T_q, T_k, dtype=torch.bool).tril()
    w = _softmax(_scores(Q, K), causal if mask is None else causal & mask)
    return w @ V, w


def _mask_ignored(Q, K, V, mask=None):
    """The mask argument left unused."""
    if mask is None:
        raise ValueError()  # no mask to ignore: not this misconception
    w = _softmax(_scores(Q, K), None)
    return w @ V, w


def _keys_as_values(Q, K, V, mask=None):
    w = _softmax(_scores(Q, K), mask)
    return w @ K, w


def _transposed_scores(Q, K, V, mask=None):
    s = K @ Q.transpose(-1, -2) / math.sqrt(Q.shape[-1])  # (B, T_k, T_q)
    if mask is not None:
        s = s.masked_fill(~mask.transpose(-1, -2), NEG_INF)
    w = torch.softmax(s, dim=-1)
    return w.transpose(-1, -2) @ V, w


def _returned_scores(Q, K, V, mask=None):
    """The right output, and the scores returned as the weights (the first case has no mask)."""
    return _sdpa_ref(Q, K, V, mask)[0], _scores(Q, K)


def _no_softmax(Q, K, V, mask=None):
    s = _scores(Q, K)
    return s @ V, s


def _reshaped_keys(Q, K, V, mask=None):
    w = _softmax(Q @ K.reshape(*K.shape[:-2], K.shape[-1], K.shape[-2]) / math.sqrt(Q.shape[-1]), mask)
    return w @ V, w


def _uniform(Q, K, V, mask=None):
    w = _softmax(torch.zeros(Q.shape[0], Q.shape[1], K.shape[1], dtype=Q.dtype), mask)
    return w @ V, w


register(
    Task(
        id="08.sdpa",
        title="scaled dot-product attention with masks",
        points=4,
        reference=_sdpa_ref,
        cases=_sdpa_cases,
        output_names=("output", "weights"),
        misconceptions=[
            Misconception(
                "no_key_nan",
                "a query with no key left (every key masked, as in a sentence of length 0) gets NaN: the softmax "
                "of a row of -inf is 0 / 0. The task asks for all-zero weights and a zero output for such a "
                "query, while every other query keeps its usual weights",
                _no_key_nan,
                hint="After the softmax, set the rows of queries with no allowed key to 0: "
                "torch.where(mask.any(-1, keepdim=True), weights, 0) (or torch.nan_to_num).",
            ),
            Misconception(
                "no_key_uniform",
                "a query with no key left (every key masked) gets equal weights on keys that are all masked: "
                "filled with the most negative number, its scores are all the same. Such a query must get "
                "all-zero weights and a zero output",
                _no_key_uniform,
                hint="Set the rows of queries with no allowed key to 0 after the softmax.",
            ),
            *(
                Misconception(
                    "softmax_over_queries",
                    "your softmax runs over the queries (axis -2): each query's weights must sum to 1 over the keys, "
                    "the last axis",
                    _softmax_over_queries(fill),
                )
                for fill in (NEG_INF, -1e9)
            ),
            Misconception(
                "scaled_by_sqrt_T_q",
                "you scaled the scores by √T_q, the number of queries: the scale is √d_k, the width of the "
                "queries and keys",
                _wrong_scale(lambda Q, K, V: math.sqrt(Q.shape[-2])),
            ),
            Misconception(
                "scaled_by_half_d_k",
                "you divided the scores by d_k / 2 (a power written with 1/2 is divided by 2 in Python): the scale is the "
                "square root of d_k; it agrees with d_k / 2 only when d_k = 4",
                _wrong_scale(lambda Q, K, V: Q.shape[-1] / 2),
                hint="math.sqrt(d_k), or d_k ** 0.5.",
            ),
            Misconception(
                "not_scaled",
                "you did not scale the scores: divide Q Kᵀ by √d_k before the softmax",
                _wrong_scale(lambda Q, K, V: 1.0),
            ),
            Misconception(
                "scaled_by_d",
                "you divided the scores by d_k; the scale is its square root, √d_k",
                _wrong_scale(lambda Q, K, V: Q.shape[-1]),
            ),
            Misconception(
                "scaled_by_d_v",
                "you scaled by √d_v, the width of the values; the scale is √d_k, the width of the queries and keys",
                _wrong_scale(lambda Q, K, V: math.sqrt(V.shape[-1])),
            ),
            Misconception(
                "causal_not_asked",
                "you applied a causal (look-ahead) mask of your own: this function applies only the mask it is "
                "given, and without one (mask=None) every query sees every key; a causal mask, where one is "
                "needed, comes in as the mask argument",
                _always_causal,
            ),
            Misconception(
                "mask_ignored",
                "your function ignores its mask argument: the keys the mask removes (False: padding, or the "
                "future positions of a causal mask) still get weight. Where mask is given, its False "
                "entries must get weight exactly 0",
                _mask_ignored,
            ),
            Misconception(
                "mask_after_softmax",
                "you applied the mask after the softmax: the masked weights become 0 but the others no longer sum "
                "to 1. Put -inf into the masked scores before the softmax",
                _mask_after_softmax,
            ),
            Misconception(
                "mask_after_softmax_renormalised",
                "you applied the mask after the softmax and renormalised: that agrees only while the masked keys' "
                "scores are small. A masked key with a huge score takes nearly all the weight in the softmax, "
                "the real keys underflow to 0, and the mask then removes what is left. Masked scores must be "
                "removed before the softmax",
                _mask_after_softmax_renormalised,
                hint="scores.masked_fill(~mask, float('-inf')) before torch.softmax.",
            ),
            Misconception(
                "scaled_by_sqrt_T_k",
                "you scaled the scores by √T_k, the number of keys: the scale is √d_k, the width of the queries "
                "and keys",
                _wrong_scale(lambda Q, K, V: math.sqrt(K.shape[-2])),
            ),
            Misconception(
                "softmax_over_batch",
                "your softmax runs over the batch axis (dim 0), across sentences: each query's weights sum to 1 "
                "over the keys of its own sentence, the last axis",
                _softmax_over_batch,
            ),
            Misconception(
                "bool_mask_added",
                "you added the boolean mask to the scores: True counts as 1 and False as 0, so every key keeps a "
                "weight. A masked key's score has to become -inf (or the most negative number)",
                _bool_mask_added,
            ),
            Misconception(
                "mask_filled_with_zero",
                "you filled the masked scores with 0: exp(0) = 1, so masked keys still get weight. Fill them with "
                "-inf, whose exp is exactly 0",
                _mask_filled_with_zero,
            ),
            *(
                Misconception(
                    "inverted_mask",
                    "your mask works the wrong way round: True means the query MAY attend to the key, so fill the "
                    "scores where the mask is False (~mask), not where it is True",
                    fn,
                )
                for fn in (_inverted_mask(NEG_INF), _inverted_mask(-1e9), _inverted_mask(NEG_INF, True))
            ),
            Misconception(
                "keys_as_values",
                "you took the weighted sum of the keys: the attention value mixes the values, V",
                _keys_as_values,
            ),
            Misconception(
                "transposed_scores",
                "your scores are transposed (K Qᵀ): rows must be queries and columns keys, shape (B, T_q, T_k); "
                "each row is one query compared with every key",
                _transposed_scores,
            ),
            Misconception(
                "returned_scores",
                "the weights you return are the scores Q Kᵀ / √d_k, before the softmax: the task asks for the "
                "attention weights, the softmax of the scores over the keys, the very weights your output is "
                "made with",
                _returned_scores,
            ),
            Misconception(
                "no_softmax",
                "you used the scores as weights, without the softmax: the weights are softmax(Q Kᵀ / √d_k) over "
                "the keys, non-negative and summing to 1",
                _no_softmax,
            ),
            Misconception(
                "reshape_not_transpose",
                "you turned K (B, T_k, d_k) into (B, d_k, T_k) with reshape/view: that only regroups the numbers "
                "in memory order and mixes keys with components; the last two axes must be swapped (transposed)",
                _reshaped_keys,
                hint="K.transpose(-1, -2) (or K.mT) swaps the last two axes.",
            ),
            Misconception(
                "ignores_scores",
                "your weights do not depend on the scores (a plain average of the values): the weights are the "
                "softmax of Q Kᵀ / √d_k",
                _uniform,
            ),
        ],
        properties=[_rows_sum_to_one, _masked_weights_zero],
        hint="scores = Q @ Kᵀ / √d_k; masked_fill(~mask, -inf); softmax over dim=-1; then weights @ V.",
        forbidden=(BOOK_ATTENTION_FIRST,),
        atol=TOL,
        rtol=TOL,
        shortcut_example=lambda Q, K, V, mask=None: _book.scaled_dot_product_attention(Q, K, V, mask),
    )
)

# ------------------------------------------------------------------------------------------ 08.causal_mask


def _causal_ref(T):
    return torch.ones(T, T, dtype=torch.bool).tril()


register(
    Task(
        id="08.causal_mask",
        title="causal mask",
        points=2,
        reference=_causal_ref,
        cases=lambda: [
            Case("T=4", (4,), dims={"T": 4}),
            Case("T=7", (7,), dims={"T": 7}),
            Case("T=1", (1,), dims={"T": 1}, note="a single position sees itself"),
            Case("T=0", (0,), dims={"T": 0}, note="an empty sequence: a (0, 0) mask"),
        ],
        misconceptions=[
            Misconception(
                "upper_triangle",
                "your mask lets each query see the future: query t may attend to keys 0..t, which is the LOWER "
                "triangle (on and below the diagonal), row = query, column = key",
                lambda T: torch.ones(T, T, dtype=torch.bool).triu(),
            ),
            Misconception(
                "strict_triangle",
                "your mask hides the diagonal: query t may attend to itself (key t) as well as to the keys before it",
                lambda T: torch.ones(T, T, dtype=torch.bool).tril(-1),
            ),
            Misconception(
                "inverted",
                "your mask is inverted: True must mean 'may attend' (on and below the diagonal), False the future",
                lambda T: ~torch.ones(T, T, dtype=torch.bool).tril(),
            ),
            Misconception(
                "all_true",
                "your mask allows every key: a causal mask is False above the diagonal (the future)",
                lambda T: torch.ones(T, T, dtype=torch.bool),
            ),
        ],
        check_grad=False,
        hint="torch.ones(T, T, dtype=torch.bool).tril() is True where key ≤ query.",
        forbidden=(BOOK_ATTENTION_FIRST,),
        shortcut_example=lambda T: _book.causal_mask(T),
    )
)

# ------------------------------------------------------------------------------------------ 08.padding_mask


def _padding_ref(lengths, T_k):
    return torch.arange(T_k)[None, :].lt(lengths[:, None]).unsqueeze(1)  # (B, 1, T_k)


PADDING_ONE_SHORT = (
    "your mask drops the last real token of every sentence: a sentence of length L has L real positions, "
    "0..L-1, and position L-1 is still a real word, not padding"
)


def _padding_prefix_lengths(case, outputs):
    """A mask of the right shape that keeps a prefix of each row, but not of the sentence's length."""
    got, (lengths, T_k) = outputs[0], case.args
    if (
        not isinstance(got, torch.Tensor)
        or got.dtype != torch.bool
        or tuple(got.shape) != (len(lengths), 1, T_k)
    ):
        return None
    rows = got[:, 0, :]
    kept = rows.sum(-1)
    prefix = torch.arange(T_k)[None, :] < kept[:, None]
    if not torch.equal(rows, prefix) or torch.equal(kept, lengths.clamp(0, T_k)):
        return None
    if len(set(kept.tolist())) == 1 and len(set(lengths.tolist())) > 1:
        return (
            f"every row of your mask keeps the same number of positions, {int(kept[0])}: you used one "
            "length for the whole batch, but each sentence b has its own length lengths[b]"
        )
    wrong = [(int(k), int(n)) for k, n in zip(kept, lengths) if int(k) != min(int(n), T_k)]
    k, n = wrong[0]
    return (
        f"your mask keeps the first {k} positions of a sentence whose length is {n}: each row must keep "
        "exactly its sentence's real positions, as many as its length, and no padding"
    )


_padding_prefix_lengths.key = "wrong_lengths"


register(
    Task(
        id="08.padding_mask",
        title="padding mask from valid lengths",
        points=2,
        reference=_padding_ref,
        cases=lambda: [
            Case("lengths 3, 5, 1 in T_k=6", (torch.tensor([3, 5, 1]), 6), dims={"B": 3, "T_k": 6}),
            Case(
                "lengths 4, 0 in T_k=4",
                (torch.tensor([4, 0]), 4),
                dims={"B": 2, "T_k": 4},
                note="one full sentence and one of length 0",
            ),
            Case("length 2 in T_k=5", (torch.tensor([2]), 5), dims={"B": 1, "T_k": 5}),
        ],
        misconceptions=[
            Misconception(
                "inverted",
                "your mask is True at the padding: True must mark the real keys (positions < length), the ones a "
                "query may attend to",
                lambda lengths, T_k: torch.arange(T_k)[None, :].ge(lengths[:, None]).unsqueeze(1),
            ),
            Misconception(
                "off_by_one",
                "your mask keeps one position too many: a sentence of length L has valid positions 0..L-1, "
                "so position L is already padding",
                lambda lengths, T_k: torch.arange(T_k)[None, :].le(lengths[:, None]).unsqueeze(1),
            ),
            Misconception(
                "off_by_one",
                PADDING_ONE_SHORT,
                lambda lengths, T_k: torch.arange(T_k)[None, :].lt(lengths[:, None] - 1).unsqueeze(1),
            ),
            Misconception(
                "query_axis",
                "your mask has shape (B, T_k, 1), so it would hide queries: padding hides keys, shape (B, 1, T_k), "
                "so that it broadcasts over the query axis",
                lambda lengths, T_k: torch.arange(T_k)[None, :].lt(lengths[:, None]).unsqueeze(2),
            ),
        ],
        properties=[_padding_prefix_lengths],
        check_grad=False,
        hint="Compare torch.arange(T_k) with each length (broadcasting) and add the query axis: shape (B, 1, T_k).",
        forbidden=(BOOK_ATTENTION_FIRST,),
        shortcut_example=lambda lengths, T_k: _book.padding_mask(lengths, T_k),
    )
)
