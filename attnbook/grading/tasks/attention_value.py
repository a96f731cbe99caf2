"""Set 06, the attention value ``a_t = sum_i alpha^t_i h_i`` and the Luong output step.

Tasks go from the weighted sum alone, through full dot-product attention with keys different from the
values, to one decoder step with padding, every decoder step at once, and the output layer
``y_hat_t = softmax(W_y tanh(W_c [a_t; s_t] + b_c) + b_y)``.

Every task that returns an attention value and its weights returns them in PyTorch's order,
``(output, weights)``. The masked softmax is set 05's step: here a learner may use the book's
``attnbook.attention.softmax`` for it (it is not forbidden); the book's functions for the steps this set
asks (the weighted sum, the scores, whole attention) are. Tolerances are 1e-9, so a step computed in
float32 is named.
"""

from __future__ import annotations

import functools
import itertools
import math

import torch

from ... import attention as _book
from ... import worked_example as wx
from ...attention import padding_mask, softmax
from ..cases import DTYPE, generator, randn
from ..engine import Case, Misconception, Task
from ..registry import register

#: the book's implementations of the steps this set asks for; calling one earns 0
BOOK_VALUE = (
    "attnbook.attention:attention_value",
    "attnbook.attention:dot_scores",
    "attnbook.attention:scaled_dot_scores",
    "attnbook.attention:general_scores",
    "attnbook.attention:scaled_dot_product_attention",
)
TOL = {"atol": 1e-9, "rtol": 1e-9}


def _weights(gen, *shape, scale=2.0):
    return softmax(randn(gen, *shape, scale=scale))


def _masked_weights(scores, lengths):
    """Softmax over the keys of ``scores (B, T_q, T_k)`` with keys ``>= lengths[b]`` removed."""
    return softmax(scores, dim=-1, mask=padding_mask(lengths, scores.shape[-1]))


def _naive_softmax(x, dim=-1):
    e = torch.exp(x)
    return e / e.sum(dim=dim, keepdim=True)


# --------------------------------------------------------------------------------------------- properties


def _sums_to_one_over(
    n_keys, what="your weights for one query do not sum to 1 over the source positions", index=1
):
    """Property: output ``index`` (the weights) sums to 1 (or to 0 for an empty row) over its last axis,
    which must have ``n_keys(case)`` entries (otherwise the shape check speaks instead)."""

    def prop(case, outputs):
        return _sums_to_one(outputs[index] if index < len(outputs) else None, n_keys(case), what)

    prop.key = "not_normalised"
    return prop


def _sums_to_one(alpha, n, what):
    if not isinstance(alpha, torch.Tensor) or alpha.dim() == 0 or alpha.shape[-1] != n:
        return None
    if not torch.isfinite(alpha).all():
        return None
    sums = alpha.sum(-1)
    ok = torch.isclose(sums, torch.ones_like(sums), atol=1e-6) | (sums.abs() < 1e-12)
    if not ok.all():
        return f"{what}: row sums range from {float(sums.min()):.4f} to {float(sums.max()):.4f}"
    return None


def _padding_gets_weight(case, outputs):
    """Padded source positions (``>= lengths[b]``) must get weight exactly 0."""
    lengths = case.args[-1]
    alpha = outputs[1]
    H = case.args[1]
    B, N = H.shape[0], H.shape[1]
    if not isinstance(alpha, torch.Tensor) or alpha.dim() < 2 or alpha.shape[0] != B or alpha.shape[-1] != N:
        return None
    pad = ~(torch.arange(N)[None, :] < lengths[:, None])  # (B, N)
    pad = pad.view(B, *([1] * (alpha.dim() - 2)), N).expand_as(alpha)
    if (alpha[pad].abs() > 1e-12).any():
        return (
            "padded source positions (index ≥ lengths[b]) got a non-zero weight: a padded position "
            "must be removed before the softmax, so that its weight is exactly 0"
        )
    return None


_padding_gets_weight.key = "padding_not_masked"


def _value_not_from_own_weights(case, outputs):
    """``a`` should be the weighted sum of ``H`` with the learner's own ``alpha``."""
    if len(outputs) != 2:
        return None
    a, alpha = outputs
    H = case.args[1]
    if not (isinstance(alpha, torch.Tensor) and isinstance(a, torch.Tensor)):
        return None
    if alpha.dim() not in (2, 3) or alpha.shape[0] != H.shape[0] or alpha.shape[-1] != H.shape[1]:
        return None
    if not torch.isfinite(alpha).all():
        return None
    alpha = alpha.detach().to(H.dtype)
    own = (alpha.unsqueeze(-1) * H).sum(1) if alpha.dim() == 2 else alpha @ H  # (B, d) or (B, T, d)
    if own.shape == a.shape and not torch.allclose(own, a.detach().to(own.dtype), atol=1e-6):
        return (
            "your attention value is not the weighted sum of the encoder states with your own "
            "weights: a_t = Σ_i alpha_t[i] · h_i"
        )
    return None


_value_not_from_own_weights.key = "value_not_weighted_sum"

# --------------------------------------------------------------------------------------------- 06.attention_value


def _value_ref(weights, values):
    return weights @ values


