"""Hints in tiers: the first message names the mistake and never holds a line of the answer's code; the
next tiers (``hint(task_id)``, or the same failure twice in a row) may show how.

The answer's code is the task's reference in the package and the solution region of its function in
``solutions/``. A line counts when its normalised form (no comments, no whitespace) has at least
``MIN_CHARS`` characters, or is a returned expression of at least ``MIN_RETURN`` (``return x``,
``def f(...)`` and the like say nothing); a message contains it when
the normalised line is a substring of the normalised message, with the learner's own quoted line removed
(an exception message quotes the line that raised, which is theirs, not the fix).
"""

from __future__ import annotations

import inspect
import io
import re
import tokenize
import warnings
from functools import cache

import nbformat
import pytest
import torch

from attnbook.grading import CheckFailed, all_tasks, check, get_task, hint, notebook, progress, run_task
from conftest import SOLUTIONS

MIN_CHARS = 8  # a normalised statement this long says something (``m=x.amax(-1)``)
MIN_RETURN = 5  # a returned expression this long is an answer (``H@s_t``)
TASKS = sorted(all_tasks())


def normalised_lines(source: str) -> set[str]:
    """Logical lines of ``source`` without comments, docstrings, whitespace, or trivial lines."""
    lines, current = set(), []
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return set()
    previous = None
    for tok in tokens:
        if tok.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
            line = "".join(current)
            is_docstring = len(current) == 1 and previous is not None and previous.type == tokenize.STRING
            if (
                line
                and not is_docstring
                and len(line) >= MIN_CHARS
                and not line.startswith(("def", "return", "import", "from", "@"))
            ):
                lines.add(line)
            elif line.startswith("return") and len(line) - len("return") >= MIN_RETURN:
                expression = line[len("return") :]
                if not re.fullmatch(r"[\w,()]+", expression):  # not just names: `return H, context`
                    lines.add(expression)
            current = []
        elif tok.type not in (tokenize.COMMENT, tokenize.NL, tokenize.INDENT, tokenize.DEDENT):
            current.append(tok.string)
            previous = tok
    return {line for line in lines if len(line) >= MIN_RETURN and "###" not in line}


def _solution_regions() -> dict[str, str]:
    """{task_id: code of the solution region of its function} from solutions/."""
    regions = {}
    for path in SOLUTIONS:
        cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        for i, cell in enumerate(cells):
            if "graded" not in cell.metadata.get("tags", []):
                continue
            match = re.search(r"""check\(\s*["']([\w.]+)["']\s*,\s*(\w+)""", cell.source)
            if not match:
                continue
            task_id, name = match.groups()
            for previous in reversed(cells[:i]):
                if re.search(rf"def {name}\(", previous.source) and "### BEGIN SOLUTION" in previous.source:
                    body = previous.source.split("### BEGIN SOLUTION", 1)[1].split("### END SOLUTION", 1)[0]
                    regions[task_id] = body
                    break
    return regions


@cache
def answer_lines(task_id: str) -> frozenset:
    task = get_task(task_id)
    lines = set()
    if task.reference.__name__ != "<lambda>":
        try:
            lines |= normalised_lines(inspect.cleandoc("\n" + inspect.getsource(task.reference)))
        except (OSError, TypeError):
            pass
    lines |= normalised_lines(inspect.cleandoc("\n" + _solution_regions().get(task_id, "")))
    return frozenset(lines)


def without_learner_line(message: str) -> str:
    return re.sub(r"at line \d+ \(`.*?`\)", "", message)


def leaked(task_id: str, message: str) -> list[str]:
    text = "".join(without_learner_line(message).split())
    return sorted(line for line in answer_lines(task_id) if line in text)


def _first_level_messages() -> list[tuple[str, str, str]]:
    """(task_id, origin, message): every misconception message, and every message the catalogue's and
    the learner batch's wrong answers get (properties and engine messages included)."""
    import test_catalogues

    found = []
    for task_id in TASKS:
        for m in get_task(task_id).misconceptions:
            found.append((task_id, f"misconception {m.key}", m.message))
    wrong = [(t, name, fn) for t, name, fn, *_ in test_catalogues.CASES]
    try:
        import importlib

        from learner_batch import SETS

        for s in SETS:
            for item in importlib.import_module(f"learner_batch.set_{s}").WRONG:
                wrong.append((item["task"], item["name"], item["fn"]))
    except ImportError:
        pass
    for task_id, name, fn in wrong:
        if task_id not in all_tasks():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = run_task(get_task(task_id), fn)
        if not result.passed:
            found.append((task_id, f"{name} ({result.diagnosis})", result.message))
    return found


def test_the_normaliser_keeps_code_and_drops_trivia():
    lines = normalised_lines(
        'def f(x):\n    """Doc."""\n    # a comment\n    m = x.amax(-1, keepdim=True)  # c\n    return x\n'
    )
    assert lines == {"m=x.amax(-1,keepdim=True)"}


def test_every_task_has_answer_lines_to_compare_with():
    missing = [t for t in TASKS if not answer_lines(t) and not get_task(t).hand]
    assert not missing, f"no reference or solution code found for {missing}"


