"""Set 02, Part I: the RNN encoder-decoder and where it breaks.

Tasks: the GRU encoder's states ``H`` and context vector over a padded batch; how many numbers the context
vector and ``H`` hold; greedy decoding with a stop at ``<eos>`` and at ``max_len``; accuracy by source
length; the gradient norm at every source position. Every case builds its own fixed weights (nothing is
trained), so each case runs in milliseconds.
"""

from __future__ import annotations

import math
import random

import torch

from ..cases import DTYPE, generator, randn
from ..engine import Case, Misconception, Task
from ..registry import register

# --------------------------------------------------------------------------------------------- 02.encoder_states


def _gru_step(x, h, W_ih, W_hh, b_ih, b_hh, gates="rzn", reset="torch", update="torch"):
    """One GRU step with the equations of torch.nn.GRU. x: (..., e), h: (..., d) -> (..., d).

    The keyword arguments build the wrong variants: gate order ``"zrn"``, the reset gate applied before
    ``W_hn`` (``reset="cho"``), the update gate the wrong way round (``update="swapped"``).
    """
    gi = x @ W_ih.T + b_ih  # (..., 3d)
    gh = h @ W_hh.T + b_hh  # (..., 3d)
    parts_i, parts_h = dict(zip(gates, gi.chunk(3, -1))), dict(zip(gates, gh.chunk(3, -1)))
    r = torch.sigmoid(parts_i["r"] + parts_h["r"])
    z = torch.sigmoid(parts_i["z"] + parts_h["z"])
    if reset == "torch":
        n = torch.tanh(parts_i["n"] + r * parts_h["n"])
    else:  # Cho et al. (2014): W_hn (r ⊙ h)
        W_hn, b_hn = dict(zip(gates, W_hh.chunk(3, 0)))["n"], dict(zip(gates, b_hh.chunk(3, 0)))["n"]
        n = torch.tanh(parts_i["n"] + (r * h) @ W_hn.T + b_hn)
    return (1 - z) * n + z * h if update == "torch" else z * n + (1 - z) * h


def _run_gru(X, W_ih, W_hh, b_ih, b_hh, **variant):
    """Read X (B, N, e) left to right from h_0 = 0; every state, padding included: (B, N, d)."""
    h = X.new_zeros(X.shape[0], W_hh.shape[1])
    states = []
    for i in range(X.shape[1]):
        h = _gru_step(X[:, i], h, W_ih, W_hh, b_ih, b_hh, **variant)
        states.append(h)
    return torch.stack(states, dim=1)


def _valid(lengths, N):
    """(B,) lengths -> (B, N) bool, True at real tokens."""
    return torch.arange(N)[None, :] < lengths[:, None]


def _finish(states, lengths):
    """Zero the states at padding and pick the context at each true last token."""
    H = states * _valid(lengths, states.shape[1])[..., None]
    return H, H[torch.arange(H.shape[0]), lengths - 1]


