"""Set 07 (seq2seq with attention): every known-wrong implementation is caught, with the right diagnosis.

These are written the way learners write them, independently of the grader's misconception models.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from attnbook.analysis import gru_cell
from attnbook.grading import get_task, run_task

PAD, SOS, EOS = 0, 1, 2

# ------------------------------------------------------------------------------ 07.attention_decoder_step


def new_state(y_prev_emb, s_prev, p):
    return gru_cell(y_prev_emb, s_prev, p["W_ih"], p["W_hh"], p["b_ih"], p["b_hh"])


def learner_step(query="new", concat="new", order="as", fill=float("-inf"), after=False, axis=-1,
                 probs=True, tanh=True, give_back="new", gru=True):
    """A learner's step, written with bmm and masked_fill; the keywords are the slips learners make."""
    def step(y_prev_emb, s_prev, H, src_mask, params):
        s_t = new_state(y_prev_emb, s_prev, params) if gru else s_prev
        q = s_t if query == "new" else s_prev
        scores = torch.bmm(H, q.unsqueeze(2)).squeeze(2)  # (B, N)
        if after:
            alpha_t = F.softmax(scores, dim=-1) * src_mask
        elif fill is None:
            alpha_t = F.softmax(scores, dim=axis)
        else:
            alpha_t = F.softmax(scores.masked_fill(src_mask == 0, fill), dim=axis)
        a_t = torch.bmm(alpha_t.unsqueeze(1), H).squeeze(1)  # (B, d)
        other = s_t if concat == "new" else s_prev
        v_t = torch.cat((a_t, other), 1) if order == "as" else torch.cat((other, a_t), 1)
        h = F.linear(v_t, params["W_c"], params["b_c"])
        s_tilde = torch.tanh(h) if tanh else h
        logits = F.linear(s_tilde, params["W_y"], params["b_y"])
        y_hat = F.softmax(logits, dim=-1) if probs else logits
        return y_hat, (s_t if give_back == "new" else s_prev), alpha_t
    return step


def step_context_query(y_prev_emb, s_prev, H, src_mask, params):
    """Attends with the 'context vector' (the last real encoder state) as in plain seq2seq."""
    s_t = new_state(y_prev_emb, s_prev, params)
    lengths = src_mask.long().sum(1)
    c = torch.stack([H[b, lengths[b] - 1] for b in range(H.shape[0])])
    alpha_t = F.softmax(torch.einsum("bnd,bd->bn", H, c).masked_fill(~src_mask, float("-inf")), -1)
    a_t = torch.einsum("bn,bnd->bd", alpha_t, H)
    y_hat = F.softmax(F.linear(torch.tanh(F.linear(torch.cat([a_t, s_t], -1), params["W_c"], params["b_c"])),
                               params["W_y"], params["b_y"]), -1)
    return y_hat, s_t, alpha_t


def step_mean_query(y_prev_emb, s_prev, H, src_mask, params):
    """Attends with the average of the real encoder states."""
    s_t = new_state(y_prev_emb, s_prev, params)
    m = src_mask.unsqueeze(-1).to(H.dtype)
    q = (H * m).sum(1) / m.sum(1)
    alpha_t = F.softmax(torch.einsum("bnd,bd->bn", H, q).masked_fill(~src_mask, float("-inf")), -1)
    a_t = torch.einsum("bn,bnd->bd", alpha_t, H)
    y_hat = F.softmax(F.linear(torch.tanh(F.linear(torch.cat([a_t, s_t], -1), params["W_c"], params["b_c"])),
                               params["W_y"], params["b_y"]), -1)
    return y_hat, s_t, alpha_t


def step_keeps_scores_shape(y_prev_emb, s_prev, H, src_mask, params):
    y_hat, s_t, _ = learner_step()(y_prev_emb, s_prev, H, src_mask, params)
    scores = H @ s_t.unsqueeze(-1)  # (B, N, 1): forgot to squeeze
    alpha_t = torch.softmax(scores.masked_fill(~src_mask.unsqueeze(-1), float("-inf")), dim=1)
    return y_hat, s_t, alpha_t


