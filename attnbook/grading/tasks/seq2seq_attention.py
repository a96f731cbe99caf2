"""Set 07, seq2seq with attention: one decoder step in Bahdanau's order (query s_{t-1}, additive scores,
the attention value fed into the GRU), the agreement of attention weights with a true alignment, and batched
greedy decoding that returns every step's weights.

The Bahdanau step is ``e^t_i = w · tanh(W_q s_{t-1} + W_k h_i)`` (masked), ``α^t = softmax(e^t)``,
``a_t = Σ_i α^t_i h_i``, ``s_t = GRU([y_{t-1}; a_t], s_{t-1})``, ``ŷ_t = softmax(W_y s_t + b_y)``. Chapter 7
writes out Luong's step (query s_t) and only describes this one, so the task cannot be copied from it.
"""

from __future__ import annotations

import types

import torch

from ...analysis import aligned_mass as _book_aligned_mass
from ...analysis import gru_cell
from ...attention import softmax
from ..cases import generator, randn
from ..engine import Case, Misconception, Task
from ..registry import register

PAD, SOS, EOS = 0, 1, 2  # the book's vocabulary (attnbook.data)
TOL = 1e-9  # float64 answers computed in another order agree to ~1e-13; float32 inside misses by ~1e-7

# --------------------------------------------------------------------------------------------- shared pieces


def _mask(lengths, N):
    """(B,) lengths -> (B, N) bool, True at real source positions."""
    return torch.arange(N)[None, :] < torch.as_tensor(lengths)[:, None]


def _gru(x, h, p):
    return gru_cell(x, h, p["W_ih"], p["W_hh"], p["b_ih"], p["b_hh"])


def _dot_weights(query, H, src_mask):
    """query (B, d), H (B, N, d) -> alpha (B, N): softmax of the dot scores over the source positions."""
    e = (H @ query.unsqueeze(-1)).squeeze(-1)  # (B, N)
    return softmax(e, dim=-1, mask=src_mask)


def _value(alpha, H):
    return (alpha.unsqueeze(1) @ H).squeeze(1)  # (B, 1, N) @ (B, N, d) -> (B, d)


# --------------------------------------------------------------------------------------------- 07.bahdanau_step


def _bahdanau_params(g, e, d, d_a, V):
    """Fixed decoder weights in PyTorch's (out, in) layout: the additive score, a GRU that reads [y; a_t]
    (gates r, z, n) and the prediction layer."""
    return {
        "W_q": randn(g, d_a, d),
        "W_k": randn(g, d_a, d),
        "w": randn(g, d_a),
        "W_ih": randn(g, 3 * d, e + d, scale=0.7),
        "W_hh": randn(g, 3 * d, d, scale=0.7),
        "b_ih": randn(g, 3 * d),
        "b_hh": randn(g, 3 * d),
        "W_y": randn(g, V, d),
        "b_y": randn(g, V),
    }


def _additive(query, H, p, order="qk", act=torch.tanh, reduce="w", transpose=True):
    """query (B, d), H (B, N, d) -> e (B, N) = w · tanh(W_q query + W_k h_i); keywords give the slips."""
    W_q, W_k = (p["W_q"], p["W_k"]) if order == "qk" else (p["W_k"], p["W_q"])
    q = query @ (W_q.T if transpose else W_q)  # (B, d_a)
    k = H @ (W_k.T if transpose else W_k)  # (B, N, d_a)
    hidden = act(q.unsqueeze(1) + k)  # (B, N, d_a)
    return hidden @ p["w"] if reduce == "w" else hidden.sum(-1)


def _bahdanau_ref(y_prev_emb, s_prev, H, src_mask, params):
    e_t = _additive(s_prev, H, params)  # (B, N): the query is the previous state s_{t-1}
    alpha_t = softmax(e_t, dim=-1, mask=src_mask)  # (B, N)
    a_t = _value(alpha_t, H)  # (B, d)
    s_t = _gru(torch.cat([y_prev_emb, a_t], dim=-1), s_prev, params)  # (B, d): the GRU reads [y; a_t]
    y_hat = softmax(s_t @ params["W_y"].T + params["b_y"], dim=-1)  # (B, n_vocab)
    return y_hat, s_t, alpha_t


