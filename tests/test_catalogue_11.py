"""Set 11 (the Transformer): every known-wrong implementation is caught, with the right diagnosis.

Written the way learners write them, from the task texts, before the grader's misconceptions.

* ``11.residual_ffn(x, W_1, b_1, W_2, b_2, gamma, beta, norm_first)``: the feed-forward sublayer in a
  post-norm (``LayerNorm(x + FFN(x))``) or pre-norm (``x + FFN(LayerNorm(x))``) residual block;
  LayerNorm over the features with the biased variance and ``eps = 1e-5`` inside the square root.
* ``11.cross_attention(S, H, W_q, W_k, W_v, src_len)``: one head of encoder–decoder attention, queries
  from the decoder, keys and values from the encoder, padding masked; a sentence of length 0 gives zero
  weights and a zero output.
* ``11.self_attention_step(x_t, past, W_q, W_k, W_v)``: the decoder's self-attention at one new step
  during greedy decoding: the new position attends to every earlier position and to itself.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

EPS = 1e-5


# ------------------------------------------------------------------------------ 11.residual_ffn


def _ffn(z, W_1, b_1, W_2, b_2):
    return torch.relu(z @ W_1.T + b_1) @ W_2.T + b_2


def _ln(z, gamma, beta):
    mu = z.mean(-1, keepdim=True)
    var = ((z - mu) ** 2).mean(-1, keepdim=True)
    return gamma * (z - mu) / torch.sqrt(var + EPS) + beta


def ffn_torch_var(x, W_1, b_1, W_2, b_2, gamma, beta, norm_first):
    def ln(z):
        mean = z.mean(dim=-1, keepdim=True)
        var = z.var(dim=-1, keepdim=True)  # torch.var divides by d - 1 by default
        return gamma * (z - mean) / torch.sqrt(var + 1e-5) + beta

    if norm_first:
        return x + _ffn(ln(x), W_1, b_1, W_2, b_2)
    return ln(x + _ffn(x, W_1, b_1, W_2, b_2))


def ffn_eps_outside(x, W_1, b_1, W_2, b_2, gamma, beta, norm_first):
    def ln(z):
        return (
            gamma * (z - z.mean(-1, keepdim=True)) / (z.std(-1, unbiased=False, keepdim=True) + 1e-5) + beta
        )

    if norm_first:
        return x + _ffn(ln(x), W_1, b_1, W_2, b_2)
    return ln(x + _ffn(x, W_1, b_1, W_2, b_2))


def ffn_no_eps(x, W_1, b_1, W_2, b_2, gamma, beta, norm_first):
    def ln(z):
        c = z - z.mean(-1, keepdim=True)
        return gamma * c / c.pow(2).mean(-1, keepdim=True).sqrt() + beta

    z = ln(x) if norm_first else x
    out = _ffn(z, W_1, b_1, W_2, b_2)
    return x + out if norm_first else ln(x + out)


def ffn_norm_over_time(x, W_1, b_1, W_2, b_2, gamma, beta, norm_first):
    def ln(z):
        mu = z.mean(dim=1, keepdim=True)
        var = z.var(dim=1, unbiased=False, keepdim=True)
        return gamma * (z - mu) / torch.sqrt(var + EPS) + beta

    if norm_first:
        return x + _ffn(ln(x), W_1, b_1, W_2, b_2)
    return ln(x + _ffn(x, W_1, b_1, W_2, b_2))


def ffn_swapped_flag(x, W_1, b_1, W_2, b_2, gamma, beta, norm_first):
    if not norm_first:  # reads the flag the wrong way round
        return x + _ffn(_ln(x, gamma, beta), W_1, b_1, W_2, b_2)
    return _ln(x + _ffn(x, W_1, b_1, W_2, b_2), gamma, beta)


def ffn_no_residual(x, W_1, b_1, W_2, b_2, gamma, beta, norm_first):
    if norm_first:
        return _ffn(_ln(x, gamma, beta), W_1, b_1, W_2, b_2)
    return _ln(_ffn(x, W_1, b_1, W_2, b_2), gamma, beta)


def ffn_adds_normed_x(x, W_1, b_1, W_2, b_2, gamma, beta, norm_first):
    if norm_first:
        x = _ln(x, gamma, beta)  # overwrites x: the residual now carries the normalised input
        return x + _ffn(x, W_1, b_1, W_2, b_2)
    return _ln(x + _ffn(x, W_1, b_1, W_2, b_2), gamma, beta)


def ffn_no_affine(x, W_1, b_1, W_2, b_2, gamma, beta, norm_first):
    ones, zeros = torch.ones_like(gamma), torch.zeros_like(beta)
    if norm_first:
        return x + _ffn(_ln(x, ones, zeros), W_1, b_1, W_2, b_2)
    return _ln(x + _ffn(x, W_1, b_1, W_2, b_2), ones, zeros)


def ffn_no_relu(x, W_1, b_1, W_2, b_2, gamma, beta, norm_first):
    lin = lambda z: (z @ W_1.T + b_1) @ W_2.T + b_2  # noqa: E731
    if norm_first:
        return x + lin(_ln(x, gamma, beta))
    return _ln(x + lin(x), gamma, beta)


def ffn_no_norm(x, W_1, b_1, W_2, b_2, gamma, beta, norm_first):
    return x + _ffn(x, W_1, b_1, W_2, b_2)


def ffn_float32(x, W_1, b_1, W_2, b_2, gamma, beta, norm_first):
    out = ffn_ok_layer_norm(
        x.float(), W_1.float(), b_1.float(), W_2.float(), b_2.float(), gamma.float(), beta.float(), norm_first
    )
    return out.double()


def ffn_in_place(x, W_1, b_1, W_2, b_2, gamma, beta, norm_first):
    if norm_first:
        x += _ffn(_ln(x, gamma, beta), W_1, b_1, W_2, b_2)
        return x
    return _ln(x + _ffn(x, W_1, b_1, W_2, b_2), gamma, beta)


def ffn_ok_layer_norm(x, W_1, b_1, W_2, b_2, gamma, beta, norm_first):
    ln = lambda z: F.layer_norm(z, (z.shape[-1],), gamma, beta, eps=1e-5)  # noqa: E731
    ff = lambda z: F.linear(F.relu(F.linear(z, W_1, b_1)), W_2, b_2)  # noqa: E731
    return x + ff(ln(x)) if norm_first else ln(x + ff(x))


def ffn_ok_einsum(x, W_1, b_1, W_2, b_2, gamma, beta, norm_first):
    def ln(z):
        mu = z.mean(-1, keepdim=True)
        var = (z - mu).pow(2).mean(-1, keepdim=True)
        return (z - mu) * torch.rsqrt(var + 1e-5) * gamma + beta

    def ff(z):
        hidden = torch.einsum("btd,fd->btf", z, W_1) + b_1
        return torch.einsum("btf,df->btd", hidden.clamp(min=0), W_2) + b_2

    return x + ff(ln(x)) if norm_first else ln(x + ff(x))


# ------------------------------------------------------------------------------ 11.cross_attention


def _keep(src_len, N):
    return torch.arange(N)[None, None, :] < src_len[:, None, None]  # (B, 1, N)


def _finish(scores, keep, V):
    w = torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=-1)
    w = torch.nan_to_num(w, nan=0.0)
    return w @ V, w


def cross_no_scale(S, H, W_q, W_k, W_v, src_len):
    Q, K, V = S @ W_q.T, H @ W_k.T, H @ W_v.T
    return _finish(Q @ K.transpose(1, 2), _keep(src_len, H.shape[1]), V)


def cross_scale_d_model(S, H, W_q, W_k, W_v, src_len):
    Q, K, V = S @ W_q.T, H @ W_k.T, H @ W_v.T
    return _finish(Q @ K.transpose(1, 2) / math.sqrt(S.shape[-1]), _keep(src_len, H.shape[1]), V)


def cross_with_causal_mask(S, H, W_q, W_k, W_v, src_len):
    Q, K, V = S @ W_q.T, H @ W_k.T, H @ W_v.T
    T, N = S.shape[1], H.shape[1]
    causal = torch.ones(T, N, dtype=torch.bool).tril()  # "the decoder must not look ahead"
    return _finish(Q @ K.transpose(1, 2) / math.sqrt(Q.shape[-1]), _keep(src_len, N) & causal, V)


def cross_mask_zero(S, H, W_q, W_k, W_v, src_len):
    Q, K, V = S @ W_q.T, H @ W_k.T, H @ W_v.T
    scores = Q @ K.transpose(1, 2) / math.sqrt(Q.shape[-1])
    scores = scores * _keep(src_len, H.shape[1])  # zero the padded scores
    w = scores.softmax(-1)
    return w @ V, w


def cross_mask_after(S, H, W_q, W_k, W_v, src_len):
    Q, K, V = S @ W_q.T, H @ W_k.T, H @ W_v.T
    w = torch.softmax(Q @ K.transpose(1, 2) / math.sqrt(Q.shape[-1]), -1) * _keep(src_len, H.shape[1])
    return w @ V, w


def cross_masks_queries(S, H, W_q, W_k, W_v, src_len):
    Q, K, V = S @ W_q.T, H @ W_k.T, H @ W_v.T
    T = S.shape[1]
    rows = torch.arange(T)[None, :, None] < src_len[:, None, None]  # (B, T, 1): masks target steps
    w = torch.softmax(Q @ K.transpose(1, 2) / math.sqrt(Q.shape[-1]), -1) * rows
    return w @ V, w


def cross_nan_for_empty(S, H, W_q, W_k, W_v, src_len):
    Q, K, V = S @ W_q.T, H @ W_k.T, H @ W_v.T
    scores = (Q @ K.transpose(1, 2) / math.sqrt(Q.shape[-1])).masked_fill(
        ~_keep(src_len, H.shape[1]), -math.inf
    )
    w = torch.softmax(scores, dim=-1)
    return w @ V, w


def cross_big_negative_fill(S, H, W_q, W_k, W_v, src_len):
    Q, K, V = S @ W_q.T, H @ W_k.T, H @ W_v.T
    scores = (Q @ K.transpose(1, 2) / math.sqrt(Q.shape[-1])).masked_fill(~_keep(src_len, H.shape[1]), -1e9)
    w = torch.softmax(scores, dim=-1)  # an empty sentence becomes uniform over padding
    return w @ V, w


def cross_softmax_over_steps(S, H, W_q, W_k, W_v, src_len):
    Q, K, V = S @ W_q.T, H @ W_k.T, H @ W_v.T
    scores = (Q @ K.transpose(1, 2) / math.sqrt(Q.shape[-1])).masked_fill(~_keep(src_len, H.shape[1]), -1e9)
    w = torch.softmax(scores, dim=1)
    return w @ V, w


def cross_values_with_keys(S, H, W_q, W_k, W_v, src_len):
    Q, K = S @ W_q.T, H @ W_k.T
    V = H @ W_v.T
    out, w = _finish(Q @ K.transpose(1, 2) / math.sqrt(Q.shape[-1]), _keep(src_len, H.shape[1]), V)
    return out, torch.softmax(Q @ K.transpose(1, 2) / math.sqrt(Q.shape[-1]), -1)  # returns unmasked weights


def cross_first_length_for_all(S, H, W_q, W_k, W_v, src_len):
    Q, K, V = S @ W_q.T, H @ W_k.T, H @ W_v.T
    n = int(src_len[0])
    keep = (torch.arange(H.shape[1]) < n)[None, None, :]  # the first sentence's length for every sentence
    return _finish(Q @ K.transpose(1, 2) / math.sqrt(Q.shape[-1]), keep, V)


def cross_swapped_outputs(S, H, W_q, W_k, W_v, src_len):
    out, w = _finish(
        (S @ W_q.T) @ (H @ W_k.T).transpose(1, 2) / math.sqrt(W_q.shape[0]),
        _keep(src_len, H.shape[1]),
        H @ W_v.T,
    )
    return w, out


def cross_ok_sdpa(S, H, W_q, W_k, W_v, src_len):
    Q, K, V = F.linear(S, W_q), F.linear(H, W_k), F.linear(H, W_v)
    keep = _keep(src_len, H.shape[1]).expand(-1, S.shape[1], -1)
    scores = torch.einsum("btk,bnk->btn", Q, K) / Q.shape[-1] ** 0.5
    scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
    w = torch.softmax(scores, -1) * keep
    return w @ V, w


def cross_ok_loop(S, H, W_q, W_k, W_v, src_len):
    B, T, _ = S.shape
    outs, ws = [], []
    for b in range(B):
        n = int(src_len[b])
        w = torch.zeros(T, H.shape[1], dtype=S.dtype)
        if n > 0:
            q, k = S[b] @ W_q.T, H[b, :n] @ W_k.T
            w = torch.cat(
                [
                    torch.softmax(q @ k.T / math.sqrt(k.shape[1]), dim=1),
                    torch.zeros(T, H.shape[1] - n, dtype=S.dtype),
                ],
                dim=1,
            )
        ws.append(w)
        outs.append(w @ (H[b] @ W_v.T))
    return torch.stack(outs), torch.stack(ws)


# ------------------------------------------------------------------------------ 11.self_attention_step


def step_past_only(x_t, past, W_q, W_k, W_v):
    q = x_t @ W_q.T  # (B, d_k)
    K, V = past @ W_k.T, past @ W_v.T  # only the earlier steps
    w = torch.softmax((K @ q[:, :, None])[..., 0] / math.sqrt(q.shape[-1]), -1)
    return (w[:, None, :] @ V)[:, 0], w


def step_new_first(x_t, past, W_q, W_k, W_v):
    xs = torch.cat([x_t[:, None], past], dim=1)  # the new step put first
    q, K, V = x_t @ W_q.T, xs @ W_k.T, xs @ W_v.T
    w = torch.softmax(torch.einsum("bk,btk->bt", q, K) / math.sqrt(q.shape[-1]), -1)
    return torch.einsum("bt,btv->bv", w, V), w


def step_no_scale(x_t, past, W_q, W_k, W_v):
    xs = torch.cat([past, x_t[:, None]], dim=1)
    q, K, V = x_t @ W_q.T, xs @ W_k.T, xs @ W_v.T
    w = torch.softmax(torch.einsum("bk,btk->bt", q, K), -1)
    return torch.einsum("bt,btv->bv", w, V), w


def step_causal_row_zero(x_t, past, W_q, W_k, W_v):
    xs = torch.cat([past, x_t[:, None]], dim=1)
    q, K, V = x_t[:, None] @ W_q.T, xs @ W_k.T, xs @ W_v.T  # (B, 1, d_k)
    t = xs.shape[1]
    mask = torch.tril(torch.ones(1, t, dtype=torch.bool))  # the causal mask of a 1-row query: only key 0
    scores = (q @ K.transpose(1, 2) / math.sqrt(q.shape[-1])).masked_fill(~mask, float("-inf"))
    w = torch.softmax(scores, -1)
    return (w @ V)[:, 0], w[:, 0]


def step_query_from_past(x_t, past, W_q, W_k, W_v):
    xs = torch.cat([past, x_t[:, None]], dim=1)
    Q, K, V = xs @ W_q.T, xs @ W_k.T, xs @ W_v.T
    q = Q.mean(1)  # one query for the whole prefix
    w = torch.softmax(torch.einsum("bk,btk->bt", q, K) / math.sqrt(q.shape[-1]), -1)
    return torch.einsum("bt,btv->bv", w, V), w


def step_keys_as_values(x_t, past, W_q, W_k, W_v):
    xs = torch.cat([past, x_t[:, None]], dim=1)
    q, K = x_t @ W_q.T, xs @ W_k.T
    w = torch.softmax(torch.einsum("bk,btk->bt", q, K) / math.sqrt(q.shape[-1]), -1)
    return torch.einsum("bt,btv->bv", w, xs @ W_v.T), torch.einsum("bk,btk->bt", q, K).softmax(-1)


def step_softmax_over_batch(x_t, past, W_q, W_k, W_v):
    xs = torch.cat([past, x_t[:, None]], dim=1)
    q, K, V = x_t @ W_q.T, xs @ W_k.T, xs @ W_v.T
    w = torch.softmax(torch.einsum("bk,btk->bt", q, K) / math.sqrt(q.shape[-1]), 0)
    return torch.einsum("bt,btv->bv", w, V), w


def step_unprojected_values(x_t, past, W_q, W_k, W_v):
    xs = torch.cat([past, x_t[:, None]], dim=1)
    q, K = x_t @ W_q.T, xs @ W_k.T
    w = torch.softmax(torch.einsum("bk,btk->bt", q, K) / math.sqrt(q.shape[-1]), -1)
    return torch.einsum("bt,btv->bv", w, xs) @ W_v.T, w  # the same: projection after the sum is linear


def step_scale_d_v(x_t, past, W_q, W_k, W_v):
    xs = torch.cat([past, x_t[:, None]], dim=1)
    q, K, V = x_t @ W_q.T, xs @ W_k.T, xs @ W_v.T
    w = torch.softmax(torch.einsum("bk,btk->bt", q, K) / math.sqrt(V.shape[-1]), -1)
    return torch.einsum("bt,btv->bv", w, V), w


def step_ok_full_recompute(x_t, past, W_q, W_k, W_v):
    xs = torch.cat([past, x_t[:, None]], dim=1)  # (B, t+1, d)
    Q, K, V = xs @ W_q.T, xs @ W_k.T, xs @ W_v.T
    T = xs.shape[1]
    scores = Q @ K.transpose(1, 2) / math.sqrt(Q.shape[-1])
    scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    w = torch.softmax(scores, -1)
    return (w @ V)[:, -1], w[:, -1]


WRONG = {
    "11.residual_ffn": [
        ("torch.var is unbiased", ffn_torch_var, "unbiased_variance", "d - 1"),
        (
            "eps added to the standard deviation",
            ffn_eps_outside,
            "eps_outside_sqrt",
            "inside the square root",
        ),
        ("no eps", ffn_no_eps, "no_eps", "eps"),
        ("statistics over the time axis", ffn_norm_over_time, "norm_over_wrong_axis", "features"),
        ("pre/post read the wrong way round", ffn_swapped_flag, "pre_post_swapped", "norm_first"),
        ("no residual connection", ffn_no_residual, "no_residual", "residual"),
        ("pre-norm residual carries LayerNorm(x)", ffn_adds_normed_x, "residual_of_normed", "normalised"),
        ("gamma and beta ignored", ffn_no_affine, "no_affine", "gamma"),
        ("no ReLU", ffn_no_relu, "no_relu", "ReLU"),
        ("no layer norm at all", ffn_no_norm, "no_norm", "layer normalisation"),
        ("computes in float32", ffn_float32, "float32_computation", "float32"),
        ("adds into x in place", ffn_in_place, "mutates_input", "in place"),
    ],
    "11.cross_attention": [
        ("not scaled", cross_no_scale, "not_scaled", "scale"),
        ("scaled by sqrt(d_model)", cross_scale_d_model, "scaled_by_d_model", "d_k"),
        ("causal mask in cross-attention", cross_with_causal_mask, "causal_in_cross", "causal"),
        ("padded scores set to 0", cross_mask_zero, "mask_filled_with_zero", "exp(0)"),
        ("mask after softmax", cross_mask_after, "mask_after_softmax", "after the softmax"),
        ("masks target steps", cross_masks_queries, "mask_on_queries", "source positions"),
        ("NaN for an empty sentence", cross_nan_for_empty, "nan_for_empty_source", "length 0"),
        ("-1e9 makes an empty sentence uniform", cross_big_negative_fill, "empty_source_uniform", "length 0"),
        ("softmax over the decoder steps", cross_softmax_over_steps, "softmax_over_queries", "keys"),
        ("unmasked weights returned", cross_values_with_keys, "masked_weight_not_zero", "padding"),
        (
            "first sentence's length for all",
            cross_first_length_for_all,
            "one_length_for_all",
            "its own length",
        ),
        ("(weights, output)", cross_swapped_outputs, "swapped_outputs", "(output, weights)"),
    ],
    "11.self_attention_step": [
        ("attends to the past only", step_past_only, "excludes_itself", "itself"),
        ("new step first", step_new_first, "new_step_first", "order"),
        ("not scaled", step_no_scale, "not_scaled", "scale"),
        ("causal mask of one row", step_causal_row_zero, "causal_mask_one_row", "causal mask"),
        ("query from the whole prefix", step_query_from_past, "query_from_prefix", "query"),
        ("weights not scaled but output right", step_keys_as_values, "weights_not_scaled", "weights"),
        ("softmax over the batch", step_softmax_over_batch, "softmax_over_batch", "batch"),
        ("scaled by sqrt(d_v)", step_scale_d_v, "scaled_by_d_v", "d_k"),
    ],
}

CORRECT = {
    "11.residual_ffn": [ffn_ok_layer_norm, ffn_ok_einsum],
    "11.cross_attention": [cross_ok_sdpa, cross_ok_loop],
    "11.self_attention_step": [step_ok_full_recompute, step_unprojected_values],
}


# ------------------------------------------------------------------ red team, round 2 (the grader's fixes)


def cross_no_mask(S, H, W_q, W_k, W_v, src_len):
    """src_len never used: a plain softmax over every source position."""
    Q, K, V = S @ W_q.T, H @ W_k.T, H @ W_v.T
    w = torch.softmax(Q @ K.transpose(1, 2) / math.sqrt(Q.shape[-1]), dim=-1)
    return w @ V, w


def step_scale_d_model(x_t, past, W_q, W_k, W_v):
    xs = torch.cat([past, x_t.unsqueeze(1)], dim=1)
    q, K, V = x_t @ W_q.T, xs @ W_k.T, xs @ W_v.T
    w = torch.softmax(torch.einsum("bk,btk->bt", q, K) / math.sqrt(x_t.shape[-1]), dim=-1)
    return torch.einsum("bt,btv->bv", w, V), w


WRONG["11.cross_attention"] += [
    ("no mask at all", cross_no_mask, "no_mask", "do not mask the padding at all")
]
WRONG["11.self_attention_step"] += [
    ("scaled by sqrt(d_model)", step_scale_d_model, "scaled_by_d_model", "√d_model")
]


# ------------------------------------------------------------------ red team, round 4


def ffn_eps(eps):
    """A learner's LayerNorm with another eps (1e-6 and 1e-8 are common defaults elsewhere)."""

    def block(x, W_1, b_1, W_2, b_2, gamma, beta, norm_first):
        ln = lambda z: F.layer_norm(z, z.shape[-1:], gamma, beta, eps=eps)  # noqa: E731
        return x + _ffn(ln(x), W_1, b_1, W_2, b_2) if norm_first else ln(x + _ffn(x, W_1, b_1, W_2, b_2))

    return block


