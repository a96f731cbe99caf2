"""Set 02, Part I: the RNN encoder-decoder and where it breaks.

Tasks: the GRU encoder's states ``H`` and context vector over a padded batch; how many numbers the context
vector and ``H`` hold; greedy decoding with a stop at ``<eos>`` and at ``max_len``; accuracy by source
length; the gradient norm at every source position. Every case builds its own fixed weights (nothing is
trained), so each case runs in milliseconds.

The book's own implementations of these steps (the package's encoder and decoding loops,
``evaluate_by_length``, the chapter-2 bottleneck model) are ``forbidden``: a graded function that calls one
earns 0 with a message saying why. Gradients must reach every float input (the engine checks every case).
"""

from __future__ import annotations

import math
import random

import torch

from ..cases import DTYPE, generator, randn
from ..engine import Case, Misconception, Task
from ..registry import register

# --------------------------------------------------------------------------------------------- 02.encoder_states


def _gru_step(x, h, W_ih, W_hh, b_ih, b_hh, gates="rzn", reset="torch", update="torch", act="tanh"):
    """One GRU step with the equations of torch.nn.GRU. x: (..., e), h: (..., d) -> (..., d).

    The keyword arguments build the wrong variants: gate order ``"zrn"``, the reset gate applied before
    ``W_hn`` (``reset="cho"``) or the biases of n swapped (``reset="swap_bias"``), the update gate the
    wrong way round (``update="swapped"``), ReLU or nothing for the candidate's tanh, tanh for the gates.
    """
    gi = x @ W_ih.T + b_ih  # (..., 3d)
    gh = h @ W_hh.T + b_hh  # (..., 3d)
    parts_i, parts_h = dict(zip(gates, gi.chunk(3, -1))), dict(zip(gates, gh.chunk(3, -1)))
    gate = torch.tanh if act == "tanh_gates" else torch.sigmoid
    squash = {"relu": torch.relu, "none": lambda v: v}.get(act, torch.tanh)
    r = gate(parts_i["r"] + parts_h["r"])
    z = gate(parts_i["z"] + parts_h["z"])
    W_hn, b_hn = dict(zip(gates, W_hh.chunk(3, 0)))["n"], dict(zip(gates, b_hh.chunk(3, 0)))["n"]
    b_in = dict(zip(gates, b_ih.chunk(3, 0)))["n"]
    if reset == "torch":
        n = squash(parts_i["n"] + r * parts_h["n"])
    elif reset == "swap_bias":  # b_hn outside the product, b_in inside it
        n = squash(parts_i["n"] - b_in + b_hn + r * (h @ W_hn.T + b_in))
    else:  # Cho et al. (2014): W_hn (r ⊙ h)
        n = squash(parts_i["n"] + (r * h) @ W_hn.T + b_hn)
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
    return (
        randn(g, 3 * d, e, scale=scale),
        randn(g, 3 * d, d, scale=scale),
        randn(g, 3 * d, scale=0.3),
        randn(g, 3 * d, scale=0.3),
    )


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
        cases.append(
            Case(
                f"B={B}, N={N}, e={e}, d={d}, lengths {', '.join(map(str, lengths))}",
                (_padded(g, lengths, N, e, padding), lengths_t, *_gru_weights(g, e, d, scale)),
                dims={"B": B, "N": N, "e": e, "d": d},
                note=note,
            )
        )
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


CONTEXT_FROM_PADDING = (
    "your context vector is the state at position N, the end of the padded batch: a "
    "sentence shorter than N ends earlier, and its context is its state at its own true "
    "last token (position lengths[b] - 1)"
)
_CONTEXT_HINT = "Index H with torch.arange(B) and lengths - 1: H[torch.arange(B), lengths - 1] is (B, d)."

