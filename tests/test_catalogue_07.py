"""Set 07 (seq2seq with attention): every known-wrong implementation is caught, with the right diagnosis.

These are written the way learners write them, independently of the grader's misconception models.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from attnbook.analysis import gru_cell
from attnbook.grading import get_task, run_task

PAD, SOS, EOS = 0, 1, 2

# ------------------------------------------------------------------------------ 07.bahdanau_step


def gru(x, h, p):
    return gru_cell(x, h, p["W_ih"], p["W_hh"], p["b_ih"], p["b_hh"])


def bahdanau_learner(
    query="old",
    feed="y_a",
    score="additive",
    swap=False,
    tanh=True,
    use_w=True,
    dot_t=True,
    fill=float("-inf"),
    after=False,
    axis=-1,
    probs=True,
    give_back="new",
    predict="new",
    give_alpha="weights",
):
    """A learner's Bahdanau step, written with F.linear and bmm; the keywords are the slips learners make."""

    def step(y_prev_emb, s_prev, H, src_mask, params):
        W_q, W_k = (params["W_k"], params["W_q"]) if swap else (params["W_q"], params["W_k"])

        def scores_for(q):
            if score == "dot":
                return torch.bmm(H, q.unsqueeze(2)).squeeze(2)
            if dot_t:
                hidden = F.linear(q, W_q).unsqueeze(1) + F.linear(H, W_k)  # (B, N, d_a)
            else:
                hidden = (q @ W_q).unsqueeze(1) + H @ W_k
            hidden = torch.tanh(hidden) if tanh else hidden
            return hidden @ params["w"] if use_w else hidden.sum(dim=2)

        def weights_for(e):
            if after:
                return F.softmax(e, dim=-1) * src_mask
            if fill is None:
                return F.softmax(e, dim=axis)
            return F.softmax(e.masked_fill(src_mask == 0, fill), dim=axis)

        scores = scores_for(s_prev)
        alpha_t = weights_for(scores)
        context = torch.bmm(alpha_t.unsqueeze(1), H).squeeze(1)  # (B, d)
        x = {"y_a": (y_prev_emb, context), "a_y": (context, y_prev_emb), "y_s": (y_prev_emb, s_prev)}.get(
            feed
        )
        if feed == "y_only":
            e = y_prev_emb.shape[1]
            s_t = gru_cell(
                y_prev_emb, s_prev, params["W_ih"][:, :e], params["W_hh"], params["b_ih"], params["b_hh"]
            )
        else:
            s_t = gru(torch.cat(x, dim=1), s_prev, params)
        if query == "new":  # "the query is the decoder state": attends again with s_t
            scores = scores_for(s_t)
            alpha_t = weights_for(scores)
        h = s_t if predict == "new" else s_prev
        logits = F.linear(h, params["W_y"], params["b_y"])
        y_hat = F.softmax(logits, dim=-1) if probs else logits
        out_alpha = alpha_t if give_alpha == "weights" else scores
        return y_hat, (s_t if give_back == "new" else s_prev), out_alpha

    return step


def bahdanau_last_state_query(y_prev_emb, s_prev, H, src_mask, params):
    """Attends with the last real encoder state (the plain model's context) instead of s_{t-1}."""
    last = src_mask.long().sum(1) - 1
    q = torch.stack([H[b, last[b]] for b in range(H.shape[0])])
    e = torch.tanh(F.linear(q, params["W_q"])[:, None] + F.linear(H, params["W_k"])) @ params["w"]
    alpha_t = F.softmax(e.masked_fill(~src_mask, float("-inf")), -1)
    a_t = torch.einsum("bn,bnd->bd", alpha_t, H)
    s_t = gru(torch.cat([y_prev_emb, a_t], -1), s_prev, params)
    return F.softmax(F.linear(s_t, params["W_y"], params["b_y"]), -1), s_t, alpha_t


def bahdanau_relu_score(y_prev_emb, s_prev, H, src_mask, params):
    """ReLU, "the usual activation", inside the additive score."""
    e = torch.relu(F.linear(s_prev, params["W_q"])[:, None] + F.linear(H, params["W_k"])) @ params["w"]
    alpha_t = F.softmax(e.masked_fill(~src_mask, float("-inf")), -1)
    a_t = torch.einsum("bn,bnd->bd", alpha_t, H)
    s_t = gru(torch.cat([y_prev_emb, a_t], -1), s_prev, params)
    return F.softmax(F.linear(s_t, params["W_y"], params["b_y"]), -1), s_t, alpha_t


def bahdanau_gru_first(y_prev_emb, s_prev, H, src_mask, params):
    """The chapter's Luong order: GRU first (nothing to feed yet, so zeros), then attend with s_t."""
    s_t = gru(torch.cat([y_prev_emb, s_prev.new_zeros(s_prev.shape)], -1), s_prev, params)
    e = torch.tanh(F.linear(s_t, params["W_q"])[:, None] + F.linear(H, params["W_k"])) @ params["w"]
    alpha_t = F.softmax(e.masked_fill(~src_mask, float("-inf")), -1)
    return F.softmax(F.linear(s_t, params["W_y"], params["b_y"]), -1), s_t, alpha_t


