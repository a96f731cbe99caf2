"""``attnbook-grade``: grade whole notebooks and print a report of points per task.

    attnbook-grade exercises/04_attention_scores.ipynb
    attnbook-grade --json submissions/*.ipynb > grades.json

Each notebook is executed in a fresh kernel, from its own folder, in memory: the file is never modified.
Every graded cell reports its result; a task whose cell never ran (an error earlier, a kernel crash, the
time limit) is reported as "not run". The exit status is 0 when every notebook could be graded (whatever
the score) and 2 when one could not be read.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

from .engine import NOT_ATTEMPTED, PASSED
from .notebook import RESULTS_ENV
from .registry import get_task

CHECK_CALL = re.compile(r"""\bcheck\(\s*["']([\w.]+)["']""")
NOT_RUN = "not run"
MARKS = {PASSED: "[x]", NOT_ATTEMPTED: "[ ]", NOT_RUN: "[?]"}


def graded_task_ids(nb) -> list[str]:
    """Task ids called by ``check(...)`` in the notebook's code cells, in order, without repeats."""
    ids: list[str] = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            for task_id in CHECK_CALL.findall(cell.source):
                if task_id not in ids:
                    ids.append(task_id)
    return ids


def grade_notebook(path: Path, cell_timeout: int = 120) -> dict:
    """Execute ``path`` and return ``{"notebook", "tasks": [...], "points", "max_points"}``."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    task_ids = graded_task_ids(nb)
    with tempfile.TemporaryDirectory() as tmp:
        results_file = Path(tmp) / "results.jsonl"
        previous = os.environ.get(RESULTS_ENV)
        os.environ[RESULTS_ENV] = str(results_file)
        error = ""
        try:
            NotebookClient(
                nb,
                timeout=cell_timeout,
                kernel_name="python3",
                allow_errors=True,
                interrupt_on_timeout=True,
                record_timing=False,
                resources={"metadata": {"path": str(path.resolve().parent)}},
            ).execute()
        except Exception as exc:  # a dead kernel: grade what was recorded
            error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        finally:
            if previous is None:
                os.environ.pop(RESULTS_ENV, None)
            else:
                os.environ[RESULTS_ENV] = previous
        records = {}
        if results_file.exists():
            for line in results_file.read_text(encoding="utf-8").splitlines():
                record = json.loads(line)
                records[record["task"]] = record  # the last run of a task counts
    tasks = []
    for task_id in task_ids:
        if task_id in records:
            tasks.append(records[task_id])
            continue
        try:
            task = get_task(task_id)
            title, max_points = task.title, task.points
        except KeyError:
            title, max_points = "unknown task", 0
        entry = {"task": task_id, "title": title, "points": 0, "max_points": max_points}
        cell_error = _graded_cell_error(nb, task_id)
        if cell_error:
            entry.update(status="failed", diagnosis="cell_error", message=(
                f"the graded cell raised {cell_error}: did the cell that defines the function run "
                "without errors?"))
        else:
            reason = "its graded cell did not run" + (f" ({error})" if error else " (an error in an earlier cell?)")
            entry.update(status=NOT_RUN, diagnosis="not_run", message=reason)
        tasks.append(entry)
    return {
        "notebook": str(path),
        "tasks": tasks,
        "points": sum(t["points"] for t in tasks),
        "max_points": sum(t["max_points"] for t in tasks),
    }


def _graded_cell_error(nb, task_id: str) -> str:
    """'NameError: name ... is not defined' if the cell that checks ``task_id`` ended in an error."""
    for cell in nb.cells:
        if cell.cell_type == "code" and task_id in CHECK_CALL.findall(cell.source):
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    return f"{output.get('ename', 'an error')}: {output.get('evalue', '')}".strip()
    return ""


def format_report(report: dict) -> str:
    lines = [f"Grade report for {report['notebook']}"]
    width = max([len(t["task"]) for t in report["tasks"]] + [4])
    for t in report["tasks"]:
        mark = MARKS.get(t["status"], "[!]")
        if t["status"] == PASSED:
            detail = PASSED
        elif t["status"] == NOT_ATTEMPTED:
            detail = t["message"]
        else:
            detail = f"{t['status']}: {t['message']}"
        lines.append(f"  {mark} {t['task']:<{width}}  {t['points']}/{t['max_points']}  {detail}")
    if not report["tasks"]:
        lines.append("  (no graded cells found: graded cells call check(\"NN.task\", function))")
    lines.append(f"Total: {report['points']}/{report['max_points']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="attnbook-grade", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--json", action="store_true", help="print a JSON list of reports")
    parser.add_argument("--cell-timeout", type=int, default=120, help="seconds before a cell is stopped")
    args = parser.parse_args(argv)
    reports, status = [], 0
    for path in args.notebooks:
        if not path.is_file():
            print(f"attnbook-grade: no notebook at {path}", file=sys.stderr)
            status = 2
            continue
        try:
            reports.append(grade_notebook(path, args.cell_timeout))
        except Exception as exc:  # unreadable notebook
            print(f"attnbook-grade: cannot grade {path}: {exc}", file=sys.stderr)
            status = 2
    if args.json:
        print(json.dumps(reports, ensure_ascii=False, indent=1))
    else:
        print("\n\n".join(format_report(r) for r in reports))
    return status


if __name__ == "__main__":
    sys.exit(main())