ENCODER_MISCONCEPTIONS = [
    Misconception(
        "context_from_padding",
        CONTEXT_FROM_PADDING + " (you took the GRU's final state, which has gone on reading the padding)",
        _encoder_with(context=lambda H, raw, L: raw[:, -1]),
        _CONTEXT_HINT,
    ),
    Misconception(
        "context_from_padding",
        CONTEXT_FROM_PADDING + " (you took H[:, -1], which is padding, zeros, for every shorter sentence)",
        _encoder_with(context=lambda H, raw, L: H[:, -1]),
        _CONTEXT_HINT,
    ),
    Misconception(
        "first_state",
        "your context vector is the first state h_1: the encoder has then read "
        "one word only. The context vector is the state after the whole sentence, at its true "
        "last token",
        _encoder_with(context=lambda H, raw, L: H[:, 0]),
    ),
    Misconception(
        "padding_not_zeroed",
        "your H is not zero at padded positions (index ≥ lengths[b]): "
        "those states come from reading padding, not words. Where the padding is comes from "
        "`lengths` only (the embeddings there may hold any numbers)",
        _encoder_with(mask=False),
        "valid = torch.arange(N)[None, :] < lengths[:, None] is (B, N); multiply H by valid[..., None].",
    ),
    Misconception(
        "batch_as_time",
        "your GRU stepped from sentence to sentence (axis 0) instead of from "
        "word to word: torch.nn.GRU reads its input as (N, B, e) unless batch_first=True. The "
        "state must carry from position i to position i + 1 of the same sentence",
        _encoder_with(reshape="batch_as_time"),
        "nn.GRU(..., batch_first=True), or loop over embedded[:, i].",
    ),
    Misconception(
        "reshape_not_transpose",
        "you turned (B, N, e) into (N, B, e) with reshape/view: that "
        "regroups the numbers in memory order and mixes words of different sentences",
        _encoder_with(reshape="in"),
        "Swap the axes with embedded.transpose(0, 1), or loop over embedded[:, i].",
    ),
    Misconception(
        "reshape_not_transpose",
        "you swapped the batch and time axes with reshape/view (on the "
        "way in and on the way out): that regroups the numbers in memory order and mixes words "
        "of different sentences",
        _encoder_with(reshape="in_and_out"),
        "Use transpose(0, 1) both ways, or loop over embedded[:, i].",
    ),
    Misconception(
        "last_state_only",
        "you returned only the last state: H must hold every state h_1 … h_N, "
        "shape (B, N, d). The plain decoder only needs the context vector, but attention will "
        "need all of them",
        lambda *args: (lambda H, c: (c, c))(*_encoder_ref(*args)),
    ),
    Misconception(
        "last_state_only",
        "every row of your H is the context vector: H must hold the state "
        "after each word, h_1 … h_N, which differ from one another",
        lambda *args: (lambda H, c: (c[:, None].expand_as(H), c))(*_encoder_ref(*args)),
    ),
    Misconception(
        "swapped_outputs",
        "you returned (context, H): return H (B, N, d) first and the context vector (B, d) second",
        lambda *args: tuple(reversed(_encoder_ref(*args))),
    ),
    Misconception(
        "gate_order",
        "your gates are in the wrong order: torch.nn.GRU stacks the rows of W_ih, "
        "W_hh, b_ih and b_hh as reset r, update z, new n, in that order",
        _encoder_with(gates="zrn"),
        "W_ir, W_iz, W_in = W_ih.chunk(3); the same for W_hh and the biases.",
    ),
    Misconception(
        "gate_order",
        "your gates are in the wrong order: torch.nn.GRU stacks the rows of W_ih, "
        "W_hh, b_ih and b_hh as reset r, update z, new n, in that order (you read n first)",
        _encoder_with(gates="nrz"),
        "W_ir, W_iz, W_in = W_ih.chunk(3).",
    ),
    Misconception(
        "reset_gate_placement",
        "you applied the reset gate to h before multiplying by W_hn "
        "(the form of Cho et al. 2014); torch.nn.GRU applies it after the matrix and its bias, "
        "to W_hn h + b_hn",
        _encoder_with(reset="cho"),
        "n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)).",
    ),
    Misconception(
        "swapped_n_biases",
        "your candidate n has its two biases swapped: b_in is added outside "
        "the reset gate's product, b_hn inside it, with W_hn h",
        _encoder_with(reset="swap_bias"),
        "n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)).",
    ),
    Misconception(
        "update_gate_swapped",
        "your update gate works the wrong way round: torch.nn.GRU keeps "
        "the old state with weight z and takes the candidate with weight 1 − z",
        _encoder_with(update="swapped"),
        "h' = (1 − z) ⊙ n + z ⊙ h.",
    ),
    Misconception(
        "wrong_activation",
        "your candidate n is not squashed by tanh (you used ReLU, or no "
        "activation): torch.nn.GRU's candidate is tanh(…), between −1 and 1",
        _encoder_with(act="relu"),
    ),
    Misconception(
        "wrong_activation",
        "your candidate n is not squashed by tanh (you used ReLU, or no "
        "activation): torch.nn.GRU's candidate is tanh(…), between −1 and 1",
        _encoder_with(act="none"),
    ),
    Misconception(
        "wrong_activation",
        "your gates r and z use tanh: they are sigmoids, between 0 and 1, "
        "which is what lets z weigh the old state against the new",
        _encoder_with(act="tanh_gates"),
    ),
]


def _book_encoder_states(embedded, lengths, W_ih, W_hh, b_ih, b_hh):
    """The shortcut a learner might take: the book's own Encoder with the given weights."""
    from attnbook.models import Encoder

    encoder = Encoder(2, W_ih.shape[1], W_hh.shape[1]).to(embedded.dtype)
    params = {
        "rnn.weight_ih_l0": W_ih,
        "rnn.weight_hh_l0": W_hh,
        "rnn.bias_ih_l0": b_ih,
        "rnn.bias_hh_l0": b_hh,
    }
    src = torch.ones(embedded.shape[:2], dtype=torch.long)
    return torch.func.functional_call(encoder, params, (src, lengths, embedded))


