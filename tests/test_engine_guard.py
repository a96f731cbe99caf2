"""No free points: the forbidden-call guard (what it catches, what it lets through). What it costs a call is
measured by tools/benchmark_guard.py, not by a timed test."""

from __future__ import annotations

import dataclasses
import sys
import types

import torch

from attnbook import attention
from attnbook.grading import Case, ForbiddenCallGuard, Task, all_tasks, forbidden_names, run_task
from attnbook.grading.engine import name_matches

D = torch.float64


def _ref(scores):
    return torch.softmax(scores, dim=-1)


def _cases():
    g = torch.Generator().manual_seed(0)
    return [Case("B=2, T_q=3, T_k=5", (torch.randn(2, 3, 5, generator=g, dtype=D),), dims={"B": 2})]


# any registered task with misconceptions: its reference, misconceptions and module are the grader's code
OTHER = next(t for t in all_tasks().values() if t.misconceptions and not t.hand)
ARGS = OTHER.cases()[0].args  # computed here, outside any learner function

TASK = Task("95.softmax", "softmax (guard test)", _ref, _cases, forbidden=("attnbook.attention:softmax",))


def test_names_match_functions_classes_and_modules():
    assert name_matches("attnbook.attention:softmax", "attnbook.attention", "softmax")
    assert not name_matches("attnbook.attention:softmax", "attnbook.attention", "softmax_like")
    assert name_matches(
        "attnbook.multihead:MultiHeadAttention", "attnbook.multihead", "MultiHeadAttention.forward"
    )
    assert name_matches(
        "attnbook.grading.tasks.*:*", "attnbook.grading.tasks.seq2seq", "_encoder_ref.<locals>.f"
    )
    assert not name_matches("attnbook.grading.tasks.*:*", "attnbook.grading.engine", "run_task")


def test_forbidden_names_are_strings_and_always_cover_the_grader():
    names = forbidden_names(TASK)
    assert all(isinstance(n, str) for n in names)
    assert "attnbook.attention:softmax" in names and "attnbook.grading.tasks.*:*" in names


def test_the_books_implementation_earns_zero_and_says_why():
    result = run_task(TASK, lambda scores: attention.softmax(scores, dim=-1))
    assert not result.passed and result.points == 0 and result.diagnosis == "forbidden_call"
    assert (
        "`softmax` from attnbook.attention" in result.message
        and "book's own implementation" in result.message
    )
    # the same answer is fine where the task does not forbid it
    assert run_task(dataclasses.replace(TASK, forbidden=()), lambda s: attention.softmax(s, dim=-1)).passed


def test_any_graders_code_earns_zero_references_misconceptions_and_helpers():
    ref, misconception = OTHER.reference, OTHER.misconceptions[0].fn
    module = sys.modules[ref.__module__]
    helper = next(
        v
        for v in vars(module).values()
        if isinstance(v, types.FunctionType) and v.__module__ == module.__name__ and v is not ref
    )
    for fn in (
        lambda s: ref(*ARGS),
        lambda s: misconception(*ARGS),
        lambda s: OTHER.cases(),
        lambda s: helper(*[None] * helper.__code__.co_argcount),
    ):
        result = run_task(TASK, fn)
        assert result.diagnosis == "forbidden_call" and "grader's own code" in result.message, result.message


def test_a_reference_rewrapped_in_the_learners_globals_is_still_seen():
    ref = OTHER.reference
    copy = types.FunctionType(ref.__code__, dict(vars(sys.modules[ref.__module__])), "mine")
    assert run_task(TASK, lambda s: copy(*ARGS)).diagnosis == "forbidden_call"


def test_grader_callables_given_as_arguments_may_be_used():
    inner = OTHER.misconceptions[0].fn

    def ref(scores, f):
        return torch.softmax(scores, -1)

    def cases():
        return [dataclasses.replace(c, args=c.args + (inner,)) for c in _cases()]

    def uses_it(scores, f):
        try:
            f(*ARGS)  # the given function may do anything; what it runs is not the learner's doing
        except Exception:
            pass
        return torch.softmax(scores, -1)

    task = Task("95.apply", "apply a given function (guard test)", ref, cases, check_grad=False)
    assert run_task(task, uses_it).passed
    assert run_task(task, lambda scores, f: (OTHER.reference, uses_it(scores, f))[1]).passed  # not called
    assert (
        run_task(task, lambda scores, f: uses_it(scores, OTHER.reference)).diagnosis == "forbidden_call"
    )  # the learner passing the reference along is caught