def _value_cases():
    g = generator(60)
    one_hot = torch.nn.functional.one_hot(torch.tensor([[2, 0, 4], [1, 1, 3]]), 5).to(DTYPE)
    masked = _masked_weights(randn(g, 3, 2, 6), torch.tensor([6, 2, 4]))
    empty_row = _masked_weights(randn(g, 2, 3, 4), torch.tensor([4, 0]))
    return [
        Case(
            "B=2, T_q=T_k=4, d_v=3",
            (_weights(g, 2, 4, 4), randn(g, 2, 4, 3)),
            dims={"B": 2, "T": 4, "d_v": 3},
            note="T_q = T_k, as in self-attention",
        ),
        Case(
            "B=2, T_q=3, T_k=5, d_v=4",
            (_weights(g, 2, 3, 5), randn(g, 2, 5, 4, scale=3.0)),
            dims={"B": 2, "T_q": 3, "T_k": 5, "d_v": 4},
        ),
        Case(
            "B=3, T_q=2, T_k=6, d_v=7, padded weights",
            (masked, randn(g, 3, 6, 7)),
            dims={"B": 3, "T_q": 2, "T_k": 6, "d_v": 7},
            note="some weights are exactly 0",
        ),
        Case(
            "B=2, T_q=3, T_k=5, d_v=2, one-hot weights",
            (one_hot, randn(g, 2, 5, 2)),
            dims={"B": 2, "T_q": 3, "T_k": 5, "d_v": 2},
            note="each query picks exactly one value",
        ),
        Case(
            "B=1, T_q=1, T_k=4, d_v=4, worked example t=3",
            (softmax(wx.encoder_states() @ wx.decoder_states()[2])[None, None], wx.encoder_states()[None]),
            dims={"T_k": 4, "d_v": 4},
            note="alpha^3 and H",
        ),
        Case(
            "B=2, T_q=3, T_k=4, d_v=5, a sentence with no key",
            (empty_row, randn(g, 2, 4, 5)),
            dims={"B": 2, "T_q": 3, "T_k": 4, "d_v": 5},
            note="item 1 has no key: its weights are all 0, so its attention values must be 0",
        ),
    ]


def _plain_average_keepdim(weights, values):
    return values.mean(dim=-2, keepdim=True).expand(*values.shape[:-2], weights.shape[-2], values.shape[-1])


PLAIN_AVERAGE = (
    "you took a plain average of the values: attention weights each value by its own α_i "
    "(a = Σ_i α_i v_i), so values with a large weight count more"
)

register(
    Task(
        id="06.attention_value",
        title="the attention value: a weighted sum of the values",
        points=2,
        reference=_value_ref,
        cases=_value_cases,
        misconceptions=[
            Misconception("plain_average", PLAIN_AVERAGE, _plain_average_keepdim),
            Misconception("plain_average", PLAIN_AVERAGE, lambda weights, values: values.mean(dim=-2)),
            Misconception(
                "weights_transposed",
                "you used the weights transposed (rows as keys): row q of the weights belongs to one query, "
                "and its T_k entries must meet the T_k values",
                lambda weights, values: weights.transpose(-1, -2) @ values,
            ),
            Misconception(
                "summed_over_queries",
                "you added the weighted values up over the queries (axis 1); the sum runs over the keys, "
                "the axis that weights and values share (T_k)",
                lambda weights, values: (weights.unsqueeze(-1) * values.unsqueeze(-3)).sum(-3),
            ),
            Misconception(
                "not_summed",
                "you multiplied each value by its weight but did not add the products up: the attention "
                "value is the sum Σ_i α_i v_i, one vector of size d_v per query",
                lambda weights, values: weights.unsqueeze(-1) * values.unsqueeze(-3),
            ),
            Misconception(
                "unweighted_sum",
                "you added the values up without weighting them: multiply each value by its weight first",
                lambda weights, values: values.sum(-2, keepdim=True).expand(
                    *values.shape[:-2], weights.shape[-2], values.shape[-1]
                ),
            ),
            Misconception(
                "divided_by_T_k",
                "you divided the weighted sum by the number of keys: the weights already sum to 1, so "
                "Σ_i α_i v_i is the average, with nothing left to divide",
                lambda weights, values: (weights @ values) / values.shape[-2],
            ),
            Misconception(
                "softmax_again",
                "you took a softmax of the weights: they already are weights (non-negative, summing to 1); "
                "a second softmax flattens them towards uniform. Use them as they are",
                lambda weights, values: softmax(weights) @ values,
            ),
            Misconception(
                "renormalised_empty_row",
                "you divided by the sum of the weights: for a query with no key that sum is 0, and 0/0 is NaN. "
                "The weights already sum to 1 (or are all 0): use them as they are",
                lambda weights, values: (weights @ values) / weights.sum(-1, keepdim=True),
            ),
            Misconception(
                "first_sentence_values",
                "every sentence used the values of the first sentence of the batch: each sentence's weights "
                "must meet its own values",
                lambda weights, values: weights @ values[0],
            ),
        ],
        hint="For each query q: a[q] = Σ_i weights[q, i] · values[i]; with batches, weights @ values.",
        forbidden=BOOK_VALUE,
        shortcut_example=_book.attention_value,
        **TOL,
    )
)

# --------------------------------------------------------------------------------------------- 06.dot_product_attention


def _dpa_ref(Q, K, V):
    alpha = softmax(Q @ K.transpose(-1, -2))  # (B, T_q, T_k)
    return alpha @ V, alpha  # (B, T_q, d_v), (B, T_q, T_k)


def _dpa_with(weights_fn, value_of=lambda Q, K, V: V):
    def fn(Q, K, V):
        alpha = weights_fn(Q, K)
        return alpha @ value_of(Q, K, V), alpha

    return fn


def _dpa_cases():
    g = generator(61)
    return [
        Case(
            "B=2, T_q=3, T_k=5, d_k=4, d_v=6",
            (randn(g, 2, 3, 4), randn(g, 2, 5, 4), randn(g, 2, 5, 6)),
            dims={"B": 2, "T_q": 3, "T_k": 5, "d_k": 4, "d_v": 6},
        ),
        Case(
            "B=3, T_q=2, T_k=4, d_k=d_v=5, K ≠ V",
            (randn(g, 3, 2, 5), randn(g, 3, 4, 5), randn(g, 3, 4, 5)),
            dims={"B": 3, "T_q": 2, "T_k": 4, "d": 5},
            note="keys and values have the same size but differ",
        ),
        Case(
            "B=2, T_q=4, T_k=3, d_k=7, d_v=2, large scores",
            (randn(g, 2, 4, 7, scale=12.0), randn(g, 2, 3, 7, scale=12.0), randn(g, 2, 3, 2)),
            dims={"B": 2, "T_q": 4, "T_k": 3, "d_k": 7, "d_v": 2},
            note="scores in the hundreds and thousands",
        ),
        Case(
            "B=1, T_q=3, T_k=4, d=4, worked example (K = V = H)",
            (wx.decoder_states()[None], wx.encoder_states()[None], wx.encoder_states()[None]),
            dims={"T_q": 3, "T_k": 4, "d": 4},
            note="all three decoder steps",
        ),
        Case(
            "B=2, T_q=2, T_k=3, d_k=3, d_v=5, all-negative scores",
            (-randn(g, 2, 2, 3, scale=20.0).abs(), randn(g, 2, 3, 3, scale=20.0).abs(), randn(g, 2, 3, 5)),
            dims={"B": 2, "T_q": 2, "T_k": 3, "d_v": 5},
            note="every score is negative, some below -700",
        ),
    ]


