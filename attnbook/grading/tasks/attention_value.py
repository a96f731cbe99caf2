"""Set 06, the attention value ``a_t = sum_i alpha^t_i h_i`` and the Luong output step.

Tasks go from the weighted sum alone, through full dot-product attention with keys different from the
values, to one decoder step with padding, every decoder step at once, and the output layer
``y_hat_t = softmax(W_y tanh(W_c [a_t; s_t] + b_c) + b_y)``.
"""

from __future__ import annotations

import math

import torch

from ... import worked_example as wx
from ...attention import padding_mask, softmax
from ..cases import DTYPE, generator, randn
from ..engine import Case, Misconception, Task
from ..registry import register


def _weights(gen, *shape, scale=2.0):
    return softmax(randn(gen, *shape, scale=scale))


def _masked_weights(scores, lengths):
    """Softmax over the keys of ``scores (B, T_q, T_k)`` with keys ``>= lengths[b]`` removed."""
    return softmax(scores, dim=-1, mask=padding_mask(lengths, scores.shape[-1]))


def _naive_softmax(x, dim=-1):
    e = torch.exp(x)
    return e / e.sum(dim=dim, keepdim=True)


# --------------------------------------------------------------------------------------------- properties


def _sums_to_one_over(n_keys, what="your weights for one query do not sum to 1 over the source positions"):
    """Property: ``alpha`` (the first output) sums to 1 (or to 0 for an empty row) over its last axis, which
    must have ``n_keys(case)`` entries (otherwise the shape check speaks instead)."""

    def prop(case, outputs):
        return _sums_to_one(case, outputs, n_keys(case), what)

    prop.key = "not_normalised"
    return prop


def _sums_to_one(case, outputs, n, what):
    alpha = outputs[0]
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
    alpha = outputs[0]
    H = case.args[1]
    B, N = H.shape[0], H.shape[1]
    if not isinstance(alpha, torch.Tensor) or alpha.shape[0] != B or alpha.shape[-1] != N:
        return None
    pad = ~(torch.arange(N)[None, :] < lengths[:, None])  # (B, N)
    pad = pad.view(B, *([1] * (alpha.dim() - 2)), N).expand_as(alpha)
    if (alpha[pad].abs() > 1e-12).any():
        return ("padded source positions (index ≥ lengths[b]) got a non-zero weight: mask them with -inf "
                "before the softmax")
    return None


_padding_gets_weight.key = "padding_not_masked"


def _value_not_from_own_weights(case, outputs):
    """``a`` should be the weighted sum of ``H`` with the learner's own ``alpha``."""
    if len(outputs) != 2:
        return None
    alpha, a = outputs
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
        return ("your a_t is not the weighted sum of the encoder states with your own alpha_t: "
                "a_t = Σ_i alpha_t[i] · h_i")
    return None


_value_not_from_own_weights.key = "value_not_weighted_sum"

# --------------------------------------------------------------------------------------------- 06.attention_value


def _value_ref(weights, values):
    return weights @ values


def _value_cases():
    g = generator(60)
    one_hot = torch.nn.functional.one_hot(torch.tensor([[2, 0, 4], [1, 1, 3]]), 5).to(DTYPE)
    masked = _masked_weights(randn(g, 3, 2, 6), torch.tensor([6, 2, 4]))
    return [
        Case("B=2, T_q=T_k=4, d_v=3", (_weights(g, 2, 4, 4), randn(g, 2, 4, 3)),
             dims={"B": 2, "T": 4, "d_v": 3}, note="T_q = T_k, as in self-attention"),
        Case("B=2, T_q=3, T_k=5, d_v=4", (_weights(g, 2, 3, 5), randn(g, 2, 5, 4, scale=3.0)),
             dims={"B": 2, "T_q": 3, "T_k": 5, "d_v": 4}),
        Case("B=3, T_q=2, T_k=6, d_v=7, padded weights", (masked, randn(g, 3, 6, 7)),
             dims={"B": 3, "T_q": 2, "T_k": 6, "d_v": 7}, note="some weights are exactly 0"),
        Case("B=2, T_q=3, T_k=5, d_v=2, one-hot weights", (one_hot, randn(g, 2, 5, 2)),
             dims={"B": 2, "T_q": 3, "T_k": 5, "d_v": 2}, note="each query picks exactly one value"),
        Case("B=1, T_q=1, T_k=4, d_v=4, worked example t=3",
             (softmax(wx.encoder_states() @ wx.decoder_states()[2])[None, None], wx.encoder_states()[None]),
             dims={"T_k": 4, "d_v": 4}, note="alpha^3 and H"),
    ]


