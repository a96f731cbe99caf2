"""Hold-out 3: 15 valid alternatives written at 15:10: do new detectors reject legitimate answers?

Kept out of the repository until 16:10.
"""

import math

import torch
import torch.nn.functional as F

from learner_batch._conventions import out_in_layout_04, weights_first_06, x_at_W_transposed_09

NEG_INF = float("-inf")


def enc_packed_functional_gru(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    e, d = W_ih.shape[1], W_hh.shape[1]
    gru = torch.nn.GRU(e, d, batch_first=True, dtype=embedded.dtype)
    params = {"weight_ih_l0": W_ih, "weight_hh_l0": W_hh, "bias_ih_l0": b_ih, "bias_hh_l0": b_hh}
    packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, h_n = torch.func.functional_call(gru, params, (packed,))
    H, _ = pad_packed_sequence(out, batch_first=True, total_length=embedded.shape[1])
    return H, h_n[0]


def grad_backward_on_own_copy(loss_fn, embedded):
    x = embedded.clone().detach().requires_grad_()
    loss_fn(x).backward()
    return x.grad.norm(dim=1)


def scaled_baddbmm(Q, K):
    out = torch.zeros(Q.shape[0], Q.shape[1], K.shape[1], dtype=Q.dtype)
    return torch.baddbmm(out, Q, K.transpose(1, 2), beta=0.0, alpha=1 / math.sqrt(Q.shape[-1]))


def additive_linear(Q, K, W_q, W_k, w):
    if out_in_layout_04():
        q, k = F.linear(Q, W_q), F.linear(K, W_k)
    else:
        q, k = Q @ W_q, K @ W_k
    return torch.einsum("bqka,a->bqk", torch.tanh(q[:, :, None, :] + k[:, None, :, :]), w)


def logw_special(scores, dim):
    return torch.special.log_softmax(scores, dim=dim)


def temp_div(scores, tau):
    return F.softmax(scores.div(tau), dim=-1)


def masked_where_lse(scores, mask):
    x = torch.where(mask, scores, torch.full_like(scores, NEG_INF))
    m = x.amax(-1, keepdim=True).nan_to_num(neginf=0.0)
    e = torch.exp(x - m)
    s = e.sum(-1, keepdim=True)
    return e / torch.where(s > 0, s, torch.ones_like(s))


def luong_addmm(a_t, s_t, W_c, b_c, W_y, b_y):
    s_tilde = torch.tanh(torch.addmm(b_c, torch.cat([a_t, s_t], 1), W_c.t()))
    return torch.softmax(torch.addmm(b_y, s_tilde, W_y.t()), dim=1)


def step_masked_mean_of_exps(s_t, H, lengths):
    keep = torch.arange(H.shape[1])[None, :] < lengths[:, None]
    e = torch.bmm(H, s_t.unsqueeze(2)).squeeze(2).masked_fill(~keep, torch.finfo(H.dtype).min)
    alpha = torch.softmax(e, 1) * keep
    a = torch.bmm(alpha.unsqueeze(1), H).squeeze(1)
    return (alpha, a) if weights_first_06("attention_step") else (a, alpha)


def bstep_torch_gru_cell(y_prev_emb, s_prev, H, src_mask, p):
    e = torch.tanh(F.linear(s_prev, p["W_q"]).unsqueeze(1) + F.linear(H, p["W_k"])) @ p["w"]
    alpha = torch.softmax(e.masked_fill(~src_mask, NEG_INF), dim=-1)
    a = (alpha.unsqueeze(-1) * H).sum(1)
    s_t = torch.gru_cell(torch.cat([y_prev_emb, a], -1), s_prev, p["W_ih"], p["W_hh"], p["b_ih"], p["b_hh"])
    return torch.softmax(F.linear(s_t, p["W_y"], p["b_y"]), -1), s_t, alpha


def causal_subtract(T):
    i = torch.arange(T)
    return (i.unsqueeze(1) - i) >= 0


def padding_expand(lengths, T_k):
    return (torch.arange(T_k).expand(len(lengths), T_k) < lengths.unsqueeze(1)).unsqueeze(1)


def sdpa_torch_bool_mask_expand(Q, K, V, mask=None):
    m = None if mask is None else mask.expand(Q.shape[0], Q.shape[1], K.shape[1])
    out = F.scaled_dot_product_attention(Q, K, V, attn_mask=m)
    s = torch.einsum("bqd,bkd->bqk", Q, K) / math.sqrt(Q.shape[-1])
    if m is not None:
        s = s.masked_fill(m.logical_not(), NEG_INF)
    return out, torch.nan_to_num(s.softmax(-1), nan=0.0)


def mha_torch_functional(x, W_q, W_k, W_v, W_o, h):
    if not x_at_W_transposed_09():  # (in, out) layout: PyTorch wants (out, in)
        W_q, W_k, W_v, W_o = W_q.T, W_k.T, W_v.T, W_o.T
    xt = x.transpose(0, 1)  # (T, B, D)
    D = x.shape[-1]
    out, _ = F.multi_head_attention_forward(
        xt,
        xt,
        xt,
        D,
        h,
        in_proj_weight=None,
        in_proj_bias=None,
        bias_k=None,
        bias_v=None,
        add_zero_attn=False,
        dropout_p=0.0,
        out_proj_weight=W_o,
        out_proj_bias=None,
        training=False,
        need_weights=False,
        use_separate_proj_weight=True,
        q_proj_weight=W_q,
        k_proj_weight=W_k,
        v_proj_weight=W_v,
    )
    return out.transpose(0, 1)


def running_split(scores, block_size):
    m = torch.full(scores.shape[:1], NEG_INF, dtype=scores.dtype)
    l = torch.zeros_like(m)
    for blk in torch.split(scores, block_size, dim=-1):
        bm = blk.amax(-1)
        m_new = torch.maximum(m, bm)
        l = l * torch.exp(m - m_new) + torch.exp(blk - m_new.unsqueeze(-1)).sum(-1)
        m = m_new
    return m, l


VALID = [
    dict(task="02.encoder_states", name="h3_packed_functional_gru", fn=enc_packed_functional_gru),
    dict(task="02.gradient_norms_by_position", name="h3_backward_own_copy", fn=grad_backward_on_own_copy),
    dict(task="04.scaled_dot_scores", name="h3_baddbmm", fn=scaled_baddbmm),
    dict(task="04.additive_scores", name="h3_F_linear", fn=additive_linear),
    dict(task="05.log_weights", name="h3_special_log_softmax", fn=logw_special),
    dict(task="05.softmax_with_temperature", name="h3_div", fn=temp_div),
    dict(task="05.masked_softmax", name="h3_where_by_hand", fn=masked_where_lse),
    dict(task="06.luong_output", name="h3_addmm", fn=luong_addmm),
    dict(task="06.attention_step", name="h3_bmm_finfo", fn=step_masked_mean_of_exps),
    dict(task="07.bahdanau_step", name="h3_torch_gru_cell", fn=bstep_torch_gru_cell),
    dict(task="08.causal_mask", name="h3_subtract", fn=causal_subtract),
    dict(task="08.padding_mask", name="h3_expand", fn=padding_expand),
    dict(task="08.sdpa", name="h3_torch_expanded_mask", fn=sdpa_torch_bool_mask_expand),
    dict(task="10.running_max_sum", name="h3_torch_split", fn=running_split),
]
WRONG = [
    # valid when this batch was written; PyTorch's multi-head layer earns 0 since the grader's round-1 fixes
    dict(
        task="09.multi_head_attention",
        name="h3_F_multi_head_attention_forward",
        fn=mha_torch_functional,
        cls="ready-made layer",
        mistake="PyTorch's multi_head_attention_forward is the whole layer the task asks for",
    ),
]
