"""The grader's look at PyTorch's dispatcher (engine._OpWatch): what the subclass watch and the profiler
cannot see.

Set 10's block watch is a tensor subclass: a learner's function could step around it without a call the
profiler sees (``operator.methodcaller('as_subclass', ...)``, ``functools.partial``, or
``torch._C.DisableTorchFunctionSubclass``) and earn every point with full attention; set 09's ban on
PyTorch's attention kernel could be stepped around through TorchScript. The guard now also runs a dispatch
mode while the learner's function runs, in both graders: every operation, however reached, is looked at.
These tests are the attacks (each earned full points before), the honest answers the old watch wrongly
failed, and the same verdicts through the trusted grader's proxy.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
import threading
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_engine_guard import _mha_with
from test_trusted_proxy import grade_through_proxy

from attnbook.grading import get_task, run_task


def _in_both(task_id, fn):
    """``fn`` graded by the in-Jupyter check and by the instructor's grader (through the trusted proxy)."""
    return run_task(get_task(task_id), fn), grade_through_proxy(task_id, fn)


def _full(Q, K, V):
    return torch.softmax(Q @ K.transpose(1, 2) / math.sqrt(Q.shape[-1]), dim=-1) @ V


def _full_row(scores):
    m = scores.amax(dim=-1)
    return m, torch.exp(scores - m[:, None]).sum(dim=-1)


_plain = operator.methodcaller("as_subclass", torch.Tensor)


def osa_methodcaller(Q, K, V, block_size):
    return _full(_plain(Q), _plain(K), _plain(V))


def osa_partial(Q, K, V, block_size):
    plain = functools.partial(torch.Tensor.as_subclass)
    return _full(plain(Q, torch.Tensor), plain(K, torch.Tensor), plain(V, torch.Tensor))


def osa_subclass_off(Q, K, V, block_size):
    with torch._C.DisableTorchFunctionSubclass():
        return _full(Q, K, V)


def osa_one_block_then_subclass_off(Q, K, V, block_size):
    Q @ K[:, :block_size].transpose(1, 2)  # one honest-looking block for the subclass's record
    with torch._C.DisableTorchFunctionSubclass():
        return _full(Q, K, V)


def osa_in_a_thread(Q, K, V, block_size):
    Q @ K[:, :block_size].transpose(1, 2)
    out = {}
    worker = threading.Thread(target=lambda: out.setdefault("o", _full(_plain(Q), _plain(K), _plain(V))))
    worker.start()
    worker.join()
    return out["o"]


def rms_methodcaller(scores, block_size):
    return _full_row(_plain(scores))


def rms_subclass_off(scores, block_size):
    with torch._C.DisableTorchFunctionSubclass():
        return _full_row(scores)


def osa_nothing_seen(Q, K, V, block_size):
    with torch._C._DisableTorchDispatch(), torch._C.DisableTorchFunctionSubclass():
        return _full(Q, K, V)


ESCAPES = [
    ("10.online_softmax_attention", osa_methodcaller),
    ("10.online_softmax_attention", osa_partial),
    ("10.online_softmax_attention", osa_subclass_off),
    ("10.online_softmax_attention", osa_one_block_then_subclass_off),
    ("10.running_max_sum", rms_methodcaller),
    ("10.running_max_sum", rms_subclass_off),
]


@pytest.mark.parametrize("task_id, fn", ESCAPES, ids=[fn.__name__ for _, fn in ESCAPES])
def test_full_attention_behind_a_conversion_is_seen_in_both_graders(task_id, fn):
    for result in _in_both(task_id, fn):
        assert result.points == 0 and result.diagnosis == "block_size_ignored", result.message
        assert "at once" in result.message


def test_full_attention_in_a_thread_is_seen_by_the_trusted_grader():
    # the trusted kernel watches the threads the function starts; check() in Jupyter does not
    result = grade_through_proxy("10.online_softmax_attention", osa_in_a_thread)
    assert result.points == 0 and result.diagnosis == "block_size_ignored", result.message


def test_a_function_whose_work_no_watch_sees_earns_nothing_and_is_told_why():
    for result in _in_both("10.online_softmax_attention", osa_nothing_seen):
        assert result.points == 0 and result.diagnosis == "forbidden_call", result.message
        assert "a tensor made or changed where the grader could not see it" in result.message


# ------------------------------------------------------------------------------------------------
# Honest answers the subclass watch alone failed
# ------------------------------------------------------------------------------------------------


def osa_stats_per_query(Q, K, V, block_size):
    """Right: the running maximum and sum kept as (B, T_q), not (B, T_q, 1)."""
    B, T_q, d_k = Q.shape
    m = torch.full((B, T_q), float("-inf"), dtype=Q.dtype)
    l = torch.zeros(B, T_q, dtype=Q.dtype)
    acc = torch.zeros(B, T_q, V.shape[-1], dtype=Q.dtype)
    for a in range(0, K.shape[1], block_size):
        s = Q @ K[:, a : a + block_size].transpose(1, 2) / math.sqrt(d_k)
        m_new = torch.maximum(m, s.amax(dim=-1))
        safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
        factor = torch.exp(m - safe)
        p = torch.exp(s - safe[..., None])
        l = l * factor + p.sum(dim=-1)
        acc = acc * factor[..., None] + p @ V[:, a : a + block_size]
        m = m_new
    return acc / l[..., None]


def rms_row_by_row(scores, block_size):
    """Right: one row at a time (a full row is selected, then read block by block)."""
    maxima, sums = [], []
    for r in range(scores.shape[0]):
        row = scores[r]
        m = torch.tensor(float("-inf"), dtype=scores.dtype)
        l = torch.tensor(0.0, dtype=scores.dtype)
        for a in range(0, row.shape[0], block_size):
            block = row[a : a + block_size]
            m_new = torch.maximum(m, block.max())
            safe = m_new if torch.isfinite(m_new) else torch.zeros_like(m_new)
            l = l * torch.exp(m - safe) + torch.exp(block - safe).sum()
            m = m_new
        maxima.append(m)
        sums.append(l)
    return torch.stack(maxima), torch.stack(sums)


@pytest.mark.parametrize(
    "task_id, fn",
    [("10.online_softmax_attention", osa_stats_per_query), ("10.running_max_sum", rms_row_by_row)],
    ids=["stats_per_query", "row_by_row"],
)
def test_right_answers_of_other_shapes_pass_in_both_graders(task_id, fn):
    for result in _in_both(task_id, fn):
        assert result.passed, result.message


# ------------------------------------------------------------------------------------------------
# Set 09: PyTorch's attention kernel behind TorchScript
# ------------------------------------------------------------------------------------------------


def _kernel(q, k, v):
    return torch._C._nn.scaled_dot_product_attention(q, k, v)


with warnings.catch_warnings():  # torch.jit.script is deprecated, and still there for a learner to use
    warnings.simplefilter("ignore", DeprecationWarning)
    _scripted_kernel = torch.jit.script(_kernel)


_compiled = torch.jit.CompilationUnit(
    "def attend(q, k, v):\n    return torch._scaled_dot_product_attention_math(q, k, v)[0]\n"
)


