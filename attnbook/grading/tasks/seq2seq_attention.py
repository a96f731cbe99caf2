"""Set 07, seq2seq with attention: one decoder step (Luong: query s_t), the agreement of attention weights
with a true alignment, and batched greedy decoding that returns every step's weights.

The decoder step is ``s_t = GRU(y_{t-1}, s_{t-1})``, ``e^t_i = s_t · h_i`` (masked), ``α^t = softmax(e^t)``,
``a_t = Σ_i α^t_i h_i``, ``s̃_t = tanh(W_c [a_t; s_t] + b_c)``, ``ŷ_t = softmax(W_y s̃_t + b_y)``.
"""

from __future__ import annotations

import torch

from ...analysis import gru_cell
from ...attention import softmax
from ..cases import generator, randn
from ..engine import Case, Misconception, Task
from ..registry import register

PAD, SOS, EOS = 0, 1, 2  # the book's vocabulary (attnbook.data)

# --------------------------------------------------------------------------------------------- shared pieces


def _mask(lengths, N):
    """(B,) lengths -> (B, N) bool, True at real source positions."""
    return torch.arange(N)[None, :] < torch.as_tensor(lengths)[:, None]


def _params(g, e, d, V, scale_y=1.0):
    """Fixed decoder weights: a GRU cell (PyTorch layout, gates r, z, n) and the Luong output layer."""
    return {
        "W_ih": randn(g, 3 * d, e), "W_hh": randn(g, 3 * d, d), "b_ih": randn(g, 3 * d), "b_hh": randn(g, 3 * d),
        "W_c": randn(g, d, 2 * d), "b_c": randn(g, d), "W_y": randn(g, V, d, scale=scale_y), "b_y": randn(g, V),
    }


def _gru(x, h, p):
    return gru_cell(x, h, p["W_ih"], p["W_hh"], p["b_ih"], p["b_hh"])


def _weights(query, H, src_mask, masked=True):
    """query (B, d), H (B, N, d) -> alpha (B, N): softmax of the dot scores over the source positions."""
    e = (H @ query.unsqueeze(-1)).squeeze(-1)  # (B, N)
    return softmax(e, dim=-1, mask=src_mask if masked else None)


def _output(a_t, s_t, p, order="as", act=torch.tanh, final=softmax):
    v_t = torch.cat([a_t, s_t] if order == "as" else [s_t, a_t], dim=-1)  # (B, 2d)
    s_tilde = act(v_t @ p["W_c"].T + p["b_c"])  # (B, d)
    return final(s_tilde @ p["W_y"].T + p["b_y"])  # (B, V)


# --------------------------------------------------------------------------------------------- 07.attention_decoder_step


def _step_ref(y_prev_emb, s_prev, H, src_mask, params):
    s_t = _gru(y_prev_emb, s_prev, params)  # (B, d)
    alpha_t = _weights(s_t, H, src_mask)  # (B, N)
    a_t = (alpha_t.unsqueeze(1) @ H).squeeze(1)  # (B, d)
    return _output(a_t, s_t, params), s_t, alpha_t


def _step_cases():
    g = generator(70)
    cases = []
    for B, e, d, N, V, lengths, scale_h, note in [
        (2, 3, 4, 5, 6, [5, 3], 1.0, ""),
        (3, 5, 2, 4, 7, [4, 1, 2], 1.0, "one sentence has a single source position"),
        (4, 2, 3, 6, 5, [6, 2, 5, 3], 4.0, "scores in the tens"),
        (1, 6, 5, 3, 8, [3], 1.0, "no padding"),
    ]:
        H = randn(g, B, N, d, scale=scale_h) * _mask(lengths, N)[..., None]  # zero at padding, like the encoder
        cases.append(Case(
            f"B={B}, e={e}, d={d}, N={N}, V={V}, lengths {', '.join(map(str, lengths))}",
            (randn(g, B, e), randn(g, B, d), H, _mask(lengths, N), _params(g, e, d, V)),
            dims={"B": B, "e": e, "d": d, "N": N, "V": V}, note=note,
        ))
    return cases


