"""`attnbook-grade` on whole notebooks: not attempted, passed, failed, not run; one task; a class; bad
files; marks and exit codes; the file is never changed."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from attnbook.grading import cli
from conftest import ROOT

pytestmark = pytest.mark.slow
EXERCISE = ROOT / "exercises" / "04_attention_scores.ipynb"
SOLUTION = ROOT / "solutions" / "04_attention_scores.ipynb"
SET_08 = ROOT / "solutions" / "08_attention_matrix_form.ipynb"


def test_blank_exercise_is_not_attempted_everywhere_and_the_file_is_untouched(tmp_path):
    copy = tmp_path / EXERCISE.name
    shutil.copy(EXERCISE, copy)
    before = copy.read_bytes()
    report = cli.grade_notebook(copy)
    assert [t["status"] for t in report["tasks"]] == ["not attempted yet"] * len(report["tasks"])
    assert report["points"] == 0 and report["max_points"] > 0
    assert copy.read_bytes() == before


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
    path = tmp_path / "04_work.ipynb"
    nbformat.write(nb, path)
    report = {t["task"]: t for t in cli.grade_notebook(path)["tasks"]}
    assert report["04.dot_scores"]["status"] == "passed"
    assert report["04.dot_scores_batch"]["diagnosis"] == "transposed"
    assert report["04.scaled_dot_scores"]["diagnosis"] == "timeout"
    assert report["04.hand_scores"]["status"] == "failed"
    assert "SyntaxError" in report["04.hand_scores"]["message"], report["04.hand_scores"]["message"]


def _run(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "attnbook.grading.cli", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_one_task_report_marks_and_no_kernel_noise():
    done = _run("--task", "08.causal_mask", SET_08)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Grade report for") and "exercise set 08" in lines[0]
    assert [line.split()[1] for line in lines[1:-1]] == ["08.causal_mask"] and lines[1].split()[0] == "✔"
    assert lines[-1] == "Total: 2/2"
    assert (
        "TCP" not in done.stderr and "Traceback" not in done.stderr and "warning" not in done.stderr.lower()
    )


def test_marks_name_every_status():
    report = {
        "notebook": "x.ipynb",
        "points": 0,
        "max_points": 4,
        "tasks": [
            {"task": f"t{i}", "status": status, "message": "m", "points": 0, "max_points": 1}
            for i, status in enumerate(["passed", "failed", "not attempted yet", "not run"])
        ],
    }
    marks = [line.split()[0] for line in cli.format_report(report).splitlines()[1:-1]]
    assert marks == ["✔", "✘", "…", "?"]


def test_bad_files_get_one_line_and_exit_status_2(tmp_path, capsys):
    garbage = tmp_path / "08_garbage.ipynb"
    garbage.write_text("{ not json")
    binary = tmp_path / "08_binary.ipynb"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    stranger = tmp_path / "notes.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), stranger)
    for args, phrase in [
        ([tmp_path / "missing.ipynb"], "no notebook at"),
        ([garbage], "not a readable notebook"),
        ([binary], "not a notebook"),
        ([stranger], "not one of the book's exercise notebooks"),
        ([tmp_path], "is not a file"),
        (["--set", "05", SET_08], "looks like exercise set 08, not set 05"),
        (["--task", "05.masked_softmax", SET_08], "has no task 05.masked_softmax"),
    ]:
        assert cli.main([str(a) for a in args]) == 2
        err = capsys.readouterr().err
        assert phrase in err and "Traceback" not in err, (args, err)
    with pytest.raises(SystemExit) as usage:
        cli.main(["--jobs", "0", str(SET_08)])
    assert usage.value.code == 2


def test_a_class_in_parallel_gives_json_csv_and_feedback(tmp_path):
    folders = []
    for learner, source in (("ana", SET_08), ("ben", ROOT / "exercises" / SET_08.name)):
        folder = tmp_path / "submissions" / learner
        folder.mkdir(parents=True)
        shutil.copy(source, folder / SET_08.name)
        folders.append(folder / SET_08.name)
    broken = tmp_path / "submissions" / "cem" / SET_08.name
    broken.parent.mkdir()
    broken.write_text("{}")
    out = tmp_path / "grades"
    done = _run("-j", "2", "--set", "08", "--out", out, "--json", *folders, broken)
    assert done.returncode == 2 and "cem" in done.stderr
    reports = json.loads(done.stdout)
    assert [r["points"] for r in reports] == [8, 0]
    rows = list(csv.DictReader(open(out / "gradebook.csv", encoding="utf-8")))
    assert [r["learner"] for r in rows] == ["ana", "ben", "cem"]
    assert rows[0]["08.sdpa"] == "4" and rows[0]["total"] == "8" and rows[1]["total"] == "0"
    assert rows[2]["notes"] and rows[2]["08.sdpa"] == ""
    assert "✔ 08.sdpa" in (out / "feedback" / "ana.txt").read_text(encoding="utf-8")
    assert "not attempted yet" in (out / "feedback" / "ben.txt").read_text(encoding="utf-8")
    assert json.loads((out / "grades.json").read_text(encoding="utf-8"))[2]["error"]


def test_every_solution_gets_full_points_through_the_trusted_path():
    """The proxy is faithful for every set: call-backs into the grader's decoder steps and losses
    (02, 07), autograd through them, dict arguments, hand tasks with no arguments."""
    solutions = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
    for kind, report in cli.grade_many(solutions, jobs=2):
        assert kind == "ok", report
        assert report["points"] == report["max_points"] > 0, cli.format_report(report)


def test_learner_ids_never_put_two_learners_in_one_row():
    name = SET_08.name
    paths = [
        Path("s/ana") / name,
        Path("s/ben") / name.replace(".ipynb", " (1).ipynb"),
        Path("s/cem") / name,
        Path("a/dora") / name,
        Path("b/dora") / name,
    ]
    # one learner's odd file name used to switch every learner to the file's name: ana and cem merged
    assert cli.learner_ids(paths) == ["ana", "ben", "cem", "a/dora", "b/dora"]
    assert cli.learner_ids([Path("s") / "ana.ipynb", Path("s") / "ben.ipynb"]) == ["ana", "ben"]


def _report(path, points):
    return {
        "notebook": str(path),
        "set": "08",
        "points": points,
        "max_points": 4,
        "tasks": [
            {
                "task": "08.sdpa",
                "status": "passed" if points else "failed",
                "message": "m",
                "points": points,
                "max_points": 4,
            }
        ],
    }


def test_gradebook_rows_reuploads_unreadable_files_and_formulas(tmp_path):
    ana, again, ben, cmd = (
        tmp_path / "s" / "ana" / SET_08.name,
        tmp_path / "s" / "ana" / "08_copy.ipynb",
        tmp_path / "s" / "ben" / SET_08.name,
        tmp_path / "s" / "=cmd()" / SET_08.name,
    )
    outcomes = [
        ("ok", _report(ana, 4)),
        ("ok", _report(again, 4)),
        ("error", "not a readable notebook"),
        ("ok", _report(cmd, 0)),
    ]
    cli.write_outputs(tmp_path / "out", [ana, again, ben, cmd], outcomes, set_id="08")
    rows = {
        r["learner"]: r for r in csv.DictReader(open(tmp_path / "out" / "gradebook.csv", encoding="utf-8"))
    }
    assert list(rows) == ["ana", "ana (08_copy.ipynb)", "ben", "'=cmd()"]
    assert rows["ana"]["total"] == "4" and rows["ana"]["max_points"] == "4"  # a re-upload is not added on top
    assert rows["ben"]["total"] == "0" and rows["ben"]["max_points"] == "8" and rows["ben"]["notes"]
    assert len(list((tmp_path / "out" / "feedback").iterdir())) == 4


def test_huge_notebooks_are_refused_unread_and_repairs_are_silent(tmp_path, monkeypatch, recwarn):
    from attnbook.grading import trusted

    nb = nbformat.read(ROOT / "exercises" / SET_08.name, as_version=4)
    for cell in nb.cells:
        cell["id"] = "same"
    path = tmp_path / SET_08.name
    path.write_text(json.dumps(nb), encoding="utf-8")
    trusted.read_submission(path)
    assert not [w for w in recwarn if "cell id" in str(w.message).lower()]
    monkeypatch.setattr(trusted, "MAX_NOTEBOOK_MB", 0)
    with pytest.raises(trusted.NotGradable, match="more than an exercise notebook can be"):
        trusted.read_submission(path)


def test_a_class_graded_without_set_that_mixes_sets_is_warned_about():
    reports = [{"set": "08"}, {"set": "04"}, {"set": "08"}]  # a learner handed in set 04 instead of 08
    assert "--set" in cli.mixed_sets_warning(reports, None)
    assert cli.mixed_sets_warning(reports[::2], None) == "" and cli.mixed_sets_warning(reports, "08") == ""
