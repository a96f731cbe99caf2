"""Set 10, the online softmax: a running maximum and sum, and exact attention one block of keys at a time.

Chapter 10 shows the loops for one row of scores and for one query; the set asks for them batched (rows
``(R, T_k)``, queries ``(B, T_q, d_k)``), with empty parts (``m = -inf``) handled.

**Block by block, checked.** In the blockwise tasks the case tensors are
:class:`attnbook.blockwise.ScoreWatch` tensors: every operation the learner's code makes on them (or on
tensors made from them) is looked at, and the widths of the blocks of scores it computes are recorded.
A block wider than ``block_size`` (the whole row at once, ``torch.logsumexp`` of the full row, the full
``Q @ Kᵀ``) or blocks never as wide as ``block_size`` (one key at a time) fail with a message that says so.
The grader also hands the record every operation of the learner's call seen at PyTorch's dispatcher
(``ForbiddenCallGuard``'s dispatch mode, see ``engine._OpWatch``), so a conversion of the tensors to plain
ones (``as_subclass`` called from C, ``torch._C.DisableTorchFunctionSubclass``) or TorchScript hides no
wide block (``tests/test_dispatch_watch.py``); a call in which no operation was seen at all fails as
``unwatched``. What it does not see: work done outside PyTorch on these tensors (NumPy, Python floats),
which fails other checks, and code that switches PyTorch's Python dispatch off through ``torch._C``. In trusted grading (``attnbook-grade``) the learner's function runs in another process: the
wire carries each watched tensor's settings as data, the kernel watches the learner's call there with the
same watch, and the record (the widths) comes back with the outputs to this watch, which judges it exactly
as after a local call (``tests/test_trusted_proxy.py``). That record is made in the learner's process, so
a learner who tampers with the watch there can hide a wide block; the values are still checked here. The sizes of every watched case are distinct (queries, ``d_k``, ``d_v``, block
widths) so that a width is never ambiguous; ``tests/test_catalogue_10.py`` checks that.
"""

from __future__ import annotations

import math
import re

import torch

from ... import blockwise as _book
from ...blockwise import watch_scores
from ..cases import generator, randn
from ..engine import (
    SUBCLASS_ESCAPES,
    TORCH_ATTENTION,
    Case,
    Fail,
    LearnerTimeout,
    Misconception,
    Task,
    _has_loop,
    _matmul_sizes,
    as_outputs,
    close,
    plain,
    raised_fail,
    time_limit,
)
from ..registry import register

NEG_INF = float("-inf")
TOL = 1e-9
#: the book's own implementations of these steps (and of attention): calling one earns 0
BOOK_RUNNING = (
    "attnbook.blockwise:running_max_sum",
    "attnbook.blockwise:online_softmax_attention",
    "attnbook.attention:*",
    *SUBCLASS_ESCAPES,  # a plain tensor made from a watched one hides how it is read
    *TORCH_ATTENTION,
)
BOOK_ONLINE = (
    "attnbook.blockwise:online_softmax_attention",
    "attnbook.blockwise:running_max_sum",
    "attnbook.attention:*",
    *SUBCLASS_ESCAPES,  # a plain tensor made from a watched one hides how it is read
    *TORCH_ATTENTION,
)


