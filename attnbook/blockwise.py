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

import array
import ctypes
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

#: the same two kinds of operations at PyTorch's dispatcher (ATen names), for the dispatch-level look
_ATEN_SELECTING = frozenset(
    {
        "slice",
        "select",
        "narrow",
        "split",
        "split_with_sizes",
        "chunk",
        "unbind",
        "tensor_split",
        "unfold",
        "index",
        "index_select",
        "gather",
        "take_along_dim",
        "narrow_copy",
        "as_strided",
        "sym_size",
        "sym_numel",
        "sym_stride",
        "sym_storage_offset",
        "_local_scalar_dense",
        "is_nonzero",
        "equal",
        "flip",
        "roll",
    }
)
#: operations that only relabel a tensor's elements (a view): what a later operation computes with the view
#: is looked at, with the view's shape (see ``_width``); joining tensors is judged by what is joined
_ATEN_RELABELLING = frozenset(
    {
        "view",
        "_unsafe_view",
        "reshape",
        "_reshape_alias",
        "permute",
        "transpose",
        "t",
        "unsqueeze",
        "squeeze",
        "expand",
        "expand_as",
        "view_as",
        "flatten",
        "unflatten",
        "movedim",
        "numpy_T",
        "mT",
    }
)
_ATEN_JOINING = frozenset({"cat", "stack", "concat", "concatenate", "hstack", "vstack", "dstack"})
#: copies that keep the values, and selections that copy them: their results carry where each value came from
_CARRYING_COPIES = frozenset(
    {"clone", "_to_copy", "alias", "detach", "lift_fresh", "lift_fresh_copy", "contiguous"}
)
_CARRYING_SELECTIONS = frozenset(
    {"index", "index_select", "gather", "take_along_dim", "narrow_copy", "flip", "roll"}
)
#: element-wise operations that keep the values they select (carried even for a block), and ones that make a
#: tensor whose values come from no tensor
_KEEPING_VALUES = frozenset({"where", "masked_fill", "masked_fill_"})
_BLANK = frozenset(
    {
        "empty_like",
        "zeros_like",
        "ones_like",
        "full_like",
        "new_empty",
        "new_zeros",
        "new_full",
        "new_ones",
        "fill_",
        "zero_",
    }
)
_ATEN_COPYING = (
    frozenset(
        {"alias", "detach", "clone", "_to_copy", "lift_fresh", "lift_fresh_copy", "copy_", "_copy_from"}
    )
    | _BLANK
)
#: operations that bring values into PyTorch from outside (``torch.tensor`` of Python numbers, ``from_numpy``)
_ATEN_LIFTING = frozenset({"lift", "lift_fresh", "lift_fresh_copy"})
#: steps a learner may take on a whole row of scores before cutting it into blocks, because they give each
#: score a new value of its own and compute nothing across the row: scaling it (``scores * log2(e)`` for
#: ``exp2``), sanitising it (``nan_to_num``, ``where(isnan(s), -inf, s)``, ``clamp``) or padding it with
#: ``-inf`` to a whole number of blocks. Their results carry where each value came from (see :meth:`_carry`),
#: so what is computed with them is judged as if computed with the scores; a maximum, an exponential or a
#: sum is not among them
_REVALUING = frozenset(
    {
        "mul",
        "div",
        "add",
        "sub",
        "neg",
        "nan_to_num",
        "where",
        "masked_fill",
        "clamp",
        "clamp_min",
        "clamp_max",
        "constant_pad_nd",
    }
)
#: tests of each score on its own that give a mask and no value (a sanitising step, as above)
_ATEN_CHECKING = frozenset({"isnan", "isinf", "isfinite", "isposinf", "isneginf"})


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
#: (``scores[..., a:b]``, ``scores.split(block)``, ``scores[r]``) without counting as computed at once;
#: what is then computed with the part is looked at
_SELECTING = frozenset(
    {
        "__getitem__",
        "narrow",
        "narrow_copy",
        "index_select",
        "gather",
        "take_along_dim",
        "split",
        "chunk",
        "unbind",
        "tensor_split",
        "unfold",
        "flip",
        "fliplr",
        "flipud",
        "roll",
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
    The inputs and outputs of an operation are looked at, except for operations that only select part
    of a tensor (indexing, ``split``, ``narrow``...) or copy one, so that reading a full row of scores
    block by block is fine but computing with it at once is recorded. A 2-D ``(batch, rows)`` tensor (one
    number per query, such as a running maximum) is not a block. With ``outside_only``, only operations
    called from code outside the ``attnbook`` package are recorded (a learner's function); ``on_inside``
    is then called (with the class) at the first operation made from inside the package after recorded
    ones, for example by a grader that compares the learner's result.

    The grader does more: its guard hands the watch every operation of the learner's call seen at
    PyTorch's dispatcher (:meth:`observer`, :meth:`observe`), which no conversion of the tensors hides,
    and then only that record counts; it judges the record right after the call (:meth:`settle`).
    Subclasses hold the settings; :func:`watch_scores` makes a fresh one per use.
    """

    rows: int = 0
    keys: int = 0
    batch: int = 0
    exempt: frozenset = frozenset()
    outside_only: bool = False
    on_inside = None
    widths: list
    ran: bool = False
    #: the record was judged (``on_inside``) since the last :meth:`settle`
    seen: bool = False
    #: the grader's dispatch mode records the operations (:meth:`observer`); the subclass then does not
    by_dispatch: bool = False
    #: tensors joined from parts (``torch.cat``), by :func:`_key`: ``(tensor, width of what was joined)``
    joined: dict
    #: one number per query computed from a block (its maximum or sum), by :func:`_key`
    summaries: dict
    #: names this watch on the trusted grader's wire (see :meth:`wire_spec`)
    token: str = ""
    #: the factory that makes the same watch in another process (``"module:function"``)
    wire_name: str = "attnbook.blockwise:watch_scores"
    #: the task's block size, to tell a second pass over the blocks (0: not looked for); see :meth:`_visit`
    block: int = 0
    #: the shapes of the watched tensors (each a contiguous tensor of its own)
    shapes: tuple = ()
    #: the call read a block again after it had moved on to others: a second pass over the keys
    second_pass: bool = False
    #: the most scores of a row (or keys) the call read out of PyTorch at once (:meth:`read_out`), and
    #: whether it brought values into PyTorch from outside (``torch.tensor`` of data, ``torch.from_numpy``)
    outside: int = 0
    lifted: bool = False
    #: per watched storage: its shape and where it starts (``origins``: the tensors watched when the watch
    #: was made; ``layouts``: copies of them made later, such as the grader's copy for each call); per
    #: (storage, context, outer index): the blocks read last, and the blocks it has moved on from
    origins: dict
    layouts: dict
    visits: dict
    #: per storage copied from a watched one (a clone, a selection such as ``index_select``, a join of its
    #: blocks, or the whole tensor transformed element by element, such as ``K * 2``): for each element of
    #: that storage, the position in the watched storage its value came from (-1: from elsewhere); kept
    #: with the copy itself, so that its memory is not reused by another tensor during the call
    carried: dict
    #: storages made during the call (never watched tensors of their own), and those made blank (zeros_like)
    made: set
    blank: dict
    #: vectors of fewer than ``rows`` numbers computed in the call, and the sizes of the groups of rows read
    #: together (see :meth:`_resolve`)
    vectors: list
    groups: set

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
                if not cls.by_dispatch and name not in _COPYING and name not in _SELECTING:
                    cls._look(args)
                    cls._look(list(kwargs.values()))
                    cls._look(out)
        # (with the dispatcher's record the grader judges right after the call, with settle(); an operation
        # seen as the package's own during the call, such as one run by TorchScript, is not the end of it)
        if not outside and cls.ran and cls.on_inside is not None and not cls.by_dispatch:
            cls.ran, cls.seen = False, True
            cls._resolve()
            cls._forget_call()
            cls.on_inside(cls)
        return out

    @classmethod
    def _width(cls, value: torch.Tensor) -> int:
        """How many keys (scores of a row) ``value`` holds for each query, judged by its shape: 0 if it
        is not a block of scores, 1 for a number per query (a running maximum, ``(R, 1)`` or ``(R,)``)."""
        if not value.is_floating_point() or value.dim() == 0:
            return 0
        if value.dim() == 1:  # one query's scores, (w,), or one number per query, (rows,)
            w = value.shape[0]
            return 1 if w == cls.rows else 0 if w in cls.exempt else int(w)
        a, b = value.shape[-2], value.shape[-1]
        if value.dim() == 2 and a == cls.batch and b == cls.rows:
            return 1  # a number per query, (B, T_q): a running maximum or sum, not scores
        if a == cls.rows:
            return 0 if b in cls.exempt else int(b)
        if b == cls.rows:
            return 0 if a in cls.exempt else int(a)
        if value.dim() >= 3 and value.shape[-3] == cls.rows and a not in cls.exempt and b not in cls.exempt:
            return int(a * b)  # a row of scores cut into blocks, all of them at once: (rows, n, w)
        if (
            value.dim() == 3
            and cls.batch
            and value.shape[0] == cls.batch
            and a < cls.rows
            and a not in cls.exempt
        ):
            return 0 if b in cls.exempt else int(b)  # a tile of queries: (B, some queries, w)
        if cls.keys > 1 and b == cls.keys and a not in cls.exempt:
            return int(b)  # every key, for a part of the queries
        return 0

    @classmethod
    def _look(cls, value, depth: int = 0) -> None:
        if isinstance(value, torch.Tensor):
            joined = cls.joined.get(_key(value)) if cls.joined else None
            read = cls._read_width(value)
            w = max(joined[1] if joined is not None else cls._width(value), read)
            if w > 1 and value.dim() == 1 and not read and joined is None and w < cls.rows:
                cls.vectors.append(w)  # w scores of one row, or one number for each of w rows: see _resolve
            elif w > 1:
                cls.widths.append(w)
        elif isinstance(value, (list, tuple)) and depth < 3:
            for v in value:
                cls._look(v, depth + 1)

    @classmethod
    def _score_rows(cls, key) -> tuple | None:
        """The layout of the watched storage ``key`` if it holds rows of scores, ``(rows, keys)``, else None."""
        layout = cls.layouts.get(key) or cls.origins.get(key)
        if layout is None or not cls.block:
            return None
        shape = layout[0]
        return layout if len(shape) >= 2 and shape[-2] == cls.rows and shape[-1] == cls.keys else None

    @classmethod
    def _holds_scores(cls, t: torch.Tensor) -> bool:
        """Whether ``t`` is a view of the watched rows of scores, or a copy of them (see :meth:`_carry`)."""
        key = _storage_key(t)
        entry = cls.carried.get(key)
        return cls._score_rows(entry[0] if entry is not None else key) is not None

    @classmethod
    def _read_width(cls, value: torch.Tensor) -> int:
        """How many scores of one row ``value`` reads, by where its values lie in the watched rows of scores
        (a view of them, or a copy): the most of any one row. A block of a few rows at a time, ``(2, w)``,
        or of one row kept 2-D, ``(1, w)``, is ``w`` wide, whatever its shape says. 0 if ``value`` holds no
        scores."""
        if not cls.block or value.numel() == 0 or value.numel() > 4096 or not value.is_floating_point():
            return 0
        if not cls._holds_scores(value):  # (cheap: before the positions are read)
            return 0
        found = cls._sources(value)
        layout = None if found is None else cls._score_rows(found[0])
        if layout is None:
            return 0
        offset, per_row = layout[1], {}
        for p in _ints(found[1]):
            if p >= 0:
                per_row.setdefault((p - offset) // cls.keys, set()).add((p - offset) % cls.keys)
        if len(per_row) > 1:
            cls.groups.add(len(per_row))
        return max((len(keys) for keys in per_row.values()), default=0)

    @classmethod
    def read_out(cls, value: torch.Tensor) -> None:
        """The learner's function read ``value`` out of PyTorch (``.tolist()``, ``.numpy()``, ``.item()``,
        ``np.asarray``...), where the watch cannot see what is computed with it: what it holds of the
        watched tensors counts as read at once, by the widths (the scores of a row, or the keys, read out
        together) and for a second pass (reading every score out one by one, then the blocks again). The
        widths count only if the call also brought values into PyTorch from outside (``torch.tensor`` of
        data, ``torch.from_numpy``): without that, what was read out was only looked at (printed)."""
        if not cls.rows or not cls.block:
            return
        with torch._C.DisableTorchFunctionSubclass():
            cls.ran = True
            cls._register([value])  # (the first thing the call does with a watched tensor may be this)
            cls.outside = max(cls.outside, cls._read_width(value), cls._keys_read(value))
            cls._visit([value], reading_out=True)

    @classmethod
    def _keys_read(cls, value: torch.Tensor) -> int:
        """How many keys of one batch item ``value`` holds, by where its values lie in the watched K or V
        (a view of them, or a copy); 0 if none."""
        if value.numel() == 0 or value.numel() > 4096:
            return 0
        found = cls._sources(value)
        if found is None:
            return 0
        layout = cls.layouts.get(found[0]) or cls.origins.get(found[0])
        if layout is None or len(layout[0]) < 2 or layout[0][-2] != cls.keys:
            return 0
        shape, offset = layout
        keys: dict[int, set] = {}
        for p in _ints(found[1]):
            if p >= 0:
                p -= offset
                keys.setdefault(p // (shape[-1] * cls.keys), set()).add((p // shape[-1]) % cls.keys)
        return max((len(k) for k in keys.values()), default=0)

    @classmethod
    def _resolve(cls) -> None:
        """Record the vectors of ``w < rows`` numbers computed in the call (not read from the scores) that
        were not one number for each row of a group of ``w`` rows the call read together: a function that
        reads the rows two at a time keeps its running maximum as a ``(2,)`` vector, which is no block of 2
        scores. (A block of a row read as a vector is recorded by where it lies, whatever its length.) And
        forget what the call read out of PyTorch if it brought nothing back in (see :meth:`read_out`)."""
        cls.widths.extend(w for w in cls.vectors if w not in cls.groups)
        cls.vectors = []
        if not cls.lifted:  # values read out and nothing brought back: a look (a print), not a computation
            cls.outside = 0

    # The subclass sees the operations made on watched tensors through Python; a learner's function can
    # step around it (a C-level conversion to a plain tensor, or torch._C.DisableTorchFunctionSubclass).
    # So the grader also looks at every operation the learner's call makes, at PyTorch's dispatcher,
    # where neither hides anything: the grader's ForbiddenCallGuard runs a dispatch mode while the
    # function runs and hands each operation to :meth:`observe` (see attnbook.grading.engine).

    @classmethod
    def observer(cls):
        """:meth:`observe`, for the grader's guard; from now on only the dispatcher's record counts (it
        sees every operation the subclass sees, and more)."""
        cls.by_dispatch = True
        return cls.observe

    @classmethod
    def observe(cls, func, args, kwargs, out) -> None:
        """One operation of the learner's call, seen at the dispatcher (``func`` an ATen operator):
        recorded like an operation on a watched tensor, whatever tensors it was made on. Operations on
        no tensor (creating one, ``torch.full``) and ones that only select part of a tensor, copy it or
        relabel it (a view) are not looked at: what is then computed with the part, copy or view is.
        Joining tensors (``torch.cat``, ``torch.stack``) gives a tensor as wide as its parts together,
        less one running number per query (``torch.cat([m, block])`` is one block wide)."""
        if not cls.rows:
            return
        name = getattr(getattr(func, "overloadpacket", None), "__name__", "") or _op_name(func)
        if name in _ATEN_LIFTING:
            cls.lifted = True
        with torch._C.DisableTorchFunctionSubclass():
            tensors = [t for t in _flat((*args, *kwargs.values())) if isinstance(t, torch.Tensor)]
            if not tensors:
                if cls.block and isinstance(out, torch.Tensor):
                    cls.made.add(_storage_key(out))
                return  # a tensor made from numbers alone
            cls.ran = True
            revalued = False  # a whole row of scores given new values one by one (see _REVALUING)
            if cls.block:
                cls._register(tensors)
                if isinstance(out, torch.Tensor):
                    carried = cls._carry(name, func, args, kwargs, tensors, out)
                    revalued = carried and name in _REVALUING and cls._holds_scores(out)
                    made = _storage_key(out)
                    if made not in cls.layouts and made not in cls.origins:
                        cls.made.add(made)
                if name in _ATEN_CHECKING and all(cls._holds_scores(t) for t in tensors):
                    return
            if name in _ATEN_COPYING or name in _ATEN_SELECTING or name in _ATEN_RELABELLING:
                if name not in _ATEN_SELECTING and cls.joined and isinstance(out, torch.Tensor):
                    cls._carry_joined(tensors[0], out)  # a view or copy of a joined tensor
                return
            copy_join = (
                name in _ATEN_JOINING and isinstance(out, torch.Tensor) and _storage_key(out) in cls.carried
            )
            if cls.block and not copy_join:  # (a join of blocks that copies watched values is not a read of
                # them, as a clone is not: what is computed with the copy is)
                cls._visit(tensors, joining=name in _ATEN_JOINING)
            if revalued:
                return  # what is computed with the new values is looked at
            if name in _ATEN_JOINING and isinstance(out, torch.Tensor):
                widths = [cls._joined_width(t) for t in tensors]
                ones = sum(1 for w in widths if w == 1)
                cls.joined[_key(out)] = (out, sum(w for w in widths if w > 1) + max(ones - 1, 0))
                return
            # an element-wise step on a joined tensor (its exponentials) counts as that tensor; one on stacked
            # summaries (maxima less their maximum, width 0) is no block, so it is carried before the look
            source = None
            if cls.joined and isinstance(out, torch.Tensor):
                source = next((t for t in tensors if t.shape == out.shape and _key(t) in cls.joined), None)
                if source is not None and cls.joined[_key(source)][1] == 0:
                    cls._carry_joined(source, out)
            cls._look(tensors)
            cls._look(out)
            if (
                isinstance(out, torch.Tensor)
                and cls._width(out) == 1
                and any(cls._width(t) > 1 for t in tensors)
            ):
                cls.summaries[_key(out)] = out  # one number per query made from a block: its maximum, sum
            if source is not None:
                cls._carry_joined(source, out)

    # A second pass. Reading the keys twice, first for the maxima and then again for the sums, gives the
    # right values from blocks of the right width, without the rescaling that makes the online softmax
    # one pass. So the watch also follows which keys each operation reads from the watched tensors'
    # memory: a view of a row of scores, or of the rows of K (and V). Per row of scores (per batch item
    # and per query operand for K: a tile of queries may read every key block again), reading a block
    # again after having moved on to another one is a second pass. A read of every block at once (a copy
    # of the whole input, say) does not move on; copies and selections are not reads (what is computed
    # with them is, if it is still a view).

    @classmethod
    def _register(cls, tensors) -> None:
        """Note the memory of the watched tensors (the arguments, or views of them), and its shape."""
        for t in tensors:
            key = _storage_key(t)
            # a tensor made in the call, even of a watched shape, is not watched itself: a copy made in the
            # call is followed back to the watched tensor it was copied from
            if (
                isinstance(t, cls)
                and key not in cls.layouts
                and key not in cls.carried
                and key not in cls.made
            ):
                base = t if t._base is None else t._base
                shape = tuple(base.shape)
                if shape in cls.shapes and base.is_contiguous():
                    cls.layouts[_storage_key(t)] = (shape, base.storage_offset())

    @classmethod
    def _layout(cls, t: torch.Tensor) -> tuple | None:
        key = _storage_key(t)
        return cls.layouts.get(key) or cls.origins.get(key)

    @classmethod
    def _queries(cls, tensors, t) -> tuple | None:
        """Which queries an operation that reads the keys ``t`` computes for: the memory positions of a
        view of Q, or ``("all",)`` for a tensor of Q's whole shape (Q scaled, say); None if it cannot
        tell (a tile of a tensor made from Q), and then the read is not followed."""
        for u in tensors:
            if u is t:
                continue
            layout = cls._layout(u)
            if layout is not None and len(layout[0]) >= 2 and layout[0][-2] == cls.rows and u.numel() <= 4096:
                return ("q", *_positions(u))
            found = cls._sources(u) if layout is None else None
            if found is not None:
                source = cls.layouts.get(found[0]) or cls.origins.get(found[0])
                if source is not None and len(source[0]) >= 2 and source[0][-2] == cls.rows:
                    return ("q", *(p for p in _ints(found[1]) if p >= 0))
        for u in tensors:
            if u is not t and any(
                len(sh) >= 2 and sh[-2] == cls.rows and tuple(u.shape) == sh for sh in cls.shapes
            ):
                return ("all",)
        return None

    @classmethod
    def _visit(cls, tensors, joining: bool = False, reading_out: bool = False) -> None:
        for t in tensors:
            if t.numel() == 0 or t.numel() > 4096:
                continue
            storage = _storage_key(t)
            layout = cls._layout(t) if storage not in cls.carried else None
            if layout is not None:
                positions = _positions(t)
            else:  # a copy of a watched tensor is read: the watched tensor is, where the values came from
                found = cls._sources(t)
                if found is None:
                    continue
                storage = found[0]
                layout = cls.layouts.get(storage) or cls.origins.get(storage)
                positions = [p for p in _ints(found[1]) if p >= 0]
                if layout is None or not positions:
                    continue
            shape, offset = layout
            if shape[-1] == cls.keys:  # a row of scores: (rows, keys)
                key_stride, context = 1, None
            elif len(shape) >= 2 and shape[-2] == cls.keys and not joining:  # K or V: (batch, keys, d)
                # (read out of PyTorch, keys serve every query: what is done with them is not seen)
                key_stride = shape[-1]
                context = ("out",) if reading_out else cls._queries(tensors, t)
                if context is None:
                    continue
            else:
                continue
            reads: dict[int, set] = {}
            for p in positions:
                p -= offset
                key = (p // key_stride) % cls.keys
                reads.setdefault(p // (key_stride * cls.keys), set()).add(key // cls.block)
            n_blocks = -(-cls.keys // cls.block)
            for outer, blocks in reads.items():
                if len(blocks) == n_blocks:
                    continue  # every block at once: not a move from one block to the next
                state = cls.visits.setdefault((storage, context, outer), [set(), set()])
                last, left = state
                if blocks & left:
                    cls.second_pass = True
                if blocks != last:
                    left |= last - blocks
                    state[0] = blocks

    # Copies. A second pass may read a copy of the input rather than the input: a clone made first, the
    # blocks selected with index_select or gather, the blocks joined again with torch.cat, or K * 2. So
    # a copy carries, element by element, the position in the watched tensor its value came from, and
    # reading the copy counts as reading the watched tensor there. What is computed from a block (its
    # exponentials, its difference from the maximum) is not a copy and carries nothing: an answer may keep
    # such values; only a transform of the whole watched tensor (K * 2, scores.double()) is carried, and
    # where / masked_fill, which keep the values they select, also of a block. A tensor made during the
    # call is never watched itself, even of the watched shape: copy_ into it is followed like a clone.

    @classmethod
    def _sources(cls, t: torch.Tensor) -> tuple | None:
        """``(key of a watched storage, int64 tensor of t's shape)``: for each element of ``t``, its position in
        that watched storage (-1: from elsewhere); None if ``t`` holds no watched values (or is large)."""
        if t.numel() == 0 or t.numel() > 4096:
            return None
        try:
            key = _storage_key(t)
            if key not in cls.carried and (key in cls.layouts or key in cls.origins):
                return key, torch.tensor(_positions(t), dtype=torch.int64).reshape(t.shape)
            entry = cls.carried.get(key)
            if entry is None:
                return None
            source, table, _ = entry
            return source, table[torch.tensor(_positions(t), dtype=torch.int64)].reshape(t.shape)
        except (RuntimeError, IndexError):  # a storage without data, or resized since
            return None

    @classmethod
    def _carry(cls, name: str, func, args, kwargs, tensors, out: torch.Tensor) -> bool:
        """Record where ``out``'s values came from, if from a watched tensor (see above); True if they did."""
        if out.numel() == 0 or out.numel() > 4096 or not out.is_floating_point():
            return False
        out_key = _storage_key(out)
        if out_key in cls.layouts or out_key in cls.origins:
            return False  # the watched tensor itself: a view of it, or written in place
        source, positions = None, None
        try:
            if name in _ATEN_JOINING:
                parts = args[0] if args and isinstance(args[0], (list, tuple)) else ()
                found = [cls._sources(u) if isinstance(u, torch.Tensor) else None for u in parts]
                keys = {f[0] for f in found if f is not None}
                if len(keys) == 1:  # parts of one watched tensor (and other values)
                    source = keys.pop()
                    maps = [
                        f[1]
                        if f is not None and f[0] == source
                        else torch.full(tuple(u.shape), -1, dtype=torch.int64)
                        for u, f in zip(parts, found)
                    ]
                    positions = func(maps, *args[1:], **kwargs)
            elif name in ("copy_", "_copy_from"):  # copy_(dst, src); _copy_from(src, dst)
                src = args[1] if name == "copy_" else args[0]
                found = cls._sources(src) if isinstance(src, torch.Tensor) else None
                if found is not None:
                    source, positions = found[0], found[1].expand(out.shape)
            elif name == "constant_pad_nd":  # padded with a number: -1 where the padding is
                found = cls._sources(args[0]) if args and isinstance(args[0], torch.Tensor) else None
                if found is not None:
                    source, positions = found[0], func(found[1], args[1], -1)
            elif name in _CARRYING_COPIES or name in _CARRYING_SELECTIONS:
                found = cls._sources(args[0]) if args and isinstance(args[0], torch.Tensor) else None
                if found is not None:
                    source = found[0]
                    if name in _CARRYING_SELECTIONS:
                        positions = func(found[1], *args[1:], **kwargs)
                    elif tuple(found[1].shape) == tuple(out.shape):
                        positions = found[1]
            elif name not in _ATEN_COPYING and name not in _ATEN_SELECTING and name not in _ATEN_RELABELLING:
                # element by element on the whole watched tensor, with numbers only (K * 2, scores / 8)
                many = [
                    u
                    for u in tensors
                    if u.numel() > 1 and u.is_floating_point() and _storage_key(u) not in cls.blank
                ]
                many = list({_key(u): u for u in many}.values())  # the same tensor twice is one input
                if len(many) == 1 and tuple(many[0].shape) == tuple(out.shape):
                    u = many[0]
                    key = _storage_key(u)
                    key = cls.carried[key][0] if key in cls.carried else key
                    layout = cls.layouts.get(key) or cls.origins.get(key)
                    keeps = name in _KEEPING_VALUES  # where, masked_fill: a selection of the values
                    if layout is not None and (keeps or u.numel() == math.prod(layout[0])):
                        found = cls._sources(u)
                        if found is not None:
                            source, positions = found
        except (RuntimeError, IndexError, TypeError, ValueError):
            source, positions = None, None
        if name in _BLANK and positions is None:
            cls.blank.setdefault(out_key, out)  # (kept: its memory is not reused by another tensor)
        if positions is None or tuple(positions.shape) != tuple(out.shape):
            entry = cls.carried.get(out_key)
            schema = getattr(func, "_schema", None)
            if entry is not None and schema is not None and schema.is_mutable:
                # written with other values: those positions no longer hold watched ones
                entry[1][torch.tensor(_positions(out), dtype=torch.int64)] = -1
            return False
        entry = cls.carried.get(out_key)
        if entry is None or entry[0] != source:
            size = out.untyped_storage().nbytes() // out.element_size()
            entry = (source, torch.full((size,), -1, dtype=torch.int64), out)
            cls.carried[out_key] = entry
        entry[1][torch.tensor(_positions(out), dtype=torch.int64)] = positions.reshape(-1)
        return True

    @classmethod
    def _joined_width(cls, part: torch.Tensor) -> int:
        """How wide a part joined to others counts: a joined tensor by what it joined, a block's summary
        (its maximum, its sum) as nothing (summaries of blocks may be combined at once), otherwise
        by its shape."""
        key = _key(part)
        if key in cls.joined:
            return cls.joined[key][1]
        return 0 if key in cls.summaries else cls._width(part)

    @classmethod
    def _carry_joined(cls, source: torch.Tensor, out: torch.Tensor) -> bool:
        joined = cls.joined.get(_key(source))
        if joined is not None:
            cls.joined[_key(out)] = (out, joined[1])
        return joined is not None

    @classmethod
    def settle(cls) -> None:
        """After the learner's call: judge its record now (``on_inside``), rather than at the grader's
        next operation on a watched tensor. A call in which no operation on a tensor was seen at all
        (neither through the subclass nor at the dispatcher) hid its work from the watch."""
        if cls.on_inside is None:
            return
        ran, seen = cls.ran, cls.seen
        cls.ran = cls.seen = False
        cls._resolve()
        cls._forget_call()
        if ran:
            cls.on_inside(cls)
        elif cls.rows and cls.by_dispatch and not seen:  # (seen: judged already, at an operation of the
            # grader's; without the dispatcher's record, operations made inside this package are not seen)
            cls.on_inside(cls, unseen=True)

    @classmethod
    def discard(cls) -> None:
        """Forget the record of a call that did not return (it timed out, or raised)."""
        cls.ran = cls.seen = cls.second_pass = False
        cls.widths, cls.vectors, cls.outside, cls.lifted = [], [], 0, False
        cls._forget_call()

    @classmethod
    def _forget_call(cls) -> None:
        """Drop what was kept about one call's tensors (joined ones, summaries, the blocks each read): a
        record is judged once."""
        cls.joined, cls.summaries, cls.layouts, cls.visits, cls.carried = {}, {}, {}, {}, {}
        cls.made, cls.blank, cls.groups = set(), {}, set()
        cls.lifted = False

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
        cls._resolve()
        widths = sorted(set(int(w) for w in cls.widths))
        if len(widths) > 512:  # the smallest and the largest widths are what a check needs
            widths = widths[:256] + widths[-256:]
        return {
            "name": cls.wire_name,
            "rows": int(cls.rows),
            "keys": int(cls.keys),
            "batch": int(cls.batch),
            "exempt": sorted(int(e) for e in cls.exempt),
            "token": cls.token,
            "widths": widths,
            "ran": bool(cls.ran),
            "block": int(cls.block),
            "second_pass": bool(cls.second_pass),
            "outside": int(cls.outside),
        }

    @classmethod
    def report(cls, widths, ran: bool, second_pass: bool = False, outside: int = 0) -> None:
        """The record of this watch's tensors in another process (the learner's call there)."""
        if ran:
            cls.widths = [int(w) for w in widths]
            cls.ran = True
            cls.second_pass = bool(second_pass)
            cls.outside = int(outside)
            cls.lifted = cls.outside > 0  # (the other process counted it only if values were brought back)


def _key(t: torch.Tensor) -> tuple:
    """A tensor's identity at the dispatcher: the same memory, seen the same way."""
    return (t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype)


def _storage_key(t: torch.Tensor) -> tuple:
    return (t.untyped_storage().data_ptr(), t.dtype)


def _positions(t: torch.Tensor):
    """The memory positions (in elements of the storage) that the view ``t`` covers."""
    positions = [t.storage_offset()]
    for size, stride in zip(t.shape, t.stride()):
        positions = [p + i * stride for p in positions for i in range(size)]
    return positions


def _ints(t: torch.Tensor) -> list:
    """The numbers of an int64 tensor the watch made (a map of positions), read from its memory: not with
    ``tolist()``, which the grader's guard takes for a learner reading a tensor out of PyTorch."""
    t = t.contiguous()
    return array.array("q", ctypes.string_at(t.data_ptr(), 8 * t.numel())).tolist()


def _flat(values, depth: int = 0):
    for v in values:
        if isinstance(v, (list, tuple)) and depth < 3:
            yield from _flat(v, depth + 1)
        else:
            yield v


def watch_scores(
    tensors,
    rows: int,
    exempt=(),
    outside_only: bool = False,
    on_inside=None,
    token: str = "",
    keys: int = 0,
    batch: int = 0,
    block: int = 0,
) -> list:
    """The ``tensors`` as :class:`ScoreWatch` tensors of one fresh subclass (they share one record).

    ``rows``: the number of queries (the axis a block of scores has besides its keys); ``exempt``: widths
    that are not blocks of keys (``d_k``, ``d_v``); ``keys``: the number of keys, to record the scores of
    every key for part of the queries (0: not recorded); ``batch``: the batch size, so that a ``(batch,
    rows)`` tensor (a number per query: a running maximum) is not taken for scores; ``block``: the task's
    block size, to record a second pass over the keys in ``second_pass`` (it needs ``keys``; 0: not looked
    for). The record is ``type(result[0]).widths``. ``token``
    names the watch on the trusted grader's wire (a fresh random one by default).
    """
    tensors = list(tensors)
    watch = type(
        "ScoreWatch",
        (ScoreWatch,),
        {
            "rows": int(rows),
            "keys": int(keys),
            "batch": int(batch),
            "exempt": frozenset(int(e) for e in exempt),
            "outside_only": outside_only,
            "on_inside": staticmethod(on_inside) if on_inside else None,
            "widths": [],
            "vectors": [],
            "groups": set(),
            "ran": False,
            "seen": False,
            "by_dispatch": False,
            "joined": {},
            "summaries": {},
            "block": int(block) if keys else 0,
            "shapes": tuple(tuple(int(n) for n in t.shape) for t in tensors),
            "second_pass": False,
            "outside": 0,
            "lifted": False,
            "origins": {
                _storage_key(t): (tuple(t.shape), t.storage_offset()) for t in tensors if t.is_contiguous()
            },
            "layouts": {},
            "visits": {},
            "carried": {},
            "made": set(),
            "blank": {},
            "token": str(token) or secrets.token_hex(8),
        },
    )
    return [t.as_subclass(watch) for t in tensors]