def _scores(Q, K):
    return Q @ K.transpose(-1, -2)


register(
    Task(
        id="06.dot_product_attention",
        title="dot-product attention with separate keys and values",
        points=3,
        reference=_dpa_ref,
        cases=_dpa_cases,
        output_names=("a", "alpha"),
        misconceptions=[
            Misconception(
                "value_from_keys",
                "your attention value is a weighted sum of the keys K; the keys decide the weights, but the "
                "values V are what gets mixed",
                _dpa_with(lambda Q, K: softmax(_scores(Q, K)), lambda Q, K, V: K),
            ),
            Misconception(
                "swapped_outputs",
                "you returned (alpha, a): the book returns PyTorch's order, (output, weights): the attention "
                "value a first, then the weights alpha",
                lambda Q, K, V: tuple(reversed(_dpa_ref(Q, K, V))),
            ),
            Misconception(
                "value_from_scores",
                "you mixed the values with the raw scores Q Kᵀ: the attention value mixes them with the weights "
                "(the softmax of the scores)",
                lambda Q, K, V: (_scores(Q, K) @ V, softmax(_scores(Q, K))),
            ),
            Misconception(
                "scaled",
                "your attention value is scaled by 1/√d_k (F.scaled_dot_product_attention's default scale) "
                "while your weights are not: this task is Luong's unscaled attention everywhere",
                lambda Q, K, V: (softmax(_scores(Q, K) / math.sqrt(Q.shape[-1])) @ V, softmax(_scores(Q, K))),
            ),
            Misconception(
                "wrong_axis",
                "your weights sum to 1 over queries, not keys: the softmax runs over the last axis (the keys)",
                _dpa_with(lambda Q, K: softmax(_scores(Q, K), dim=-2)),
            ),
            Misconception(
                "softmax_over_batch",
                "your weights sum to 1 over the batch axis: each sentence's weights are normalised over its "
                "own keys (the last axis)",
                _dpa_with(lambda Q, K: softmax(_scores(Q, K), dim=0)),
            ),
            Misconception(
                "scaled",
                "you divided the scores by √d_k: this task asks for Luong's plain dot product, "
                "softmax(Q Kᵀ) V, without scaling",
                _dpa_with(lambda Q, K: softmax(_scores(Q, K) / math.sqrt(Q.shape[-1]))),
            ),
            Misconception(
                "no_softmax",
                "you used the raw scores as weights: the weights are softmax(Q Kᵀ), non-negative and summing "
                "to 1 over the keys",
                _dpa_with(lambda Q, K: _scores(Q, K)),
            ),
            Misconception(
                "no_exp",
                "you divided the scores by their sum without taking exp first: that can give negative weights "
                "(or divide by zero); the softmax is exp(e_i) / Σ_j exp(e_j)",
                _dpa_with(lambda Q, K: _scores(Q, K) / _scores(Q, K).sum(-1, keepdim=True)),
            ),
            Misconception(
                "returned_scores",
                "the alpha you return is the scores Q Kᵀ, before the softmax: alpha is the attention weights, "
                "the softmax of the scores over the keys, the very weights your value a is made with",
                lambda Q, K, V: (_dpa_ref(Q, K, V)[0], _scores(Q, K)),
            ),
            Misconception(
                "reshape_not_transpose",
                "you turned K (B, T_k, d) into (B, d, T_k) with reshape/view: that only regroups the numbers in "
                "memory order and mixes keys with components; the last two axes must be swapped (transposed)",
                _dpa_with(lambda Q, K: softmax(Q @ K.reshape(K.shape[0], K.shape[2], K.shape[1]))),
                hint="K.transpose(-1, -2) (or K.mT) swaps the last two axes.",
            ),
            Misconception(
                "sigmoid",
                "you used a sigmoid for the weights: it squashes every score on its own, while the weights of "
                "one query must be normalised against each other (softmax)",
                _dpa_with(lambda Q, K: torch.sigmoid(_scores(Q, K))),
            ),
            Misconception(
                "log_softmax",
                "you used log-probabilities (a log-softmax) as weights; the weights are the probabilities",
                _dpa_with(lambda Q, K: torch.log_softmax(_scores(Q, K), dim=-1)),
            ),
            Misconception(
                "overflow",
                "your softmax overflows or underflows on large scores (exp of a score in the thousands is inf, "
                "of one far below zero is 0; inf/inf and 0/0 are NaN): shift each row by its maximum first",
                _dpa_with(lambda Q, K: _naive_softmax(_scores(Q, K))),
            ),
            Misconception(
                "first_sentence_keys",
                "every sentence's queries met the keys and values of the first sentence of the batch: each "
                "sentence attends to its own keys and values",
                lambda Q, K, V: _dpa_ref(Q, K[:1].expand_as(K), V[:1].expand_as(V)),
            ),
        ],
        properties=[_sums_to_one_over(lambda case: case.args[1].shape[-2])],
        hint="alpha = softmax(Q @ K.transpose(-1, -2), dim=-1); a = alpha @ V; return (a, alpha).",
        forbidden=BOOK_VALUE,
        shortcut_example=_book.scaled_dot_product_attention,
        **TOL,
    )
)

# --------------------------------------------------------------------------------------------- 06.attention_step


def _step_ref(s_t, H, lengths):
    scores = (H @ s_t.unsqueeze(-1)).squeeze(-1)  # (B, N): e^t_i = s_t · h_i
    alpha_t = softmax(scores, dim=-1, mask=padding_mask(lengths, H.shape[1]).squeeze(1))
    a_t = (alpha_t.unsqueeze(-1) * H).sum(dim=1)  # (B, d)
    return a_t, alpha_t