def _bahdanau_cases():
    g = generator(72)
    cases = []
    for B, e, d, d_a, N, V, lengths, scale_h, garbage, note in [
        (2, 3, 4, 4, 5, 6, [5, 3], 1.0, 0.0, "d_a = d, so a matrix applied the wrong way round still runs"),
        (3, 5, 2, 3, 4, 7, [4, 1, 2], 1.0, 0.0, "one sentence has a single source position"),
        (
            4,
            2,
            3,
            5,
            6,
            8,
            [6, 2, 5, 3],
            3.0,
            40.0,
            "large states, and the padded positions of H hold large numbers that must get weight 0",
        ),
        (1, 6, 5, 2, 3, 9, [3], 1.0, 0.0, "one sentence, no padding"),
    ]:
        mask = _mask(lengths, N)
        H = randn(g, B, N, d, scale=scale_h)
        H = torch.where(mask[..., None], H, garbage * H.sign())  # padding: 0, or large numbers
        cases.append(
            Case(
                f"B={B}, e={e}, d={d}, d_a={d_a}, N={N}, n_vocab={V}, lengths {', '.join(map(str, lengths))}",
                (randn(g, B, e), randn(g, B, d), H, mask, _bahdanau_params(g, e, d, d_a, V)),
                dims={"B": B, "e": e, "d": d, "d_a": d_a, "N": N, "n_vocab": V},
                note=note,
            )
        )
    return cases


def _bahdanau_with(
    query="s_prev",
    gru_input="y_a",
    score="additive",
    masked="before",
    alpha_dim=-1,
    predict_from="s_t",
    returned_state="s_t",
    final="softmax",
    returned_alpha="alpha",
    **score_kw,
):
    """A wrong Bahdanau step; the defaults give the reference."""

    def fn(y_prev_emb, s_prev, H, src_mask, p):
        lengths = src_mask.sum(-1)
        q = {
            "s_prev": s_prev,
            "last_h": H[torch.arange(H.shape[0]), lengths - 1],
            "mean_h": (H * src_mask[..., None]).sum(1) / lengths[:, None],
        }[query if query != "s_t" else "s_prev"]
        e_t = _additive(q, H, p, **score_kw) if score == "additive" else (H @ q.unsqueeze(-1)).squeeze(-1)
        if masked == "before":
            alpha_t = softmax(e_t, dim=alpha_dim, mask=src_mask)
        elif masked == "after":
            alpha_t = softmax(e_t, dim=-1) * src_mask
        else:
            alpha_t = softmax(e_t, dim=-1)
        a_t = _value(alpha_t, H)
        x = {
            "y_a": [y_prev_emb, a_t],
            "a_y": [a_t, y_prev_emb],
            "y_0": [y_prev_emb, torch.zeros_like(a_t)],
            "y_s": [y_prev_emb, s_prev],
        }[gru_input]
        s_t = _gru(torch.cat(x, dim=-1), s_prev, p)
        if query == "s_t":  # the weights (and value) taken again from the new state: Luong's order
            alpha_t = softmax(_additive(s_t, H, p), dim=-1, mask=src_mask)
        source = {"s_t": s_t, "s_prev": s_prev}[predict_from]
        logits = source @ p["W_y"].T + p["b_y"]
        y_hat = softmax(logits, dim=-1) if final == "softmax" else logits
        out_alpha = {
            "alpha": alpha_t,
            "scores": e_t,
            "masked_scores": e_t.masked_fill(~src_mask, float("-inf")),
        }[returned_alpha]
        return y_hat, {"s_t": s_t, "s_prev": s_prev}[returned_state], out_alpha

    return fn


def _bahdanau_luong_order(y_prev_emb, s_prev, H, src_mask, p):
    """Luong's order with Bahdanau's pieces: GRU on [y; 0] first, then the additive score with s_t."""
    s_t = _gru(torch.cat([y_prev_emb, torch.zeros_like(s_prev)], dim=-1), s_prev, p)
    alpha_t = softmax(_additive(s_t, H, p), dim=-1, mask=src_mask)
    return softmax(s_t @ p["W_y"].T + p["b_y"], dim=-1), s_t, alpha_t


def _bahdanau_plain_average(y_prev_emb, s_prev, H, src_mask, p):
    """Uniform weights over the real positions: a_t is the plain average of the real states."""
    alpha_t = src_mask.to(H.dtype) / src_mask.sum(-1, keepdim=True)
    s_t = _gru(torch.cat([y_prev_emb, _value(alpha_t, H)], dim=-1), s_prev, p)
    return softmax(s_t @ p["W_y"].T + p["b_y"], dim=-1), s_t, alpha_t


def _bahdanau_softmax_twice(y_prev_emb, s_prev, H, src_mask, p):
    alpha_t = softmax(softmax(_additive(s_prev, H, p), dim=-1, mask=src_mask), dim=-1, mask=src_mask)
    s_t = _gru(torch.cat([y_prev_emb, _value(alpha_t, H)], dim=-1), s_prev, p)
    return softmax(s_t @ p["W_y"].T + p["b_y"], dim=-1), s_t, alpha_t