def _plain_average_keepdim(weights, values):
    return values.mean(dim=-2, keepdim=True).expand(*values.shape[:-2], weights.shape[-2], values.shape[-1])


PLAIN_AVERAGE = "you took a plain average of the values: attention weights each value by its own α_i " \
                "(a = Σ_i α_i v_i), so values with a large weight count more"

register(Task(
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
            "you used the weights transposed (rows as keys): row q of the weights (one query) must meet "
            "the values, a = weights @ values with weights (B, T_q, T_k)",
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
                *values.shape[:-2], weights.shape[-2], values.shape[-1]),
        ),
    ],
    hint="For each query q: a[q] = Σ_i weights[q, i] · values[i]; with batches, weights @ values.",
))

# --------------------------------------------------------------------------------------------- 06.dot_product_attention


def _dpa_ref(Q, K, V):
    alpha = softmax(Q @ K.transpose(-1, -2))  # (B, T_q, T_k)
    return alpha, alpha @ V  # (B, T_q, T_k), (B, T_q, d_v)


def _dpa_cases():
    g = generator(61)
    return [
        Case("B=2, T_q=3, T_k=5, d_k=4, d_v=6", (randn(g, 2, 3, 4), randn(g, 2, 5, 4), randn(g, 2, 5, 6)),
             dims={"B": 2, "T_q": 3, "T_k": 5, "d_k": 4, "d_v": 6}),
        Case("B=3, T_q=2, T_k=4, d_k=d_v=5, K ≠ V", (randn(g, 3, 2, 5), randn(g, 3, 4, 5), randn(g, 3, 4, 5)),
             dims={"B": 3, "T_q": 2, "T_k": 4, "d": 5}, note="keys and values have the same size but differ"),
        Case("B=2, T_q=4, T_k=3, d_k=7, d_v=2, large scores",
             (randn(g, 2, 4, 7, scale=12.0), randn(g, 2, 3, 7, scale=12.0), randn(g, 2, 3, 2)),
             dims={"B": 2, "T_q": 4, "T_k": 3, "d_k": 7, "d_v": 2}, note="scores in the hundreds and thousands"),
        Case("B=1, T_q=3, T_k=4, d=4, worked example (K = V = H)",
             (wx.decoder_states()[None], wx.encoder_states()[None], wx.encoder_states()[None]),
             dims={"T_q": 3, "T_k": 4, "d": 4}, note="all three decoder steps"),
    ]


register(Task(
    id="06.dot_product_attention",
    title="dot-product attention with separate keys and values",
    points=3,
    reference=_dpa_ref,
    cases=_dpa_cases,
    output_names=("alpha", "a"),
    misconceptions=[
        Misconception(
            "value_from_keys",
            "your attention value is a weighted sum of the keys K; the weights score the keys but "
            "average the values: a = alpha @ V",
            lambda Q, K, V: (lambda al: (al, al @ K))(softmax(Q @ K.transpose(-1, -2))),
        ),
        Misconception(
            "swapped_outputs",
            "you returned (a, alpha) in the wrong order: return the weights alpha first, then the "
            "attention value a",
            lambda Q, K, V: tuple(reversed(_dpa_ref(Q, K, V))),
        ),
        Misconception(
            "wrong_axis",
            "your weights sum to 1 over queries, not keys: take the softmax over the last axis (dim=-1)",
            lambda Q, K, V: (lambda al: (al, al @ V))(softmax(Q @ K.transpose(-1, -2), dim=-2)),
        ),
        Misconception(
            "scaled",
            "you divided the scores by √d_k: this task asks for Luong's plain dot product, "
            "softmax(Q Kᵀ) V, without scaling",
            lambda Q, K, V: (lambda al: (al, al @ V))(softmax(Q @ K.transpose(-1, -2) / math.sqrt(Q.shape[-1]))),
        ),
        Misconception(
            "no_softmax",
            "you used the raw scores as weights: the weights are softmax(Q Kᵀ), non-negative and summing "
            "to 1 over the keys",
            lambda Q, K, V: (lambda e: (e, e @ V))(Q @ K.transpose(-1, -2)),
        ),
        Misconception(
            "overflow",
            "your softmax overflows on large scores (exp of a score in the thousands is inf, inf/inf is "
            "NaN): subtract each row's maximum first, or use torch.softmax",
            lambda Q, K, V: (lambda al: (al, al @ V))(_naive_softmax(Q @ K.transpose(-1, -2))),
        ),
    ],
    properties=[_sums_to_one_over(lambda case: case.args[1].shape[-2])],
    hint="alpha = softmax(Q @ K.transpose(-1, -2), dim=-1); a = alpha @ V.",
))

