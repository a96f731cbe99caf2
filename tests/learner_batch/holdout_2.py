"""Hold-out 2: 27 wrong and 17 valid answers written at 15:05 against the task texts of that time.

Kept out of the repository until 16:10 (first shown in the final report).
"""

import math

import torch

from attnbook.analysis import gru_cell
from learner_batch._conventions import out_in_layout_04, weights_first_06, x_at_W_transposed_09

NEG_INF = float("-inf")


def sm(x, dim=-1):
    return torch.softmax(x, dim=dim)


# ---- 02
def enc_where_keeps_last_state(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    # zero at padding in H, but the context taken as H.sum over positions ("only one is non-zero"... wrong)
    B, N, _ = embedded.shape
    h = embedded.new_zeros(B, W_hh.shape[1])
    H = []
    for i in range(N):
        h_new = torch.gru_cell(embedded[:, i], h, W_ih, W_hh, b_ih, b_hh)
        real = (i < lengths)[:, None]
        h = torch.where(real, h_new, h)
        H.append(torch.where(real, h_new, torch.zeros_like(h_new)))
    H = torch.stack(H, 1)
    return H, H.sum(dim=1)


def enc_valid_masked_loop(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    B, N, _ = embedded.shape
    h = embedded.new_zeros(B, W_hh.shape[1])
    H = []
    for i in range(N):
        real = (i < lengths).to(embedded.dtype)[:, None]
        h = real * torch.gru_cell(embedded[:, i], h, W_ih, W_hh, b_ih, b_hh) + (1 - real) * h
        H.append(real * h)
    H = torch.stack(H, 1)
    return H, H.gather(1, (lengths - 1).view(-1, 1, 1).expand(-1, 1, H.shape[2])).squeeze(1)


def greedy_argmin(step_fn, s_0, sos_id, eos_id, max_len):
    out, y, s = [], sos_id, s_0
    for _ in range(max_len):
        logits, s = step_fn(y, s)
        y = int(torch.softmax(logits, -1).argmin())  # "the smallest loss"
        if y == eos_id:
            break
        out.append(y)
    return out


def greedy_valid_recursive(step_fn, s_0, sos_id, eos_id, max_len):
    if max_len == 0:
        return []
    logits, s = step_fn(sos_id, s_0)
    y = int(logits.argmax())
    if y == eos_id:
        return []
    return [y] + greedy_valid_recursive(step_fn, s, y, eos_id, max_len - 1)


def acc_token_mean_over_buckets_wrong(predictions, targets, src_lengths, buckets):
    # counts a prediction shorter than the target as right at the missing positions (zip stops early)
    out = []
    for lo, hi in buckets:
        ks = [k for k, n in enumerate(src_lengths) if lo <= n <= hi]
        if not ks:
            out.append(None)
            continue
        right = total = exact = 0
        for k in ks:
            p, t = predictions[k], targets[k]
            right += sum(a == b for a, b in zip(p, t)) + (len(t) - min(len(p), len(t))) + (len(p) == len(t))
            total += len(t) + 1
            exact += p == t
        out.append((right / total, exact / len(ks)))
    return out


def grad_norms_l1(loss_fn, embedded):
    x = embedded.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_fn(x), x)
    return g.abs().sum(-1)


# ---- 04
def lin(x, W):
    return x @ W.T if out_in_layout_04() else x @ W


def dot_batch_sum_wrong_axis(Q, K):
    return (Q.unsqueeze(2) * K.unsqueeze(1)).sum(1)  # sums over queries


def dot_batch_valid_broadcast(Q, K):
    return (Q.unsqueeze(2) * K.unsqueeze(1)).sum(-1)


def scaled_by_sqrt_dk_minus_1(Q, K):
    return Q @ K.mT / math.sqrt(max(Q.shape[-1] - 1, 1))  # "unbiased" width


def general_W_both_sides(Q, K, W):
    return (Q @ W) @ (K @ W.T).mT if W.shape[0] == W.shape[1] else Q @ W @ K.mT * 2


def additive_v_outside_sum(Q, K, W_q, W_k, w):
    hid = torch.tanh(lin(Q, W_q).unsqueeze(2) + lin(K, W_k).unsqueeze(1))
    return (hid * w).mean(-1)  # mean instead of sum


def additive_valid_loop_keys(Q, K, W_q, W_k, w):
    q = lin(Q, W_q)
    cols = [torch.tanh(q + lin(K[:, j], W_k).unsqueeze(1)) @ w for j in range(K.shape[1])]
    return torch.stack(cols, dim=-1) if cols else Q.new_zeros(Q.shape[0], Q.shape[1], 0)


# ---- 05
def logw_log_of_sum_minus(scores, dim):
    m = scores.amax(dim=dim, keepdim=True)
    return scores - m - torch.log(torch.exp(scores).sum(dim=dim, keepdim=True) - m)


def logw_valid_logsumexp_where(scores, dim):
    m = scores.amax(dim=dim, keepdim=True)
    return (scores - m) - torch.log(torch.exp(scores - m).sum(dim, keepdim=True))


def masked_row_zero_by_isnan_sentence(scores, mask):
    w = sm(scores.masked_fill(~mask, NEG_INF))
    return torch.where(torch.isnan(w).all(dim=-1, keepdim=True).all(dim=-2, keepdim=True), 0.0, w)


def masked_valid_logsumexp(scores, mask):
    x = scores.masked_fill(~mask, NEG_INF)
    lse = torch.logsumexp(x, dim=-1, keepdim=True)
    w = torch.exp(x - lse)
    return torch.where(torch.isinf(lse), torch.zeros_like(w), w)


def lengths_mask_from_max(scores, lengths):
    mask = torch.arange(scores.shape[-1])[None, None, :] < lengths.max()
    return torch.nan_to_num(sm(scores.masked_fill(~mask, NEG_INF)), nan=0.0).expand_as(scores)


def lengths_valid_sequence_mask(scores, lengths):
    keep = torch.stack([torch.arange(scores.shape[-1]) < n for n in lengths.tolist()])[:, None, :]
    x = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
    return sm(x) * keep


def temp_log_tau(scores, tau):
    return sm(scores / math.log1p(tau))


def temp_valid_exp_by_hand(scores, tau):
    x = scores / tau
    e = torch.exp(x - x.amax(-1, keepdim=True))
    return e / e.sum(-1, keepdim=True)


# ---- 06
def pair(task, alpha, a):
    return (alpha, a) if weights_first_06(task) else (a, alpha)


def value_softmax_again(weights, values):
    return sm(weights) @ values


def value_valid_loop(weights, values):
    B, T_q, T_k = weights.shape
    out = []
    for b in range(B):
        rows = []
        for q in range(T_q):
            acc = values.new_zeros(values.shape[-1])
            for i in range(T_k):
                acc = acc + weights[b, q, i] * values[b, i]
            rows.append(acc)
        out.append(torch.stack(rows) if rows else values.new_zeros(0, values.shape[-1]))
    return torch.stack(out)


def dpa_normalised_scores(Q, K, V):
    s = Q @ K.mT
    alpha = s / s.sum(-1, keepdim=True)
    return pair("dot_product_attention", alpha, alpha @ V)


def step_mean_of_real(s_t, H, lengths):
    mask = (torch.arange(H.shape[1])[None, :] < lengths[:, None]).to(H.dtype)
    alpha = mask / mask.sum(-1, keepdim=True).clamp_min(1)
    return pair("attention_step", alpha, (alpha.unsqueeze(-1) * H).sum(1))


def dec_valid_einsum_where(S, H, lengths):
    keep = (torch.arange(H.shape[1])[None, :] < lengths[:, None])[:, None, :]
    e = torch.einsum("btd,bnd->btn", S, H)
    e = torch.where(keep, e, torch.tensor(NEG_INF, dtype=e.dtype))
    alpha = torch.nan_to_num(sm(e), nan=0.0)
    return pair("decoder_attention", alpha, torch.einsum("btn,bnd->btd", alpha, H))


def luong_bias_inside_tanh_missing(a_t, s_t, W_c, b_c, W_y, b_y):
    s_tilde = torch.tanh(torch.cat([a_t, s_t], -1) @ W_c.T) + b_c
    return sm(s_tilde @ W_y.T + b_y)


def hand_value_reversed_weights():
    from attnbook import worked_example as wx
    from learner_batch._conventions import numbers_in_text

    w = numbers_in_text("06", "hand_attention_value")[::-1]
    return [round(float(x), 4) for x in torch.tensor(w, dtype=torch.float64) @ wx.encoder_states()]


# ---- 07
def bstep_mask_after(y_prev_emb, s_prev, H, src_mask, p):
    e = torch.tanh((s_prev @ p["W_q"].T).unsqueeze(1) + H @ p["W_k"].T) @ p["w"]
    alpha = sm(e) * src_mask
    a = torch.einsum("bn,bnd->bd", alpha, H)
    s_t = gru_cell(torch.cat([y_prev_emb, a], -1), s_prev, p["W_ih"], p["W_hh"], p["b_ih"], p["b_hh"])
    return sm(s_t @ p["W_y"].T + p["b_y"]), s_t, alpha


def bstep_mean_value(y_prev_emb, s_prev, H, src_mask, p):
    e = torch.tanh((s_prev @ p["W_q"].T).unsqueeze(1) + H @ p["W_k"].T) @ p["w"]
    alpha = sm(e.masked_fill(~src_mask, NEG_INF))
    m = src_mask.to(H.dtype)
    a = (H * m[..., None]).sum(1) / m.sum(1, keepdim=True)  # average of the real states
    s_t = gru_cell(torch.cat([y_prev_emb, a], -1), s_prev, p["W_ih"], p["W_hh"], p["b_ih"], p["b_hh"])
    return sm(s_t @ p["W_y"].T + p["b_y"]), s_t, alpha


def agree_sum_not_mean(alpha, align, tgt_len):
    real = torch.arange(alpha.shape[1])[None, :] < tgt_len[:, None]
    return ((alpha * align).sum(-1) * real).sum()


def gd_first_step_pad(step, s_0, H, src_mask, E, max_len):
    PAD, EOS = 0, 2
    B = s_0.shape[0]
    y = torch.full((B,), PAD, dtype=torch.long)  # starts from PAD instead of SOS
    s, done, ids, alphas = s_0, torch.zeros(B, dtype=torch.bool), [], []
    for _ in range(max_len):
        y_hat, s, alpha = step(E[y], s, H, src_mask)
        y = torch.where(done, torch.full_like(y, PAD), y_hat.argmax(-1))
        alphas.append(torch.where(done[:, None], torch.zeros_like(alpha), alpha))
        ids.append(y)
        done = done | (y == EOS)
        if done.all():
            break
    return torch.stack(ids, 1), torch.stack(alphas, 1)


def gd_valid_lists(step, s_0, H, src_mask, E, max_len):
    PAD, SOS, EOS = 0, 1, 2
    B = s_0.shape[0]
    y = torch.full((B,), SOS, dtype=torch.long)
    s, finished, ids, alphas = s_0, [False] * B, [], []
    for _ in range(max_len):
        y_hat, s, alpha = step(E[y], s, H, src_mask)
        y = y_hat.argmax(-1)
        keep = torch.tensor([not f for f in finished])
        y = torch.where(keep, y, torch.full_like(y, PAD))
        alphas.append(alpha * keep[:, None])
        ids.append(y)
        finished = [f or int(t) == EOS for f, t in zip(finished, y)]
        if all(finished):
            break
    return torch.stack(ids, 1), torch.stack(alphas, 1)


# ---- 08
def sdpa_mask_before_scale_fill_min(Q, K, V, mask=None):
    s = Q @ K.mT
    if mask is not None:
        s = s.masked_fill(~mask, -1e30)
    w = sm(s / math.sqrt(Q.shape[-1]))
    if mask is not None:
        w = w * mask  # the task text (15:20) asks zeros for a query with no key left
    return w @ V, w


def sdpa_scale_sqrt_dk_times_dv(Q, K, V, mask=None):
    s = Q @ K.mT / math.sqrt(Q.shape[-1] * V.shape[-1] / V.shape[-1] + 0.0) * 1.0
    if mask is not None:
        s = s.masked_fill(~mask, NEG_INF)
    w = torch.nan_to_num(sm(s, dim=-1), nan=0.0)
    return w @ V.transpose(0, 0), w.transpose(-1, -2).transpose(-1, -2)  # valid, just noisy


def sdpa_values_transposed(Q, K, V, mask=None):
    s = Q @ K.mT / math.sqrt(Q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, NEG_INF)
    w = torch.nan_to_num(sm(s), nan=0.0)
    return (V.mT @ w.mT).mT, w


def causal_ones_minus_triu(T):
    return (1 - torch.triu(torch.ones(T, T), 1)).bool()


def pad_lengths_minus_one(lengths, T_k):
    return (torch.arange(T_k)[None, :] < lengths[:, None] - 1).unsqueeze(1)


# ---- 09
def proj(x, W):
    return x @ W.T if x_at_W_transposed_09() else x @ W


def fold_heads_transpose_last(x, h):
    B, T, D = x.shape
    return x.view(B, T, h, D // h).permute(0, 2, 1, 3).reshape(B * h, T, D // h).flip(0)


def mha_no_scale(x, W_q, W_k, W_v, W_o, h):
    Q, K, V = (proj(x, W).unflatten(-1, (h, -1)).transpose(1, 2) for W in (W_q, W_k, W_v))
    return proj((sm(Q @ K.mT) @ V).transpose(1, 2).flatten(2), W_o)


def mha_valid_bmm_folded(x, W_q, W_k, W_v, W_o, h):
    B, T, D = x.shape
    d = D // h

    def fold(y):
        return y.view(B, T, h, d).transpose(1, 2).reshape(B * h, T, d)

    Q, K, V = (fold(proj(x, W)) for W in (W_q, W_k, W_v))
    o = torch.bmm(sm(torch.bmm(Q, K.transpose(1, 2)) / math.sqrt(d)), V)
    return proj(o.view(B, h, T, d).transpose(1, 2).reshape(B, T, D), W_o)


# ---- 10
def combine_max_of_sums(m1, l1, m2, l2):
    m = torch.maximum(m1, m2)
    return m, torch.maximum(l1 * torch.exp(m1 - m), l2 * torch.exp(m2 - m))


def running_block_size_plus_one(scores, block_size):
    m = torch.full(scores.shape[:1], NEG_INF, dtype=scores.dtype)
    l = torch.zeros(scores.shape[:1], dtype=scores.dtype)
    for s in range(0, scores.shape[1], block_size + 1):  # off by one in the step
        blk = scores[:, s : s + block_size + 1]
        m_new = torch.maximum(m, blk.amax(-1))
        l = l * torch.exp(m - m_new) + torch.exp(blk - m_new[:, None]).sum(-1)
        m = m_new
    return m, l


def online_valid_split(Q, K, V, block_size):
    d = Q.shape[-1]
    m = torch.full((*Q.shape[:2], 1), NEG_INF, dtype=Q.dtype)
    l = torch.zeros(*Q.shape[:2], 1, dtype=Q.dtype)
    acc = torch.zeros(*Q.shape[:2], V.shape[-1], dtype=Q.dtype)
    for Kb, Vb in zip(K.split(block_size, 1), V.split(block_size, 1)):
        s = torch.einsum("bqd,bkd->bqk", Q, Kb) * d**-0.5
        m_new = torch.maximum(m, s.amax(-1, keepdim=True))
        c = torch.exp(m - m_new)
        p = torch.exp(s - m_new)
        l, acc, m = l * c + p.sum(-1, keepdim=True), acc * c + p @ Vb, m_new
    return acc / l


def online_l_not_rescaled(Q, K, V, block_size):
    d = Q.shape[-1]
    m = torch.full((*Q.shape[:2], 1), NEG_INF, dtype=Q.dtype)
    l = torch.zeros(*Q.shape[:2], 1, dtype=Q.dtype)
    acc = torch.zeros(*Q.shape[:2], V.shape[-1], dtype=Q.dtype)
    for Kb, Vb in zip(K.split(block_size, 1), V.split(block_size, 1)):
        s = Q @ Kb.mT / math.sqrt(d)
        m_new = torch.maximum(m, s.amax(-1, keepdim=True))
        c = torch.exp(m - m_new)
        p = torch.exp(s - m_new)
        l, acc, m = l + p.sum(-1, keepdim=True), acc * c + p @ Vb, m_new
    return acc / l


def W(task, name, fn, mistake, cls):
    return dict(task=task, name=name, fn=fn, mistake=mistake, cls=cls)


WRONG = [
    W(
        "02.encoder_states",
        "h2_context_sum",
        enc_where_keeps_last_state,
        "context = sum of H over positions",
        "concept",
    ),
    W("02.greedy_decode", "h2_argmin", greedy_argmin, "takes argmin of the probabilities", "argmax"),
    W(
        "02.accuracy_by_length",
        "h2_missing_counted_right",
        acc_token_mean_over_buckets_wrong,
        "counts missing words as right",
        "formula",
    ),
    W("02.gradient_norms_by_position", "h2_l1", grad_norms_l1, "L1 norm instead of Euclidean", "formula"),
    W(
        "04.dot_scores_batch",
        "h2_sum_over_queries",
        dot_batch_sum_wrong_axis,
        "sums over the query axis",
        "axis",
    ),
    W(
        "04.scaled_dot_scores",
        "h2_sqrt_dk_minus_1",
        scaled_by_sqrt_dk_minus_1,
        "divides by sqrt(d_k - 1)",
        "wrong scale",
    ),
    W(
        "04.general_scores",
        "h2_W_both_sides",
        general_W_both_sides,
        "applies W to both query and key",
        "formula",
    ),
    W(
        "04.additive_scores",
        "h2_mean_not_sum",
        additive_v_outside_sum,
        "averages over d_a instead of summing",
        "formula",
    ),
    W(
        "05.log_weights",
        "h2_subtracts_m_after_sum",
        logw_log_of_sum_minus,
        "log(sum exp(e) - m)",
        "large scores",
    ),
    W(
        "05.masked_softmax",
        "h2_empty_rows_only_if_all_rows",
        masked_row_zero_by_isnan_sentence,
        "zeroes NaN rows only when every row of the sentence is NaN",
        "query with no key left while others keep keys",
    ),
    W(
        "05.attention_weights_from_lengths",
        "h2_mask_from_max",
        lengths_mask_from_max,
        "builds one mask from the longest length",
        "one sentence's keys for all",
    ),
    W("05.softmax_with_temperature", "h2_log_tau", temp_log_tau, "divides by log(1 + tau)", "formula"),
    W(
        "06.attention_value",
        "h2_softmax_again",
        value_softmax_again,
        "applies a softmax to the weights again",
        "formula",
    ),
    W(
        "06.dot_product_attention",
        "h2_normalised_scores",
        dpa_normalised_scores,
        "normalises the scores by their sum (no exp)",
        "no exp",
    ),
    W(
        "06.attention_step",
        "h2_mean_of_real",
        step_mean_of_real,
        "averages the real positions, no scores",
        "plain average",
    ),
    W(
        "06.luong_output",
        "h2_bias_outside_tanh",
        luong_bias_inside_tanh_missing,
        "adds b_c after the tanh",
        "order of ops",
    ),
    W(
        "06.hand_attention_value",
        "h2_reversed_weights",
        hand_value_reversed_weights,
        "pairs the weights with the states in reverse order",
        "order",
    ),
    W(
        "07.bahdanau_step",
        "h2_mask_after_softmax",
        bstep_mask_after,
        "masks after the softmax without renormalising",
        "mask after softmax",
    ),
    W(
        "07.bahdanau_step",
        "h2_mean_value",
        bstep_mean_value,
        "feeds the mean of the real states instead of a_t",
        "plain average",
    ),
    W(
        "07.alignment_agreement",
        "h2_sum_not_mean",
        agree_sum_not_mean,
        "returns the sum, not the mean",
        "normalisation",
    ),
    W(
        "07.greedy_decode",
        "h2_starts_from_pad",
        gd_first_step_pad,
        "first input is PAD instead of SOS",
        "start token",
    ),
    W("08.padding_mask", "h2_lengths_minus_one", pad_lengths_minus_one, "i < lengths - 1", "off by one"),
    W("09.fold_heads", "h2_flipped", fold_heads_transpose_last, "right layout but rows reversed", "order"),
    W("09.multi_head_attention", "h2_no_scale", mha_no_scale, "forgets 1/sqrt(d_k)", "wrong scale"),
    W(
        "10.combine_max_sum",
        "h2_max_of_sums",
        combine_max_of_sums,
        "takes the max of the rescaled sums",
        "formula",
    ),
    W(
        "10.running_max_sum",
        "h2_block_plus_one",
        running_block_size_plus_one,
        "reads blocks of block_size + 1",
        "blockwise ignores block_size",
    ),
    W(
        "10.online_softmax_attention",
        "h2_l_not_rescaled",
        online_l_not_rescaled,
        "rescales acc but not l",
        "formula",
    ),
]

VALID = [
    dict(task="02.encoder_states", name="h2_masked_loop_gather", fn=enc_valid_masked_loop),
    dict(task="02.greedy_decode", name="h2_recursive", fn=greedy_valid_recursive),
    dict(task="04.dot_scores_batch", name="h2_broadcast_sum", fn=dot_batch_valid_broadcast),
    dict(task="04.additive_scores", name="h2_loop_keys", fn=additive_valid_loop_keys),
    dict(task="05.log_weights", name="h2_by_hand", fn=logw_valid_logsumexp_where),
    dict(task="05.masked_softmax", name="h2_logsumexp", fn=masked_valid_logsumexp),
    dict(task="05.attention_weights_from_lengths", name="h2_stack_finfo", fn=lengths_valid_sequence_mask),
    dict(task="05.softmax_with_temperature", name="h2_by_hand", fn=temp_valid_exp_by_hand),
    dict(task="06.attention_value", name="h2_triple_loop", fn=value_valid_loop),
    dict(task="06.decoder_attention", name="h2_einsum_where", fn=dec_valid_einsum_where),
    dict(task="07.greedy_decode", name="h2_python_lists", fn=gd_valid_lists),
    dict(task="08.sdpa", name="h2_fill_minus_1e30_then_scale", fn=sdpa_mask_before_scale_fill_min),
    dict(task="08.sdpa", name="h2_noisy_but_right", fn=sdpa_scale_sqrt_dk_times_dv),
    dict(task="08.causal_mask", name="h2_one_minus_triu", fn=causal_ones_minus_triu),
    dict(task="08.sdpa", name="h2_values_transposed_twice", fn=sdpa_values_transposed),
    dict(task="09.multi_head_attention", name="h2_bmm_folded", fn=mha_valid_bmm_folded),
    dict(task="10.online_softmax_attention", name="h2_split", fn=online_valid_split),
]