def test_the_guard_restores_the_previous_profiler_and_records_per_use():
    seen = []

    def outer(frame, event, arg):
        seen.append(event)

    sys.setprofile(outer)
    try:
        guard = ForbiddenCallGuard(["attnbook.attention:softmax"])
        with guard:
            attention.softmax(torch.zeros(3))
        assert guard.found == ["attnbook.attention:softmax"]
        with guard:
            torch.softmax(torch.zeros(3), -1)
        assert guard.found == []
        assert sys.getprofile() is outer and seen  # the outer profiler kept receiving events
    finally:
        sys.setprofile(None)


def _learner(Q, K, V):
    s = Q @ K.transpose(-2, -1) / K.shape[-1] ** 0.5
    w = torch.softmax(s, dim=-1)
    return w @ V


def test_switching_the_watch_off_earns_zero():
    def sneaky(scores):
        previous = sys.getprofile()
        sys.setprofile(None)
        out = attention.softmax(scores, dim=-1)
        sys.setprofile(previous)
        return out

    result = run_task(TASK, sneaky)
    assert result.diagnosis == "forbidden_call" and "switched off the grader's watch" in result.message
    assert sys.getprofile() is None


# ------------------------------------------------------------------------------------------------
# A time-out inside the watch is a time-out, not tampering
# ------------------------------------------------------------------------------------------------


def test_an_exception_that_unwinds_through_the_watch_is_not_tampering():
    # The engine's alarm may fire while the guard's own profile function runs; CPython then unsets the
    # profiler. Made deterministic here: the profiler the guard chains to raises the LearnerTimeout.
    from attnbook.grading import LearnerTimeout

    def alarm(frame, event, arg):
        if event == "call" and frame.f_code is _learner.__code__:
            raise LearnerTimeout()

    guard = ForbiddenCallGuard(forbidden_names(TASK))
    sys.setprofile(alarm)
    try:
        try:
            with guard:
                _learner(*(torch.zeros(1, 2, 2, dtype=D),) * 3)
        except LearnerTimeout:
            pass
        else:
            raise AssertionError("the alarm did not fire")
    finally:
        sys.setprofile(None)
    assert guard.found == []


def test_a_loop_stopped_by_the_time_limit_is_a_timeout_every_time():
    # the loop spends much of its time inside the watch (PyTorch's Python-level dispatch of the watched
    # tensors): before the fix, 4 of 5 runs were reported as switching the watch off
    from test_catalogue_10 import rms_infinite

    from attnbook.grading import get_task

    task = dataclasses.replace(get_task("10.running_max_sum"), timeout_s=0.5)
    for _ in range(3):
        result = run_task(task, rms_infinite)
        assert result.diagnosis == "timeout", result.message


def test_switching_the_watch_off_is_seen_even_when_the_function_then_fails():
    from attnbook.grading import LearnerTimeout

    def sneaky_then_slow(scores):
        sys.setprofile(None)
        attention.softmax(scores, dim=-1)
        raise LearnerTimeout()  # looks like the engine's alarm

    result = run_task(TASK, sneaky_then_slow)
    assert result.diagnosis == "forbidden_call", result.message


def test_a_watch_made_to_fail_and_then_caught_is_tampering():
    # A learner can make the watch itself raise (a module name that cannot be compared) and catch the
    # error: the profiler is then off while the function goes on and returns. That is still caught.
    class Odd(str):
        def __ne__(self, other):
            raise RuntimeError("no comparison")

        __hash__ = str.__hash__

    namespace = {"__name__": Odd("learner"), "attention": attention}
    exec(compile("def inner():\n    return 1\n", "<learner cell>", "exec"), namespace)

    def sneaky(scores):
        try:
            namespace["inner"]()
        except RuntimeError:
            pass
        return attention.softmax(scores, dim=-1)

    result = run_task(TASK, sneaky)
    assert sys.getprofile() is None
    assert result.diagnosis == "forbidden_call" and "switched off" in result.message, result.message


def test_the_books_code_compiled_again_elsewhere_is_still_the_books():
    """`exec(inspect.getsource(attnbook.attention))` gives functions with another file name but the same
    instructions: calling them earns 0 like calling the originals (found by the instructor red team)."""
    import inspect as _inspect

    import attnbook.attention
    from attnbook.grading import get_task, run_task

    namespace: dict = {}
    exec(compile(_inspect.getsource(attnbook.attention), "<copied>", "exec"), namespace)

    def sdpa(Q, K, V, mask=None):
        return namespace["scaled_dot_product_attention"](Q, K, V, mask)

    result = run_task(get_task("08.sdpa"), sdpa)
    assert result.diagnosis == "forbidden_call" and result.points == 0, result.message
    assert "attnbook.attention" in result.message


