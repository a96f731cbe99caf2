"""No free points (issue 14): hand answers appear nowhere in the book, exercise code is not a copy of
chapter code, and the book's or the grader's own implementation earns 0 with a message saying why.

* Hand answers: each hand task's expected numbers are searched, as a reader would see them (any rounding
  of 2 decimals or more, or exactly), in every chapter (markdown, code, stored text outputs), every
  exercise, every other set's solution and the book's pages.
* Near-copies: each solution region (``### BEGIN SOLUTION`` ... ``### END SOLUTION``) of at least
  ``MIN_TOKENS`` tokens is compared with every chapter code cell and every function in it by a
  token-level ``difflib`` ratio (comments and whitespace dropped). ``COPY_RATIO`` is calibrated on the
  book as it was (be39cd6): the two verbatim copies then scored 0.92 and 0.92, the highest other pair 0.57,
  and the log-domain variant written since (05.log_weights, which shares the max subtraction) 0.67.
* Shortcuts: a function that calls the grader's reference earns 0 for every task; for every task that
  names the book's implementations (``Task.forbidden``), its ``shortcut_example`` earns 0 and the message
  says it used the book's implementation; every hand task forbids the book's code that computes it.
"""

from __future__ import annotations

import ast
import difflib
import io
import re
import textwrap
import tokenize
from functools import cache
from pathlib import Path

import nbformat
import pytest
import torch

from attnbook.grading import all_tasks, run_task
from conftest import CHAPTERS, EXERCISES, ROOT, SOLUTIONS

TASKS = all_tasks()
HAND = sorted(t for t, task in TASKS.items() if task.hand)
MIN_TOKENS = 20
COPY_RATIO = 0.75


# ------------------------------------------------------------------ hand answers


def _flat_numbers(value) -> list[float]:
    if isinstance(value, torch.Tensor):
        return [float(v) for v in value.flatten().tolist()]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _flat_numbers(v)]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)]
    return []


def hand_answers(task_id: str) -> list[list[float]]:
    task = TASKS[task_id]
    answers = []
    for case in task.cases():
        numbers = _flat_numbers(task.reference(*case.args, **case.kwargs))
        if numbers:
            answers.append(numbers)
            while len(numbers) > 2 and numbers[-1] == 0.0:  # a trailing masked 0 is no secret
                numbers = numbers[:-1]
                answers.append(numbers)
    return answers


NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")


def _represents(token: str, value: float) -> bool:
    """A reader who sees ``token`` knows ``value``: the token is ``value`` rounded to its decimals, with
    at least 2 decimals, or exactly ``value``."""
    decimals = len(token.split(".")[1]) if "." in token and "e" not in token else 0
    try:
        shown = float(token)
    except ValueError:
        return False
    if decimals >= 2:
        return abs(shown - round(value, decimals)) < 0.5 * 10**-decimals * 1e-6 + 1e-12
    return abs(shown - value) < 1e-12


def contains_answer(text: str, answer: list[float]) -> bool:
    tokens = NUMBER.findall(text.replace("\u2212", "-"))
    n = len(answer)
    for i in range(len(tokens) - n + 1):
        window = tokens[i : i + n]
        if any("." in t for t in window) and all(_represents(t, v) for t, v in zip(window, answer)):
            return True
    return False


def _notebook_texts(path: Path) -> list[tuple[str, str]]:
    nb = nbformat.read(path, as_version=4)
    texts = []
    for k, cell in enumerate(nb.cells):
        texts.append((f"{path.relative_to(ROOT)} cell {k}", cell.source))
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                texts.append((f"{path.relative_to(ROOT)} cell {k} output", output.get("text", "")))
            for kind in ("text/plain", "text/markdown", "text/html", "text/latex"):
                data = output.get("data", {}).get(kind)
                if data:
                    texts.append((f"{path.relative_to(ROOT)} cell {k} {kind}", "".join(data)))
    return texts


@cache
def book_texts(exclude_set: str) -> tuple:
    texts = []
    for path in CHAPTERS + EXERCISES:
        texts += _notebook_texts(path)
    for path in SOLUTIONS:
        if not path.name.startswith(exclude_set + "_"):
            texts += _notebook_texts(path)
    for path in sorted((ROOT / "book").glob("*.md")):
        texts.append((str(path.relative_to(ROOT)), path.read_text(encoding="utf-8")))
    return tuple(texts)