def _step_with(query="s_t", concat_state="s_t", order="as", masked=True, mask_after=False, final=softmax,
               act=torch.tanh, alpha_dim=-1, returned_state="s_t"):
    """A wrong decoder step; the defaults give the reference."""
    def fn(y_prev_emb, s_prev, H, src_mask, params):
        s_t = _gru(y_prev_emb, s_prev, params)
        lengths = src_mask.sum(-1)
        q = {
            "s_t": s_t,
            "s_prev": s_prev,
            "last_h": H[torch.arange(H.shape[0]), lengths - 1],
            "mean_h": H.sum(1) / lengths[:, None],
        }[query]
        e = (H @ q.unsqueeze(-1)).squeeze(-1)
        if mask_after:
            alpha_t = softmax(e, dim=-1) * src_mask
        elif alpha_dim != -1:
            alpha_t = softmax(e, dim=alpha_dim, mask=src_mask)
        else:
            alpha_t = softmax(e, dim=-1, mask=src_mask if masked else None)
        a_t = (alpha_t.unsqueeze(1) @ H).squeeze(1)
        state = {"s_t": s_t, "s_prev": s_prev}[concat_state]
        y_hat = _output(a_t, state, params, order=order, act=act, final=final)
        return y_hat, {"s_t": s_t, "s_prev": s_prev}[returned_state], alpha_t
    return fn


def _step_no_gru(y_prev_emb, s_prev, H, src_mask, params):
    alpha_t = _weights(s_prev, H, src_mask)
    a_t = (alpha_t.unsqueeze(1) @ H).squeeze(1)
    return _output(a_t, s_prev, params), s_prev, alpha_t


STATIC_STEP = ("your weights do not depend on the decoder state: you scored the encoder states against {which}, "
               "which is the same at every step, so every step would attend to the same place. The query is "
               "the new decoder state s_t")


def _step_alpha_sums_to_one(case, outputs):
    alpha = outputs[2] if len(outputs) == 3 else None
    H = case.args[2]
    if not isinstance(alpha, torch.Tensor) or alpha.shape != H.shape[:2] or not torch.isfinite(alpha).all():
        return None
    sums = alpha.sum(-1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-6):
        return (f"your alpha_t does not sum to 1 over the source positions of each sentence: row sums range "
                f"from {float(sums.min()):.4f} to {float(sums.max()):.4f}")
    return None


_step_alpha_sums_to_one.key = "not_normalised"


def _step_padding_gets_weight(case, outputs):
    alpha = outputs[2] if len(outputs) == 3 else None
    H, src_mask = case.args[2], case.args[3]
    if not isinstance(alpha, torch.Tensor) or alpha.shape != H.shape[:2]:
        return None
    if (alpha[~src_mask].abs() > 1e-12).any():
        return ("padded source positions (src_mask False) got a non-zero weight: fill their scores with -inf "
                "before the softmax")
    return None


_step_padding_gets_weight.key = "padding_not_masked"


register(Task(
    id="07.attention_decoder_step",
    title="one decoder step with attention (Luong, query s_t)",
    points=3,
    reference=_step_ref,
    cases=_step_cases,
    output_names=("y_hat", "s_t", "alpha_t"),
    misconceptions=[
        Misconception("query_s_prev", "your scores use the previous state s_{t-1} as the query (the order of "
                      "Bahdanau's attention); in this task's Luong step the GRU runs first, and the new state "
                      "s_t is the query: e^t_i = s_t · h_i", _step_with(query="s_prev")),
        Misconception("query_s_prev", "your scores and your v_t both use the previous state s_{t-1}: run the GRU "
                      "first; the new state s_t is the query and goes into v_t = [a_t; s_t]",
                      _step_with(query="s_prev", concat_state="s_prev")),
        Misconception("concat_s_prev", "your v_t joins a_t with the previous state s_{t-1}: v_t = [a_t; s_t] "
                      "uses the new state returned by the GRU", _step_with(concat_state="s_prev")),
        Misconception("no_gru_step", "you never ran the GRU: s_t = GRU(y_{t-1}, s_{t-1}) is the first line of "
                      "the step (gru_cell with the W_ih, W_hh, b_ih, b_hh of params), and everything after it "
                      "uses s_t", _step_no_gru),
        Misconception("returned_old_state", "you returned s_{t-1} as the state: return the new state s_t, which "
                      "the next step needs", _step_with(returned_state="s_prev")),
        Misconception("static_query", STATIC_STEP.format(which="the last encoder state"),
                      _step_with(query="last_h")),
        Misconception("static_query", STATIC_STEP.format(which="the mean of the encoder states"),
                      _step_with(query="mean_h")),
        Misconception("wrong_concat_order", "you concatenated [s_t; a_t]; the attention value comes first: "
                      "v_t = [a_t; s_t] (the first d columns of W_c read a_t)", _step_with(order="sa")),
        Misconception("padding_not_masked", "padded source positions (src_mask False) got a non-zero weight: "
                      "fill their scores with -inf before the softmax", _step_with(masked=False)),
        Misconception("mask_after_softmax", "you zeroed the padded weights after the softmax, so a padded "
                      "sentence's weights no longer sum to 1: mask the scores (with -inf) before the softmax",
                      _step_with(mask_after=True)),
        Misconception("softmax_over_batch", "your alpha_t is normalised over the batch axis (dim=0): each "
                      "sentence's weights sum to 1 over its own source positions (dim=-1)",
                      _step_with(alpha_dim=0)),
        Misconception("returned_logits", "y_hat is the logits W_y s̃_t + b_y; the task asks for their softmax, "
                      "a probability distribution over the vocabulary", _step_with(final=lambda x: x)),
        Misconception("missing_tanh", "you left out the tanh: s̃_t = tanh(W_c v_t + b_c)",
                      _step_with(act=lambda x: x)),
    ],
    properties=[_step_padding_gets_weight, _step_alpha_sums_to_one],
    hint="s_t = gru_cell(y_prev_emb, s_prev, ...); e (B, N) = (H @ s_t.unsqueeze(-1)).squeeze(-1); mask; "
         "alpha_t = softmax over dim=-1; a_t = (alpha_t.unsqueeze(1) @ H).squeeze(1); "
         "y_hat = softmax(tanh([a_t; s_t] @ W_c.T + b_c) @ W_y.T + b_y).",
))