def _padding_states_not_zero(case, outputs):
    H = outputs[0]
    embedded, lengths = case.args[:2]
    B, N = embedded.shape[:2]
    if not isinstance(H, torch.Tensor) or H.dim() != 3 or tuple(H.shape[:2]) != (B, N):
        return None
    pad = ~_valid(lengths, N)
    if pad.any() and (H.detach()[pad].abs() > 1e-12).any():
        return (
            "your H is not zero at padded positions (index ≥ lengths[b]): those states come from "
            "reading padding; where the padding is comes from `lengths` only (the embeddings there may "
            "hold any numbers)"
        )
    return None


_padding_states_not_zero.key = "padding_not_zeroed"


def _context_not_own_last_state(case, outputs):
    H, c = outputs
    lengths = case.args[1]
    if not (isinstance(H, torch.Tensor) and isinstance(c, torch.Tensor)) or H.dim() != 3:
        return None
    if (
        H.shape[0] != lengths.shape[0]
        or H.shape[1] < int(lengths.max())
        or c.shape != (H.shape[0], H.shape[2])
    ):
        return None
    own = H.detach()[torch.arange(H.shape[0]), lengths - 1].to(c.dtype)
    if not torch.allclose(own, c.detach(), atol=1e-6):
        return (
            "your context vector is not your own H at each sentence's true last token (position "
            "lengths[b] - 1): the context is the state after the sentence's last real token"
        )
    return None


_context_not_own_last_state.key = "context_not_last_state"

register(
    Task(
        id="02.encoder_states",
        title="the GRU encoder: every state H and the context vector",
        points=3,
        reference=_encoder_ref,
        cases=_encoder_cases,
        output_names=("H", "context"),
        misconceptions=ENCODER_MISCONCEPTIONS,
        properties=[_padding_states_not_zero, _context_not_own_last_state],
        # gradients must reach embedded and the four weights (an encoder is trained): weights copied into a
        # torch.nn.GRU under no_grad are new parameters, cut off from the given tensors
        check_grad=True,
        atol=1e-9,
        rtol=1e-9,
        hint="Loop i = 0 … N-1 over embedded[:, i] (B, e) from h = zeros (B, d); r, z, n from W_ih.chunk(3) "
        "and W_hh.chunk(3); h = (1 − z) ⊙ n + z ⊙ h; stack to (B, N, d), zero the padding, and pick "
        "H[b, lengths[b] - 1].",
        forbidden=(
            "attnbook.models:Encoder",
            "attnbook.models:_Base",
            "attnbook.models:Seq2Seq",
            "attnbook.models:AttnSeq2Seq",
            "attnbook.bottleneck:*",
        ),
        shortcut_example=_book_encoder_states,
    )
)

# --------------------------------------------------------------------------------------------- 02.bottleneck_sizes


def _sizes_ref(n_words, d):
    return d, (n_words + 1) * d


register(
    Task(
        id="02.bottleneck_sizes",
        title="how many numbers reach the decoder",
        points=1,
        reference=_sizes_ref,
        cases=lambda: [
            Case(f"{n} words, d={d}", (n, d), note=note)
            for n, d, note in [
                (3, 128, "'i am a student' with the book's hidden size"),
                (40, 128, "a long sentence"),
                (1, 8, "one word"),
                (17, 64, ""),
                (0, 5, "an empty sentence: the source is <eos> alone"),
            ]
        ],
        output_names=("c_size", "H_size"),
        misconceptions=[
            Misconception(
                "empty_sentence",
                "an empty sentence still ends with <eos>: the encoder reads that one "
                "position, so c holds d numbers and so does H",
                lambda n, d: (0, 0) if n == 0 else (d, (n + 1) * d),
            ),
            Misconception(
                "empty_sentence",
                "an empty sentence still ends with <eos>: the encoder reads that one "
                "position, so c holds d numbers and so does H",
                lambda n, d: (d, 0) if n == 0 else (d, (n + 1) * d),
            ),
            Misconception(
                "context_grows",
                "the context vector does not grow with the sentence: it is one "
                "state of the encoder, d numbers, for 3 words as for 40. That is the bottleneck",
                lambda n, d: ((n + 1) * d, (n + 1) * d),
            ),
            Misconception(
                "context_grows",
                "the context vector does not grow with the sentence: it is one "
                "state of the encoder, d numbers, for 3 words as for 40. That is the bottleneck",
                lambda n, d: (n * d, n * d),
            ),
            Misconception(
                "forgot_eos",
                "the encoder also reads the <eos> that ends the source, so H has "
                "n_words + 1 rows of d numbers",
                lambda n, d: (d, n * d),
            ),
            Misconception(
                "counted_vectors",
                "you counted vectors, not numbers: each state holds d numbers",
                lambda n, d: (1, n + 1),
            ),
            Misconception(
                "eos_one_number",
                "you counted <eos> as one number: it is one more position, and the "
                "encoder's state there holds d numbers like every other",
                lambda n, d: (d, n * d + 1),
            ),
            Misconception(
                "added_not_multiplied",
                "you added the number of positions and d: H holds d numbers "
                "for each of its positions, so the sizes multiply",
                lambda n, d: (d, n + 1 + d),
            ),
            Misconception(
                "swapped_outputs",
                "you returned (H_size, c_size): the context vector's size comes first",
                lambda n, d: ((n + 1) * d, d),
            ),
        ],
        check_grad=False,
        hint="c is one state (d numbers); H is one state per source position, and the source has n_words + 1 "
        "positions (the words and <eos>).",
    )
)