def _step_cases():
    g = generator(62)
    H_wx, s_wx = wx.encoder_states(), wx.decoder_states()
    H_big = randn(g, 2, 4, 3)
    H_big[0, 2:] = 500.0  # padded encoder states with huge entries: huge masked scores
    first = Case(
        "B=3, N=5, d=4, lengths 5, 2, 4",
        (randn(g, 3, 4), randn(g, 3, 5, 4), torch.tensor([5, 2, 4])),
        dims={"B": 3, "N": 5, "d": 4},
    )
    # first a batch whose first sentence is the shorter one: one length for all (the first one's) and no
    # mask at all then give different weights, so the first failing case tells the two apart
    return [
        Case(
            "B=2, N=3, d=6, lengths 1, 3",
            (randn(g, 2, 6), randn(g, 2, 3, 6), torch.tensor([1, 3])),
            dims={"B": 2, "N": 3, "d": 6},
        ),
        first,
        Case(
            "B=4, N=6, d=2, large scores",
            (randn(g, 4, 2, scale=30.0), randn(g, 4, 6, 2, scale=30.0), torch.tensor([6, 3, 5, 2])),
            dims={"B": 4, "N": 6, "d": 2},
            note="scores in the hundreds and thousands",
        ),
        Case(
            "B=3, N=4, d=5, a length of 0",
            (randn(g, 3, 5), randn(g, 3, 4, 5), torch.tensor([4, 0, 3])),
            dims={"B": 3, "N": 4, "d": 5},
            note="item 1 has no source word: a_t and alpha_t are zeros",
        ),
        Case(
            "B=3, N=4, d=4, worked example",
            (s_wx, H_wx.expand(3, 4, 4).clone(), torch.tensor([4, 4, 4])),
            dims={"B": 3, "N": 4, "d": 4},
            note="the three steps of the worked example as a batch",
        ),
        Case(
            "B=2, N=4, d=3, padding with huge states",
            (randn(g, 2, 3).abs(), H_big, torch.tensor([2, 0])),
            dims={"B": 2, "N": 4, "d": 3},
            note="the padded states of item 0 hold 500s (their scores are huge); item 1 has length 0",
        ),
    ]


def _step_with(alpha_fn, value_fn=None):
    def fn(s_t, H, lengths):
        scores = (H @ s_t.unsqueeze(-1)).squeeze(-1)
        mask = padding_mask(lengths, H.shape[1]).squeeze(1)  # (B, N)
        alpha_t = alpha_fn(scores, mask)
        a_t = value_fn(alpha_t, H) if value_fn else (alpha_t.unsqueeze(-1) * H).sum(dim=1)
        return a_t, alpha_t

    return fn


def _step_scaled(s_t, H, lengths):
    """Scores divided by √d (the scaled dot product of the matrix form)."""
    return _step_ref(s_t / math.sqrt(H.shape[-1]), H, lengths)


def _decoder_causal(S, H, lengths):
    """A causal (look-ahead) mask on top of the padding: step t sees source positions 0..t only."""
    scores = S @ H.transpose(1, 2)
    T, N = scores.shape[-2:]
    keep = padding_mask(lengths, N) & torch.ones(T, N, dtype=torch.bool).tril()
    alpha = softmax(scores, dim=-1, mask=keep)
    return alpha @ H, alpha


SCALED_LUONG = (
    "you divided the scores by √d: this task's scores are Luong's plain dot products e^t_i = s_t · h_i, "
    "without scaling (the scaled score belongs to the matrix form of a later chapter)"
)


def _plain_average_valid(s_t, H, lengths):
    mask = padding_mask(lengths, H.shape[1]).squeeze(1).to(H.dtype)  # (B, N)
    alpha_t = mask / mask.sum(-1, keepdim=True).clamp(min=1)
    return (alpha_t.unsqueeze(-1) * H).sum(1), alpha_t


def _plain_average_all(s_t, H, lengths):
    alpha_t = torch.full(H.shape[:2], 1.0 / H.shape[1], dtype=H.dtype)
    return H.mean(1), alpha_t


PADDING_NOT_MASKED = (
    "padding is not masked: source positions at index ≥ lengths[b] are padding and must "
    "get weight exactly 0 (removed before the softmax)"
)


def _length_mask_shifted(lengths, N, shift):
    """(B, N): positions < lengths + shift (a mask off by one in either direction)."""
    return torch.arange(N)[None, :] < (lengths[:, None] + shift)


OFF_BY_ONE_MORE = (
    "your mask keeps one padded position too many: with length n the real positions are 0 .. n-1, so "
    "compare positions < length (not <=)"
)
OFF_BY_ONE_LESS = (
    "your mask removes one real position: with length n the real positions are 0 .. n-1, all n of "
    "them, so compare positions < length (not < length - 1)"
)


def _step_off_by(shift):
    def fn(s_t, H, lengths):
        scores = (H @ s_t.unsqueeze(-1)).squeeze(-1)
        alpha_t = softmax(scores, mask=_length_mask_shifted(lengths, H.shape[1], shift))
        return (alpha_t.unsqueeze(-1) * H).sum(dim=1), alpha_t

    return fn


def _dec_off_by(shift):
    def fn(S, H, lengths):
        mask = _length_mask_shifted(lengths, H.shape[1], shift)[:, None, :]
        alpha = softmax(S @ H.transpose(1, 2), mask=mask)
        return alpha @ H, alpha

    return fn


ONE_LENGTH_FOR_ALL = (
    "you masked every sentence of the batch with one and the same length (the first sentence's, the "
    "longest or the shortest): each sentence b has its own number of real source words, lengths[b], "
    "so a shorter sentence kept padding or a longer one lost real words"
)


def _step_one_length(pick):
    """The padding mask built from a single length (``pick(lengths)``) for every sentence."""

    def fn(s_t, H, lengths):
        if lengths.numel() == 0:
            return _step_ref(s_t, H, lengths)
        one = pick(lengths).expand_as(lengths)
        scores = (H @ s_t.unsqueeze(-1)).squeeze(-1)
        alpha_t = softmax(scores, mask=_length_mask_shifted(one, H.shape[1], 0))
        return (alpha_t.unsqueeze(-1) * H).sum(dim=1), alpha_t

    return fn