def _bahdanau_shortcut(y_prev_emb, s_prev, H, src_mask, params):
    """An answer that takes the book's BahdanauSeq2Seq.attend for steps 1-3 (for tests/test_free_points.py)."""
    from attnbook.models import BahdanauSeq2Seq

    layers = types.SimpleNamespace(
        W_q=lambda x: x @ params["W_q"].T,
        W_k=lambda x: x @ params["W_k"].T,
        w=lambda x: (x @ params["w"])[..., None],
    )
    a_t, alpha_t = BahdanauSeq2Seq.attend(layers, s_prev, H, src_mask)
    s_t = _gru(torch.cat([y_prev_emb, a_t], dim=-1), s_prev, params)
    return torch.softmax(s_t @ params["W_y"].T + params["b_y"], dim=-1), s_t, alpha_t


STATIC_STEP = (
    "your weights do not depend on the decoder state: you scored the encoder states against {which}, "
    "which is the same at every step, so every step would attend to the same place. The query is "
    "the previous decoder state s_{{t-1}}"
)


def _step_alpha_sums_to_one(case, outputs):
    alpha = outputs[2] if len(outputs) == 3 else None
    H = case.args[2]
    if not isinstance(alpha, torch.Tensor) or alpha.shape != H.shape[:2] or not torch.isfinite(alpha).all():
        return None
    sums = alpha.sum(-1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-6):
        return (
            f"your alpha_t does not sum to 1 over the source positions of each sentence: row sums range "
            f"from {float(sums.min()):.4f} to {float(sums.max()):.4f}"
        )
    return None


_step_alpha_sums_to_one.key = "not_normalised"


def _step_alpha_not_weights(case, outputs):
    """Negative or infinite entries: not weights at all (the scores, returned in their place)."""
    alpha = outputs[2] if len(outputs) == 3 else None
    H = case.args[2]
    if not isinstance(alpha, torch.Tensor) or alpha.shape != H.shape[:2]:
        return None
    a = alpha.detach()
    if bool((a < 0).any()) or not bool(torch.isfinite(a).all()):
        return (
            "your alpha_t has negative or infinite entries, so it is not a set of weights (a softmax is never "
            "negative): it looks like the scores e^t, returned in place of their softmax over the source "
            "positions"
        )
    return None


_step_alpha_not_weights.key = "returned_scores"


def _step_padding_gets_weight(case, outputs):
    alpha = outputs[2] if len(outputs) == 3 else None
    H, src_mask = case.args[2], case.args[3]
    if not isinstance(alpha, torch.Tensor) or alpha.shape != H.shape[:2]:
        return None
    if (alpha[~src_mask].abs() > 1e-12).any():
        return "padded source positions (src_mask False) got a non-zero weight: hide them before the softmax"
    return None


_step_padding_gets_weight.key = "padding_not_masked"