def test_a_short_step_written_like_the_books_is_not_taken_for_a_copy():
    """Fingerprints cover only long functions: `weights @ values` written independently is the learner's."""
    from attnbook.grading import get_task, run_task
    from attnbook.grading.engine import FINGERPRINT_MIN_INSTRUCTIONS, _fingerprint, _forbidden_fingerprints

    def attention_value(weights, values):
        return weights @ values

    prints = _forbidden_fingerprints(("attnbook.attention:*",))
    assert prints and _fingerprint(attention_value.__code__) not in prints
    assert FINGERPRINT_MIN_INSTRUCTIONS >= 20
    assert run_task(
        get_task("05.log_weights"), lambda scores, dim: scores - scores.logsumexp(dim, keepdim=True)
    ).passed


# ------------------------------------------------------------------ PyTorch's own layers, escaped watches


def _mha_by_torch(x, W_q, W_k, W_v, W_o, h):
    xt = x.transpose(0, 1)  # (T, B, d_model)
    out, _ = torch.nn.functional.multi_head_attention_forward(
        xt,
        xt,
        xt,
        x.shape[-1],
        h,
        torch.cat([W_q, W_k, W_v]),
        None,
        None,
        None,
        False,
        0.0,
        W_o,
        None,
        training=False,
        need_weights=False,
    )
    return out.transpose(0, 1)


def _mha_by_module(x, W_q, W_k, W_v, W_o, h):
    layer = torch.nn.MultiheadAttention(x.shape[-1], h, bias=False, batch_first=True, dtype=x.dtype)
    weights = {"in_proj_weight": torch.cat([W_q, W_k, W_v]), "out_proj.weight": W_o}
    return torch.func.functional_call(layer, weights, (x, x, x))[0]


