"""Set 06 (attention value and output step): every known-wrong implementation is caught, with the right
diagnosis.

These are written the way learners write them, independently of the grader's misconception models.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F

from attnbook.grading import get_task, run_task

# ------------------------------------------------------------------------------ 06.attention_value


def value_mean(weights, values):
    return values.mean(dim=1)


def value_mean_repeated(weights, values):
    return values.mean(1, keepdim=True).repeat(1, weights.shape[1], 1)


def value_transposed_weights(weights, values):
    return torch.bmm(weights.transpose(1, 2), values)


def value_sum_dim1(weights, values):
    return (weights[..., None] * values[:, None]).sum(dim=1)


def value_products(weights, values):
    return weights.unsqueeze(3) * values.unsqueeze(1)


def value_sum_no_weights(weights, values):
    return values.sum(1, keepdim=True).expand(-1, weights.size(1), -1)


def value_einsum_wrong(weights, values):
    return torch.einsum("bqk,bkd->bqk", weights, values)


def value_numpy(weights, values):
    return weights.numpy() @ values.numpy()


def value_float32(weights, values):
    return torch.matmul(weights.float(), values.float())


def value_detached(weights, values):
    return (weights @ values).detach()


def value_in_place(weights, values):
    values /= values.norm(dim=-1, keepdim=True)  # "normalise the values first", in place
    return weights @ values


def value_nested_loops(weights, values):
    B, T_q, T_k = weights.shape
    out = []
    for b in range(B):
        rows = []
        for q in range(T_q):
            rows.append(sum(weights[b, q, i] * values[b, i] for i in range(T_k)))
        out.append(rows)
    return out


def loops_forever(*args):
    while True:
        pass


# ------------------------------------------------------------------------------ 06.dot_product_attention


def dpa_keys(Q, K, V):
    alpha = torch.softmax(torch.bmm(Q, K.transpose(1, 2)), dim=-1)
    return torch.bmm(alpha, K), alpha


def dpa_swapped(Q, K, V):
    alpha = torch.softmax(Q @ K.transpose(1, 2), dim=-1)
    return alpha, alpha @ V


def dpa_dim1(Q, K, V):
    alpha = F.softmax(Q @ K.transpose(1, 2), dim=1)
    return alpha @ V, alpha


def dpa_scaled(Q, K, V):
    alpha = torch.softmax(Q @ K.transpose(1, 2) / math.sqrt(K.shape[-1]), dim=-1)
    return alpha @ V, alpha


def dpa_scores_as_weights(Q, K, V):
    e = Q @ K.transpose(1, 2)
    return e @ V, e


def dpa_naive(Q, K, V):
    e = torch.exp(Q @ K.transpose(1, 2))
    alpha = e / e.sum(2, keepdim=True)
    return alpha @ V, alpha


def dpa_value_only(Q, K, V):
    return torch.softmax(Q @ K.transpose(1, 2), -1) @ V


def dpa_uses_q_for_values(Q, K, V):
    alpha = torch.softmax(Q @ K.transpose(1, 2), -1)
    return Q, alpha


def dpa_no_transpose(Q, K, V):
    alpha = torch.softmax(Q @ K, -1)
    return alpha @ V, alpha


# ------------------------------------------------------------------------------ 06.attention_step


def _mask(H, lengths):
    return torch.arange(H.shape[1])[None, :] < lengths[:, None]  # (B, N)


def step_no_mask(s_t, H, lengths):
    e = torch.einsum("bnd,bd->bn", H, s_t)
    alpha_t = torch.softmax(e, dim=-1)
    return torch.einsum("bn,bnd->bd", alpha_t, H), alpha_t


def step_mask_after(s_t, H, lengths):
    e = torch.bmm(H, s_t.unsqueeze(2)).squeeze(2)
    alpha_t = torch.softmax(e, dim=1) * _mask(H, lengths)
    return torch.bmm(alpha_t.unsqueeze(1), H).squeeze(1), alpha_t


def step_softmax_dim0(s_t, H, lengths):
    e = (H * s_t[:, None, :]).sum(-1).masked_fill(~_mask(H, lengths), float("-inf"))
    alpha_t = torch.nan_to_num(torch.softmax(e, dim=0))
    return (alpha_t[:, :, None] * H).sum(1), alpha_t


def step_average(s_t, H, lengths):
    m = _mask(H, lengths).double()
    alpha_t = m / m.sum(1, keepdim=True).clamp(min=1)
    return (alpha_t.unsqueeze(-1) * H).sum(1), alpha_t


def step_average_all(s_t, H, lengths):
    B, N, d = H.shape
    alpha_t = torch.ones(B, N, dtype=H.dtype) / N
    return H.mean(dim=1), alpha_t


def step_swapped(s_t, H, lengths):
    e = (H @ s_t.unsqueeze(-1)).squeeze(-1).masked_fill(~_mask(H, lengths), float("-inf"))
    alpha_t = torch.nan_to_num(torch.softmax(e, -1))
    return alpha_t, (alpha_t.unsqueeze(-1) * H).sum(1)


def step_matmul_2d(s_t, H, lengths):
    e = (H @ s_t.unsqueeze(-1)).squeeze(-1).masked_fill(~_mask(H, lengths), float("-inf"))
    alpha_t = torch.nan_to_num(torch.softmax(e, -1))
    return alpha_t @ H, alpha_t


def step_nan_rows(s_t, H, lengths):
    e = (H @ s_t.unsqueeze(-1)).squeeze(-1).masked_fill(~_mask(H, lengths), float("-inf"))
    alpha_t = torch.softmax(e, -1)
    return (alpha_t.unsqueeze(-1) * H).sum(1), alpha_t


def step_naive(s_t, H, lengths):
    e = torch.exp((H @ s_t.unsqueeze(-1)).squeeze(-1)) * _mask(H, lengths)
    alpha_t = e / e.sum(-1, keepdim=True)
    return (alpha_t.unsqueeze(-1) * H).sum(1), alpha_t


def step_value_from_scores(s_t, H, lengths):
    e = (H @ s_t.unsqueeze(-1)).squeeze(-1).masked_fill(~_mask(H, lengths), float("-inf"))
    alpha_t = torch.nan_to_num(torch.softmax(e, -1))
    e0 = torch.nan_to_num(e, neginf=0.0)
    return (e0.unsqueeze(-1) * H).sum(1), alpha_t


def step_last_state_query(s_t, H, lengths):
    q = H[:, -1]
    e = (H @ q.unsqueeze(-1)).squeeze(-1).masked_fill(~_mask(H, lengths), float("-inf"))
    alpha_t = torch.nan_to_num(torch.softmax(e, -1))
    return (alpha_t.unsqueeze(-1) * H).sum(1), alpha_t


def step_in_place(s_t, H, lengths):
    for b in range(H.shape[0]):
        H[b, int(lengths[b]) :] = 0.0
    e = (H @ s_t.unsqueeze(-1)).squeeze(-1).masked_fill(~_mask(H, lengths), float("-inf"))
    alpha_t = torch.nan_to_num(torch.softmax(e, -1))
    return (alpha_t.unsqueeze(-1) * H).sum(1), alpha_t


# ------------------------------------------------------------------------------ 06.decoder_attention


def _dec_mask(H, lengths):
    return (torch.arange(H.shape[1])[None, :] < lengths[:, None])[:, None, :]  # (B, 1, N)


def dec_first_state(S, H, lengths):
    e = torch.bmm(H, S[:, 0].unsqueeze(2)).squeeze(2)  # (B, N), computed once
    e = e.masked_fill(~_dec_mask(H, lengths)[:, 0], float("-inf"))
    alpha = torch.softmax(e, -1).unsqueeze(1).repeat(1, S.shape[1], 1)
    return alpha @ H, alpha


def dec_last_state(S, H, lengths):
    s_T = S[:, -1, :]
    e = torch.einsum("bnd,bd->bn", H, s_T).masked_fill(~_dec_mask(H, lengths)[:, 0], float("-inf"))
    alpha = torch.softmax(e, -1)[:, None, :].expand(-1, S.size(1), -1)
    return torch.bmm(alpha, H), alpha


def dec_mean_state(S, H, lengths):
    q = S.mean(dim=1, keepdim=True)
    alpha = torch.softmax((q @ H.transpose(1, 2)).masked_fill(~_dec_mask(H, lengths), float("-inf")), -1)
    alpha = alpha.expand(-1, S.shape[1], -1)
    return alpha @ H, alpha


def dec_reshape(S, H, lengths):
    B, N, d = H.shape
    e = torch.bmm(S, H.view(B, d, N)).masked_fill(~_dec_mask(H, lengths), float("-inf"))
    alpha = torch.softmax(e, -1)
    return alpha @ H, alpha


def dec_no_mask(S, H, lengths):
    alpha = torch.softmax(S @ H.mT, dim=2)
    return alpha @ H, alpha


def dec_dim1(S, H, lengths):
    alpha = torch.softmax((S @ H.mT).masked_fill(~_dec_mask(H, lengths), float("-inf")), dim=1)
    return alpha @ H, alpha


def dec_swapped(S, H, lengths):
    alpha = torch.softmax((S @ H.mT).masked_fill(~_dec_mask(H, lengths), float("-inf")), dim=-1)
    return alpha, alpha @ H


def dec_alpha_transposed(S, H, lengths):
    alpha = torch.softmax((S @ H.mT).masked_fill(~_dec_mask(H, lengths), float("-inf")), dim=-1)
    return alpha @ H, alpha.transpose(1, 2)


def dec_python_loop_over_steps(S, H, lengths):
    alphas, values = [], []
    for t in range(S.shape[1]):
        e = torch.einsum("bnd,bd->bn", H, S[:, t]).masked_fill(~_dec_mask(H, lengths)[:, 0], float("-inf"))
        alpha_t = torch.nan_to_num(torch.softmax(e, -1))  # a sentence of length 0: zeros
        alphas.append(alpha_t)
        values.append((alpha_t.unsqueeze(-1) * H).sum(1))
    return torch.stack(values, 1), torch.stack(alphas, 1)  # correct


# ------------------------------------------------------------------------------ 06.luong_output


def out_order(a_t, s_t, W_c, b_c, W_y, b_y):
    v = torch.cat((s_t, a_t), dim=1)
    return torch.softmax(torch.tanh(v @ W_c.T + b_c) @ W_y.T + b_y, dim=1)


def out_no_tanh(a_t, s_t, W_c, b_c, W_y, b_y):
    s_tilde = torch.cat([a_t, s_t], -1) @ W_c.t() + b_c
    return torch.softmax(s_tilde @ W_y.t() + b_y, dim=-1)


def out_logits(a_t, s_t, W_c, b_c, W_y, b_y):
    s_tilde = torch.tanh(F.linear(torch.cat([a_t, s_t], -1), W_c, b_c))
    return F.linear(s_tilde, W_y, b_y)


def out_dim0(a_t, s_t, W_c, b_c, W_y, b_y):
    s_tilde = torch.tanh(F.linear(torch.cat([a_t, s_t], -1), W_c, b_c))
    return F.softmax(F.linear(s_tilde, W_y, b_y), dim=0)


def out_no_b_c(a_t, s_t, W_c, b_c, W_y, b_y):
    s_tilde = torch.tanh(torch.cat([a_t, s_t], -1) @ W_c.T)
    return torch.softmax(s_tilde @ W_y.T + b_y, -1)


def out_no_b_y(a_t, s_t, W_c, b_c, W_y, b_y):
    s_tilde = torch.tanh(torch.cat([a_t, s_t], -1) @ W_c.T + b_c)
    return torch.softmax(s_tilde @ W_y.T, -1)


def out_naive(a_t, s_t, W_c, b_c, W_y, b_y):
    s_tilde = torch.tanh(torch.cat([a_t, s_t], -1) @ W_c.T + b_c)
    z = torch.exp(s_tilde @ W_y.T + b_y)
    return z / z.sum(-1, keepdim=True)


def out_no_transpose(a_t, s_t, W_c, b_c, W_y, b_y):
    s_tilde = torch.tanh(torch.cat([a_t, s_t], -1) @ W_c + b_c)
    return torch.softmax(s_tilde @ W_y + b_y, -1)


def out_sum_not_concat(a_t, s_t, W_c, b_c, W_y, b_y):
    d = a_t.shape[-1]
    s_tilde = torch.tanh((a_t + s_t) @ W_c[:, :d].T + b_c)
    return torch.softmax(s_tilde @ W_y.T + b_y, -1)


def out_argmax(a_t, s_t, W_c, b_c, W_y, b_y):
    s_tilde = torch.tanh(torch.cat([a_t, s_t], -1) @ W_c.T + b_c)
    return torch.argmax(s_tilde @ W_y.T + b_y, -1)


def out_relu(a_t, s_t, W_c, b_c, W_y, b_y):
    s_tilde = torch.relu(torch.cat([a_t, s_t], -1) @ W_c.T + b_c)
    return torch.softmax(s_tilde @ W_y.T + b_y, -1)


# ------------------------------------------------------------------------------ new classes (issue 14)


def value_renormalised(weights, values):
    return (weights @ values) / weights.sum(-1, keepdim=True)


def value_first_sentence(weights, values):
    return torch.matmul(weights, values[0])


def value_float32_inside(weights, values):
    return (weights.float() @ values.float()).to(values.dtype)


def dpa_sigmoid(Q, K, V):
    alpha = torch.sigmoid(Q @ K.transpose(1, 2))
    return alpha @ V, alpha


def dpa_log_softmax(Q, K, V):
    alpha = F.log_softmax(Q @ K.transpose(1, 2), dim=-1)
    return alpha @ V, alpha


def dpa_batch_axis(Q, K, V):
    alpha = torch.softmax(Q @ K.transpose(1, 2), dim=0)
    return alpha @ V, alpha


def dpa_first_sentence(Q, K, V):
    alpha = torch.softmax(Q @ K[0].T, dim=-1)
    return alpha @ V[0], alpha


def dpa_float32_inside(Q, K, V):
    alpha = torch.softmax((Q.float() @ K.float().transpose(1, 2)), dim=-1).double()
    return alpha @ V, alpha


def step_minus_1e9(s_t, H, lengths):
    e = torch.einsum("bnd,bd->bn", H, s_t).masked_fill(~_mask(H, lengths), -1e9)
    alpha_t = torch.softmax(e, -1)
    return (alpha_t.unsqueeze(-1) * H).sum(1), alpha_t


def step_max_over_padding(s_t, H, lengths):
    e = torch.einsum("bnd,bd->bn", H, s_t)
    x = torch.exp(e - e.max(-1, keepdim=True).values) * _mask(H, lengths)
    total = x.sum(-1, keepdim=True)
    alpha_t = x / torch.where(total == 0, torch.ones_like(total), total)
    return (alpha_t.unsqueeze(-1) * H).sum(1), alpha_t


def step_first_sentence(s_t, H, lengths):
    e = (H[0] @ s_t.T).T  # every sentence's query against sentence 0's states
    alpha_t = torch.nan_to_num(torch.softmax(e.masked_fill(~_mask(H, lengths), float("-inf")), -1))
    return alpha_t @ H[0], alpha_t


def step_book_softmax(s_t, H, lengths):
    from attnbook.attention import softmax

    alpha_t = softmax(torch.einsum("bnd,bd->bn", H, s_t), mask=_mask(H, lengths))
    return torch.einsum("bn,bnd->bd", alpha_t, H), alpha_t


def _step_masked(s_t, H, keep):
    e = torch.einsum("bnd,bd->bn", H, s_t).masked_fill(~keep, float("-inf"))
    alpha_t = torch.nan_to_num(torch.softmax(e, -1))
    return (alpha_t.unsqueeze(-1) * H).sum(1), alpha_t


def dec_nan_rows(S, H, lengths):
    alpha = torch.softmax((S @ H.mT).masked_fill(~_dec_mask(H, lengths), float("-inf")), -1)
    return alpha @ H, alpha


def dec_minus_1e9(S, H, lengths):
    alpha = torch.softmax((S @ H.mT).masked_fill(~_dec_mask(H, lengths), -1e9), -1)
    return alpha @ H, alpha


def dec_batch_axis(S, H, lengths):
    alpha = torch.nan_to_num(torch.softmax((S @ H.mT).masked_fill(~_dec_mask(H, lengths), float("-inf")), 0))
    return alpha @ H, alpha


def dec_previous_state(S, H, lengths):
    prev = F.pad(S, (0, 0, 1, 0))[:, :-1]  # s_0 = 0, then s_1 .. s_{T-1}
    alpha = torch.nan_to_num(
        torch.softmax((prev @ H.mT).masked_fill(~_dec_mask(H, lengths), float("-inf")), -1)
    )
    return alpha @ H, alpha


def out_sigmoid_act(a_t, s_t, W_c, b_c, W_y, b_y):
    s_tilde = torch.sigmoid(torch.cat([a_t, s_t], -1) @ W_c.T + b_c)
    return torch.softmax(s_tilde @ W_y.T + b_y, -1)


def out_swapped_biases(a_t, s_t, W_c, b_c, W_y, b_y):
    s_tilde = torch.tanh(torch.cat([a_t, s_t], -1) @ W_c.T + b_y)
    return torch.softmax(s_tilde @ W_y.T + b_c, -1)


def out_log_softmax(a_t, s_t, W_c, b_c, W_y, b_y):
    s_tilde = torch.tanh(torch.cat([a_t, s_t], -1) @ W_c.T + b_c)
    return F.log_softmax(s_tilde @ W_y.T + b_y, -1)


def out_sigmoid_final(a_t, s_t, W_c, b_c, W_y, b_y):
    s_tilde = torch.tanh(torch.cat([a_t, s_t], -1) @ W_c.T + b_c)
    return torch.sigmoid(s_tilde @ W_y.T + b_y)


def out_float32_inside(a_t, s_t, W_c, b_c, W_y, b_y):
    s_tilde = torch.tanh(torch.cat([a_t, s_t], -1).float() @ W_c.float().T + b_c.float())
    return torch.softmax(s_tilde.double() @ W_y.T + b_y, -1)


# ------------------------------------------------------------------------------ 06.hand_attention_value

ALPHA = [0.1, 0.6, 0.3, 0.0]  # the weights of the by-hand task
H = [[1, 0, 1, 0], [0, 1, 0, 1], [1, 1, 0, 0], [0, 0, 1, 2]]  # h_1..h_4


def weighted_sum(weights):
    return [sum(w * h[k] for w, h in zip(weights, H)) for k in range(4)]


def hand_softmax(scores):
    exps = [math.exp(x) for x in scores]
    return [x / sum(exps) for x in exps]


WRONG = {
    "06.attention_value": [
        ("mean over the values", value_mean, "plain_average", "plain average"),
        ("mean, repeated per query", value_mean_repeated, "plain_average", "Σ_i α_i v_i"),
        ("weights transposed", value_transposed_weights, "weights_transposed", "transposed"),
        ("sum over dim 1", value_sum_dim1, "summed_over_queries", "over the queries"),
        ("products not summed", value_products, "not_summed", "did not add"),
        ("sum without weights", value_sum_no_weights, "unweighted_sum", "without weighting"),
        ("einsum keeps k", value_einsum_wrong, "wrong_shape", "should have shape"),
        ("NumPy", value_numpy, "wrong_type", "NumPy"),
        ("float32", value_float32, "wrong_dtype", "float32"),
        ("detached", value_detached, "breaks_autograd", "autograd"),
        ("in-place ops on the inputs", value_in_place, "mutates_input", "in place"),
        ("nested Python lists", value_nested_loops, "wrong_type", "torch.Tensor"),
        ("values @ weights", lambda weights, values: values @ weights, "raised", "RuntimeError"),
        ("divided by the weight sum", value_renormalised, "renormalised_empty_row", "0/0"),
        (
            "softmax of the weights",
            lambda weights, values: torch.softmax(weights, -1) @ values,
            "softmax_again",
            "already are weights",
        ),
        (
            "divided by T_k",
            lambda weights, values: torch.bmm(weights, values) / weights.shape[-1],
            "divided_by_T_k",
            "number of keys",
        ),
        ("the first sentence's values", value_first_sentence, "first_sentence_values", "first sentence"),
        ("float32 inside", value_float32_inside, "float32_computation", "float32"),
    ],
    "06.dot_product_attention": [
        ("weighted sum of the keys", dpa_keys, "value_from_keys", "weighted sum of the keys"),
        ("(alpha, a)", dpa_swapped, "swapped_outputs", "(output, weights)"),
        ("softmax over dim 1", dpa_dim1, "wrong_axis", "over queries, not keys"),
        ("scaled by √d_k", dpa_scaled, "scaled", "without scaling"),
        ("scores as weights", dpa_scores_as_weights, "no_softmax", "raw scores"),
        ("exp without the max", dpa_naive, "overflow", "overflows"),
        ("only the value", dpa_value_only, "wrong_type", "2 values"),
        ("returns Q", dpa_uses_q_for_values, "wrong_shape", "should have shape"),
        ("Q @ K", dpa_no_transpose, "raised", "RuntimeError"),
        ("None", lambda Q, K, V: None, "returned_none", "return"),
        ("sigmoid weights", dpa_sigmoid, "sigmoid", "sigmoid"),
        (
            "scores over their sum",
            lambda Q, K, V: (lambda e: ((e / e.sum(-1, keepdim=True)) @ V, e / e.sum(-1, keepdim=True)))(
                Q @ K.mT
            ),
            "no_exp",
            "without taking exp",
        ),
        (
            "scores times values",
            lambda Q, K, V: ((Q @ K.mT) @ V, torch.softmax(Q @ K.mT, -1)),
            "value_from_scores",
            "raw scores",
        ),
        (
            "F.scaled_dot_product_attention's default scale",
            lambda Q, K, V: (F.scaled_dot_product_attention(Q, K, V), torch.softmax(Q @ K.mT, -1)),
            "scaled",
            "scale",
        ),
        ("log_softmax weights", dpa_log_softmax, "log_softmax", "log-probabilities"),
        ("softmax over the batch", dpa_batch_axis, "softmax_over_batch", "batch axis"),
        ("the first sentence's keys", dpa_first_sentence, "first_sentence_keys", "first sentence"),
        ("float32 inside", dpa_float32_inside, "float32_computation", "float32"),
    ],
    "06.attention_step": [
        ("padding not masked", step_no_mask, "padding_not_masked", "padding is not masked"),
        ("mask after the softmax", step_mask_after, "mask_after_softmax", "before the softmax"),
        ("softmax over dim 0", step_softmax_dim0, "softmax_over_batch", "batch axis"),
        ("average of the valid states", step_average, "plain_average", "averaged"),
        ("average of all states", step_average_all, "plain_average", "averaged"),
        ("(alpha_t, a_t)", step_swapped, "swapped_outputs", "Keep α (weights) and a (value) apart"),
        ("alpha_t @ H", step_matmul_2d, "mixes_batch_items", "(B, B, d)"),
        ("NaN for length 0", step_nan_rows, "nan_fully_masked", "length 0"),
        ("exp(e) * mask", step_naive, "overflow", "overflows"),
        (
            "value weighted by the scores",
            step_value_from_scores,
            "value_not_weighted_sum",
            "your own weights",
        ),
        ("encoder's last state as the query", step_last_state_query, "wrong_values", "is wrong"),
        ("zeroes the padding of H in place", step_in_place, "mutates_input", "`H`"),
        ("fill with -1e9", step_minus_1e9, "large_negative_fill", "uniform"),
        ("max over the padding too", step_max_over_padding, "max_includes_masked", "padded scores"),
        ("sentence 0's states for all", step_first_sentence, "first_sentence_states", "first sentence"),
        (
            "positions <= length",
            lambda s_t, H, lengths: _step_masked(s_t, H, torch.arange(H.shape[1]) <= lengths[:, None]),
            "off_by_one",
            "not <=",
        ),
        (
            "positions < length - 1",
            lambda s_t, H, lengths: _step_masked(s_t, H, torch.arange(H.shape[1]) < lengths[:, None] - 1),
            "off_by_one",
            "length - 1",
        ),
    ],
    "06.decoder_attention": [
        ("weights from s_1 only", dec_first_state, "static_query", "first decoder state"),
        ("weights from s_T only", dec_last_state, "static_query", "last decoder state"),
        ("weights from the mean state", dec_mean_state, "static_query", "every step t"),
        ("H.view(B, d, N)", dec_reshape, "reshape_not_transpose", "transposed"),
        ("padding not masked", dec_no_mask, "padding_not_masked", "padding is not masked"),
        ("softmax over the steps", dec_dim1, "wrong_axis", "over the decoder steps"),
        ("(alpha, a)", dec_swapped, "swapped_outputs", "(output, weights)"),
        ("alpha (B, N, T)", dec_alpha_transposed, "transposed", "swapped (transposed)"),
        (
            "S @ H",
            lambda S, H, lengths: (torch.softmax(S @ H, -1) @ H, torch.softmax(S @ H, -1)),
            "raised",
            "RuntimeError",
        ),
        ("NaN for length 0", dec_nan_rows, "nan_fully_masked", "length 0"),
        ("fill with -1e9", dec_minus_1e9, "large_negative_fill", "uniform"),
        ("softmax over the batch", dec_batch_axis, "softmax_over_batch", "batch axis"),
        ("query s_{t-1}", dec_previous_state, "previous_state_query", "s_{t-1}"),
        (
            "positions <= length",
            lambda S, H, lengths: (lambda a: (a @ H, a))(
                _soft(S @ H.mT, (torch.arange(H.shape[1]) <= lengths[:, None])[:, None, :])
            ),
            "off_by_one",
            "not <=",
        ),
    ],
    "06.luong_output": [
        ("[s_t; a_t]", out_order, "wrong_concat_order", "[a_t; s_t]"),
        ("no tanh", out_no_tanh, "missing_tanh", "tanh"),
        ("logits", out_logits, "returned_logits", "logits"),
        ("softmax over dim 0", out_dim0, "softmax_over_batch", "batch axis"),
        ("no b_c", out_no_b_c, "missing_b_c", "b_c"),
        ("no b_y", out_no_b_y, "missing_b_y", "b_y"),
        ("exp without the max", out_naive, "overflow", "overflows"),
        ("W not transposed", out_no_transpose, "raised", "RuntimeError"),
        ("a_t + s_t instead of the concatenation", out_sum_not_concat, "sum_not_concat", "concatenating"),
        ("argmax", out_argmax, "wrong_dtype", "torch.int64"),
        ("ReLU instead of tanh", out_relu, "relu_not_tanh", "ReLU"),
        ("sigmoid instead of tanh", out_sigmoid_act, "sigmoid_not_tanh", "sigmoid"),
        ("biases swapped", out_swapped_biases, "swapped_biases", "swapped the biases"),
        (
            "b_c after the tanh",
            lambda a_t, s_t, W_c, b_c, W_y, b_y: torch.softmax(
                (torch.tanh(torch.cat([a_t, s_t], -1) @ W_c.T) + b_c) @ W_y.T + b_y, -1
            ),
            "bias_after_tanh",
            "inside",
        ),
        ("log_softmax", out_log_softmax, "log_softmax", "log-probabilities"),
        ("sigmoid on the logits", out_sigmoid_final, "sigmoid", "sigmoid"),
        ("float32 inside", out_float32_inside, "float32_computation", "float32"),
    ],
    "06.hand_attention_value": [
        ("the weights", lambda: ALPHA, "returned_weights", "not the attention value"),
        ("columns of H", lambda: [0.4, 0.6, 0.7, 0.3], "columns_not_rows", "columns"),
        ("average of h_i", lambda: weighted_sum([0.25] * 4), "plain_average", "plain average"),
        ("sum of h_i", lambda: [2.0, 2.0, 2.0, 3.0], "unweighted_sum", "without weights"),
        (
            "the worked example's a_3",
            lambda: [0.1509, 0.2119, 0.7881, 1.5433],
            "worked_example_a3",
            "own weights",
        ),
        ("the decoder state s_3", lambda: [0.0, 0.5, 1.0, 1.0], "wrong_values", "is wrong"),
        ("only the largest weight", lambda: [0.0, 1.0, 0.0, 1.0], "hard_attention", "largest weight"),
        (
            "weighted by the scores [1, 3, -1, 2]",
            lambda: weighted_sum([1.0, 3.0, -1.0, 2.0]),
            "weighted_by_scores",
            "other numbers",
        ),
        ("a tuple of three", lambda: (0.4, 0.9, 0.1), "wrong_length", "asks for 4 (the d = 4 components"),
    ],
}

CORRECT = {
    "06.attention_value": [
        lambda weights, values: torch.einsum("bqk,bkd->bqd", weights, values),
        lambda weights, values: (weights.unsqueeze(-1) * values.unsqueeze(1)).sum(2),
        torch.bmm,
    ],
    "06.dot_product_attention": [
        lambda Q, K, V: (lambda al: (al @ V, al))(torch.softmax(torch.einsum("bqd,bkd->bqk", Q, K), -1)),
        lambda Q, K, V: (F.scaled_dot_product_attention(Q, K, V, scale=1.0), torch.softmax(Q @ K.mT, -1)),
    ],
    "06.attention_step": [
        lambda s_t, H, lengths: (lambda al: (torch.bmm(al.unsqueeze(1), H).squeeze(1), al))(
            torch.nan_to_num(
                torch.softmax(
                    torch.bmm(H, s_t.unsqueeze(2)).squeeze(2).masked_fill(~_mask(H, lengths), float("-inf")),
                    -1,
                )
            )
        ),
        step_book_softmax,
    ],
    "06.decoder_attention": [dec_python_loop_over_steps],
    "06.luong_output": [
        lambda a_t, s_t, W_c, b_c, W_y, b_y: torch.softmax(
            F.linear(torch.tanh(F.linear(torch.cat([a_t, s_t], 1), W_c, b_c)), W_y, b_y), dim=1
        ),
    ],
    "06.hand_attention_value": [lambda: weighted_sum(ALPHA), lambda: [0.4, 0.9, 0.1, 0.6]],
}


def test_infinite_loop_is_stopped():
    task = dataclasses.replace(get_task("06.attention_step"), timeout_s=0.5)
    result = run_task(task, loops_forever)
    assert result.diagnosis == "timeout" and "stopped twice, after 0.5 s each time" in result.message


def test_a_learner_exception_is_one_line_naming_it():
    def bad_index(weights, values):
        return weights[3] @ values  # IndexError on a batch of 2

    result = run_task(get_task("06.attention_value"), bad_index)
    assert result.diagnosis == "raised" and "IndexError" in result.message and "\n" not in result.message


def test_numpy_arrays_are_not_accepted_for_a_tuple_output():
    def numpy_step(s_t, H, lengths):
        alpha_t = np.zeros(tuple(H.shape[:2]))
        return alpha_t, np.zeros((H.shape[0], H.shape[2]))

    result = run_task(get_task("06.attention_step"), numpy_step)
    assert result.diagnosis == "wrong_type" and "`a_t`" in result.message


# Wrong answers that match no known misconception: the property checks must name what is wrong.
def _keep(lengths, n):
    return torch.arange(n)[None, :] < lengths[:, None]


def _soft(x, mask=None):
    if mask is not None:
        x = x.masked_fill(~mask, float("-inf"))
    return torch.nan_to_num(torch.softmax(x, -1))


def _step(s_t, H, lengths, damp=1.0, value_factor=1.0):
    alpha = damp * _soft((H @ s_t.unsqueeze(-1)).squeeze(-1), _keep(lengths, H.shape[1]))
    return value_factor * (alpha.unsqueeze(-1) * H).sum(1), alpha


WRONG["06.dot_product_attention"] += [
    (
        "damped weights",
        lambda Q, K, V: (lambda a: (a @ V, a))(0.9 * torch.softmax(Q @ K.transpose(1, 2), -1)),
        "not_normalised",
        "do not sum to 1",
    ),
]
WRONG["06.attention_step"] += [
    (
        "damped weights",
        lambda s_t, H, lengths: _step(s_t, H, lengths, damp=0.9),
        "not_normalised",
        "do not sum to 1",
    ),
    (
        "value doubled",
        lambda s_t, H, lengths: _step(s_t, H, lengths, value_factor=2.0),
        "value_not_weighted_sum",
        "weighted sum",
    ),
]
WRONG["06.decoder_attention"] += [
    (
        "damped weights",
        lambda S, H, lengths: (lambda a: (a @ H, a))(
            0.9 * _soft(S @ H.transpose(1, 2), _keep(lengths, H.shape[1])[:, None, :])
        ),
        "not_normalised",
        "do not sum to 1",
    ),
]
WRONG["06.luong_output"] += [
    (
        "damped probabilities",
        lambda a_t, s_t, W_c, b_c, W_y, b_y: (
            0.9 * torch.softmax(torch.tanh(torch.cat([a_t, s_t], -1) @ W_c.T + b_c) @ W_y.T + b_y, -1)
        ),
        "not_normalised",
        "over the vocabulary",
    ),
]
WRONG["06.decoder_attention"] += [
    (
        "value doubled",
        lambda S, H, lengths: (lambda a: (2 * (a @ H), a))(
            _soft(S @ H.transpose(1, 2), _keep(lengths, H.shape[1])[:, None, :])
        ),
        "value_not_weighted_sum",
        "weighted sum",
    ),
]


# Hold-out classes the red team found unnamed or misnamed (issue 14): written here as a learner would.
def step_first_sentence_length(s_t, H, lengths):
    n = int(lengths[0])  # "the length of the batch"
    keep = torch.arange(H.shape[1]).expand(H.shape[0], -1) < n
    e = torch.bmm(H, s_t.unsqueeze(-1)).squeeze(-1).masked_fill(~keep, float("-inf"))
    alpha = torch.nan_to_num(torch.softmax(e, -1))
    return torch.bmm(alpha.unsqueeze(1), H).squeeze(1), alpha


def step_shortest_length(s_t, H, lengths):
    keep = torch.arange(H.shape[1])[None, :] < lengths.min()
    e = torch.einsum("bd,bnd->bn", s_t, H).masked_fill(~keep, float("-inf"))
    alpha = torch.nan_to_num(torch.softmax(e, -1))
    return torch.einsum("bn,bnd->bd", alpha, H), alpha


def out_softmax_twice(a_t, s_t, W_c, b_c, W_y, b_y):
    probs = torch.softmax(torch.tanh(torch.cat([a_t, s_t], -1) @ W_c.T + b_c) @ W_y.T + b_y, -1)
    return F.softmax(probs, dim=-1)  # "make sure it is a distribution"


WRONG["06.attention_step"] += [
    (
        "lengths[0] for every sentence",
        step_first_sentence_length,
        "one_length_for_all",
        "one and the same length",
    ),
    ("the shortest length for all", step_shortest_length, "one_length_for_all", "lengths[b]"),
]
WRONG["06.luong_output"] += [
    ("softmax twice", out_softmax_twice, "softmax_twice", "softmax twice"),
]
WRONG["06.hand_attention_value"] += [
    (
        "weights in reverse order",
        lambda: weighted_sum(list(reversed(ALPHA))),
        "wrong_pairing",
        "reverse order",
    ),
    (
        "weights shifted by one state",
        lambda: weighted_sum(ALPHA[1:] + ALPHA[:1]),
        "wrong_pairing",
        "wrong states",
    ),
]


# ------------------------------------------------------------------ red team, round 2 (the grader's fixes)


def _masked_weights(scores, keep):
    return torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=-1).nan_to_num(0.0)


def dpa_three_values(Q, K, V):
    alpha = torch.softmax(Q @ K.transpose(-1, -2), dim=-1)
    return alpha @ V, alpha, None


def step_scaled_by_sqrt_d(s_t, H, lengths):
    scores = (H @ s_t.unsqueeze(-1)).squeeze(-1) / math.sqrt(H.shape[-1])  # "always scale"
    alpha = _masked_weights(scores, torch.arange(H.shape[1])[None, :] < lengths[:, None])
    return (alpha.unsqueeze(-1) * H).sum(1), alpha


def dec_causal_mask(S, H, lengths):
    scores = S @ H.transpose(1, 2)
    T, N = scores.shape[-2:]
    keep = (torch.arange(N)[None, None, :] < lengths[:, None, None]) & torch.ones(
        T, N, dtype=torch.bool
    ).tril()
    alpha = _masked_weights(scores, keep)
    return alpha @ H, alpha


WRONG["06.dot_product_attention"] += [
    (
        "returns (a, alpha, None)",
        dpa_three_values,
        "too_many_outputs",
        "returns 3 values, but this task asks for 2 (`a`, `alpha`)",
    ),
]
WRONG["06.attention_step"] += [
    ("scores divided by sqrt(d)", step_scaled_by_sqrt_d, "scaled", "divided the scores by √d"),
]
WRONG["06.decoder_attention"] += [
    ("a causal mask over the source", dec_causal_mask, "causal_mask", "causal (look-ahead) mask"),
]
WRONG["06.hand_attention_value"] += [
    (
        "a 4×4 table of zeros",
        lambda: [[0.0] * 4 for _ in range(4)],
        "wrong_shape",
        "one flat list of 4 numbers (the d = 4",
    ),
    (
        "each state weighted, not added up",
        lambda: [[w * x for x in h] for w, h in zip(ALPHA, H)],
        "not_summed",
        "did not add them up",
    ),
]


# ------------------------------------------------------------------ red team, round 4 (sibling gaps)


def dpa_returns_the_scores(Q, K, V):
    scores = Q @ K.transpose(1, 2)
    a = torch.softmax(scores, dim=-1) @ V
    return a, scores  # "alpha": the scores, before the softmax


def dpa_keys_reshaped(Q, K, V):
    B, T_k, d = K.shape
    alpha = torch.softmax(Q @ K.reshape(B, d, T_k), dim=-1)  # "K as (B, d, T_k)"
    return alpha @ V, alpha


WRONG["06.dot_product_attention"] += [
    ("the scores returned as alpha", dpa_returns_the_scores, "returned_scores", "before the softmax"),
    ("K reshaped instead of transposed", dpa_keys_reshaped, "reshape_not_transpose", "reshape/view"),
]