def bahdanau_mean_of_states(y_prev_emb, s_prev, H, src_mask, params):
    """Feeds the average of the real encoder states (equal weights) where a_t belongs."""
    n = src_mask.sum(1, keepdim=True)
    alpha_t = src_mask.double() / n
    a_t = (H * src_mask[..., None]).sum(1) / n
    s_t = gru(torch.cat([y_prev_emb, a_t], -1), s_prev, params)
    return F.softmax(F.linear(s_t, params["W_y"], params["b_y"]), -1), s_t, alpha_t


def bahdanau_double_softmax(y_prev_emb, s_prev, H, src_mask, params):
    e = torch.tanh(F.linear(s_prev, params["W_q"])[:, None] + F.linear(H, params["W_k"])) @ params["w"]
    e = e.masked_fill(~src_mask, float("-inf"))
    alpha_t = F.softmax(F.softmax(e, -1).masked_fill(~src_mask, float("-inf")), -1)  # "normalise again"
    a_t = torch.einsum("bn,bnd->bd", alpha_t, H)
    s_t = gru(torch.cat([y_prev_emb, a_t], -1), s_prev, params)
    return F.softmax(F.linear(s_t, params["W_y"], params["b_y"]), -1), s_t, alpha_t


def bahdanau_not_normalised(y_prev_emb, s_prev, H, src_mask, params):
    e = torch.tanh(F.linear(s_prev, params["W_q"])[:, None] + F.linear(H, params["W_k"])) @ params["w"]
    alpha_t = torch.exp(e) * src_mask  # forgot to divide by the sum
    a_t = torch.einsum("bn,bnd->bd", alpha_t, H)
    s_t = gru(torch.cat([y_prev_emb, a_t], -1), s_prev, params)
    return F.softmax(F.linear(s_t, params["W_y"], params["b_y"]), -1), s_t, alpha_t


def bahdanau_float32_inside(y_prev_emb, s_prev, H, src_mask, params):
    """Computes the scores in float32 ("it is faster") and converts back."""
    e = torch.tanh(
        F.linear(s_prev.float(), params["W_q"].float())[:, None] + F.linear(H.float(), params["W_k"].float())
    )
    e = (e @ params["w"].float()).masked_fill(~src_mask, float("-inf"))
    alpha_t = F.softmax(e, -1).double()
    a_t = torch.einsum("bn,bnd->bd", alpha_t, H)
    s_t = gru(torch.cat([y_prev_emb, a_t], -1), s_prev, params)
    return F.softmax(F.linear(s_t, params["W_y"], params["b_y"]), -1), s_t, alpha_t


def bahdanau_detached_w(y_prev_emb, s_prev, H, src_mask, params):
    """Right values, but the score vector w is taken out of autograd (.detach() "to be safe")."""
    w = params["w"].detach()
    e = torch.tanh(F.linear(s_prev, params["W_q"])[:, None] + F.linear(H, params["W_k"])) @ w
    alpha_t = F.softmax(e.masked_fill(~src_mask, float("-inf")), -1)
    a_t = torch.einsum("bn,bnd->bd", alpha_t, H)
    s_t = gru(torch.cat([y_prev_emb, a_t], -1), s_prev, params)
    return F.softmax(F.linear(s_t, params["W_y"], params["b_y"]), -1), s_t, alpha_t


def bahdanau_rewrites_params(y_prev_emb, s_prev, H, src_mask, params):
    """Stores the transposed matrices back into the dict it was given."""
    params["W_q"], params["W_k"] = params["W_q"].T, params["W_k"].T
    e = torch.tanh((s_prev @ params["W_q"])[:, None] + H @ params["W_k"]) @ params["w"]
    alpha_t = F.softmax(e.masked_fill(~src_mask, float("-inf")), -1)
    a_t = torch.einsum("bn,bnd->bd", alpha_t, H)
    s_t = gru(torch.cat([y_prev_emb, a_t], -1), s_prev, params)
    return F.softmax(F.linear(s_t, params["W_y"], params["b_y"]), -1), s_t, alpha_t


def bahdanau_state_in_place(y_prev_emb, s_prev, H, src_mask, params):
    y_hat, s_t, alpha_t = bahdanau_learner()(y_prev_emb, s_prev, H, src_mask, params)
    s_prev.copy_(s_t)  # "update the state"
    return y_hat, s_prev, alpha_t


def bahdanau_outputs_reordered(y_prev_emb, s_prev, H, src_mask, params):
    y_hat, s_t, alpha_t = bahdanau_learner()(y_prev_emb, s_prev, H, src_mask, params)
    return y_hat, alpha_t, s_t