def _block_check(block_size: int, T_k: int, given_scores: bool):
    """``on_inside`` callback of a watched case: the learner's blocks must be ``block_size`` wide.
    ``given_scores``: the task is given a row of scores (10.running_max_sum), not Q, K and V."""

    def check(watch, unseen=False):
        widths, watch.widths = list(watch.widths), []
        second_pass, watch.second_pass = watch.second_pass, False
        outside, watch.outside = watch.outside, 0
        if unseen:
            raise Fail(
                "the grader saw no PyTorch operation on the scores your function was given, so it cannot "
                "tell how your function read them: it computes outside the grader's view. The task asks "
                "for PyTorch operations on the scores, one block at a time"
                if given_scores
                else "the grader saw no PyTorch operation on the Q, K and V your function was given, so it "
                "cannot tell how your function read them: it computes outside the grader's view. The task "
                "asks for PyTorch operations on the keys and values, one block at a time",
                "unwatched",
                "Work on the tensors you are given with torch operations, one block at a time.",
            )
        if block_size >= T_k:
            return
        if outside > block_size:
            raise Fail(
                f"your function read {outside} scores of a row out of PyTorch at once (with .numpy(), "
                ".tolist(), .item() or np.asarray), but block_size is "
                f"{block_size}: what is computed with values outside PyTorch the grader cannot see, so "
                "reading them out counts as working on them at once, and the task reads each row one block "
                "at a time"
                if given_scores
                else f"your function read {outside} keys out of PyTorch at once (with .numpy(), .tolist(), "
                f".item() or np.asarray), but block_size is {block_size}: what is computed with values "
                "outside PyTorch the grader cannot see, so reading them out counts as working on them at "
                "once, and the task reads the keys one block at a time",
                "read_out_at_once",
                "Compute with torch operations on one block at a time. To look at values while you work, "
                "print the tensor itself (print(block)).",
            )
        widest = max(widths, default=1)
        if widest > block_size and given_scores:
            hint = (
                "Slice the scores as scores[:, start:start + block_size] inside the loop, and work on that "
                "slice only."
            )
            if widest >= T_k:
                raise Fail(
                    f"your function worked on a whole row of {widest} scores at once, but block_size is "
                    f"{block_size}: the task reads each row one block at a time, and no step (the block's "
                    "maximum, its exponentials, their sum) may take more than block_size scores at once",
                    "block_size_ignored",
                    hint,
                )
            raise Fail(
                f"your function worked on {widest} scores of a row at once, but block_size is {block_size}: "
                "the task reads each row one block at a time, and no step (the block's maximum, its "
                "exponentials, their sum) may take more than block_size scores at once",
                "block_size_ignored",
                hint,
            )
        if widest > block_size:
            if widest >= T_k:
                raise Fail(
                    f"your function computed scores for all {widest} keys at once, but block_size is "
                    f"{block_size}: the task cuts the keys into blocks (cutting the queries into blocks "
                    "instead does not help), and no block of scores (nor its exponentials) may hold more "
                    "than block_size keys",
                    "block_size_ignored",
                    "Loop over the keys: slice K[:, start:start + block_size] (and the same rows of V) and "
                    "compute the scores of every query with that slice only.",
                )
            raise Fail(
                f"your function computed scores for {widest} keys at once, but block_size is {block_size}: "
                "the task reads the keys one block at a time, and no block of scores (nor its exponentials) "
                "may hold more than block_size keys",
                "block_size_ignored",
                "Slice the keys as K[:, start:start + block_size] (and the same rows of V) inside the loop, "
                "and compute the scores of that slice only.",
            )
        if block_size > 1 and widest < block_size:
            raise Fail(
                f"your function never worked on block_size = {block_size} scores at once (at most {widest}): "
                "read each row of scores in blocks of block_size, not fewer"
                if given_scores
                else f"your function never worked on block_size = {block_size} keys at once (at most {widest}): "
                "read the keys in blocks of block_size, not fewer",
                "blocks_too_small",
                "range(0, T_k, block_size) gives the start of each block.",
            )
        if second_pass:
            raise Fail(
                "your function reads the scores twice: it goes over the blocks of a row once (for the "
                "maximum) and then over the same blocks again (for the sum). That gives the right values, "
                "but it is not the online softmax, which reads each block once: when a block raises the "
                "running maximum, the running sum is moved to the new maximum with exp(m - m_new)"
                if given_scores
                else "your function reads the keys twice: it goes over the key blocks once (for the maximum) "
                "and then over the same blocks again (for the weights and the values). That gives the "
                "right output, but it is not the online softmax, which reads each block once: when a block "
                "raises the running maximum, l and acc are moved to the new maximum with exp(m - m_new)",
                "two_passes",
                "One loop over the blocks: m_new = max(m, block max); rescale the running sums by "
                "exp(m - m_new); add the block's own terms; m = m_new.",
            )

    return check


def _watched(tensors, rows, exempt, block_size, T_k, given_scores=False, batch=0):
    check = _block_check(block_size, T_k, given_scores)
    return tuple(
        watch_scores(
            tensors,
            rows=rows,
            exempt=exempt,
            outside_only=True,
            on_inside=check,
            keys=T_k,
            batch=batch,
            block=block_size,
        )
    )


def _plain(*tensors):
    return [t.as_subclass(torch.Tensor) if isinstance(t, torch.Tensor) else t for t in tensors]


# ------------------------------------------------------------------------------------------ 10.combine_max_sum


def _combine_ref(m1, l1, m2, l2):
    """Two partial (max, sum) pairs of one row -> the pair of the whole row. All (R,) -> (R,), (R,).
    Both parts empty (m1 = m2 = -inf): m = -inf and l = 0."""
    m = torch.maximum(m1, m2)
    safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))  # no (-inf) - (-inf)
    return m, l1 * torch.exp(m1 - safe) + l2 * torch.exp(m2 - safe)


def _combine_cases():
    g = generator(101)
    m1, m2 = randn(g, 5, scale=3.0), randn(g, 5, scale=3.0)
    l1, l2 = (
        1.0 + 4.0 * torch.rand(5, generator=g, dtype=torch.float64),
        1.0 + 4.0 * torch.rand(5, generator=g, dtype=torch.float64),
    )
    big1, big2 = randn(g, 3, scale=1e3), randn(g, 3, scale=1e3)
    lb1, lb2 = (
        1.0 + torch.rand(3, generator=g, dtype=torch.float64),
        1.0 + torch.rand(3, generator=g, dtype=torch.float64),
    )
    empty = torch.tensor([float("-inf"), 0.5], dtype=torch.float64)
    f64 = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    return [
        Case("R=5", (m1, l1, m2, l2), dims={"R": 5}, note="the larger maximum is sometimes m1, sometimes m2"),
        Case(
            "maxima of about ±1e3",
            (big1, lb1, big2, lb2),
            dims={"R": 3},
            note="exp(m) overflows: work with differences of maxima",
        ),
        Case(
            "an empty first part",
            (empty, f64(0.0, 2.0), f64(1.5, -0.5), f64(3.0, 1.0)),
            dims={"R": 2},
            note="m1 = -inf and l1 = 0: a part with no scores (all masked)",
        ),
        Case(
            "rows with empty parts",
            (
                f64(NEG_INF, 2.0, NEG_INF, -700.0),
                f64(0.0, 1.5, 0.0, 2.0),
                f64(NEG_INF, NEG_INF, 0.25, -710.0),
                f64(0.0, 0.0, 3.0, 1.0),
            ),
            dims={"R": 4},
            note="row 0: both parts empty (m = -inf, l = 0); rows 1, 2: one part empty; "
            "row 3: maxima far below 0",
        ),
    ]