def step_not_normalised(y_prev_emb, s_prev, H, src_mask, params):
    y_hat, s_t, _ = learner_step()(y_prev_emb, s_prev, H, src_mask, params)
    scores = torch.bmm(H, s_t.unsqueeze(2)).squeeze(2)
    alpha_t = torch.exp(scores.masked_fill(~src_mask, float("-inf")))  # forgot to divide by the sum
    return y_hat, s_t, alpha_t


def step_float32(y_prev_emb, s_prev, H, src_mask, params):
    y_hat, s_t, alpha_t = learner_step()(y_prev_emb, s_prev, H, src_mask, params)
    return y_hat.float(), s_t, alpha_t


def step_state_updated_in_place(y_prev_emb, s_prev, H, src_mask, params):
    y_hat, s_t, alpha_t = learner_step()(y_prev_emb, s_prev, H, src_mask, params)
    s_prev[:] = s_t  # "update the state"
    return y_hat, s_prev, alpha_t


def step_alpha_rebuilt(y_prev_emb, s_prev, H, src_mask, params):
    y_hat, s_t, alpha_t = learner_step()(y_prev_emb, s_prev, H, src_mask, params)
    return y_hat, s_t, torch.tensor(alpha_t.tolist(), dtype=alpha_t.dtype)


def step_outputs_in_another_order(y_prev_emb, s_prev, H, src_mask, params):
    y_hat, s_t, alpha_t = learner_step()(y_prev_emb, s_prev, H, src_mask, params)
    return y_hat, alpha_t, s_t