def bahdanau_with_the_books_model(y_prev_emb, s_prev, H, src_mask, params):
    """Borrows the book's BahdanauSeq2Seq.attend for the attention (earns no points)."""
    import types

    from attnbook.models import BahdanauSeq2Seq

    layers = types.SimpleNamespace(
        W_q=lambda x: F.linear(x, params["W_q"]),
        W_k=lambda x: F.linear(x, params["W_k"]),
        w=lambda x: (x @ params["w"]).unsqueeze(-1),
    )
    a_t, alpha_t = BahdanauSeq2Seq.attend(layers, s_prev, H, src_mask)
    s_t = gru(torch.cat([y_prev_emb, a_t], -1), s_prev, params)
    return F.softmax(F.linear(s_t, params["W_y"], params["b_y"]), -1), s_t, alpha_t


def bahdanau_einsum_finfo(y_prev_emb, s_prev, H, src_mask, params):
    """Correct: einsum for every product, finfo.min instead of -inf, torch's own gru_cell."""
    q = torch.einsum("ad,bd->ba", params["W_q"], s_prev)
    k = torch.einsum("ad,bnd->bna", params["W_k"], H)
    e = torch.einsum("bna,a->bn", torch.tanh(q[:, None, :] + k), params["w"])
    e = torch.where(src_mask, e, torch.finfo(e.dtype).min)
    alpha_t = torch.softmax(e, dim=1)
    a_t = torch.einsum("bn,bnd->bd", alpha_t, H)
    s_t = torch.gru_cell(
        torch.cat([y_prev_emb, a_t], 1),
        s_prev,
        params["W_ih"],
        params["W_hh"],
        params["b_ih"],
        params["b_hh"],
    )
    y_hat = torch.softmax(torch.einsum("vd,bd->bv", params["W_y"], s_t) + params["b_y"], dim=1)
    return y_hat, s_t, alpha_t


def bahdanau_loop_per_sentence(y_prev_emb, s_prev, H, src_mask, params):
    """Correct: one sentence at a time, only its real positions, then stacked."""
    alphas, values = [], []
    for b in range(H.shape[0]):
        n = int(src_mask[b].sum())
        h = H[b, :n]  # (n, d)
        e = torch.tanh(params["W_q"] @ s_prev[b] + h @ params["W_k"].T) @ params["w"]  # (n,)
        a = torch.softmax(e, 0)
        alphas.append(torch.cat([a, a.new_zeros(H.shape[1] - n)]))
        values.append(a @ h)
    alpha_t, a_t = torch.stack(alphas), torch.stack(values)
    s_t = gru(torch.cat([y_prev_emb, a_t], -1), s_prev, params)
    return torch.softmax(s_t @ params["W_y"].T + params["b_y"], -1), s_t, alpha_t


# ------------------------------------------------------------------------------ 07.alignment_agreement


def agree_all_steps(alpha, align, tgt_len):
    return (alpha * align).sum(dim=2).mean()


def agree_total(alpha, align, tgt_len):
    total = 0.0
    for b in range(alpha.shape[0]):
        for t in range(int(tgt_len[b])):
            total += float((alpha[b, t] * align[b, t]).sum())
    return total


def agree_hits(alpha, align, tgt_len):
    hits, n = 0, 0
    for b in range(alpha.shape[0]):
        for t in range(int(tgt_len[b])):
            hits += int(align[b, t, int(alpha[b, t].argmax())] == 1)
            n += 1
    return hits / n


def agree_sentence_means(alpha, align, tgt_len):
    per_sentence = []
    for b in range(alpha.shape[0]):
        n = int(tgt_len[b])
        per_sentence.append(float((alpha[b, :n] * align[b, :n]).sum()) / n)
    return sum(per_sentence) / len(per_sentence)


def agree_peak(alpha, align, tgt_len):
    real = torch.arange(alpha.shape[1])[None] < tgt_len[:, None]
    return alpha.max(dim=-1).values[real].mean()


def agree_not_reduced(alpha, align, tgt_len):
    return (alpha * align).sum(-1)


def agree_one_step_too_many(alpha, align, tgt_len):
    real = torch.arange(alpha.shape[1])[None] <= tgt_len[:, None]
    return (alpha * align).sum(-1)[real].mean()


def agree_per_link(alpha, align, tgt_len):
    real = (torch.arange(alpha.shape[1])[None] < tgt_len[:, None]).unsqueeze(-1)
    return float((alpha * align * real).sum() / (align * real).sum())


def agree_list(alpha, align, tgt_len):
    return [float((alpha[b] * align[b]).sum()) for b in range(alpha.shape[0])]


def agree_weighted_sentence_means(alpha, align, tgt_len):
    """Each sentence's mean weighted by its length: right, except that an empty sentence's mean is NaN."""
    total, count = 0.0, 0
    for b in range(alpha.shape[0]):
        n = int(tgt_len[b])
        mean_b = (alpha[b, :n] * align[b, :n]).sum(-1).mean()  # NaN when n == 0
        total = total + mean_b * n
        count += n
    return total / count


def agree_with_the_books_function(alpha, align, tgt_len):
    from attnbook.analysis import aligned_mass

    return aligned_mass(alpha, align, tgt_len)