def _combine_naive(m1, l1, m2, l2):
    """Right except where both parts are empty: (-inf) - (-inf) is NaN."""
    m = torch.maximum(m1, m2)
    return m, l1 * torch.exp(m1 - m) + l2 * torch.exp(m2 - m)


register(
    Task(
        id="10.combine_max_sum",
        title="combine the maximum and sum of two parts",
        points=2,
        reference=_combine_ref,
        cases=_combine_cases,
        output_names=("m", "l"),
        misconceptions=[
            Misconception(
                "both_empty_nan",
                "your l is NaN for a row where both parts are empty (m1 = m2 = -inf): the common maximum is then "
                "-inf, and -inf - (-inf) is NaN. Such a row has m = -inf and l = 0; make sure it survives",
                _combine_naive,
                hint="Subtract a maximum that is finite: torch.where(torch.isfinite(m), m, 0).",
            ),
            Misconception(
                "sum_not_rescaled",
                "you added l1 and l2 as they are: each was computed relative to its own maximum, so both have "
                "to be moved to the common maximum first",
                lambda m1, l1, m2, l2: (torch.maximum(m1, m2), l1 + l2),
                hint="l = l1·exp(m1 - m) + l2·exp(m2 - m).",
            ),
            Misconception(
                "rescaled_wrong_way",
                "your rescaling factors are upside down: a sum computed against a smaller maximum must shrink "
                "when it is moved to the larger common maximum, not grow",
                lambda m1, l1, m2, l2: (
                    torch.maximum(m1, m2),
                    l1 * torch.exp(torch.maximum(m1, m2) - m1) + l2 * torch.exp(torch.maximum(m1, m2) - m2),
                ),
            ),
            Misconception(
                "max_not_updated",
                "you kept m1 as the maximum: m must be the larger of m1 and m2 (element by element), and l relative to it",
                lambda m1, l1, m2, l2: (m1, l1 + l2 * torch.exp(m2 - m1)),
            ),
            Misconception(
                "maxima_added",
                "you added the two maxima: the maximum of the whole row is the larger of the two",
                lambda m1, l1, m2, l2: (
                    m1 + m2,
                    l1 * torch.exp(m1 - torch.maximum(m1, m2)) + l2 * torch.exp(m2 - torch.maximum(m1, m2)),
                ),
            ),
            Misconception(
                "second_not_rescaled",
                "you rescaled l1 but added l2 as it is: l2 was computed relative to m2, so it also has to be "
                "moved to the common maximum",
                lambda m1, l1, m2, l2: (
                    torch.maximum(m1, m2),
                    l1 * torch.exp(m1 - torch.maximum(m1, m2)) + l2,
                ),
            ),
            Misconception(
                "first_not_rescaled",
                "you rescaled l2 but added l1 as it is: l1 was computed relative to m1, so it also has to be "
                "moved to the common maximum",
                lambda m1, l1, m2, l2: (
                    torch.maximum(m1, m2),
                    l1 + l2 * torch.exp(m2 - torch.maximum(m1, m2)),
                ),
            ),
            Misconception(
                "swapped_outputs",
                "you returned (l, m): the task's order is (m, l), the maximum first",
                lambda m1, l1, m2, l2: tuple(reversed(_combine_ref(m1, l1, m2, l2))),
            ),
        ],
        hint="m = torch.maximum(m1, m2); l = l1·exp(m1 - m) + l2·exp(m2 - m), with a finite m to subtract.",
        # maxima of -inf (empty parts) have no meaningful gradient, and right answers differ there (maximum,
        # amax, where): the values are checked, not the gradients
        check_grad=False,
        atol=TOL,
        rtol=TOL,
    )
)

# ------------------------------------------------------------------------------------------ 10.running_max_sum


def _running_ref(scores, block_size):
    """Exact: m = max, l = Σ exp(scores - m) over the last axis. scores (R, T_k) -> (R,), (R,)."""
    (scores,) = _plain(scores)
    m = scores.amax(dim=-1)
    return m, torch.exp(scores - m[..., None]).sum(dim=-1)


def _blocks(T_k, block_size, drop_last=False):
    stop = T_k - T_k % block_size if drop_last else T_k
    return [(s, min(s + block_size, T_k)) for s in range(0, stop, block_size)]