def _mha_with(attend):
    """A multi-head layer written by hand around ``attend(q, k, v)``, the per-head attention."""

    def mha(x, W_q, W_k, W_v, W_o, h):
        B, T, d = x.shape

        def split(t):
            return t.view(B, T, h, d // h).transpose(1, 2)

        out = attend(split(x @ W_q.T), split(x @ W_k.T), split(x @ W_v.T))
        return out.transpose(1, 2).reshape(B, T, d) @ W_o.T

    return mha


_mha_by_kernel = _mha_with(torch.nn.functional.scaled_dot_product_attention)


def test_pytorchs_own_multi_head_layer_or_kernel_earns_zero_and_says_why():
    task = all_tasks()["09.multi_head_attention"]
    for fn, name in [
        (_mha_by_torch, "multi_head_attention_forward"),
        (_mha_by_module, "MultiheadAttention"),
        (_mha_by_kernel, "scaled_dot_product_attention"),
    ]:
        result = run_task(task, fn)
        assert result.points == 0 and result.diagnosis == "forbidden_call", (name, result.message)
        assert f"PyTorch's `{name}`" in result.message and "ready-made" in result.message


def test_a_watched_tensor_turned_plain_earns_zero_in_set_10():
    import math

    def as_plain(Q, K, V, block_size):
        Q, K, V = (t.as_subclass(torch.Tensor) for t in (Q, K, V))
        return torch.softmax(Q @ K.transpose(1, 2) / math.sqrt(Q.shape[-1]), -1) @ V

    def made_plain(Q, K, V, block_size):
        Q, K, V = (torch.Tensor._make_subclass(torch.Tensor, t) for t in (Q, K, V))
        return torch.softmax(Q @ K.transpose(1, 2) / math.sqrt(Q.shape[-1]), -1) @ V

    def running(scores, block_size):
        s = scores.as_subclass(torch.Tensor)
        m = s.amax(-1)
        return m, torch.exp(s - m[:, None]).sum(-1)

    tasks = all_tasks()
    for task_id, fn, method in [
        ("10.online_softmax_attention", as_plain, "as_subclass"),
        ("10.online_softmax_attention", made_plain, "_make_subclass"),
        ("10.running_max_sum", running, "as_subclass"),
    ]:
        result = run_task(tasks[task_id], fn)
        assert result.points == 0 and result.diagnosis == "forbidden_call", (task_id, result.message)
        assert f"(`{method}`)" in result.message and "Work on the tensors you are given" in result.message
    kernel = run_task(
        tasks["10.online_softmax_attention"],
        lambda Q, K, V, block_size: torch.nn.functional.scaled_dot_product_attention(Q, K, V),
    )
    assert kernel.points == 0 and "PyTorch's `scaled_dot_product_attention` (in torch.nn.functional)" in (
        kernel.message
    )


def test_builtins_are_watched_only_where_a_task_forbids_them():
    # the same conversion is fine where nothing forbids it, and the package's own conversions never count
    guard = ForbiddenCallGuard(["builtin:as_subclass"])
    x = torch.randn(2, 3)
    with guard:
        x.as_subclass(torch.Tensor)
    assert guard.found == ["builtin:as_subclass"]
    with ForbiddenCallGuard(["attnbook.attention:softmax"]) as other:
        x.as_subclass(torch.Tensor)
    assert other.found == []
    from attnbook.blockwise import watch_scores

    with guard:
        watch_scores([x], rows=2)
    assert guard.found == []


def test_pytorchs_attention_kernel_by_other_doors_earns_zero():
    """Round 3 of the red team: the same kernel through torch.ops.aten, torch._..., or vmap (4/4 before)."""
    import torch.nn.functional as F

    task = all_tasks()["09.multi_head_attention"]

    doors = {
        "aten": lambda q, k, v: torch.ops.aten.scaled_dot_product_attention(q, k, v),
        "aten math": lambda q, k, v: torch.ops.aten._scaled_dot_product_attention_math(q, k, v)[0],
        "torch math": lambda q, k, v: torch._scaled_dot_product_attention_math(q, k, v)[0],
        "vmap": lambda q, k, v: torch.func.vmap(F.scaled_dot_product_attention)(q, k, v),
    }
    for door, attend in doors.items():
        result = run_task(task, _mha_with(attend))
        assert result.points == 0 and result.diagnosis == "forbidden_call", (door, result.message)
        assert "PyTorch's" in result.message and "ready-made" in result.message, (door, result.message)


def test_a_deadline_that_falls_in_a_generator_waits_for_the_next_line(monkeypatch):
    """Python ignores an error raised while the garbage collector closes a generator (it goes to
    sys.unraisablehook, where pytest made a test fail): there the alarm only installs the trace that
    stops the learner's next line; anywhere else it raises at once. (The trace itself is replaced by a
    no-op here: this test's own lines would count as a learner's.)"""
    import signal

    import pytest

    from attnbook.grading import engine

    installed = []
    monkeypatch.setattr(engine, "_SET_TRACE", lambda *args: installed.append(args[0]))

    def numbers():
        yield sys._getframe()

    frame = next(numbers())
    limit = engine.time_limit(60)
    limit._alarm(signal.SIGALRM, frame)  # no error raised inside the generator
    assert limit.expired and installed == [engine._AFTER_DEADLINE]
    with pytest.raises(engine.LearnerTimeout):
        limit._alarm(signal.SIGALRM, sys._getframe())


def test_code_compiled_from_a_string_is_a_librarys_when_its_module_is():
    # after a deadline, the trace stops every line of the learner's code; a library's code compiled from a
    # string (a dataclass's methods, named "<string>", such as pytest's hook reporting an error that Python
    # ignored) must run on, or the hook fails with "error return without exception set"
    from attnbook.grading.engine import _is_learner_frame

    def frame_of(globals_):
        exec(compile("import sys\ndef f():\n    return sys._getframe()\n", "<string>", "exec"), globals_)
        return globals_["f"]()

    assert not _is_learner_frame(frame_of({"__file__": torch.__file__}))
    assert _is_learner_frame(frame_of({}))  # a learner's exec'd code: no module file
    assert _is_learner_frame(frame_of({"__file__": "/home/learner/answers.py"}))


def test_the_same_code_in_a_library_and_in_a_learners_file_gets_its_own_verdict():
    """CPython's code objects compare equal when only their file names differ: the verdict "a learner's
    code" is kept per code object *and* file, so a learner's function that happens to be written like a
    library's is still the learner's (and the library's still the library's)."""
    import os

    from attnbook.grading.engine import _is_learner_code

    src = "def step(x):\n    return x + 1\n"
    library = compile(src, os.path.join(os.path.dirname(torch.__file__), "_same_code.py"), "exec").co_consts[
        0
    ]
    learner = compile(src, "/home/learner/answers.py", "exec").co_consts[0]
    assert library == learner  # what made one verdict serve both
    assert not _is_learner_code(library)
    assert _is_learner_code(learner)
    assert not _is_learner_code(library)