def agree_largest_aligned(alpha, align, tgt_len):
    total, n = 0.0, 0
    for b in range(alpha.shape[0]):
        for t in range(int(tgt_len[b])):
            total += float((alpha[b, t] * align[b, t]).max())
            n += 1
    return total / n


def agree_first_length(alpha, align, tgt_len):
    n = int(tgt_len[0])
    return (alpha[:, :n] * align[:, :n]).sum() / (alpha.shape[0] * n)


def agree_einsum(alpha, align, tgt_len):
    """Correct, with einsum and a float mask."""
    mass = torch.einsum("btn,btn->bt", alpha, align)
    real = (torch.arange(alpha.size(1)).unsqueeze(0) < tgt_len.unsqueeze(1)).to(mass.dtype)
    return (mass * real).sum() / real.sum()


# ------------------------------------------------------------------------------ 07.greedy_decode


def greedy_learner(stop="all", pad=True, zero=True, feed="own", carry=True, dim=1, record_last=True):
    """A learner's batched greedy loop with a `finished` flag; the keywords are the slips."""

    def decode(step, s_0, H, src_mask, E, max_len):
        B = H.shape[0]
        prev = torch.ones(B, dtype=torch.long) * SOS
        state = s_0
        finished = torch.zeros(B, dtype=torch.bool)
        out_ids, out_alphas = [], []
        for _ in range(max_len):
            y_hat, new, alpha_t = step(
                E[prev] if feed == "own" else E[torch.ones_like(prev)], state, H, src_mask
            )
            if carry:
                state = new
            word = torch.argmax(y_hat, dim=1)
            if pad:
                word = torch.where(finished, torch.zeros_like(word), word)
            if zero:
                alpha_t = alpha_t * (~finished).unsqueeze(1)
            now_finished = finished | (word == EOS)
            if stop == "all" and now_finished.all() and not record_last:
                break
            out_ids.append(word)
            out_alphas.append(alpha_t)
            finished = now_finished
            prev = word
            if stop == "all" and finished.all():
                break
            if stop == "any" and (word == EOS).any():
                break
        return torch.stack(out_ids, dim=dim), torch.stack(out_alphas, dim=dim)

    return decode


def greedy_forgetful_flag(step, s_0, H, src_mask, E, max_len):
    """Marks a sentence finished when this step's word is <eos>, and forgets it at the next step."""
    B = H.shape[0]
    y, s = torch.full((B,), SOS), s_0
    finished = torch.zeros(B, dtype=torch.bool)
    ids, alphas = [], []
    for _ in range(max_len):
        y_hat, s, alpha_t = step(E[y], s, H, src_mask)
        y = torch.where(finished, torch.full_like(y, PAD), y_hat.argmax(-1))
        ids.append(y)
        alphas.append(torch.where(finished[:, None], torch.zeros_like(alpha_t), alpha_t))
        finished = y == EOS
        if all(EOS in row for row in torch.stack(ids, 1).tolist()):
            break
    return torch.stack(ids, 1), torch.stack(alphas, 1)


def greedy_pads_after_previous_eos(step, s_0, H, src_mask, E, max_len):
    """Pads a word when the previous word was <eos>: only one step after it."""
    B = H.shape[0]
    prev, s = torch.full((B,), SOS), s_0
    ids, alphas = [], []
    for _ in range(max_len):
        y_hat, s, alpha_t = step(E[prev], s, H, src_mask)
        word = y_hat.argmax(-1)
        after_eos = prev == EOS
        word[after_eos] = PAD
        alpha_t = alpha_t.clone()
        alpha_t[after_eos] = 0.0
        ids.append(word)
        alphas.append(alpha_t)
        prev = word
        if all(EOS in row for row in torch.stack(ids, 1).tolist()):
            break
    return torch.stack(ids, 1), torch.stack(alphas, 1)


def greedy_stops_when_all_say_eos(step, s_0, H, src_mask, E, max_len):
    """Stops when every sentence says <eos> at the same step."""
    B = H.shape[0]
    y, s, done = torch.full((B,), SOS), s_0, torch.zeros(B, dtype=torch.bool)
    ids, alphas = [], []
    for _ in range(max_len):
        y_hat, s, alpha_t = step(E[y], s, H, src_mask)
        raw = y_hat.argmax(-1)
        y = raw.masked_fill(done, PAD)
        ids.append(y)
        alphas.append(alpha_t.masked_fill(done[:, None], 0.0))
        done = done | (y == EOS)
        if (raw == EOS).all():
            break
    return torch.stack(ids, 1), torch.stack(alphas, 1)


def greedy_eos_row_blank(step, s_0, H, src_mask, E, max_len):
    """Blanks the weights from the <eos> step on (a finished sentence 'has no attention')."""
    B = H.shape[0]
    y, s, done = torch.full((B,), SOS), s_0, torch.zeros(B, dtype=torch.bool)
    ids, alphas = [], []
    for _ in range(max_len):
        y_hat, s, alpha_t = step(E[y], s, H, src_mask)
        y = y_hat.argmax(-1).masked_fill(done, PAD)
        done = done | (y == EOS)
        ids.append(y)
        alphas.append(alpha_t * (~done)[:, None])
        if done.all():
            break
    return torch.stack(ids, 1), torch.stack(alphas, 1)


