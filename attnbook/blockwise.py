"""Exact attention one block of keys at a time: the online softmax (온라인 소프트맥스).

The softmax over ``T_k`` scores needs their maximum and the sum of their exponentials. Both can be kept
*running* while the keys arrive in blocks (Milakov & Gimelshein, 2018): after each block,

* the running maximum ``m`` becomes ``max(m, max of the block)``;
* the running sum ``l`` of ``exp(score - m)`` and the running weighted sum ``acc`` of the values are
  first **rescaled** by ``exp(m_old - m_new)`` (they were computed against the old maximum), then the
  block's own terms are added.

At the end ``acc / l`` is exactly ``softmax(Q Kᵀ / √d_k) V``, up to rounding, for any block size
(Rabe & Staats, 2021). Only a ``(…, T_q, block)`` slice of scores exists at any time, so the memory of the
intermediates is ``O(T_q · (block + d_v))`` instead of ``O(T_q · T_k)``.

These functions show the arithmetic in plain PyTorch; they are not fast. Under autograd, PyTorch keeps
every block for the backward pass, so the memory saving holds for the forward computation (use
``torch.no_grad()``); fused kernels such as FlashAttention (Dao et al., 2022) recompute blocks instead.
"""

from __future__ import annotations

import math
import os
import secrets
import sys
import sysconfig

import torch
from torch import Tensor

__all__ = [
    "running_max_sum",
    "online_softmax_attention",
    "peak_intermediate_elements",
    "ScoreWatch",
    "watch_scores",
]


def running_max_sum(scores: Tensor, block_size: int) -> tuple[Tensor, Tensor]:
    """Maximum and sum of exponentials of ``scores`` along the last axis, one block at a time.

    Args:
        scores: ``(..., T_k)``; entries may be ``-inf`` (masked).
        block_size: number of scores read per step (``>= 1``; need not divide ``T_k``).

    Returns:
        ``(m, l)``, both ``(...,)``: ``m = max_i scores[..., i]`` and ``l = Σ_i exp(scores[..., i] - m)``,
        so that ``softmax(scores) = exp(scores - m) / l``. A row of only ``-inf`` gives ``m = -inf``,
        ``l = 0``.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}")
    m = torch.full(scores.shape[:-1], float("-inf"), dtype=scores.dtype, device=scores.device)
    l = torch.zeros(scores.shape[:-1], dtype=scores.dtype, device=scores.device)
    for start in range(0, scores.shape[-1], block_size):
        block = scores[..., start : start + block_size]  # (..., <= block_size)
        m_new = torch.maximum(m, block.amax(dim=-1))
        m_safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))  # no (-inf) - (-inf)
        l = l * torch.exp(m - m_safe) + torch.exp(block - m_safe[..., None]).sum(dim=-1)
        m = m_new
    return m, l


def online_softmax_attention(
    Q: Tensor, K: Tensor, V: Tensor, block_size: int, mask: Tensor | None = None
) -> Tensor:
    """``softmax(Q Kᵀ / √d_k) V`` computed over blocks of ``block_size`` keys with a running max and sum.

    Args:
        Q: ``(..., T_q, d_k)``; K: ``(..., T_k, d_k)``; V: ``(..., T_k, d_v)``.
        block_size: keys per block, ``>= 1``; the last block is shorter when it does not divide ``T_k``.
        mask: optional boolean, broadcastable to ``(..., T_q, T_k)``, ``True`` = may attend (a padding mask
            ``(B, 1, T_k)`` or a causal mask ``(T_q, T_k)``). It is sliced block by block, never expanded.

    Returns:
        ``(..., T_q, d_v)``, equal (up to rounding) to
        :func:`attnbook.attention.scaled_dot_product_attention`'s output; a query whose keys are all
        masked gets a zero vector, as there.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}")
    T_k, d_k = K.shape[-2], K.shape[-1]
    if mask is not None:
        mask = mask.to(torch.bool)
    scale = math.sqrt(d_k)
    batch = torch.broadcast_shapes(Q.shape[:-2], K.shape[:-2], V.shape[:-2])
    T_q, d_v = Q.shape[-2], V.shape[-1]
    dtype = torch.promote_types(Q.dtype, V.dtype)
    m = torch.full((*batch, T_q, 1), float("-inf"), dtype=dtype, device=Q.device)  # running max
    l = torch.zeros((*batch, T_q, 1), dtype=dtype, device=Q.device)  # running sum of exp
    acc = torch.zeros((*batch, T_q, d_v), dtype=dtype, device=Q.device)  # running weighted sum of values
    for start in range(0, T_k, block_size):
        stop = min(start + block_size, T_k)
        scores = Q @ K[..., start:stop, :].transpose(-1, -2) / scale  # (..., T_q, block)
        if mask is not None:
            block_mask = mask if mask.shape[-1] == 1 else mask[..., start:stop]
            scores = scores.masked_fill(~block_mask, float("-inf"))
        m_new = torch.maximum(m, scores.amax(dim=-1, keepdim=True))  # (..., T_q, 1)
        m_safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
        p = torch.exp(scores - m_safe)  # (..., T_q, block), unnormalised weights
        rescale = torch.exp(m - m_safe)  # (..., T_q, 1): old terms were relative to the old maximum
        l = l * rescale + p.sum(dim=-1, keepdim=True)
        acc = acc * rescale + p @ V[..., start:stop, :]  # (..., T_q, d_v)
        m = m_new
    return acc / torch.where(l > 0, l, torch.ones_like(l))


