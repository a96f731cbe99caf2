"""The nbgrader route, with the real nbgrader (pinned in requirements.txt) on a temporary course folder.

``tools/make_nbgrader.py`` turns a solution notebook into an nbgrader source; nbgrader's own
``generate_assignment`` and ``autograde`` commands then release it and grade submissions with our checks:
a correct submission gets every point, a submission with one wrong task loses exactly that task's points,
and a learner who edits a graded cell gains nothing (nbgrader restores locked cells before grading).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from attnbook.grading import get_task
from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import make_nbgrader  # noqa: E402

pytestmark = pytest.mark.slow
SET = "04_attention_scores"
SOLUTION = ROOT / "solutions" / f"{SET}.ipynb"
BIN = Path(sys.executable).parent


def nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    # nbgrader runs `alembic` by name: the environment's bin folder must be on PATH.
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run(
        [str(BIN / "nbgrader"), *args], cwd=course, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def solution_cells() -> dict[str, str]:
    """The solution source of each answer cell, by the name of the function it defines."""
    cells = {}
    for cell in nbformat.read(SOLUTION, as_version=4).cells:
        if cell.cell_type == "code" and make_nbgrader.BEGIN in cell.source:
            name = cell.source.split("def ", 1)[1].split("(", 1)[0]
            cells[name] = "\n".join(line for line in cell.source.splitlines() if "### " not in line)
    return cells


def submit(
    course: Path,
    student: str,
    release: nbformat.NotebookNode,
    answers: dict[str, str],
    edit_graded: dict[str, str] | None = None,
) -> None:
    nb = copy.deepcopy(release)
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution"):
            name = cell.source.split("def ", 1)[1].split("(", 1)[0]
            cell.source = answers[name]
        if meta.get("grade") and edit_graded and meta["grade_id"] in edit_graded:
            cell.source = edit_graded[meta["grade_id"]]
    target = course / "submitted" / student / SET / f"{SET}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)


@pytest.fixture(scope="module")
def graded_course(tmp_path_factory):
    course = tmp_path_factory.mktemp("course")
    make_nbgrader.write_course(course, [SOLUTION])
    nbgrader(course, "generate_assignment", SET, "--force")
    release = nbformat.read(course / "release" / SET / f"{SET}.ipynb", as_version=4)
    right = solution_cells()
    wrong = dict(right)
    # A learner's slip: the dot product of the wrong operands' transpose, summed over the wrong axis.
    wrong["dot_scores"] = "def dot_scores(s_t, H):\n    return (H * s_t).sum(dim=0)"
    submit(course, "alice", release, right)
    submit(course, "bob", release, wrong)
    # carol leaves dot_scores unsolved and replaces its graded cell by something that always passes.
    unsolved = dict(right, dot_scores="def dot_scores(s_t, H):\n    raise NotImplementedError()")
    submit(course, "carol", release, unsolved, edit_graded={"test_04_dot_scores": "print('all good')"})
    for student in ("alice", "bob", "carol"):
        nbgrader(course, "db", "student", "add", student)
    nbgrader(course, "autograde", SET)
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        scores = {}
        for student in ("alice", "bob", "carol"):
            submission = gb.find_submission(SET, student)
            scores[student] = {
                "total": submission.score,
                "max": submission.max_score,
                "cells": {g.name: g.score for nb in submission.notebooks for g in nb.grades},
            }
    return release, scores


def test_the_release_has_stubs_and_no_solution(graded_course):
    release, _ = graded_course
    text = nbformat.writes(release)
    assert "BEGIN SOLUTION" not in text and "raise NotImplementedError()" in text
    answers = [c for c in release.cells if c.metadata.get("nbgrader", {}).get("solution")]
    assert answers and all("raise NotImplementedError()" in c.source for c in answers)


def test_points_come_from_the_registry(graded_course):
    release, scores = graded_course
    graded = [c for c in release.cells if c.metadata.get("nbgrader", {}).get("grade")]
    for cell in graded:
        task_id = make_nbgrader.CHECK_CALL.findall(cell.source)[0]
        assert cell.metadata["nbgrader"]["points"] == get_task(task_id).points
    assert scores["alice"]["max"] == sum(c.metadata["nbgrader"]["points"] for c in graded)


def test_a_correct_submission_gets_every_point(graded_course):
    _, scores = graded_course
    assert scores["alice"]["total"] == scores["alice"]["max"] > 0, scores["alice"]


def test_one_wrong_task_loses_exactly_its_points(graded_course):
    _, scores = graded_course
    lost = get_task("04.dot_scores").points
    assert scores["bob"]["cells"]["test_04_dot_scores"] == 0
    assert scores["bob"]["total"] == scores["bob"]["max"] - lost, scores["bob"]


def test_an_edited_graded_cell_is_restored_before_grading(graded_course):
    _, scores = graded_course
    lost = get_task("04.dot_scores").points
    assert scores["carol"]["cells"]["test_04_dot_scores"] == 0
    assert scores["carol"]["total"] == scores["carol"]["max"] - lost, scores["carol"]


def test_a_bad_solution_notebook_gets_a_clear_message(tmp_path):
    bad = tmp_path / "bad.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# No tasks here")]
    nbformat.write(nb, bad)
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "make_nbgrader.py"), str(tmp_path / "c"), str(bad)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "no graded cell" in done.stderr and "Traceback" not in done.stderr
    missing = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "make_nbgrader.py"),
            str(tmp_path / "c"),
            str(tmp_path / "nothing.ipynb"),
        ],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "no solution notebook" in missing.stderr
