"""check() in the learner's own kernel (a learning aid; attnbook-grade is tested elsewhere): a cell cannot fake
a verdict by replacing the functions the checks compare with, nor by returning a tensor that answers
comparisons its own way, and a function that swallows every exception is still stopped by the time limit
(red team, round 2: items E and F)."""

from __future__ import annotations

import dataclasses
import sys
import time

import pytest
import torch

from attnbook.grading import get_task, run_task
from attnbook.grading import notebook as nb

D = torch.float64


def _zeros(s_t, H):
    return torch.zeros(H.shape[0], dtype=H.dtype) + 0.0 * (H @ s_t)


def _right(s_t, H):
    return (H * s_t).sum(-1)


class _Liar(torch.Tensor):
    """Says yes to every comparison: allclose and equal True, isclose and eq all True, a difference 0."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        with torch._C.DisableTorchFunctionSubclass():
            if name in ("allclose", "equal"):
                return True
            if name in ("isclose", "eq", "__eq__"):
                return torch.ones(args[0].shape, dtype=torch.bool)
            if name in ("sub", "__sub__", "rsub", "__rsub__"):
                return torch.zeros(args[0].shape, dtype=D)
        return super().__torch_function__(func, types, args, kwargs)


def _check(task_id, fn):
    """The notebook's check(): the result, whether it passed or not."""
    try:
        nb.check(task_id, fn)
    except nb.GradingFeedback as feedback:
        return feedback.result
    return nb._SESSION[task_id]["result"]


@pytest.mark.parametrize("name", ["allclose", "isclose", "equal", "isfinite"])
def test_a_cell_that_replaces_a_torch_comparison_does_not_change_the_verdict(monkeypatch, name):
    fake = {
        "allclose": lambda *a, **k: True,
        "isclose": lambda a, b, *r, **k: torch.ones(
            torch.broadcast_shapes(a.shape, b.shape), dtype=torch.bool
        ),
        "equal": lambda *a, **k: True,
        "isfinite": lambda a: torch.ones(a.shape, dtype=torch.bool),
    }[name]
    monkeypatch.setattr(torch, name, fake)
    result = _check("04.dot_scores", _zeros)
    assert not result.passed and result.points == 0, result.message


def test_a_tensor_that_lies_about_comparisons_is_compared_as_a_plain_tensor():
    result = _check("04.dot_scores", lambda s_t, H: _zeros(s_t, H).as_subclass(_Liar))
    assert not result.passed and result.diagnosis == "wrong_values", result.message


def test_a_right_answer_of_another_tensor_type_still_passes():
    result = _check("04.dot_scores", lambda s_t, H: _right(s_t, H).as_subclass(_Liar))
    assert result.passed, result.message


# --------------------------------------------------------------------------------------------- time limit

TASK = dataclasses.replace(get_task("04.dot_scores"), timeout_s=0.3)


def swallows_while_sleeping(s_t, H):
    while True:
        try:
            time.sleep(0.1)
        except BaseException:
            pass


def swallows_a_busy_loop(s_t, H):
    while True:
        try:
            x = 0
            while True:
                x += 1
        except BaseException:
            pass


def _inner_swallower():
    while True:
        try:
            time.sleep(0.05)
        except BaseException:
            pass


def swallows_in_two_frames(s_t, H):
    while True:
        try:
            _inner_swallower()
        except BaseException:
            pass


def swallows_twice_in_one_frame(s_t, H):
    while True:
        try:
            try:
                while True:
                    pass
            except BaseException:
                pass
            x = 1  # noqa: F841
        except:  # noqa: E722
            pass


def continues_in_finally(s_t, H):
    while True:
        try:
            time.sleep(0.05)
        finally:
            continue  # noqa: B012


def returns_an_answer_after_the_deadline(s_t, H):
    try:
        time.sleep(10)
    except BaseException:
        return H @ s_t


SWALLOWERS = [
    swallows_while_sleeping,
    swallows_a_busy_loop,
    swallows_in_two_frames,
    swallows_twice_in_one_frame,
    continues_in_finally,
    returns_an_answer_after_the_deadline,
]


@pytest.mark.parametrize("fn", SWALLOWERS, ids=[f.__name__ for f in SWALLOWERS])
def test_a_function_that_swallows_the_timeout_is_stopped_all_the_same(fn):
    before = sys.gettrace()
    start = time.monotonic()
    result = run_task(TASK, fn)
    assert result.diagnosis == "timeout", result.message  # not the guard's "switched off", nor an error
    assert time.monotonic() - start < 5 * TASK.timeout_s + 2
    assert sys.gettrace() is before  # tracing is put back as it was


def test_a_tracer_set_before_the_check_is_put_back():
    def tracer(frame, event, arg):
        return None

    sys.settrace(tracer)
    try:
        result = run_task(TASK, swallows_while_sleeping)
        assert sys.gettrace() is tracer
    finally:
        sys.settrace(None)
    assert result.diagnosis == "timeout", result.message


def test_the_notebook_check_stops_a_swallowing_loop(monkeypatch):
    monkeypatch.setattr(nb, "get_task", lambda task_id: TASK)
    result = _check("04.dot_scores", swallows_a_busy_loop)
    assert result.diagnosis == "timeout", result.message


def test_a_right_answer_after_a_slow_call_is_not_affected_by_an_earlier_deadline():
    """The deadline of one call leaves nothing behind: the next call runs untraced and passes."""
    run_task(TASK, swallows_while_sleeping)
    result = run_task(TASK, _right)
    assert result.passed, result.message
