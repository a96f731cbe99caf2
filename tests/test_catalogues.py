"""The catalogue of known-wrong implementations, checked for every graded task of every exercise set.

Each ``tests/test_catalogue_NN.py`` holds the data of one set:

* ``WRONG[task_id] = [(name, fn, diagnosis, phrase), ...]``: implementations written the way learners
  write them, independently of the grader's misconception models, each with the diagnosis it must get
  and a phrase its message must contain;
* optionally ``CORRECT[task_id] = fn`` or ``[fn, ...]``: other right answers, which must pass;

plus tests specific to that set. This module runs the same checks over all of them, so that every set
is held to the same standard, and checks that the catalogue and the solution notebooks cover every task.
Every check runs with the engine's forbidden-call guard on, as a learner's would; the reference itself
passes only with ``guard=False`` and, called as a learner's answer, earns 0 (``forbidden_call``).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import nbformat
import pytest

from attnbook.grading import all_tasks, get_task, run_task
from conftest import SOLUTIONS, ids

MODULES = [importlib.import_module(p.stem) for p in sorted(Path(__file__).parent.glob("test_catalogue_*.py"))]
WRONG = {task_id: wrongs for module in MODULES for task_id, wrongs in module.WRONG.items()}
CORRECT = {
    task_id: fns if isinstance(fns, (list, tuple)) else [fns]
    for module in MODULES
    for task_id, fns in getattr(module, "CORRECT", {}).items()
}
CASES = [(task_id, *wrong) for task_id, wrongs in WRONG.items() for wrong in wrongs]
TASKS = sorted(all_tasks())


def stub(*args, **kwargs):
    raise NotImplementedError()


@pytest.mark.parametrize("task_id, name, fn, diagnosis, phrase", CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_wrong_implementation_is_rejected_with_its_diagnosis(task_id, name, fn, diagnosis, phrase):
    result = run_task(get_task(task_id), fn)
    assert not result.passed, f"{name} passed {task_id}"
    assert result.diagnosis == diagnosis, result.message
    assert phrase in result.message, result.message
    assert "Traceback" not in result.message and "attnbook/" not in result.message


def test_every_task_has_a_catalogue():
    assert sorted(WRONG) == TASKS, f"tasks without wrong implementations: {sorted(set(TASKS) - set(WRONG))}"


@pytest.mark.parametrize("task_id", TASKS)
def test_every_misconception_and_property_has_a_learner_style_example(task_id):
    task = get_task(task_id)
    covered = {wrong[2] for wrong in WRONG.get(task_id, [])}
    declared = {m.key for m in task.misconceptions} | {getattr(p, "key", p.__name__) for p in task.properties}
    assert declared <= covered, f"declared but never shown to be caught: {sorted(declared - covered)}"


@pytest.mark.parametrize("task_id", TASKS)
def test_reference_passes_and_a_blank_answer_is_not_attempted(task_id):
    task = get_task(task_id)
    assert run_task(task, task.reference, guard=False).passed
    shortcut = run_task(task, task.reference)  # the grader's reference, called by a learner: no points
    assert shortcut.diagnosis == "forbidden_call" and shortcut.points == 0, shortcut.message
    for blank in (stub, None):
        result = run_task(task, blank)
        assert result.status == "not attempted yet" and result.diagnosis == "not_attempted"
        assert "not attempted yet" in result.message


@pytest.mark.parametrize("task_id", sorted(CORRECT))
def test_other_correct_implementations_pass(task_id):
    for fn in CORRECT[task_id]:
        result = run_task(get_task(task_id), fn)
        assert result.passed, result.message


def _graded_functions(path: Path) -> dict:
    """Run a solution notebook's cells in order (not the setup cell); return {task_id: function}."""
    nb = nbformat.read(path, as_version=4)
    namespace: dict = {}
    graded = {}
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if cell.cell_type != "code" or "remove-cell" in tags:
            continue
        if "graded" in tags:
            task_id, name = cell.source.split('"')[1], cell.source.split(",")[1].strip(" )\n")
            graded[task_id] = namespace[name]
        else:
            exec(compile(cell.source, f"<{path.name}>", "exec"), namespace)
    return graded


@pytest.mark.slow
@pytest.mark.parametrize("path", SOLUTIONS, ids=ids(SOLUTIONS))
def test_the_solution_notebooks_answers_pass(path):
    graded = _graded_functions(path)
    assert graded, f"{path.name} grades nothing"
    for task_id, fn in graded.items():
        result = run_task(get_task(task_id), fn)
        assert result.passed, f"{task_id}: {result.message}"


def test_every_task_is_graded_once_across_the_solutions():
    seen = []
    for path in SOLUTIONS:
        for cell in nbformat.read(path, as_version=4).cells:
            if "graded" in cell.metadata.get("tags", []):
                seen.append(cell.source.split('"')[1])
    assert sorted(seen) == TASKS, "each registered task must have exactly one graded cell in solutions/"