register(
    Task(
        id="07.bahdanau_step",
        title="one decoder step in Bahdanau's order (query s_{t-1}, a_t fed into the GRU)",
        points=3,
        reference=_bahdanau_ref,
        cases=_bahdanau_cases,
        output_names=("y_hat", "s_t", "alpha_t"),
        atol=TOL,
        rtol=TOL,
        misconceptions=[
            Misconception(
                "plain_average",
                "your weights do not depend on the scores: every real position gets the same weight, so a_t is a "
                "plain average of the encoder states. The weights are the softmax of the additive scores",
                _bahdanau_plain_average,
            ),
            Misconception(
                "softmax_twice",
                "you applied the softmax twice: the weights are already a distribution after one softmax of the "
                "scores, and a second one flattens them towards uniform",
                _bahdanau_softmax_twice,
            ),
            Misconception(
                "query_s_t",
                "your alpha_t comes from the new state s_t, after the GRU step (Luong's order). "
                "In Bahdanau's step the query is the previous state s_{t-1}: the decoder looks at the "
                "source first, and those weights are the ones it feeds into the GRU and returns",
                _bahdanau_with(query="s_t"),
                hint="Compute e_t, alpha_t and a_t from s_prev before calling gru_cell, and return that "
                "alpha_t.",
            ),
            Misconception(
                "context_not_fed",
                "your GRU does not read the attention value: in Bahdanau's step the "
                "GRU's input is the previous word's embedding joined with a_t, so the new state knows "
                "what the decoder looked at",
                _bahdanau_with(gru_input="y_0"),
                hint="x = torch.cat([y_prev_emb, a_t], dim=-1); s_t = gru_cell(x, s_prev, ...).",
            ),
            Misconception(
                "gru_input_order",
                "you joined the GRU's input as [a_t; y_{t-1}]: the embedding comes "
                "first, [y_{t-1}; a_t] (the first e columns of W_ih read the word)",
                _bahdanau_with(gru_input="a_y"),
                hint="torch.cat([y_prev_emb, a_t], dim=-1).",
            ),
            Misconception(
                "fed_state_not_value",
                "you fed the previous state s_{t-1} into the GRU where the attention "
                "value a_t belongs: the GRU reads [y_{t-1}; a_t], and s_{t-1} is its state argument",
                _bahdanau_with(gru_input="y_s"),
            ),
            Misconception(
                "dot_scores",
                "your scores are dot products s_{t-1} · h_i (Luong's score); Bahdanau's score "
                "is additive: w · tanh(W_q s_{t-1} + W_k h_i)",
                _bahdanau_with(score="dot"),
                hint="e_t = torch.tanh((s_prev @ W_q.T).unsqueeze(1) + H @ W_k.T) @ w  # (B, N)",
            ),
            Misconception(
                "swapped_score_matrices",
                "you applied W_q to the encoder states and W_k to the query: W_q "
                "is the query's matrix (it multiplies s_{t-1}) and W_k the keys' (it multiplies each h_i)",
                _bahdanau_with(order="kq"),
            ),
            Misconception(
                "relu_for_tanh",
                "your additive score uses ReLU where Bahdanau's has tanh: e^t_i = w · tanh(W_q s_{t-1} + W_k h_i)",
                _bahdanau_with(act=torch.relu),
            ),
            Misconception(
                "query_s_t",
                "you ran the GRU first, without the attention value, and attended with the new state s_t: that is "
                "Luong's order. In Bahdanau's step the query is s_{t-1}, the attention comes first, and its value "
                "a_t is part of the GRU's input",
                _bahdanau_luong_order,
            ),
            Misconception(
                "score_without_tanh",
                "your additive score has no tanh: e^t_i = w · tanh(W_q s_{t-1} + "
                "W_k h_i); without it the score is linear in h_i",
                _bahdanau_with(act=lambda x: x),
            ),
            Misconception(
                "summed_not_w",
                "you added up the d_a numbers inside the tanh instead of weighting them "
                "with the vector w: the score is the dot product of w with the tanh",
                _bahdanau_with(reduce="sum"),
            ),
            Misconception(
                "weights_not_transposed",
                "W_q and W_k are stored like nn.Linear weights, (d_a, d): "
                "(out, in). Applied the other way round they only run because d_a = d here; apply each "
                "to a row of inputs as the book does everywhere",
                _bahdanau_with(transpose=False),
                hint="s_prev @ W_q.T and H @ W_k.T.",
            ),
            Misconception(
                "static_query",
                STATIC_STEP.format(which="the last encoder state"),
                _bahdanau_with(query="last_h"),
            ),
            Misconception(
                "static_query",
                STATIC_STEP.format(which="the mean of the encoder states"),
                _bahdanau_with(query="mean_h"),
            ),
            Misconception(
                "padding_not_masked",
                "padded source positions (src_mask False) got a non-zero weight: "
                "hide them before the softmax",
                _bahdanau_with(masked="no"),
            ),
            Misconception(
                "mask_after_softmax",
                "you zeroed the padded weights after the softmax, so a padded "
                "sentence's weights no longer sum to 1: hide the padded scores before the softmax",
                _bahdanau_with(masked="after"),
            ),
            Misconception(
                "softmax_over_batch",
                "your alpha_t is normalised over the batch axis: each sentence's "
                "weights sum to 1 over its own source positions (the last axis)",
                _bahdanau_with(alpha_dim=0),
            ),
            Misconception(
                "returned_scores",
                "your alpha_t is the scores e^t, not the weights: the weights are "
                "their softmax over the source positions",
                _bahdanau_with(returned_alpha="scores"),
            ),
            Misconception(
                "returned_scores",
                "your alpha_t is the masked scores (-inf at the padding), not the weights: the weights are "
                "their softmax over the source positions",
                _bahdanau_with(returned_alpha="masked_scores"),
            ),
            Misconception(
                "predicted_from_old_state",
                "your prediction reads the previous state s_{t-1}: in this "
                "step y_hat comes from the new state s_t that the GRU just produced",
                _bahdanau_with(predict_from="s_prev"),
            ),
            Misconception(
                "returned_old_state",
                "you returned s_{t-1} as the state: return the new state s_t, which "
                "the next step needs as its query",
                _bahdanau_with(returned_state="s_prev"),
            ),
            Misconception(
                "returned_logits",
                "y_hat is the logits W_y s_t + b_y; the task asks for their softmax, "
                "a probability distribution over the vocabulary",
                _bahdanau_with(final="logits"),
            ),
        ],
        properties=[_step_alpha_not_weights, _step_padding_gets_weight, _step_alpha_sums_to_one],
        hint="e_t = tanh((s_prev @ W_q.T).unsqueeze(1) + H @ W_k.T) @ w; masked_fill(~src_mask, -inf); softmax over "
        "dim=-1; a_t = (alpha_t.unsqueeze(1) @ H).squeeze(1); s_t = gru_cell(torch.cat([y_prev_emb, a_t], -1), "
        "s_prev, ...); y_hat = softmax(s_t @ W_y.T + b_y).",
        forbidden=("attnbook.models:BahdanauSeq2Seq", "attnbook.attention:additive_scores"),
        shortcut_example=_bahdanau_shortcut,
    )
)

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
        (3, 6, 6, [3, 5, 1], [6, 4, 2], "the first sentence is not the longest"),
        (3, 3, 6, [3, 1, 2], [6, 4, 2], "sentence 1 has 2 padded target steps"),
        (4, 6, 7, [6, 3, 5, 2], [7, 5, 6, 3], "lengths all different"),
        (2, 4, 5, [4, 1], [5, 3], ""),
        (1, 5, 3, [5], [3], "no padding"),
        (3, 4, 5, [4, 0, 2], [5, 3, 4], "sentence 1 has no real target step at all (length 0)"),
    ]:
        cases.append(
            Case(
                f"B={B}, T={T}, N={N}, target lengths {', '.join(map(str, tgt_len))}",
                _agreement_case(g, B, T, N, tgt_len, src_len),
                dims={"B": B, "T": T, "N": N},
                note=note,
            )
        )
    # one step aligned to every position of a long sentence: argmax hits and mass differ a lot
    alpha, align, tgt_len = _agreement_case(g, 2, 3, 4, [3, 2], [4, 4])
    cases.append(
        Case(
            "B=2, T=3, N=4, flat attention",
            (torch.full_like(alpha, 0.25), align, tgt_len),
            dims={"B": 2, "T": 3, "N": 4},
            note="every weight is 0.25",
        )
    )
    return cases


