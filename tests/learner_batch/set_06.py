"""Set 06, the attention value: learner-style answers.

The order of the returned pair follows the exercise text (``(alpha, a)`` or ``(a, alpha)``), read from the
exercise notebook as a learner reads it; "swapped order" answers return the other order.
"""

import math

import torch

from ._conventions import numbers_in_text, task_id, weights_first_06

SET = "06"


def _t(fn_name):
    return task_id(SET, fn_name)


NEG_INF = float("-inf")


def _pair(task, alpha, a):
    return (alpha, a) if weights_first_06(task) else (a, alpha)


def _swapped(task, alpha, a):
    return (a, alpha) if weights_first_06(task) else (alpha, a)


# ---------------------------------------------------------------- 06.attention_value(weights, values)
def value_weights_transposed(weights, values):
    return weights.transpose(-1, -2) @ values


def value_plain_average(weights, values):
    return values.mean(dim=1, keepdim=True).expand(-1, weights.shape[1], -1)


def value_divided_again(weights, values):
    return weights @ values / values.shape[1]


def value_sum_over_queries(weights, values):
    return (weights.unsqueeze(-1) * values.unsqueeze(1)).sum(dim=1)


def value_first_sentence(weights, values):
    return torch.einsum("bqk,kd->bqd", weights, values[0])


def value_T(weights, values):
    return weights @ values.T


def value_numpy(weights, values):
    import numpy as np

    return torch.from_numpy(np.matmul(weights.detach().numpy(), values.detach().numpy()))


def value_book(weights, values):
    from attnbook.attention import attention_value

    return attention_value(weights, values)


def value_valid_einsum(weights, values):
    return torch.einsum("bqk,bkd->bqd", weights, values)


def value_valid_broadcast(weights, values):
    return (weights.unsqueeze(-1) * values.unsqueeze(1)).sum(dim=2)


# ---------------------------------------------------------------- 06.dot_product_attention(Q, K, V)
DPA = "dot_product_attention"


def dpa_keys_as_values(Q, K, V):
    alpha = torch.softmax(Q @ K.transpose(-1, -2), dim=-1)
    return _pair(DPA, alpha, alpha @ K)


def dpa_scaled(Q, K, V):
    alpha = torch.softmax(Q @ K.transpose(-1, -2) / math.sqrt(K.shape[-1]), dim=-1)
    return _pair(DPA, alpha, alpha @ V)


def dpa_softmax_queries(Q, K, V):
    alpha = torch.softmax(Q @ K.transpose(-1, -2), dim=1)
    return _pair(DPA, alpha, alpha @ V)


def dpa_softmax_batch(Q, K, V):
    alpha = torch.softmax(Q @ K.transpose(-1, -2), dim=0)
    return _pair(DPA, alpha, alpha @ V)


def dpa_swapped(Q, K, V):
    alpha = torch.softmax(Q @ K.transpose(-1, -2), dim=-1)
    return _swapped(DPA, alpha, alpha @ V)


def dpa_scores_times_values(Q, K, V):
    scores = Q @ K.transpose(-1, -2)
    return _pair(DPA, torch.softmax(scores, dim=-1), scores @ V)


def dpa_torch_sdpa_default_scale(Q, K, V):
    a = torch.nn.functional.scaled_dot_product_attention(Q, K, V)
    alpha = torch.softmax(Q @ K.transpose(-1, -2), dim=-1)
    return _pair(DPA, alpha, a)


def dpa_debug_backward(Q, K, V):
    alpha = torch.softmax(Q @ K.transpose(-1, -2), dim=-1)
    a = alpha @ V
    if a.requires_grad:  # checking that gradients flow, left in
        a.sum().backward(retain_graph=True)
    return _pair(DPA, alpha, a)


def dpa_valid_einsum(Q, K, V):
    alpha = torch.softmax(torch.einsum("bqd,bkd->bqk", Q, K), dim=-1)
    return _pair(DPA, alpha, torch.einsum("bqk,bkv->bqv", alpha, V))


def dpa_valid_torch_sdpa(Q, K, V):
    a = torch.nn.functional.scaled_dot_product_attention(Q, K, V, scale=1.0)
    alpha = torch.softmax(Q @ K.transpose(-1, -2), dim=-1)
    return _pair(DPA, alpha, a)