# --------------------------------------------------------------------------------------------- 02.greedy_decode

_NEVER = None
_BIG = 30.0


def _toy_decoder(seed, V, d, sos_id, eos_id, stop_at, eos_once=False):
    """A deterministic decoder step ``(y_prev, s_prev (d,)) -> (logits (V,), s_t (d,))``.

    ``s[0]`` counts the steps; ``s[1:]`` is a small tanh RNN fed the previous token. ``<sos>`` is never
    likely; ``<eos>`` becomes the most likely word from step ``stop_at`` on (never if ``stop_at`` is None),
    or, with ``eos_once``, at step ``stop_at`` only: a decoder that went on after it would write words again.
    The other logits depend on the state and on the previous token, so that forgetting to feed either
    changes the words.
    """
    g = generator(seed)
    A, E, W, U = (
        randn(g, d - 1, d - 1, scale=0.8),
        randn(g, V, d - 1),
        randn(g, V, d - 1, scale=2.0),
        randn(g, V, V),
    )

    def step_fn(y_prev, s_prev):
        y = int(y_prev)
        count = s_prev[0] + 1
        z = torch.tanh(A @ s_prev[1:] + E[y])
        logits = W @ z + U[y]  # (V,)
        logits[sos_id] = -_BIG
        if eos_once:
            logits[eos_id] = _BIG if stop_at is not _NEVER and float(count) == stop_at else -_BIG
        else:
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
    for seed, V, d, sos, eos, stop_at, max_len, once, name, note in [
        (1, 7, 4, 1, 2, 4, 10, False, "<eos> at step 4 of at most 10", "the answer has 3 words"),
        (2, 6, 5, 0, 5, 9, 12, False, "<eos> late, at step 9 of at most 12", "ids: <sos> = 0, <eos> = 5"),
        (
            7,
            8,
            4,
            1,
            2,
            3,
            9,
            True,
            "<eos> at step 3, words again after it",
            "a decoder that went on after <eos> would write more words; the answer has 2",
        ),
        (15, 8, 3, 1, 2, _NEVER, 6, False, "<eos> never comes, max_len = 6", "max_len must stop the loop"),
        (4, 5, 6, 3, 0, 1, 5, True, "<eos> at the first step", "the answer is the empty list []"),
        (5, 9, 4, 2, 7, 6, 5, False, "<eos> would come at step 6, max_len = 5", "max_len stops first"),
        (6, 7, 5, 1, 2, 5, 5, False, "<eos> exactly at step max_len = 5", "the answer has 4 words"),
        (8, 6, 3, 1, 2, 2, 0, False, "max_len = 0", "no step is allowed: the answer is []"),
    ]:
        step_fn = _toy_decoder(seed, V, d, sos, eos, stop_at, once)
        cases.append(
            Case(name, (step_fn, _s0(seed, d), sos, eos, max_len), dims={"n_vocab": V, "d": d}, note=note)
        )
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


def _book_greedy(step_fn, s_0, sos_id, eos_id, max_len):
    """The shortcut a learner might take: the book's own decoding loop (on a model of its own)."""
    from attnbook.models import Seq2Seq

    model = Seq2Seq(2, 2, emb=1, hidden=1)
    return model.greedy_decode(torch.zeros(1, 1, dtype=torch.long), torch.ones(1, dtype=torch.long), max_len)[
        0
    ]


def _greedy_with(
    steps=lambda m: m,
    pick=torch.argmax,
    feed="prediction",
    carry=True,
    stop="before",
    prefix=False,
    fixed_ids=None,
    check_limit="before",
):
    """A wrong greedy decoder; the defaults give the reference. ``fixed_ids`` replaces the arguments
    ``(sos_id, eos_id)`` by fixed numbers (the book's vocabulary has <sos> = 1, <eos> = 2)."""

    def fn(step_fn, s_0, sos_id, eos_id, max_len):
        if fixed_ids is not None:
            sos_id, eos_id = fixed_ids(sos_id, eos_id)
        out, y, s = [], sos_id, s_0
        for _ in range(max(steps(max_len), 1) if check_limit == "after" else steps(max_len)):
            logits, s_new = step_fn(y if feed == "prediction" else sos_id, s)
            s = s_new if carry else s_0
            y = int(pick(logits))
            if y == eos_id and stop == "skip":
                continue
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
        return (
            f"your list contains <eos> (id {eos_id} in this case): stop before appending it, and "
            "compare with the argument eos_id rather than a fixed number"
        )
    y, s = sos_id, s_0
    for k, w in enumerate(words):
        logits, s = step_fn(y, s)
        best = int(torch.argmax(logits))
        if w != best:
            return (
                f"word {k + 1} of your answer ({w}) is not the most likely word at that step ({best}): greedy "
                "decoding takes the argmax of the logits, it does not sample"
            )
        y = w
    return None