def _agreement_nan_on_empty(case, outputs):
    tgt_len = case.args[2]
    try:
        value = float(outputs[0])
    except (TypeError, ValueError, RuntimeError):
        return None
    if value != value and (torch.as_tensor(tgt_len) == 0).any():
        return (
            "your result is NaN on a batch where one sentence has no real target step: that sentence adds "
            "nothing to the sum and nothing to the count, but a mean over its zero steps is 0/0"
        )
    return None


_agreement_nan_on_empty.key = "nan_on_empty_sentence"


def _agreement_padded(alpha, align, tgt_len):
    return float((alpha * align).sum(-1).mean())


def _agreement_sum(alpha, align, tgt_len):
    return float((alpha * align).sum(-1)[_real(tgt_len, alpha.shape[1])].sum())


def _agreement_argmax(alpha, align, tgt_len):
    real = _real(tgt_len, alpha.shape[1])
    hits = align.gather(-1, alpha.argmax(-1, keepdim=True)).squeeze(-1)
    return float(hits[real].double().mean())


def _agreement_per_sentence(alpha, align, tgt_len):
    mass = (alpha * align).sum(-1) * _real(tgt_len, alpha.shape[1])  # (B, T)
    return float((mass.sum(1) / torch.as_tensor(tgt_len).clamp(min=1)).mean())


def _agreement_per_link(alpha, align, tgt_len):
    real = _real(tgt_len, alpha.shape[1])
    return float((alpha * align).sum(-1)[real].sum() / align[real].sum())


def _agreement_max_link(alpha, align, tgt_len):
    real = _real(tgt_len, alpha.shape[1])
    return float((alpha * align).amax(-1)[real].sum() / real.sum())


def _agreement_one_more(alpha, align, tgt_len):
    real = torch.arange(alpha.shape[1])[None, :] <= torch.as_tensor(tgt_len)[:, None]
    return float((alpha * align).sum(-1)[real].sum() / real.sum())


def _agreement_first_length(alpha, align, tgt_len):
    n = int(torch.as_tensor(tgt_len)[0])
    return float((alpha * align).sum(-1)[:, :n].mean())


def _agreement_peak(alpha, align, tgt_len):
    return float(alpha.amax(-1)[_real(tgt_len, alpha.shape[1])].mean())