# ---------------------------------------------------------------- 06.attention_step(s_t, H, lengths)
STEP = "attention_step"


def _len_mask(lengths, N):
    return torch.arange(N)[None, :] < lengths[:, None]  # (B, N)


def step_alpha_at_H(s_t, H, lengths):
    e = torch.einsum("bd,bnd->bn", s_t, H).masked_fill(~_len_mask(lengths, H.shape[1]), NEG_INF)
    alpha = torch.nan_to_num(torch.softmax(e, dim=-1), nan=0.0)
    return _pair(STEP, alpha, alpha @ H)


def step_no_padding(s_t, H, lengths):
    alpha = torch.softmax(torch.einsum("bd,bnd->bn", s_t, H), dim=-1)
    return _pair(STEP, alpha, (alpha.unsqueeze(-1) * H).sum(1))


def step_length0_nan(s_t, H, lengths):
    e = torch.einsum("bd,bnd->bn", s_t, H).masked_fill(~_len_mask(lengths, H.shape[1]), NEG_INF)
    alpha = torch.softmax(e, dim=-1)
    return _pair(STEP, alpha, (alpha.unsqueeze(-1) * H).sum(1))


def step_off_by_one(s_t, H, lengths):
    mask = torch.arange(H.shape[1])[None, :] <= lengths[:, None]
    e = torch.einsum("bd,bnd->bn", s_t, H).masked_fill(~mask, NEG_INF)
    alpha = torch.nan_to_num(torch.softmax(e, dim=-1), nan=0.0)
    return _pair(STEP, alpha, (alpha.unsqueeze(-1) * H).sum(1))


def step_mask_after_softmax(s_t, H, lengths):
    alpha = torch.softmax(torch.einsum("bd,bnd->bn", s_t, H), dim=-1) * _len_mask(lengths, H.shape[1])
    return _pair(STEP, alpha, (alpha.unsqueeze(-1) * H).sum(1))


def step_first_length(s_t, H, lengths):
    mask = (torch.arange(H.shape[1]) < lengths[0]).expand(H.shape[0], -1)
    e = torch.einsum("bd,bnd->bn", s_t, H).masked_fill(~mask, NEG_INF)
    alpha = torch.nan_to_num(torch.softmax(e, dim=-1), nan=0.0)
    return _pair(STEP, alpha, (alpha.unsqueeze(-1) * H).sum(1))


def step_swapped(s_t, H, lengths):
    alpha, a = _step_core(s_t, H, lengths)
    return _swapped(STEP, alpha, a)


def _step_core(s_t, H, lengths):
    e = torch.einsum("bd,bnd->bn", s_t, H).masked_fill(~_len_mask(lengths, H.shape[1]), NEG_INF)
    alpha = torch.nan_to_num(torch.softmax(e, dim=-1), nan=0.0)
    return alpha, (alpha.unsqueeze(1) @ H).squeeze(1)


def step_valid(s_t, H, lengths):
    return _pair(STEP, *_step_core(s_t, H, lengths))


def step_valid_loop(s_t, H, lengths):
    B, N, d = H.shape
    alphas, values = [], []
    for b in range(B):
        n = int(lengths[b])
        alpha = H.new_zeros(N)
        if n > 0:
            alpha = torch.cat([torch.softmax(H[b, :n] @ s_t[b], dim=0), H.new_zeros(N - n)])
        alphas.append(alpha)
        values.append(alpha @ H[b])
    return _pair(STEP, torch.stack(alphas), torch.stack(values))


# ---------------------------------------------------------------- 06.decoder_attention(S, H, lengths)
DEC = "decoder_attention"


def _dec(S_query, H, lengths, fill=NEG_INF):
    mask = _len_mask(lengths, H.shape[1])[:, None, :]
    e = (S_query @ H.transpose(1, 2)).masked_fill(~mask, fill)
    alpha = torch.nan_to_num(torch.softmax(e, dim=-1), nan=0.0)
    return alpha, alpha @ H


def dec_static_query(S, H, lengths):
    alpha, a = _dec(S[:, -1:, :].expand(-1, S.shape[1], -1), H, lengths)
    return _pair(DEC, alpha, a)