def _not_greedy_guarded(case, outputs):
    try:
        return _not_greedy(case, outputs)
    except Exception:  # ids outside the vocabulary: leave the message to the value check
        return None


_not_greedy_guarded.key = "not_argmax"


register(
    Task(
        id="02.greedy_decode",
        title="greedy decoding with a stop",
        points=3,
        reference=_greedy_ref,
        cases=_greedy_cases,
        misconceptions=[
            Misconception(
                "hardcoded_ids",
                "you compared with a fixed id for <eos> (2, as in the book's "
                "vocabulary): the ids of <sos> and <eos> are the arguments sos_id and eos_id, and "
                "they change from case to case",
                _greedy_with(fixed_ids=lambda sos, eos: (sos, 2)),
            ),
            Misconception(
                "hardcoded_ids",
                "you fed a fixed id for <sos> (1, as in the book's vocabulary): "
                "the ids of <sos> and <eos> are the arguments sos_id and eos_id, and they change from "
                "case to case",
                _greedy_with(fixed_ids=lambda sos, eos: (1, eos)),
            ),
            Misconception(
                "ignores_eos",
                "your decoding does not stop at <eos>: it runs all max_len steps. "
                "Stop as soon as the argmax is eos_id",
                _greedy_with(stop="never"),
            ),
            Misconception(
                "includes_eos",
                "your list ends with <eos>: this task returns the words without it "
                "(stop before appending eos_id)",
                _greedy_with(stop="after"),
            ),
            Misconception(
                "includes_sos",
                "your list starts with <sos>: <sos> is only the first input of the "
                "decoder, not a word it predicted",
                _greedy_with(prefix=True),
            ),
            Misconception(
                "no_feedback",
                "you fed <sos> at every step: step t must be fed the word predicted at "
                "step t - 1 (that is what makes decoding autoregressive)",
                _greedy_with(feed="sos"),
            ),
            Misconception(
                "state_not_carried",
                "you passed s_0 to every step: pass the state returned by the "
                "previous step, s_{t-1}, so that the decoder remembers what it has done",
                _greedy_with(carry=False),
            ),
            Misconception(
                "max_len_zero",
                "with max_len = 0 no step is allowed, but your function made one (it "
                "checks the limit only after a step)",
                _greedy_with(check_limit="after"),
                "Check the limit before calling step_fn: for _ in range(max_len): ...",
            ),
            Misconception(
                "max_len_off_by_one",
                "your loop runs max_len + 1 steps: at most max_len words come out",
                _greedy_with(steps=lambda m: m + 1),
            ),
            Misconception(
                "max_len_off_by_one",
                "your loop runs max_len - 1 steps: max_len steps are allowed",
                _greedy_with(steps=lambda m: m - 1),
            ),
            Misconception(
                "argmin",
                "you picked the least likely word (argmin): greedy decoding takes the argmax",
                _greedy_with(pick=torch.argmin),
            ),
            Misconception(
                "continues_after_eos",
                "your decoding went on after <eos> and kept the words that came "
                "after it: a sentence ends at its first <eos>, and nothing after it belongs to the "
                "answer",
                _greedy_with(stop="skip"),
                "Leave the loop at the first <eos> (break), before appending it.",
            ),
            Misconception(
                "argmax_value",
                "you took the largest logit's value, not its position: the predicted "
                "word is the index of the largest logit",
                _greedy_with(pick=lambda l: l.max()),
                "int(logits.argmax()) is the id of the most likely word.",
            ),
        ],
        properties=[_not_greedy_guarded],
        check_grad=False,  # the answer is a list of ids: nothing to differentiate
        forbidden=(
            "attnbook.models:Seq2Seq.greedy_decode",
            "attnbook.models:_Base._greedy",
            "attnbook.models:AttnSeq2Seq.greedy_decode",
            "attnbook.models:translate",
            "attnbook.bottleneck:*",
        ),
        shortcut_example=_book_greedy,
        hint="y = sos_id, s = s_0; repeat at most max_len times: logits, s = step_fn(y, s); y = argmax; stop "
        "if y == eos_id, else append it.",
    )
)

# --------------------------------------------------------------------------------------------- 02.accuracy_by_length


def _sentence_scores(p, t):
    """(correct positions, positions) of one prediction against its target: the T words and the end."""
    correct = sum(int(j < len(p) and p[j] == t[j]) for j in range(len(t))) + int(len(p) == len(t))
    return correct, len(t) + 1


