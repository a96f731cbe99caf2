"""``check(task_id, fn)``: the call in every graded cell; ``hint(task_id)`` and ``progress(set_id)``.

On success ``check`` prints one line with the points. On failure it raises :class:`GradingFeedback`, which
fails the cell (so nbval and ``attnbook-grade`` see it) but, inside IPython/Jupyter, is shown as the
message alone: learners never see a traceback from the grader.

Help comes in tiers. The first message names the mistake, never the code of the fix. ``hint(task_id)``
prints the next tier for the last failure of that task in this session (the next one on each call). A
hint can hold code of the fix, so it comes only when asked for: a second failure with the same diagnosis
in a row only says how to ask. ``progress("05")`` lists the
set's tasks with their status and points in this session, and the running total.
"""

from __future__ import annotations

from ..i18n import translate
from .engine import NOT_ATTEMPTED, PASSED, Result, run_task
from .registry import all_tasks, get_task

#: this session's last result of each task, and how many hint tiers of that failure were shown
_SESSION: dict[str, dict] = {}


class GradingFeedback(Exception):
    """A failed or not-attempted check; ``str()`` is the learner-facing message."""

    def __init__(self, result: Result, extra: str = ""):
        super().__init__(_headline(result) + extra)
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


def _remember(result: Result) -> str:
    """Store ``result`` in the session; return what to add to its message ('' for nothing).

    The same diagnosis twice in a row adds how to ask for the next hint, never the hint itself."""
    previous = _SESSION.get(result.task_id)
    shown = 0
    extra = ""
    if (
        not result.passed
        and previous is not None
        and not previous["result"].passed
        and previous["result"].diagnosis == result.diagnosis
    ):
        shown = previous["shown"]
        if shown < len(result.hints):  # a hint can hold code of the fix: it comes only when asked for
            task_id = result.task_id
            extra = " " + translate(f'(hint("{task_id}") shows a hint.)')
    _SESSION[result.task_id] = {"result": result, "shown": shown}
    return extra


def check(task_id: str, fn) -> None:
    """Grade ``fn`` against the task ``task_id``; print on success, raise :class:`GradingFeedback` else."""
    _install_handler()
    result = run_task(get_task(task_id), fn)
    extra = _remember(result)
    if result.passed:
        print(_headline(result))
        return
    error = NotAttemptedYet if result.status == NOT_ATTEMPTED else CheckFailed
    raise error(result, extra) from None


def hint(task_id: str) -> None:
    """Print the next tier of help for the last failure of ``task_id`` in this session."""
    get_task(task_id)  # an unknown id gets the registry's message, with the known ids
    state = _SESSION.get(task_id)
    if state is None:
        print(
            translate(
                f"{task_id}: no check of this task has run in this session yet; run its graded cell first."
            )
        )
        return
    result = state["result"]
    if result.passed:
        print(translate(f"{task_id} passed: no hint needed."))
        return
    if not result.hints:
        print(
            translate(
                f"{task_id}: no further hint for this mistake; the message says what is wrong: {result.message}"
            )
        )
        return
    if state["shown"] >= len(result.hints):
        print(
            translate(
                f"{task_id}: that was the last hint ({len(result.hints)} of {len(result.hints)}): "
                f"{result.hints[-1]}"
            )
        )
        return
    level = state["shown"]
    state["shown"] = level + 1
    print(translate(f"{task_id}, hint {level + 1} of {len(result.hints)}: {result.hints[level]}"))


def _set_of(set_id: str | None) -> str:
    if set_id is None:
        if not _SESSION:
            raise ValueError(translate('progress() needs a set, e.g. progress("05"), until a check has run'))
        set_id = next(reversed(_SESSION)).split(".", 1)[0]
    return str(set_id).split(".", 1)[0].zfill(2)


def progress(set_id: str | None = None) -> None:
    """Print the tasks of a set with their status and points in this session, and the total."""
    set_id = _set_of(set_id)
    tasks = [t for t in all_tasks().values() if t.set_id == set_id]
    if not tasks:
        known = sorted({t.set_id for t in all_tasks().values()})
        raise ValueError(translate(f"no exercise set {set_id!r}; the sets are {', '.join(known)}"))
    width = max(len(t.id) for t in tasks)
    got = total = passed = 0
    lines = []
    for task in tasks:
        state = _SESSION.get(task.id)
        result = state["result"] if state else None
        if result is not None and result.status == PASSED:
            mark, points = "✔", task.points
            passed += 1
        elif result is not None and result.status != NOT_ATTEMPTED:
            mark, points = "✘", 0
        else:
            mark, points = "…", 0
        got += points
        total += task.points
        lines.append(f"{mark} {task.id:<{width}}  {points}/{task.points}")
    lines.append(
        translate(f"total: {got}/{total} points, {passed} of {len(tasks)} tasks passed (this session)")
    )
    print("\n".join(lines))