STEP_MISCONCEPTIONS = [
    Misconception("scaled", SCALED_LUONG, _step_scaled),
    # first: where a padded score is huge it gives zeros, like a mask applied after the softmax
    Misconception(
        "max_includes_masked",
        "you subtracted a maximum that includes the padded scores: when a padded position holds a huge "
        "score every real exp underflows to 0. Remove the padding first, then take the maximum",
        _step_with(
            lambda e, m: (
                lambda x: (
                    x
                    / torch.where(
                        x.sum(-1, keepdim=True) > 0, x.sum(-1, keepdim=True), torch.ones_like(x[..., :1])
                    )
                )
            )(torch.exp(e - e.amax(-1, keepdim=True)) * m)
        ),
    ),
    Misconception("padding_not_masked", PADDING_NOT_MASKED, _step_with(lambda e, m: softmax(e))),
    Misconception(
        "mask_after_softmax",
        "you applied the padding mask after the softmax, so the weights of a padded sentence no longer "
        "sum to 1: remove the padded positions from the scores before the softmax",
        _step_with(lambda e, m: softmax(e) * m),
    ),
    Misconception(
        "softmax_over_batch",
        "your softmax runs over the batch axis (the first one): alpha_t has shape (B, N) and each "
        "sentence's weights must sum to 1 over its own N source positions (the last axis)",
        _step_with(lambda e, m: softmax(e, dim=0, mask=m)),
    ),
    Misconception(
        "plain_average",
        "you averaged the encoder states instead of attending: the weights must "
        "come from the scores s_t · h_i, so they change with the decoder state",
        _plain_average_valid,
    ),
    Misconception(
        "plain_average",
        "you averaged the encoder states instead of attending: the weights must "
        "come from the scores s_t · h_i, so they change with the decoder state",
        _plain_average_all,
    ),
    Misconception(
        "swapped_outputs",
        "you returned (alpha_t, a_t): the book returns PyTorch's order, (output, weights): the attention "
        "value a_t (B, d) first, then the weights alpha_t (B, N). Keep α (weights) and a (value) apart",
        lambda s_t, H, lengths: tuple(reversed(_step_ref(s_t, H, lengths))),
    ),
    Misconception(
        "mixes_batch_items",
        "you multiplied the weights (B, N) with H (B, N, d) as matrices: that pairs every sentence's "
        "weights with every sentence's states, shape (B, B, d). Each sentence's weights must meet only "
        "its own states",
        _step_with(lambda e, m: softmax(e, mask=m), lambda alpha_t, H: alpha_t @ H),
        hint="(alpha_t.unsqueeze(1) @ H).squeeze(1), or (alpha_t.unsqueeze(-1) * H).sum(1).",
    ),
    Misconception(
        "first_sentence_states",
        "every sentence used the encoder states of the first sentence of the batch: each sentence's "
        "query meets its own states H[b]",
        lambda s_t, H, lengths: _step_ref(s_t, H[:1].expand_as(H), lengths),
    ),
    Misconception(
        "nan_fully_masked",
        "a sentence of length 0 came out NaN (the softmax of a row of -inf is 0/0): with no source word, "
        "its weights and its attention value must be zeros",
        _step_with(lambda e, m: torch.softmax(e.masked_fill(~m, float("-inf")), dim=-1)),
    ),
    Misconception(
        "large_negative_fill",
        "a sentence of length 0 gets uniform weights over its padding, and an attention value made of "
        "padding, instead of zeros: a padded position never gets weight, not even when the whole sentence "
        "is padding (a large negative fill such as -1e9 instead of -inf gives this, and so does replacing "
        "the NaN of such a row by 1/N)",
        _step_with(lambda e, m: torch.softmax(e.masked_fill(~m, -1e9), dim=-1)),
    ),
    Misconception(
        "overflow",
        "your softmax overflows on large scores (exp(1000) is inf, inf/inf is NaN): shift by the maximum "
        "of the kept scores first",
        _step_with(lambda e, m: (lambda x: x / x.sum(-1, keepdim=True))(torch.exp(e) * m)),
    ),
    Misconception("off_by_one", OFF_BY_ONE_MORE, _step_off_by(1)),
    Misconception("off_by_one", OFF_BY_ONE_LESS, _step_off_by(-1)),
    Misconception("one_length_for_all", ONE_LENGTH_FOR_ALL, _step_one_length(lambda lengths: lengths[0])),
    Misconception("one_length_for_all", ONE_LENGTH_FOR_ALL, _step_one_length(lambda lengths: lengths.max())),
    Misconception("one_length_for_all", ONE_LENGTH_FOR_ALL, _step_one_length(lambda lengths: lengths.min())),
    Misconception("one_length_for_all", ONE_LENGTH_FOR_ALL, _step_one_length(lambda lengths: lengths[-1])),
]

register(
    Task(
        id="06.attention_step",
        title="one decoder step of attention, with padding",
        points=3,
        reference=_step_ref,
        cases=_step_cases,
        output_names=("a_t", "alpha_t"),
        misconceptions=STEP_MISCONCEPTIONS,
        properties=[
            _padding_gets_weight,
            _sums_to_one_over(lambda case: case.args[1].shape[1]),
            _value_not_from_own_weights,
        ],
        hint="scores (B, N) = (H @ s_t.unsqueeze(-1)).squeeze(-1); remove positions ≥ lengths; softmax over "
        "the last axis (the book's softmax(scores, mask=...) gives zeros for a sentence without words); "
        "a_t = Σ_i alpha_t[:, i] · H[:, i].",
        forbidden=BOOK_VALUE,
        shortcut_example=_book.scaled_dot_product_attention,
        **TOL,
    )
)

# --------------------------------------------------------------------------------------------- 06.decoder_attention


def _decoder_ref(S, H, lengths):
    scores = S @ H.transpose(1, 2)  # (B, T, N)
    alpha = _masked_weights(scores, lengths)
    return alpha @ H, alpha  # (B, T, d), (B, T, N)