def _accuracy_with(
    inside=lambda lo, n, hi: lo <= n <= hi,
    scores=_sentence_scores,
    pooled=True,
    exact=lambda p, t: list(p) == list(t),
    empty=None,
    length="source",
    swap=False,
    keep=lambda p, t: True,
    clean=lambda p: p,
):
    """Accuracy by length; the defaults give the reference, the keywords the wrong variants."""

    def fn(predictions, targets, src_lengths, buckets):
        out = []
        for lo, hi in buckets:
            rows = [
                (clean(list(p)), t)
                for p, t, n in zip(predictions, targets, src_lengths)
                if inside(lo, n if length == "source" else len(t), hi) and keep(p, t)
            ]
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
            p = p[: rng.randint(0, len(p) - 1)]  # stops early
        elif r < 0.45:
            p = p + [rng.randint(4, 30) for _ in range(rng.randint(1, 3))]  # goes on too long
        elif r < 0.75:
            for j in range(len(p)):
                if rng.random() < 0.3:
                    p[j] = rng.randint(4, 30)
        generated.append((n, t, p))

    def case(name, rows, buckets, note=""):
        return Case(
            name,
            ([p for _, _, p in rows], [t for _, t, _ in rows], [n for n, _, _ in rows], buckets),
            note=note,
        )

    return [
        case(
            "7 sentences by hand, buckets 1–3, 4–6, 7–9, 10–12",
            hand,
            [(1, 3), (4, 6), (7, 9), (10, 12)],
            "lengths on the bucket edges; bucket 10–12 is empty; one sentence of length 15 is in no bucket",
        ),
        case(
            "40 random sentences, the book's buckets",
            generated,
            [(3, 8), (9, 15), (16, 22), (23, 29), (30, 60)],
            "no sentence has 30 words or more: the last bucket is empty",
        ),
        case("every prediction exact", [(n, t, list(t)) for n, t, _ in generated[:10]], [(1, 100)]),
        case("every prediction empty", [(n, t, []) for n, t, _ in hand[:4]], [(1, 2), (3, 5), (6, 6)]),
        case(
            "ids 0, 1, 2, 3 are words too; targets without words",
            [
                (2, [0, 2, 5], [0, 2, 5]),  # exact, with ids 0 and 2 as words
                (3, [], [6]),  # an empty target: its one position, the end, is wrong
                (4, [1, 0], [1, 0, 3]),  # a word too many: 2 of 3
                (5, [7, 2, 9], [7, 2, 4]),  # the id 2 is a word: 3 of 4
                (0, [], []),  # an empty source and target: exact, 1 of 1
                (1, [3, 4], [3]),
            ],  # 1 of 3
            [(0, 1), (2, 5)],
            "a target may have no word: it still has one position, its end",
        ),
    ]


def _longest_scores(p, t):
    return _sentence_scores(p, t)[0], max(len(p), len(t)) + 1


def _zip_scores(p, t):
    return sum(int(a == b) for a, b in zip(p, t)), min(len(p), len(t)) or 1


def _words_only(p, t):
    return sum(int(j < len(p) and p[j] == t[j]) for j in range(len(t))), len(t)


def _book_accuracy(predictions, targets, src_lengths, buckets):
    """The shortcut a learner might take: the book's evaluate_by_length on a model that replays the
    predictions."""
    from attnbook.data import Pair, Vocab
    from attnbook.models import evaluate_by_length

    words = sorted({w for seq in list(predictions) + list(targets) for w in seq})
    vocab = Vocab([f"w{w}" for w in words])
    pairs = [
        Pair(tuple("x" for _ in range(n)), tuple(f"w{w}" for w in t), tuple((0,) for _ in t))
        for n, t in zip(src_lengths, targets)
    ]
    order = sorted(range(len(pairs)), key=lambda k: len(pairs[k].src))
    queue = [[vocab.stoi[f"w{w}"] for w in predictions[k]] for k in order]

    class _Replay(torch.nn.Module):
        src_vocab, tgt_vocab = Vocab(["x"]), vocab

        def greedy_decode(self, src, src_len, max_len=None):
            return [queue.pop(0) for _ in range(src.shape[0])]

    scores = evaluate_by_length(_Replay(), pairs, buckets, batch_size=max(1, len(pairs)))
    return [None if s.n == 0 else (s.token_acc, s.sentence_acc) for s in scores]