def greedy_starts_from_pad(step, s_0, H, src_mask, E, max_len):
    B = H.shape[0]
    y, s, done = torch.zeros(B, dtype=torch.long), s_0, torch.zeros(B, dtype=torch.bool)
    ids, alphas = [], []
    for _ in range(max_len):
        y_hat, s, alpha_t = step(E[y], s, H, src_mask)
        y = y_hat.argmax(-1).masked_fill(done, PAD)
        ids.append(y)
        alphas.append(alpha_t.masked_fill(done[:, None], 0.0))
        done = done | (y == EOS)
        if done.all():
            break
    return torch.stack(ids, 1), torch.stack(alphas, 1)


def greedy_via_the_book(step, s_0, H, src_mask, E, max_len):
    """Wraps the step in an object that looks like a model and calls the book's greedy loop."""
    from types import SimpleNamespace

    from attnbook.models import AttnSeq2Seq

    fake = SimpleNamespace(
        encoder=lambda src, src_len: (H, s_0),
        _prepare=lambda H: None,
        tgt_embedding=lambda y: E[y],
        _decode=lambda Y, st, H, m, c, t, p, start=0: (
            lambda o: (o[0][:, None], o[2][:, None], (o[1][None], None))
        )(step(Y[:, 0], st[0], H, m)),
    )
    seqs, alphas = AttnSeq2Seq._greedy(
        fake, torch.zeros(src_mask.shape, dtype=torch.long), src_mask.sum(-1), max_len
    )
    n = alphas.shape[1]
    return torch.tensor([(q + [EOS] + [PAD] * n)[:n] for q in seqs]), alphas


def greedy_pad_propagates(step, s_0, H, src_mask, E, max_len):
    """Correct: a word is <pad> when the previous one was <eos> or <pad>, so finished stays finished."""
    B = H.shape[0]
    prev, s = torch.full((B,), SOS), s_0
    ids, alphas = [], []
    for _ in range(max_len):
        y_hat, s, alpha_t = step(E[prev], s, H, src_mask)
        over = (prev == EOS) | (prev == PAD)
        word = torch.where(over, torch.full_like(prev, PAD), y_hat.argmax(-1))
        ids.append(word)
        alphas.append(alpha_t * (~over)[:, None])
        prev = word
        if bool(((word == EOS) | (word == PAD)).all()):
            break
    return torch.stack(ids, 1), torch.stack(alphas, 1)


def greedy_while_not_done(step, s_0, H, src_mask, E, max_len):
    """Forgets max_len: loops until every sentence has produced <eos>."""
    B = H.shape[0]
    y, s = torch.full((B,), SOS), s_0
    done = torch.zeros(B, dtype=torch.bool)
    ids, alphas = [], []
    while not done.all():
        y_hat, s, alpha_t = step(E[y], s, H, src_mask)
        y = y_hat.argmax(-1).masked_fill(done, PAD)
        ids.append(y)
        alphas.append(alpha_t.masked_fill(done[:, None], 0.0))
        done = done | (y == EOS)
    return torch.stack(ids, 1), torch.stack(alphas, 1)


def greedy_argmax_wrong_axis(step, s_0, H, src_mask, E, max_len):
    y, s = torch.full((H.shape[0],), SOS), s_0
    ids, alphas = [], []
    for _ in range(max_len):
        y_hat, s, alpha_t = step(E[y], s, H, src_mask)
        y = y_hat.argmax(0)
        ids.append(y)
        alphas.append(alpha_t)
    return torch.stack(ids, 1), torch.stack(alphas, 1)


def greedy_float_ids(step, s_0, H, src_mask, E, max_len):
    ids, alphas = greedy_learner()(step, s_0, H, src_mask, E, max_len)
    out = torch.zeros(ids.shape)  # float32 by default
    out[:] = ids
    return out, alphas


def greedy_concatenated(step, s_0, H, src_mask, E, max_len):
    ids, alphas = greedy_learner()(step, s_0, H, src_mask, E, max_len)
    return ids, torch.cat(list(alphas.unbind(1)), dim=-1)  # (B, T_out * N)


def greedy_python_lists(step, s_0, H, src_mask, E, max_len):
    ids, alphas = greedy_learner()(step, s_0, H, src_mask, E, max_len)
    return ids.tolist(), alphas.tolist()


def greedy_preallocated(step, s_0, H, src_mask, E, max_len):
    """Correct: preallocated outputs and a while loop with a counter."""
    B, N = src_mask.shape
    ids = torch.zeros(B, max_len, dtype=torch.long)
    alphas = torch.zeros(B, max_len, N, dtype=H.dtype)
    y, s, done, t = torch.full((B,), SOS, dtype=torch.long), s_0, torch.zeros(B, dtype=torch.bool), 0
    while t < max_len and not done.all():
        y_hat, s, alpha_t = step(E[y], s, H, src_mask)
        y = y_hat.argmax(-1)
        live = ~done
        ids[live, t] = y[live]
        alphas[live, t] = alpha_t[live]
        done = done | (live & (y == EOS))
        t += 1
    return ids[:, :t], alphas[:, :t]