def _decoder_cases():
    g = generator(63)
    return [
        Case(
            "B=2, T=3, N=5, d=4, lengths 5, 3",
            (randn(g, 2, 3, 4), randn(g, 2, 5, 4), torch.tensor([5, 3])),
            dims={"B": 2, "T": 3, "N": 5, "d": 4},
        ),
        Case(
            "B=3, T=4, N=6, d=2, lengths 6, 4, 1",
            (randn(g, 3, 4, 2), randn(g, 3, 6, 2), torch.tensor([6, 4, 1])),
            dims={"B": 3, "T": 4, "N": 6, "d": 2},
        ),
        Case(
            "B=2, T=2, N=3, d=7, large scores",
            (randn(g, 2, 2, 7, scale=15.0), randn(g, 2, 3, 7, scale=15.0), torch.tensor([3, 2])),
            dims={"B": 2, "T": 2, "N": 3, "d": 7},
            note="scores in the hundreds",
        ),
        Case(
            "B=1, T=3, N=4, d=4, worked example",
            (wx.decoder_states()[None], wx.encoder_states()[None], torch.tensor([4])),
            dims={"T": 3, "N": 4, "d": 4},
            note="'i am a student' → 'je suis étudiant'",
        ),
        Case(
            "B=3, T=2, N=4, d=5, a length of 0",
            (randn(g, 3, 2, 5), randn(g, 3, 4, 5), torch.tensor([2, 0, 4])),
            dims={"B": 3, "T": 2, "N": 4, "d": 5},
            note="item 1 has no source word: its a and alpha are zeros",
        ),
    ]


def _static(pick):
    """Weights computed once, from one query (or a summary of the queries), reused at every step."""

    def fn(S, H, lengths):
        q = pick(S)  # (B, d)
        alpha_one = _masked_weights((q.unsqueeze(1) @ H.transpose(1, 2)), lengths)  # (B, 1, N)
        alpha = alpha_one.expand(S.shape[0], S.shape[1], H.shape[1])
        return alpha @ H, alpha

    return fn


def _dec_with(weights_fn):
    def fn(S, H, lengths):
        alpha = weights_fn(S, H, lengths)
        return alpha @ H, alpha

    return fn


STATIC = (
    "your attention is static: every decoder step got the same weights, computed once from {which}. "
    "Attention is computed again at every step t with that step's own query s_t (one row of S per step)"
)

register(
    Task(
        id="06.decoder_attention",
        title="attention at every decoder step",
        points=3,
        reference=_decoder_ref,
        cases=_decoder_cases,
        output_names=("a", "alpha"),
        misconceptions=[
            Misconception(
                "static_query", STATIC.format(which="the first decoder state s_1"), _static(lambda S: S[:, 0])
            ),
            Misconception(
                "static_query", STATIC.format(which="the last decoder state s_T"), _static(lambda S: S[:, -1])
            ),
            Misconception(
                "static_query",
                STATIC.format(which="the mean of the decoder states"),
                _static(lambda S: S.mean(1)),
            ),
            Misconception("off_by_one", OFF_BY_ONE_MORE, _dec_off_by(1)),
            Misconception("off_by_one", OFF_BY_ONE_LESS, _dec_off_by(-1)),
            Misconception(
                "causal_mask",
                "you applied a causal (look-ahead) mask: decoder step t may attend to every real source "
                "position, not only to positions ≤ t. The source is all there from the start; a causal mask "
                "belongs to a decoder's attention over its own earlier outputs",
                _decoder_causal,
            ),
            Misconception(
                "previous_state_query",
                "step t used the previous state s_{t-1} as its query (Bahdanau's order): in this book's (Luong's) "
                "attention, step t queries with its own state s_t, row t of S",
                lambda S, H, lengths: _decoder_ref(
                    torch.cat([torch.zeros_like(S[:, :1]), S[:, :-1]], dim=1), H, lengths
                ),
            ),
            Misconception(
                "reshape_not_transpose",
                "you turned H (B, N, d) into (B, d, N) with reshape/view: that only regroups the numbers in "
                "memory order and mixes positions with components; the axes must be swapped (transposed)",
                _dec_with(
                    lambda S, H, lengths: _masked_weights(
                        S @ H.reshape(H.shape[0], H.shape[2], H.shape[1]), lengths
                    )
                ),
            ),
            Misconception(
                "padding_not_masked",
                PADDING_NOT_MASKED,
                _dec_with(lambda S, H, lengths: softmax(S @ H.transpose(1, 2))),
            ),
            Misconception(
                "wrong_axis",
                "your weights sum to 1 over the decoder steps, not over the source positions: the softmax "
                "runs over the last axis (N)",
                _dec_with(
                    lambda S, H, lengths: softmax(
                        S @ H.transpose(1, 2), dim=-2, mask=padding_mask(lengths, H.shape[1])
                    )
                ),
            ),
            Misconception(
                "wrong_axis",
                "your weights sum to 1 over the decoder steps, not over the source positions (and a padded "
                "position, -inf at every step, becomes NaN): the softmax runs over the last axis (N)",
                _dec_with(
                    lambda S, H, lengths: torch.softmax(
                        (S @ H.transpose(1, 2)).masked_fill(
                            ~padding_mask(lengths, H.shape[1]), float("-inf")
                        ),
                        dim=-2,
                    )
                ),
            ),
            Misconception(
                "softmax_over_batch",
                "your weights sum to 1 over the batch axis: each sentence's weights are normalised over its "
                "own source positions (the last axis)",
                _dec_with(
                    lambda S, H, lengths: softmax(
                        S @ H.transpose(1, 2), dim=0, mask=padding_mask(lengths, H.shape[1])
                    )
                ),
            ),
            Misconception(
                "swapped_outputs",
                "you returned (alpha, a): the book returns PyTorch's order, (output, weights): the attention "
                "values a (B, T, d) first, then the weights alpha (B, T, N)",
                lambda S, H, lengths: tuple(reversed(_decoder_ref(S, H, lengths))),
            ),
            Misconception(
                "nan_fully_masked",
                "a sentence of length 0 came out NaN (the softmax of a row of -inf is 0/0): with no source "
                "word, its weights and attention values must be zeros",
                _dec_with(
                    lambda S, H, lengths: torch.softmax(
                        (S @ H.transpose(1, 2)).masked_fill(
                            ~padding_mask(lengths, H.shape[1]), float("-inf")
                        ),
                        dim=-1,
                    )
                ),
            ),
            Misconception(
                "large_negative_fill",
                "a sentence of length 0 gets uniform weights over its padding instead of zeros: a padded "
                "position never gets weight, not even when the whole sentence is padding (a large negative "
                "fill such as -1e9 instead of -inf gives this, and so does replacing the NaN of such a row by "
                "1/N)",
                _dec_with(
                    lambda S, H, lengths: torch.softmax(
                        (S @ H.transpose(1, 2)).masked_fill(~padding_mask(lengths, H.shape[1]), -1e9), dim=-1
                    )
                ),
            ),
        ],
        properties=[
            _padding_gets_weight,
            _sums_to_one_over(lambda case: case.args[1].shape[1]),
            _value_not_from_own_weights,
        ],
        hint="All steps at once: scores = S @ H.transpose(1, 2) (B, T, N); remove padded positions; softmax "
        "over the last axis; a = alpha @ H; return (a, alpha).",
        forbidden=BOOK_VALUE,
        shortcut_example=_book.scaled_dot_product_attention,
        **TOL,
    )
)