# --------------------------------------------------------------------------------------------- 06.attention_step


def _step_ref(s_t, H, lengths):
    scores = (H @ s_t.unsqueeze(-1)).squeeze(-1)  # (B, N): e^t_i = s_t · h_i
    alpha_t = softmax(scores, dim=-1, mask=padding_mask(lengths, H.shape[1]).squeeze(1))
    a_t = (alpha_t.unsqueeze(-1) * H).sum(dim=1)  # (B, d)
    return alpha_t, a_t


def _step_cases():
    g = generator(62)
    H_wx, s_wx = wx.encoder_states(), wx.decoder_states()
    return [
        Case("B=3, N=5, d=4, lengths 5, 2, 4", (randn(g, 3, 4), randn(g, 3, 5, 4), torch.tensor([5, 2, 4])),
             dims={"B": 3, "N": 5, "d": 4}),
        Case("B=2, N=3, d=6, lengths 1, 3", (randn(g, 2, 6), randn(g, 2, 3, 6), torch.tensor([1, 3])),
             dims={"B": 2, "N": 3, "d": 6}),
        Case("B=4, N=6, d=2, large scores", (randn(g, 4, 2, scale=30.0), randn(g, 4, 6, 2, scale=30.0),
                                             torch.tensor([6, 3, 5, 2])),
             dims={"B": 4, "N": 6, "d": 2}, note="scores in the hundreds and thousands"),
        Case("B=3, N=4, d=5, a length of 0", (randn(g, 3, 5), randn(g, 3, 4, 5), torch.tensor([4, 0, 3])),
             dims={"B": 3, "N": 4, "d": 5}, note="item 1 has no source word: alpha_t and a_t are zeros"),
        Case("B=3, N=4, d=4, worked example", (s_wx, H_wx.expand(3, 4, 4).clone(), torch.tensor([4, 4, 4])),
             dims={"B": 3, "N": 4, "d": 4}, note="the three steps of the worked example as a batch"),
    ]


def _step_with(alpha_fn, value_fn=None):
    def fn(s_t, H, lengths):
        scores = (H @ s_t.unsqueeze(-1)).squeeze(-1)
        mask = padding_mask(lengths, H.shape[1]).squeeze(1)  # (B, N)
        alpha_t = alpha_fn(scores, mask)
        a_t = value_fn(alpha_t, H) if value_fn else (alpha_t.unsqueeze(-1) * H).sum(dim=1)
        return alpha_t, a_t
    return fn


def _plain_average_valid(s_t, H, lengths):
    mask = padding_mask(lengths, H.shape[1]).squeeze(1).to(H.dtype)  # (B, N)
    alpha_t = mask / mask.sum(-1, keepdim=True).clamp(min=1)
    return alpha_t, (alpha_t.unsqueeze(-1) * H).sum(1)


def _plain_average_all(s_t, H, lengths):
    alpha_t = torch.full(H.shape[:2], 1.0 / H.shape[1], dtype=H.dtype)
    return alpha_t, H.mean(1)


PADDING_NOT_MASKED = ("padding is not masked: source positions at index ≥ lengths[b] are padding and must "
                      "get weight exactly 0 (fill their scores with -inf before the softmax)")