# ------------------------------------------------------------------------------ the catalogue

WRONG = {
    "07.bahdanau_step": [
        ("Luong's order: weights from s_t", bahdanau_learner(query="new"), "query_s_t", "s_{t-1}"),
        ("ReLU in the score", bahdanau_relu_score, "relu_for_tanh", "ReLU"),
        ("GRU first, then attend", bahdanau_gru_first, "query_s_t", "Luong's order"),
        ("average of the states", bahdanau_mean_of_states, "plain_average", "plain average"),
        ("softmax twice", bahdanau_double_softmax, "softmax_twice", "twice"),
        (
            "GRU reads the word only",
            bahdanau_learner(feed="y_only"),
            "context_not_fed",
            "does not read the attention value",
        ),
        ("GRU input [a_t; y]", bahdanau_learner(feed="a_y"), "gru_input_order", "[y_{t-1}; a_t]"),
        (
            "s_{t-1} fed as the GRU input",
            bahdanau_learner(feed="y_s"),
            "fed_state_not_value",
            "where the attention value",
        ),
        ("dot scores", bahdanau_learner(score="dot"), "dot_scores", "additive"),
        ("W_q on the keys", bahdanau_learner(swap=True), "swapped_score_matrices", "query's matrix"),
        ("no tanh in the score", bahdanau_learner(tanh=False), "score_without_tanh", "tanh"),
        ("sum instead of w", bahdanau_learner(use_w=False), "summed_not_w", "vector w"),
        ("matrices not transposed", bahdanau_learner(dot_t=False), "weights_not_transposed", "(out, in)"),
        ("last encoder state as query", bahdanau_last_state_query, "static_query", "last encoder state"),
        ("no mask", bahdanau_learner(fill=None), "padding_not_masked", "non-zero weight"),
        ("mask filled with 0", bahdanau_learner(fill=0.0), "padding_not_masked", "non-zero weight"),
        ("mask after the softmax", bahdanau_learner(after=True), "mask_after_softmax", "before the softmax"),
        ("softmax over the batch", bahdanau_learner(axis=0), "softmax_over_batch", "batch axis"),
        ("exp without the division", bahdanau_not_normalised, "not_normalised", "sum to 1"),
        ("returns the scores", bahdanau_learner(give_alpha="scores"), "returned_scores", "softmax"),
        (
            "predicts from s_{t-1}",
            bahdanau_learner(predict="old"),
            "predicted_from_old_state",
            "new state s_t",
        ),
        ("returns the old state", bahdanau_learner(give_back="old"), "returned_old_state", "new state s_t"),
        ("logits", bahdanau_learner(probs=False), "returned_logits", "softmax"),
        ("float32 scores", bahdanau_float32_inside, "float32_computation", "float32"),
        ("w detached", bahdanau_detached_w, "breaks_autograd", "gradients"),
        ("writes into params", bahdanau_rewrites_params, "mutates_input", "params"),
        ("state updated in place", bahdanau_state_in_place, "mutates_input", "s_prev"),
        ("outputs in another order", bahdanau_outputs_reordered, "swapped_outputs", "wrong order"),
        (
            "the book's BahdanauSeq2Seq.attend",
            bahdanau_with_the_books_model,
            "forbidden_call",
            "BahdanauSeq2Seq.attend",
        ),
    ],
    "07.alignment_agreement": [
        ("mean over every step", agree_all_steps, "averaged_over_padding", "padding included"),
        ("total, not mean", agree_total, "summed_not_averaged", "divide by the number of real steps"),
        ("argmax hits", agree_hits, "argmax_hit_rate", "hit rate"),
        ("mean of sentence means", agree_sentence_means, "mean_of_sentence_means", "counts once"),
        ("largest weight", agree_peak, "peakedness_not_agreement", "peaked"),
        ("one number per step", agree_not_reduced, "wrong_type", "a number"),
        ("first sentence's length for all", agree_first_length, "one_length_for_all", "its own number"),
        ("one step too many", agree_one_step_too_many, "one_step_too_many", "one step too many"),
        ("largest aligned weight", agree_largest_aligned, "max_over_links", "add them up"),
        ("divided by the links", agree_per_link, "per_link_average", "still one step"),
        ("a list per sentence", agree_list, "wrong_type", "a number"),
        ("NaN for an empty sentence", agree_weighted_sentence_means, "nan_on_empty_sentence", "zero steps"),
        ("the book's aligned_mass", agree_with_the_books_function, "forbidden_call", "aligned_mass"),
    ],
    "07.greedy_decode": [
        ("always max_len steps", greedy_learner(stop="never"), "no_early_stop", "max_len steps"),
        ("stops at the first <eos>", greedy_learner(stop="any"), "stops_at_first_eos", "all of them"),
        (
            "last step not recorded",
            greedy_learner(record_last=False),
            "last_step_dropped",
            "belong to the output",
        ),
        (
            "no bookkeeping after <eos>",
            greedy_learner(pad=False, zero=False),
            "no_padding_after_eos",
            "<pad>",
        ),
        ("alphas not zeroed", greedy_learner(zero=False), "alphas_not_zeroed", "all 0"),
        ("stacked on dim 0", greedy_learner(dim=0), "wrong_stack_axis", "dim=1"),
        ("<sos> fed every step", greedy_learner(feed="sos"), "fed_sos_every_step", "E[y]"),
        ("state never carried", greedy_learner(carry=False), "static_query", "s_0"),
        ("argmax over the batch", greedy_argmax_wrong_axis, "raised", "RuntimeError"),
        ("float ids", greedy_float_ids, "wrong_dtype", "float32"),
        ("torch.cat instead of stack", greedy_concatenated, "wrong_shape", "alphas"),
        ("Python lists", greedy_python_lists, "wrong_type", "torch.Tensor"),
        ("the <eos> step's weights blanked", greedy_eos_row_blank, "eos_step_weights_zeroed", "<eos> row"),
        ("starts from <pad>", greedy_starts_from_pad, "started_from_pad", "<sos>"),
        ("the book's greedy loop", greedy_via_the_book, "forbidden_call", "_Base._greedy"),
        ("finished flag forgets", greedy_forgetful_flag, "finished_sentence_resumed", "stay finished"),
        (
            "pads one step after <eos>",
            greedy_pads_after_previous_eos,
            "finished_sentence_resumed",
            "came back",
        ),
        (
            "stops when all say <eos> together",
            greedy_stops_when_all_say_eos,
            "no_early_stop",
            "different steps",
        ),
    ],
}