def _running(
    scores,
    block_size,
    *,
    rescale="right",
    update_max=True,
    drop_last=False,
    m0=NEG_INF,
    shift="new",
    rescale_after=False,
    step=None,
    width=None,
):
    """The running maximum and sum with one of the slips switched on: ``rescale`` the factor (``"inverse"``
    upside down with the first block guarded, ``"inverse_raw"`` upside down and unguarded: exp(+inf) there),
    ``shift="block"`` the block's exponentials against the block's own maximum, ``rescale_after`` the
    factor applied after the block's terms are added, ``step`` the distance between block starts
    (``block_size - 1``: overlapping blocks), ``width`` the length of each slice (``block_size + 1``:
    slices that run one score into the next block)."""
    (scores,) = _plain(scores)
    m = torch.full(scores.shape[:-1], m0, dtype=scores.dtype)
    l = torch.zeros(scores.shape[:-1], dtype=scores.dtype)
    T_k = scores.shape[-1]
    if step is None and width is None:
        blocks = _blocks(T_k, block_size, drop_last)
    else:  # a step of 0 raises: not this slip
        blocks = [(s, min(s + (width or block_size), T_k)) for s in range(0, T_k, step or block_size)]
    for i, (a, b) in enumerate(blocks):
        block = scores[..., a:b]
        m_new = torch.maximum(m, block.amax(dim=-1)) if (update_max or i == 0) else m
        factor = {
            "right": torch.exp(m - m_new),
            "none": torch.ones_like(m),
            "inverse": torch.exp(m_new - m),
            "inverse_raw": torch.exp(m_new - m),
        }[rescale]
        if rescale != "inverse_raw":
            factor = torch.nan_to_num(factor, nan=0.0)
        against = block.amax(dim=-1) if shift == "block" else m_new
        terms = torch.exp(block - against[..., None]).sum(dim=-1)
        l = (l + terms) * factor if rescale_after else l * factor + terms
        m = m_new
    return m, l


def _modest(scores):
    """Raise unless every score is modest (|s| < 50): where exp() would overflow anyway, an answer without
    any maximum overflows too, and the stale maximum is not what its NaN shows."""
    if not bool((scores.abs() < 50).all()):
        raise ValueError()  # too large to tell a stale maximum from none: not this misconception


def _running_stale_max(scores, block_size):
    """Each block's exponentials taken against the maximum of the blocks before it (the old m): -inf in
    the first block, so exp() overflows there at once."""
    (scores,) = _plain(scores)
    _modest(scores)
    m = torch.full(scores.shape[:-1], NEG_INF, dtype=scores.dtype)
    l = torch.zeros(scores.shape[:-1], dtype=scores.dtype)
    for a, b in _blocks(scores.shape[-1], block_size):
        block = scores[..., a:b]
        m_new = torch.maximum(m, block.amax(dim=-1))
        l = l * torch.nan_to_num(torch.exp(m - m_new), nan=0.0) + torch.exp(block - m[..., None]).sum(dim=-1)
        m = m_new
    return m, l


STALE_MAX = (
    "you subtracted the maximum of the blocks before this one (the old m) from this block's scores: in the "
    "first block that maximum is still -inf, so exp() overflows at once, and later a score above the old "
    "maximum overflows too. Update the maximum with the block first, then subtract the new one"
)


def _running_own_max(scores, block_size):
    (scores,) = _plain(scores)
    m = torch.full(scores.shape[:-1], NEG_INF, dtype=scores.dtype)
    l = torch.zeros(scores.shape[:-1], dtype=scores.dtype)
    for block in scores.split(block_size, dim=-1):
        m = torch.maximum(m, block.amax(dim=-1))
        l = l + torch.exp(block - block.amax(dim=-1, keepdim=True)).sum(dim=-1)
    return m, l


def _running_cases():
    g = generator(10)
    base = randn(g, 3, 10, scale=2.0)
    increasing = torch.linspace(-5.0, 5.0, 7, dtype=torch.float64).repeat(3, 1)  # the max changes every block
    large = randn(g, 2, 9, scale=1e3)
    negative = -800.0 + randn(g, 5, 11)  # every score far below 0: exp(score) underflows to 0

    def case(name, scores, block, note):
        R, T_k = scores.shape
        (watched,) = _watched([scores], rows=R, exempt=(), block_size=block, T_k=T_k, given_scores=True)
        return Case(name, (watched, block), dims={"R": R, "T_k": T_k}, note=note)

    return [
        case("R=3, T_k=10, block 4", base, 4, "4 does not divide 10"),
        case("increasing scores, block 2", increasing, 2, "the maximum grows in every block"),
        case("R=3, T_k=10, block 1", base, 1, "one score at a time"),
        case("R=3, T_k=10, block 10", base, 10, "one block holds everything"),
        case("R=3, T_k=10, block 16", base, 16, "block larger than T_k"),
        case("scores of ±1e3, block 4", large, 4, "exp() overflows without the max"),
        case("scores near -800, block 3", negative, 3, "exp() underflows to 0 without the max"),
    ]