STEP_MISCONCEPTIONS = [
    Misconception("padding_not_masked", PADDING_NOT_MASKED, _step_with(lambda e, m: softmax(e))),
    Misconception(
        "mask_after_softmax",
        "you applied the padding mask after the softmax, so the weights of a padded sentence no longer "
        "sum to 1: mask the scores (with -inf) before the softmax",
        _step_with(lambda e, m: softmax(e) * m),
    ),
    Misconception(
        "softmax_over_batch",
        "your softmax runs over the batch axis (dim=0): alpha_t has shape (B, N) and each sentence's weights "
        "must sum to 1 over its own N source positions (dim=-1)",
        _step_with(lambda e, m: softmax(e, dim=0, mask=m)),
    ),
    Misconception("plain_average", "you averaged the encoder states instead of attending: the weights must "
                  "come from the scores s_t · h_i, so they change with the decoder state", _plain_average_valid),
    Misconception("plain_average", "you averaged the encoder states instead of attending: the weights must "
                  "come from the scores s_t · h_i, so they change with the decoder state", _plain_average_all),
    Misconception(
        "swapped_outputs",
        "you returned (a_t, alpha_t): the task asks for the weights alpha_t (B, N) first and the attention "
        "value a_t (B, d) second. Keep α (weights) and a (value) apart",
        lambda s_t, H, lengths: tuple(reversed(_step_ref(s_t, H, lengths))),
    ),
    Misconception(
        "mixes_batch_items",
        "alpha_t @ H with alpha_t of shape (B, N) and H of shape (B, N, d) multiplies every sentence's "
        "weights with every sentence's states, shape (B, B, d): use (alpha_t.unsqueeze(1) @ H).squeeze(1) "
        "or (alpha_t.unsqueeze(-1) * H).sum(1)",
        _step_with(lambda e, m: softmax(e, mask=m), lambda alpha_t, H: alpha_t @ H),
    ),
    Misconception(
        "nan_fully_masked",
        "a sentence of length 0 came out NaN (the softmax of a row of -inf is 0/0): its weights and its "
        "attention value must be zeros",
        _step_with(lambda e, m: torch.softmax(e.masked_fill(~m, float("-inf")), dim=-1)),
    ),
    Misconception(
        "overflow",
        "your softmax overflows on large scores (exp(1000) is inf, inf/inf is NaN): subtract the maximum "
        "of the kept scores first, or use torch.softmax on scores filled with -inf",
        _step_with(lambda e, m: (lambda x: x / x.sum(-1, keepdim=True))(torch.exp(e) * m)),
    ),
]

register(Task(
    id="06.attention_step",
    title="one decoder step of attention, with padding",
    points=3,
    reference=_step_ref,
    cases=_step_cases,
    output_names=("alpha_t", "a_t"),
    misconceptions=STEP_MISCONCEPTIONS,
    properties=[_padding_gets_weight, _sums_to_one_over(lambda case: case.args[1].shape[1]),
                _value_not_from_own_weights],
    hint="scores (B, N) = (H @ s_t.unsqueeze(-1)).squeeze(-1); mask positions ≥ lengths; softmax over "
         "dim=-1; a_t = Σ_i alpha_t[:, i] · H[:, i].",
))

# --------------------------------------------------------------------------------------------- 06.decoder_attention


def _decoder_ref(S, H, lengths):
    scores = S @ H.transpose(1, 2)  # (B, T, N)
    alpha = _masked_weights(scores, lengths)
    return alpha, alpha @ H  # (B, T, N), (B, T, d)


def _decoder_cases():
    g = generator(63)
    return [
        Case("B=2, T=3, N=5, d=4, lengths 5, 3", (randn(g, 2, 3, 4), randn(g, 2, 5, 4), torch.tensor([5, 3])),
             dims={"B": 2, "T": 3, "N": 5, "d": 4}),
        Case("B=3, T=4, N=6, d=2, lengths 6, 4, 1", (randn(g, 3, 4, 2), randn(g, 3, 6, 2), torch.tensor([6, 4, 1])),
             dims={"B": 3, "T": 4, "N": 6, "d": 2}),
        Case("B=2, T=2, N=3, d=7, large scores",
             (randn(g, 2, 2, 7, scale=15.0), randn(g, 2, 3, 7, scale=15.0), torch.tensor([3, 2])),
             dims={"B": 2, "T": 2, "N": 3, "d": 7}, note="scores in the hundreds"),
        Case("B=1, T=3, N=4, d=4, worked example",
             (wx.decoder_states()[None], wx.encoder_states()[None], torch.tensor([4])),
             dims={"T": 3, "N": 4, "d": 4}, note="'i am a student' → 'je suis étudiant'"),
    ]


def _static(pick):
    """Weights computed once, from one query (or a summary of the queries), reused at every step."""
    def fn(S, H, lengths):
        q = pick(S)  # (B, d)
        alpha_one = _masked_weights((q.unsqueeze(1) @ H.transpose(1, 2)), lengths)  # (B, 1, N)
        alpha = alpha_one.expand(S.shape[0], S.shape[1], H.shape[1])
        return alpha, alpha @ H
    return fn


STATIC = ("your attention is static: every decoder step got the same weights, computed once from {which}. "
          "Attention is computed again at every step t with that step's own query s_t (one row of S per step)")