@pytest.mark.parametrize(
    "attend",
    [_scripted_kernel, _compiled.attend, lambda q, k, v: _scripted_kernel(q, k, v)],
    ids=["jit_script", "compilation_unit", "through_a_lambda"],
)
def test_the_attention_kernel_behind_torchscript_earns_nothing_in_both_graders(attend):
    fn = _mha_with(attend)
    for result in _in_both("09.multi_head_attention", fn):
        assert result.points == 0 and result.diagnosis == "forbidden_call", result.message
        assert "scaled_dot_product_attention" in result.message


def test_removing_the_dispatch_watch_is_tampering():
    from torch.utils._python_dispatch import _pop_mode

    def popped(x, W_q, W_k, W_v, W_o, h):
        _pop_mode()
        return _mha_with(torch.nn.functional.scaled_dot_product_attention)(x, W_q, W_k, W_v, W_o, h)

    result = run_task(get_task("09.multi_head_attention"), popped)
    assert result.points == 0 and result.diagnosis == "forbidden_call", result.message
    assert "removed the grader's watch over the operations" in result.message
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

    assert _get_current_dispatch_mode_stack() == []  # nothing of the grader's is left behind


# ------------------------------------------------------------------------------------------------
# Red team, round 5 (written without the grader's code): every one of these earned full points
# ------------------------------------------------------------------------------------------------


def _raw_thread(fn, *args):
    """``fn(*args)`` in a thread started without the threading module (which the guard watches)."""
    import _thread

    box = {}
    lock = _thread.allocate_lock()
    lock.acquire()

    def work():
        try:
            box["out"] = fn(*args)
        finally:
            lock.release()

    _thread.start_new_thread(work, ())
    lock.acquire()
    return box["out"]


def _in_threading_thread(fn, *args):
    box = {}
    worker = threading.Thread(target=lambda: box.setdefault("out", fn(*args)))
    worker.start()
    worker.join()
    return box["out"]


def rms_modes_off(scores, block_size):
    from torch.utils._python_dispatch import _disable_current_modes

    scores[:, :block_size].max(-1)  # one honest-looking block
    with _disable_current_modes(), torch._C.DisableTorchFunctionSubclass():
        return _full_row(scores)


def osa_dispatch_off(Q, K, V, block_size):
    Q @ K[:, :block_size].transpose(1, 2)
    with torch._C._DisableTorchDispatch(), torch._C.DisableTorchFunctionSubclass():
        return _full(Q, K, V)


def osa_raw_thread(Q, K, V, block_size):
    Q @ K[:, :block_size].transpose(1, 2)
    return _raw_thread(_full, _plain(Q), _plain(K), _plain(V))


def mha_kernel_in_a_raw_thread(x, W_q, W_k, W_v, W_o, h):
    return _mha_with(lambda q, k, v: _raw_thread(torch.nn.functional.scaled_dot_product_attention, q, k, v))(
        x, W_q, W_k, W_v, W_o, h
    )


def mha_kernel_in_a_thread(x, W_q, W_k, W_v, W_o, h):
    attend = torch.nn.functional.scaled_dot_product_attention
    return _mha_with(lambda q, k, v: _in_threading_thread(attend, q, k, v))(x, W_q, W_k, W_v, W_o, h)


def mha_kernel_from_c_with_modes_off(x, W_q, W_k, W_v, W_o, h):
    from torch.utils._python_dispatch import _disable_current_modes

    def attend(q, k, v):
        call = functools.partial(torch.nn.functional.scaled_dot_product_attention, q, k, v)
        with _disable_current_modes():
            return call()

    return _mha_with(attend)(x, W_q, W_k, W_v, W_o, h)


def fold_by_the_book_in_a_raw_thread(x, h):
    import attnbook.multihead as book

    y = _raw_thread(book.split_heads, x, h)
    return y.reshape(-1, *y.shape[2:])


ROUND_5 = [
    ("10.running_max_sum", rms_modes_off, "removed the grader's watch over the operations"),
    ("10.online_softmax_attention", osa_dispatch_off, "could not see it"),
    ("10.online_softmax_attention", osa_raw_thread, "could not see it"),
    ("09.multi_head_attention", mha_kernel_in_a_raw_thread, "could not see it"),
    ("09.multi_head_attention", mha_kernel_in_a_thread, "scaled_dot_product_attention"),
    ("09.multi_head_attention", mha_kernel_from_c_with_modes_off, "removed the grader's watch"),
    ("09.fold_heads", fold_by_the_book_in_a_raw_thread, "could not see it"),
]


@pytest.mark.parametrize("task_id, fn, says", ROUND_5, ids=[fn.__name__ for _, fn, _ in ROUND_5])
def test_work_hidden_from_the_watch_earns_nothing_in_both_graders(task_id, fn, says):
    for result in _in_both(task_id, fn):
        assert result.points == 0 and result.diagnosis == "forbidden_call", result.message
        assert says in result.message


def _update(m, l, block):
    m_new = torch.maximum(m, block.max(dim=1).values)
    return m_new, l * torch.exp(m - m_new) + torch.exp(block - m_new[:, None]).sum(dim=1)


def _start(scores):
    m = torch.full((scores.shape[0],), float("-inf"), dtype=scores.dtype)
    return m, torch.zeros_like(m)


def rms_max_by_stack(scores, block_size):
    m, l = _start(scores)
    for block in scores.split(block_size, dim=1):
        m_new = torch.stack([m, block.max(dim=1).values]).max(dim=0).values
        l = l * torch.exp(m - m_new) + torch.exp(block - m_new[:, None]).sum(dim=1)
        m = m_new
    return m, l


def rms_max_by_cat(scores, block_size):
    m = torch.full((scores.shape[0], 1), float("-inf"), dtype=scores.dtype)
    l = torch.zeros_like(m)
    for block in scores.split(block_size, dim=1):
        m_new = torch.cat([m, block], dim=1).amax(dim=1, keepdim=True)
        l = l * torch.exp(m - m_new) + torch.exp(block - m_new).sum(dim=1, keepdim=True)
        m = m_new
    return m[:, 0], l[:, 0]


def rms_rows_of_the_transpose(scores, block_size):
    turned, (m, l) = scores.T, _start(scores)
    for s in range(0, turned.shape[0], block_size):
        m, l = _update(m, l, turned[s : s + block_size].T)
    return m, l


def rms_index_select(scores, block_size):
    (m, l), T = _start(scores), scores.shape[1]
    for s in range(0, T, block_size):
        m, l = _update(m, l, scores.index_select(1, torch.arange(s, min(s + block_size, T))))
    return m, l


def osa_max_by_cat(Q, K, V, block_size):
    B, T_q, d = Q.shape
    m = Q.new_full((B, T_q, 1), float("-inf"))
    l, acc = Q.new_zeros((B, T_q, 1)), Q.new_zeros((B, T_q, V.shape[-1]))
    for k, v in zip(K.split(block_size, dim=1), V.split(block_size, dim=1)):
        s = Q @ k.mT / math.sqrt(d)
        m_new = torch.cat([m, s], dim=-1).amax(dim=-1, keepdim=True)
        factor, p = torch.exp(m - m_new), torch.exp(s - m_new)
        l, acc, m = l * factor + p.sum(dim=-1, keepdim=True), acc * factor + p @ v, m_new
    return acc / l


