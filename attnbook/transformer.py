"""The encoder–decoder Transformer (트랜스포머), assembled from the book's own pieces.

Shapes (book notation): B sentences, N source positions (``<eos>`` included), T target steps,
``d_model`` features per position, ``h`` heads, ``d_ff`` hidden units of the feed-forward layer,
``n_vocab`` the size of the target vocabulary (never V, which is the values).

* :class:`FeedForward`: the position-wise feed-forward layer ``W_2 relu(W_1 x + b_1) + b_2``, the same
  two-layer network applied to every position on its own.
* :class:`EncoderLayer`: self-attention (:class:`attnbook.multihead.MultiHeadAttention`) and a
  feed-forward layer, each inside a residual connection with layer normalisation.
* :class:`DecoderLayer`: causal self-attention (a position sees itself and the positions before it), then
  cross-attention (인코더-디코더 어텐션: queries from the decoder, keys = values = the encoder's output),
  then a feed-forward layer; each inside a residual connection with layer normalisation.
* :class:`Transformer`: embeddings scaled by ``√d_model`` plus sinusoidal positions, a stack of encoder
  layers and a stack of decoder layers, and a linear read-out. It has the interface of the RNN models of
  :mod:`attnbook.models` (``forward(batch)``, ``greedy_decode``, ``src_vocab``, ``tgt_vocab``), so
  :func:`attnbook.models.train` and :func:`attnbook.models.evaluate_by_length` work with it unchanged.
* :func:`encoder_layer_from_torch`, :func:`decoder_layer_from_torch` copy the weights of PyTorch's
  ``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer`` (``batch_first=True``, ReLU), so that the
  two compute the same outputs.
* :func:`train_transformer` builds and trains the book's reference Transformer on the reference data.

``norm_first=False`` (the default, as in Vaswani et al. and PyTorch) is the post-norm block
``x = LayerNorm(x + sublayer(x))``; ``norm_first=True`` is the pre-norm block
``x = x + sublayer(LayerNorm(x))``, which then needs one more LayerNorm after the last layer.
No dropout: the models are small and trained for a few epochs, and the book's runs stay deterministic.

Masks follow the book: boolean, ``True`` = may attend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from attnbook.attention import causal_mask
from attnbook.data import EOS, PAD, SOS, Vocab
from attnbook.multihead import MultiHeadAttention, load_from_torch, sinusoidal_positions

__all__ = [
    "FeedForward",
    "EncoderLayer",
    "DecoderLayer",
    "Transformer",
    "encoder_layer_from_torch",
    "decoder_layer_from_torch",
    "TRANSFORMER",
    "train_transformer",
]


class FeedForward(nn.Module):
    """Position-wise feed-forward layer: ``(…, d_model) -> (…, d_model)``, ``W_2 relu(W_1 x + b_1) + b_2``.

    ``W_1``: ``(d_ff, d_model)``, ``W_2``: ``(d_model, d_ff)`` (PyTorch's ``(out, in)`` layout). Every
    position goes through the same network on its own: nothing flows between positions here.
    """

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.W_1 = nn.Linear(d_model, d_ff)
        self.W_2 = nn.Linear(d_ff, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.W_2(torch.relu(self.W_1(x)))


class EncoderLayer(nn.Module):
    """Self-attention + feed-forward, each in a residual block with layer normalisation.

    ``forward(x (B, N, d_model), src_mask (B, N) bool) -> (x (B, N, d_model), weights (B, h, N, N))``.
    """

    def __init__(self, d_model: int, h: int, d_ff: int, norm_first: bool = False):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, h)
        self.ff = FeedForward(d_model, d_ff)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, src_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.norm_first:
            z = self.norm1(x)
            a, weights = self.self_attn(z, z, z, key_padding_mask=src_mask)
            x = x + a
            x = x + self.ff(self.norm2(x))
        else:
            a, weights = self.self_attn(x, x, x, key_padding_mask=src_mask)
            x = self.norm1(x + a)
            x = self.norm2(x + self.ff(x))
        return x, weights


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention to the encoder, feed-forward; each a residual block.

    ``forward(y (B, T, d_model), memory (B, N, d_model), src_mask (B, N) bool)``
    ``-> (y (B, T, d_model), self_weights (B, h, T, T), cross_weights (B, h, T, N))``.
    In the cross-attention the queries come from the decoder (``y``), keys and values from ``memory``.
    """

    def __init__(self, d_model: int, h: int, d_ff: int, norm_first: bool = False):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, h)
        self.cross_attn = MultiHeadAttention(d_model, h)
        self.ff = FeedForward(d_model, d_ff)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(
        self, y: Tensor, memory: Tensor, src_mask: Tensor | None = None, cross_weights: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``cross_weights`` (B, h, T, N), if given, replaces the cross-attention weights (interventions)."""
        causal = causal_mask(y.shape[1]).to(y.device)  # (T, T): step t sees steps 0..t
        z = self.norm1(y) if self.norm_first else y
        a, self_w = self.self_attn(z, z, z, attn_mask=causal)
        y = y + a if self.norm_first else self.norm1(y + a)
        z = self.norm2(y) if self.norm_first else y
        a, cross_w = self._cross(z, memory, src_mask, cross_weights)
        y = y + a if self.norm_first else self.norm2(y + a)
        z = self.norm3(y) if self.norm_first else y
        y = y + self.ff(z) if self.norm_first else self.norm3(y + self.ff(z))
        return y, self_w, cross_w

    def step(
        self, y_t: Tensor, memory: Tensor, src_mask: Tensor | None, cache: list
    ) -> tuple[Tensor, Tensor]:
        """One new position at inference: ``y_t (B, 1, d_model)`` -> ``(y_t (B, 1, d_model), cross (B, h, 1, N))``.

        ``cache`` holds this layer's self-attention inputs of the earlier steps; the new one is appended.
        Step t's self-attention sees steps ``0..t``, exactly what the causal mask allows under teacher
        forcing, so the result equals position t of :meth:`forward`.
        """
        z = self.norm1(y_t) if self.norm_first else y_t
        cache.append(z)
        past = torch.cat(cache, dim=1)  # (B, t + 1, d_model): keys and values of the self-attention
        a, _ = self.self_attn(z, past, past)
        y_t = y_t + a if self.norm_first else self.norm1(y_t + a)
        z = self.norm2(y_t) if self.norm_first else y_t
        a, cross_w = self.cross_attn(z, memory, memory, key_padding_mask=src_mask)
        y_t = y_t + a if self.norm_first else self.norm2(y_t + a)
        z = self.norm3(y_t) if self.norm_first else y_t
        y_t = y_t + self.ff(z) if self.norm_first else self.norm3(y_t + self.ff(z))
        return y_t, cross_w

    def _cross(self, z, memory, src_mask, weights):
        if weights is None:
            return self.cross_attn(z, memory, memory, key_padding_mask=src_mask)
        mha = self.cross_attn
        B, T_k = memory.shape[:2]
        V = mha.W_v(memory).view(B, T_k, mha.h, mha.d_k).transpose(1, 2)  # (B, h, N, d_k)
        heads = weights @ V  # (B, h, T, d_k)
        return mha.W_o(heads.transpose(1, 2).reshape(B, -1, mha.d_model)), weights


class Transformer(nn.Module):
    """Encoder–decoder Transformer with the interface of :class:`attnbook.models.AttnSeq2Seq`.

    Args:
        src_vocab, tgt_vocab: vocabularies (or their sizes).
        d_model: features per position; h: heads; d_ff: feed-forward width.
        n_layers: encoder layers (and decoder layers, unless ``n_decoder_layers`` is given).
        norm_first: pre-norm residual blocks instead of post-norm.
        max_len: longest sequence the position table covers.

    ``forward(batch, return_attention=False)``: logits ``(B, T, n_vocab)`` under teacher forcing, all steps in
    one call; with ``return_attention`` also the cross-attention weights of every decoder layer, a list
    of ``n_layers`` tensors ``(B, h, T, N)``.
    """

    def __init__(
        self,
        src_vocab: Vocab | int,
        tgt_vocab: Vocab | int,
        d_model: int = 64,
        h: int = 4,
        d_ff: int = 128,
        n_layers: int = 2,
        norm_first: bool = False,
        max_len: int = 256,
        n_decoder_layers: int | None = None,
    ):
        super().__init__()
        self.src_vocab = src_vocab if isinstance(src_vocab, Vocab) else None
        self.tgt_vocab = tgt_vocab if isinstance(tgt_vocab, Vocab) else None
        n_src = src_vocab if isinstance(src_vocab, int) else len(src_vocab)
        n_tgt = tgt_vocab if isinstance(tgt_vocab, int) else len(tgt_vocab)
        self.d_model, self.h, self.norm_first = d_model, h, norm_first
        self.src_embedding = nn.Embedding(n_src, d_model, padding_idx=PAD)
        self.tgt_embedding = nn.Embedding(n_tgt, d_model, padding_idx=PAD)
        self.register_buffer("positions", sinusoidal_positions(max_len, d_model), persistent=False)
        self.encoder_layers = nn.ModuleList(
            EncoderLayer(d_model, h, d_ff, norm_first) for _ in range(n_layers)
        )
        n_dec = n_layers if n_decoder_layers is None else n_decoder_layers
        self.decoder_layers = nn.ModuleList(DecoderLayer(d_model, h, d_ff, norm_first) for _ in range(n_dec))
        self.encoder_norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.decoder_norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.out = nn.Linear(d_model, n_tgt)
        for embedding in (self.src_embedding, self.tgt_embedding):  # std 1/√d_model: after the scaling
            nn.init.normal_(embedding.weight, std=d_model**-0.5)  # by √d_model the same size as the positions
            with torch.no_grad():
                embedding.weight[PAD] = 0.0

    def embed(self, ids: Tensor, embedding: nn.Embedding, start: int = 0) -> Tensor:
        """ids (B, L) -> (B, L, d_model): ``√d_model · E[ids]`` plus the positions ``start..start+L-1``."""
        end = start + ids.shape[1]
        if end > self.positions.shape[0]:
            raise ValueError(f"sequence of {end} tokens; the position table covers {self.positions.shape[0]}")
        return embedding(ids) * math.sqrt(self.d_model) + self.positions[start:end]

    def encode(self, src: Tensor, src_len: Tensor, embedded: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """src (B, N) ids, src_len (B,) -> memory (B, N, d_model), src_mask (B, N) bool.
        ``embedded`` (B, N, d_model), if given, replaces ``src_embedding(src)`` (to take gradients)."""
        src_mask = torch.arange(src.shape[1], device=src.device)[None, :] < src_len[:, None]
        if embedded is None:
            x = self.embed(src, self.src_embedding)
        else:
            x = embedded * math.sqrt(self.d_model) + self.positions[: src.shape[1]]
        for layer in self.encoder_layers:
            x, _ = layer(x, src_mask)
        return self.encoder_norm(x), src_mask

    def decode(
        self, tgt_in: Tensor, memory: Tensor, src_mask: Tensor, cross_weights: dict | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        """tgt_in (B, T) ids -> logits (B, T, n_vocab) and the cross-attention weights of every layer.

        ``cross_weights``: optional ``{layer: (B, h, T, N) weights}`` that replace that layer's
        cross-attention weights (to test what the model uses).
        """
        y = self.embed(tgt_in, self.tgt_embedding)
        crosses = []
        for k, layer in enumerate(self.decoder_layers):
            given = None if cross_weights is None else cross_weights.get(k)
            y, _, cross = layer(y, memory, src_mask, given)
            crosses.append(cross)
        return self.out(self.decoder_norm(y)), crosses

    def forward(self, batch, return_attention: bool = False, embedded: Tensor | None = None):
        """logits (B, T, n_vocab), and the cross-attention weights of every layer if ``return_attention``."""
        memory, src_mask = self.encode(batch.src, batch.src_len, embedded)
        logits, crosses = self.decode(batch.tgt_in, memory, src_mask)
        return (logits, crosses) if return_attention else logits

    def new_cache(self) -> list[list]:
        """An empty cache for :meth:`decode_step`: one list per decoder layer."""
        return [[] for _ in self.decoder_layers]

    def decode_step(
        self, y_prev: Tensor, t: int, memory: Tensor, src_mask: Tensor, cache: list[list]
    ) -> tuple[Tensor, list[Tensor]]:
        """One decoder step at inference: the previous word ``y_prev (B,)`` at position ``t`` ->
        logits ``(B, n_vocab)`` of the next word and the cross-attention weights of every layer, each
        ``(B, h, N)``. ``cache`` (from :meth:`new_cache`) carries the earlier steps."""
        y = self.embed(y_prev[:, None], self.tgt_embedding, start=t)  # (B, 1, d_model)
        crosses = []
        for layer, layer_cache in zip(self.decoder_layers, cache):
            y, cross = layer.step(y, memory, src_mask, layer_cache)
            crosses.append(cross[:, :, 0])
        return self.out(self.decoder_norm(y))[:, 0], crosses

    @torch.no_grad()
    def greedy_decode(self, src: Tensor, src_len: Tensor, max_len: int | None = None):
        """Greedy decoding, one step at a time with :meth:`decode_step`. Returns ``(ids, steps)``: B id
        lists without ``<eos>`` and the number of decoder steps run. Stops when every sentence has
        produced ``<eos>`` or after ``max_len`` steps (default: longest source + 10)."""
        B = src.shape[0]
        max_len = int(src_len.max()) + 10 if max_len is None else max_len
        memory, src_mask = self.encode(src, src_len)
        cache = self.new_cache()
        y = torch.full((B,), SOS, dtype=torch.long, device=src.device)
        done = torch.zeros(B, dtype=torch.bool, device=src.device)
        out = []
        for t in range(max_len):
            logits, _ = self.decode_step(y, t, memory, src_mask, cache)  # (B, n_vocab)
            y = logits.argmax(-1).masked_fill(done, PAD)  # (B,)
            out.append(y)
            done = done | (y == EOS)
            if bool(done.all()):
                break
        rows = torch.stack(out, 1).tolist()
        ids = [[i for i in row[: row.index(EOS)] if i != PAD] if EOS in row else row for row in rows]
        return ids, len(out)


def _copy(dst: nn.Module, src: nn.Module) -> None:
    with torch.no_grad():
        dst.weight.copy_(src.weight)
        dst.bias.copy_(src.bias)


def _check_torch_layer(layer: nn.Module) -> None:
    if not layer.self_attn.batch_first:
        raise ValueError("build the PyTorch layer with batch_first=True")
    if layer.activation not in (torch.relu, nn.functional.relu) and not isinstance(layer.activation, nn.ReLU):
        raise ValueError("the book's feed-forward layer uses ReLU")


def encoder_layer_from_torch(layer: nn.TransformerEncoderLayer) -> EncoderLayer:
    """An :class:`EncoderLayer` with copies of the weights of a PyTorch encoder layer (``batch_first=True``,
    ReLU). Dropout is not copied: compare in ``eval()`` mode or with ``dropout=0``."""
    _check_torch_layer(layer)
    d_model, h = layer.self_attn.embed_dim, layer.self_attn.num_heads
    ours = EncoderLayer(d_model, h, layer.linear1.out_features, layer.norm_first)
    ours.self_attn = load_from_torch(layer.self_attn)
    _copy(ours.ff.W_1, layer.linear1), _copy(ours.ff.W_2, layer.linear2)
    _copy(ours.norm1, layer.norm1), _copy(ours.norm2, layer.norm2)
    ours.norm1.eps, ours.norm2.eps = layer.norm1.eps, layer.norm2.eps
    return ours.to(layer.linear1.weight.dtype)


def decoder_layer_from_torch(layer: nn.TransformerDecoderLayer) -> DecoderLayer:
    """A :class:`DecoderLayer` with copies of the weights of a PyTorch decoder layer (``batch_first=True``,
    ReLU); PyTorch's ``multihead_attn`` is the cross-attention. Compare in ``eval()`` mode."""
    _check_torch_layer(layer)
    d_model, h = layer.self_attn.embed_dim, layer.self_attn.num_heads
    ours = DecoderLayer(d_model, h, layer.linear1.out_features, layer.norm_first)
    ours.self_attn = load_from_torch(layer.self_attn)
    ours.cross_attn = load_from_torch(layer.multihead_attn)
    _copy(ours.ff.W_1, layer.linear1), _copy(ours.ff.W_2, layer.linear2)
    for k in (1, 2, 3):
        _copy(getattr(ours, f"norm{k}"), getattr(layer, f"norm{k}"))
        getattr(ours, f"norm{k}").eps = getattr(layer, f"norm{k}").eps
    return ours.to(layer.linear1.weight.dtype)


TRANSFORMER = dict(
    d_model=64, h=4, d_ff=128, n_layers=1, n_decoder_layers=None, norm_first=False, epochs=4, lr=5e-3
)
"""Sizes and training settings of the book's reference Transformer (data and batches: :data:`STANDARD`)."""


def train_transformer(
    *, seed: int = 0, progress: bool = True, pairs: Sequence | None = None, callback=None, **overrides
):
    """Build and train the reference Transformer on the reference data with :func:`attnbook.models.train`
    (the loop of the RNN models: Adam, gradient clipping, the same batches). ``overrides`` change entries
    of :data:`TRANSFORMER`; ``callback`` goes to ``train``. Deterministic given ``seed``. Returns
    ``(model, history, splits)``."""
    from attnbook.models import STANDARD, standard_data, train

    settings = {**TRANSFORMER, **overrides}
    unknown = set(settings) - set(TRANSFORMER)
    if unknown:
        raise TypeError(f"unknown settings: {sorted(unknown)}")
    splits, src_vocab, tgt_vocab = standard_data()
    torch.manual_seed(seed)
    model = Transformer(
        src_vocab,
        tgt_vocab,
        d_model=settings["d_model"],
        h=settings["h"],
        d_ff=settings["d_ff"],
        n_layers=settings["n_layers"],
        norm_first=settings["norm_first"],
        n_decoder_layers=settings["n_decoder_layers"],
    )
    history = train(
        model,
        splits.train if pairs is None else pairs,
        epochs=settings["epochs"],
        batch_size=STANDARD["batch_size"],
        lr=settings["lr"],
        seed=seed,
        progress=progress,
        callback=callback,
    )
    return model, history, splits