register(
    Task(
        id="07.alignment_agreement",
        title="agreement of attention weights with a true alignment",
        points=2,
        reference=_agreement_ref,
        cases=_agreement_cases,
        misconceptions=[
            Misconception(
                "one_length_for_all",
                "you used the first sentence's length for every sentence: each sentence b has its own number of "
                "real steps, tgt_len[b]",
                _agreement_first_length,
            ),
            Misconception(
                "max_over_links",
                "you took the largest weight among a step's aligned source words: when a target word translates "
                "two source words, the weight on both counts, so add them up",
                _agreement_max_link,
            ),
            Misconception(
                "one_step_too_many",
                "you counted one step too many per sentence: the real steps of sentence b are t = 0 … "
                "tgt_len[b] − 1, so the step t = tgt_len[b] is already padding",
                _agreement_one_more,
            ),
            Misconception(
                "averaged_over_padding",
                "you averaged over all B·T target steps, padding included: only "
                "the steps t < tgt_len[b] are real words; divide by their number",
                _agreement_padded,
            ),
            Misconception(
                "summed_not_averaged",
                "you returned the total weight on aligned words, a sum over all "
                "real steps: divide by the number of real steps to get a mean between 0 and 1",
                _agreement_sum,
            ),
            Misconception(
                "argmax_hit_rate",
                "you counted how often the most attended position is aligned (a hit "
                "rate); the task asks for the weight itself: Σ_i alpha[b, t, i] · align[b, t, i], "
                "averaged over the real steps",
                _agreement_argmax,
            ),
            Misconception(
                "mean_of_sentence_means",
                "you averaged each sentence first and then the sentences: every "
                "real target step counts once, so a long sentence weighs more than a short one. Sum over "
                "all real steps and divide by their total number",
                _agreement_per_sentence,
            ),
            Misconception(
                "per_link_average",
                "you divided by the number of alignment links: a target word aligned "
                "to two source words is still one step, and its weight on both counts once. Divide by the "
                "number of real steps",
                _agreement_per_link,
            ),
            Misconception(
                "peakedness_not_agreement",
                "you measured how peaked the attention is (its largest weight), "
                "not whether the weight is on the aligned words: multiply by align",
                _agreement_peak,
            ),
        ],
        properties=[_agreement_nan_on_empty],
        check_grad=False,
        atol=TOL,
        rtol=TOL,
        hint="mass (B, T) = (alpha * align).sum(-1); keep the steps t < tgt_len[b]; their mean is the answer.",
        forbidden=(
            "attnbook.analysis:aligned_mass",
            "attnbook.analysis:attention_agreement",
            "attnbook.models:alignment_agreement",
        ),
        shortcut_example=lambda alpha, align, tgt_len: float(_book_aligned_mass(alpha, align, tgt_len)),
    )
)

# --------------------------------------------------------------------------------------------- 07.greedy_decode

_NEVER = 10_000
_BIG = 50.0


def _toy_step(seed, e, d, V, eos_at, eos_once=False):
    """A fixed decoder step with attention ``(y_prev_emb, s_prev, H, src_mask) -> (y_hat, s_t, alpha_t)``.

    It is the Bahdanau step of 07.bahdanau_step with fixed weights, except that ``s[:, 0]`` counts the
    steps and sentence b's ``<eos>`` is the most likely word from step ``eos_at[b]`` on, or, with
    ``eos_once``, at that step only: afterwards the decoder would emit real words again, which a finished
    sentence must not show (``<pad>`` and ``<sos>`` are never likely). Words and weights depend on the fed
    word and the state.
    """
    p = _bahdanau_params(generator(seed), e, d - 1, d + 1, V)
    p["W_y"] = p["W_y"] * 2.0
    eos_at = torch.tensor(eos_at, dtype=torch.float64)

    def step(y_prev_emb, s_prev, H, src_mask):
        count = s_prev[:, :1] + 1  # (B, 1)
        Hz = H[..., 1:]  # (B, N, d - 1)
        alpha_t = softmax(_additive(s_prev[:, 1:], Hz, p), dim=-1, mask=src_mask)  # (B, N)
        z = _gru(torch.cat([y_prev_emb, _value(alpha_t, Hz)], dim=-1), s_prev[:, 1:], p)  # (B, d - 1)
        logits = z @ p["W_y"].T + p["b_y"]  # (B, V)
        column = torch.arange(V)
        now = (count == eos_at[:, None]) if eos_once else (count >= eos_at[:, None])
        logits = torch.where(column == EOS, torch.where(now, _BIG, -_BIG), logits)
        logits = torch.where((column == PAD) | (column == SOS), -_BIG, logits)
        return softmax(logits), torch.cat([count, z], dim=-1), alpha_t

    step.__qualname__ = step.__name__ = "step"
    return step