# --------------------------------------------------------------------------------------------- 06.luong_output


def _output_ref(a_t, s_t, W_c, b_c, W_y, b_y):
    u_t = torch.cat([a_t, s_t], dim=-1)  # (B, 2d)
    s_tilde = torch.tanh(u_t @ W_c.T + b_c)  # (B, d)
    return softmax(s_tilde @ W_y.T + b_y)  # (B, n_vocab)


def _output_cases():
    g = generator(64)
    P = wx.output_layer()
    H, S = wx.encoder_states(), wx.decoder_states()
    A = softmax(S @ H.T) @ H  # (3, 4): a_1, a_2, a_3

    def params(d, V, scale_y=1.0):
        return randn(g, d, 2 * d), randn(g, d), randn(g, V, d, scale=scale_y), randn(g, V)

    return [
        Case(
            "B=2, d=5, n_vocab=5",
            (randn(g, 2, 5, scale=2.0), randn(g, 2, 5, scale=2.0), *params(5, 5)),
            dims={"B": 2, "d": 5},
            note="as many words as components: b_c and b_y have the same shape",
        ),
        Case(
            "B=2, d=3, n_vocab=5",
            (randn(g, 2, 3), randn(g, 2, 3), *params(3, 5)),
            dims={"B": 2, "d": 3, "n_vocab": 5},
        ),
        Case(
            "B=3, d=4, n_vocab=7",
            (randn(g, 3, 4), randn(g, 3, 4), *params(4, 7)),
            dims={"B": 3, "d": 4, "n_vocab": 7},
        ),
        Case(
            "B=3, d=4, n_vocab=5, worked example",
            (A, S, P["W_c"], P["b_c"], P["W_y"], P["b_y"]),
            dims={"B": 3, "d": 4, "n_vocab": 5},
            note="the three steps of 'je suis étudiant'",
        ),
        Case(
            "B=2, d=2, n_vocab=6, large logits",
            (randn(g, 2, 2), randn(g, 2, 2), *params(2, 6, scale_y=600.0)),
            dims={"B": 2, "d": 2, "n_vocab": 6},
            note="logits in the hundreds: exp overflows without the max trick",
        ),
    ]


def _output_with(order="as", act=torch.tanh, use_b_c=True, use_b_y=True, final=softmax, swap_b=False):
    def fn(a_t, s_t, W_c, b_c, W_y, b_y):
        first, second = (b_y, b_c) if swap_b else (b_c, b_y)
        u_t = torch.cat([a_t, s_t] if order == "as" else [s_t, a_t], dim=-1)
        s_tilde = act(u_t @ W_c.T + (first if use_b_c else 0))
        return final(s_tilde @ W_y.T + (second if use_b_y else 0))

    return fn


register(
    Task(
        id="06.luong_output",
        title="the output step: from [a_t; s_t] to a distribution over words",
        points=3,
        reference=_output_ref,
        cases=_output_cases,
        misconceptions=[
            Misconception(
                "wrong_concat_order",
                "you concatenated [s_t; a_t]; the attention value comes first: u_t = [a_t; s_t] (W_c's first d "
                "columns read a_t, its last d columns read s_t)",
                _output_with(order="sa"),
            ),
            Misconception(
                "missing_tanh",
                "you left out the tanh: s̃_t = tanh(W_c u_t + b_c)",
                _output_with(act=lambda x: x),
            ),
            Misconception(
                "relu_not_tanh",
                "you used ReLU where Luong's output step has tanh: s̃_t = tanh(W_c u_t + b_c)",
                _output_with(act=torch.relu),
            ),
            Misconception(
                "sigmoid_not_tanh",
                "you used a sigmoid where Luong's output step has tanh: s̃_t = tanh(W_c u_t + b_c)",
                _output_with(act=torch.sigmoid),
            ),
            Misconception(
                "returned_logits",
                "you returned the logits W_y s̃_t + b_y; ŷ_t is their softmax, "
                "a probability distribution over the vocabulary",
                _output_with(final=lambda x: x),
            ),
            Misconception(
                "log_softmax",
                "you returned log-probabilities (a log-softmax); ŷ_t is the probability distribution itself",
                _output_with(final=lambda x: torch.log_softmax(x, -1)),
            ),
            Misconception(
                "sigmoid",
                "you used a sigmoid on the logits: ŷ_t must be a distribution over the "
                "vocabulary (a softmax), summing to 1",
                _output_with(final=torch.sigmoid),
            ),
            Misconception(
                "softmax_over_batch",
                "your softmax runs over the batch axis (the first one); ŷ_t is "
                "a distribution over the vocabulary, the last axis",
                _output_with(final=lambda x: softmax(x, dim=0)),
            ),
            Misconception(
                "swapped_biases",
                "you swapped the biases: b_c belongs inside the tanh, "
                "s̃_t = tanh(W_c u_t + b_c), and b_y to the logits, W_y s̃_t + b_y",
                _output_with(swap_b=True),
            ),
            Misconception(
                "missing_b_c",
                "you left out the bias b_c: s̃_t = tanh(W_c u_t + b_c)",
                _output_with(use_b_c=False),
            ),
            Misconception(
                "missing_b_y",
                "you left out the bias b_y: ŷ_t = softmax(W_y s̃_t + b_y)",
                _output_with(use_b_y=False),
            ),
            Misconception(
                "overflow",
                "your softmax overflows on large logits (exp(1000) is inf): shift by the maximum first",
                _output_with(final=_naive_softmax),
            ),
            Misconception(
                "softmax_twice",
                "you applied the softmax twice: ŷ_t is already a distribution over the vocabulary after one "
                "softmax of the logits, and a second one flattens it towards the uniform distribution",
                _output_with(final=lambda x: softmax(softmax(x))),
            ),
            Misconception(
                "bias_after_tanh",
                "you added b_c after the tanh; it belongs inside: s̃_t = tanh(W_c u_t + b_c)",
                lambda a_t, s_t, W_c, b_c, W_y, b_y: softmax(
                    (torch.tanh(torch.cat([a_t, s_t], dim=-1) @ W_c.T) + b_c) @ W_y.T + b_y
                ),
            ),
            Misconception(
                "sum_not_concat",
                "you added a_t and s_t instead of concatenating them: u_t = [a_t; s_t] has 2d entries, and "
                "W_c (d, 2d) reads a_t with its first d columns and s_t with its last d",
                lambda a_t, s_t, W_c, b_c, W_y, b_y: softmax(
                    torch.tanh((a_t + s_t) @ W_c[:, : a_t.shape[-1]].T + b_c) @ W_y.T + b_y
                ),
            ),
        ],
        properties=[
            _sums_to_one_over(
                lambda case: case.args[4].shape[0],
                "your probabilities for one sentence do not sum to 1 over the vocabulary",
                index=0,
            )
        ],
        hint="u_t = torch.cat([a_t, s_t], dim=-1) (B, 2d); s̃_t = tanh(u_t @ W_c.T + b_c) (B, d); "
        "ŷ_t = softmax(s̃_t @ W_y.T + b_y, dim=-1) (B, n_vocab).",
        **TOL,
    )
)