def dec_reshape(S, H, lengths):
    mask = _len_mask(lengths, H.shape[1])[:, None, :]
    e = (S @ H.reshape(H.shape[0], H.shape[2], H.shape[1])).masked_fill(~mask, NEG_INF)
    alpha = torch.nan_to_num(torch.softmax(e, dim=-1), nan=0.0)
    return _pair(DEC, alpha, alpha @ H)


def dec_T(S, H, lengths):
    mask = _len_mask(lengths, H.shape[1])[:, None, :]
    e = (S @ H.T).masked_fill(~mask, NEG_INF)
    alpha = torch.nan_to_num(torch.softmax(e, dim=-1), nan=0.0)
    return _pair(DEC, alpha, alpha @ H)


def dec_softmax_steps(S, H, lengths):
    mask = _len_mask(lengths, H.shape[1])[:, None, :]
    e = (S @ H.transpose(1, 2)).masked_fill(~mask, NEG_INF)
    alpha = torch.nan_to_num(torch.softmax(e, dim=1), nan=0.0)
    return _pair(DEC, alpha, alpha @ H)


def dec_previous_state(S, H, lengths):
    S_prev = torch.cat([torch.zeros_like(S[:, :1]), S[:, :-1]], dim=1)
    return _pair(DEC, *_dec(S_prev, H, lengths))


def dec_length0_nan(S, H, lengths):
    mask = _len_mask(lengths, H.shape[1])[:, None, :]
    alpha = torch.softmax((S @ H.transpose(1, 2)).masked_fill(~mask, NEG_INF), dim=-1)
    return _pair(DEC, alpha, alpha @ H)


def dec_swapped(S, H, lengths):
    return _swapped(DEC, *_dec(S, H, lengths))


def dec_valid_steps_loop(S, H, lengths):
    alphas, values = [], []
    for t in range(S.shape[1]):
        alpha, a = _step_core(S[:, t], H, lengths)
        alphas.append(alpha)
        values.append(a)
    if not alphas:
        return _pair(DEC, S.new_zeros(S.shape[0], 0, H.shape[1]), S.new_zeros(S.shape[0], 0, H.shape[2]))
    return _pair(DEC, torch.stack(alphas, 1), torch.stack(values, 1))


def dec_valid_finfo(S, H, lengths):
    mask = _len_mask(lengths, H.shape[1])[:, None, :]
    e = torch.einsum("btd,bnd->btn", S, H).masked_fill(~mask, torch.finfo(S.dtype).min)
    alpha = torch.softmax(e, dim=-1) * mask
    return _pair(DEC, alpha, torch.einsum("btn,bnd->btd", alpha, H))


# ---------------------------------------------------------------- 06.luong_output
def luong_swapped_concat(a_t, s_t, W_c, b_c, W_y, b_y):
    s_tilde = torch.tanh(torch.cat([s_t, a_t], -1) @ W_c.T + b_c)
    return torch.softmax(s_tilde @ W_y.T + b_y, dim=-1)


def luong_relu(a_t, s_t, W_c, b_c, W_y, b_y):
    s_tilde = torch.relu(torch.cat([a_t, s_t], -1) @ W_c.T + b_c)
    return torch.softmax(s_tilde @ W_y.T + b_y, dim=-1)


def luong_swapped_biases(a_t, s_t, W_c, b_c, W_y, b_y):
    s_tilde = torch.tanh(torch.cat([a_t, s_t], -1) @ W_c.T + b_y)
    return torch.softmax(s_tilde @ W_y.T + b_c, dim=-1)


def luong_no_transpose(a_t, s_t, W_c, b_c, W_y, b_y):
    s_tilde = torch.tanh(torch.cat([a_t, s_t], -1) @ W_c + b_c)
    return torch.softmax(s_tilde @ W_y + b_y, dim=-1)


def luong_logits(a_t, s_t, W_c, b_c, W_y, b_y):
    s_tilde = torch.tanh(torch.cat([a_t, s_t], -1) @ W_c.T + b_c)
    return s_tilde @ W_y.T + b_y


def luong_softmax_batch(a_t, s_t, W_c, b_c, W_y, b_y):
    s_tilde = torch.tanh(torch.cat([a_t, s_t], -1) @ W_c.T + b_c)
    return torch.softmax(s_tilde @ W_y.T + b_y, dim=0)