def step_with_torch_gru_cell(y_prev_emb, s_prev, H, src_mask, params):
    """Correct: a torch.nn.GRUCell loaded with the given weights, the attention with masked_fill."""
    d, e = params["W_hh"].shape[1], params["W_ih"].shape[1]
    cell = torch.nn.GRUCell(e, d).double()
    with torch.no_grad():
        cell.weight_ih.copy_(params["W_ih"])
        cell.weight_hh.copy_(params["W_hh"])
        cell.bias_ih.copy_(params["b_ih"])
        cell.bias_hh.copy_(params["b_hh"])
    s_t = cell(y_prev_emb, s_prev)
    scores = (H * s_t[:, None, :]).sum(-1).masked_fill(~src_mask, float("-inf"))
    alpha_t = torch.softmax(scores, dim=1)
    a_t = (alpha_t[:, :, None] * H).sum(1)
    s_tilde = torch.tanh(torch.cat([a_t, s_t], dim=1) @ params["W_c"].T + params["b_c"])
    return torch.softmax(s_tilde @ params["W_y"].T + params["b_y"], dim=1), s_t, alpha_t


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
            y_hat, new, alpha_t = step(E[prev] if feed == "own" else E[torch.ones_like(prev)], state, H, src_mask)
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
    "07.attention_decoder_step": [
        ("Bahdanau's query s_{t-1}", learner_step(query="old"), "query_s_prev", "s_{t-1}"),
        ("s_{t-1} as query and in v_t", learner_step(query="old", concat="old"), "query_s_prev", "run the GRU first"),
        ("[a_t; s_{t-1}]", learner_step(concat="old"), "concat_s_prev", "[a_t; s_t]"),
        ("no GRU step", learner_step(gru=False), "no_gru_step", "never ran the GRU"),
        ("returns the old state", learner_step(give_back="old"), "returned_old_state", "new state s_t"),
        ("context vector as query", step_context_query, "static_query", "do not depend on the decoder state"),
        ("mean of H as query", step_mean_query, "static_query", "mean of the encoder states"),
        ("[s_t; a_t]", learner_step(order="sa"), "wrong_concat_order", "[a_t; s_t]"),
        ("no mask", learner_step(fill=None), "padding_not_masked", "-inf"),
        ("mask filled with 0", learner_step(fill=0.0), "padding_not_masked", "non-zero weight"),
        ("mask after the softmax", learner_step(after=True), "mask_after_softmax", "before the softmax"),
        ("softmax over the batch", learner_step(axis=0), "softmax_over_batch", "dim=0"),
        ("exp without the division", step_not_normalised, "not_normalised", "sum to 1"),
        ("logits", learner_step(probs=False), "returned_logits", "softmax"),
        ("no tanh", learner_step(tanh=False), "missing_tanh", "tanh"),
        ("scores not squeezed", step_keeps_scores_shape, "wrong_shape", "alpha_t"),
        ("float32 y_hat", step_float32, "wrong_dtype", "float32"),
        ("state updated in place", step_state_updated_in_place, "mutates_input", "s_prev"),
        ("alpha rebuilt with torch.tensor", step_alpha_rebuilt, "breaks_autograd", "autograd"),
        ("outputs in another order", step_outputs_in_another_order, "wrong_shape", "s_t"),
    ],
    "07.alignment_agreement": [
        ("mean over every step", agree_all_steps, "averaged_over_padding", "padding included"),
        ("total, not mean", agree_total, "summed_not_averaged", "divide by the number of real steps"),
        ("argmax hits", agree_hits, "argmax_hit_rate", "hit rate"),
        ("mean of sentence means", agree_sentence_means, "mean_of_sentence_means", "counts once"),
        ("largest weight", agree_peak, "peakedness_not_agreement", "peaked"),
        ("one number per step", agree_not_reduced, "wrong_type", "a number"),
        ("one step too many", agree_one_step_too_many, "wrong_values", "is wrong on"),
        ("divided by the links", agree_per_link, "per_link_average", "still one step"),
        ("a list per sentence", agree_list, "wrong_type", "a number"),
    ],
    "07.greedy_decode": [
        ("always max_len steps", greedy_learner(stop="never"), "no_early_stop", "max_len steps"),
        ("stops at the first <eos>", greedy_learner(stop="any"), "stops_at_first_eos", "all of them"),
        ("last step not recorded", greedy_learner(record_last=False), "last_step_dropped", "belong to the output"),
        ("no bookkeeping after <eos>", greedy_learner(pad=False, zero=False), "no_padding_after_eos", "<pad>"),
        ("alphas not zeroed", greedy_learner(zero=False), "alphas_not_zeroed", "all 0"),
        ("stacked on dim 0", greedy_learner(dim=0), "wrong_stack_axis", "dim=1"),
        ("<sos> fed every step", greedy_learner(feed="sos"), "fed_sos_every_step", "E[y]"),
        ("state never carried", greedy_learner(carry=False), "static_query", "s_0"),
        ("argmax over the batch", greedy_argmax_wrong_axis, "raised", "RuntimeError"),
        ("float ids", greedy_float_ids, "wrong_dtype", "float32"),
        ("torch.cat instead of stack", greedy_concatenated, "wrong_shape", "alphas"),
        ("Python lists", greedy_python_lists, "wrong_type", "torch.Tensor"),
    ],
}

CORRECT = {
    "07.attention_decoder_step": [step_with_torch_gru_cell, learner_step()],
    "07.alignment_agreement": [agree_einsum],
    "07.greedy_decode": [greedy_preallocated, greedy_learner()],
}


def test_a_decoding_loop_without_max_len_is_stopped():
    task = dataclasses.replace(get_task("07.greedy_decode"), timeout_s=0.5)
    result = run_task(task, greedy_while_not_done)
    assert result.diagnosis == "timeout" and "stopped after 0.5 s" in result.message
    assert "never produces <eos>" in result.message  # the case that needs max_len is named


def test_greedy_cases_stop_where_their_notes_say():
    task = get_task("07.greedy_decode")
    steps = [task.reference(*case.args)[0].shape[1] for case in task.cases()]
    assert steps == [4, 6, 5, 5]
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


def test_step_reference_equals_torch():
    """The grader's decoder step is torch.nn.GRUCell followed by the Luong attention and output layer."""
    task = get_task("07.attention_decoder_step")
    for case in task.cases():
        expected = task.reference(*case.args)
        got = step_with_torch_gru_cell(*case.args)
        for e, g in zip(expected, got):
            torch.testing.assert_close(g, e)


