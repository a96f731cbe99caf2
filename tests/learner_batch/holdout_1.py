"""Hold-out 1: 24 wrong and 4 valid answers written at 14:48, other instances of the batch's classes.

Kept out of the repository until 16:10, so that they measured whether fixes closed classes.
"""

import math

import torch

from learner_batch._conventions import out_in_layout_04, weights_first_06

NEG_INF = float("-inf")


def _soft(x, dim=-1):
    return torch.softmax(x, dim=dim)


# 02
def enc_context_index_off_by_one(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    B, N, _ = embedded.shape
    h = embedded.new_zeros(B, W_hh.shape[1])
    states = []
    for i in range(N):
        h_new = torch.gru_cell(embedded[:, i], h, W_ih, W_hh, b_ih, b_hh)
        real = (i < lengths).unsqueeze(-1)
        h = torch.where(real, h_new, h)
        states.append(torch.where(real, h_new, torch.zeros_like(h_new)))
    H = torch.stack(states, 1)
    return H, H[torch.arange(B), lengths]


def greedy_eos_then_truncate_wrong(step_fn, s_0, sos_id, eos_id, max_len):
    out, y, s = [], sos_id, s_0
    for _ in range(max_len):
        logits, s = step_fn(y, s)
        y = int(logits.argmax())
        out.append(y)
    return [t for t in out if t != eos_id]  # drop every <eos>, keep the rest


# 04
def scaled_float32_scale(Q, K):
    return Q @ K.transpose(-1, -2) / torch.sqrt(torch.tensor(Q.shape[-1]))


def scaled_by_sqrt_B(Q, K):
    return Q @ K.transpose(-1, -2) / math.sqrt(Q.size(0))


def batch_valid_permute(Q, K):
    return torch.matmul(Q, K.permute(0, 2, 1))


def additive_no_activation(Q, K, W_q, W_k, w):
    q, k = (Q @ W_q.T, K @ W_k.T) if out_in_layout_04() else (Q @ W_q, K @ W_k)
    return (q.unsqueeze(2) + k.unsqueeze(1)) @ w


# 05
def soft_max_namedtuple(scores, dim):
    m = scores.max(dim=dim, keepdim=True)
    return scores - m - torch.log(torch.exp(scores - m).sum(dim=dim, keepdim=True))


def soft_keepdim_only_on_sum(scores, dim):
    m = scores.amax(dim=dim)
    return (
        scores - m.unsqueeze(-1) - torch.log(torch.exp(scores - m.unsqueeze(-1)).sum(dim=dim, keepdim=True))
    )


def masked_fill_minus_500(scores, mask):
    w = _soft(scores.masked_fill(~mask, -500.0))
    return w * mask.expand_as(w).any(dim=-1, keepdim=True)


def masked_global_empty_check(scores, mask):
    if not mask.any():
        return torch.zeros_like(scores)
    return _soft(scores.masked_fill(~mask, NEG_INF))


def masked_valid_minus_1e9_then_zero(scores, mask):
    w = _soft(scores.masked_fill(~mask, -1e9))
    return w * mask


def temp_clamped_tau(scores, tau):
    return _soft(scores / max(tau, 0.05))


def lengths_mask_without_query_axis(scores, lengths):
    mask = torch.arange(scores.shape[-1])[None, :] < lengths[:, None]  # (B, T_k)
    return torch.nan_to_num(_soft(scores.masked_fill(~mask, NEG_INF)), nan=0.0)


# 06
def _pair(task, alpha, a):
    return (alpha, a) if weights_first_06(task) else (a, alpha)


def value_transposed_output(weights, values):
    return (values.transpose(1, 2) @ weights.transpose(1, 2)).transpose(1, 2).transpose(1, 2)


def dpa_values_as_keys(Q, K, V):
    alpha = _soft(Q @ V.transpose(-1, -2))
    return _pair("dot_product_attention", alpha, alpha @ V)


def dec_first_state_query(S, H, lengths):
    mask = (torch.arange(H.shape[1])[None, :] < lengths[:, None])[:, None, :]
    e = (S[:, :1].expand(-1, S.shape[1], -1) @ H.transpose(1, 2)).masked_fill(~mask, NEG_INF)
    alpha = torch.nan_to_num(_soft(e), nan=0.0)
    return _pair("decoder_attention", alpha, alpha @ H)


def luong_sigmoid_hidden(a_t, s_t, W_c, b_c, W_y, b_y):
    s_tilde = torch.sigmoid(torch.cat([a_t, s_t], -1) @ W_c.T + b_c)
    return _soft(s_tilde @ W_y.T + b_y)


def luong_softmax_twice(a_t, s_t, W_c, b_c, W_y, b_y):
    s_tilde = torch.tanh(torch.cat([a_t, s_t], -1) @ W_c.T + b_c)
    return _soft(_soft(s_tilde @ W_y.T + b_y))


# 07
def gd_repeats_eos(step, s_0, H, src_mask, E, max_len):
    SOS, EOS = 1, 2
    B = s_0.shape[0]
    y = torch.full((B,), SOS, dtype=torch.long)
    s, done, ids, alphas = s_0, torch.zeros(B, dtype=torch.bool), [], []
    for _ in range(max_len):
        y_hat, s, alpha = step(E[y], s, H, src_mask)
        y = torch.where(done, torch.full_like(y, EOS), y_hat.argmax(-1))  # finished: keep saying EOS
        alphas.append(torch.where(done[:, None], torch.zeros_like(alpha), alpha))
        ids.append(y)
        done = done | (y == EOS)
        if done.all():
            break
    return torch.stack(ids, 1), torch.stack(alphas, 1)


# 08
def sdpa_multiplicative_mask(Q, K, V, mask=None):
    s = Q @ K.transpose(-1, -2) / math.sqrt(Q.shape[-1])
    if mask is not None:
        s = s * mask
    w = _soft(s)
    return w @ V, w


def sdpa_scale_Tq(Q, K, V, mask=None):
    s = Q @ K.transpose(-1, -2) / math.sqrt(Q.shape[-2])
    if mask is not None:
        s = s.masked_fill(~mask, NEG_INF)
    w = _soft(s)
    return w @ V, w


def causal_valid_triu_T(T):
    return torch.ones(T, T, dtype=torch.bool).triu().T


def causal_uint8(T):
    return torch.tril(torch.ones(T, T)).to(torch.uint8)


# 09
def _proj(x, W):
    from learner_batch._conventions import x_at_W_transposed_09

    return x @ W.T if x_at_W_transposed_09() else x @ W


def _mha(x, W_q, W_k, W_v, W_o, h, scale=None, dim=-1):
    Q, K, V = (_proj(x, W).unflatten(-1, (h, -1)).transpose(1, 2) for W in (W_q, W_k, W_v))
    s = Q @ K.transpose(-1, -2) / (math.sqrt(Q.shape[-1]) if scale is None else scale)
    return _proj((_soft(s, dim=dim) @ V).transpose(1, 2).flatten(2), W_o)


def mha_scale_h(x, W_q, W_k, W_v, W_o, h):
    return _mha(x, W_q, W_k, W_v, W_o, h, scale=math.sqrt(h))


def mha_softmax_queries(x, W_q, W_k, W_v, W_o, h):
    return _mha(x, W_q, W_k, W_v, W_o, h, dim=-2)


# 10
def running_split_rows(scores, block_size):
    ms, ls = [], []
    for rows in scores.split(block_size, dim=0):  # "blocks" of rows, every key at once
        m = rows.amax(dim=-1)
        ms.append(m)
        ls.append(torch.exp(rows - m[:, None]).sum(-1))
    return torch.cat(ms), torch.cat(ls)


def online_split_batch(Q, K, V, block_size):
    outs = []
    for Qb, Kb, Vb in zip(Q.split(block_size), K.split(block_size), V.split(block_size)):
        w = _soft(Qb @ Kb.transpose(1, 2) / math.sqrt(Q.shape[-1]))
        outs.append(w @ Vb)
    return torch.cat(outs)


def combine_one_empty_guard(m1, l1, m2, l2):
    m = torch.maximum(m1, m2)
    l = l1 * torch.exp(m1 - m) + l2 * torch.exp(m2 - m)
    return m, torch.where(l1 == 0, l2, l)  # "an empty first part adds nothing"


WRONG = [
    dict(
        task="02.encoder_states",
        name="ho_context_index_off_by_one",
        fn=enc_context_index_off_by_one,
        mistake="takes the context at H[b, lengths[b]] (one past the last token)",
        cls="off by one",
    ),
    dict(
        task="02.greedy_decode",
        name="ho_drop_every_eos",
        fn=greedy_eos_then_truncate_wrong,
        mistake="runs max_len steps and drops every <eos>, keeping words after it",
        cls="words after <eos>",
    ),
    dict(
        task="04.scaled_dot_scores",
        name="ho_float32_scale",
        fn=scaled_float32_scale,
        mistake="computes sqrt(d_k) as a float32 tensor",
        cls="float32 in a float64 task",
    ),
    dict(
        task="04.scaled_dot_scores",
        name="ho_by_sqrt_B",
        fn=scaled_by_sqrt_B,
        mistake="divides by sqrt of the batch size",
        cls="wrong scale",
    ),
    dict(
        task="04.additive_scores",
        name="ho_no_activation",
        fn=additive_no_activation,
        mistake="forgets the tanh",
        cls="ReLU for tanh",
    ),
    dict(
        task="05.log_weights",
        name="ho_max_namedtuple",
        fn=soft_max_namedtuple,
        mistake="subtracts scores.max(dim, keepdim=True), a (values, indices) pair",
        cls="raw error",
    ),
    dict(
        task="05.log_weights",
        name="ho_unsqueeze_last",
        fn=soft_keepdim_only_on_sum,
        mistake="restores the reduced axis with unsqueeze(-1), right only when dim is the last axis",
        cls="missing keepdim / wrong axis",
    ),
    dict(
        task="05.masked_softmax",
        name="ho_fill_minus_500",
        fn=masked_fill_minus_500,
        mistake="fills removed keys with -500",
        cls="masked large scores",
    ),
    dict(
        task="05.masked_softmax",
        name="ho_global_empty_check",
        fn=masked_global_empty_check,
        mistake="handles only a mask that removes everything",
        cls="query with no key left while others keep keys",
    ),
    dict(
        task="05.softmax_with_temperature",
        name="ho_clamped_tau",
        fn=temp_clamped_tau,
        mistake="clamps tau at 0.05 to stay stable",
        cls="temperatures near thresholds",
    ),
    dict(
        task="05.attention_weights_from_lengths",
        name="ho_mask_without_query_axis",
        fn=lengths_mask_without_query_axis,
        mistake="builds a (B, T_k) mask without the query axis",
        cls="only-square shapes (B == T_q)",
    ),
    dict(
        task="06.attention_value",
        name="ho_transposed_output",
        fn=value_transposed_output,
        mistake="computes values^T weights^T and transposes twice: (B, d_v, T_q)",
        cls="transposed",
    ),
    dict(
        task="06.dot_product_attention",
        name="ho_values_as_keys",
        fn=dpa_values_as_keys,
        mistake="scores the queries against the values",
        cls="K used as V",
    ),
    dict(
        task="06.decoder_attention",
        name="ho_first_state_query",
        fn=dec_first_state_query,
        mistake="uses the first decoder state as every step's query",
        cls="static query",
    ),
    dict(
        task="06.luong_output",
        name="ho_sigmoid_hidden",
        fn=luong_sigmoid_hidden,
        mistake="sigmoid instead of tanh in the hidden layer",
        cls="ReLU for tanh",
    ),
    dict(
        task="06.luong_output",
        name="ho_softmax_twice",
        fn=luong_softmax_twice,
        mistake="applies the softmax twice",
        cls="symptom",
    ),
    dict(
        task="07.greedy_decode",
        name="ho_repeats_eos",
        fn=gd_repeats_eos,
        mistake="fills finished sentences with EOS instead of PAD",
        cls="words after <eos>",
    ),
    dict(
        task="08.sdpa",
        name="ho_multiplicative_mask",
        fn=sdpa_multiplicative_mask,
        mistake="multiplies the scores by the mask",
        cls="mask semantics",
    ),
    dict(
        task="08.sdpa", name="ho_scale_Tq", fn=sdpa_scale_Tq, mistake="scales by sqrt(T_q)", cls="wrong scale"
    ),
    dict(task="08.causal_mask", name="ho_uint8", fn=causal_uint8, mistake="returns uint8", cls="dtype"),
    dict(
        task="09.multi_head_attention",
        name="ho_scale_h",
        fn=mha_scale_h,
        mistake="scales by sqrt(h)",
        cls="wrong scale",
    ),
    dict(
        task="09.multi_head_attention",
        name="ho_softmax_queries",
        fn=mha_softmax_queries,
        mistake="softmax over the queries",
        cls="wrong axis",
    ),
    dict(
        task="10.running_max_sum",
        name="ho_split_rows",
        fn=running_split_rows,
        mistake="splits the rows into blocks instead of the keys",
        cls="blockwise ignores block_size",
    ),
    dict(
        task="10.online_softmax_attention",
        name="ho_split_batch",
        fn=online_split_batch,
        mistake="splits the batch into blocks instead of the keys",
        cls="blockwise ignores block_size",
    ),
]

VALID = [
    dict(task="04.dot_scores_batch", name="ho_permute", fn=batch_valid_permute),
    dict(task="05.masked_softmax", name="ho_minus_1e9_times_mask", fn=masked_valid_minus_1e9_then_zero),
    dict(task="08.causal_mask", name="ho_triu_T", fn=causal_valid_triu_T),
    dict(
        task="10.combine_max_sum", name="ho_where_l1_zero", fn=combine_one_empty_guard
    ),  # I first filed it as wrong: it is right
]