def _encoder_ref(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    return _finish(_run_gru(embedded, W_ih, W_hh, b_ih, b_hh), lengths)  # (B, N, d), (B, d)


def _gru_weights(g, e, d, scale=0.6):
    return (randn(g, 3 * d, e, scale=scale), randn(g, 3 * d, d, scale=scale),
            randn(g, 3 * d, scale=0.3), randn(g, 3 * d, scale=0.3))


def _padded(g, lengths, N, e, padding="zeros"):
    """Right-padded embeddings (B, N, e): zeros at padding (as nn.Embedding's padding_idx gives), or
    random garbage, which must not change the answer."""
    X = randn(g, len(lengths), N, e)
    if padding == "zeros":
        X = X * _valid(torch.tensor(lengths), N)[..., None]
    return X


def _encoder_cases():
    g = generator(20)
    cases = []
    for B, N, e, d, lengths, padding, scale, note in [
        (3, 5, 4, 6, [5, 2, 1], "zeros", 0.6, "zero embeddings at padding; one sentence of length 1"),
        (2, 7, 3, 5, [4, 7], "garbage", 0.6, "random numbers at padding: they must change nothing"),
        (4, 6, 2, 3, [6, 1, 3, 5], "garbage", 2.0, "large weights, saturated gates"),
        (1, 3, 5, 2, [3], "zeros", 0.6, "one sentence, no padding"),
    ]:
        lengths_t = torch.tensor(lengths)
        cases.append(Case(
            f"B={B}, N={N}, e={e}, d={d}, lengths {', '.join(map(str, lengths))}",
            (_padded(g, lengths, N, e, padding), lengths_t, *_gru_weights(g, e, d, scale)),
            dims={"B": B, "N": N, "e": e, "d": d}, note=note))
    return cases


def _encoder_with(context=None, mask=True, reshape=None, **variant):
    """A wrong encoder: ``context`` picks the context from (H, raw states, lengths); ``mask=False`` keeps
    the states at padding; ``reshape`` mixes batch and time; ``variant`` changes the GRU equations."""
    def fn(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
        B, N, e = embedded.shape
        if reshape == "batch_as_time":  # nn.GRU without batch_first: axis 0 is read as time
            raw = _run_gru(embedded.transpose(0, 1), W_ih, W_hh, b_ih, b_hh, **variant).transpose(0, 1)
        elif reshape == "in":  # (B, N, e).reshape(N, B, e), states put back with a proper transpose
            raw = _run_gru(embedded.reshape(N, B, e).transpose(0, 1), W_ih, W_hh, b_ih, b_hh, **variant)
        elif reshape == "in_and_out":  # reshape in, and reshape the (N, B, d) states back
            states = _run_gru(embedded.reshape(N, B, e).transpose(0, 1), W_ih, W_hh, b_ih, b_hh, **variant)
            raw = states.transpose(0, 1).reshape(B, N, -1)
        else:
            raw = _run_gru(embedded, W_ih, W_hh, b_ih, b_hh, **variant)
        H, c = _finish(raw, lengths)
        if not mask:
            H = raw
        if context is not None:
            c = context(H, raw, lengths)
        return H, c
    return fn


CONTEXT_FROM_PADDING = ("your context vector is the state at position N, the end of the padded batch: a "
                        "sentence shorter than N ends earlier. Take each sentence's state at its true last "
                        "token, H[b, lengths[b] - 1]")

ENCODER_MISCONCEPTIONS = [
    Misconception("context_from_padding", CONTEXT_FROM_PADDING + " (you took the GRU's final state, "
                  "which has gone on reading the padding)", _encoder_with(context=lambda H, raw, L: raw[:, -1])),
    Misconception("context_from_padding", CONTEXT_FROM_PADDING + " (you took H[:, -1], which is padding, "
                  "zeros, for every shorter sentence)", _encoder_with(context=lambda H, raw, L: H[:, -1])),
    Misconception("first_state", "your context vector is the first state h_1: the encoder has then read "
                  "one word only. The context vector is the state after the whole sentence, at its true "
                  "last token", _encoder_with(context=lambda H, raw, L: H[:, 0])),
    Misconception("padding_not_zeroed", "your H is not zero at padded positions (index ≥ lengths[b]): "
                  "those states come from reading padding, not words; multiply them by a mask of the "
                  "valid positions", _encoder_with(mask=False)),
    Misconception("batch_as_time", "your GRU stepped from sentence to sentence (axis 0) instead of from "
                  "word to word: torch.nn.GRU reads its input as (N, B, e) unless batch_first=True. The "
                  "state must carry from position i to position i + 1 of the same sentence",
                  _encoder_with(reshape="batch_as_time")),
    Misconception("reshape_not_transpose", "you turned (B, N, e) into (N, B, e) with reshape/view: that "
                  "regroups the numbers in memory order and mixes words of different sentences. Swap the "
                  "axes with embedded.transpose(0, 1), or loop over embedded[:, i]",
                  _encoder_with(reshape="in")),
    Misconception("reshape_not_transpose", "you swapped the batch and time axes with reshape/view (on the "
                  "way in and on the way out): that regroups the numbers in memory order and mixes words "
                  "of different sentences. Use transpose(0, 1), or loop over embedded[:, i]",
                  _encoder_with(reshape="in_and_out")),
    Misconception("last_state_only", "you returned only the last state: H must hold every state h_1 … h_N, "
                  "shape (B, N, d). The plain decoder only needs the context vector, but attention will "
                  "need all of them", lambda *args: (lambda H, c: (c, c))(*_encoder_ref(*args))),
    Misconception("last_state_only", "every row of your H is the context vector: H must hold the state "
                  "after each word, h_1 … h_N, which differ from one another",
                  lambda *args: (lambda H, c: (c[:, None].expand_as(H), c))(*_encoder_ref(*args))),
    Misconception("swapped_outputs", "you returned (context, H): return H (B, N, d) first and the "
                  "context vector (B, d) second", lambda *args: tuple(reversed(_encoder_ref(*args)))),
    Misconception("gate_order", "your gates are in the wrong order: torch.nn.GRU stacks the rows of W_ih, "
                  "W_hh, b_ih and b_hh as reset r, update z, new n (in that order; use .chunk(3))",
                  _encoder_with(gates="zrn")),
    Misconception("reset_gate_placement", "you applied the reset gate to h before multiplying by W_hn "
                  "(the form of Cho et al. 2014); torch.nn.GRU applies it after: "
                  "n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))", _encoder_with(reset="cho")),
    Misconception("update_gate_swapped", "your update gate works the wrong way round: torch.nn.GRU keeps "
                  "the old state with weight z, h' = (1 − z) ⊙ n + z ⊙ h", _encoder_with(update="swapped")),
]


def _padding_states_not_zero(case, outputs):
    H = outputs[0]
    embedded, lengths = case.args[:2]
    B, N = embedded.shape[:2]
    if not isinstance(H, torch.Tensor) or H.dim() != 3 or tuple(H.shape[:2]) != (B, N):
        return None
    pad = ~_valid(lengths, N)
    if pad.any() and (H.detach()[pad].abs() > 1e-12).any():
        return "your H is not zero at padded positions (index ≥ lengths[b]): zero them with a mask"
    return None


_padding_states_not_zero.key = "padding_not_zeroed"


def _context_not_own_last_state(case, outputs):
    H, c = outputs
    lengths = case.args[1]
    if not (isinstance(H, torch.Tensor) and isinstance(c, torch.Tensor)) or H.dim() != 3:
        return None
    if H.shape[0] != lengths.shape[0] or H.shape[1] < int(lengths.max()) or c.shape != (H.shape[0], H.shape[2]):
        return None
    own = H.detach()[torch.arange(H.shape[0]), lengths - 1].to(c.dtype)
    if not torch.allclose(own, c.detach(), atol=1e-6):
        return ("your context vector is not your own H at each sentence's true last token, "
                "H[b, lengths[b] - 1]")
    return None


_context_not_own_last_state.key = "context_not_last_state"

register(Task(
    id="02.encoder_states",
    title="the GRU encoder: every state H and the context vector",
    points=3,
    reference=_encoder_ref,
    cases=_encoder_cases,
    output_names=("H", "context"),
    misconceptions=ENCODER_MISCONCEPTIONS,
    properties=[_padding_states_not_zero, _context_not_own_last_state],
    # a GRUCell loaded with the weights under no_grad is an accepted answer: only values are graded
    check_grad=False,
    hint="Loop i = 0 … N-1 over embedded[:, i] (B, e) from h = zeros (B, d); r, z, n from W_ih.chunk(3) "
         "and W_hh.chunk(3); h = (1 − z) ⊙ n + z ⊙ h; stack to (B, N, d), zero the padding, and pick "
         "H[b, lengths[b] - 1].",
))

# --------------------------------------------------------------------------------------------- 02.bottleneck_sizes


def _sizes_ref(n_words, d):
    return d, (n_words + 1) * d


register(Task(
    id="02.bottleneck_sizes",
    title="how many numbers reach the decoder",
    points=1,
    reference=_sizes_ref,
    cases=lambda: [Case(f"{n} words, d={d}", (n, d), note=note) for n, d, note in [
        (3, 128, "'i am a student' with the book's hidden size"),
        (40, 128, "a long sentence"),
        (1, 8, "one word"),
        (17, 64, "")]],
    output_names=("c_size", "H_size"),
    misconceptions=[
        Misconception("context_grows", "the context vector does not grow with the sentence: it is one "
                      "state of the encoder, d numbers, for 3 words as for 40. That is the bottleneck",
                      lambda n, d: ((n + 1) * d, (n + 1) * d)),
        Misconception("context_grows", "the context vector does not grow with the sentence: it is one "
                      "state of the encoder, d numbers, for 3 words as for 40. That is the bottleneck",
                      lambda n, d: (n * d, n * d)),
        Misconception("forgot_eos", "the encoder also reads the <eos> that ends the source, so H has "
                      "n_words + 1 rows of d numbers", lambda n, d: (d, n * d)),
        Misconception("counted_vectors", "you counted vectors, not numbers: each state holds d numbers",
                      lambda n, d: (1, n + 1)),
        Misconception("swapped_outputs", "you returned (H_size, c_size): the context vector's size comes "
                      "first", lambda n, d: ((n + 1) * d, d)),
    ],
    check_grad=False,
    hint="c is one state (d numbers); H is one state per source position, and the source has n_words + 1 "
         "positions (the words and <eos>).",
))

# --------------------------------------------------------------------------------------------- 02.greedy_decode

_NEVER = None
_BIG = 30.0


def _toy_decoder(seed, V, d, sos_id, eos_id, stop_at):
    """A deterministic decoder step ``(y_prev, s_prev (d,)) -> (logits (V,), s_t (d,))``.

    ``s[0]`` counts the steps; ``s[1:]`` is a small tanh RNN fed the previous token. ``<sos>`` is never
    likely; ``<eos>`` becomes the most likely word from step ``stop_at`` on (never if ``stop_at`` is None).
    The other logits depend on the state and on the previous token, so that forgetting to feed either
    changes the words.
    """
    g = generator(seed)
    A, E, W, U = randn(g, d - 1, d - 1, scale=0.8), randn(g, V, d - 1), randn(g, V, d - 1, scale=2.0), randn(g, V, V)

    def step_fn(y_prev, s_prev):
        y = int(y_prev)
        count = s_prev[0] + 1
        z = torch.tanh(A @ s_prev[1:] + E[y])
        logits = W @ z + U[y]  # (V,)
        logits[sos_id] = -_BIG
        logits[eos_id] = _BIG if stop_at is not _NEVER and float(count) >= stop_at else -_BIG
        return logits, torch.cat([count.reshape(1), z])  # (V,), (d,)

    step_fn.__qualname__ = step_fn.__name__ = "step_fn"
    return step_fn


def _s0(seed, d):
    s = randn(generator(seed + 1000), d)
    s[0] = 0.0
    return s


def _greedy_cases():
    cases = []
    for seed, V, d, sos, eos, stop_at, max_len, name, note in [
        (1, 7, 4, 1, 2, 4, 10, "<eos> at step 4 of at most 10", "the answer has 3 words"),
        (2, 6, 5, 0, 5, 9, 12, "<eos> late, at step 9 of at most 12", "ids: <sos> = 0, <eos> = 5"),
        (15, 8, 3, 1, 2, _NEVER, 6, "<eos> never comes, max_len = 6", "max_len must stop the loop"),
        (4, 5, 6, 3, 0, 1, 5, "<eos> at the first step", "the answer is the empty list []"),
        (5, 9, 4, 2, 7, 6, 5, "<eos> would come at step 6, max_len = 5", "max_len stops first"),
        (6, 7, 5, 1, 2, 5, 5, "<eos> exactly at step max_len = 5", "the answer has 4 words"),
    ]:
        cases.append(Case(name, (_toy_decoder(seed, V, d, sos, eos, stop_at), _s0(seed, d), sos, eos, max_len),
                          dims={"V": V, "d": d}, note=note))
    return cases


def _greedy_ref(step_fn, s_0, sos_id, eos_id, max_len):
    out, y, s = [], sos_id, s_0
    for _ in range(max_len):
        logits, s = step_fn(y, s)  # (V,), (d,)
        y = int(torch.argmax(logits))
        if y == eos_id:
            break
        out.append(y)
    return out


def _greedy_with(steps=lambda m: m, pick=torch.argmax, feed="prediction", carry=True, stop="before",
                 prefix=False, fixed_ids=None):
    """A wrong greedy decoder; the defaults give the reference. ``fixed_ids`` replaces the arguments
    ``(sos_id, eos_id)`` by fixed numbers (the book's vocabulary has <sos> = 1, <eos> = 2)."""
    def fn(step_fn, s_0, sos_id, eos_id, max_len):
        if fixed_ids is not None:
            sos_id, eos_id = fixed_ids(sos_id, eos_id)
        out, y, s = [], sos_id, s_0
        for _ in range(steps(max_len)):
            logits, s_new = step_fn(y if feed == "prediction" else sos_id, s)
            s = s_new if carry else s_0
            y = int(pick(logits))
            if y == eos_id and stop == "before":
                break
            out.append(y)
            if y == eos_id and stop == "after":
                break
        return [sos_id] + out if prefix else out
    return fn


def _not_greedy(case, outputs):
    """Replay the learner's own words: each must be the argmax given the words before it."""
    step_fn, s_0, sos_id, eos_id, max_len = case.args
    got = outputs[0]
    try:
        words = [int(w) for w in got]
    except (TypeError, ValueError):
        return None
    if eos_id in words:
        return (f"your list contains <eos> (id {eos_id} in this case): stop before appending it, and "
                "compare with the argument eos_id rather than a fixed number")
    y, s = sos_id, s_0
    for k, w in enumerate(words):
        logits, s = step_fn(y, s)
        best = int(torch.argmax(logits))
        if w != best:
            return (f"word {k + 1} of your answer ({w}) is not the most likely word at that step ({best}): greedy "
                    "decoding takes the argmax of the logits, it does not sample")
        y = w
    return None


def _not_greedy_guarded(case, outputs):
    try:
        return _not_greedy(case, outputs)
    except Exception:  # ids outside the vocabulary: leave the message to the value check
        return None


_not_greedy_guarded.key = "not_argmax"


register(Task(
    id="02.greedy_decode",
    title="greedy decoding with a stop",
    points=3,
    reference=_greedy_ref,
    cases=_greedy_cases,
    misconceptions=[
        Misconception("hardcoded_ids", "you compared with a fixed id for <eos> (2, as in the book's "
                      "vocabulary): the ids of <sos> and <eos> are the arguments sos_id and eos_id, and "
                      "they change from case to case", _greedy_with(fixed_ids=lambda sos, eos: (sos, 2))),
        Misconception("hardcoded_ids", "you fed a fixed id for <sos> (1, as in the book's vocabulary): "
                      "the ids of <sos> and <eos> are the arguments sos_id and eos_id, and they change from "
                      "case to case", _greedy_with(fixed_ids=lambda sos, eos: (1, eos))),
        Misconception("ignores_eos", "your decoding does not stop at <eos>: it runs all max_len steps. "
                      "Stop as soon as the argmax is eos_id", _greedy_with(stop="never")),
        Misconception("includes_eos", "your list ends with <eos>: this task returns the words without it "
                      "(stop before appending eos_id)", _greedy_with(stop="after")),
        Misconception("includes_sos", "your list starts with <sos>: <sos> is only the first input of the "
                      "decoder, not a word it predicted", _greedy_with(prefix=True)),
        Misconception("no_feedback", "you fed <sos> at every step: step t must be fed the word predicted at "
                      "step t - 1 (that is what makes decoding autoregressive)", _greedy_with(feed="sos")),
        Misconception("state_not_carried", "you passed s_0 to every step: pass the state returned by the "
                      "previous step, s_{t-1}, so that the decoder remembers what it has done",
                      _greedy_with(carry=False)),
        Misconception("max_len_off_by_one", "your loop runs max_len + 1 steps: at most max_len words come "
                      "out", _greedy_with(steps=lambda m: m + 1)),
        Misconception("max_len_off_by_one", "your loop runs max_len - 1 steps: max_len steps are allowed",
                      _greedy_with(steps=lambda m: m - 1)),
        Misconception("argmin", "you picked the least likely word (argmin): greedy decoding takes the argmax",
                      _greedy_with(pick=torch.argmin)),
    ],
    properties=[_not_greedy_guarded],
    check_grad=False,
    hint="y = sos_id, s = s_0; repeat at most max_len times: logits, s = step_fn(y, s); y = argmax; stop "
         "if y == eos_id, else append it.",
))

# --------------------------------------------------------------------------------------------- 02.accuracy_by_length


def _sentence_scores(p, t):
    """(correct positions, positions) of one prediction against its target: the T words and the end."""
    correct = sum(int(j < len(p) and p[j] == t[j]) for j in range(len(t))) + int(len(p) == len(t))
    return correct, len(t) + 1


def _accuracy_with(inside=lambda lo, n, hi: lo <= n <= hi, scores=_sentence_scores, pooled=True,
                   exact=lambda p, t: list(p) == list(t), empty=None, length="source", swap=False):
    """Accuracy by length; the defaults give the reference, the keywords the wrong variants."""
    def fn(predictions, targets, src_lengths, buckets):
        out = []
        for lo, hi in buckets:
            rows = [(p, t) for p, t, n in zip(predictions, targets, src_lengths)
                    if inside(lo, n if length == "source" else len(t), hi)]
            if not rows:
                out.append(empty)
                continue
            parts = [scores(p, t) for p, t in rows]
            if pooled:
                token = sum(c for c, _ in parts) / sum(m for _, m in parts)
            else:
                token = sum(c / m for c, m in parts) / len(parts)
            sentence = sum(int(exact(p, t)) for p, t in rows) / len(rows)
            out.append((sentence, token) if swap else (token, sentence))
        return out
    return fn


_accuracy_ref = _accuracy_with()
_accuracy_ref.__name__ = "accuracy_by_length"


def _accuracy_cases():
    # (source length, target, prediction)
    hand = [
        (3, [5, 6, 7], [5, 6, 7]),  # exact: 4 of 4 positions
        (1, [8], [8, 9]),  # one word too many: the end position is wrong
        (4, [5, 6, 7, 8], [5, 6]),  # stops too early: 2 of 5
        (6, [9, 5], [9, 6]),  # one wrong word: 2 of 3
        (7, [5, 6, 7, 8, 9, 10], [5, 7, 8, 9, 10, 11]),  # a word dropped, a word added: 2 of 7
        (9, [4], [4]),  # exact
        (15, [4, 5], []),  # in no bucket
    ]
    rng = random.Random(2)
    generated = []
    for _ in range(40):
        n = rng.randint(1, 29)
        t = [rng.randint(4, 30) for _ in range(max(1, n + rng.randint(-2, 2)))]
        p = list(t)
        r = rng.random()
        if r < 0.3:
            p = p[:rng.randint(0, len(p) - 1)]  # stops early
        elif r < 0.45:
            p = p + [rng.randint(4, 30) for _ in range(rng.randint(1, 3))]  # goes on too long
        elif r < 0.75:
            for j in range(len(p)):
                if rng.random() < 0.3:
                    p[j] = rng.randint(4, 30)
        generated.append((n, t, p))

    def case(name, rows, buckets, note=""):
        return Case(name, ([p for _, _, p in rows], [t for _, t, _ in rows], [n for n, _, _ in rows], buckets),
                    note=note)

    return [
        case("7 sentences by hand, buckets 1–3, 4–6, 7–9, 10–12", hand, [(1, 3), (4, 6), (7, 9), (10, 12)],
             "lengths on the bucket edges; bucket 10–12 is empty; one sentence of length 15 is in no bucket"),
        case("40 random sentences, the book's buckets", generated, [(3, 8), (9, 15), (16, 22), (23, 29), (30, 60)],
             "no sentence has 30 words or more: the last bucket is empty"),
        case("every prediction exact", [(n, t, list(t)) for n, t, _ in generated[:10]], [(1, 100)]),
        case("every prediction empty", [(n, t, []) for n, t, _ in hand[:4]], [(1, 2), (3, 5), (6, 6)]),
    ]


def _zip_scores(p, t):
    return sum(int(a == b) for a, b in zip(p, t)), min(len(p), len(t)) or 1


def _words_only(p, t):
    return sum(int(j < len(p) and p[j] == t[j]) for j in range(len(t))), len(t)


register(Task(
    id="02.accuracy_by_length",
    title="token and sentence accuracy by source length",
    points=3,
    reference=_accuracy_ref,
    cases=_accuracy_cases,
    misconceptions=[
        Misconception("per_sentence_mean", "you averaged the sentences' own token accuracies; this task "
                      "pools the positions of the bucket: (correct positions of all its sentences) / (all "
                      "their positions), so a long sentence weighs more than a short one",
                      _accuracy_with(pooled=False)),
        Misconception("bucket_bounds", "a sentence whose length equals a bucket's upper bound hi is missing: "
                      "both bounds are included, lo ≤ n ≤ hi", _accuracy_with(inside=lambda lo, n, hi: lo <= n < hi)),
        Misconception("bucket_bounds", "a sentence whose length equals a bucket's lower bound lo is missing: "
                      "both bounds are included, lo ≤ n ≤ hi", _accuracy_with(inside=lambda lo, n, hi: lo < n <= hi)),
        Misconception("bucketed_by_target", "you put sentences into buckets by the length of their target; "
                      "the buckets are about the source length, src_lengths", _accuracy_with(length="target")),
        Misconception("shorter_length", "you compared only up to the shorter of the two lengths (zip stops "
                      "there): a missing or an extra word must count as wrong. Compare every position of the "
                      "target, and the end as one more", _accuracy_with(scores=_zip_scores)),
        Misconception("shorter_length", "a translation that is only the beginning of the target (or goes on "
                      "after it) is not an exact match: compare the whole lists",
                      _accuracy_with(exact=lambda p, t: all(a == b for a, b in zip(p, t)))),
        Misconception("no_end_position", "you compared the words only: the end of the sentence counts as one "
                      "more position (T + 1 per sentence), so a translation that stops too early or too late "
                      "loses it", _accuracy_with(scores=_words_only)),
        Misconception("empty_bucket", "a bucket with no sentence has no accuracy: put None in its place, "
                      "not 0", _accuracy_with(empty=(0.0, 0.0))),
        Misconception("empty_bucket", "a bucket with no sentence is marked with None in this task (not "
                      "nan, and not (nan, nan))", _accuracy_with(empty=(math.nan, math.nan))),
        Misconception("empty_bucket", "a bucket with no sentence is marked with None in this task (not "
                      "nan, and not (nan, nan))", _accuracy_with(empty=math.nan)),
        Misconception("empty_bucket", "a bucket with no sentence must still have its place in the list, "
                      "holding None: one entry per bucket, in the order of buckets",
                      lambda *args: [x for x in _accuracy_ref(*args) if x is not None]),
        Misconception("swapped_outputs", "each pair must be (token_accuracy, sentence_accuracy), in that "
                      "order", _accuracy_with(swap=True)),
    ],
    check_grad=False,
    hint="Per bucket: sentences with lo ≤ src_length ≤ hi; positions = Σ (len(target) + 1); a word "
         "position j is right when prediction[j] == target[j], the end when len(prediction) == len(target).",
))

# --------------------------------------------------------------------------------------------- 02.gradient_norms_by_position


def _gradient_norms_ref(loss_fn, embedded):
    x = embedded.detach().clone().requires_grad_(True)  # (N, e), a leaf of our own
    (grad,) = torch.autograd.grad(loss_fn(x), x)  # (N, e)
    return grad.norm(dim=-1)  # (N,)


def _loss_functions():
    g = generator(24)

    def rnn_loss(N, e, d, scale):
        W, U, v = randn(g, d, e), randn(g, d, d, scale=scale / math.sqrt(d)), randn(g, d)

        def loss_fn(x):  # a tanh RNN reads x_1 … x_N; the loss reads only its last state
            h = x.new_zeros(d)
            for i in range(x.shape[0]):
                h = torch.tanh(W @ x[i] + U @ h)
            return v @ h
        return loss_fn

    def linear_loss(N, e):
        C = randn(g, N, e) * torch.arange(1, N + 1, dtype=DTYPE)[:, None]

        def loss_fn(x):  # Σ_i c_i · x_i: the gradient at position i is c_i
            return (C * x).sum()
        return loss_fn

    def gru_context_loss(N, e, d):
        W_ih, W_hh, b_ih, b_hh = _gru_weights(g, e, d)
        w = randn(g, d)

        def loss_fn(x):  # the GRU encoder of task 1; the loss reads the context vector
            h = _run_gru(x[None], W_ih, W_hh, b_ih, b_hh)[0, -1]
            return (w * h).sum() ** 2
        return loss_fn

    def partial_loss(N, e):
        u = randn(g, e)

        def loss_fn(x):  # the last two positions do not reach the loss: their gradient is 0
            return ((x[:-2] @ u) ** 2).sum()
        return loss_fn

    return [
        ("tanh RNN, N=6, e=4, small recurrent weights", rnn_loss(6, 4, 5, 0.5), 6, 4,
         "the loss reads the last state; early positions get small gradients"),
        ("linear loss, N=5, e=3", linear_loss(5, 3), 5, 3, "the gradient at position i is c_i"),
        ("GRU context, N=7, e=2", gru_context_loss(7, 2, 3), 7, 2, "the loss reads the context vector"),
        ("quadratic loss, N=4, e=6", partial_loss(4, 6), 4, 6, "the last two positions get gradient 0"),
        ("tanh RNN, N=1, e=5", rnn_loss(1, 5, 3, 1.0), 1, 5, "a single position"),
    ]


def _gradient_cases():
    g = generator(25)
    return [Case(name, (loss_fn, randn(g, N, e)), dims={"N": N, "e": e}, note=note)
            for name, loss_fn, N, e, note in _loss_functions()]


def _grad(loss_fn, embedded):
    x = embedded.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_fn(x), x)
    return grad  # (N, e)


def _negative_norm(case, outputs):
    got = outputs[0]
    if isinstance(got, torch.Tensor) and got.is_floating_point() and (got < 0).any():
        return "a norm is never negative: ‖g‖ = √(Σ_k g_k²)"
    return None


_negative_norm.key = "negative_norm"

register(Task(
    id="02.gradient_norms_by_position",
    title="how much of the gradient reaches each source position",
    points=2,
    reference=_gradient_norms_ref,
    cases=_gradient_cases,
    misconceptions=[
        Misconception("whole_norm", "you returned the norm of the whole gradient, one number: the task asks "
                      "for one norm per source position, ‖∂L/∂x_i‖ for i = 1 … N, shape (N,)",
                      lambda loss_fn, x: _grad(loss_fn, x).norm()),
        Misconception("wrong_axis", "you took the norm over the positions (axis 0), which gives one number per "
                      "embedding component, shape (e,): take it over the components, dim=-1",
                      lambda loss_fn, x: _grad(loss_fn, x).norm(dim=0)),
        Misconception("signed_sum", "you added up the components of ∂L/∂x_i with their signs: positive and "
                      "negative components cancel. The size of a vector is its norm, √(Σ_k g_k²)",
                      lambda loss_fn, x: _grad(loss_fn, x).sum(dim=-1)),
        Misconception("l1_norm", "you added up the absolute values (the L1 norm); this task uses the "
                      "Euclidean norm √(Σ_k g_k²), torch.linalg.vector_norm or .norm(dim=-1)",
                      lambda loss_fn, x: _grad(loss_fn, x).abs().sum(dim=-1)),
        Misconception("squared_norm", "you returned the squared norm Σ_k g_k²: take its square root",
                      lambda loss_fn, x: (_grad(loss_fn, x) ** 2).sum(dim=-1)),
        Misconception("reversed", "your norms are in reverse order: entry i must belong to source position i "
                      "(counted from the start of the sentence), not to the i-th position from the end",
                      lambda loss_fn, x: _grad(loss_fn, x).norm(dim=-1).flip(0)),
        Misconception("norm_of_input", "those are the norms of the embeddings x_i themselves: the task asks "
                      "for the norms of the gradient ∂L/∂x_i", lambda loss_fn, x: x.norm(dim=-1)),
        Misconception("normalised", "you divided by the sum of the norms: return the norms themselves",
                      lambda loss_fn, x: (lambda n: n / n.sum())(_grad(loss_fn, x).norm(dim=-1))),
        Misconception("normalised", "you divided by the largest norm: return the norms themselves",
                      lambda loss_fn, x: (lambda n: n / n.max())(_grad(loss_fn, x).norm(dim=-1))),
    ],
    properties=[_negative_norm],
    # the output is made of gradients; nothing flows back through it
    check_grad=False,
    hint="x = embedded.detach().clone().requires_grad_(True); loss = loss_fn(x); grad, = "
         "torch.autograd.grad(loss, x) (N, e); return grad.norm(dim=-1).",
))