def test_the_number_matcher():
    assert contains_answer(
        "alpha = tensor([0.1173, 0.8668, 0.0159, 0.0000])", [0.11731, 0.86681, 0.015876, 0.0]
    )
    assert contains_answer("weights 0.12, 0.87, 0.02 and 0", [0.11731, 0.86681, 0.015876, 0.0])
    assert contains_answer("e = [\u22120.5, 3, 1, 2.5]", [-0.5, 3.0, 1.0, 2.5])
    assert not contains_answer("weights 0.1, 0.9, 0.0, 0", [0.11731, 0.86681, 0.015876, 0.0])
    assert not contains_answer("1 2 3 4", [1.0, 2.0, 3.0, 4.0])  # integers alone say nothing


def test_hand_tasks_are_known():
    assert HAND, "no hand task registered"
    assert all(TASKS[t].hand for t in TASKS if "hand" in t.split(".", 1)[1])


@pytest.mark.parametrize("task_id", HAND)
def test_no_hand_answer_is_printed_in_the_book(task_id):
    found = []
    for answer in hand_answers(task_id):
        for where, text in book_texts(task_id.split(".")[0]):
            if contains_answer(text, answer):
                found.append(f"{where}: {answer}")
    assert not found, f"the answer of {task_id} can be read in the book:\n" + "\n".join(found)


# ------------------------------------------------------------------ near-copies of chapter code

_SKIP = {
    tokenize.COMMENT,
    tokenize.NL,
    tokenize.NEWLINE,
    tokenize.INDENT,
    tokenize.DEDENT,
    tokenize.ENDMARKER,
}


def tokens(source: str) -> list[str]:
    try:
        return [
            t.string for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type not in _SKIP
        ]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return []


def solution_regions() -> list[tuple[str, list[str]]]:
    regions = []
    for path in SOLUTIONS:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type != "code" or "### BEGIN SOLUTION" not in cell.source:
                continue
            head, *parts = cell.source.split("### BEGIN SOLUTION")
            for part in parts:
                names = re.findall(r"def (\w+)\(", head)
                body = textwrap.dedent(part.split("### END SOLUTION")[0])
                regions.append((f"{path.name}:{names[-1] if names else '?'}", tokens(body)))
                head += part
    return regions


@cache
def chapter_chunks() -> tuple:
    chunks = []
    for path in CHAPTERS:
        for k, cell in enumerate(nbformat.read(path, as_version=4).cells):
            if cell.cell_type != "code":
                continue
            source = "\n".join(
                line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!"))
            )
            chunks.append((f"{path.name} cell {k}", tokens(source)))
            try:
                tree = ast.parse(source)
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    body = "\n".join(ast.get_source_segment(source, n) or "" for n in node.body)
                    chunks.append((f"{path.name} cell {k} def {node.name}", tokens(body)))
    return tuple(c for c in chunks if c[1])


def similarity_table() -> list[tuple[float, str, str]]:
    rows = []
    for name, region in solution_regions():
        if len(region) < MIN_TOKENS:
            continue
        best = max(
            (difflib.SequenceMatcher(None, region, chunk, autojunk=False).ratio(), where)
            for where, chunk in chapter_chunks()
        )
        rows.append((best[0], name, best[1]))
    return sorted(rows, reverse=True)


def test_no_solution_is_a_near_copy_of_chapter_code():
    rows = similarity_table()
    assert rows, "no solution region found"
    copies = [f"{ratio:.2f} {name} ~ {where}" for ratio, name, where in rows if ratio > COPY_RATIO]
    assert not copies, "solution regions that are near-copies of chapter code:\n" + "\n".join(copies)


# ------------------------------------------------------------------ the shortcut earns 0


@pytest.mark.parametrize("task_id", sorted(TASKS))
def test_calling_the_graders_reference_earns_zero(task_id):
    task = TASKS[task_id]
    reference = task.reference

    def shortcut(*args, **kwargs):
        return reference(*args, **kwargs)

    result = run_task(task, shortcut)
    assert result.points == 0 and result.diagnosis == "forbidden_call", result.message
    assert "grader's own code" in result.message


FORBIDDING = sorted(t for t, task in TASKS.items() if task.forbidden)


@pytest.mark.parametrize("task_id", FORBIDDING)
def test_the_books_implementation_earns_zero_with_its_message(task_id):
    task = TASKS[task_id]
    assert task.shortcut_example is not None, (
        f"{task_id} forbids {task.forbidden[0]} but gives no shortcut_example that calls it"
    )
    result = run_task(task, task.shortcut_example)
    assert result.points == 0 and result.diagnosis == "forbidden_call", result.message
    assert "book's own implementation" in result.message, result.message


@pytest.mark.parametrize("task_id", HAND)
def test_hand_tasks_forbid_the_books_code(task_id):
    assert TASKS[task_id].forbidden, f"{task_id}: the book's functions compute this answer; forbid them"