def _computed_outside_torch(case, failure, fn):
    """A function with no loop whose watch recorded no block of scores at all ("at most 1") did its work
    where the watch cannot see it, outside PyTorch: say that, not that its blocks were too small. Decided
    from what a proxy knows too (whether the function has a loop), so both graders word it alike."""
    if failure.diagnosis != "blocks_too_small" or not re.search(r"\(at\smost\s1\)", failure.message):
        return None
    if _has_loop(fn) is not False:  # a loop over single keys is what the block check says it is
        return None
    block_size = case.args[-1]
    if len(case.args) == 2:  # 10.running_max_sum: given a row of scores, not Q, K and V
        return Fail(
            "your function computes outside PyTorch: the grader saw no block of scores computed with "
            "PyTorch operations at all, and the function has no loop over blocks, so its work happens "
            "elsewhere (in NumPy, or on plain Python numbers taken out of the tensor). The task asks for "
            f"PyTorch operations on the scores it gives, one block of block_size = {block_size} scores at a "
            "time",
            "outside_torch",
            "Slice each row of scores into blocks and compute each block with torch operations.",
        )
    return Fail(
        "your function computes outside PyTorch: the grader saw no block of scores computed with PyTorch "
        "operations at all, and the function has no loop over blocks of keys, so its work happens elsewhere "
        "(in NumPy, or on plain Python numbers taken out of the tensors). The task asks for PyTorch operations "
        f"on the tensors it gives, one block of block_size = {block_size} keys at a time",
        "outside_torch",
        "Slice K and V into blocks and compute each block with torch operations.",
    )


def _rerun(fn, args, n: int):
    """The learner's function called again on ``args`` (plain tensors: no block watch), only to word a
    message whose verdict stands: its ``n`` outputs, or None if it raises or runs past 5 s. Done alike for
    a proxy (the call runs in the learner's process), so both graders word it alike."""
    try:
        with time_limit(5.0):
            return as_outputs(plain(fn(*args)), n)
    except (Exception, LearnerTimeout):
        return None


def _same(got, model) -> bool:
    return (
        got is not None
        and model is not None
        and len(got) == len(model)
        and all(close(g, w, TOL, TOL, equal_nan=True) for g, w in zip(got, model))
    )


_ONE_WIDER = re.compile(r"worked\son\s(\d+)\sscores\sof\sa\srow\sat\sonce,\sbut\sblock_size\sis\s(\d+)")


def _blocks_one_too_wide(case, failure, fn):
    """Blocks of block_size + 1 scores whose values are those of slices running one score past their block
    (``scores[:, start:start + block_size + 1]``): neighbouring blocks overlap. Say that, not only that the
    blocks are too wide. Told by the values of the learner's function on plain copies of the case."""
    match = _ONE_WIDER.search(failure.message) if failure.diagnosis == "block_size_ignored" else None
    if not match or int(match.group(1)) != int(match.group(2)) + 1:
        return None
    scores, block_size = _plain(*case.args)
    try:
        model = _running(scores, block_size, width=block_size + 1)
    except Exception:
        return None
    if _same(model, _running_ref(scores, block_size)) or not _same(
        _rerun(fn, (scores, block_size), 2), model
    ):
        return None
    wider = block_size + 1
    return Fail(
        f"your blocks are one score too wide: block_size + 1 = {wider} scores where block_size is "
        f"{block_size}. Each slice runs one score past the end of its block and takes the first score of "
        "the next block too, so neighbouring blocks overlap and those scores are counted twice in l",
        "blocks_overlap",
        "A slice start:stop holds stop - start elements: scores[:, start:start + block_size] is one block.",
    )