register(
    Task(
        id="02.accuracy_by_length",
        title="token and sentence accuracy by source length",
        points=3,
        reference=_accuracy_ref,
        cases=_accuracy_cases,
        misconceptions=[
            Misconception(
                "per_sentence_mean",
                "you averaged the sentences' own token accuracies; this task "
                "pools the positions of the bucket: (correct positions of all its sentences) / (all "
                "their positions), so a long sentence weighs more than a short one",
                _accuracy_with(pooled=False),
            ),
            Misconception(
                "per_sentence_mean",
                "you averaged the sentences' own shares of right words; this task "
                "pools the positions of the bucket, (right positions of all its sentences) / (all their "
                "positions), and each sentence's end counts as one more position",
                _accuracy_with(pooled=False, scores=_words_only),
            ),
            Misconception(
                "bucket_bounds",
                "a sentence whose length equals a bucket's upper bound hi is missing: "
                "both bounds are included, lo ≤ n ≤ hi",
                _accuracy_with(inside=lambda lo, n, hi: lo <= n < hi),
            ),
            Misconception(
                "bucket_bounds",
                "a sentence whose length equals a bucket's lower bound lo is missing: "
                "both bounds are included, lo ≤ n ≤ hi",
                _accuracy_with(inside=lambda lo, n, hi: lo < n <= hi),
            ),
            Misconception(
                "bucketed_by_target",
                "you put sentences into buckets by the length of their target; "
                "the buckets are about the source length, src_lengths",
                _accuracy_with(length="target"),
            ),
            Misconception(
                "shorter_length",
                "you compared only up to the shorter of the two lengths (zip stops "
                "there): a missing or an extra word must count as wrong. Compare every position of the "
                "target, and the end as one more",
                _accuracy_with(scores=_zip_scores),
            ),
            Misconception(
                "shorter_length",
                "a translation that is only the beginning of the target (or goes on "
                "after it) is not an exact match: compare the whole lists",
                _accuracy_with(exact=lambda p, t: all(a == b for a, b in zip(p, t))),
            ),
            Misconception(
                "no_end_position",
                "you compared the words only: the end of the sentence counts as one "
                "more position (T + 1 per sentence), so a translation that stops too early or too late "
                "loses it",
                _accuracy_with(scores=_words_only),
            ),
            Misconception(
                "empty_bucket",
                "a bucket with no sentence has no accuracy: put None in its place, not 0",
                _accuracy_with(empty=(0.0, 0.0)),
            ),
            Misconception(
                "empty_bucket",
                "a bucket with no sentence is marked with None in this task (not nan, and not (nan, nan))",
                _accuracy_with(empty=(math.nan, math.nan)),
            ),
            Misconception(
                "empty_bucket",
                "a bucket with no sentence is marked with None in this task (not nan, and not (nan, nan))",
                _accuracy_with(empty=math.nan),
            ),
            Misconception(
                "empty_bucket",
                "a bucket with no sentence must still have its place in the list, "
                "holding None: one entry per bucket, in the order of buckets",
                lambda *args: [x for x in _accuracy_ref(*args) if x is not None],
            ),
            Misconception(
                "swapped_outputs",
                "each pair must be (token_accuracy, sentence_accuracy), in that order",
                _accuracy_with(swap=True),
            ),
            Misconception(
                "words_after_end",
                "a translation that goes on after the target's last word is not "
                "exact: the extra words are part of the prediction, and they make it differ",
                _accuracy_with(exact=lambda p, t: list(p)[: len(t)] == list(t)),
            ),
            Misconception(
                "longest_denominator",
                "you counted the positions over the longer of prediction and "
                "target: the positions are the target's, its T words and its end; extra words of the "
                "prediction cost only the end",
                _accuracy_with(scores=_longest_scores),
            ),
            Misconception(
                "empty_target",
                "you left out the sentences whose target has no word: such a target "
                "still has one position, its end (right when the prediction is empty too)",
                _accuracy_with(keep=lambda p, t: len(t) > 0),
            ),
            Misconception(
                "hardcoded_ids",
                "you removed id 0 from the predictions (the book's <pad>): here the "
                "lists hold words only, and any id, 0 included, is a word",
                _accuracy_with(clean=lambda p: [w for w in p if w != 0]),
            ),
            Misconception(
                "hardcoded_ids",
                "you cut the predictions at id 2 (the book's <eos>): here the lists "
                "hold words only, and any id, 2 included, is a word",
                _accuracy_with(clean=lambda p: p[: p.index(2)] if 2 in p else p),
            ),
        ],
        check_grad=False,  # Python numbers: nothing to differentiate
        forbidden=("attnbook.models:evaluate_by_length", "attnbook.models:BucketScore"),
        shortcut_example=_book_accuracy,
        hint="Per bucket: sentences with lo ≤ src_length ≤ hi; positions = Σ (len(target) + 1); a word "
        "position j is right when prediction[j] == target[j], the end when len(prediction) == len(target).",
    )
)

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
        (
            "tanh RNN, N=6, e=4, small recurrent weights",
            rnn_loss(6, 4, 5, 0.5),
            6,
            4,
            "the loss reads the last state; early positions get small gradients",
        ),
        ("linear loss, N=5, e=3", linear_loss(5, 3), 5, 3, "the gradient at position i is c_i"),
        ("GRU context, N=7, e=2", gru_context_loss(7, 2, 3), 7, 2, "the loss reads the context vector"),
        ("quadratic loss, N=4, e=6", partial_loss(4, 6), 4, 6, "the last two positions get gradient 0"),
        ("tanh RNN, N=1, e=5", rnn_loss(1, 5, 3, 1.0), 1, 5, "a single position"),
    ]