def peak_intermediate_elements(T_q: int, T_k: int, d_v: int, block_size: int | None = None) -> int:
    """Number of elements of the largest set of intermediates alive at once (per batch item and head).

    ``block_size=None`` is the full computation: the ``(T_q, T_k)`` scores and the weights made from them
    (two matrices at once) plus the ``(T_q, d_v)`` output. With blocks: one ``(T_q, block)`` score slice and
    its exponentials, the ``(T_q, d_v)`` accumulator and its update, and two ``(T_q, 1)`` running statistics.
    """
    if block_size is None:
        return 2 * T_q * T_k + T_q * d_v
    block = min(block_size, T_k)
    return 2 * T_q * block + 2 * T_q * d_v + 2 * T_q


# --------------------------------------------------------------------------------------------------
# Watching the widths of score blocks (chapter 10 measures them; the set-10 grader checks them)
# --------------------------------------------------------------------------------------------------

_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__))
_STDLIB_DIRS = tuple({os.path.realpath(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib")})
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_THIS_FILE = os.path.realpath(__file__)
#: the watch's own functions (skipped when looking for the code that made an operation)
_WATCH_CODE = frozenset({"__torch_function__", "_look", "__deepcopy__", "_called_from_outside_package"})
#: operations that only select or describe part of a tensor: a full row of scores may be *indexed*
#: (``scores[..., a:b]``, ``scores.split(block)``) without counting as computed at once
_SELECTING = frozenset(
    {
        "__getitem__",
        "narrow",
        "split",
        "chunk",
        "unbind",
        "tensor_split",
        "unfold",
        "size",
        "dim",
        "numel",
        "__len__",
        "__iter__",
        "__format__",
        "__repr__",
    }
)
#: operations that copy, convert or relabel a whole tensor without computing with it (nor looked at)
_COPYING = frozenset(
    {
        "__get__",
        "detach",
        "clone",
        "contiguous",
        "to",
        "double",
        "float",
        "requires_grad_",
        "__deepcopy__",
        "new_empty",
        "new_zeros",
        "new_full",
        "new_ones",
        "new_tensor",
        "zeros_like",
        "ones_like",
        "empty_like",
        "full_like",
    }
)


def _op_name(func) -> str:
    return getattr(func, "__name__", "") or type(func).__name__


def _called_from_outside_package() -> bool:
    """True when the innermost caller that is not PyTorch, the standard library or this module lies
    outside the attnbook package (a learner's code, a notebook cell)."""
    frame = sys._getframe(2)
    while frame is not None:
        code = frame.f_code
        path = os.path.realpath(code.co_filename)
        own = path == _THIS_FILE and code.co_name in _WATCH_CODE
        if own or path.startswith(_TORCH_DIR) or path.startswith(_STDLIB_DIRS):
            frame = frame.f_back
            continue
        return not path.startswith(_PACKAGE_DIR)
    return False


class ScoreWatch(torch.Tensor):
    """A tensor that records the widths of the score blocks computed from it.

    Use :func:`watch_scores` to make one. Every PyTorch operation on a watched tensor (or on a tensor made
    from one) is looked at: a floating tensor of shape ``(..., rows, w)`` (or ``(..., w, rows)``), with
    ``w`` not one of the ``exempt`` widths (such as ``d_k`` and ``d_v``), is a block of scores (or weights,
    or exponentials) of ``w`` keys for each of the ``rows`` queries, and ``w`` is recorded in ``widths``;
    so is a vector ``(w,)`` (one query's scores) whose length is neither ``rows`` nor exempt. The sizes
    must be chosen distinct (``rows``, the exempt widths and the block widths), or the record is ambiguous.
    With ``keys`` (the number of keys, ``T_k``), a tensor ``(..., q, keys)`` whose ``q`` is neither ``rows``
    nor exempt is recorded too (width ``keys``): the scores of every key for a part of the queries (queries
    cut into blocks, or taken one at a time), which reads all the keys at once.
    Outputs are always looked at; inputs too, except for operations that only select part of a tensor
    (indexing, ``split``, ``narrow``...), so that reading a full row of scores block by block is fine but
    computing with it at once is recorded. With ``outside_only``, only operations called from code outside
    the ``attnbook`` package are recorded (a learner's function); ``on_inside`` is then called (with the
    class) at the first operation made from inside the package after recorded ones, for example by a
    grader that compares the learner's result. Subclasses hold the settings; :func:`watch_scores` makes a
    fresh one per use.
    """

    rows: int = 0
    keys: int = 0
    exempt: frozenset = frozenset()
    outside_only: bool = False
    on_inside = None
    widths: list
    ran: bool = False
    #: names this watch on the trusted grader's wire (see :meth:`wire_spec`)
    token: str = ""
    #: the factory that makes the same watch in another process (``"module:function"``)
    wire_name: str = "attnbook.blockwise:watch_scores"

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = super().__torch_function__(func, types, args, kwargs)
        if not cls.rows:
            return out
        with torch._C.DisableTorchFunctionSubclass():  # looking at shapes must not come back here
            outside = _called_from_outside_package() if cls.outside_only else True
            if outside:
                cls.ran = True
                name = _op_name(func)
                if name not in _COPYING:
                    if name not in _SELECTING:
                        cls._look(args)
                        cls._look(list(kwargs.values()))
                    cls._look(out)
        if not outside and cls.ran and cls.on_inside is not None:
            cls.ran = False
            cls.on_inside(cls)
        return out

    @classmethod
    def _look(cls, value, depth: int = 0) -> None:
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and value.dim() == 1:  # one query's scores, (w,)
                w = value.shape[0]
                if w > 1 and w != cls.rows and w not in cls.exempt:
                    cls.widths.append(int(w))
            elif value.is_floating_point() and value.dim() >= 2:
                a, b = value.shape[-2], value.shape[-1]
                if a == cls.rows and b > 1 and b not in cls.exempt:
                    cls.widths.append(int(b))
                elif b == cls.rows and a > 1 and a not in cls.exempt:
                    cls.widths.append(int(a))
                elif cls.keys > 1 and b == cls.keys and a not in cls.exempt:
                    cls.widths.append(int(b))  # every key, for a part of the queries
        elif isinstance(value, (list, tuple)) and depth < 3:
            for v in value:
                cls._look(v, depth + 1)

    def __deepcopy__(self, memo):
        return self.detach().clone()

    # The trusted grader calls a learner's function in another process, where the tensors arrive plain.
    # The wire (:mod:`attnbook.grading.wire`) carries a watched tensor's settings as data; the kernel
    # makes the same watch there with ``wire_name`` (the learner's call is recorded in its process),
    # and its record comes back as data, which :meth:`report` hands to this watch, whose ``on_inside``
    # then judges it as after a local call.

    @classmethod
    def wire_spec(cls) -> dict:
        """This watch as plain data: its factory, settings, token and record (distinct widths)."""
        widths = sorted(set(int(w) for w in cls.widths))
        if len(widths) > 512:  # the smallest and the largest widths are what a check needs
            widths = widths[:256] + widths[-256:]
        return {
            "name": cls.wire_name,
            "rows": int(cls.rows),
            "keys": int(cls.keys),
            "exempt": sorted(int(e) for e in cls.exempt),
            "token": cls.token,
            "widths": widths,
            "ran": bool(cls.ran),
        }

    @classmethod
    def report(cls, widths, ran: bool) -> None:
        """The record of this watch's tensors in another process (the learner's call there)."""
        if ran:
            cls.widths = [int(w) for w in widths]
            cls.ran = True


def watch_scores(
    tensors, rows: int, exempt=(), outside_only: bool = False, on_inside=None, token: str = "", keys: int = 0
) -> list:
    """The ``tensors`` as :class:`ScoreWatch` tensors of one fresh subclass (they share one record).

    ``rows``: the number of queries (the axis a block of scores has besides its keys); ``exempt``: widths
    that are not blocks of keys (``d_k``, ``d_v``); ``keys``: the number of keys, to record the scores of
    every key for part of the queries (0: not recorded). The record is ``type(result[0]).widths``. ``token``
    names the watch on the trusted grader's wire (a fresh random one by default).
    """
    watch = type(
        "ScoreWatch",
        (ScoreWatch,),
        {
            "rows": int(rows),
            "keys": int(keys),
            "exempt": frozenset(int(e) for e in exempt),
            "outside_only": outside_only,
            "on_inside": staticmethod(on_inside) if on_inside else None,
            "widths": [],
            "ran": False,
            "token": str(token) or secrets.token_hex(8),
        },
    )
    return [t.as_subclass(watch) for t in tensors]