CORRECT = {
    "07.bahdanau_step": [bahdanau_einsum_finfo, bahdanau_loop_per_sentence, bahdanau_learner()],
    "07.alignment_agreement": [agree_einsum],
    "07.greedy_decode": [greedy_preallocated, greedy_learner(), greedy_pad_propagates],
}


def test_a_decoding_loop_without_max_len_is_stopped():
    task = dataclasses.replace(get_task("07.greedy_decode"), timeout_s=0.5)
    result = run_task(task, greedy_while_not_done)
    assert result.diagnosis == "timeout"  # stopped once, or twice when the first case is the one that hangs
    assert "stopped after 0.5 s" in result.message or "after 0.5 s each time" in result.message
    assert "never produces <eos>" in result.message  # the case that needs max_len is named


def test_greedy_cases_stop_where_their_notes_say():
    task = get_task("07.greedy_decode")
    steps = [task.reference(*case.args)[0].shape[1] for case in task.cases()]
    assert steps == [4, 6, 5, 5, 4]
    for case in task.cases():
        ids, alphas = task.reference(*case.args)
        src_mask = case.args[3]
        live = torch.ones(ids.shape[0], dtype=torch.bool)
        for t in range(ids.shape[1]):  # every live row is a distribution over the real source positions
            sums = alphas[:, t].sum(-1)
            assert torch.allclose(sums[live], torch.ones(int(live.sum()), dtype=sums.dtype))
            assert (sums[~live] == 0).all() and (ids[~live, t] == PAD).all()
            assert (alphas[:, t][~src_mask] == 0).all()
            live = live & (ids[:, t] != EOS)


def test_bahdanau_reference_equals_the_package_model():
    """The grader's step is the package's BahdanauSeq2Seq step, with the same weights (float64)."""
    from attnbook.models import BahdanauSeq2Seq

    task = get_task("07.bahdanau_step")
    for case in task.cases():
        y_prev_emb, s_prev, H, src_mask, p = case.args
        d_a, d = p["W_q"].shape
        e = y_prev_emb.shape[1]
        model = BahdanauSeq2Seq(
            2, p["W_y"].shape[0], emb=e, hidden=d, attn_hidden=d_a, bidirectional=False
        ).double()
        with torch.no_grad():
            model.W_q.weight.copy_(p["W_q"])
            model.W_k.weight.copy_(p["W_k"])
            model.w.weight.copy_(p["w"][None])
            for name in ("W_ih", "W_hh", "b_ih", "b_hh"):
                kind, part = name.split("_")
                getattr(model.decoder, f"{'weight' if kind == 'W' else 'bias'}_{part}_l0").copy_(p[name])
            model.W_y.weight.copy_(p["W_y"])
            model.W_y.bias.copy_(p["b_y"])
            logits, alpha, (state, _) = model._decode(y_prev_emb[:, None], s_prev[None], H, src_mask, None)
        y_hat, s_t, alpha_t = task.reference(*case.args)
        torch.testing.assert_close(alpha[:, 0], alpha_t)
        torch.testing.assert_close(state[0], s_t)
        torch.testing.assert_close(logits[:, 0].softmax(-1), y_hat)