register(Task(
    id="06.decoder_attention",
    title="attention at every decoder step",
    points=3,
    reference=_decoder_ref,
    cases=_decoder_cases,
    output_names=("alpha", "a"),
    misconceptions=[
        Misconception("static_query", STATIC.format(which="the first decoder state s_1"), _static(lambda S: S[:, 0])),
        Misconception("static_query", STATIC.format(which="the last decoder state s_T"), _static(lambda S: S[:, -1])),
        Misconception("static_query", STATIC.format(which="the mean of the decoder states"),
                      _static(lambda S: S.mean(1))),
        Misconception(
            "reshape_not_transpose",
            "you turned H (B, N, d) into (B, d, N) with reshape/view: that only regroups the numbers in "
            "memory order and mixes positions with components; swap the axes with H.transpose(1, 2)",
            lambda S, H, lengths: (lambda al: (al, al @ H))(
                _masked_weights(S @ H.reshape(H.shape[0], H.shape[2], H.shape[1]), lengths)),
        ),
        Misconception("padding_not_masked", PADDING_NOT_MASKED,
                      lambda S, H, lengths: (lambda al: (al, al @ H))(softmax(S @ H.transpose(1, 2)))),
        Misconception(
            "wrong_axis",
            "your weights sum to 1 over the decoder steps, not over the source positions: the softmax "
            "runs over the last axis (N)",
            lambda S, H, lengths: (lambda al: (al, al @ H))(softmax(
                S @ H.transpose(1, 2), dim=-2, mask=padding_mask(lengths, H.shape[1]))),
        ),
        Misconception(
            "wrong_axis",
            "your weights sum to 1 over the decoder steps, not over the source positions (and a padded "
            "position, -inf at every step, becomes NaN): the softmax runs over the last axis (N)",
            lambda S, H, lengths: (lambda al: (al, al @ H))(torch.softmax(
                (S @ H.transpose(1, 2)).masked_fill(~padding_mask(lengths, H.shape[1]), float("-inf")), dim=-2)),
        ),
        Misconception(
            "swapped_outputs",
            "you returned (a, alpha): return the weights alpha (B, T, N) first and the attention values "
            "a (B, T, d) second",
            lambda S, H, lengths: tuple(reversed(_decoder_ref(S, H, lengths))),
        ),
    ],
    properties=[_padding_gets_weight, _sums_to_one_over(lambda case: case.args[1].shape[1]),
                _value_not_from_own_weights],
    hint="All steps at once: scores = S @ H.transpose(1, 2) (B, T, N); mask padded positions; softmax over "
         "dim=-1; a = alpha @ H.",
))

# --------------------------------------------------------------------------------------------- 06.luong_output


def _output_ref(a_t, s_t, W_c, b_c, W_y, b_y):
    v_t = torch.cat([a_t, s_t], dim=-1)  # (B, 2d)
    s_tilde = torch.tanh(v_t @ W_c.T + b_c)  # (B, d)
    return softmax(s_tilde @ W_y.T + b_y)  # (B, V)


def _output_cases():
    g = generator(64)
    P = wx.output_layer()
    H, S = wx.encoder_states(), wx.decoder_states()
    A = softmax(S @ H.T) @ H  # (3, 4): a_1, a_2, a_3

    def params(d, V, scale_y=1.0):
        return randn(g, d, 2 * d), randn(g, d), randn(g, V, d, scale=scale_y), randn(g, V)

    return [
        Case("B=2, d=3, V=5", (randn(g, 2, 3), randn(g, 2, 3), *params(3, 5)), dims={"B": 2, "d": 3, "V": 5}),
        Case("B=3, d=4, V=7", (randn(g, 3, 4), randn(g, 3, 4), *params(4, 7)), dims={"B": 3, "d": 4, "V": 7}),
        Case("B=3, d=4, V=5, worked example", (A, S, P["W_c"], P["b_c"], P["W_y"], P["b_y"]),
             dims={"B": 3, "d": 4, "V": 5}, note="the three steps of 'je suis étudiant'"),
        Case("B=2, d=2, V=6, large logits", (randn(g, 2, 2), randn(g, 2, 2), *params(2, 6, scale_y=600.0)),
             dims={"B": 2, "d": 2, "V": 6}, note="logits in the hundreds: exp overflows without the max trick"),
    ]