def luong_log_softmax(a_t, s_t, W_c, b_c, W_y, b_y):
    s_tilde = torch.tanh(torch.cat([a_t, s_t], -1) @ W_c.T + b_c)
    return torch.log_softmax(s_tilde @ W_y.T + b_y, dim=-1)


def luong_sigmoid(a_t, s_t, W_c, b_c, W_y, b_y):
    s_tilde = torch.tanh(torch.cat([a_t, s_t], -1) @ W_c.T + b_c)
    return torch.sigmoid(s_tilde @ W_y.T + b_y)


def luong_sum_not_concat(a_t, s_t, W_c, b_c, W_y, b_y):
    d = a_t.shape[-1]
    s_tilde = torch.tanh((a_t + s_t) @ W_c[:, :d].T + b_c)
    return torch.softmax(s_tilde @ W_y.T + b_y, dim=-1)


def luong_valid_linear(a_t, s_t, W_c, b_c, W_y, b_y):
    F = torch.nn.functional
    s_tilde = torch.tanh(F.linear(torch.cat([a_t, s_t], dim=1), W_c, b_c))
    return F.softmax(F.linear(s_tilde, W_y, b_y), dim=1)


def luong_valid_split(a_t, s_t, W_c, b_c, W_y, b_y):
    d = a_t.shape[-1]
    s_tilde = torch.tanh(a_t @ W_c[:, :d].T + s_t @ W_c[:, d:].T + b_c)
    logits = s_tilde @ W_y.T + b_y
    return torch.exp(logits - torch.logsumexp(logits, dim=-1, keepdim=True))


# ---------------------------------------------------------------- 06.hand_attention_value
# The learner reads the weights from the task text and H from the printed worked example.
def _alpha():
    a = numbers_in_text("06", "hand_attention_value")
    return a if a is not None else [0.0939, 0.1549, 0.0570, 0.6942]


def _H():
    from attnbook import worked_example as wx

    return wx.encoder_states().tolist()


def _typed(xs):
    return [round(float(x), 4) for x in xs]


def _mix(w, H):
    return _typed(sum(w[i] * H[i][j] for i in range(4)) for j in range(4))


def hand_H_times_alpha():
    w, H = _alpha(), _H()
    return _typed(sum(H[i][j] * w[j] for j in range(4)) for i in range(4))


def hand_weights():
    return _typed(_alpha())


def hand_plain_average():
    return _mix([0.25] * 4, _H())


def hand_hard_attention():
    w = _alpha()
    return _typed(_H()[w.index(max(w))])


def hand_scores_not_weights():
    from ._conventions import numbers_in_text as nums

    e = nums("05", "hand_weights") or [1.0, 1.5, 0.5, 3.0]
    return _mix(e, _H())


def hand_valid():
    return _mix(_alpha(), _H())


