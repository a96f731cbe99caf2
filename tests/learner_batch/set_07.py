"""Set 07, seq2seq with attention: learner-style answers (task 1 is now Bahdanau's step)."""

import torch

from attnbook.analysis import gru_cell

from ._conventions import task_id

SET = "07"


def _t(fn_name):
    return task_id(SET, fn_name)


PAD, SOS, EOS = 0, 1, 2
NEG_INF = float("-inf")


# ---------------------------------------------------------------- 07.bahdanau_step
# Bahdanau's order: attend with s_{t-1} (additive score), feed [y_{t-1}; a_t] to the GRU, predict from s_t.
def _bstep(
    y_prev_emb,
    s_prev,
    H,
    src_mask,
    p,
    *,
    layout="out_in",
    swap_qk=False,
    act=torch.tanh,
    score="additive",
    use_mask=True,
    fill=NEG_INF,
    concat="y_a",
    predict_from="new",
    probs=True,
):
    W_q, W_k = (p["W_k"], p["W_q"]) if swap_qk else (p["W_q"], p["W_k"])

    def lin(x, W):
        return x @ W.T if layout == "out_in" else x @ W

    if score == "dot":
        e = torch.einsum("bd,bnd->bn", s_prev, H)
    else:
        e = act(lin(s_prev, W_q).unsqueeze(1) + lin(H, W_k)) @ p["w"]  # (B, N)
    if use_mask:
        e = e.masked_fill(~src_mask, fill)
    alpha = torch.softmax(e, dim=-1)
    a = torch.einsum("bn,bnd->bd", alpha, H)
    x = torch.cat([y_prev_emb, a] if concat == "y_a" else [a, y_prev_emb], dim=-1)
    s_t = gru_cell(x, s_prev, p["W_ih"], p["W_hh"], p["b_ih"], p["b_hh"])
    logits = (s_t if predict_from == "new" else s_prev) @ p["W_y"].T + p["b_y"]
    return (torch.softmax(logits, dim=-1) if probs else logits), s_t, alpha


def bstep_concat_a_y(y_prev_emb, s_prev, H, src_mask, params):
    return _bstep(y_prev_emb, s_prev, H, src_mask, params, concat="a_y")


def bstep_no_mask(y_prev_emb, s_prev, H, src_mask, params):
    return _bstep(y_prev_emb, s_prev, H, src_mask, params, use_mask=False)


def bstep_fill_zero(y_prev_emb, s_prev, H, src_mask, params):
    return _bstep(y_prev_emb, s_prev, H, src_mask, params, fill=0.0)


def bstep_relu(y_prev_emb, s_prev, H, src_mask, params):
    return _bstep(y_prev_emb, s_prev, H, src_mask, params, act=torch.relu)


def bstep_no_tanh(y_prev_emb, s_prev, H, src_mask, params):
    return _bstep(y_prev_emb, s_prev, H, src_mask, params, act=lambda x: x)


def bstep_dot_score(y_prev_emb, s_prev, H, src_mask, params):
    return _bstep(y_prev_emb, s_prev, H, src_mask, params, score="dot")


def bstep_in_out_layout(y_prev_emb, s_prev, H, src_mask, params):
    return _bstep(y_prev_emb, s_prev, H, src_mask, params, layout="in_out")


def bstep_swapped_qk(y_prev_emb, s_prev, H, src_mask, params):
    return _bstep(y_prev_emb, s_prev, H, src_mask, params, swap_qk=True)


def bstep_predicts_from_old_state(y_prev_emb, s_prev, H, src_mask, params):
    return _bstep(y_prev_emb, s_prev, H, src_mask, params, predict_from="old")


def bstep_logits(y_prev_emb, s_prev, H, src_mask, params):
    return _bstep(y_prev_emb, s_prev, H, src_mask, params, probs=False)


def bstep_swapped_order(y_prev_emb, s_prev, H, src_mask, params):
    y_hat, s_t, alpha = _bstep(y_prev_emb, s_prev, H, src_mask, params)
    return y_hat, alpha, s_t


def bstep_detached_params(y_prev_emb, s_prev, H, src_mask, params):
    p = {k: v.detach() for k, v in params.items()}  # "the weights are fixed anyway"
    return _bstep(y_prev_emb, s_prev, H, src_mask, p)


def bstep_luong_order(y_prev_emb, s_prev, H, src_mask, params):
    # runs the GRU first on [y; 0] and attends with the new state (the chapter's Luong order)
    p = params
    x = torch.cat([y_prev_emb, torch.zeros_like(s_prev)], dim=-1)
    s_t = gru_cell(x, s_prev, p["W_ih"], p["W_hh"], p["b_ih"], p["b_hh"])
    e = torch.tanh((s_t @ p["W_q"].T).unsqueeze(1) + H @ p["W_k"].T) @ p["w"]
    alpha = torch.softmax(e.masked_fill(~src_mask, NEG_INF), dim=-1)
    return torch.softmax(s_t @ p["W_y"].T + p["b_y"], dim=-1), s_t, alpha


