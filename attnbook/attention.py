"""Attention, one formula per function.

Notation follows the book (see ``book/notation.md``):

* a query ``s_t`` (or a stack of queries ``Q``), keys ``h_1..h_N`` (``K``), values (``V``);
* scores ``e^t`` (어텐션 스코어), weights ``alpha^t = softmax(e^t)`` (어텐션 가중치),
  attention value ``a_t = sum_i alpha^t_i h_i`` (어텐션 값).

Shape conventions: a leading ``...`` is any number of batch dimensions (batch, heads). Scores and weights
have shape ``(..., T_q, T_k)``: one row per query, one column per key. The softmax always runs over the
last axis, the **key** axis. A single query may be given as a vector ``(d,)``; its scores are then ``(N,)``.

Masks are boolean and say where a query **may attend**: ``True`` keeps a key, ``False`` removes it (the
same convention as ``torch.nn.functional.scaled_dot_product_attention``). A masked weight is exactly 0; a
query whose keys are all masked gets all-zero weights (never NaN).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "softmax",
    "dot_scores",
    "scaled_dot_scores",
    "general_scores",
    "additive_scores",
    "attention_weights",
    "attention_value",
    "padding_mask",
    "causal_mask",
    "scaled_dot_product_attention",
]


def softmax(x: Tensor, dim: int = -1, mask: Tensor | None = None) -> Tensor:
    """Numerically stable softmax along ``dim``, with an optional boolean mask.

    Args:
        x: scores of any shape, e.g. ``(..., T_q, T_k)``.
        dim: the axis that is normalised (the key axis for attention).
        mask: boolean, broadcastable to ``x``; ``True`` keeps an entry, ``False`` removes it.

    Returns:
        A tensor shaped like ``x`` (broadcast with ``mask``): non-negative, summing to 1 along ``dim``;
        masked entries are exactly 0 and a slice whose entries are all masked is all zeros.

    Numerical stability: ``softmax(x) = softmax(x - c)`` for any constant ``c``, so the row maximum can be
    subtracted before ``exp`` and no score, however large, overflows (chapter 5 does this by hand).
    ``torch.softmax`` does exactly that in one fused pass, which this function uses; a fully masked slice
    (all ``-inf``) would come out as NaN there and is set to zeros.
    """
    if mask is None:
        return torch.softmax(x, dim=dim)
    keep = mask.to(torch.bool)
    weights = torch.softmax(x.masked_fill(~keep, float("-inf")), dim=dim)
    empty = ~keep.expand_as(weights).any(dim=dim, keepdim=True)
    return weights.masked_fill(empty, 0.0)


def dot_scores(query: Tensor, keys: Tensor) -> Tensor:
    """Dot-product scores ``e_i = q^T k_i``.

    Args:
        query: ``(..., T_q, d)``, or ``(d,)`` for a single query such as ``s_t``.
        keys: ``(..., T_k, d)``, e.g. the encoder states ``H`` of shape ``(N, d)``.

    Returns:
        ``(..., T_q, T_k)``, or ``(T_k,)`` for a single query.
    """
    return query @ keys.transpose(-1, -2) if query.dim() > 1 else keys @ query


def scaled_dot_scores(query: Tensor, keys: Tensor) -> Tensor:
    """Scaled dot-product scores ``e_i = q^T k_i / sqrt(d)``; shapes as in :func:`dot_scores`.

    Dividing by ``sqrt(d)`` keeps the variance of the scores near 1 whatever the dimension ``d``, so the
    softmax does not saturate as ``d`` grows.
    """
    # Scaling the query (T_q x d numbers) instead of the scores (T_q x T_k) saves a pass over the big matrix.
    return dot_scores(query / math.sqrt(query.shape[-1]), keys)


def general_scores(query: Tensor, keys: Tensor, W: Tensor) -> Tensor:
    """General (bilinear, Luong) scores ``e_i = q^T W k_i``.

    Args:
        query: ``(..., T_q, d_q)`` or ``(d_q,)``.
        keys: ``(..., T_k, d_k)``.
        W: ``(d_q, d_k)``, a learned matrix.

    Returns:
        ``(..., T_q, T_k)``, or ``(T_k,)`` for a single query.
    """
    return dot_scores(query @ W, keys)


def additive_scores(query: Tensor, keys: Tensor, W_q: Tensor, W_k: Tensor, w: Tensor) -> Tensor:
    """Additive (concat, Bahdanau) scores ``e_i = w^T tanh(W_q q + W_k k_i)``.

    The matrices are stored like ``torch.nn.Linear`` weights, ``(out, in)``, and applied as ``x @ W.T``.

    Args:
        query: ``(..., T_q, d_q)`` or ``(d_q,)``.
        keys: ``(..., T_k, d_k)``.
        W_q: ``(d_a, d_q)``; W_k: ``(d_a, d_k)``; w: ``(d_a,)``.

    Returns:
        ``(..., T_q, T_k)``, or ``(T_k,)`` for a single query.
    """
    q = query @ W_q.T  # (..., T_q, d_a) or (d_a,)
    k = keys @ W_k.T  # (..., T_k, d_a)
    if query.dim() == 1:
        return torch.tanh(k + q) @ w  # (T_k,)
    hidden = torch.tanh(q.unsqueeze(-2) + k.unsqueeze(-3))  # (..., T_q, T_k, d_a)
    return hidden @ w


def attention_weights(scores: Tensor, mask: Tensor | None = None) -> Tensor:
    """Attention weights ``alpha = softmax(e)`` over the key axis (the last one).

    Args:
        scores: ``(..., T_q, T_k)`` or ``(T_k,)``.
        mask: boolean, broadcastable to ``scores``; ``True`` = may attend.

    Returns:
        Same shape as ``scores``; each row is a probability distribution over the keys.
    """
    return softmax(scores, dim=-1, mask=mask)


def attention_value(weights: Tensor, values: Tensor) -> Tensor:
    """Attention value ``a = sum_i alpha_i v_i``: the weighted sum of the values.

    Args:
        weights: ``(..., T_q, T_k)``, or ``(T_k,)`` for a single query.
        values: ``(..., T_k, d_v)``.

    Returns:
        ``(..., T_q, d_v)``, or ``(d_v,)`` for a single query.
    """
    return weights @ values


def padding_mask(lengths: Tensor, T_k: int) -> Tensor:
    """Mask of the valid keys of each sequence in a right-padded batch.

    Args:
        lengths: ``(B,)`` integer valid lengths (0 allowed).
        T_k: the padded length.

    Returns:
        ``(B, 1, T_k)`` boolean, ``True`` at positions ``< lengths[b]``; broadcasts over the query axis.
    """
    positions = torch.arange(T_k, device=lengths.device)
    return (positions[None, :] < lengths[:, None]).unsqueeze(1)


def causal_mask(T_q: int, T_k: int | None = None) -> Tensor:
    """Mask that lets query ``i`` attend to keys ``0..i`` only.

    Returns:
        ``(T_q, T_k)`` boolean, lower-triangular (``True`` on and below the diagonal).
    """
    T_k = T_q if T_k is None else T_k
    return torch.ones(T_q, T_k, dtype=torch.bool).tril()


def scaled_dot_product_attention(
    Q: Tensor, K: Tensor, V: Tensor, mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V`` for batches of queries.

    Args:
        Q: ``(..., T_q, d_k)`` queries.
        K: ``(..., T_k, d_k)`` keys.
        V: ``(..., T_k, d_v)`` values.
        mask: boolean, broadcastable to ``(..., T_q, T_k)``; ``True`` = may attend.

    Returns:
        ``(output, weights)``: ``output`` is ``(..., T_q, d_v)``, ``weights`` is ``(..., T_q, T_k)``.
    """
    weights = attention_weights(scaled_dot_scores(Q, K), mask)
    return attention_value(weights, V), weights