def _output_with(order="as", act=torch.tanh, use_b_c=True, use_b_y=True, final=softmax):
    def fn(a_t, s_t, W_c, b_c, W_y, b_y):
        v_t = torch.cat([a_t, s_t] if order == "as" else [s_t, a_t], dim=-1)
        s_tilde = act(v_t @ W_c.T + (b_c if use_b_c else 0))
        return final(s_tilde @ W_y.T + (b_y if use_b_y else 0))
    return fn


register(Task(
    id="06.luong_output",
    title="the output step: from [a_t; s_t] to a distribution over words",
    points=3,
    reference=_output_ref,
    cases=_output_cases,
    misconceptions=[
        Misconception(
            "wrong_concat_order",
            "you concatenated [s_t; a_t]; the attention value comes first: v_t = [a_t; s_t] (W_c's first d "
            "columns read a_t, its last d columns read s_t)",
            _output_with(order="sa"),
        ),
        Misconception("missing_tanh", "you left out the tanh: s̃_t = tanh(W_c v_t + b_c)",
                      _output_with(act=lambda x: x)),
        Misconception("returned_logits", "you returned the logits W_y s̃_t + b_y; ŷ_t is their softmax, "
                      "a probability distribution over the vocabulary", _output_with(final=lambda x: x)),
        Misconception("softmax_over_batch", "your softmax runs over the batch axis (dim=0); ŷ_t is a "
                      "distribution over the vocabulary, the last axis (dim=-1)",
                      _output_with(final=lambda x: softmax(x, dim=0))),
        Misconception("missing_b_c", "you left out the bias b_c: s̃_t = tanh(W_c v_t + b_c)",
                      _output_with(use_b_c=False)),
        Misconception("missing_b_y", "you left out the bias b_y: ŷ_t = softmax(W_y s̃_t + b_y)",
                      _output_with(use_b_y=False)),
        Misconception("overflow", "your softmax overflows on large logits (exp(1000) is inf): subtract the "
                      "maximum first, or use torch.softmax", _output_with(final=_naive_softmax)),
    ],
    properties=[_sums_to_one_over(lambda case: case.args[4].shape[0],
                                  "your probabilities for one sentence do not sum to 1 over the vocabulary")],
    hint="v_t = torch.cat([a_t, s_t], dim=-1) (B, 2d); s̃_t = tanh(v_t @ W_c.T + b_c) (B, d); "
         "ŷ_t = softmax(s̃_t @ W_y.T + b_y, dim=-1) (B, V).",
))

# --------------------------------------------------------------------------------------------- 06.hand_attention_value


def _hand(step=wx.STEP_ETUDIANT, weights_fn=softmax):
    H = wx.encoder_states()
    e = H @ wx.decoder_states()[step - 1]  # (4,)
    return H, e, weights_fn(e)


def _as_list(x):
    return [float(v) for v in x]


register(Task(
    id="06.hand_attention_value",
    title="the worked example's attention value a_3, by hand",
    points=1,
    reference=lambda: _as_list(_hand()[2] @ _hand()[0]),
    cases=lambda: [Case("worked example", (), note="step t=3, which emits 'étudiant'")],
    misconceptions=[
        Misconception("returned_weights", "those are the weights α^3, not the attention value a_3: a_3 is "
                      "the weighted sum Σ_i α^3_i h_i, a vector of d = 4 numbers", lambda: _as_list(_hand()[2])),
        Misconception("returned_scores", "those are the scores e^3; the attention value is Σ_i α^3_i h_i "
                      "with α^3 = softmax(e^3)", lambda: _as_list(_hand()[1])),
        Misconception("weighted_by_scores", "you weighted the h_i with the scores e^3_i; weight them with "
                      "α^3_i = softmax(e^3)_i", lambda: _as_list(_hand()[1] @ _hand()[0])),
        Misconception("plain_average", "that is the plain average of h_1..h_4; attention weights each h_i "
                      "by α^3_i", lambda: _as_list(wx.encoder_states().mean(0))),
        Misconception("wrong_step_1", "that is a_1 (step 'je'); the task asks for a_3 ('étudiant')",
                      lambda: _as_list(_hand(1)[2] @ _hand(1)[0])),
        Misconception("wrong_step_2", "that is a_2 (step 'suis'); the task asks for a_3 ('étudiant')",
                      lambda: _as_list(_hand(2)[2] @ _hand(2)[0])),
    ],
    atol=1e-3,
    rtol=0.0,
    check_grad=False,
    hint="a_3 = α^3_1 h_1 + α^3_2 h_2 + α^3_3 h_3 + α^3_4 h_4, with the weights from exercise 05.hand_weights.",
))