register(
    Task(
        id="10.running_max_sum",
        title="running maximum and sum of exponentials",
        points=3,
        reference=_running_ref,
        cases=_running_cases,
        output_names=("m", "l"),
        misconceptions=[
            Misconception(
                "sum_not_rescaled",
                "your running sum is not rescaled when the maximum changes: the old sum was computed relative to "
                "the old maximum, so it has to be moved to the new maximum before the new block is added",
                lambda s, b: _running(s, b, rescale="none"),
                hint="l = l·exp(m_old - m_new) + Σ exp(block - m_new).",
            ),
            Misconception(
                "rescaled_wrong_way",
                "you rescaled the running sum by exp(m_new - m_old), which makes it grow when the maximum "
                "grows; moved to a larger maximum, a sum must shrink",
                lambda s, b: _running(s, b, rescale="inverse"),
            ),
            Misconception(
                "rescaled_wrong_way",
                "your l is NaN from the first block on, while your m is right: you rescaled the running sum "
                "by exp(m_new - m_old), which is upside down. In the first block m_old is still -inf, so "
                "that factor is exp(+inf) = inf, and 0 · inf is NaN; after that it would make the sum grow "
                "when the maximum grows, where a sum moved to a larger maximum must shrink",
                lambda s, b: _running(s, b, rescale="inverse_raw"),
                hint="The factor that moves l from m_old to a larger m_new is below 1, and 0 in the first "
                "block: exp(m_old - m_new).",
            ),
            Misconception(
                "block_terms_own_max",
                "you rescale the running sum to the new running maximum, but take the block's exponentials "
                "against the block's own maximum: the terms added to l must be relative to the same maximum "
                "as l, the running maximum after this block",
                lambda s, b: _running(s, b, shift="block"),
            ),
            Misconception(
                "rescaled_after_adding",
                "you rescale the running sum after adding the block's terms: the factor then shrinks the new "
                "terms too, which are already relative to the new maximum (and in the first block, where the "
                "factor is 0, it wipes them out). Only the sum of the earlier blocks, relative to the old "
                "maximum, has to be moved",
                lambda s, b: _running(s, b, rescale_after=True),
            ),
            Misconception(
                "blocks_overlap",
                "your blocks overlap: each block starts at the last score of the one before, so those scores "
                "are counted twice in l. Every score belongs to exactly one block, and the next block starts "
                "right after the end of the previous one",
                lambda s, b: _running(s, b, step=b - 1),
            ),
            Misconception(
                "max_not_updated",
                "your maximum is the one of the first block only: it has to be updated with every block, as "
                "the largest score seen so far",
                lambda s, b: _running(s, b, update_max=False),
            ),
            Misconception(
                "last_block_dropped",
                "you dropped the last, shorter block: when block_size does not divide T_k the final block has fewer "
                "scores, but it still counts",
                lambda s, b: _running(s, b, drop_last=True),
            ),
            Misconception(
                "block_own_max",
                "each block's sum is taken against that block's own maximum and the sums are added as they "
                "are: they are relative to different maxima. Keep one running maximum, and move the running "
                "sum to it whenever it grows",
                lambda s, b: _running_own_max(s, b),
            ),
            Misconception(
                "max_starts_at_zero",
                "your running maximum starts at 0 instead of -inf: when every score of a row is far below 0, "
                "exp(score - 0) underflows to 0 and the sum is lost. Start from m = -inf (and l = 0)",
                lambda s, b: _running(s, b, m0=0.0),
            ),
            Misconception(
                "stale_max",
                STALE_MAX,
                _running_stale_max,
                hint="m_new = torch.maximum(m, block.amax(dim=-1)) first; then exp(block - m_new[:, None]).",
            ),
            Misconception(
                "sum_not_shifted",
                "your l is Σ exp(score) without subtracting the maximum: l is defined relative to m, which is "
                "also what keeps exp() from overflowing",
                lambda s, b: (
                    s.as_subclass(torch.Tensor).amax(dim=-1),
                    torch.exp(s.as_subclass(torch.Tensor)).sum(dim=-1),
                ),
            ),
        ],
        rewords=[_computed_outside_torch, _blocks_one_too_wide],
        # the gradients are checked too (no case has -inf scores or tied maxima, where right answers could
        # differ): values computed where the watch cannot see them (Python numbers read out through calls
        # made from C, operator.methodcaller on tolist) come back without the gradients that only the
        # blockwise computation itself gives
        hint="Start with m = -inf and l = 0; per block: m_new = max(m, block max); "
        "l = l·exp(m - m_new) + Σ exp(block - m_new); m = m_new.",
        forbidden=BOOK_RUNNING,
        shortcut_example=lambda scores, block_size: _book.running_max_sum(scores, block_size),
        atol=TOL,
        rtol=TOL,
    )
)

# ------------------------------------------------------------------------------------------ 10.online_softmax_attention


def _attention_ref(Q, K, V, block_size):
    Q, K, V = _plain(Q, K, V)
    w = torch.softmax(Q @ K.transpose(-1, -2) / math.sqrt(Q.shape[-1]), dim=-1)
    return w @ V  # (B, T_q, d_v)


def _online(
    Q,
    K,
    V,
    block_size,
    *,
    rescale_l=True,
    rescale_acc=True,
    update_max=True,
    divide=True,
    drop_last=False,
    scale=True,
    per_block_softmax=False,
    m0=NEG_INF,
    overwrite=False,
    divisor=None,
    inverse=False,
    stale=False,
    inverse_raw=False,
    values_first=False,
):
    """The blockwise attention with one of the slips switched on (``inverse_raw``: the rescaling factor
    upside down and the first block unguarded, exp(+inf) there; ``values_first``: every block's weights
    multiply the first rows of V)."""
    Q, K, V = _plain(Q, K, V)
    if stale:
        _modest(Q @ K.transpose(-1, -2) / math.sqrt(Q.shape[-1]))
    B, T_q, T_k = Q.shape[0], Q.shape[1], K.shape[1]
    m = torch.full((B, T_q, 1), m0, dtype=Q.dtype)
    l = torch.zeros((B, T_q, 1), dtype=Q.dtype)
    acc = torch.zeros((B, T_q, V.shape[-1]), dtype=Q.dtype)
    blocks = _blocks(T_k, block_size, drop_last)
    for i, (a, b) in enumerate(blocks):
        s = (
            Q
            @ K[:, a:b].transpose(-1, -2)
            / (divisor if divisor else math.sqrt(Q.shape[-1]) if scale else 1.0)
        )
        if per_block_softmax:
            acc = acc + torch.softmax(s, dim=-1) @ V[:, a:b] / len(blocks)
            continue
        m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True)) if (update_max or i == 0) else m
        factor = torch.exp(m_new - m) if (inverse or inverse_raw) else torch.exp(m - m_new)
        if inverse:
            factor = torch.nan_to_num(factor, nan=0.0, posinf=0.0)  # nothing accumulated yet
        p = torch.exp(s - (m if stale else m_new))
        l = (l * factor if rescale_l else l) + p.sum(dim=-1, keepdim=True)
        values = V[:, : b - a] if values_first else V[:, a:b]
        acc = p @ values if overwrite else (acc * factor if rescale_acc else acc) + p @ values
        m = m_new
    if per_block_softmax:
        return acc
    return acc / l if divide else acc