# --------------------------------------------------------------------------------------------- 07.alignment_agreement


def _real(tgt_len, T):
    return torch.arange(T)[None, :] < torch.as_tensor(tgt_len)[:, None]  # (B, T)


def _agreement_ref(alpha, align, tgt_len):
    real = _real(tgt_len, alpha.shape[1])
    return float((alpha * align).sum(-1)[real].sum() / real.sum())


def _agreement_case(g, B, T, N, tgt_len, src_len):
    """Random attention (0 at padded source positions, garbage rows at padded target steps) and an
    alignment with one or two links per real step."""
    src_mask = _mask(src_len, N)  # (B, N)
    alpha = softmax(randn(g, B, T, N, scale=2.0), dim=-1, mask=src_mask[:, None, :])  # (B, T, N)
    align = torch.zeros(B, T, N, dtype=alpha.dtype)
    for b in range(B):
        for t in range(tgt_len[b]):
            i = int(torch.randint(src_len[b], (1,), generator=g))
            align[b, t, i] = 1.0
            if t % 2 == 0 and src_len[b] > 1:  # some steps translate two source words
                align[b, t, (i + 1) % src_len[b]] = 1.0
    return alpha, align, torch.tensor(tgt_len)


def _agreement_cases():
    g = generator(71)
    cases = []
    for B, T, N, tgt_len, src_len, note in [
        (3, 3, 6, [3, 1, 2], [6, 4, 2], "sentence 1 has 2 padded target steps"),
        (4, 6, 7, [6, 3, 5, 2], [7, 5, 6, 3], "lengths all different"),
        (2, 4, 5, [4, 1], [5, 3], ""),
        (1, 5, 3, [5], [3], "no padding"),
    ]:
        cases.append(Case(f"B={B}, T={T}, N={N}, target lengths {', '.join(map(str, tgt_len))}",
                          _agreement_case(g, B, T, N, tgt_len, src_len),
                          dims={"B": B, "T": T, "N": N}, note=note))
    # one step aligned to every position of a long sentence: argmax hits and mass differ a lot
    alpha, align, tgt_len = _agreement_case(g, 2, 3, 4, [3, 2], [4, 4])
    cases.append(Case("B=2, T=3, N=4, flat attention", (torch.full_like(alpha, 0.25), align, tgt_len),
                      dims={"B": 2, "T": 3, "N": 4}, note="every weight is 0.25"))
    return cases


def _agreement_padded(alpha, align, tgt_len):
    return float((alpha * align).sum(-1).mean())


def _agreement_sum(alpha, align, tgt_len):
    return float((alpha * align).sum(-1)[_real(tgt_len, alpha.shape[1])].sum())


def _agreement_argmax(alpha, align, tgt_len):
    real = _real(tgt_len, alpha.shape[1])
    hits = align.gather(-1, alpha.argmax(-1, keepdim=True)).squeeze(-1)
    return float(hits[real].float().mean())


