"""Generate ``exercises/NN_topic.ipynb`` from ``solutions/NN_topic.ipynb`` (the single source).

    python tools/make_exercises.py              # regenerate every exercise that changed
    python tools/make_exercises.py --check      # exit 1 if any exercise differs from what would be made
    python tools/make_exercises.py solutions/04_attention_scores.ipynb --force

What changes on the way from solution to exercise:

* code between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` becomes ``raise NotImplementedError()``
  (indented like the marker); lines between ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS`` and
  cells tagged ``solution-only`` are removed;
* cells tagged ``graded`` get the tag ``raises-exception`` (the stub's "not attempted yet" is an expected
  error for nbval and the book build);
* outputs and execution counts are cleared; a header cell says the file is generated, and from what.

The output is byte-stable. An exercise whose cells were edited since it was generated (someone's work is
in it) is never overwritten unless ``--force`` is given: the tool refuses and says so.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS, EXERCISES = ROOT / "solutions", ROOT / "exercises"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
STUB = ["# YOUR CODE HERE", "raise NotImplementedError()"]
HEADER_ID = "exercise-header"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


class GenerationError(Exception):
    """The solution notebook cannot be turned into an exercise (for example, unbalanced markers)."""


def _replace_regions(lines: list[str], begin: str, end: str, stub: list[str] | None, where: str) -> list[str]:
    out: list[str] = []
    inside = False
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped == begin:
            if inside:
                raise GenerationError(f"{where}, line {number}: {begin!r} inside an open region")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out.extend(indent + s for s in (stub or []))
        elif stripped == end:
            if not inside:
                raise GenerationError(f"{where}, line {number}: {end!r} without {begin!r}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise GenerationError(f"{where}: {begin!r} is never closed by {end!r}")
    return out


def sources_digest(cells) -> str:
    """Hash of the cells' types and sources: what a learner edits (outputs and metadata are ignored)."""
    payload = json.dumps([[c["cell_type"], c["source"]] for c in cells], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def make_exercise(solution: nbformat.NotebookNode, solution_name: str) -> nbformat.NotebookNode:
    """The exercise notebook for ``solution`` (not modified)."""
    cells = []
    title = solution_name
    for index, cell in enumerate(solution.cells):
        tags = list(cell.get("metadata", {}).get("tags", []))
        if "solution-only" in tags:
            continue
        new = copy.deepcopy(cell)
        where = f"{solution_name}, cell {index}"
        lines = new.source.split("\n")
        lines = _replace_regions(lines, BEGIN_HIDDEN, END_HIDDEN, None, where)
        lines = _replace_regions(
            lines, BEGIN, END, STUB if cell.cell_type == "code" else ["*Your answer here.*"], where
        )
        new.source = "\n".join(lines)
        new.metadata.pop("execution", None)
        if cell.cell_type == "code":
            new.outputs = []
            new.execution_count = None
            if "graded" in tags and "raises-exception" not in tags:
                new.metadata["tags"] = tags + ["raises-exception"]
        elif cell.cell_type == "markdown" and title == solution_name:
            match = re.search(r"^# (.+)$", new.source, flags=re.MULTILINE)
            if match:
                title = match.group(1).strip()
        cells.append(new)
    header = nbformat.v4.new_markdown_cell(
        f"```{{note}}\nThis exercise notebook is generated from "
        f"[`solutions/{solution_name}`](../solutions/{solution_name}) by `tools/make_exercises.py`. "
        "Work in your own copy; in the repository, change the solution and regenerate.\n```"
    )
    header.id = HEADER_ID
    exercise = nbformat.v4.new_notebook()
    # The note goes right under the title (the first cell, when it is the H1), else first.
    after_title = 1 if cells and cells[0].cell_type == "markdown" and cells[0].source.startswith("# ") else 0
    exercise.cells = cells[:after_title] + [header] + cells[after_title:]
    exercise.metadata = nbformat.from_dict(
        {
            "kernelspec": KERNELSPEC,
            "language_info": {"name": "python", "pygments_lexer": "ipython3"},
            "attnbook": {
                "generated_from": f"solutions/{solution_name}",
                "sources_sha256": sources_digest(exercise.cells),
            },
        }
    )
    exercise.nbformat, exercise.nbformat_minor = solution.nbformat, solution.nbformat_minor
    text = nbformat.writes(exercise)
    for marker in (BEGIN, END, BEGIN_HIDDEN, END_HIDDEN):
        if marker in text:
            raise GenerationError(f"{solution_name}: the marker {marker!r} would leak into the exercise")
    return exercise


def render(solution_path: Path) -> str:
    """The exact text of the exercise generated from ``solution_path``."""
    solution = nbformat.read(solution_path, as_version=4)
    return nbformat.writes(make_exercise(solution, solution_path.name)) + "\n"


def learner_edited(exercise_path: Path) -> bool:
    """True if the exercise's cells differ from what the generator recorded when it wrote the file."""
    try:
        nb = nbformat.read(exercise_path, as_version=4)
    except Exception:
        return True
    recorded = nb.metadata.get("attnbook", {}).get("sources_sha256")
    return recorded is None or recorded != sources_digest(nb.cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("solutions", nargs="*", type=Path, help="default: every solutions/*.ipynb")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if an exercise is stale")
    parser.add_argument("--force", action="store_true", help="overwrite exercises even if edited")
    parser.add_argument("--out", type=Path, default=EXERCISES, help="folder for the exercises")
    args = parser.parse_args(argv)
    paths = args.solutions or sorted(SOLUTIONS.glob("*.ipynb"))
    status = 0
    for solution_path in paths:
        target = args.out / solution_path.name
        try:
            text = render(solution_path)
        except GenerationError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 1
            continue
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current == text:
            continue
        if args.check:
            print(f"stale: {target} differs from what {solution_path} generates", file=sys.stderr)
            status = 1
            continue
        if current is not None and learner_edited(target) and not args.force:
            print(
                f"refused: {target} has been edited since it was generated (someone's work may be in it). "
                "Move it aside, or pass --force to overwrite it.",
                file=sys.stderr,
            )
            status = 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        print(f"wrote {target}")
    if args.check and status == 0:
        print(f"{len(paths)} exercise(s) up to date")
    return status


if __name__ == "__main__":
    sys.exit(main())
