"""Bad input gets a clear message, never a crash or a silent pass (GUIDE.md §5)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from attnbook.grading import CheckFailed, NotAttemptedYet, check, get_task, run_task
from attnbook.grading.notebook import _feedback_handler

TASK = get_task("04.dot_scores_batch")


def right(Q, K):
    return Q @ K.transpose(-1, -2)


def diagnose(fn, task=TASK):
    result = run_task(task, fn)
    assert not result.passed
    return result


def test_reference_passes():
    assert run_task(TASK, right).passed


def test_stub_is_not_attempted_yet():
    def stub(Q, K):
        raise NotImplementedError()

    result = diagnose(stub)
    assert result.status == "not attempted yet" and result.diagnosis == "not_attempted"
    assert run_task(TASK, None).status == "not attempted yet"


def test_a_learners_exception_is_one_line_naming_it():
    def broken(Q, K):
        scores = Q @ K  # shapes do not fit
        return scores

    result = diagnose(broken)
    assert result.diagnosis == "raised"
    assert "RuntimeError" in result.message and "scores = Q @ K" in result.message
    assert "\n" not in result.message and "Traceback" not in result.message


def test_an_infinite_loop_is_stopped():
    def forever(Q, K):
        while True:
            try:
                pass
            except Exception:  # a learner's catch-all cannot swallow the time limit
                pass

    result = diagnose(forever, dataclasses.replace(TASK, timeout_s=0.3))
    assert result.diagnosis == "timeout" and "stopped twice, after 0.3 s each time" in result.message
    assert "loop that never ends" in result.message


def _slow_helper():
    import time

    time.sleep(5)  # a slow first call, an import: no loop anywhere


def test_a_slow_function_without_a_loop_is_not_told_about_loops():
    def slow(Q, K):
        _slow_helper()
        return right(Q, K)

    result = diagnose(slow, dataclasses.replace(TASK, timeout_s=0.3))
    assert result.diagnosis == "timeout" and "stopped twice, after 0.3 s each time" in result.message
    assert "It has no loop" in result.message and "loop that never ends" not in result.message


def test_a_loop_in_a_helper_of_the_learner_counts_as_a_loop():
    def forever_helper():
        while True:
            pass

    def calls_it(Q, K):
        return forever_helper()

    result = diagnose(calls_it, dataclasses.replace(TASK, timeout_s=0.3))
    assert "loop that never ends" in result.message


@pytest.mark.parametrize(
    "fn, diagnosis, phrase",
    [
        (lambda Q, K: None, "returned_none", "return"),
        (lambda Q, K: right(Q, K).tolist(), "wrong_type", "torch.Tensor"),
        (lambda Q, K: right(Q, K).numpy(), "wrong_type", "NumPy"),
        (lambda Q, K: right(Q, K).float(), "wrong_dtype", "float32"),
        (lambda Q, K: right(Q, K)[..., :-1], "wrong_shape", "(B=2, T_q=3, T_k=5)"),
        (lambda Q, K: right(Q, K) * float("nan"), "not_finite", "NaN"),
        (lambda Q, K: right(Q, K) + 1.0, "wrong_values", "expected"),
        (lambda Q, K: torch.tensor(right(Q, K).tolist(), dtype=torch.float64), "breaks_autograd", "autograd"),
        (lambda Q: Q, "wrong_signature", "(Q, K)"),
        ("dot_scores_batch", "not_callable", "your function itself"),
    ],
)
def test_bad_returns_and_calls_are_named(fn, diagnosis, phrase):
    result = diagnose(fn)
    assert result.diagnosis == diagnosis, result.message
    assert phrase in result.message


def test_mutating_an_input_is_caught():
    def mutating(Q, K):
        Q.mul_(1.0).add_(1.0)
        return (Q - 1.0) @ K.transpose(-1, -2)

    result = diagnose(mutating)
    assert result.diagnosis == "mutates_input" and "`Q`" in result.message


def test_partial_detach_is_caught_by_the_gradient_check():
    def half_detached(Q, K):
        return Q.detach() @ K.transpose(-1, -2)

    assert diagnose(half_detached).diagnosis == "breaks_autograd"


def test_check_prints_on_success_and_raises_feedback_otherwise(capsys):
    check("04.dot_scores_batch", right)
    assert capsys.readouterr().out.startswith("✔ 04.dot_scores_batch")
    with pytest.raises(NotAttemptedYet, match="not attempted yet"):
        check("04.dot_scores_batch", None)
    with pytest.raises(CheckFailed, match="transposed"):
        check("04.dot_scores_batch", lambda Q, K: K @ Q.transpose(-1, -2))


def test_jupyter_shows_the_message_without_a_traceback():
    try:
        check("04.dot_scores_batch", lambda Q, K: K @ Q.transpose(-1, -2))
    except CheckFailed as exc:
        lines = _feedback_handler(None, type(exc), exc, exc.__traceback__)
    assert len(lines) == 1 and "transposed" in lines[0] and "File" not in lines[0]


def test_unknown_task_id_lists_the_known_ones():
    with pytest.raises(KeyError, match="04.dot_scores"):
        get_task("04.no_such_task")


def test_every_registered_task_passes_its_own_reference():
    from attnbook.grading import all_tasks

    for task in all_tasks().values():
        result = run_task(task, task.reference, guard=False)
        assert result.passed, f"{task.id}: {result.message}"


def test_a_proxy_may_say_whether_its_function_has_a_loop():
    from attnbook.grading import LearnerTimeout

    class Proxy:
        __name__ = "dot_scores_batch"

        def __init__(self, has_loop):
            self.has_loop = has_loop

        def __call__(self, Q, K):
            raise LearnerTimeout()

    assert "It has no loop" in diagnose(Proxy(False)).message
    assert "loop that never ends" in diagnose(Proxy(True)).message
    assert "loop that never ends" in diagnose(Proxy(None)).message
