"""An independent learner's batch against the graders (issue 14).

``tests/learner_batch/set_NN.py`` holds learner-style wrong answers and valid alternatives, written from the
task texts alone by a red-team learner who had not read the graders. This file runs each one through
``attnbook.grading.run_task`` and asserts what a trusted grade needs:

* every wrong answer is rejected, and every valid alternative passes;
* no message contains a traceback or a path inside the package;
* the named-mistake rate over the whole batch is at least 85 %: a wrong answer counts as named when it is
  rejected with a specific diagnosis; a pass, a generic diagnosis ("wrong_values", "unhandled_result") or
  a "raised" message that passes raw PyTorch/Python error text through untranslated does not count.

These tests were red when written; they are not to be weakened to turn them green.
"""

import importlib
import re
import warnings
from collections import defaultdict
from pathlib import Path

import nbformat
import pytest

import learner_batch
from attnbook.grading import get_task, run_task
from learner_batch import SETS
from learner_batch.judge import names_the_mistake

ROOT = Path(__file__).resolve().parents[1]
MODULES = {s: importlib.import_module(f"learner_batch.set_{s}") for s in SETS}
EXTRA = [importlib.import_module(f"learner_batch.{name}") for name in getattr(learner_batch, "EXTRA", [])]
WRONG = [(s, item) for s in SETS for item in MODULES[s].WRONG]
VALID = [(s, item) for s in SETS for item in MODULES[s].VALID]
WRONG += [(item["task"].split(".")[0], item) for module in EXTRA for item in module.WRONG]
VALID += [(item["task"].split(".")[0], item) for module in EXTRA for item in module.VALID]
NAMED_RATE_TARGET = 0.85

_RESULTS: dict = {}


def _id(pair):
    _, item = pair
    return f"{item['task']}/{item['name']}"


def outcome(kind: str, item: dict):
    key = (kind, item["task"], item["name"])
    if key not in _RESULTS:
        try:
            task = get_task(item["task"])
        except KeyError:
            pytest.fail(f"the learner batch is stale: {item['task']} is no longer a graded task")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _RESULTS[key] = run_task(task, item["fn"])
    return _RESULTS[key]


def assert_clean(message: str) -> None:
    assert "Traceback" not in message, message
    assert "attnbook/" not in message, message


def graded_tasks() -> list[str]:
    tasks = []
    for path in sorted((ROOT / "solutions").glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code" and "graded" in cell.metadata.get("tags", []):
                tasks += re.findall(r'check\("([^"]+)"', cell.source)
    return tasks


def test_batch_covers_every_graded_task():
    tasks = [t for t in graded_tasks() if t.split(".")[0] in SETS]
    wrong_by_task = defaultdict(int)
    for _, item in WRONG:
        assert item["mistake"] and item["cls"], item["name"]
        wrong_by_task[item["task"]] += 1
    valid_tasks = {item["task"] for _, item in VALID}
    assert len(WRONG) >= 150
    for task in tasks:
        assert wrong_by_task[task] >= 4, f"{task}: {wrong_by_task[task]} wrong answers"
        assert task in valid_tasks, f"{task}: no valid alternative"
    ids = [_id(p) for p in WRONG] + [_id(p) for p in VALID]
    assert len(ids) == len(set(ids)), "duplicate names"


@pytest.mark.parametrize("pair", WRONG, ids=_id)
def test_wrong_answer_is_rejected(pair):
    _, item = pair
    result = outcome("WRONG", item)
    assert not result.passed, f"{item['task']} passed {item['name']}: {item['mistake']}"
    assert_clean(result.message)


@pytest.mark.parametrize("pair", VALID, ids=_id)
def test_valid_alternative_passes(pair):
    _, item = pair
    result = outcome("VALID", item)
    assert result.passed, (
        f"{item['task']} rejected valid {item['name']}: {result.diagnosis}: {result.message}"
    )


def test_named_mistake_rate():
    per_set = defaultdict(lambda: [0, 0, 0])  # wrong, rejected, named
    unnamed = []
    for s, item in WRONG:
        result = outcome("WRONG", item)
        per_set[s][0] += 1
        per_set[s][1] += not result.passed
        named = names_the_mistake(result)
        per_set[s][2] += named
        if not named:
            unnamed.append(
                f"{item['task']}/{item['name']} ({'PASSED' if result.passed else result.diagnosis})"
            )
    total, rejected, named = (sum(v[i] for v in per_set.values()) for i in range(3))
    table = "\n".join(f"set {s}: {r}/{w} rejected, {n}/{w} named" for s, (w, r, n) in sorted(per_set.items()))
    summary = f"{rejected}/{total} rejected, {named}/{total} named ({named / total:.1%})\n{table}"
    assert named / total >= NAMED_RATE_TARGET, summary + "\nnot named:\n" + "\n".join(unnamed)