def test_no_first_level_message_contains_a_line_of_the_answer():
    leaks = []
    for task_id, origin, message in _first_level_messages():
        for line in leaked(task_id, message):
            leaks.append(f"{task_id} / {origin}: `{line}` in: {message[:160]}")
    assert not leaks, "first-level messages that give the answer's code away:\n" + "\n".join(leaks)


# ------------------------------------------------------------------ the tiers in a notebook session


@pytest.fixture
def session():
    saved = dict(notebook._SESSION)
    notebook._SESSION.clear()
    yield notebook._SESSION
    notebook._SESSION.clear()
    notebook._SESSION.update(saved)


def _a_task_with_a_hint():
    for task_id in TASKS:
        task = get_task(task_id)
        if task.hint and not task.hand and task.check_grad:
            return task
    pytest.skip("no task with a hint")


def test_hint_gives_the_next_tier_and_a_repeat_failure_shows_it(session, capsys):
    task = _a_task_with_a_hint()

    wrong = _wrong_answer(task)
    hint(task.id)
    assert "no check of this task has run" in capsys.readouterr().out
    with pytest.raises(CheckFailed) as first:
        check(task.id, wrong)
    assert "Hint:" not in str(first.value)
    hints = session[task.id]["result"].hints
    assert hints and task.hint in hints
    hint(task.id)
    out = capsys.readouterr().out
    assert f"hint 1 of {len(hints)}" in out and hints[0] in out
    with pytest.raises(CheckFailed) as second:  # the same mistake again: how to ask, never the hint
        check(task.id, wrong)  # itself (a hint can hold code of the fix)
    assert "Hint:" not in str(second.value)
    if len(hints) > 1:
        assert f'hint("{task.id}") shows a hint' in str(second.value)


def test_no_hint_is_shown_unasked(session, capsys):
    # three failures in a row name the mistake and say how to ask, never the hint itself
    task = next(get_task(t) for t in all_tasks() if not get_task(t).hand and get_task(t).check_grad)

    wrong = _wrong_answer(task)
    for _ in range(2):
        with pytest.raises(CheckFailed):
            check(task.id, wrong)
    hints = session[task.id]["result"].hints
    with pytest.raises(CheckFailed) as third:
        check(task.id, wrong)
    if hints:
        assert hints[-1] not in str(third.value)
        assert f'hint("{task.id}") shows a hint' in str(third.value) or len(hints) > 1
    hint(task.id)
    if hints:
        assert hints[0] in capsys.readouterr().out


def _wrong_answer(task):
    """A wrong answer to ``task`` (its reference's outputs made 123 everywhere), run without the guard."""

    def wrong(*args, **kwargs):
        out = task.reference(*args, **kwargs)
        if isinstance(out, tuple):
            return tuple(o * 0.0 + 123.0 if isinstance(o, torch.Tensor) else o for o in out)
        return out * 0.0 + 123.0

    return _unguarded(wrong)


def _unguarded(fn):
    """A wrong answer built on the reference, run without the guard (the guard would give it 0 at once)."""

    def call(*args, **kwargs):
        return fn(*args, **kwargs)

    import attnbook.grading.notebook as nb

    original = nb.run_task

    def run_without_guard(task, f, **kw):
        return original(task, f, guard=False, **kw)

    nb.run_task = run_without_guard
    _RESTORE.append(lambda: setattr(nb, "run_task", original))
    return call


_RESTORE: list = []


@pytest.fixture(autouse=True)
def _restore():
    yield
    while _RESTORE:
        _RESTORE.pop()()


def test_progress_lists_the_set_with_points_and_total(session, capsys):
    order = list(all_tasks())  # registration order: the order of the set
    set_id = order[0].split(".")[0]
    tasks = [t for t in order if t.startswith(set_id + ".")]
    first = get_task(tasks[0])
    import attnbook.grading.notebook as nb

    original = nb.run_task
    nb.run_task = lambda task, f, **kw: original(task, f, guard=False, **kw)
    try:
        check(first.id, first.reference)
    finally:
        nb.run_task = original
    capsys.readouterr()
    progress(set_id)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"✔ {first.id}") and out[0].endswith(f"{first.points}/{first.points}")
    assert all(line.startswith("… ") for line in out[1 : len(tasks)])
    total = sum(get_task(t).points for t in tasks)
    assert out[-1] == f"total: {first.points}/{total} points, 1 of {len(tasks)} tasks passed (this session)"


def test_check_writes_no_result_file(tmp_path, monkeypatch):
    # The trusted grader computes every verdict itself; a check in the learner's kernel leaves no record
    # that anything could read as a grade (issue 10: forged result lines once earned 300/300).
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ATTNBOOK_RESULTS", str(tmp_path / "results.jsonl"))
    task = next(t for t in all_tasks().values() if not t.hand)
    with pytest.raises(CheckFailed):
        check(task.id, lambda *a, **k: None)
    assert list(tmp_path.iterdir()) == [] and not hasattr(notebook, "RESULTS_ENV")