def bstep_book_additive(y_prev_emb, s_prev, H, src_mask, params):
    from attnbook.attention import additive_scores, softmax

    p = params
    e = additive_scores(s_prev.unsqueeze(1), H, p["W_q"], p["W_k"], p["w"]).squeeze(1)
    alpha = softmax(e, mask=src_mask)
    a = torch.einsum("bn,bnd->bd", alpha, H)
    s_t = gru_cell(torch.cat([y_prev_emb, a], -1), s_prev, p["W_ih"], p["W_hh"], p["b_ih"], p["b_hh"])
    return torch.softmax(s_t @ p["W_y"].T + p["b_y"], dim=-1), s_t, alpha


def bstep_valid(y_prev_emb, s_prev, H, src_mask, params):
    return _bstep(y_prev_emb, s_prev, H, src_mask, params)


def bstep_valid_finfo_linear(y_prev_emb, s_prev, H, src_mask, params):
    F = torch.nn.functional
    p = params
    hidden = torch.tanh(F.linear(s_prev, p["W_q"])[:, None, :] + F.linear(H, p["W_k"]))  # (B, N, d_a)
    e = torch.einsum("bna,a->bn", hidden, p["w"])
    e = e.masked_fill(~src_mask, torch.finfo(e.dtype).min)
    alpha = F.softmax(e, dim=1)
    a = torch.bmm(alpha.unsqueeze(1), H).squeeze(1)
    s_t = gru_cell(torch.cat([y_prev_emb, a], dim=1), s_prev, p["W_ih"], p["W_hh"], p["b_ih"], p["b_hh"])
    return F.softmax(F.linear(s_t, p["W_y"], p["b_y"]), dim=1), s_t, alpha


# ---------------------------------------------------------------- 07.alignment_agreement
def _real(alpha, tgt_len, inclusive=False):
    t = torch.arange(alpha.shape[1])[None, :]
    return (t <= tgt_len[:, None]) if inclusive else (t < tgt_len[:, None])


def agree_all_steps(alpha, align, tgt_len):
    return (alpha * align).sum(-1).mean()


def agree_mean_of_sentences(alpha, align, tgt_len):
    per_step = (alpha * align).sum(-1) * _real(alpha, tgt_len)
    return (per_step.sum(1) / tgt_len).mean()


def agree_per_aligned_entry(alpha, align, tgt_len):
    real = _real(alpha, tgt_len).unsqueeze(-1)
    return (alpha * align * real).sum() / (align * real).sum()


def agree_max_aligned(alpha, align, tgt_len):
    per_step = (alpha * align).amax(-1) * _real(alpha, tgt_len)
    return per_step.sum() / tgt_len.sum()


def agree_off_by_one(alpha, align, tgt_len):
    real = _real(alpha, tgt_len, inclusive=True)
    per_step = (alpha * align).sum(-1) * real
    return per_step.sum() / real.sum()


def agree_hard_argmax(alpha, align, tgt_len):
    hit = align.gather(-1, alpha.argmax(-1, keepdim=True)).squeeze(-1)
    real = _real(alpha, tgt_len)
    return (hit * real).sum() / real.sum()


def agree_first_sentence_length(alpha, align, tgt_len):
    real = _real(alpha, tgt_len[:1].expand_as(tgt_len))
    return ((alpha * align).sum(-1) * real).sum() / real.sum()


def agree_valid(alpha, align, tgt_len):
    real = _real(alpha, tgt_len)
    return ((alpha * align).sum(-1)[real]).mean()


def agree_valid_loops(alpha, align, tgt_len):
    total, count = 0.0, 0
    for b in range(alpha.shape[0]):
        for t in range(int(tgt_len[b])):
            total += float((alpha[b, t] * align[b, t]).sum())
            count += 1
    return total / count