def _agreement_per_sentence(alpha, align, tgt_len):
    mass = (alpha * align).sum(-1) * _real(tgt_len, alpha.shape[1])  # (B, T)
    return float((mass.sum(1) / torch.as_tensor(tgt_len).clamp(min=1)).mean())


def _agreement_per_link(alpha, align, tgt_len):
    real = _real(tgt_len, alpha.shape[1])
    return float((alpha * align).sum(-1)[real].sum() / align[real].sum())


def _agreement_peak(alpha, align, tgt_len):
    return float(alpha.amax(-1)[_real(tgt_len, alpha.shape[1])].mean())


register(Task(
    id="07.alignment_agreement",
    title="agreement of attention weights with a true alignment",
    points=2,
    reference=_agreement_ref,
    cases=_agreement_cases,
    misconceptions=[
        Misconception("averaged_over_padding", "you averaged over all B·T target steps, padding included: only "
                      "the steps t < tgt_len[b] are real words; divide by their number",
                      _agreement_padded),
        Misconception("summed_not_averaged", "you returned the total weight on aligned words, a sum over all "
                      "real steps: divide by the number of real steps to get a mean between 0 and 1",
                      _agreement_sum),
        Misconception("argmax_hit_rate", "you counted how often the most attended position is aligned (a hit "
                      "rate); the task asks for the weight itself: Σ_i alpha[b, t, i] · align[b, t, i], "
                      "averaged over the real steps", _agreement_argmax),
        Misconception("mean_of_sentence_means", "you averaged each sentence first and then the sentences: every "
                      "real target step counts once, so a long sentence weighs more than a short one. Sum over "
                      "all real steps and divide by their total number", _agreement_per_sentence),
        Misconception("per_link_average", "you divided by the number of alignment links: a target word aligned "
                      "to two source words is still one step, and its weight on both counts once. Divide by the "
                      "number of real steps", _agreement_per_link),
        Misconception("peakedness_not_agreement", "you measured how peaked the attention is (its largest weight), "
                      "not whether the weight is on the aligned words: multiply by align", _agreement_peak),
    ],
    check_grad=False,
    hint="mass (B, T) = (alpha * align).sum(-1); keep the steps t < tgt_len[b]; their mean is the answer.",
))

# --------------------------------------------------------------------------------------------- 07.greedy_decode

_NEVER = 10_000
_BIG = 50.0


def _toy_step(seed, e, d, V, eos_at):
    """A fixed decoder step with attention ``(y_prev_emb, s_prev, H, src_mask) -> (y_hat, s_t, alpha_t)``.

    It is the Luong step of 07.attention_decoder_step with fixed weights, except that ``s[:, 0]`` counts
    the steps, and sentence b's ``<eos>`` becomes the most likely word exactly from step ``eos_at[b]`` on
    (``<pad>`` and ``<sos>`` are never likely). Words and weights depend on the fed word and the state.
    """
    p = _params(generator(seed), e, d - 1, V, scale_y=2.0)
    eos_at = torch.tensor(eos_at, dtype=torch.float64)

    def step(y_prev_emb, s_prev, H, src_mask):
        count = s_prev[:, :1] + 1  # (B, 1)
        z = _gru(y_prev_emb, s_prev[:, 1:], p)  # (B, d - 1)
        s_t = torch.cat([count, z], dim=-1)  # (B, d)
        alpha_t = _weights(s_t, H, src_mask)  # (B, N)
        a_t = (alpha_t.unsqueeze(1) @ H).squeeze(1)[:, 1:]  # (B, d - 1)
        logits = torch.tanh(torch.cat([a_t, z], -1) @ p["W_c"].T + p["b_c"]) @ p["W_y"].T + p["b_y"]  # (B, V)
        column = torch.arange(V)
        eos = torch.where(count >= eos_at[:, None], _BIG, -_BIG)  # (B, 1)
        logits = torch.where(column == EOS, eos, logits)
        logits = torch.where((column == PAD) | (column == SOS), -_BIG, logits)
        return softmax(logits), s_t, alpha_t

    step.__qualname__ = step.__name__ = "step"
    return step


