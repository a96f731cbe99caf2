"""A plain seq2seq model whose context vector has a size of its own, for the bottleneck experiment.

In :class:`attnbook.models.Seq2Seq` the context vector is the encoder's last state, so its size is the
hidden size d, and changing d also changes the encoder and the decoder. :class:`BottleneckSeq2Seq` keeps
both at width d and lets only k = ``context_size`` numbers of the last state through:

    c = P h_N,   P = [I_k 0]   (k numbers)     the only thing the decoder learns of the source

The decoder starts from, and reads at every step, c padded back to d numbers with zeros (constant zeros
carry no information). A sweep over k therefore changes the size of c and nothing else; the encoder
learns to put what matters into the k numbers that pass. With k = d the model is the plain model.

:func:`relative_drop` says how much a training loss still fell over its last epochs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from attnbook.data import Vocab
from attnbook.models import Encoder, Seq2Seq

__all__ = ["SqueezedEncoder", "BottleneckSeq2Seq", "relative_drop"]


class SqueezedEncoder(nn.Module):
    """An :class:`~attnbook.models.Encoder` whose context vector keeps only its first k numbers.

    ``forward(src (B, N), src_len (B,)) -> (H (B, N, d), c (B, d))``, where ``c`` is the encoder's last
    state h_N with every number after the first ``context_size`` set to 0: the decoder of
    :class:`~attnbook.models.Seq2Seq` gets k numbers about the source, in a vector of its usual width d.
    ``H`` is left as it is (the plain decoder never reads it).
    """

    def __init__(self, encoder: Encoder, context_size: int):
        super().__init__()
        if not 1 <= context_size <= encoder.hidden:
            raise ValueError(f"context_size must be between 1 and {encoder.hidden}, got {context_size}")
        self.inner = encoder
        keep = torch.zeros(encoder.hidden)
        keep[:context_size] = 1.0
        self.register_buffer("keep", keep)  # (d,): 1 for the k numbers that pass, 0 for the others

    @property
    def embedding(self) -> nn.Embedding:
        return self.inner.embedding

    @property
    def hidden(self) -> int:
        return self.inner.hidden

    def forward(self, src: torch.Tensor, src_len: torch.Tensor, embedded: torch.Tensor | None = None):
        H, last = self.inner(src, src_len, embedded)  # (B, N, d), (B, d): h_N at the true last token
        return H, last * self.keep  # (B, N, d), (B, d) with only k numbers non-zero


class BottleneckSeq2Seq(Seq2Seq):
    """The plain model (:class:`~attnbook.models.Seq2Seq`) whose context vector carries ``context_size``
    = k numbers; encoder and decoder keep width ``hidden`` whatever k is. With k = ``hidden`` it is the
    plain model itself, weight for weight."""

    def __init__(
        self,
        src_vocab: Vocab | int,
        tgt_vocab: Vocab | int,
        context_size: int,
        emb: int = 64,
        hidden: int = 128,
        cell: str = "gru",
    ):
        super().__init__(src_vocab, tgt_vocab, emb=emb, hidden=hidden, cell=cell, feed_context=True)
        self.context_size = context_size
        self.encoder = SqueezedEncoder(self.encoder, context_size)


def relative_drop(losses: Sequence[float], last: int = 2) -> float:
    """How much the loss fell over the last ``last`` epochs, as a fraction of where it was:
    ``(losses[-1 - last] - losses[-1]) / losses[-1 - last]``. Small means the loss has levelled off."""
    if len(losses) <= last:
        raise ValueError(f"need more than {last} epochs, got {len(losses)}")
    before = losses[-1 - last]
    return (before - losses[-1]) / before