# ---------------------------------------------------------------- 07.greedy_decode
def _decode(
    step,
    s_0,
    H,
    src_mask,
    E,
    max_len,
    *,
    pad_after=True,
    zero_alpha=True,
    stop_all=True,
    stop_any=False,
    update_state=True,
    record_eos=True,
    time_first=False,
    float_ids=False,
    feed=None,
):
    B = s_0.shape[0]
    y = torch.full((B,), SOS, dtype=torch.long)
    s = s_0
    done = torch.zeros(B, dtype=torch.bool)
    ids, alphas = [], []
    for _ in range(max_len):
        y_hat, s_new, alpha = step(E[y], s, H, src_mask)
        if update_state:
            s = s_new
        y = y_hat.argmax(dim=-1)
        if pad_after:
            y = torch.where(done, torch.full_like(y, PAD), y)
        if zero_alpha:
            alpha = torch.where(done.unsqueeze(-1), torch.zeros_like(alpha), alpha)
        just = y == EOS
        if not record_eos:
            alpha = torch.where(just.unsqueeze(-1), torch.zeros_like(alpha), alpha)
        ids.append(y)
        alphas.append(alpha)
        done = done | just
        if feed is not None:
            y = torch.where(done, torch.full_like(y, feed), y)
        if stop_any and just.any():
            break
        if stop_all and done.all():
            break
    dim = 0 if time_first else 1
    if not ids:
        out_ids = torch.zeros(B, 0, dtype=torch.long)
        out_alpha = H.new_zeros(B, 0, H.shape[1])
    else:
        out_ids, out_alpha = torch.stack(ids, dim), torch.stack(alphas, dim)
    return (out_ids.to(H.dtype) if float_ids else out_ids), out_alpha


def gd_words_after_eos(step, s_0, H, src_mask, E, max_len):
    return _decode(step, s_0, H, src_mask, E, max_len, pad_after=False)


def gd_alpha_not_zeroed(step, s_0, H, src_mask, E, max_len):
    return _decode(step, s_0, H, src_mask, E, max_len, zero_alpha=False)


def gd_stops_at_first_eos(step, s_0, H, src_mask, E, max_len):
    return _decode(step, s_0, H, src_mask, E, max_len, stop_any=True)


def gd_always_max_len(step, s_0, H, src_mask, E, max_len):
    return _decode(step, s_0, H, src_mask, E, max_len, stop_all=False)


def gd_static_state(step, s_0, H, src_mask, E, max_len):
    return _decode(step, s_0, H, src_mask, E, max_len, update_state=False)


def gd_eos_step_zeroed(step, s_0, H, src_mask, E, max_len):
    return _decode(step, s_0, H, src_mask, E, max_len, record_eos=False)


def gd_time_first(step, s_0, H, src_mask, E, max_len):
    return _decode(step, s_0, H, src_mask, E, max_len, time_first=True)


def gd_float_ids(step, s_0, H, src_mask, E, max_len):
    return _decode(step, s_0, H, src_mask, E, max_len, float_ids=True)


def gd_valid(step, s_0, H, src_mask, E, max_len):
    return _decode(step, s_0, H, src_mask, E, max_len)


def gd_valid_feed_pad(step, s_0, H, src_mask, E, max_len):
    return _decode(step, s_0, H, src_mask, E, max_len, feed=PAD)