def _greedy_cases():
    cases = []
    for seed, B, e, d, N, V, eos_at, lengths, max_len, note in [
        (1, 3, 4, 5, 6, 9, [2, 4, 3], [6, 3, 5], 8, "<eos> at steps 2, 4 and 3: 4 steps"),
        (2, 2, 3, 4, 5, 7, [3, _NEVER], [5, 2], 6, "sentence 1 never produces <eos>: max_len stops the loop"),
        (3, 4, 5, 3, 7, 8, [1, 2, 5, 3], [7, 4, 1, 6], 9, "<eos> at the first step for sentence 0"),
        (4, 1, 2, 6, 4, 10, [5], [4], 5, "<eos> exactly at step max_len = 5"),
    ]:
        g = generator(100 + seed)
        H = randn(g, B, N, d) * _mask(lengths, N)[..., None]
        s_0 = randn(g, B, d)
        s_0[:, 0] = 0.0
        E = randn(g, V, e)
        cases.append(Case(
            f"B={B}, N={N}, V={V}, max_len={max_len}",
            (_toy_step(seed, e, d, V, eos_at), s_0, H, _mask(lengths, N), E, max_len),
            dims={"B": B, "N": N, "V": V, "e": e, "d": d}, note=note,
        ))
    return cases


def _greedy_with(stop="all", pad=True, zero_alpha=True, feed="prediction", carry=True, stack=1, record_last=True):
    """A greedy decoder over a batch; the defaults give the reference."""
    def fn(step, s_0, H, src_mask, E, max_len):
        B = s_0.shape[0]
        y = torch.full((B,), SOS, dtype=torch.long)
        s = s_0
        done = torch.zeros(B, dtype=torch.bool)
        ids, alphas = [], []
        for _ in range(max_len):
            y_hat, s_new, alpha_t = step(E[y if feed == "prediction" else torch.full_like(y, SOS)], s, H, src_mask)
            s = s_new if carry else s_0
            y = y_hat.argmax(-1)
            if pad:
                y = y.masked_fill(done, PAD)
            if zero_alpha:
                alpha_t = alpha_t.masked_fill(done[:, None], 0.0)
            finished = done | (y == EOS)
            last = bool(finished.all()) if stop == "all" else bool((y == EOS).any()) if stop == "any" else False
            if last and not record_last:
                break
            ids.append(y)
            alphas.append(alpha_t)
            done = finished
            if last:
                break
        return torch.stack(ids, stack), torch.stack(alphas, stack)
    return fn


_greedy_ref = _greedy_with()


register(Task(
    id="07.greedy_decode",
    title="greedy decoding of a batch, with every step's weights",
    points=3,
    reference=_greedy_ref,
    cases=_greedy_cases,
    output_names=("ids", "alphas"),
    misconceptions=[
        Misconception("no_early_stop", "you always ran max_len steps: stop right after the step at which every "
                      "sentence has produced <eos> (ids (B, T_out) has as many columns as steps were needed)",
                      _greedy_with(stop="never")),
        Misconception("stops_at_first_eos", "you stopped as soon as one sentence produced <eos>: the others may "
                      "not be finished; stop when all of them are", _greedy_with(stop="any")),
        Misconception("last_step_dropped", "you stopped before recording the step at which the last sentence "
                      "produced <eos>: that step's id (<eos>) and weights belong to the output",
                      _greedy_with(record_last=False)),
        Misconception("no_padding_after_eos", "after a sentence has produced <eos>, its later ids must be <pad> "
                      "(0) and its later weights 0: keep track of which sentences are done",
                      _greedy_with(pad=False, zero_alpha=False)),
        Misconception("alphas_not_zeroed", "your ids are padded after <eos>, but the weights of those steps are "
                      "not: a finished sentence's later rows of alphas must be all 0",
                      _greedy_with(zero_alpha=False)),
        Misconception("wrong_stack_axis", "you stacked the steps along the first axis, (T_out, B) and "
                      "(T_out, B, N): stack along dim=1 so that ids is (B, T_out) and alphas (B, T_out, N)",
                      _greedy_with(stack=0)),
        Misconception("fed_sos_every_step", "you fed <sos> at every step: step t must be fed the embedding of "
                      "the word predicted at step t - 1, E[y]", _greedy_with(feed="sos")),
        Misconception("static_query", "you passed s_0 to every step, so the state, and with it the attention "
                      "query, never changed: pass the state returned by the previous step",
                      _greedy_with(carry=False)),
    ],
    check_grad=False,
    timeout_s=5.0,
    hint="y = <sos> for every sentence, s = s_0; up to max_len times: y_hat, s, alpha_t = step(E[y], s, H, "
         "src_mask); y = argmax; <pad> and zero weights for the sentences already done; record; stop when "
         "all are done. Stack with dim=1.",
))