def rms_all_blocks_at_once(scores, block_size):
    """Wrong: a view of the row as blocks, every block's maximum in one step."""
    R, T = scores.shape
    pad = (-T) % block_size
    padded = torch.cat([scores, scores.new_full((R, pad), float("-inf"))], dim=1)
    blocks = padded.view(R, -1, block_size)
    m = blocks.amax(dim=(1, 2))
    return m, torch.exp(scores - m[:, None]).sum(dim=1)


@pytest.mark.parametrize(
    "task_id, fn",
    [
        ("10.running_max_sum", rms_max_by_stack),
        ("10.running_max_sum", rms_max_by_cat),
        ("10.running_max_sum", rms_rows_of_the_transpose),
        ("10.running_max_sum", rms_index_select),
        ("10.online_softmax_attention", osa_max_by_cat),
    ],
    ids=lambda v: getattr(v, "__name__", v),
)
def test_a_running_maximum_joined_with_a_block_or_a_view_of_the_row_is_fine(task_id, fn):
    for result in _in_both(task_id, fn):
        assert result.passed, result.message


def test_joining_blocks_or_viewing_the_row_as_blocks_still_reads_it_at_once():
    def rms_joined_blocks(scores, block_size):
        row = torch.cat(list(scores.split(block_size, dim=1)), dim=1)  # the blocks joined again
        m = row.amax(dim=1)
        return m, torch.exp(row - m[:, None]).sum(dim=1)

    for fn in (rms_joined_blocks, rms_all_blocks_at_once):
        for result in _in_both("10.running_max_sum", fn):
            assert result.points == 0 and result.diagnosis == "block_size_ignored", result.message


# ------------------------------------------------------------------------------------------------
# Red team, round 6: values written where no operation is seen, operators of one's own
# ------------------------------------------------------------------------------------------------


def _blocks_for_show(Q, K, V, block_size):
    """Every block of scores computed (so the block record looks right), and thrown away."""
    for a in range(0, K.shape[1], block_size):
        Q @ K[:, a : a + block_size].transpose(1, 2)


def rms_numpy_write(scores, block_size):
    for a in range(0, scores.shape[1], block_size):
        scores[:, a : a + block_size].amax(dim=-1)
    m, l = torch.zeros(scores.shape[0], dtype=scores.dtype), torch.zeros(scores.shape[0], dtype=scores.dtype)
    row = scores.detach().numpy()
    m.numpy()[:] = row.max(-1)
    l.numpy()[:] = np.exp(row - row.max(-1, keepdims=True)).sum(-1)
    return m, l


def osa_write_with_dispatch_off(Q, K, V, block_size):
    _blocks_for_show(Q, K, V, block_size)
    out = torch.zeros(Q.shape[0], Q.shape[1], V.shape[-1], dtype=Q.dtype)
    python_off = torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(torch._C.DispatchKey.Python))
    with python_off:
        out.copy_(_full(Q.detach(), K.detach(), V.detach()))
    return out


class _NumpyAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, Q, K, V, block_size):
        _blocks_for_show(Q, K, V, block_size)
        out = torch.zeros(Q.shape[0], Q.shape[1], V.shape[-1], dtype=Q.dtype)
        q, k, v = (t.detach().numpy() for t in (Q, K, V))
        s = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1])
        p = np.exp(s - s.max(-1, keepdims=True))
        out.numpy()[:] = (p / p.sum(-1, keepdims=True)) @ v
        ctx.save_for_backward(Q, K, V)
        return out

    @staticmethod
    def backward(ctx, grad):
        with torch.enable_grad():
            q, k, v = (t.detach().clone().requires_grad_() for t in ctx.saved_tensors)
            return (*torch.autograd.grad(_full(q, k, v), (q, k, v), grad), None)


def osa_numpy_in_an_autograd_function(Q, K, V, block_size):
    return _NumpyAttention.apply(Q, K, V, block_size)


