"""``check(task_id, fn)``: the call in every graded cell.

On success it prints one line. On failure it raises :class:`GradingFeedback`, which fails the cell (so
nbval and ``attnbook-grade`` see it) but, inside IPython/Jupyter, is shown as the message alone: learners
never see a traceback from the grader.
"""

from __future__ import annotations

import json
import os

from .engine import NOT_ATTEMPTED, Result, run_task
from .registry import get_task

#: environment variable naming a file where ``attnbook-grade`` collects results (JSON lines)
RESULTS_ENV = "ATTNBOOK_RESULTS"


class GradingFeedback(Exception):
    """A failed or not-attempted check; ``str()`` is the learner-facing message."""

    def __init__(self, result: Result):
        super().__init__(_headline(result))
        self.result = result


class NotAttemptedYet(GradingFeedback):
    """The task's function still raises ``NotImplementedError``."""


class CheckFailed(GradingFeedback):
    """The learner's function was tried and is wrong."""


def _headline(result: Result) -> str:
    if result.passed:
        return f"✔ {result.task_id} ({result.title}): {result.message}"
    if result.status == NOT_ATTEMPTED:
        return f"… {result.task_id} ({result.title}): {result.message}"
    return f"✘ {result.task_id} ({result.title}): {result.message}"


def _record(result: Result) -> None:
    path = os.environ.get(RESULTS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(result.as_dict(), ensure_ascii=False) + "\n")


def _feedback_handler(shell, etype, value, tb, tb_offset=None):
    """IPython custom exception handler: the message, no traceback."""
    colour = "\x1b[0;33m" if isinstance(value, NotAttemptedYet) else "\x1b[0;31m"
    stb = [f"{colour}{etype.__name__}\x1b[0m: {value}"]
    if shell is not None:  # IPython's run_code leaves the display to the handler
        shell._showtraceback(etype, value, stb)
    return stb


def _install_handler() -> None:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency of the book
        return
    shell = get_ipython()
    if shell is not None and GradingFeedback not in getattr(shell, "custom_exceptions", ()):
        shell.set_custom_exc((GradingFeedback,), _feedback_handler)


def check(task_id: str, fn) -> None:
    """Grade ``fn`` against the task ``task_id``; print on success, raise :class:`GradingFeedback` else."""
    _install_handler()
    result = run_task(get_task(task_id), fn)
    _record(result)
    if result.passed:
        print(_headline(result))
        return
    error = NotAttemptedYet if result.status == NOT_ATTEMPTED else CheckFailed
    raise error(result) from None