def _attention_cases():
    g = generator(100)
    Q, K, V = randn(g, 2, 6, 4, scale=2.0), randn(g, 2, 11, 4), randn(g, 2, 11, 5)

    def case(name, Q, K, V, block, note):
        (B, T_q, d_k), (T_k, d_v) = Q.shape, V.shape[1:]
        args = _watched([Q, K, V], rows=T_q, exempt=(d_k, d_v), block_size=block, T_k=T_k, batch=B)
        dims = {"B": B, "T_q": T_q, "T_k": T_k, "d_k": d_k, "d_v": d_v}
        return Case(name, (*args, block), dims=dims, note=note)

    cases = [
        case(f"T_k=11, block {b}", Q, K, V, b, note)
        for b, note in [
            (3, "3 does not divide 11: the last block has 2 keys"),
            (2, "the last block has 1 key"),
            (1, "one key at a time"),
            (11, "one block holds every key"),
            (16, "block larger than T_k"),
        ]
    ]
    Q2, K2, V2 = randn(g, 3, 5, 2, scale=1e3), randn(g, 3, 11, 2), randn(g, 3, 11, 6)
    cases.append(
        case(
            "scores of ±1e3, block 4",
            Q2,
            K2,
            V2,
            4,
            "exp() overflows unless the running maximum is subtracted",
        )
    )
    Q4, K4, V4 = -200.0 + randn(g, 2, 2, 4), 2.0 + 0.1 * randn(g, 2, 10, 4), randn(g, 2, 10, 5)
    cases.append(
        case(
            "every score near -800, block 3",
            Q4,
            K4,
            V4,
            3,
            "exp(score) underflows to 0 unless the running maximum is subtracted",
        )
    )
    Q3 = torch.linspace(-1.0, 1.0, 14, dtype=torch.float64).reshape(1, 2, 7)
    K3 = torch.arange(9, dtype=torch.float64)[None, :, None].expand(1, 9, 7).contiguous()
    V3 = randn(g, 1, 9, 4)
    cases.append(
        case(
            "maximum changes between blocks, block 3",
            Q3,
            K3,
            V3,
            3,
            "the scores grow (or fall) from key to key",
        )
    )
    return cases


def _first_values_block_always(case, fn) -> bool:
    """Whether ``fn`` multiplies every block's weights by the first block of values (``V[:, :block_size]``),
    told by its values on the case cut to whole blocks (where the last block is as long as the others, so
    nothing raises), when they tell it apart from the right answer."""
    Q, K, V, block_size = _plain(*case.args)
    T = K.shape[1] - K.shape[1] % block_size
    if T <= block_size:
        return False
    args = (Q, K[:, :T], V[:, :T], block_size)
    model = (_online(*args, values_first=True),)
    if _same(model, (_attention_ref(*args),)):
        return False
    return _same(_rerun(fn, args, 1), model)


def _values_block_not_keys_block(case, failure, fn):
    """A matrix product of a block's weights with values of other rows fails for the last, shorter block
    (or an empty one): say that the values' block is not the keys' block, not that a transpose is missing."""
    if failure.diagnosis != "raised" or not failure.error:
        return None
    sizes = _matmul_sizes(" ".join(failure.error[1].split()))
    if not sizes:
        return None
    keys, rows = int(sizes[0]), int(sizes[1])
    block_size, dims = case.args[-1], case.dims
    if (
        keys == rows
        or not 1 <= keys <= block_size
        or rows > block_size
        or {keys, rows} & {dims["d_k"], dims["d_v"]}
    ):
        return None
    if keys < rows == block_size and _first_values_block_always(case, fn):
        return raised_fail(
            failure.error,
            f"the last block of {keys} keys met a slice of V of length {rows}, the first block of values: "
            "every block's weights multiply the first rows of V, whatever block of keys they come from. The "
            "weights of a block belong to that block's keys, and multiply the values of the same keys (the "
            "same rows of V as of K)",
            case,
            "values_first_block",
            "Slice V with exactly the slice you use for K: V[:, start:start + block_size].",
        )
    return raised_fail(
        failure.error,
        f"a block of weights of width {keys} met a slice of V of length {rows}, so your block of values is not "
        "the block of keys. The weights of a block multiply the values of the same keys, the same rows of V as "
        "of K, in every block (the last, shorter one too)",
        case,
        "values_block_misaligned",
        "Slice V with exactly the slice you use for K: V[:, start:start + block_size].",
    )


