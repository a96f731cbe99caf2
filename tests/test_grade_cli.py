"""`attnbook-grade` on whole notebooks: not attempted, passed, failed, not run; the file is never changed."""

from __future__ import annotations

import json
import shutil

import nbformat
import pytest

from attnbook.grading import cli
from conftest import ROOT

pytestmark = pytest.mark.slow
EXERCISE = ROOT / "exercises" / "04_attention_scores.ipynb"
SOLUTION = ROOT / "solutions" / "04_attention_scores.ipynb"


def test_blank_exercise_is_not_attempted_everywhere_and_the_file_is_untouched(tmp_path):
    copy = tmp_path / EXERCISE.name
    shutil.copy(EXERCISE, copy)
    before = copy.read_bytes()
    report = cli.grade_notebook(copy)
    assert [t["status"] for t in report["tasks"]] == ["not attempted yet"] * len(report["tasks"])
    assert report["points"] == 0 and report["max_points"] > 0
    assert copy.read_bytes() == before


def test_solution_gets_full_marks():
    report = cli.grade_notebook(SOLUTION)
    assert report["points"] == report["max_points"], cli.format_report(report)


def test_wrong_answer_crash_and_loop_are_reported_per_task(tmp_path):
    nb = nbformat.read(EXERCISE, as_version=4)
    for cell in nb.cells:
        if "def dot_scores_batch" in cell.source:
            cell.source = cell.source.replace("raise NotImplementedError()", "return K @ Q.transpose(-1, -2)")
        if "def dot_scores(" in cell.source:
            cell.source = cell.source.replace("raise NotImplementedError()", "return H @ s_t")
        if "def scaled_dot_scores" in cell.source:
            cell.source = cell.source.replace("raise NotImplementedError()", "while True:\n        pass")
        if "def hand_scores" in cell.source:  # a syntax error: the function is never defined
            cell.source = cell.source.replace("raise NotImplementedError()", "return [1, 1.5, 0.5, 3")
    path = tmp_path / "work.ipynb"
    nbformat.write(nb, path)
    report = {t["task"]: t for t in cli.grade_notebook(path)["tasks"]}
    assert report["04.dot_scores"]["status"] == "passed"
    assert report["04.dot_scores_batch"]["diagnosis"] == "transposed"
    assert report["04.scaled_dot_scores"]["diagnosis"] == "timeout"
    assert report["04.hand_scores"]["status"] == "failed"
    assert "NameError" in report["04.hand_scores"]["message"] or "not defined" in report["04.hand_scores"]["message"]


def test_command_line_report_and_json(tmp_path, capsys):
    assert cli.main([str(EXERCISE)]) == 0
    out = capsys.readouterr().out
    assert "Grade report" in out and "Total: 0/" in out and "not attempted yet" in out
    assert cli.main(["--json", str(SOLUTION)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data[0]["points"] == data[0]["max_points"]
    assert cli.main([str(tmp_path / "missing.ipynb")]) == 2
