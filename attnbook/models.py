"""Small RNN encoder–decoder models for the toy English→French corpus, without and with attention.

Shapes (book notation): B sentences in a batch, N source positions (``<eos>`` included), T target
steps, d hidden size, V vocabulary size.

* :class:`Encoder` reads the source: states ``H`` (B, N, d) = h_1..h_N and the context vector
  (컨텍스트 벡터) ``c`` (B, d), the state at each sentence's true last token. It can also read in both
  directions (``bidirectional=True``), each h_i then being [forward h_i; backward h_i].
* :class:`Seq2Seq` is the plain model: the decoder starts from s_0 = c and, as in Cho et al. (2014),
  reads c again at every step; it sees nothing else of the source (the bottleneck, 병목).
* :class:`AttnSeq2Seq` adds Luong-style dot attention: at every step t the decoder state ``s_t`` scores
  every ``h_i`` (``e^t = H s_t``), the weights ``α^t = softmax(e^t)`` mix the states into
  ``a_t = Σ_i α^t_i h_i``, and ``s̃_t = tanh(W_c [a_t; s_t] + b_c)`` gives the logits
  ``W_y s̃_t + b_y``. The query is the *current* state ``s_t`` (Luong); Bahdanau's model uses ``s_{t-1}``.
  By default its encoder is bidirectional, as in Bahdanau et al. (2015), so that h_i also knows the
  words after position i (a French article agrees with the noun that follows it in English).

Training uses teacher forcing (교사 강요): the decoder reads the true previous word. :func:`train`,
:func:`evaluate_by_length` and :func:`alignment_agreement` train and measure; :func:`train_standard`
rebuilds the book's reference models deterministically in seconds.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from attnbook.attention import attention_value, dot_scores, softmax
from attnbook.data import (
    EOS,
    PAD,
    SOS,
    Pair,
    Splits,
    Vocab,
    generate_corpus,
    make_batch,
    make_splits,
    plan_batches,
    split_corpus,
)

__all__ = [
    "Encoder",
    "Seq2Seq",
    "AttnSeq2Seq",
    "BahdanauSeq2Seq",
    "count_parameters",
    "train",
    "validation_loss",
    "evaluate_by_length",
    "exact_matches",
    "BucketScore",
    "alignment_agreement",
    "translate",
    "source_mask",
    "reverse_padded",
    "BUCKETS",
    "STANDARD",
    "standard_data",
    "train_standard",
    "train_side_by_side",
    "train_in_background",
    "BackgroundTraining",
    "BACKGROUND_NICENESS",
    "position_bias",
    "OFFSET_SCALE",
]


def _vocab_size(vocab: Vocab | int) -> int:
    return vocab if isinstance(vocab, int) else len(vocab)


def _rnn(cell: str, emb: int, hidden: int) -> nn.Module:
    if cell == "gru":
        return nn.GRU(emb, hidden, batch_first=True)
    if cell == "rnn":
        return nn.RNN(emb, hidden, nonlinearity="tanh", batch_first=True)
    raise ValueError(f"cell must be 'gru' or 'rnn', got {cell!r}")


def source_mask(src_len: torch.Tensor, N: int) -> torch.Tensor:
    """(B,) lengths -> (B, N) bool, True at real source positions (``<eos>`` included)."""
    return torch.arange(N, device=src_len.device)[None, :] < src_len[:, None]


def reverse_padded(X: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of a right-padded batch within its own length; padding stays at the end.

    X: (B, N, ...), lengths: (B,) -> (B, N, ...). Applying it twice gives X back.
    """
    B, N = X.shape[:2]
    pos = torch.arange(N, device=X.device)[None, :]  # (1, N)
    idx = torch.where(pos < lengths[:, None], lengths[:, None] - 1 - pos, pos)  # (B, N)
    return X.gather(1, idx.view(B, N, *([1] * (X.dim() - 2))).expand_as(X))