WRONG = [
    dict(
        task=_t("attention_value"),
        name="weights_transposed",
        fn=value_weights_transposed,
        cls="only-square shapes",
        mistake="uses the weights transposed (keys as rows)",
    ),
    dict(
        task=_t("attention_value"),
        name="plain_average",
        fn=value_plain_average,
        cls="no attention",
        mistake="averages the values, ignoring the weights",
    ),
    dict(
        task=_t("attention_value"),
        name="divided_again",
        fn=value_divided_again,
        cls="normalisation",
        mistake="divides the weighted sum by the number of keys again",
    ),
    dict(
        task=_t("attention_value"),
        name="sum_over_queries",
        fn=value_sum_over_queries,
        cls="only-square shapes",
        mistake="sums the products over the query axis instead of the key axis",
    ),
    dict(
        task=_t("attention_value"),
        name="first_sentence_values",
        fn=value_first_sentence,
        cls="one sentence's values for all",
        mistake="uses the values of sentence 0 for every sentence",
    ),
    dict(
        task=_t("attention_value"),
        name="dot_T_3d",
        fn=value_T,
        cls=".T on 3-D",
        mistake="uses .T on the 3-D values",
    ),
    dict(
        task=_t("attention_value"),
        name="numpy",
        fn=value_numpy,
        cls=".numpy()",
        mistake="computes with NumPy after detach, no gradient",
    ),
    dict(
        task=_t("attention_value"),
        name="book_import",
        fn=value_book,
        cls="book shortcut",
        mistake="calls the book's attnbook.attention.attention_value",
    ),
    dict(
        task=_t("dot_product_attention"),
        name="keys_as_values",
        fn=dpa_keys_as_values,
        cls="K used as V",
        mistake="mixes the keys instead of the values",
    ),
    dict(
        task=_t("dot_product_attention"),
        name="scaled",
        fn=dpa_scaled,
        cls="wrong scale",
        mistake="scales by sqrt(d_k) although Luong's plain score is asked",
    ),
    dict(
        task=_t("dot_product_attention"),
        name="softmax_queries",
        fn=dpa_softmax_queries,
        cls="wrong axis",
        mistake="softmax over the queries instead of the keys",
    ),
    dict(
        task=_t("dot_product_attention"),
        name="softmax_batch",
        fn=dpa_softmax_batch,
        cls="softmax over batch",
        mistake="softmax over the batch axis",
    ),
    dict(
        task=_t("dot_product_attention"),
        name="swapped_order",
        fn=dpa_swapped,
        cls="swapped tuple order",
        mistake="returns the pair in the other order",
    ),
    dict(
        task=_t("dot_product_attention"),
        name="scores_times_values",
        fn=dpa_scores_times_values,
        cls="weights vs scores",
        mistake="mixes the values with the scores instead of the weights",
    ),
    dict(
        task=_t("dot_product_attention"),
        name="torch_sdpa_default_scale",
        fn=dpa_torch_sdpa_default_scale,
        cls="wrong scale",
        mistake="uses F.scaled_dot_product_attention, which scales by 1/sqrt(d_k)",
    ),
    dict(
        task=_t("dot_product_attention"),
        name="debug_backward",
        fn=dpa_debug_backward,
        cls="input mutation (.grad)",
        mistake="leaves a backward() call in, filling the inputs' .grad",
    ),
    dict(
        task=_t("attention_step"),
        name="alpha_at_H",
        fn=step_alpha_at_H,
        cls="shapes",
        mistake="alpha_t @ H with alpha_t (B, N): broadcasts into (B, B, d)",
    ),
    dict(
        task=_t("attention_step"),
        name="no_padding",
        fn=step_no_padding,
        cls="padding ignored",
        mistake="ignores the lengths: padded positions get weight",
    ),
    dict(
        task=_t("attention_step"),
        name="length0_nan",
        fn=step_length0_nan,
        cls="length 0",
        mistake="a sentence of length 0 gets NaN",
    ),
    dict(
        task=_t("attention_step"),
        name="off_by_one",
        fn=step_off_by_one,
        cls="off by one",
        mistake="keeps position lengths[b] too",
    ),
    dict(
        task=_t("attention_step"),
        name="mask_after_softmax",
        fn=step_mask_after_softmax,
        cls="mask after softmax",
        mistake="zeroes padded weights after the softmax, without renormalising",
    ),
    dict(
        task=_t("attention_step"),
        name="first_length",
        fn=step_first_length,
        cls="one sentence's keys for all",
        mistake="uses lengths[0] for every sentence",
    ),
    dict(
        task=_t("attention_step"),
        name="swapped_order",
        fn=step_swapped,
        cls="swapped tuple order",
        mistake="returns the pair in the other order",
    ),
    dict(
        task=_t("decoder_attention"),
        name="static_query",
        fn=dec_static_query,
        cls="static query",
        mistake="uses the last decoder state as the query of every step",
    ),
    dict(
        task=_t("decoder_attention"),
        name="reshape",
        fn=dec_reshape,
        cls="reshape for transpose",
        mistake="reshapes H to (B, d, N) instead of transposing",
    ),
    dict(
        task=_t("decoder_attention"),
        name="dot_T_3d",
        fn=dec_T,
        cls=".T on 3-D",
        mistake="uses H.T on a 3-D tensor",
    ),
    dict(
        task=_t("decoder_attention"),
        name="softmax_steps",
        fn=dec_softmax_steps,
        cls="wrong axis",
        mistake="softmax over the decoder steps instead of the source positions",
    ),
    dict(
        task=_t("decoder_attention"),
        name="previous_state",
        fn=dec_previous_state,
        cls="shifted query",
        mistake="uses s_{t-1} as the query of step t",
    ),
    dict(
        task=_t("decoder_attention"),
        name="length0_nan",
        fn=dec_length0_nan,
        cls="length 0",
        mistake="a sentence of length 0 gets NaN",
    ),
    dict(
        task=_t("decoder_attention"),
        name="swapped_order",
        fn=dec_swapped,
        cls="swapped tuple order",
        mistake="returns the pair in the other order",
    ),
    dict(
        task=_t("luong_output"),
        name="swapped_concat",
        fn=luong_swapped_concat,
        cls="order of concat",
        mistake="concatenates [s_t; a_t] instead of [a_t; s_t]",
    ),
    dict(
        task=_t("luong_output"),
        name="relu",
        fn=luong_relu,
        cls="ReLU for tanh",
        mistake="ReLU instead of tanh",
    ),
    dict(
        task=_t("luong_output"),
        name="swapped_biases",
        fn=luong_swapped_biases,
        cls="swapped biases",
        mistake="adds b_y in the first layer and b_c in the second",
    ),
    dict(
        task=_t("luong_output"),
        name="no_transpose",
        fn=luong_no_transpose,
        cls="weight layout",
        mistake="multiplies by W instead of W.T",
    ),
    dict(
        task=_t("luong_output"),
        name="logits",
        fn=luong_logits,
        cls="symptom",
        mistake="returns the logits, no softmax",
    ),
    dict(
        task=_t("luong_output"),
        name="softmax_batch",
        fn=luong_softmax_batch,
        cls="softmax over batch",
        mistake="softmax over the batch axis",
    ),
    dict(
        task=_t("luong_output"),
        name="log_softmax",
        fn=luong_log_softmax,
        cls="symptom",
        mistake="returns log-probabilities",
    ),
    dict(
        task=_t("luong_output"),
        name="sigmoid",
        fn=luong_sigmoid,
        cls="symptom",
        mistake="sigmoid instead of softmax",
    ),
    dict(
        task=_t("luong_output"),
        name="sum_not_concat",
        fn=luong_sum_not_concat,
        cls="concat",
        mistake="adds a_t and s_t instead of concatenating them",
    ),
    dict(
        task=_t("hand_attention_value"),
        name="H_times_alpha",
        fn=hand_H_times_alpha,
        cls="transposed",
        mistake="multiplies H by alpha (columns of H) instead of alpha by H",
    ),
    dict(
        task=_t("hand_attention_value"),
        name="weights",
        fn=hand_weights,
        cls="weights vs value",
        mistake="gives the weights instead of the attention value",
    ),
    dict(
        task=_t("hand_attention_value"),
        name="plain_average",
        fn=hand_plain_average,
        cls="no attention",
        mistake="averages the encoder states",
    ),
    dict(
        task=_t("hand_attention_value"),
        name="hard_attention",
        fn=hand_hard_attention,
        cls="argmax",
        mistake="takes only the state with the largest weight",
    ),
    dict(
        task=_t("hand_attention_value"),
        name="scores_not_weights",
        fn=hand_scores_not_weights,
        cls="weights vs scores",
        mistake="weights the states by the scores instead of the weights",
    ),
]

VALID = [
    dict(task=_t("attention_value"), name="einsum", fn=value_valid_einsum),
    dict(task=_t("attention_value"), name="broadcast_sum", fn=value_valid_broadcast),
    dict(task=_t("dot_product_attention"), name="einsum", fn=dpa_valid_einsum),
    dict(task=_t("dot_product_attention"), name="torch_sdpa_scale_1", fn=dpa_valid_torch_sdpa),
    dict(task=_t("attention_step"), name="bmm", fn=step_valid),
    dict(task=_t("attention_step"), name="loop", fn=step_valid_loop),
    dict(task=_t("decoder_attention"), name="steps_loop", fn=dec_valid_steps_loop),
    dict(task=_t("decoder_attention"), name="finfo_min", fn=dec_valid_finfo),
    dict(task=_t("luong_output"), name="F_linear", fn=luong_valid_linear),
    dict(task=_t("luong_output"), name="split_W_c", fn=luong_valid_split),
    dict(task=_t("hand_attention_value"), name="typed", fn=hand_valid),
]
