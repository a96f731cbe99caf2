"""Self-attention and multi-head attention (셀프 어텐션, 멀티 헤드 어텐션), built on :mod:`attnbook.attention`.

Shapes (book notation): a batch of ``B`` sequences, ``T_q`` queries and ``T_k`` keys/values,
``d_model`` features per position, ``h`` heads of ``d_k = d_model / h`` features each (the book's
symbol for the width of one head; ``MultiHeadAttention.d_h`` is kept as an alias).

* :func:`split_heads` turns ``(B, T, h·d_k)`` into ``(B, h, T, d_k)``: a **view** that splits the last
  axis into ``(h, d_k)``, then a **permutation** that moves the head axis in front of time. A bare reshape
  to ``(B, h, T, d_k)`` has the right shape and the wrong contents (it mixes positions and heads).
* :func:`merge_heads` is its inverse.
* :class:`MultiHeadAttention` projects queries, keys and values with its own ``W_q, W_k, W_v``, runs
  :func:`attnbook.attention.scaled_dot_product_attention` in every head at once, concatenates the heads
  and projects them with ``W_o`` (Vaswani et al., 2017).
* :func:`load_from_torch` copies the weights of a ``torch.nn.MultiheadAttention`` into a
  :class:`MultiHeadAttention`, so that both compute the same outputs.
* :func:`sinusoidal_positions` gives the fixed position encodings of the Transformer.

Masks follow the book: boolean, ``True`` = **may attend**. ``torch.nn.MultiheadAttention`` uses the
opposite polarity for boolean masks (``True`` = *not* allowed): pass ``~mask`` to it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .attention import scaled_dot_product_attention

__all__ = ["split_heads", "merge_heads", "MultiHeadAttention", "load_from_torch", "sinusoidal_positions"]


def split_heads(x: Tensor, h: int) -> Tensor:
    """Split the feature axis into ``h`` heads.

    Args:
        x: ``(B, T, h·d_k)``.
        h: number of heads; must divide the last axis.

    Returns:
        ``(B, h, T, d_k)``, a view of ``x`` (no copy): ``out[b, j, t] == x[b, t, j·d_k:(j+1)·d_k]``.
    """
    B, T, D = x.shape
    if D % h != 0:
        raise ValueError(f"the last axis ({D}) is not divisible by the number of heads h={h}")
    return x.view(B, T, h, D // h).permute(0, 2, 1, 3)  # (B, T, h, d_k) -> (B, h, T, d_k)


def merge_heads(x: Tensor) -> Tensor:
    """Concatenate the heads again: the inverse of :func:`split_heads`.

    Args:
        x: ``(B, h, T, d_k)``.

    Returns:
        ``(B, T, h·d_k)``: for every position the ``h`` head outputs side by side, head 0 first.
    """
    B, h, T, d_k = x.shape
    return x.permute(0, 2, 1, 3).reshape(B, T, h * d_k)  # (B, T, h, d_k) -> (B, T, h·d_k)


def _combined_mask(key_padding_mask: Tensor | None, attn_mask: Tensor | None) -> Tensor | None:
    """Both masks as one boolean mask broadcastable to ``(B, h, T_q, T_k)`` (``True`` = may attend)."""
    mask = None
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool:
            raise TypeError("key_padding_mask must be boolean (True = a real key that may be attended to)")
        if key_padding_mask.dim() != 2:
            raise ValueError(
                f"key_padding_mask must have shape (B, T_k), got {tuple(key_padding_mask.shape)}"
            )
        mask = key_padding_mask[:, None, None, :]  # (B, 1, 1, T_k)
    if attn_mask is not None:
        if attn_mask.dtype != torch.bool:
            raise TypeError("attn_mask must be boolean (True = may attend)")
        if attn_mask.dim() == 3:  # (B, T_q, T_k): the same mask for every head
            attn_mask = attn_mask[:, None]
        elif attn_mask.dim() not in (2, 4):
            raise ValueError(
                f"attn_mask must have shape (T_q, T_k), (B, T_q, T_k) or (B, h, T_q, T_k), got "
                f"{tuple(attn_mask.shape)}"
            )
        mask = attn_mask if mask is None else mask & attn_mask
    return mask


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention with its own projections ``W_q, W_k, W_v, W_o``.

    ``MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W_o^T`` with
    ``head_j = Attention(Q (W_q^j)^T, K (W_k^j)^T, V (W_v^j)^T)``, ``W^j`` the ``d_k`` rows of head ``j``;
    every head sees ``d_k = d_model / h`` features, so
    the scores are scaled by ``√d_k`` (the key dimension of one head), not by ``√d_model``. The weights
    are ``nn.Linear`` layers, stored ``(out_features, in_features)`` and applied as ``x @ W.T``.

    Args:
        d_model: features of the queries and of the output.
        h: number of heads; must divide ``d_model``.
        kdim, vdim: features of the keys and of the values (default ``d_model``).
        bias: whether the four projections have a bias (``torch.nn.MultiheadAttention`` has one).
    """

    def __init__(
        self,
        d_model: int,
        h: int,
        kdim: int | None = None,
        vdim: int | None = None,
        bias: bool = True,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        if d_model % h != 0:
            raise ValueError(f"d_model={d_model} is not divisible by h={h}")
        self.d_model, self.h, self.d_k = d_model, h, d_model // h
        self.d_h = self.d_k  # the earlier name of the head width, kept for existing code
        kdim = d_model if kdim is None else kdim
        vdim = d_model if vdim is None else vdim
        self.W_q = nn.Linear(d_model, d_model, bias=bias, dtype=dtype)
        self.W_k = nn.Linear(kdim, d_model, bias=bias, dtype=dtype)
        self.W_v = nn.Linear(vdim, d_model, bias=bias, dtype=dtype)
        self.W_o = nn.Linear(d_model, d_model, bias=bias, dtype=dtype)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        need_weights: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from ``query`` to ``key``/``value``; self-attention is ``mha(x, x, x)``.

        Args:
            query: ``(B, T_q, d_model)``.
            key: ``(B, T_k, kdim)``.
            value: ``(B, T_k, vdim)``.
            key_padding_mask: ``(B, T_k)`` boolean, ``True`` at real keys (``False`` at padding).
            attn_mask: boolean ``(T_q, T_k)`` (e.g. :func:`attnbook.attention.causal_mask`), or
                ``(B, T_q, T_k)``, or ``(B, h, T_q, T_k)``; ``True`` = may attend.
            need_weights: also return the attention weights of every head.

        Returns:
            ``(output, weights)``: ``output`` is ``(B, T_q, d_model)``; ``weights`` is
            ``(B, h, T_q, T_k)`` (one map per head, not averaged), or ``None`` if not ``need_weights``.
        """
        Q = split_heads(self.W_q(query), self.h)  # (B, h, T_q, d_k)
        K = split_heads(self.W_k(key), self.h)  # (B, h, T_k, d_k)
        V = split_heads(self.W_v(value), self.h)  # (B, h, T_k, d_k)
        mask = _combined_mask(key_padding_mask, attn_mask)  # broadcastable to (B, h, T_q, T_k)
        heads, weights = scaled_dot_product_attention(Q, K, V, mask)  # (B, h, T_q, d_k), (B, h, T_q, T_k)
        output = self.W_o(merge_heads(heads))  # (B, T_q, d_model)
        return output, (weights if need_weights else None)


def load_from_torch(mha: nn.MultiheadAttention) -> MultiHeadAttention:
    """A :class:`MultiHeadAttention` holding copies of the weights of ``mha``.

    ``torch.nn.MultiheadAttention`` stores ``W_q, W_k, W_v`` stacked in ``in_proj_weight`` (``(3·d_model,
    d_model)``) when keys and values have ``d_model`` features, and separately in ``q_proj_weight``,
    ``k_proj_weight``, ``v_proj_weight`` otherwise; ``W_o`` is ``out_proj``. Dropout is not copied (the
    book's module has none): compare in ``mha.eval()`` mode or with ``dropout=0``. With
    ``batch_first=True`` the two modules take and return the same shapes.
    """
    if mha.bias_k is not None or mha.add_zero_attn:
        raise ValueError("add_bias_kv and add_zero_attn are not supported")
    weight = mha.out_proj.weight
    bias = mha.in_proj_bias is not None
    ours = MultiHeadAttention(
        mha.embed_dim, mha.num_heads, kdim=mha.kdim, vdim=mha.vdim, bias=bias, dtype=weight.dtype
    ).to(weight.device)
    if mha._qkv_same_embed_dim:
        w_q, w_k, w_v = mha.in_proj_weight.chunk(3, dim=0)  # each (d_model, d_model)
    else:
        w_q, w_k, w_v = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
    with torch.no_grad():
        for linear, w in ((ours.W_q, w_q), (ours.W_k, w_k), (ours.W_v, w_v), (ours.W_o, weight)):
            linear.weight.copy_(w)
        if bias:
            for linear, b in zip((ours.W_q, ours.W_k, ours.W_v), mha.in_proj_bias.chunk(3, dim=0)):
                linear.bias.copy_(b)
            ours.W_o.bias.copy_(mha.out_proj.bias)
    return ours


def sinusoidal_positions(T: int, d: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Sinusoidal position encodings (위치 인코딩) of the Transformer.

    ``P[t, 2i] = sin(t / 10000^(2i/d))`` and ``P[t, 2i+1] = cos(t / 10000^(2i/d))``: every pair of
    features is a clock turning at its own frequency, from one turn every ``2π`` positions down to very
    slow ones, so that every position gets a different pattern.

    Returns:
        ``(T, d)``, positions ``0..T-1`` as rows; added to the ``(B, T, d)`` inputs by broadcasting.
    """
    position = torch.arange(T, dtype=torch.float64)[:, None]  # (T, 1)
    pair = torch.arange(0, d, 2, dtype=torch.float64)  # (ceil(d/2),) = 2i
    angle = position / 10000.0 ** (pair / d)  # (T, ceil(d/2))
    P = torch.zeros(T, d, dtype=torch.float64)
    P[:, 0::2] = torch.sin(angle)
    P[:, 1::2] = torch.cos(angle[:, : d // 2])
    return P.to(dtype)