def _greedy_cases():
    cases = []
    for seed, B, e, d, N, V, eos_at, once, lengths, max_len, note in [
        (
            1,
            3,
            4,
            5,
            6,
            9,
            [2, 4, 3],
            True,
            [6, 3, 5],
            8,
            "<eos> at steps 2, 4 and 3: 4 steps; after its <eos> the decoder would emit real words again",
        ),
        (
            2,
            2,
            3,
            4,
            5,
            7,
            [3, _NEVER],
            False,
            [5, 2],
            6,
            "sentence 1 never produces <eos>: max_len stops the loop",
        ),
        (
            3,
            4,
            5,
            3,
            7,
            8,
            [1, 2, 5, 3],
            True,
            [7, 4, 1, 6],
            9,
            "<eos> at the first step for sentence 0, which would then go on with real words",
        ),
        (4, 1, 2, 6, 4, 10, [5], False, [4], 5, "<eos> exactly at step max_len = 5"),
        (5, 3, 3, 4, 5, 6, [2, 2, 4], False, [5, 4, 2], 7, "two sentences end together, the third later"),
    ]:
        g = generator(100 + seed)
        H = randn(g, B, N, d) * _mask(lengths, N)[..., None]
        s_0 = randn(g, B, d)
        s_0[:, 0] = 0.0
        E = randn(g, V, e)
        cases.append(
            Case(
                f"B={B}, N={N}, n_vocab={V}, max_len={max_len}",
                (_toy_step(seed, e, d, V, eos_at, once), s_0, H, _mask(lengths, N), E, max_len),
                dims={"B": B, "N": N, "n_vocab": V, "e": e, "d": d},
                note=note,
            )
        )
    return cases


def _greedy_with(
    stop="all",
    pad=True,
    zero_alpha=True,
    feed="prediction",
    carry=True,
    stack=1,
    record_last=True,
    remember=True,
    zero_eos_step=False,
    first=SOS,
):
    """A greedy decoder over a batch; the defaults give the reference."""

    def fn(step, s_0, H, src_mask, E, max_len):
        B = s_0.shape[0]
        y = torch.full((B,), first, dtype=torch.long)
        s = s_0
        done = torch.zeros(B, dtype=torch.bool)
        ids, alphas = [], []
        for _ in range(max_len):
            y_hat, s_new, alpha_t = step(
                E[y if feed == "prediction" else torch.full_like(y, SOS)], s, H, src_mask
            )
            s = s_new if carry else s_0
            y = y_hat.argmax(-1)
            if pad:
                y = y.masked_fill(done, PAD)
            if zero_alpha:
                alpha_t = alpha_t.masked_fill(done[:, None], 0.0)
            if zero_eos_step:
                alpha_t = alpha_t.masked_fill((y == EOS)[:, None], 0.0)
            finished = done | (y == EOS) if remember else (y == EOS)
            last = (
                bool(finished.all())
                if stop == "all"
                else bool((y == EOS).any())
                if stop == "any"
                else bool((y_hat.argmax(-1) == EOS).all())
                if stop == "together"
                else False
            )
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


def _greedy_sos_recorded(step, s_0, H, src_mask, E, max_len):
    """Right, except that ids starts with the <sos> fed at the first step (one column too many)."""
    ids, alphas = _greedy_ref(step, s_0, H, src_mask, E, max_len)
    return torch.cat([torch.full_like(ids[:, :1], SOS), ids], dim=1), alphas


def _greedy_inputs_recorded(step, s_0, H, src_mask, E, max_len):
    """Records the word fed into each step instead of the one it produced: <sos> first, the last word lost."""
    ids, alphas = _greedy_ref(step, s_0, H, src_mask, E, max_len)
    return torch.cat([torch.full_like(ids[:, :1], SOS), ids[:, :-1]], dim=1), alphas


def _greedy_shortcut(step, s_0, H, src_mask, E, max_len):
    """An answer that runs the book's own batched greedy loop (``_Base._greedy``) around the given step,
    through a stand-in for a model (for tests/test_free_points.py)."""
    from attnbook.models import _Base

    class StandIn:
        def encoder(self, src, src_len):
            return H, s_0

        def _prepare(self, H):
            return None

        def tgt_embedding(self, y):
            return E[y]

        def _decode(self, Y, state, H, mask, context, s_tilde, prepared, start=0):
            y_hat, s, alpha = step(Y[:, 0], state[0], H, mask)
            return y_hat[:, None], alpha[:, None], (s[None], None)

    src = torch.zeros(src_mask.shape, dtype=torch.long)
    seqs, alphas = _Base._greedy(StandIn(), src, src_mask.sum(-1), max_len)
    T = alphas.shape[1]
    rows = [(seq + [EOS] + [PAD] * T)[:T] for seq in seqs]
    return torch.tensor(rows, dtype=torch.long), alphas