@torch.library.custom_op("attnbook_tests::full_attention", mutates_args=())
def _full_attention_op(Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    return _full(Q, K, V)


def osa_own_operator(Q, K, V, block_size):
    _blocks_for_show(Q, K, V, block_size)
    return _full_attention_op(Q, K, V)


ROUND_6 = [
    ("10.running_max_sum", rms_numpy_write),
    ("10.online_softmax_attention", osa_write_with_dispatch_off),
    ("10.online_softmax_attention", osa_numpy_in_an_autograd_function),
    ("10.online_softmax_attention", osa_own_operator),
]


@pytest.mark.parametrize("task_id, fn", ROUND_6, ids=[fn.__name__ for _, fn in ROUND_6])
def test_values_written_unseen_or_computed_in_an_operator_of_ones_own_earn_nothing(task_id, fn):
    for result in _in_both(task_id, fn):
        assert result.points == 0 and result.diagnosis == "forbidden_call", result.message
        assert "made or changed where the grader could not see it" in result.message


def osa_query_tiles(Q, K, V, block_size):
    """Right: queries in tiles of two, keys in blocks (as FlashAttention tiles both)."""
    tiles = [osa_max_by_cat(Q[:, a : a + 2], K, V, block_size) for a in range(0, Q.shape[1], 2)]
    return torch.cat(tiles, dim=1)


def osa_vmap_over_the_batch(Q, K, V, block_size):
    """Right: one sequence written, vmap runs it over the batch."""

    def one(q, k, v):
        m = torch.full((q.shape[0], 1), float("-inf"), dtype=q.dtype)
        l, acc = (
            torch.zeros(q.shape[0], 1, dtype=q.dtype),
            torch.zeros(q.shape[0], v.shape[-1], dtype=q.dtype),
        )
        for a in range(0, k.shape[0], block_size):
            s = q @ k[a : a + block_size].T / math.sqrt(q.shape[-1])
            m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
            factor, p = torch.exp(m - m_new), torch.exp(s - m_new)
            l, acc, m = (
                l * factor + p.sum(dim=-1, keepdim=True),
                acc * factor + p @ v[a : a + block_size],
                m_new,
            )
        return acc / l

    return torch.func.vmap(one)(Q, K, V)


def osa_per_block_summaries_combined(Q, K, V, block_size):
    """Right (for blocks of two keys or more): each block summarised, the summaries combined at once."""
    parts = []
    for a in range(0, K.shape[1], block_size):
        s = Q @ K[:, a : a + block_size].transpose(1, 2) / math.sqrt(Q.shape[-1])
        m = s.amax(dim=-1, keepdim=True)
        p = torch.exp(s - m)
        parts.append((m, p.sum(dim=-1, keepdim=True), p @ V[:, a : a + block_size]))
    M, L, A = (torch.stack([part[i] for part in parts]) for i in range(3))
    w = torch.exp(M - M.amax(dim=0))
    return (A * w).sum(dim=0) / (L * w).sum(dim=0)


@pytest.mark.parametrize("fn", [osa_query_tiles, osa_vmap_over_the_batch], ids=lambda f: f.__name__)
def test_query_tiles_and_vmap_are_fine_in_both_graders(fn):
    for result in _in_both("10.online_softmax_attention", fn):
        assert result.passed, result.message


def rms_per_block_summaries_combined(scores, block_size):
    """Right (for blocks of two keys or more): one pass, a summary per block, the summaries stacked and
    combined at once (Task 1's combine); the stacked (n_blocks, rows) tensors are summaries, not scores."""
    ms, ls = [], []
    for block in scores.split(block_size, dim=1):
        m = block.amax(1)
        ms.append(m)
        ls.append(torch.exp(block - m[:, None]).sum(1))
    M, L = torch.stack(ms), torch.stack(ls)  # (n_blocks, rows)
    m = M.amax(0)
    return m, (L * torch.exp(M - m)).sum(0)


@pytest.mark.parametrize(
    "task_id, fn",
    [
        ("10.online_softmax_attention", osa_per_block_summaries_combined),
        ("10.running_max_sum", rms_per_block_summaries_combined),
    ],
    ids=["online_softmax_attention", "running_max_sum"],
)
def test_summaries_of_blocks_may_be_combined_at_once(task_id, fn):
    task = get_task(task_id)
    wider = dataclasses.replace(task, cases=lambda: [c for c in task.cases() if c.args[-1] >= 2])
    result = run_task(wider, fn)
    assert result.passed, result.message


def rms_printing_as_it_goes(scores, block_size):
    print("first scores", scores[0, :block_size])  # printing a tensor: PyTorch switches its modes off
    return rms_max_by_stack(scores, block_size)


def fold_printing(x, h):
    B, T, D = x.shape
    out = x.reshape(B, T, h, D // h).transpose(1, 2).reshape(B * h, T, D // h)
    print(f"{out[0, 0]}")
    return out


@pytest.mark.parametrize(
    "task_id, fn",
    [("10.running_max_sum", rms_printing_as_it_goes), ("09.fold_heads", fold_printing)],
    ids=["running_max_sum", "fold_heads"],
)
def test_printing_a_tensor_is_not_tampering(task_id, fn, capsys):
    # red team round 7: torch/_tensor_str.py takes the dispatch modes off to format a tensor; that is
    # PyTorch's doing, not the learner's, and it earned 0 as "removed the grader's watch"
    for result in _in_both(task_id, fn):
        assert result.passed, result.message


def rms_numpy_brought_back(scores, block_size):
    for a in range(0, scores.shape[1], block_size):
        scores[:, a : a + block_size].amax(dim=-1)  # blocks for show
    row = scores.detach().numpy()
    m = row.max(-1)
    return torch.from_numpy(m.copy()), torch.from_numpy(np.exp(row - m[:, None]).sum(-1))


def rms_numpy_for_a_look(scores, block_size):
    first = scores[:, :block_size].detach().numpy()  # one block read out of PyTorch: fine
    print("a block as NumPy sees it:", first[0])
    start = torch.tensor([float("-inf")] * scores.shape[0], dtype=scores.dtype)  # a few numbers, fine
    m, l = start, torch.zeros_like(start)
    for block in scores.split(block_size, dim=1):
        m, l = _update(m, l, block)
    return m, l


def test_an_answer_computed_in_numpy_and_brought_back_earns_nothing_but_a_look_is_fine():
    # the value check cannot tell torch.from_numpy of NumPy's answer from torch.tensor of a few honest
    # numbers (PyTorch brings both in with one operation, lift_fresh); a function that read into NumPy
    # may not return values brought in from outside (or computed from them alone); and reading whole rows
    # out of PyTorch is reading them at once
    for result in _in_both("10.running_max_sum", rms_numpy_brought_back):
        assert result.points == 0 and result.diagnosis in ("forbidden_call", "read_out_at_once"), (
            result.message
        )
    for result in _in_both("10.running_max_sum", rms_numpy_for_a_look):
        assert result.passed, result.message


def rms_python_numbers_brought_back(scores, block_size):
    for a in range(0, scores.shape[1], block_size):
        scores[:, a : a + block_size].amax(dim=-1)  # blocks for show
    rows = scores.tolist()
    maxima = [max(row) for row in rows]
    sums = [sum(math.exp(x - m) for x in row) for row, m in zip(rows, maxima)]
    return torch.tensor(maxima, dtype=scores.dtype), torch.tensor(sums, dtype=scores.dtype)


def test_an_answer_computed_on_python_numbers_and_brought_back_earns_nothing():
    for result in _in_both("10.running_max_sum", rms_python_numbers_brought_back):
        assert result.points == 0 and result.diagnosis == "forbidden_call", result.message


def rms_python_numbers_read_from_c(scores, block_size):
    # red team round 5's last route: blocks for show, then the rows read out through calls made from C
    # (no call of .tolist() that the grader's profiler could see), summed in Python and brought back
    for a in range(0, scores.shape[1], block_size):
        block = scores[:, a : a + block_size]
        torch.exp(block - block.amax(dim=-1, keepdim=True)).sum(dim=-1)
    rows = operator.methodcaller("tolist")(_plain(scores))
    maxima = [max(row) for row in rows]
    sums = [sum(math.exp(x - m) for x in row) for row, m in zip(rows, maxima)]
    return torch.tensor(maxima, dtype=scores.dtype), torch.tensor(sums, dtype=scores.dtype)


def rms_python_numbers_with_a_gradient_for_show(scores, block_size):
    zero = (scores[:, :1] * 0).sum(dim=-1)  # a path back to the scores, with the wrong gradient
    m, l = rms_python_numbers_read_from_c(scores, block_size)
    return m + zero, l + zero


def rms_under_no_grad(scores, block_size):
    with torch.no_grad():
        return rms_max_by_stack(scores, block_size)


def rms_max_copied_in_place(scores, block_size):
    m = torch.full(scores.shape[:1], float("-inf"), dtype=scores.dtype)
    l = torch.zeros_like(m)
    for block in scores.split(block_size, dim=1):
        m_new = torch.maximum(m, block.amax(dim=1))
        l = l * torch.exp(m - m_new) + torch.exp(block - m_new[:, None]).sum(dim=1)
        m.copy_(m_new)  # torch.maximum kept m for the backward pass
    return m, l


@pytest.mark.parametrize(
    "fn",
    [
        rms_python_numbers_read_from_c,
        rms_python_numbers_with_a_gradient_for_show,
        rms_under_no_grad,
        rms_max_copied_in_place,
    ],
    ids=["read_from_c", "gradient_for_show", "no_grad", "copied_in_place"],
)
def test_running_max_sum_checks_the_gradients_too(fn):
    # values read out through a call made from C escape the watch (no read is seen), but not the
    # gradient check: such a result has no gradient, or the wrong one; the task's text says that
    # work under no_grad and in-place updates autograd needs fail too, as in Task 3
    for result in _in_both("10.running_max_sum", fn):
        assert result.points == 0 and result.diagnosis == "breaks_autograd", result.message


def test_running_max_sum_in_place_updates_autograd_allows_pass():
    def fn(scores, block_size):
        m = torch.full(scores.shape[:1], float("-inf"), dtype=scores.dtype)
        l = torch.zeros_like(m)
        for block in scores.split(block_size, dim=1):
            m_new = torch.maximum(m, block.amax(dim=1))
            l *= torch.exp(m - m_new)  # autograd keeps what it needs of l
            l += torch.exp(block - m_new[:, None]).sum(dim=1)
            m = m_new
        return m, l

    for result in _in_both("10.running_max_sum", fn):
        assert result.passed, result.message


def rms_two_passes(scores, block_size):
    m = torch.full(scores.shape[:1], -math.inf, dtype=scores.dtype)
    for a in range(0, scores.shape[1], block_size):
        m = torch.maximum(m, scores[:, a : a + block_size].amax(dim=1))
    l = torch.zeros_like(m)
    for a in range(0, scores.shape[1], block_size):  # the same blocks again, against the final maximum
        l = l + torch.exp(scores[:, a : a + block_size] - m[:, None]).sum(dim=1)
    return m, l


def osa_two_passes(Q, K, V, block_size):
    Qs = Q / math.sqrt(Q.shape[-1])
    m = torch.full((*Q.shape[:2], 1), -math.inf, dtype=Q.dtype)
    for a in range(0, K.shape[1], block_size):
        m = torch.maximum(m, (Qs @ K[:, a : a + block_size].transpose(1, 2)).amax(-1, keepdim=True))
    l, acc = torch.zeros_like(m), torch.zeros(*Q.shape[:2], V.shape[-1], dtype=Q.dtype)
    for a in range(0, K.shape[1], block_size):  # every block's scores again
        p = torch.exp(Qs @ K[:, a : a + block_size].transpose(1, 2) - m)
        l, acc = l + p.sum(-1, keepdim=True), acc + p @ V[:, a : a + block_size]
    return acc / l


@pytest.mark.parametrize(
    "task_id, fn",
    [("10.running_max_sum", rms_two_passes), ("10.online_softmax_attention", osa_two_passes)],
    ids=["running_max_sum", "online_softmax_attention"],
)
def test_two_passes_over_the_blocks_earn_nothing_in_both_graders(task_id, fn):
    # right values from blocks of the right width, but without the rescaling the tasks teach: the watch
    # follows which keys each operation reads, and a block read again after others is a second pass
    for result in _in_both(task_id, fn):
        assert result.points == 0 and result.diagnosis == "two_passes", result.message


def osa_query_tiles_outside(Q, K, V, block_size):
    # FlashAttention-2's order: every key block is read again for each tile of queries (one pass each)
    outs = []
    for i in range(0, Q.shape[1], 2):
        Qi = Q[:, i : i + 2]
        m = torch.full((*Qi.shape[:2], 1), -math.inf, dtype=Q.dtype)
        l, acc = torch.zeros_like(m), torch.zeros(*Qi.shape[:2], V.shape[-1], dtype=Q.dtype)
        for a in range(0, K.shape[1], block_size):
            s = Qi @ K[:, a : a + block_size].transpose(1, 2) / math.sqrt(Q.shape[-1])
            m_new = torch.maximum(m, s.amax(-1, keepdim=True))
            p, c = torch.exp(s - m_new), torch.exp(m - m_new)
            l, acc, m = l * c + p.sum(-1, keepdim=True), acc * c + p @ V[:, a : a + block_size], m_new
        outs.append(acc / l)
    return torch.cat(outs, dim=1)


def rms_row_by_row_recomputing(scores, block_size):
    # one row at a time, and each block read twice in a row (for its maximum, then its terms): one pass
    ms, ls = [], []
    for row in scores:
        m, l = torch.tensor(-math.inf, dtype=scores.dtype), torch.tensor(0.0, dtype=scores.dtype)
        for a in range(0, row.shape[0], block_size):
            m_new = torch.maximum(m, row[a : a + block_size].amax())
            l = l * torch.exp(m - m_new) + torch.exp(row[a : a + block_size] - m_new).sum()
            m = m_new
        ms.append(m)
        ls.append(l)
    return torch.stack(ms), torch.stack(ls)


@pytest.mark.parametrize(
    "task_id, fn",
    [
        ("10.online_softmax_attention", osa_query_tiles_outside),
        ("10.running_max_sum", rms_row_by_row_recomputing),
    ],
    ids=["query_tiles_outside", "row_by_row"],
)
def test_one_pass_per_tile_or_row_is_not_a_second_pass(task_id, fn):
    for result in _in_both(task_id, fn):
        assert result.passed, result.message


# Second passes through a copy of the input (red team round 8): the first or the second pass reads a clone,
# a selection that copies (index_select, advanced indexing, gather), a join of the blocks (torch.cat) or the
# whole input transformed (K * 2). A copy carries where each of its values came from, so reading it counts
# as reading the input there.


def _rms_two_passes_over(first, second):
    def fn(scores, block_size):
        m = torch.full(scores.shape[:1], -math.inf, dtype=scores.dtype)
        for a in range(0, scores.shape[1], block_size):
            m = torch.maximum(m, first(scores, a, block_size).amax(dim=1))
        l = torch.zeros_like(m)
        for a in range(0, scores.shape[1], block_size):
            l = l + torch.exp(second(scores, a, block_size) - m[:, None]).sum(dim=1)
        return m, l

    return fn


def _view(s, a, b):
    return s[:, a : a + b]


def _index_select(s, a, b):
    return s.index_select(1, torch.arange(a, min(s.shape[1], a + b)))


def _list_index(s, a, b):
    return s[:, list(range(a, min(s.shape[1], a + b)))]


def _gather(s, a, b):
    columns = torch.arange(a, min(s.shape[1], a + b))
    return s.gather(1, columns.expand(s.shape[0], -1))


def _of_a_clone(s, a, b):
    return s.clone()[:, a : a + b]


def _of_the_transpose_made_contiguous(s, a, b):
    return s.t().contiguous().t()[:, a : a + b]


def _of_a_join(s, a, b):
    return torch.cat([s, s[:, :0]], 1)[:, a : a + b]


def _osa_two_passes_over(first):
    def fn(Q, K, V, block_size):
        scale = 1 / math.sqrt(Q.shape[-1])
        seen = first(K, block_size)  # (B, T_k, d_k), made from K
        m = torch.full((*Q.shape[:2], 1), -math.inf, dtype=Q.dtype)
        for a in range(0, K.shape[1], block_size):
            m = torch.maximum(
                m, (Q @ seen[:, a : a + block_size].transpose(1, 2) * scale).amax(-1, keepdim=True)
            )
        l, acc = torch.zeros_like(m), torch.zeros(*Q.shape[:2], V.shape[-1], dtype=Q.dtype)
        for a in range(0, K.shape[1], block_size):
            p = torch.exp(Q @ K[:, a : a + block_size].transpose(1, 2) * scale - m)
            l, acc = l + p.sum(-1, keepdim=True), acc + p @ V[:, a : a + block_size]
        return acc / l

    fn.__name__ = f"osa_first_pass_over_{first.__name__.strip('_')}"
    return fn


def _k_doubled_and_halved(K, block_size):
    return K * 2.0 / 2.0


def _k_cloned(K, block_size):
    return K.clone()


def _k_joined_from_blocks(K, block_size):
    return torch.cat([K[:, a : a + block_size] for a in range(0, K.shape[1], block_size)], 1)


def _k_transposed_copy(K, block_size):
    return K.transpose(1, 2).contiguous().transpose(1, 2)


def _k_into_a_blank_copy(K, block_size):
    copy = torch.empty_like(K)
    return copy.copy_(K)


def _k_into_zeros_block_by_block(K, block_size):
    copy = torch.zeros_like(K)
    for a in range(0, K.shape[1], block_size):
        copy[:, a : a + block_size] = K[:, a : a + block_size]
    return copy


def _k_sanitised_with_where(K, block_size):
    return torch.where(torch.isfinite(K), K, torch.zeros_like(K))


def _k_sanitised_with_masked_fill(K, block_size):
    return K.masked_fill(torch.isnan(K), 0.0)


THROUGH_COPIES = [
    ("10.running_max_sum", _rms_two_passes_over(_view, _index_select), "rms_index_select_second"),
    ("10.running_max_sum", _rms_two_passes_over(_index_select, _view), "rms_index_select_first"),
    ("10.running_max_sum", _rms_two_passes_over(_view, _list_index), "rms_list_index_second"),
    ("10.running_max_sum", _rms_two_passes_over(_view, _gather), "rms_gather_second"),
    ("10.running_max_sum", _rms_two_passes_over(_of_a_clone, _view), "rms_clone_first"),
    ("10.running_max_sum", _rms_two_passes_over(_view, _of_a_clone), "rms_clone_second"),
    (
        "10.running_max_sum",
        _rms_two_passes_over(_of_the_transpose_made_contiguous, _view),
        "rms_contiguous_t",
    ),
    ("10.running_max_sum", _rms_two_passes_over(_of_a_join, _view), "rms_cat_copy"),
    ("10.online_softmax_attention", _osa_two_passes_over(_k_doubled_and_halved), "osa_scaled_k_first"),
    ("10.online_softmax_attention", _osa_two_passes_over(_k_cloned), "osa_clone_k_first"),
    ("10.online_softmax_attention", _osa_two_passes_over(_k_joined_from_blocks), "osa_cat_of_k_blocks_first"),
    ("10.online_softmax_attention", _osa_two_passes_over(_k_transposed_copy), "osa_transposed_copy_first"),
    # red team round 9: copies into tensors made in the call with the watched shape, and value-keeping where
    ("10.online_softmax_attention", _osa_two_passes_over(_k_into_a_blank_copy), "osa_empty_like_copy_first"),
    (
        "10.online_softmax_attention",
        _osa_two_passes_over(_k_into_zeros_block_by_block),
        "osa_zeros_filled_first",
    ),
    ("10.online_softmax_attention", _osa_two_passes_over(_k_sanitised_with_where), "osa_where_first"),
    (
        "10.online_softmax_attention",
        _osa_two_passes_over(_k_sanitised_with_masked_fill),
        "osa_masked_fill_first",
    ),
]


@pytest.mark.parametrize("task_id, fn, name", THROUGH_COPIES, ids=[n for _, _, n in THROUGH_COPIES])
def test_a_second_pass_through_a_copy_of_the_input_earns_nothing_in_both_graders(task_id, fn, name):
    for result in _in_both(task_id, fn):
        assert result.points == 0 and result.diagnosis == "two_passes", result.message


# ... while one pass over a copy, or over blocks copied one at a time, is one pass


def _rms_one_pass_over(blocks_of):
    def fn(scores, block_size):
        m = torch.full(scores.shape[:1], -math.inf, dtype=scores.dtype)
        l = torch.zeros_like(m)
        for a in range(0, scores.shape[1], block_size):
            block = blocks_of(scores, a, block_size)
            m_new = torch.maximum(m, block.amax(dim=1))
            l = l * torch.exp(m - m_new) + torch.exp(block - m_new[:, None]).sum(dim=1)
            m = m_new
        return m, l

    fn.__name__ = f"rms_one_pass_{blocks_of.__name__.strip('_')}"
    return fn


def _osa_one_pass_over(made_from_k):
    def fn(Q, K, V, block_size):
        scale = 1 / math.sqrt(Q.shape[-1])
        K2 = made_from_k(K, block_size)
        m = torch.full((*Q.shape[:2], 1), -math.inf, dtype=Q.dtype)
        l, acc = torch.zeros_like(m), torch.zeros(*Q.shape[:2], V.shape[-1], dtype=Q.dtype)
        for a in range(0, K.shape[1], block_size):
            s = Q @ K2[:, a : a + block_size].transpose(1, 2) * scale
            m_new = torch.maximum(m, s.amax(-1, keepdim=True))
            p, factor = torch.exp(s - m_new), torch.exp(m - m_new)
            l, acc = l * factor + p.sum(-1, keepdim=True), acc * factor + p @ V[:, a : a + block_size]
            m = m_new
        return acc / l

    fn.__name__ = f"osa_one_pass_over_{made_from_k.__name__.strip('_')}"
    return fn


ONE_PASS_OVER_COPIES = [
    ("10.running_max_sum", _rms_one_pass_over(_index_select)),
    ("10.running_max_sum", _rms_one_pass_over(_gather)),
    ("10.running_max_sum", _rms_one_pass_over(_of_a_clone)),
    ("10.running_max_sum", _rms_one_pass_over(_of_a_join)),
    ("10.running_max_sum", _rms_one_pass_over(lambda s, a, b: s.double()[:, a : a + b])),
    ("10.online_softmax_attention", _osa_one_pass_over(_k_doubled_and_halved)),
    ("10.online_softmax_attention", _osa_one_pass_over(_k_cloned)),
    ("10.online_softmax_attention", _osa_one_pass_over(_k_joined_from_blocks)),
    ("10.online_softmax_attention", _osa_one_pass_over(_k_transposed_copy)),
]


def rms_one_pass_over_index_select_started_with_torch_tensor(scores, block_size):
    # start values made with torch.tensor from Python numbers, a printed look at a block, blocks copied
    # with index_select: honest, whatever the watch does to follow the copies
    m = torch.tensor([-math.inf] * scores.shape[0], dtype=scores.dtype)
    l = torch.tensor([0.0] * scores.shape[0], dtype=scores.dtype)
    for a in range(0, scores.shape[1], block_size):
        block = _index_select(scores, a, block_size)
        if a == 0:
            print(block)
        m_new = torch.maximum(m, block.amax(dim=1))
        l = l * torch.exp(m - m_new) + torch.exp(block - m_new[:, None]).sum(dim=1)
        m = m_new
    return m, l


ONE_PASS_OVER_COPIES.append(("10.running_max_sum", rms_one_pass_over_index_select_started_with_torch_tensor))


def _blocks_joined_again(s, a, b):  # the row cut into blocks and joined again (a copy), then one pass
    return torch.cat(list(s.split(b, dim=1)), dim=1)[:, a : a + b]


ONE_PASS_OVER_COPIES += [
    ("10.running_max_sum", _rms_one_pass_over(_blocks_joined_again)),
    ("10.online_softmax_attention", _osa_one_pass_over(_k_into_a_blank_copy)),
    ("10.online_softmax_attention", _osa_one_pass_over(_k_into_zeros_block_by_block)),
    ("10.online_softmax_attention", _osa_one_pass_over(_k_sanitised_with_where)),
]


@pytest.mark.parametrize(
    "task_id, fn", ONE_PASS_OVER_COPIES, ids=[f.__name__ for _, f in ONE_PASS_OVER_COPIES]
)
def test_one_pass_over_a_copy_of_the_input_is_fine_in_both_graders(task_id, fn):
    for result in _in_both(task_id, fn):
        assert result.passed, result.message


# Widths from the positions read, and whole rows given new values before they are cut (red team round 9's
# honest answers that lost their points): a block of a few rows at a time is as wide as the scores of one
# row it reads, whatever its shape; padding the row with -inf, scaling it or sanitising it computes nothing
# across the row; what is computed with the result is judged as if computed with the scores.


def _rms_over(prepare, rows_at_a_time=None):
    def fn(scores, block_size):
        s = prepare(scores)
        step = rows_at_a_time or s.shape[0]
        ms, ls = [], []
        for r in range(0, s.shape[0], step):
            rows = s[r : r + step]
            m = torch.full((rows.shape[0],), -math.inf, dtype=s.dtype)
            l = torch.zeros_like(m)
            for a in range(0, scores.shape[1], block_size):
                block = rows[:, a : a + block_size]
                m_new = torch.maximum(m, block.amax(dim=1))
                l = l * torch.exp(m - m_new) + torch.exp(block - m_new[:, None]).sum(dim=1)
                m = m_new
            ms.append(m)
            ls.append(l)
        return torch.cat(ms), torch.cat(ls)

    fn.__name__ = f"rms_{prepare.__name__.strip('_')}_rows_{rows_at_a_time or 'all'}"
    return fn


def _as_is(s):
    return s


def _nan_to_num(s):
    return torch.nan_to_num(s, nan=-math.inf)


def _where_not_nan(s):
    return torch.where(torch.isnan(s), torch.full_like(s, -math.inf), s)


def _clamped(s):
    return s.clamp(min=-1e300)


def rms_exp2_of_the_row_scaled(scores, block_size):
    s2 = scores * (1 / math.log(2))  # the row scaled once, for exp2
    m = torch.full(scores.shape[:1], -math.inf, dtype=scores.dtype)
    l = torch.zeros_like(m)
    for a in range(0, scores.shape[1], block_size):
        block = s2[:, a : a + block_size]
        m_new = torch.maximum(m, block.amax(dim=1))
        l = l * torch.exp2(m - m_new) + torch.exp2(block - m_new[:, None]).sum(dim=1)
        m = m_new
    return m * math.log(2), l


def rms_padded_with_minus_inf_and_viewed_as_blocks(scores, block_size):
    R, T = scores.shape
    n = -(-T // block_size)
    blocks = F.pad(scores, (0, n * block_size - T), value=-math.inf).view(R, n, block_size)
    m = torch.full((R,), -math.inf, dtype=scores.dtype)
    l = torch.zeros_like(m)
    for j in range(n):
        m_new = torch.maximum(m, blocks[:, j].amax(dim=1))
        l = l * torch.exp(m - m_new) + torch.exp(blocks[:, j] - m_new[:, None]).sum(dim=1)
        m = m_new
    return m, l


def rms_one_row_kept_2d(scores, block_size):
    ms, ls = [], []
    for r in range(scores.shape[0]):
        row = scores[r].unsqueeze(0)  # (1, T_k)
        m = torch.full((1,), -math.inf, dtype=scores.dtype)
        l = torch.zeros_like(m)
        for a in range(0, scores.shape[1], block_size):
            block = row[:, a : a + block_size]
            m_new = torch.maximum(m, block.amax(dim=1))
            l = l * torch.exp(m - m_new) + torch.exp(block - m_new[:, None]).sum(dim=1)
            m = m_new
        ms.append(m)
        ls.append(l)
    return torch.cat(ms), torch.cat(ls)


HONEST_WHOLE_ROW_STEPS = [
    _rms_over(_as_is, rows_at_a_time=2),
    _rms_over(_as_is, rows_at_a_time=1),
    _rms_over(_nan_to_num),
    _rms_over(_where_not_nan),
    _rms_over(_clamped),
    _rms_over(_nan_to_num, rows_at_a_time=2),
    rms_exp2_of_the_row_scaled,
    rms_padded_with_minus_inf_and_viewed_as_blocks,
    rms_one_row_kept_2d,
]


@pytest.mark.parametrize("fn", HONEST_WHOLE_ROW_STEPS, ids=lambda f: f.__name__)
def test_rows_a_few_at_a_time_and_rows_padded_scaled_or_sanitised_first_are_fine(fn):
    for result in _in_both("10.running_max_sum", fn):
        assert result.passed, result.message


def rms_padded_then_every_block_at_once(scores, block_size):
    R, T = scores.shape
    n = -(-T // block_size)
    blocks = F.pad(scores, (0, n * block_size - T), value=-math.inf).view(R, n, block_size)
    m = blocks.amax(dim=(1, 2))
    return m, torch.exp(blocks - m[:, None, None]).sum(dim=(1, 2))


def rms_scaled_then_the_whole_row(scores, block_size):
    s2 = scores * 1.0
    m = s2.amax(dim=1)
    return m, torch.exp(s2 - m[:, None]).sum(dim=1)


def rms_sanitised_then_exp_of_the_whole_row(scores, block_size):
    s = torch.nan_to_num(scores, nan=-math.inf)
    m = torch.full(scores.shape[:1], -math.inf, dtype=scores.dtype)
    for a in range(0, scores.shape[1], block_size):
        m = torch.maximum(m, s[:, a : a + block_size].amax(dim=1))
    return m, torch.exp(s - m[:, None]).sum(dim=1)


def rms_two_rows_at_a_time_whole(scores, block_size):
    ms, ls = [], []
    for r in range(0, scores.shape[0], 2):
        m, l = _full_row(scores[r : r + 2])
        ms.append(m)
        ls.append(l)
    return torch.cat(ms), torch.cat(ls)


def rms_two_rows_at_a_time_one_score_at_a_time(scores, block_size):
    ms, ls = [], []
    for r in range(0, scores.shape[0], 2):
        rows = scores[r : r + 2]
        m = torch.full((rows.shape[0],), -math.inf, dtype=scores.dtype)
        l = torch.zeros_like(m)
        for a in range(scores.shape[1]):
            x = rows[:, a]
            m_new = torch.maximum(m, x)
            l = l * torch.exp(m - m_new) + torch.exp(x - m_new)
            m = m_new
        ms.append(m)
        ls.append(l)
    return torch.cat(ms), torch.cat(ls)


def rms_two_passes_over_a_padded_copy(scores, block_size):
    R, T = scores.shape
    p = F.pad(scores, (0, block_size), value=-math.inf)
    m = torch.full((R,), -math.inf, dtype=scores.dtype)
    for a in range(0, T, block_size):
        m = torch.maximum(m, p[:, a : a + block_size].amax(dim=1))
    l = torch.zeros_like(m)
    for a in range(0, T, block_size):
        l = l + torch.exp(p[:, a : a + block_size] - m[:, None]).sum(dim=1)
    return m, l


WRONG_AFTER_WHOLE_ROW_STEPS = [
    (rms_padded_then_every_block_at_once, "block_size_ignored"),
    (rms_scaled_then_the_whole_row, "block_size_ignored"),
    (rms_sanitised_then_exp_of_the_whole_row, "block_size_ignored"),
    (rms_two_rows_at_a_time_whole, "block_size_ignored"),
    (rms_two_rows_at_a_time_one_score_at_a_time, "blocks_too_small"),
    (rms_two_passes_over_a_padded_copy, "two_passes"),
]


@pytest.mark.parametrize(
    "fn, diagnosis", WRONG_AFTER_WHOLE_ROW_STEPS, ids=[f.__name__ for f, _ in WRONG_AFTER_WHOLE_ROW_STEPS]
)
def test_what_is_computed_after_padding_scaling_or_a_few_rows_is_still_judged(fn, diagnosis):
    for result in _in_both("10.running_max_sum", fn):
        assert not result.passed and result.points == 0
        assert result.diagnosis == diagnosis, result.message


# A maximum taken outside PyTorch (red teams 8 to 10): the rows, or K, read out with .numpy(), .tolist(),
# .item() or np.asarray, the maximum computed there, then one pass over the blocks with that maximum and no
# rescaling. What is computed outside PyTorch the watch cannot see, so a read-out counts as a read at once
# (of as many scores of a row, or keys, as it holds), and reading every score out one by one before the
# pass is a second pass.


def _one_pass_with(m_of):
    def fn(scores, block_size):
        m_out = m_of(scores)
        m = torch.full(scores.shape[:1], -math.inf, dtype=scores.dtype)
        l = torch.zeros_like(m)
        for a in range(0, scores.shape[1], block_size):
            block = scores[:, a : a + block_size]
            m = torch.maximum(m, block.amax(dim=1))
            l = l + torch.exp(block - m_out[:, None]).sum(dim=1)
        return m, l * torch.exp(m_out - m)

    fn.__name__ = f"rms_one_pass_with_{m_of.__name__.strip('_')}"
    return fn


def _max_from_numpy(scores):
    return torch.from_numpy(scores.detach().numpy().max(1).copy())


def _max_from_asarray(scores):
    return torch.from_numpy(np.asarray(scores.detach()).max(1).copy())


def _max_from_tolist(scores):
    return torch.tensor([max(row) for row in scores.tolist()], dtype=scores.dtype)


def _max_from_items(scores):
    R, T = scores.shape
    return torch.tensor([max(scores[r, k].item() for k in range(T)) for r in range(R)], dtype=scores.dtype)


def _max_from_apply(scores):
    seen = []
    scores.detach().clone().apply_(lambda x: seen.append(x) or x)
    T = scores.shape[1]
    return torch.tensor([max(seen[r * T : (r + 1) * T]) for r in range(scores.shape[0])], dtype=scores.dtype)


def osa_max_from_numpy(Q, K, V, block_size):
    q, k = Q.detach().numpy(), K.detach().numpy()
    m = torch.from_numpy((q @ k.transpose(0, 2, 1) / math.sqrt(Q.shape[-1])).max(-1, keepdims=True).copy())
    l = acc = 0
    for a in range(0, K.shape[1], block_size):
        p = torch.exp(Q @ K[:, a : a + block_size].transpose(1, 2) / math.sqrt(Q.shape[-1]) - m)
        l, acc = l + p.sum(-1, keepdim=True), acc + p @ V[:, a : a + block_size]
    return acc / l


MAX_FROM_OUTSIDE = [
    ("10.running_max_sum", _one_pass_with(_max_from_numpy), "read_out_at_once"),
    ("10.running_max_sum", _one_pass_with(_max_from_asarray), "read_out_at_once"),
    ("10.running_max_sum", _one_pass_with(_max_from_tolist), "read_out_at_once"),
    ("10.running_max_sum", _one_pass_with(_max_from_apply), "read_out_at_once"),
    ("10.running_max_sum", _one_pass_with(_max_from_items), "two_passes"),
    ("10.online_softmax_attention", osa_max_from_numpy, "read_out_at_once"),
]


@pytest.mark.parametrize(
    "task_id, fn, diagnosis", MAX_FROM_OUTSIDE, ids=[f.__name__ for _, f, _ in MAX_FROM_OUTSIDE]
)
def test_a_maximum_taken_outside_pytorch_earns_nothing_in_both_graders(task_id, fn, diagnosis):
    for result in _in_both(task_id, fn):
        assert result.points == 0 and result.diagnosis == diagnosis, result.message


def rms_rows_and_keys_reversed(scores, block_size):
    flipped = torch.flip(scores, dims=(0, 1))  # a reordered copy: followed like a clone
    m, l = _rms_over(_as_is)(flipped, block_size)
    return m.flip(0), l.flip(0)


def rms_rows_rolled(scores, block_size):
    m, l = _rms_over(_as_is)(scores.roll(1, dims=0), block_size)
    return m.roll(-1, dims=0), l.roll(-1, dims=0)


def rms_a_look_at_each_block_in_python(scores, block_size):
    m = torch.full(scores.shape[:1], -math.inf, dtype=scores.dtype)
    l = torch.zeros_like(m)
    for a in range(0, scores.shape[1], block_size):
        block = scores[:, a : a + block_size]
        assert all(len(row) <= block_size for row in block.tolist())  # a block read out: fine
        m_new = torch.maximum(m, block.amax(dim=1))
        l = l * torch.exp(m - m_new) + torch.exp(block - m_new[:, None]).sum(dim=1)
        m = m_new
    return m, l


def rms_printing_the_scores_as_a_list(scores, block_size):
    print(scores.tolist())  # a look, read out of PyTorch: nothing is brought back
    return _rms_over(_as_is)(scores, block_size)


def osa_printing_a_mean_of_k_from_numpy(Q, K, V, block_size):
    print("mean of K:", K.detach().numpy().mean())  # red team 7's honest debug print
    return _osa_one_pass_over(_k_cloned)(Q, K, V, block_size)


@pytest.mark.parametrize(
    "fn",
    [
        rms_rows_and_keys_reversed,
        rms_rows_rolled,
        rms_a_look_at_each_block_in_python,
        rms_printing_the_scores_as_a_list,
    ],
    ids=lambda f: f.__name__,
)
def test_reversed_or_rolled_rows_and_a_block_read_out_are_fine(fn):
    for result in _in_both("10.running_max_sum", fn):
        assert result.passed, result.message


def test_a_look_at_k_through_numpy_is_fine_in_both_graders():
    for result in _in_both("10.online_softmax_attention", osa_printing_a_mean_of_k_from_numpy):
        assert result.passed, result.message