# ------------------------------------------------------------------ red team, round 2 (the grader's fixes)


def _masked_scores_as_alpha(fill):
    """Returns the masked scores (filled with ``fill``) where the weights belong."""
    right = bahdanau_learner()

    def step(y_prev_emb, s_prev, H, src_mask, params):
        y_hat, s_t, _ = right(y_prev_emb, s_prev, H, src_mask, params)
        hidden = torch.tanh(F.linear(s_prev, params["W_q"]).unsqueeze(1) + F.linear(H, params["W_k"]))
        return y_hat, s_t, (hidden @ params["w"]).masked_fill(~src_mask, fill)

    return step


def bahdanau_scales_a_param_copy(y_prev_emb, s_prev, H, src_mask, params):
    """Right, but rebinds an entry of the caller's dict to a non-leaf tensor with the same values."""
    params["W_q"] = params["W_q"] * 1.0
    return bahdanau_learner()(y_prev_emb, s_prev, H, src_mask, params)


def greedy_with_sos_column(step, s_0, H, src_mask, E, max_len):
    ids, alphas = greedy_learner()(step, s_0, H, src_mask, E, max_len)
    return torch.cat([torch.full_like(ids[:, :1], SOS), ids], dim=1), alphas


def greedy_with_pad_column(step, s_0, H, src_mask, E, max_len):
    ids, alphas = greedy_learner()(step, s_0, H, src_mask, E, max_len)
    return torch.cat([torch.full_like(ids[:, :1], PAD), ids], dim=1), alphas


def greedy_alphas_transposed(step, s_0, H, src_mask, E, max_len):
    ids, alphas = greedy_learner()(step, s_0, H, src_mask, E, max_len)
    return ids, alphas.transpose(1, 2)


def greedy_first_id_off(step, s_0, H, src_mask, E, max_len):
    ids, alphas = greedy_learner()(step, s_0, H, src_mask, E, max_len)
    ids = ids.clone()
    ids[0, 0] = 5
    return ids, alphas


WRONG["07.bahdanau_step"] += [
    (
        "the masked scores (-inf) returned",
        _masked_scores_as_alpha(float("-inf")),
        "returned_scores",
        "masked scores",
    ),
    ("the masked scores (-1e9) returned", _masked_scores_as_alpha(-1e9), "returned_scores", "negative"),
]
WRONG["07.greedy_decode"] += [
    ("<sos> as the first column", greedy_with_sos_column, "sos_recorded", "<sos> you fed"),
    (
        "<pad> as the first column",
        greedy_with_pad_column,
        "wrong_shape",
        "(B=3, 5) but should have shape (B=3, T_out=4)",
    ),
    ("alphas (B, N, T_out)", greedy_alphas_transposed, "transposed", "(B=3, N=6, T_out=4)"),
    ("one id wrong", greedy_first_id_off, "wrong_values", "expected 7, got 5"),
]
CORRECT["07.bahdanau_step"].append(bahdanau_scales_a_param_copy)


def test_a_learners_non_leaf_tensor_in_params_raises_no_warning():
    """The grader reads .grad only where PyTorch keeps one: no UserWarning leaks to the learner (red team, D)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = run_task(get_task("07.bahdanau_step"), bahdanau_scales_a_param_copy)
    assert result.passed, result.message


# ------------------------------------------------------------------ red team, round 4


def greedy_records_what_it_feeds(step, s_0, H, src_mask, E, max_len):
    """Appends the word it feeds into each step (the <sos> first) instead of the word the step produced."""
    B = H.shape[0]
    y = torch.full((B,), SOS, dtype=torch.long)
    s, done = s_0, torch.zeros(B, dtype=torch.bool)
    ids, alphas = [], []
    for _ in range(max_len):
        ids.append(y)
        y_hat, s, alpha_t = step(E[y], s, H, src_mask)
        word = torch.where(done, torch.full_like(y, PAD), y_hat.argmax(-1))
        alphas.append(alpha_t * (~done)[:, None])
        done = done | (word == EOS)
        y = word
        if done.all():
            break
    return torch.stack(ids, 1), torch.stack(alphas, 1)


def agree_in_float32(alpha, align, tgt_len):
    alpha, align = alpha.float(), align.float()  # "float32 is precise enough for a mean"
    real = torch.arange(alpha.shape[1])[None] < tgt_len[:, None]
    return (alpha * align).sum(-1)[real].mean().item()


def agree_rounded(alpha, align, tgt_len):
    real = torch.arange(alpha.shape[1])[None] < tgt_len[:, None]
    return round((alpha * align).sum(-1)[real].mean().item(), 4)  # "4 decimals, as a report shows it"


WRONG["07.greedy_decode"] += [
    ("records the word it feeds", greedy_records_what_it_feeds, "inputs_recorded", "fed into each step"),
]
WRONG["07.alignment_agreement"] += [
    ("computed in float32", agree_in_float32, "float32_computation", "computed in float32"),
    ("rounded to 4 decimals", agree_rounded, "rounded_result", "rounding is what is wrong"),
]