def cross_scale_d_v(S, H, W_q, W_k, W_v, src_len):
    Q, K, V = S @ W_q.T, H @ W_k.T, H @ W_v.T
    scores = Q @ K.transpose(1, 2) / math.sqrt(V.shape[-1])
    pad = torch.arange(H.shape[1])[None, None, :] >= src_len[:, None, None]
    w = torch.softmax(scores.masked_fill(pad, float("-inf")), dim=-1).nan_to_num(0.0)
    return w @ V, w


WRONG["11.residual_ffn"] += [
    ("eps = 1e-6", ffn_eps(1e-6), "wrong_eps", "eps = 1e-06"),
    ("eps = 1e-8", ffn_eps(1e-8), "wrong_eps", "eps = 1e-08"),
]
WRONG["11.cross_attention"] += [("scaled by sqrt(d_v)", cross_scale_d_v, "scaled_by_d_v", "√d_v")]


def test_a_wrong_eps_is_named_and_numbers_that_differ_read_differently():
    """eps 1e-6 for 1e-5 (red team, round 4): the message names the eps; and where the engine shows two
    numbers, they never read the same (it printed 'expected -2.1464, got -2.1464')."""
    from attnbook.grading import get_task, run_task

    result = run_task(get_task("11.residual_ffn"), ffn_eps(1e-6))
    assert result.diagnosis == "wrong_eps" and "eps = 1e-06" in result.message and "1e-5" in result.message
    bare = dataclasses.replace(get_task("11.residual_ffn"), misconceptions=())
    result = run_task(bare, ffn_eps(1e-6))
    assert result.diagnosis == "wrong_values", result.message
    shown = result.message.split("expected ")[1].rstrip(".").split(", got ")
    assert shown[0] != shown[1] and len(shown[0].split(".")[1]) > 4, result.message


def test_no_mask_is_not_called_one_length_for_all():
    """With the first sentence unpadded, masking with its length is no mask at all: the message must not
    invent the first length (red team, A1)."""
    from attnbook.grading import get_task, run_task

    result = run_task(get_task("11.cross_attention"), cross_no_mask)
    assert "length of the first one" not in result.message, result.message