register(
    Task(
        id="10.online_softmax_attention",
        title="attention with the online softmax, block by block",
        points=4,
        reference=_attention_ref,
        cases=_attention_cases,
        misconceptions=[
            Misconception(
                "sum_not_rescaled",
                "your running sum and running output are not rescaled when the maximum changes: both were "
                "computed relative to the old maximum, so both have to be moved to the new maximum before the "
                "new block is added",
                lambda Q, K, V, b: _online(Q, K, V, b, rescale_l=False, rescale_acc=False),
            ),
            Misconception(
                "output_not_rescaled",
                "you rescale the running sum but not the running output (the weighted sum of values): it was "
                "computed relative to the old maximum too, and needs the same factor",
                lambda Q, K, V, b: _online(Q, K, V, b, rescale_acc=False),
            ),
            Misconception(
                "only_output_rescaled",
                "you rescale the running output but not the running sum l: l was computed relative to the "
                "old maximum too, and needs the same factor",
                lambda Q, K, V, b: _online(Q, K, V, b, rescale_l=False),
            ),
            Misconception(
                "rescaled_wrong_way",
                "your rescaling factor is upside down (exp(m_new - m_old)): it makes the running sum and "
                "output grow when the maximum grows; moved to a larger maximum, they must shrink",
                lambda Q, K, V, b: _online(Q, K, V, b, inverse=True),
            ),
            Misconception(
                "scaled_by_d_v",
                "you divided the scores by √d_v, the width of the values; the scale is √d_k, the width of "
                "the queries and keys that the dot product sums over",
                lambda Q, K, V, b: _online(Q, K, V, b, divisor=math.sqrt(V.shape[-1])),
            ),
            Misconception(
                "scaled_by_d",
                "you divided the scores by d_k itself; the scale is its square root, √d_k",
                lambda Q, K, V, b: _online(Q, K, V, b, divisor=float(Q.shape[-1])),
            ),
            Misconception(
                "max_not_updated",
                "your maximum is the one of the first block only: update it with every block",
                lambda Q, K, V, b: _online(Q, K, V, b, update_max=False),
            ),
            Misconception(
                "no_final_division",
                "you forgot the final division: the output is the running weighted sum divided by the running "
                "sum l",
                lambda Q, K, V, b: _online(Q, K, V, b, divide=False),
            ),
            Misconception(
                "last_block_dropped",
                "you dropped the last, shorter block: when block_size does not divide T_k the final block has "
                "fewer keys, but they count",
                lambda Q, K, V, b: _online(Q, K, V, b, drop_last=True),
            ),
            Misconception(
                "not_scaled",
                "you did not scale the scores: divide Q Kᵀ by √d_k in every block",
                lambda Q, K, V, b: _online(Q, K, V, b, scale=False),
            ),
            Misconception(
                "max_starts_at_zero",
                "your running maximum starts at 0 instead of -inf: when every score of a query is far below 0, "
                "exp(score - 0) underflows to 0, and the output becomes 0 / 0. Start from m = -inf (and l = 0)",
                lambda Q, K, V, b: _online(Q, K, V, b, m0=0.0),
            ),
            Misconception(
                "values_overwritten",
                "your running output keeps only the last block's values: each block has to be added to what "
                "the earlier blocks gave (after rescaling it), not replace it",
                lambda Q, K, V, b: _online(Q, K, V, b, overwrite=True),
            ),
            *(
                # Both slips make every output NaN from the first block on (the output does not show which
                # step it was, unlike 10.running_max_sum's l, inf for one and NaN for the other): name both
                Misconception(
                    "first_block_overflow",
                    "your result is NaN from the first block on: there the running maximum is still -inf, "
                    "and a step of yours uses that old maximum where the new one belongs. Either the "
                    "block's scores are shifted by the maximum of the blocks before this one (the old m: "
                    "exp(score - m_old) overflows in the first block, and later for any score above the "
                    "old maximum), or the rescaling factor is upside down (exp(m_new - m_old) is exp(+inf) "
                    "= inf in the first block, and 0 · inf is NaN). Update the maximum with the block "
                    "first and shift by the new one; moved to a larger maximum, what was accumulated must "
                    "shrink",
                    fn,
                    hint="m_new = torch.maximum(m, scores.amax(dim=-1, keepdim=True)) first; then "
                    "exp(scores - m_new), and rescale l and acc by exp(m - m_new).",
                )
                for fn in (
                    lambda Q, K, V, b: _online(Q, K, V, b, stale=True),
                    lambda Q, K, V, b: _online(Q, K, V, b, inverse_raw=True),
                )
            ),
            Misconception(
                "values_first_block",
                "every block's weights multiply the first rows of V, its first block of values, whatever "
                "block of keys they come from: the weights of a block belong to that block's keys, and "
                "multiply the values of the same keys (the same rows of V as of K)",
                lambda Q, K, V, b: _online(Q, K, V, b, values_first=True),
                hint="Slice V with exactly the slice you use for K: V[:, start:start + block_size].",
            ),
            Misconception(
                "softmax_per_block",
                "you normalised each block on its own and averaged the blocks: a block's softmax only knows its "
                "own keys. Keep one running maximum and one running sum across all blocks",
                lambda Q, K, V, b: _online(Q, K, V, b, per_block_softmax=True),
            ),
        ],
        rewords=[_values_block_not_keys_block, _computed_outside_torch],
        hint="Keep m (B, T_q, 1), l (B, T_q, 1) and acc (B, T_q, d_v); for each block rescale l and acc by "
        "exp(m - m_new), add the block's exp(scores - m_new) terms, and return acc / l at the end.",
        forbidden=BOOK_ONLINE,
        shortcut_example=lambda Q, K, V, block_size: _book.online_softmax_attention(Q, K, V, block_size),
        atol=TOL,
        rtol=TOL,
    )
)
