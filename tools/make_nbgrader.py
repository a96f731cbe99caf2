"""Make nbgrader source notebooks from ``solutions/`` (the single source), for classes on JupyterHub.

    python tools/make_nbgrader.py ~/course                      # every exercise set
    python tools/make_nbgrader.py ~/course solutions/04_attention_scores.ipynb
    cd ~/course && nbgrader generate_assignment 04_attention_scores
    ...learners fetch and submit...
    cd ~/course && nbgrader autograde 04_attention_scores

Writes ``COURSE/source/<set>/<set>.ipynb`` for each solution notebook, and ``COURSE/nbgrader_config.py`` if
the course has none. Nothing in this repository is changed. Each cell gets nbgrader's metadata (schema 3):

* the code cell that holds ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` is a *solution* cell: nbgrader's
  ``generate_assignment`` replaces the region with ``raise NotImplementedError()``, as ``make_exercises.py``
  does for the book;
* a cell tagged ``graded`` (one ``check("NN.task", fn)`` call) is a *graded test* cell, locked, worth the
  task's points from the package's registry; nbgrader gives the points when the cell runs without error,
  and ``check`` raises on any wrong answer, so a task scores all or nothing;
* every other cell is *read-only* (locked): nbgrader restores locked cells from its gradebook before it
  grades, so a learner cannot weaken a graded cell;
* cells tagged ``solution-only`` are left out, ``### BEGIN HIDDEN TESTS`` blocks are kept for nbgrader to
  hide, and outputs are cleared.

In the nbgrader route the checks run in the learner's kernel, as in Jupyter: it is as strong as nbgrader
itself (locked cells restored, points from the gradebook), not as strong as ``attnbook-grade``'s trusted
path, which computes verdicts outside the learner's process. The instructor notes say when to use which.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
BEGIN = "### BEGIN SOLUTION"
CHECK_CALL = re.compile(r"""\bcheck\(\s*["']([\w.]+)["']""")
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}

CONFIG = """\
# nbgrader configuration of a course graded with the book's checks (written by tools/make_nbgrader.py).
c = get_config()  # noqa: F821 (nbgrader provides it)
c.CourseDirectory.root = {root!r}
# Checks that train nothing finish in seconds; a cell that runs longer than this is stopped.
c.ExecutePreprocessor.timeout = 120
"""


class SourceError(Exception):
    """A solution notebook that cannot become an nbgrader source (no task, an unknown task id...)."""


def _task_points(task_id: str) -> int:
    from attnbook.grading import get_task

    try:
        return int(get_task(task_id).points)
    except KeyError as exc:
        raise SourceError(str(exc)) from None


def _meta(
    grade_id: str,
    *,
    grade: bool = False,
    solution: bool = False,
    locked: bool = False,
    points: int | None = None,
) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3, "solution": solution}
    if grade:
        meta["points"] = points
    return meta


def make_source(solution: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """The nbgrader source notebook for the solution notebook ``solution`` (not modified)."""
    cells, graded = [], []
    for index, cell in enumerate(solution.cells):
        tags = cell.get("metadata", {}).get("tags", [])
        if "solution-only" in tags:
            continue
        new = copy.deepcopy(cell)
        new.metadata.pop("execution", None)
        if cell.cell_type == "code":
            new.outputs, new.execution_count = [], None
        if "graded" in tags:
            task_ids = CHECK_CALL.findall(cell.source)
            if cell.cell_type != "code" or len(task_ids) != 1:
                raise SourceError(f"{name}, cell {index}: a graded cell must call check() for one task")
            graded.append(task_ids[0])
            new.metadata["nbgrader"] = _meta(
                f"test_{task_ids[0].replace('.', '_')}",
                grade=True,
                locked=True,
                points=_task_points(task_ids[0]),
            )
            new.metadata["tags"] = [t for t in tags if t != "raises-exception"]
        elif cell.cell_type == "code" and BEGIN in cell.source:
            new.metadata["nbgrader"] = _meta(f"answer_{index:02d}", solution=True)
        else:
            new.metadata["nbgrader"] = _meta(f"{cell.cell_type}_{index:02d}", locked=True)
        cells.append(new)
    if not graded:
        raise SourceError(f"{name}: no graded cell (a cell tagged 'graded' that calls check())")
    source = nbformat.v4.new_notebook()
    source.cells = cells
    source.metadata = nbformat.from_dict(
        {
            "kernelspec": KERNELSPEC,
            "language_info": {"name": "python", "pygments_lexer": "ipython3"},
        }
    )
    return source


def write_course(course: Path, solutions: list[Path]) -> list[Path]:
    """Write one nbgrader source per solution under ``course/source``; return the files written."""
    written = []
    for path in solutions:
        nb = nbformat.read(path, as_version=4)
        assignment = path.stem
        target = course / "source" / assignment / f"{assignment}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(make_source(nb, path.name), target)
        written.append(target)
    config = course / "nbgrader_config.py"
    if not config.exists():
        config.write_text(CONFIG.format(root=str(course.resolve())), encoding="utf-8")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("course", type=Path, help="the nbgrader course folder (created if missing)")
    parser.add_argument("solutions", nargs="*", type=Path, help="default: every solutions/*.ipynb")
    args = parser.parse_args(argv)
    paths = args.solutions or sorted(SOLUTIONS.glob("*.ipynb"))
    missing = [p for p in paths if not p.is_file()]
    if missing:
        print(f"make_nbgrader: no solution notebook at {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    try:
        written = write_course(args.course, paths)
    except SourceError as exc:
        print(f"make_nbgrader: {exc}", file=sys.stderr)
        return 1
    for target in written:
        print(f"wrote {target}")
    print(f"next: cd {args.course} && nbgrader generate_assignment <set>  (e.g. {written[0].parent.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