def _gradient_cases():
    g = generator(25)
    return [
        Case(name, (loss_fn, randn(g, N, e)), dims={"N": N, "e": e}, note=note)
        for name, loss_fn, N, e, note in _loss_functions()
    ]


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


def _float32_norms(case, outputs):
    """Right to float32's precision only: a step (the gradient or the norm) ran in float32."""
    got = outputs[0]
    if not (isinstance(got, torch.Tensor) and got.is_floating_point()):
        return None
    expected = _gradient_norms_ref(*case.args)
    if got.shape != expected.shape:
        return None
    error = float((got.detach().double() - expected).abs().max())
    scale = 1.0 + float(expected.abs().max())
    if 1e-9 * scale < error <= 1e-5 * scale:
        return (
            "your norms agree with the answer to about 7 significant digits but not to float64 "
            "precision: a step of your computation (the gradient or the norm) ran in float32"
        )
    return None


_float32_norms.key = "float32_computation"

register(
    Task(
        id="02.gradient_norms_by_position",
        title="how much of the gradient reaches each source position",
        points=2,
        reference=_gradient_norms_ref,
        cases=_gradient_cases,
        misconceptions=[
            Misconception(
                "whole_norm",
                "you returned the norm of the whole gradient, one number: the task asks "
                "for one norm per source position, ‖∂L/∂x_i‖ for i = 1 … N, shape (N,)",
                lambda loss_fn, x: _grad(loss_fn, x).norm(),
            ),
            Misconception(
                "wrong_axis",
                "you took the norm over the positions (axis 0), which gives one number per "
                "embedding component, shape (e,): each position's norm runs over its own components",
                lambda loss_fn, x: _grad(loss_fn, x).norm(dim=0),
                "grad.norm(dim=-1) takes the norm along the last axis, the components.",
            ),
            Misconception(
                "signed_sum",
                "you added up the components of ∂L/∂x_i with their signs: positive and "
                "negative components cancel. The size of a vector is its norm, √(Σ_k g_k²)",
                lambda loss_fn, x: _grad(loss_fn, x).sum(dim=-1),
            ),
            Misconception(
                "l1_norm",
                "you added up the absolute values (the L1 norm); this task uses the "
                "Euclidean norm √(Σ_k g_k²)",
                lambda loss_fn, x: _grad(loss_fn, x).abs().sum(dim=-1),
                "torch.linalg.vector_norm(grad, dim=-1), or grad.norm(dim=-1).",
            ),
            Misconception(
                "squared_norm",
                "you returned the squared norm Σ_k g_k²: take its square root",
                lambda loss_fn, x: (_grad(loss_fn, x) ** 2).sum(dim=-1),
            ),
            Misconception(
                "reversed",
                "your norms are in reverse order: entry i must belong to source position i "
                "(counted from the start of the sentence), not to the i-th position from the end",
                lambda loss_fn, x: _grad(loss_fn, x).norm(dim=-1).flip(0),
            ),
            Misconception(
                "norm_of_input",
                "those are the norms of the embeddings x_i themselves: the task asks "
                "for the norms of the gradient ∂L/∂x_i",
                lambda loss_fn, x: x.norm(dim=-1),
            ),
            Misconception(
                "normalised",
                "you divided by the sum of the norms: return the norms themselves",
                lambda loss_fn, x: (lambda n: n / n.sum())(_grad(loss_fn, x).norm(dim=-1)),
            ),
            Misconception(
                "normalised",
                "you divided by the largest norm: return the norms themselves",
                lambda loss_fn, x: (lambda n: n / n.max())(_grad(loss_fn, x).norm(dim=-1)),
            ),
            Misconception(
                "max_component",
                "you took the largest absolute component of ∂L/∂x_i (the max norm); "
                "this task uses the Euclidean norm, which adds up the squares of all components",
                lambda loss_fn, x: _grad(loss_fn, x).abs().amax(dim=-1),
            ),
            Misconception(
                "scaled_by_loss",
                "you multiplied the norms by the value of the loss: the task asks for "
                "the norms of the gradient alone",
                lambda loss_fn, x: _grad(loss_fn, x).norm(dim=-1) * loss_fn(x.detach()).abs(),
            ),
        ],
        properties=[_float32_norms, _negative_norm],
        # the output is made of gradients; nothing flows back through it
        check_grad=False,
        atol=1e-9,
        rtol=1e-9,
        # torch.func.grad's first call in a fresh process takes seconds on a loaded machine
        timeout_s=20.0,
        hint="x = embedded.detach().clone().requires_grad_(True); loss = loss_fn(x); grad, = "
        "torch.autograd.grad(loss, x) (N, e); return grad.norm(dim=-1).",
    )
)