class Encoder(nn.Module):
    """Embedding + one-layer RNN (GRU by default, ``cell="rnn"`` for a plain tanh RNN).

    ``forward(src (B, N) long, src_len (B,) long) -> (H (B, N, d), context (B, d))``.
    ``H[b, i]`` is h_i (zero at padding). ``context[b]`` is the state at position ``src_len[b] - 1``,
    the sentence's true last token (its ``<eos>``), not at the padding: the RNN reads left to right, so
    the padding after a sentence cannot change its states, and ``gather`` picks the right one.

    With ``bidirectional=True`` a second RNN reads each sentence right to left (we reverse every
    sentence within its length, run the RNN, and reverse back). Each direction has d/2 units and
    h_i = [forward h_i; backward h_i], so h_i also knows the words after position i. The context is then
    [forward state at the last token; backward state at the first token]: both have read everything.
    """

    def __init__(
        self, vocab: Vocab | int, emb: int, hidden: int, cell: str = "gru", bidirectional: bool = False
    ):
        super().__init__()
        if bidirectional and hidden % 2:
            raise ValueError(f"a bidirectional encoder needs an even hidden size, got {hidden}")
        self.embedding = nn.Embedding(_vocab_size(vocab), emb, padding_idx=PAD)
        self.hidden = hidden
        self.bidirectional = bidirectional
        self.rnn = _rnn(cell, emb, hidden // 2 if bidirectional else hidden)
        self.rnn_backward = _rnn(cell, emb, hidden // 2) if bidirectional else None

    def forward(self, src: torch.Tensor, src_len: torch.Tensor, embedded: torch.Tensor | None = None):
        """``embedded`` (B, N, emb), if given, replaces ``embedding(src)`` (to take gradients)."""
        X = self.embedding(src) if embedded is None else embedded  # (B, N, emb)
        H, _ = self.rnn(X)  # (B, N, d) or (B, N, d/2)
        last = (src_len - 1).view(-1, 1, 1).expand(-1, 1, H.shape[-1])  # (B, 1, ·)
        context = H.gather(1, last).squeeze(1)  # (B, d): the state at the true last token
        if self.bidirectional:
            H_back, _ = self.rnn_backward(reverse_padded(X, src_len))  # reads x_N .. x_1
            H_back = reverse_padded(H_back, src_len)  # (B, N, d/2), back in source order
            context = torch.cat([context, H_back[:, 0]], dim=-1)  # (B, d)
            H = torch.cat([H, H_back], dim=-1)  # (B, N, d)
        H = H * source_mask(src_len, src.shape[1])[..., None]  # zero the states at padding
        return H, context


class _Base(nn.Module):
    """Shared parts: encoder, target embedding, decoder RNN, the decoding loops."""

    input_feeding = False

    def __init__(
        self,
        src_vocab: Vocab | int,
        tgt_vocab: Vocab | int,
        emb: int,
        hidden: int,
        cell: str,
        extra_input: int = 0,
        bidirectional: bool = False,
    ):
        super().__init__()
        self.src_vocab = src_vocab if isinstance(src_vocab, Vocab) else None
        self.tgt_vocab = tgt_vocab if isinstance(tgt_vocab, Vocab) else None
        self.encoder = Encoder(src_vocab, emb, hidden, cell, bidirectional)
        self.tgt_embedding = nn.Embedding(_vocab_size(tgt_vocab), emb, padding_idx=PAD)
        self.decoder = _rnn(cell, emb + extra_input, hidden)
        self.hidden = hidden

    def _readout(self, S, H, mask, context, start=0):
        """S (B, t, d) decoder states -> logits (B, t, n_vocab), alpha (B, t, N) or None, s̃ (B, t, d) or None.

        ``start`` is the target position of the first of the t steps (0 = the step that reads <sos>)."""
        raise NotImplementedError

    def _decoder_input(self, Y, context, s_tilde_prev):
        """Y (B, t, emb) embedded previous words -> the decoder RNN's input (B, t, emb + extra)."""
        return Y

    def _prepare(self, H):
        """What a model computes once per source batch before decoding (Bahdanau: the keys W_k h_i)."""
        return None

    def _decode(self, Y, state, H, mask, context, s_tilde_prev=None, prepared=None, start=0):
        """Run the decoder over the embedded inputs Y (B, t, emb) from ``state`` (1, B, d); the first of
        these steps is target position ``start`` (0 for the step that reads <sos>).

        Returns logits (B, t, n_vocab), alpha (B, t, N) or None, and the new (state, s̃ of the last step).
        Without input feeding all t steps go through the RNN in one call; with it, one step at a time.
        """
        if not self.input_feeding:
            S, state = self.decoder(self._decoder_input(Y, context, None), state)  # S: (B, t, d)
            logits, alpha, s_tilde = self._readout(S, H, mask, context, start)
            return logits, alpha, (state, None if s_tilde is None else s_tilde[:, -1:])
        outs, alphas = [], []
        for k in range(Y.shape[1]):
            x = self._decoder_input(Y[:, k : k + 1], context, s_tilde_prev)  # (B, 1, emb + d)
            s, state = self.decoder(x, state)  # (B, 1, d)
            logits, alpha, s_tilde_prev = self._readout(s, H, mask, context, start + k)
            outs.append(logits)
            alphas.append(alpha)
        return torch.cat(outs, 1), torch.cat(alphas, 1), (state, s_tilde_prev)

    def _run(self, batch, embedded=None):
        H, context = self.encoder(batch.src, batch.src_len, embedded)  # (B, N, d), (B, d)
        mask = source_mask(batch.src_len, batch.src.shape[1])  # (B, N)
        logits, alpha, _ = self._decode(
            self.tgt_embedding(batch.tgt_in), context[None], H, mask, context, prepared=self._prepare(H)
        )
        return logits, alpha

    @torch.no_grad()
    def _greedy(self, src: torch.Tensor, src_len: torch.Tensor, max_len: int | None):
        B, N = src.shape
        max_len = int(src_len.max()) + 10 if max_len is None else max_len
        H, context = self.encoder(src, src_len)  # (B, N, d), (B, d)
        mask = source_mask(src_len, N)
        state, s_tilde = context[None], None  # s_0 = context vector: (1, B, d)
        prepared = self._prepare(H)
        y = torch.full((B,), SOS, dtype=torch.long)
        done = torch.zeros(B, dtype=torch.bool)
        out, alphas = [], []
        for step in range(max_len):
            logits, alpha, (state, s_tilde) = self._decode(
                self.tgt_embedding(y)[:, None], state, H, mask, context, s_tilde, prepared, start=step
            )  # (B, 1, n_vocab), (B, 1, N)
            y = logits[:, 0].argmax(-1).masked_fill(done, PAD)  # (B,)
            out.append(y)
            if alpha is not None:
                alphas.append(alpha[:, 0].masked_fill(done[:, None], 0.0))
            done = done | (y == EOS)
            if bool(done.all()):
                break
        ids = torch.stack(out, 1).tolist()  # (B, steps)
        seqs = [[i for i in row[: row.index(EOS)] if i != PAD] if EOS in row else row for row in ids]
        return seqs, (torch.stack(alphas, 1) if alphas else None)


class Seq2Seq(_Base):
    """Plain encoder–decoder: the decoder starts from s_0 = context vector c and sees nothing else of
    the source.

    With ``feed_context=True`` (the form of Cho et al. 2014) c is also appended to the decoder's input
    at every step: it learns faster, but c is still one fixed-size vector.

    ``forward(batch) -> logits (B, T, n_vocab)`` with teacher forcing (input ``batch.tgt_in``).
    ``greedy_decode(src (B, N), src_len (B,), max_len) -> list of B id lists`` (without ``<eos>``).
    """

    def __init__(
        self,
        src_vocab: Vocab | int,
        tgt_vocab: Vocab | int,
        emb: int = 64,
        hidden: int = 128,
        cell: str = "gru",
        feed_context: bool = True,
        bidirectional: bool = False,
    ):
        super().__init__(
            src_vocab, tgt_vocab, emb, hidden, cell, hidden if feed_context else 0, bidirectional
        )
        self.feed_context = feed_context
        self.out = nn.Linear(hidden, _vocab_size(tgt_vocab))

    def _decoder_input(self, Y, context, s_tilde_prev):
        if not self.feed_context:
            return Y
        return torch.cat([Y, context[:, None].expand(-1, Y.shape[1], -1)], dim=-1)  # (B, t, emb + d)

    def _readout(self, S, H, mask, context, start=0):
        return self.out(S), None, None

    def forward(self, batch, embedded: torch.Tensor | None = None) -> torch.Tensor:
        """logits (B, T, n_vocab); ``embedded`` (B, N, emb) replaces the source embeddings if given."""
        return self._run(batch, embedded)[0]

    def greedy_decode(self, src: torch.Tensor, src_len: torch.Tensor, max_len: int | None = None):
        """Pick the most likely word at each step; stop at ``<eos>`` or after ``max_len`` steps
        (default: longest source + 10)."""
        return self._greedy(src, src_len, max_len)[0]


#: the learned offset numbers of :class:`AttnSeq2Seq` are stored divided by this (a larger learning rate)
OFFSET_SCALE = 10.0


def position_bias(T: int, N: int, width: float, start: int = 0) -> torch.Tensor:
    """The position prior's term of the scores: ``-(i - t)^2 / (2 width^2)`` as a (T, N) tensor.

    Row k is target position ``t = start + k`` (0 = the step that reads <sos> and writes the first
    word), column i the source position (0 = the first word). Added to the scores before the softmax, it
    multiplies each step's weights by a bell curve centred on source position t, of width ``width``
    words, and renormalises them: the weights of a source word ``width`` positions away from t are
    multiplied by e^(-1/2) = 0.61, those of a word 2 ``width`` away by e^(-2) = 0.14.
    """
    if not width > 0:
        raise ValueError(f"width must be a positive number of words, got {width}")
    t = torch.arange(start, start + T, dtype=torch.float32)[:, None]  # (T, 1)
    i = torch.arange(N, dtype=torch.float32)[None, :]  # (1, N)
    return -((i - t) ** 2) / (2 * width**2)  # (T, N)


class AttnSeq2Seq(_Base):
    """Encoder–decoder with Luong dot attention, query = current decoder state s_t.

    For every step t: ``e^t = H s_t`` (B, T, N), masked at padding; ``α^t = softmax(e^t)`` (B, T, N);
    ``a_t = Σ_i α^t_i h_i`` (B, T, d); ``s̃_t = tanh(W_c [a_t; s_t] + b_c)`` (B, T, d);
    logits ``W_y s̃_t + b_y`` (B, T, n_vocab). The decoder starts from s_0 = c, like the plain model.

    With ``input_feeding=True`` (Luong et al. 2015) the decoder also reads s̃_{t-1} with y_{t-1}, so it
    knows what it attended to at the previous step; training then runs the decoder one step at a time.
    Without it all teacher-forced steps run in one call.

    With ``position_prior=width`` (a number of words, the book's ρ) the scores get a term that favours the
    source positions near the target position: ``e^t_i = s_t · h_i - (i - t)^2 / (2 ρ^2)`` (see
    :func:`position_bias`), a fixed, not learned, guess that word t translates source word t or one near
    it. It is Luong et al.'s local attention in a simple form (their local-m centres on t, their local-p
    weights by a Gaussian), and it fits only language pairs whose word order and length nearly agree.

    With ``offsets=K`` the scores get a *learned* term of the same kind: one number ``r_δ`` for each offset
    ``δ = i - t`` from ``-K`` to ``K`` (farther offsets share the end numbers), ``e^t_i = s_t · h_i +
    r_{clip(i - t, -K, K)}``: ``2K + 1`` parameters, trained with the rest, 0 at the start (see
    :meth:`offset_term`). Only their differences matter: the softmax ignores a number added to every score
    of a row. They are stored divided by ``offset_scale`` (default :data:`OFFSET_SCALE`), which gives them a
    learning rate that many times larger: Adam moves a parameter by about the learning rate per step (at
    most about three times as much with PyTorch's defaults), so within a few hundred steps a number stored
    as it is moves by a few units at most.
    """

    def __init__(
        self,
        src_vocab: Vocab | int,
        tgt_vocab: Vocab | int,
        emb: int = 64,
        hidden: int = 128,
        cell: str = "gru",
        input_feeding: bool = False,
        bidirectional: bool = True,
        position_prior: float | None = None,
        offsets: int | None = None,
        offset_scale: float | None = None,
    ):
        super().__init__(
            src_vocab, tgt_vocab, emb, hidden, cell, hidden if input_feeding else 0, bidirectional
        )
        if position_prior is not None:
            position_bias(1, 1, position_prior)  # checks the width
        if offsets is not None and (isinstance(offsets, bool) or not isinstance(offsets, int) or offsets < 0):
            raise ValueError(f"offsets must be a whole number of words, 0 or more, got {offsets!r}")
        self.input_feeding = input_feeding
        self.position_prior = position_prior
        self.offsets = offsets
        self.offset_scale = OFFSET_SCALE if offset_scale is None else offset_scale
        scale = self.offset_scale
        if isinstance(scale, bool) or not (isinstance(scale, (int, float)) and scale > 0):
            raise ValueError(f"offset_scale must be a positive number, got {offset_scale!r}")
        self.W_c = nn.Linear(2 * hidden, hidden)
        self.W_y = nn.Linear(hidden, _vocab_size(tgt_vocab))
        if offsets is not None:  # made last, and with zeros: the other weights start as without it
            self.offset_bias = nn.Parameter(torch.zeros(2 * offsets + 1))

    def offset_term(self, T: int, N: int, start: int = 0) -> torch.Tensor:
        """The learned term of the scores (``offsets=K``) as a (T, N) tensor: ``r_{clip(i - t, -K, K)}`` for
        target position ``t = start + k`` (row k) and source position ``i`` (column i), both from 0."""
        if self.offsets is None:
            raise ValueError("this model has no learned offset term: build it with offsets=K")
        t = torch.arange(start, start + T)[:, None]  # (T, 1)
        i = torch.arange(N)[None, :]  # (1, N)
        k = (i - t).clamp(-self.offsets, self.offsets) + self.offsets  # (T, N): indices into r
        return self.offset_scale * self.offset_bias[k]

    @property
    def offset_numbers(self) -> dict[int, float] | None:
        """The learned numbers ``{δ: r_δ}`` for the offsets ``δ = -K .. K`` (``-K`` and ``K`` stand for all
        offsets that far or farther), or None without them."""
        if self.offsets is None:
            return None
        r = (self.offset_scale * self.offset_bias).tolist()
        return {k - self.offsets: v for k, v in enumerate(r)}

    def _decoder_input(self, Y, context, s_tilde_prev):
        if not self.input_feeding:
            return Y
        if s_tilde_prev is None:  # first step: nothing attended yet
            s_tilde_prev = Y.new_zeros(Y.shape[0], 1, self.hidden)
        return torch.cat([Y, s_tilde_prev], dim=-1)  # (B, 1, emb + d)

    def scores(self, S: torch.Tensor, H: torch.Tensor, start: int = 0) -> torch.Tensor:
        """The scores e (B, t, N) of decoder states S (B, t, d) over H (B, N, d), before masking: s_t · h_i,
        plus the position prior's term if the model has one (``start``: the target position of S's first
        step)."""
        e = dot_scores(S, H)  # (B, t, N): e^t_i = s_t · h_i
        if self.position_prior is not None:
            e = e + position_bias(S.shape[1], H.shape[1], self.position_prior, start).to(e.dtype)
        if self.offsets is not None:
            e = e + self.offset_term(S.shape[1], H.shape[1], start).to(e.dtype)
        return e

    def _readout(self, S, H, mask, context, start=0):
        e = self.scores(S, H, start)  # (B, t, N)
        alpha = softmax(e, dim=-1, mask=mask[:, None, :])  # (B, t, N), 0 at padding
        a = attention_value(alpha, H)  # (B, t, d): a_t = Σ_i α^t_i h_i
        s_tilde = torch.tanh(self.W_c(torch.cat([a, S], dim=-1)))  # (B, t, d)
        return self.W_y(s_tilde), alpha, s_tilde

    def forward(self, batch, return_attention: bool = False, embedded: torch.Tensor | None = None):
        """logits (B, T, n_vocab), and α (B, T, N) if ``return_attention``."""
        logits, alpha = self._run(batch, embedded)
        return (logits, alpha) if return_attention else logits

    def greedy_decode(self, src: torch.Tensor, src_len: torch.Tensor, max_len: int | None = None):
        """``(ids, alphas)``: B id lists (without ``<eos>``) and every step's weights α (B, steps, N),
        zero after a sentence has produced its ``<eos>``."""
        return self._greedy(src, src_len, max_len)


class BahdanauSeq2Seq(_Base):
    """Encoder–decoder with Bahdanau's additive attention, query = previous decoder state s_{t-1}.

    The order of one step is the one of Bahdanau et al. (2015) and of the PyTorch seq2seq tutorial:
    the decoder looks at the source *before* its recurrent step, and feeds what it saw into that step.

    1. scores ``e^t_i = w · tanh(W_q s_{t-1} + W_k h_i)`` (B, N), masked at padding;
    2. weights ``α^t = softmax(e^t)`` (B, N);
    3. attention value ``a_t = Σ_i α^t_i h_i`` (B, d);
    4. recurrent step ``s_t = GRU([y_{t-1}; a_t], s_{t-1})`` (B, d): the GRU reads the previous word and
       the attention value;
    5. logits ``W_y s_t + b_y`` (B, n_vocab).

    The keys ``W_k h_i`` (B, N, d_a) do not depend on t and are computed once per batch. Because step t's
    query is the state of step t-1, the steps cannot be computed at once: training runs the decoder one
    step at a time. The decoder starts from s_0 = c, like the other models. ``attn_hidden`` is d_a
    (default d). The matrices have no biases, as in the formula.
    """

    def __init__(
        self,
        src_vocab: Vocab | int,
        tgt_vocab: Vocab | int,
        emb: int = 64,
        hidden: int = 128,
        cell: str = "gru",
        bidirectional: bool = True,
        attn_hidden: int | None = None,
    ):
        super().__init__(src_vocab, tgt_vocab, emb, hidden, cell, hidden, bidirectional)
        d_a = attn_hidden or hidden
        self.W_q = nn.Linear(hidden, d_a, bias=False)
        self.W_k = nn.Linear(hidden, d_a, bias=False)
        self.w = nn.Linear(d_a, 1, bias=False)
        self.W_y = nn.Linear(hidden, _vocab_size(tgt_vocab))

    def _prepare(self, H):
        return self.W_k(H)  # (B, N, d_a): the keys W_k h_i, the same at every step

    def attend(
        self, s_prev: torch.Tensor, H: torch.Tensor, mask: torch.Tensor, keys: torch.Tensor | None = None
    ):
        """Steps 1–3 for one decoder step: ``(a_t (B, d), alpha_t (B, N))`` from ``s_prev`` (B, d),
        ``H`` (B, N, d) and ``mask`` (B, N) bool; ``keys`` (B, N, d_a) = ``W_k(H)`` if already computed."""
        keys = self.W_k(H) if keys is None else keys
        e = self.w(torch.tanh(self.W_q(s_prev)[:, None, :] + keys)).squeeze(-1)  # (B, N)
        alpha = softmax(e, dim=-1, mask=mask)  # (B, N), 0 at padding
        a = attention_value(alpha[:, None, :], H)[:, 0]  # (B, d)
        return a, alpha

    def _decode(self, Y, state, H, mask, context, s_tilde_prev=None, prepared=None, start=0):
        keys = self._prepare(H) if prepared is None else prepared
        if isinstance(self.decoder, nn.GRU):
            return self._decode_gru(Y, state, H, mask, keys)
        outs, alphas = [], []
        for k in range(Y.shape[1]):
            a, alpha = self.attend(state[-1], H, mask, keys)  # query s_{t-1}: (B, d), (B, N)
            x = torch.cat([Y[:, k], a], dim=-1)[:, None]  # (B, 1, emb + d): [y_{t-1}; a_t]
            s, state = self.decoder(x, state)  # s: (B, 1, d), the new state s_t
            outs.append(self.W_y(s))  # (B, 1, n_vocab)
            alphas.append(alpha[:, None])
        return torch.cat(outs, 1), torch.cat(alphas, 1), (state, None)

    def _decode_gru(self, Y, state, H, mask, keys):
        """The same steps as :meth:`attend` + ``nn.GRU``, computed with less work per step.

        What does not depend on the step is computed once for all steps: the GRU's product with the
        previous words ``W_iy y_{t-1}`` (B, t, 3d), and the additive mask (0 or -inf). The two products
        with s_{t-1}, the GRU's ``W_hh s_{t-1}`` and the query ``W_q s_{t-1}``, are one matrix product;
        the GRU's gates are written out (the formula of :func:`attnbook.analysis.gru_cell`). Results
        equal the step-by-step form to float32 rounding; training takes about a quarter less time.
        """
        g, d = self.decoder, self.hidden
        n_emb = Y.shape[-1]
        W_iy, W_ia = g.weight_ih_l0[:, :n_emb], g.weight_ih_l0[:, n_emb:]  # (3d, emb), (3d, d)
        gates_y = F.linear(Y, W_iy, g.bias_ih_l0)  # (B, t, 3d): the words' part, every step at once
        W_s = torch.cat([g.weight_hh_l0, self.W_q.weight])  # (3d + d_a, d)
        b_s = torch.cat([g.bias_hh_l0, g.bias_hh_l0.new_zeros(self.W_q.out_features)])
        w = self.w.weight[0]  # (d_a,)
        neg = torch.zeros(mask.shape, dtype=H.dtype).masked_fill(~mask, float("-inf"))  # (B, N)
        s = state[-1]  # (B, d): s_{t-1}
        states, alphas = [], []
        # unbind/split, not indexing: their backward is one stack or cat, where indexing would add a
        # zero tensor of the full size per step
        for gates_yk in gates_y.unbind(1):  # (B, 3d) for step k
            gates_s, query = F.linear(s, W_s, b_s).split([3 * d, W_s.shape[0] - 3 * d], dim=1)
            e = torch.tanh(query[:, None, :] + keys) @ w + neg  # (B, N), -inf at padding
            alpha = torch.softmax(e, dim=-1)  # (B, N)
            a = torch.bmm(alpha[:, None, :], H).squeeze(1)  # (B, d): a_t
            x_rz, x_n = torch.addmm(gates_yk, a, W_ia.T).split([2 * d, d], dim=1)  # W_ih [y; a_t] + b_ih
            s_rz, s_n = gates_s.split([2 * d, d], dim=1)  # W_hh s_{t-1} + b_hh
            r, z = torch.sigmoid(x_rz + s_rz).chunk(2, dim=1)  # reset and update gates
            n = torch.tanh(x_n + r * s_n)  # candidate
            s = n + z * (s - n)  # s_t = (1 - z) n + z s_{t-1}
            states.append(s)
            alphas.append(alpha)
        S = torch.stack(states, 1)  # (B, t, d)
        return self.W_y(S), torch.stack(alphas, 1), (s[None], None)

    def forward(self, batch, return_attention: bool = False, embedded: torch.Tensor | None = None):
        """logits (B, T, n_vocab), and α (B, T, N) if ``return_attention``."""
        logits, alpha = self._run(batch, embedded)
        return (logits, alpha) if return_attention else logits

    def greedy_decode(self, src: torch.Tensor, src_len: torch.Tensor, max_len: int | None = None):
        """``(ids, alphas)`` as in :meth:`AttnSeq2Seq.greedy_decode`."""
        return self._greedy(src, src_len, max_len)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable numbers in ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# --------------------------------------------------------------------------------------------------
# Training and evaluation
# --------------------------------------------------------------------------------------------------


def _vocabs(model):
    if model.src_vocab is None or model.tgt_vocab is None:
        raise ValueError("the model was built from vocabulary sizes; build it from Vocab objects")
    return model.src_vocab, model.tgt_vocab


def _logits(model, batch):
    out = model(batch)
    return out[0] if isinstance(out, tuple) else out


def _lr_factor(schedule: str | None, step: int, total: int, warmup: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based, of ``total``) as a fraction of the peak."""
    if schedule is None:
        return 1.0
    if schedule != "cosine":
        raise ValueError(f"schedule must be None or 'cosine', got {schedule!r}")
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def validation_loss(model: _Base, pairs: Sequence[Pair], batch_size: int = 256) -> float:
    """Teacher-forced cross-entropy per target token (``<eos>`` included, padding ignored) on ``pairs``."""
    src_vocab, tgt_vocab = _vocabs(model)
    if not pairs:
        raise ValueError("validation_loss got no pairs to measure")
    model.eval()
    total, count = 0.0, 0
    ordered = sorted(pairs, key=lambda p: len(p.src))
    for k in range(0, len(ordered), batch_size):
        batch = make_batch(ordered[k : k + batch_size], src_vocab, tgt_vocab)
        logits = _logits(model, batch)
        total += float(
            F.cross_entropy(logits.flatten(0, 1), batch.tgt_out.flatten(), ignore_index=PAD, reduction="sum")
        )
        count += int((batch.tgt_out != PAD).sum())
    return total / count


def train(
    model: _Base,
    pairs: Sequence[Pair],
    epochs: int = 4,
    batch_size: int = 64,
    lr: float = 5e-3,
    clip: float = 1.0,
    seed: int = 0,
    progress: bool = True,
    *,
    sort_window: int | None = 20,
    max_tokens: int | None = None,
    schedule: str | None = None,
    warmup: int = 0,
    val_pairs: Sequence[Pair] | None = None,
    val_points: int = 1,
    callback: Callable[[int, int], None] | None = None,
) -> dict:
    """Train with Adam on cross-entropy (padding ignored), teacher forcing, gradient-norm clipping.

    Deterministic given ``seed`` (and the model's initial weights): batch order and torch's RNG are
    seeded. The defaults are the book's original recipe; the keyword-only options make training cheaper:

    * ``sort_window``: batches are cut from windows of this many batches sorted by source length (see
      :func:`attnbook.data.iterate_batches`); ``None`` sorts the whole set (buckets by length, the least
      padding);
    * ``max_tokens`` (with ``sort_window=None``): batches of at most this many source tokens instead of
      ``batch_size`` sentences, so many short sentences or a few long ones (see
      :func:`attnbook.data.plan_batches`);
    * ``schedule``: ``None`` keeps ``lr`` constant; ``"cosine"`` raises it linearly over the first
      ``warmup`` optimiser steps and then lowers it along a half cosine to 0 at the last step (large
      steps while far from a minimum, small ones to settle in it);
    * ``val_pairs``: if given, the teacher-forced loss per token on them (:func:`validation_loss`) is
      recorded ``val_points`` times per epoch, evenly spaced (the last at the end of the epoch), to see
      when more training stops helping;
    * ``callback``: if given, called as ``callback(step, total)`` after every optimiser step (how
      :func:`train_side_by_side` follows its workers).

    Returns ``{"loss": mean loss per epoch, "step_loss": loss per batch, "lr": the learning rate of each
    batch, "val_loss": the validation losses
    (empty without val_pairs), "val_at": when each was measured, in epochs (0.25 = a quarter of the first
    epoch), "seconds": wall time, "cpu_seconds": CPU time of this process}``. The CPU time is the fairer
    figure on a machine that other programs share.
    """
    from attnbook.progress import progress as _progress

    if val_points < 1:
        raise ValueError(f"val_points must be at least 1, got {val_points}")
    src_vocab, tgt_vocab = _vocabs(model)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    plans = [
        plan_batches(
            pairs, batch_size, shuffle=True, seed=seed + e, sort_window=sort_window, max_tokens=max_tokens
        )
        for e in range(epochs)
    ]
    total = sum(len(plan) for plan in plans)
    # the batches after which to validate: ceil(j * n / val_points) for j = 1 .. val_points of each epoch
    checkpoints = [{-(-j * len(plan) // val_points) for j in range(1, val_points + 1)} for plan in plans]
    steps = (
        (e, b, make_batch(chunk, src_vocab, tgt_vocab))
        for e in range(epochs)
        for b, chunk in enumerate(plans[e])
    )
    if progress:
        steps = _progress(steps, desc=f"training {type(model).__name__}", total=total)
    history = {
        "loss": [],
        "step_loss": [],
        "lr": [],
        "val_loss": [],
        "val_at": [],
        "seconds": 0.0,
        "cpu_seconds": 0.0,
    }
    start, cpu_start = time.perf_counter(), time.process_time()
    epoch_losses = [[] for _ in range(epochs)]
    model.train()
    for k, (epoch, b, batch) in enumerate(steps):
        history["lr"].append(lr * _lr_factor(schedule, k, total, warmup))
        for group in opt.param_groups:
            group["lr"] = history["lr"][-1]
        logits = _logits(model, batch)  # (B, T, n_vocab)
        loss = F.cross_entropy(logits.flatten(0, 1), batch.tgt_out.flatten(), ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        step_loss = loss.item()
        if callback is not None:
            callback(k + 1, total)
        history["step_loss"].append(step_loss)
        epoch_losses[epoch].append(step_loss)
        if val_pairs is not None and b + 1 in checkpoints[epoch]:
            history["val_loss"].append(validation_loss(model, val_pairs))
            history["val_at"].append(epoch + (b + 1) / len(plans[epoch]))
            model.train()
    model.eval()
    history["loss"] = [sum(v) / len(v) for v in epoch_losses]
    history["seconds"] = time.perf_counter() - start
    history["cpu_seconds"] = time.process_time() - cpu_start
    return history


def _decode_ids(model, src, src_len, max_len=None):
    out = model.greedy_decode(src, src_len, max_len)
    return out[0] if isinstance(out, tuple) else out


def translate(model: _Base, tokens: Sequence[str], max_len: int | None = None) -> list[str]:
    """Greedy translation of one tokenised English sentence, as French words."""
    src_vocab, tgt_vocab = _vocabs(model)
    ids = torch.tensor([src_vocab.encode(tokens)])
    model.eval()
    return tgt_vocab.decode(_decode_ids(model, ids, torch.tensor([ids.shape[1]]), max_len)[0])


@dataclass
class BucketScore:
    """Scores of the sentences whose source length (words, no ``<eos>``) is in ``lo..hi``."""

    lo: int
    hi: int
    n: int
    token_acc: float  # fraction of reference positions (words and <eos>) predicted exactly
    sentence_acc: float  # fraction of sentences translated exactly

    @property
    def label(self) -> str:
        return f"{self.lo}–{self.hi}"


def _greedy_outputs(model: _Base, pairs: Sequence[Pair], batch_size: int = 256) -> list[tuple[list, list]]:
    """For each pair, in order: ``(output ids + <eos>, reference ids + <eos>)`` of greedy decoding, in
    batches of similar source length (at most ``batch_size`` pairs, the longest output 5 steps longer than
    the batch's longest reference)."""
    src_vocab, tgt_vocab = _vocabs(model)
    model.eval()
    order = sorted(range(len(pairs)), key=lambda k: len(pairs[k].src))
    results: list = [None] * len(pairs)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = make_batch([pairs[k] for k in chunk], src_vocab, tgt_vocab)
        hyps = _decode_ids(model, batch.src, batch.src_len, max_len=batch.tgt_out.shape[1] + 5)
        for k, hyp in zip(chunk, hyps):
            results[k] = (hyp + [EOS], tgt_vocab.encode(pairs[k].tgt))  # words + <eos>
    return results


def exact_matches(model: _Base, pairs: Sequence[Pair], batch_size: int = 256) -> list[bool]:
    """For each pair, in order: does greedy decoding translate it exactly? The test behind
    :func:`evaluate_by_length`'s sentence accuracy, with the same batches, so the two always agree."""
    return [out == ref for out, ref in _greedy_outputs(model, pairs, batch_size)]


def evaluate_by_length(
    model: _Base, pairs: Sequence[Pair], buckets: Sequence[tuple[int, int]], batch_size: int = 256
) -> list[BucketScore]:
    """Greedy-decode ``pairs`` and score them per source-length bucket ``(lo, hi)`` (inclusive).

    Token accuracy compares the output with the reference position by position over the reference's
    words and its final ``<eos>`` (a missing word counts as wrong); sentence accuracy needs the whole
    output to equal the reference (:func:`exact_matches`). Pairs outside every bucket are ignored; empty
    buckets score ``nan``.
    """
    stats = [[0, 0, 0, 0] for _ in buckets]  # sentences, exact, tokens, correct tokens
    for p, (out, ref) in zip(pairs, _greedy_outputs(model, pairs, batch_size)):
        correct = sum(int(j < len(out) and out[j] == r) for j, r in enumerate(ref))
        for b, (lo, hi) in enumerate(buckets):
            if lo <= len(p.src) <= hi:
                s = stats[b]
                s[0] += 1
                s[1] += int(out == ref)
                s[2] += len(ref)
                s[3] += correct
    nan = float("nan")
    return [
        BucketScore(lo, hi, n, c / t if t else nan, e / n if n else nan)
        for (lo, hi), (n, e, t, c) in zip(buckets, stats)
    ]


@torch.no_grad()
def alignment_agreement(model: AttnSeq2Seq, pairs: Sequence[Pair], batch_size: int = 256) -> float:
    """Mean attention weight on the truly aligned source words, over all target words.

    Under teacher forcing, for every target word t of every pair: ``Σ_i α^t_i · align[t, i]``, the
    share of step t's attention that falls on the source word(s) it translates; 1 means attention is
    exactly on the alignment, ``1/N`` is what uniform attention would score. The ``<eos>`` step is left
    out.
    """
    src_vocab, tgt_vocab = _vocabs(model)
    if not pairs:
        raise ValueError("validation_loss got no pairs to measure")
    model.eval()
    total, count = 0.0, 0
    for k in range(0, len(pairs), batch_size):
        batch = make_batch(pairs[k : k + batch_size], src_vocab, tgt_vocab)
        _, alpha = model(batch, return_attention=True)  # (B, T, N)
        words = torch.arange(batch.tgt_out.shape[1])[None, :] < (batch.tgt_len - 1)[:, None]  # (B, T)
        mass = (alpha * batch.align).sum(-1)  # (B, T)
        total += float(mass[words].sum())
        count += int(words.sum())
    return total / count


# --------------------------------------------------------------------------------------------------
# The book's reference setup
# --------------------------------------------------------------------------------------------------

STANDARD = dict(
    n_train=6000, n_val=500, n_test=1500, data_seed=0, emb=64, hidden=128, epochs=4, batch_size=64, lr=5e-3
)
"""Corpus sizes and hyper-parameters of the book's reference models (see :func:`train_standard`)."""

BUCKETS = [(3, 8), (9, 15), (16, 22), (23, 29), (30, 60)]
"""Source-length buckets (words) used to report accuracy by length."""


#: the corpora generated in this process (or handed to it by the process that started it, see
#: :func:`train_side_by_side`), by ``("splits", seed)`` and ``("longer", seed, n)``; a few at most
_CORPORA: dict = {}
#: held while _CORPORA is read or changed: train_in_background's thread reads it beside the notebook
_CORPORA_LOCK = threading.Lock()


def _remembered(key: tuple, make: Callable[[], Any]) -> Any:
    with _CORPORA_LOCK:
        if key not in _CORPORA:
            if len(_CORPORA) >= 4:
                _CORPORA.pop(next(iter(_CORPORA)))  # the oldest
            _CORPORA[key] = make()
        return _CORPORA[key]


def _standard_splits(seed: int) -> Splits:
    return _remembered(
        ("splits", seed),
        lambda: make_splits(STANDARD["n_train"], STANDARD["n_val"], STANDARD["n_test"], seed=seed),
    )


def _longer_corpus(seed: int, n: int) -> tuple[Pair, ...]:
    """The reference corpus followed by ``n`` more pairs of the same generator: new sources, in none of the
    reference splits (the generator skips a source it has drawn before). The generator's first pairs do not
    depend on how many it is asked for, so the reference corpus is this one's beginning."""
    total = STANDARD["n_train"] + STANDARD["n_val"] + STANDARD["n_test"] + n
    return _remembered(("longer", seed, n), lambda: tuple(generate_corpus(total, seed=seed)))


def standard_data(seed: int | None = None, n_train: int | None = None) -> tuple[Splits, Vocab, Vocab]:
    """The reference splits and the vocabularies built from their training part.

    The corpus is generated once per process and seed (about half a second) and then reused: a
    chapter that trains three models generates it once. Every call returns new lists (of the same
    immutable pairs) and new vocabularies, so changing one call's lists does not change the next's.

    ``n_train`` larger than the reference 6 000 adds training pairs drawn after the reference corpus from
    the same generator (new sentences, none of them in the validation or test set); the validation and
    test sets and the vocabularies stay the reference ones.
    """
    seed = STANDARD["data_seed"] if seed is None else seed
    n_ref, n_val, n_test = STANDARD["n_train"], STANDARD["n_val"], STANDARD["n_test"]
    if n_train is not None and n_train < n_ref:
        raise ValueError(f"n_train must be at least {n_ref} (the reference set), got {n_train}")
    more: tuple[Pair, ...] = ()
    if n_train is None or n_train == n_ref:
        cached = _standard_splits(seed)
    else:  # one run of the generator gives the reference splits and the added pairs
        corpus = _longer_corpus(seed, n_train - n_ref)
        cached = split_corpus(corpus, n_ref, n_val, n_test)
        more = corpus[n_ref + n_val + n_test :]
    splits = Splits(list(cached.train), list(cached.val), list(cached.test))
    src_vocab, tgt_vocab = Vocab.build(p.src for p in splits.train), Vocab.build(p.tgt for p in splits.train)
    if more:
        unknown = {w for p in more for w in p.src if w not in src_vocab.stoi}
        unknown |= {w for p in more for w in p.tgt if w not in tgt_vocab.stoi}
        if unknown:  # pragma: no cover - the lexicon is small: 6 000 pairs hold every word
            raise RuntimeError(
                f"the added pairs use words outside the reference vocabulary: {sorted(unknown)}"
            )
        splits.train.extend(more)
    return splits, src_vocab, tgt_vocab


def train_standard(
    kind: str = "attention",
    *,
    hidden: int | None = None,
    epochs: int | None = None,
    seed: int = 0,
    progress: bool = True,
    batch_size: int | None = None,
    lr: float | None = None,
    n_train: int | None = None,
    sort_window: int | None = 20,
    max_tokens: int | None = None,
    schedule: str | None = None,
    warmup: int = 0,
    validate: bool = False,
    val_points: int = 1,
    callback: Callable[[int, int], None] | None = None,
    **model_kwargs,
):
    """Build and train a reference model on the reference data: ``kind`` is ``"plain"``, ``"attention"``
    (Luong) or ``"bahdanau"``.

    ``hidden``, ``epochs``, ``batch_size`` and ``lr`` default to :data:`STANDARD`; ``model_kwargs`` go to the
    model class (for example ``bidirectional=False`` or ``cell="rnn"``). ``n_train`` adds training pairs
    from the same generator (see :func:`standard_data`). ``sort_window``, ``max_tokens``, ``schedule`` and
    ``warmup`` go to :func:`train` (their defaults are the original recipe); ``validate=True`` records the
    validation loss ``val_points`` times per epoch. Deterministic given ``seed``: the same call gives the
    same weights on the same machine, so a chapter retrains instead of loading a file: about 16 s (plain)
    or 20 s (attention) with the original recipe and ``torch.set_num_threads(1)``. Use one thread: these
    small matrices gain little from a second one, and two threads slow down several-fold when another
    process (a second notebook under ``pytest -n 2``) shares the two cores. Returns
    ``(model, history, splits)``.
    """
    splits, src_vocab, tgt_vocab = standard_data(n_train=n_train)
    model = _standard_model(kind, src_vocab, tgt_vocab, hidden, seed, model_kwargs)
    history = train(
        model,
        splits.train,
        epochs=epochs or STANDARD["epochs"],
        batch_size=batch_size or STANDARD["batch_size"],
        lr=lr or STANDARD["lr"],
        seed=seed,
        progress=progress,
        sort_window=sort_window,
        max_tokens=max_tokens,
        schedule=schedule,
        warmup=warmup,
        val_pairs=splits.val if validate else None,
        val_points=val_points,
        callback=callback,
    )
    return model, history, splits


_KINDS = {"plain": Seq2Seq, "attention": AttnSeq2Seq, "bahdanau": BahdanauSeq2Seq}


def _standard_model(kind, src_vocab, tgt_vocab, hidden, seed, model_kwargs):
    """A reference model of ``kind`` with the initial weights that ``seed`` gives."""
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {sorted(_KINDS)}, got {kind!r}")
    torch.manual_seed(seed)
    return _KINDS[kind](
        src_vocab, tgt_vocab, emb=STANDARD["emb"], hidden=hidden or STANDARD["hidden"], **model_kwargs
    )


def _side_worker() -> None:
    """One worker of :func:`train_side_by_side`, run as ``python -c``: reads a pickled job from stdin, then the
    corpora the caller generated (so that each worker does not generate them again), trains the job, writes
    ``step k total`` lines to stdout as it goes, and the model's weights and history to the file the job
    names. A failure leaves a trace on stderr and exit code 1."""
    import pickle
    import sys

    torch.set_num_threads(1)
    request = pickle.load(sys.stdin.buffer)
    _CORPORA.update(pickle.load(sys.stdin.buffer))  # generated once, by the process that started this one
    out = sys.stdout
    last = [0.0]

    def report(step, total):  # at most about ten lines a second
        now = time.perf_counter()
        if step == total or now - last[0] > 0.1:
            last[0] = now
            out.write(f"step {step} {total}\n")
            out.flush()

    model, history, _ = _train_here(request["job"], progress=False, callback=report)
    torch.save({"model": model, "history": history}, request["path"])
    out.write("done\n")
    out.flush()


def _train_here(job: dict, progress: bool, callback: Callable[[int, int], None] | None = None):
    """One job of :func:`train_side_by_side`, in this process."""
    job = dict(job)
    kind = job.pop("kind")
    if kind == "transformer":
        from attnbook.transformer import train_transformer

        return train_transformer(progress=progress, callback=callback, **job)
    return train_standard(kind, progress=progress, callback=callback, **job)


class _NoWorkers(Exception):
    """No worker process could be started (raised instead of training here, for
    :func:`train_in_background`, which then trains in the caller's thread)."""


def _check_jobs(jobs: tuple, processes: int | None, name: str) -> int:
    """Checks the jobs of :func:`train_side_by_side` or :func:`train_in_background`; returns how many
    processes to run at once."""
    if not jobs:
        raise ValueError(f"{name} needs at least one job (a dict of train_standard's arguments)")
    for k, job in enumerate(jobs):
        if not isinstance(job, dict) or "kind" not in job:
            raise ValueError(
                f"job {k} must be a dict of train_standard's arguments with a 'kind', got {job!r}"
            )
        if "progress" in job or "callback" in job:
            raise ValueError(f"job {k}: progress and callback are {name}'s, not a job's")
        if job["kind"] not in {*_KINDS, "transformer"}:
            raise ValueError(
                f"job {k}: kind must be one of {sorted({*_KINDS, 'transformer'})}, got {job['kind']!r}"
            )
    processes = len(jobs) if processes is None else processes
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ValueError(f"processes must be a whole number, at least 1, got {processes!r}")
    return processes


def train_side_by_side(
    *jobs: dict,
    progress: bool = True,
    processes: int | None = None,
    _fallback: bool = True,
    _nice: int = 0,
) -> list[tuple]:
    """Train several reference models at once, each in a process of its own, and return what
    :func:`train_standard` would return for each: a list of ``(model, history, splits)`` in the order of
    ``jobs``.

    Each job is a dict of :func:`train_standard`'s arguments, ``kind`` included, for example
    ``dict(kind="plain", epochs=1)``; with ``kind="transformer"`` it holds the arguments of
    :func:`attnbook.transformer.train_transformer`. Independent trainings share nothing, so on a machine
    with two cores two of them take about the time of one. Every worker is a new Python process that runs
    the same function with one thread, so each model gets exactly the weights that the function gives in
    this process (same machine, one thread), and its history the CPU time of its own process.
    ``processes`` (default: one per job) bounds how many run at once; ``processes=1`` trains them one
    after another in this process, and so does a machine where no worker process can be started (it
    says so on stderr). A failing job raises ``RuntimeError`` with the worker's trace.
    """
    import os
    import pickle
    import queue as queue_module
    import subprocess
    import sys
    import tempfile

    processes = _check_jobs(jobs, processes, "train_side_by_side")
    if processes == 1 and _fallback:  # (train_in_background's thread never trains in its own process)
        return [_train_here(job, progress) for job in jobs]

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # the same attnbook as this process
    start = "from attnbook.models import _side_worker; _side_worker()"
    if _nice:  # a lower priority from the first line on, importing torch included (where the system has it)
        start = f"import os; hasattr(os, 'nice') and os.nice({int(_nice)}); {start}"
    command = [sys.executable, "-c", start]
    lines: queue_module.Queue = queue_module.Queue()

    def read(index, stream):  # one thread per worker: its stdout lines, then None at the end
        for line in stream:
            lines.put((index, line))
        lines.put((index, None))

    waiting = list(range(len(jobs)))
    running: dict[int, subprocess.Popen] = {}
    results: dict[int, tuple] = {}
    steps = [[0, 0] for _ in jobs]
    made: list = []
    unfed: list = []  # workers started that still wait for the corpora
    corpora = b""
    bar = None
    if progress:
        from attnbook.progress import progress as _progress

        bar = _progress(None, desc=f"training {len(jobs)} models side by side", total=None)
    with tempfile.TemporaryDirectory(prefix="attnbook-") as folder:
        try:
            while waiting or running:
                while waiting and len(running) < processes:
                    index = waiting.pop(0)
                    log = open(os.path.join(folder, f"job{index}.err"), "w+b")  # noqa: SIM115
                    try:  # stderr to a file: a full pipe would stop the worker
                        worker = subprocess.Popen(
                            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env
                        )
                    except OSError as error:
                        if running or results:
                            raise
                        if _fallback is False:
                            raise _NoWorkers(str(error)) from error
                        print(  # nothing started yet: train here instead, one after another
                            f"could not start a worker process ({error}); training the {len(jobs)} models "
                            "one after another in this process",
                            file=sys.stderr,
                        )
                        if bar is not None:
                            bar.close()
                            bar = None
                        return [_train_here(job, progress) for job in jobs]
                    finally:
                        log.close()
                    path = os.path.join(folder, f"job{index}.pt")
                    try:
                        worker.stdin.write(pickle.dumps({"job": jobs[index], "path": path}))
                        worker.stdin.flush()
                    except BrokenPipeError:  # it stopped at once: its exit code and stderr say why
                        pass
                    threading.Thread(target=read, args=(index, worker.stdout), daemon=True).start()
                    running[index] = worker
                    unfed.append(worker)
                if not made:  # the corpora, generated here once while the workers start (importing torch)
                    made = [standard_data(n_train=n) for n in {job.get("n_train") for job in jobs}]
                    with _CORPORA_LOCK:
                        corpora = pickle.dumps(dict(_CORPORA))
                for worker in unfed:  # ... and handed to them
                    try:
                        worker.stdin.write(corpora)
                        worker.stdin.close()
                    except BrokenPipeError:
                        pass
                unfed.clear()
                index, line = lines.get()
                if line is not None:
                    fields = line.split()
                    if fields[:1] == [b"step"] and len(fields) == 3:
                        steps[index] = [int(fields[1]), int(fields[2])]
                    if bar is not None:
                        if bar.total is None and all(total for _, total in steps):
                            bar.total = sum(total for _, total in steps)
                        bar.update(sum(step for step, _ in steps) - bar.n)
                    continue
                worker = running.pop(index)  # its stdout is closed: it has finished
                if worker.wait() != 0:
                    with open(os.path.join(folder, f"job{index}.err"), "rb") as log:
                        trace = log.read().decode(errors="replace")
                    raise RuntimeError(
                        f"training job {index} ({jobs[index]['kind']}) failed (exit code {worker.returncode}):"
                        f"\n{trace.strip() or 'no message: out of memory, or killed?'}"
                    )
                # our own worker's file, in our own folder: a whole model, so not weights only
                saved = torch.load(os.path.join(folder, f"job{index}.pt"), weights_only=False)
                splits = standard_data(n_train=jobs[index].get("n_train"))[0]
                results[index] = (saved["model"].eval(), saved["history"], splits)
        finally:
            if bar is not None:
                bar.close()
            for worker in running.values():
                worker.kill()
                worker.wait()
    return [results[k] for k in range(len(jobs))]


#: how much lower the priority of train_in_background's workers is (Unix ``nice``): they take the processor
#: time that the notebook and its other trainings leave free, and hardly slow them down
BACKGROUND_NICENESS = 10


class BackgroundTraining:
    """Reference models being trained by :func:`train_in_background`. ``done()`` says whether they are
    ready; ``result()`` waits for them and returns what :func:`train_side_by_side` returns for the same
    jobs (the same weights), or raises its error."""

    def __init__(self, jobs: tuple, processes: int):
        self._jobs = jobs
        self._outcome: tuple | None = None  # ("ok", results) or ("error", exception)
        self._thread = threading.Thread(target=self._run, args=(processes,), daemon=True)
        self._thread.start()

    def _run(self, processes: int) -> None:
        try:
            results = train_side_by_side(
                *self._jobs, progress=False, processes=processes, _fallback=False, _nice=BACKGROUND_NICENESS
            )
            self._outcome = ("ok", results)
        except BaseException as error:  # handed to result(), in the caller's thread
            self._outcome = ("error", error)

    def done(self) -> bool:
        """True once the models are trained (or the training failed): ``result()`` will not wait."""
        return not self._thread.is_alive()

    def result(self) -> list[tuple]:
        """Wait for the models; returns a list of ``(model, history, splits)`` in the order of the jobs."""
        self._thread.join()
        kind, value = self._outcome
        if kind == "error" and isinstance(value, _NoWorkers):
            import sys

            # trained here, in the caller's thread, not beside it: two threads would share torch's
            # random number generator, and the models would depend on their timing
            print(
                f"could not start a worker process ({value}); training "
                + ("the model" if len(self._jobs) == 1 else f"the {len(self._jobs)} models")
                + " here, now",
                file=sys.stderr,
            )
            self._outcome = kind, value = "ok", [_train_here(job, True) for job in self._jobs]
        if kind == "error":
            raise value
        return list(value)


def train_in_background(*jobs: dict, processes: int | None = None) -> BackgroundTraining:
    """Start training reference models and return at once: the jobs are those of
    :func:`train_side_by_side`, each trained in a Python process of its own, while this one goes on; a
    notebook can read on while a spare core trains, and collect the models with ``.result()``. The
    workers run at a lower priority (:data:`BACKGROUND_NICENESS`, where the system has one), so started
    before other work they use only the processor time that this work leaves free. The
    models are exactly those that :func:`train_side_by_side` (and :func:`train_standard`) give. Bad jobs
    raise ``ValueError`` here, at once; a failing job raises ``RuntimeError`` from ``.result()``. Where
    no worker process can be started, ``.result()`` trains the models itself, one after another."""
    processes = _check_jobs(jobs, processes, "train_in_background")
    return BackgroundTraining(tuple(dict(job) for job in jobs), processes)