WRONG = [
    dict(
        task=_t("bahdanau_step"),
        name="concat_a_y",
        fn=bstep_concat_a_y,
        cls="only-square shapes (e == d)",
        mistake="feeds [a_t; y_{t-1}] to the GRU instead of [y_{t-1}; a_t]",
    ),
    dict(
        task=_t("bahdanau_step"),
        name="no_mask",
        fn=bstep_no_mask,
        cls="padding ignored",
        mistake="ignores src_mask",
    ),
    dict(
        task=_t("bahdanau_step"),
        name="fill_zero",
        fn=bstep_fill_zero,
        cls="masked large scores",
        mistake="fills padded scores with 0 instead of -inf",
    ),
    dict(
        task=_t("bahdanau_step"),
        name="relu",
        fn=bstep_relu,
        cls="ReLU for tanh",
        mistake="uses ReLU instead of tanh in the additive score",
    ),
    dict(
        task=_t("bahdanau_step"),
        name="no_tanh",
        fn=bstep_no_tanh,
        cls="ReLU for tanh",
        mistake="leaves the tanh out of the additive score",
    ),
    dict(
        task=_t("bahdanau_step"),
        name="dot_score",
        fn=bstep_dot_score,
        cls="wrong score",
        mistake="uses the dot score s_{t-1} · h_i instead of the additive score",
    ),
    dict(
        task=_t("bahdanau_step"),
        name="in_out_layout",
        fn=bstep_in_out_layout,
        cls="weight layout",
        mistake="applies W_q and W_k as x @ W instead of x @ W.T",
    ),
    dict(
        task=_t("bahdanau_step"),
        name="swapped_qk",
        fn=bstep_swapped_qk,
        cls="only-square shapes",
        mistake="applies W_k to the state and W_q to the encoder states (same shapes, so no error)",
    ),
    dict(
        task=_t("bahdanau_step"),
        name="predicts_from_old_state",
        fn=bstep_predicts_from_old_state,
        cls="state",
        mistake="predicts from s_{t-1} instead of the new state s_t",
    ),
    dict(
        task=_t("bahdanau_step"),
        name="logits",
        fn=bstep_logits,
        cls="symptom",
        mistake="returns logits instead of probabilities",
    ),
    dict(
        task=_t("bahdanau_step"),
        name="swapped_order",
        fn=bstep_swapped_order,
        cls="swapped tuple order",
        mistake="returns (y_hat, alpha_t, s_t)",
    ),
    dict(
        task=_t("bahdanau_step"),
        name="detached_params",
        fn=bstep_detached_params,
        cls="gradients through dict params",
        mistake="detaches the params dict, no gradient reaches the weights",
    ),
    dict(
        task=_t("bahdanau_step"),
        name="luong_order",
        fn=bstep_luong_order,
        cls="query",
        mistake="runs the GRU first and attends with the new state (Luong's order), no a_t in the GRU input",
    ),
    dict(
        task=_t("bahdanau_step"),
        name="book_additive",
        fn=bstep_book_additive,
        cls="book shortcut",
        mistake="uses attnbook.attention's additive_scores and softmax for the attention part",
    ),
    dict(
        task=_t("alignment_agreement"),
        name="all_steps",
        fn=agree_all_steps,
        cls="padding",
        mistake="averages over every step, padded ones included",
    ),
    dict(
        task=_t("alignment_agreement"),
        name="mean_of_sentences",
        fn=agree_mean_of_sentences,
        cls="pooling",
        mistake="averages per sentence, then over sentences",
    ),
    dict(
        task=_t("alignment_agreement"),
        name="per_aligned_entry",
        fn=agree_per_aligned_entry,
        cls="formula",
        mistake="divides by the number of aligned entries instead of steps",
    ),
    dict(
        task=_t("alignment_agreement"),
        name="max_aligned",
        fn=agree_max_aligned,
        cls="two aligned words",
        mistake="counts only the largest aligned weight of a step",
    ),
    dict(
        task=_t("alignment_agreement"),
        name="off_by_one",
        fn=agree_off_by_one,
        cls="off by one",
        mistake="counts step tgt_len[b] as real",
    ),
    dict(
        task=_t("alignment_agreement"),
        name="hard_argmax",
        fn=agree_hard_argmax,
        cls="formula",
        mistake="scores whether the argmax is aligned instead of the aligned weight",
    ),
    dict(
        task=_t("alignment_agreement"),
        name="first_sentence_length",
        fn=agree_first_sentence_length,
        cls="one sentence's lengths for all",
        mistake="uses tgt_len[0] for every sentence",
    ),
    dict(
        task=_t("greedy_decode"),
        name="words_after_eos",
        fn=gd_words_after_eos,
        cls="words after <eos>",
        mistake="a finished sentence keeps emitting words after EOS",
    ),
    dict(
        task=_t("greedy_decode"),
        name="alpha_not_zeroed",
        fn=gd_alpha_not_zeroed,
        cls="finished rows",
        mistake="finished sentences keep their weights",
    ),
    dict(
        task=_t("greedy_decode"),
        name="stops_at_first_eos",
        fn=gd_stops_at_first_eos,
        cls="stop rule",
        mistake="stops the batch when any sentence finishes",
    ),
    dict(
        task=_t("greedy_decode"),
        name="always_max_len",
        fn=gd_always_max_len,
        cls="stop rule",
        mistake="always runs max_len steps",
    ),
    dict(
        task=_t("greedy_decode"),
        name="static_state",
        fn=gd_static_state,
        cls="state",
        mistake="passes s_0 at every step",
    ),
    dict(
        task=_t("greedy_decode"),
        name="eos_step_zeroed",
        fn=gd_eos_step_zeroed,
        cls="finished rows",
        mistake="zeroes the weights of the step that produces EOS too",
    ),
    dict(
        task=_t("greedy_decode"),
        name="time_first",
        fn=gd_time_first,
        cls="only-square shapes (B == T_out)",
        mistake="stacks along time first: (T_out, B)",
    ),
    dict(task=_t("greedy_decode"), name="float_ids", fn=gd_float_ids, cls="dtype", mistake="ids as floats"),
]

VALID = [
    dict(task=_t("bahdanau_step"), name="einsum", fn=bstep_valid),
    dict(task=_t("bahdanau_step"), name="F_linear_finfo", fn=bstep_valid_finfo_linear),
    dict(task=_t("alignment_agreement"), name="boolean_index", fn=agree_valid),
    dict(task=_t("alignment_agreement"), name="loops", fn=agree_valid_loops),
    dict(task=_t("greedy_decode"), name="vectorised", fn=gd_valid),
    dict(task=_t("greedy_decode"), name="feeds_pad_after_eos", fn=gd_valid_feed_pad),
]
