"""exercises/ are generated from solutions/ and must never drift."""

from __future__ import annotations

import pytest

import make_exercises
from conftest import EXERCISES, ROOT, SOLUTIONS, ids, read


@pytest.mark.parametrize("solution", SOLUTIONS, ids=ids(SOLUTIONS))
def test_exercise_is_what_the_generator_makes_now(solution):
    exercise = ROOT / "exercises" / solution.name
    assert exercise.exists(), f"missing {exercise}: run tools/make_exercises.py"
    assert exercise.read_text(encoding="utf-8") == make_exercises.render(solution), (
        f"{exercise.name} differs from what {solution.name} generates: run tools/make_exercises.py"
    )


@pytest.mark.parametrize("exercise", EXERCISES, ids=ids(EXERCISES))
def test_exercise_has_no_solution_and_no_outputs(exercise):
    nb = read(exercise)
    text = exercise.read_text(encoding="utf-8")
    assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text and "HIDDEN TESTS" not in text
    assert (ROOT / "solutions" / exercise.name).exists(), f"{exercise.name} has no solution"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None
    assert "raise NotImplementedError()" in text