# --------------------------------------------------------------------------------------------- 06.hand_attention_value

#: the weights of the by-hand task (not the worked example's); with the worked example's H
HAND_WEIGHTS = (0.1, 0.6, 0.3, 0.0)


def _hand_w():
    return torch.tensor(HAND_WEIGHTS, dtype=DTYPE)


def _as_list(x):
    return [float(v) for v in x]


def _hand_pairing(case, outputs):
    """The given weights, each paired with another state than its own (reversed or another order)."""
    got = outputs[0]
    if not isinstance(got, (list, tuple)) or len(got) != wx.encoder_states().shape[1]:
        return None
    try:
        g = torch.tensor([float(v) for v in got], dtype=DTYPE)
    except (TypeError, ValueError):
        return None
    H, w = wx.encoder_states(), _hand_w()
    if torch.allclose(g, w.flip(0) @ H, atol=1e-3, rtol=0.0):
        return (
            "you paired the weights with the states in reverse order: α_1 goes with h_1, α_2 with h_2, and "
            "so on, each weight with the state of its own position"
        )
    right = w @ H
    for perm in itertools.permutations(range(len(HAND_WEIGHTS))):
        other = w[list(perm)] @ H
        if not torch.allclose(other, right, atol=1e-3, rtol=0.0) and torch.allclose(
            g, other, atol=1e-3, rtol=0.0
        ):
            return (
                "you paired the weights with the wrong states: α_i goes with h_i, each weight with the "
                "state of its own position"
            )
    return None


_hand_pairing.key = "wrong_pairing"


register(
    Task(
        id="06.hand_attention_value",
        title="an attention value, by hand",
        points=1,
        reference=lambda: _as_list(_hand_w() @ wx.encoder_states()),
        cases=lambda: [Case("weights [0.1, 0.6, 0.3, 0] and the worked example's H", ())],
        misconceptions=[
            Misconception(
                "returned_weights",
                "those are the weights, not the attention value: the attention "
                "value is the weighted sum Σ_i α_i h_i, a vector of d = 4 numbers",
                lambda: _as_list(_hand_w()),
            ),
            Misconception(
                "columns_not_rows",
                "you weighted the columns of H, not its rows: the attention value "
                "adds up the encoder states h_i (the rows), each times its weight",
                lambda: _as_list(wx.encoder_states() @ _hand_w()),
            ),
            Misconception(
                "not_summed",
                "you weighted each encoder state but did not add them up: your answer is the table of the "
                "four α_i h_i, and the attention value is their sum Σ_i α_i h_i, one vector of d = 4 numbers",
                lambda: [_as_list(row) for row in _hand_w()[:, None] * wx.encoder_states()],
            ),
            Misconception(
                "plain_average",
                "that is the plain average of h_1..h_4; attention weights each h_i by α_i",
                lambda: _as_list(wx.encoder_states().mean(0)),
            ),
            Misconception(
                "unweighted_sum",
                "that is the sum of h_1..h_4 without weights: multiply each h_i by its weight first",
                lambda: _as_list(wx.encoder_states().sum(0)),
            ),
            Misconception(
                "hard_attention",
                "that is the single state with the largest weight: attention mixes "
                "all the states, each times its weight",
                lambda: _as_list(wx.encoder_states()[1]),
            ),
            Misconception(
                "weighted_by_scores",
                "you weighted the states with other numbers than the given weights "
                "(scores?): use α = [0.1, 0.6, 0.3, 0]",
                lambda: _as_list(torch.tensor([1.0, 3.0, -1.0, 2.0], dtype=DTYPE) @ wx.encoder_states()),
            ),
            Misconception(
                "worked_example_a3",
                "that is the worked example's a_3; this task has its own weights [0.1, 0.6, 0.3, 0]",
                lambda: _as_list(softmax(wx.encoder_states() @ wx.decoder_states()[2]) @ wx.encoder_states()),
            ),
        ],
        properties=[_hand_pairing],
        atol=1e-3,
        rtol=0.0,
        check_grad=False,
        hint="a = 0.1·h_1 + 0.6·h_2 + 0.3·h_3 + 0·h_4, component by component.",
        answer_words="the d = 4 components of the attention value a",
        forbidden=BOOK_VALUE,
        shortcut_example=functools.partial(_book.attention_value, _hand_w(), wx.encoder_states()),
    )
)