def _greedy_resumes_after_eos(case, outputs):
    """A finished sentence must stay finished: nothing but <pad> after its first <eos>."""
    ids = outputs[0]
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.dtype != torch.long:
        return None
    for row in ids.tolist():
        if EOS in row and any(i != PAD for i in row[row.index(EOS) + 1 :]):
            return (
                "a sentence that has produced <eos> must stay finished, even when the decoder would emit "
                "real words after it: one of your sentences came back to life after its <eos> (your record "
                "of finished sentences forgets them)"
            )
    return None


_greedy_resumes_after_eos.key = "finished_sentence_resumed"


register(
    Task(
        id="07.greedy_decode",
        title="greedy decoding of a batch, with every step's weights",
        points=3,
        reference=_greedy_ref,
        cases=_greedy_cases,
        output_names=("ids", "alphas"),
        output_axes=(("B", "T_out"), ("B", "T_out", "N")),
        misconceptions=[
            Misconception(
                "sos_recorded",
                "your ids start with the <sos> you fed at the first step: ids holds the words the decoder "
                "produced, one column per step (T_out columns, as many as alphas has rows per sentence), and "
                "<sos> is only its first input",
                _greedy_sos_recorded,
            ),
            Misconception(
                "inputs_recorded",
                "your ids record the word fed into each step, not the word the step produced: they start with "
                "the <sos> you fed at the first step, and the last word the decoder produced is missing. ids "
                "holds the decoder's outputs; <sos> is only its first input",
                _greedy_inputs_recorded,
            ),
            Misconception(
                "started_from_pad",
                "your first step reads the embedding of <pad>: decoding starts from <sos>, the word that means "
                "'begin the sentence'",
                _greedy_with(first=PAD),
            ),
            Misconception(
                "eos_step_weights_zeroed",
                "you zeroed the weights of the step at which a sentence produces <eos>: that step is recorded as "
                "usual (the <eos> row of a heat map); only the steps after it get zero weights",
                _greedy_with(zero_eos_step=True),
            ),
            Misconception(
                "no_early_stop",
                "you always ran max_len steps: stop right after the step at which the last unfinished "
                "sentence produces its <eos> (sentences end at different steps, and a finished one need not "
                "say <eos> again), so that ids (B, T_out) has as many columns as steps were needed",
                _greedy_with(stop="never"),
            ),
            Misconception(
                "stops_at_first_eos",
                "you stopped as soon as one sentence produced <eos>: the others may "
                "not be finished; stop when all of them are",
                _greedy_with(stop="any"),
            ),
            Misconception(
                "last_step_dropped",
                "you stopped before recording the step at which the last sentence "
                "produced <eos>: that step's id (<eos>) and weights belong to the output",
                _greedy_with(record_last=False),
            ),
            Misconception(
                "no_padding_after_eos",
                "after a sentence has produced <eos>, its later ids must be <pad> "
                "(0) and its later weights 0: keep track of which sentences are done",
                _greedy_with(pad=False, zero_alpha=False),
            ),
            Misconception(
                "alphas_not_zeroed",
                "your ids are padded after <eos>, but the weights of those steps are "
                "not: a finished sentence's later rows of alphas must be all 0",
                _greedy_with(zero_alpha=False),
            ),
            Misconception(
                "wrong_stack_axis",
                "you stacked the steps along the first axis, (T_out, B) and "
                "(T_out, B, N): stack along dim=1 so that ids is (B, T_out) and alphas (B, T_out, N)",
                _greedy_with(stack=0),
            ),
            Misconception(
                "fed_sos_every_step",
                "you fed <sos> at every step: step t must be fed the embedding of "
                "the word predicted at step t - 1, E[y]",
                _greedy_with(feed="sos"),
            ),
            Misconception(
                "static_query",
                "you passed s_0 to every step, so the state, and with it the attention "
                "query, never changed: pass the state returned by the previous step",
                _greedy_with(carry=False),
            ),
            Misconception(
                "finished_sentence_resumed",
                "a sentence that has produced <eos> must stay finished, even when the decoder would emit real "
                "words after it: your record of finished sentences only looks at the current step's word, so "
                "a sentence came back to life after its <eos>",
                _greedy_with(remember=False),
                hint="done = done | (y == EOS): once True, always True.",
            ),
        ],
        properties=[_greedy_resumes_after_eos],
        check_grad=False,
        timeout_s=5.0,
        forbidden=("attnbook.models:_Base._greedy",),
        shortcut_example=_greedy_shortcut,
        hint="y = <sos> for every sentence, s = s_0; up to max_len times: y_hat, s, alpha_t = step(E[y], s, H, "
        "src_mask); y = argmax; <pad> and zero weights for the sentences already done; record; stop when "
        "all are done. Stack with dim=1.",
    )
)
