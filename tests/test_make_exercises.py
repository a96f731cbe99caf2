"""The exercise generator: stubs, hidden tests, tags, byte stability, and never destroying work."""

from __future__ import annotations

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

import make_exercises as mx


def solution_notebook():
    graded = new_code_cell('check("04.dot_scores", dot_scores)')
    graded.metadata["tags"] = ["graded"]
    only = new_code_cell("print('only in the solution')")
    only.metadata["tags"] = ["solution-only"]
    nb = new_notebook(
        cells=[
            new_markdown_cell("# A set\n\nText."),
            new_code_cell(
                "def dot_scores(s_t, H):\n    x = 1\n    ### BEGIN SOLUTION\n    return H @ s_t\n    ### END SOLUTION"
            ),
            graded,
            only,
            new_code_cell("y = 2\n### BEGIN HIDDEN TESTS\nassert y == 2\n### END HIDDEN TESTS\nprint(y)"),
        ]
    )
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="hi\n")]
    nb.cells[1].execution_count = 3
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def test_stub_replaces_solution_with_the_markers_indentation():
    ex = mx.make_exercise(solution_notebook(), "04_x.ipynb")
    source = ex.cells[2].source  # title, generated note, then the function
    assert (
        source == "def dot_scores(s_t, H):\n    x = 1\n    # YOUR CODE HERE\n    raise NotImplementedError()"
    )


def test_hidden_tests_and_solution_only_cells_are_removed():
    ex = mx.make_exercise(solution_notebook(), "04_x.ipynb")
    text = nbformat.writes(ex)
    assert "assert y == 2" not in text and "only in the solution" not in text
    assert ex.cells[-1].source == "y = 2\nprint(y)"


def test_graded_cells_tolerate_the_stub_error_and_outputs_are_cleared():
    ex = mx.make_exercise(solution_notebook(), "04_x.ipynb")
    graded = [c for c in ex.cells if "graded" in c.metadata.get("tags", [])]
    assert graded and all("raises-exception" in c.metadata["tags"] for c in graded)
    assert all(not c.outputs and c.execution_count is None for c in ex.cells if c.cell_type == "code")


def test_header_says_generated_and_from_what():
    ex = mx.make_exercise(solution_notebook(), "04_x.ipynb")
    assert ex.cells[0].source.startswith("# A set")
    assert "generated" in ex.cells[1].source and "solutions/04_x.ipynb" in ex.cells[1].source
    assert ex.metadata["attnbook"]["generated_from"] == "solutions/04_x.ipynb"


def test_byte_stable(tmp_path):
    path = tmp_path / "04_x.ipynb"
    nbformat.write(solution_notebook(), path)
    assert mx.render(path) == mx.render(path)


@pytest.mark.parametrize(
    "source, message",
    [
        ("### BEGIN SOLUTION\nx = 1", "never closed"),
        ("x = 1\n### END SOLUTION", "without"),
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "inside an open region"),
    ],
)
def test_unbalanced_markers_are_reported(source, message):
    nb = new_notebook(cells=[new_markdown_cell("# T"), new_code_cell(source)])
    with pytest.raises(mx.GenerationError, match=message):
        mx.make_exercise(nb, "bad.ipynb")


def _setup(tmp_path):
    solutions, out = tmp_path / "solutions", tmp_path / "exercises"
    solutions.mkdir()
    nbformat.write(solution_notebook(), solutions / "04_x.ipynb")
    return solutions / "04_x.ipynb", out


def test_regenerates_a_pristine_exercise_when_the_solution_changes(tmp_path, capsys):
    solution, out = _setup(tmp_path)
    assert mx.main([str(solution), "--out", str(out)]) == 0
    nb = nbformat.read(solution, as_version=4)
    nb.cells[0].source = "# A set, revised"
    nbformat.write(nb, solution)
    assert mx.main([str(solution), "--out", str(out)]) == 0
    assert "revised" in (out / "04_x.ipynb").read_text()


def test_ran_but_unedited_exercise_counts_as_pristine(tmp_path):
    solution, out = _setup(tmp_path)
    mx.main([str(solution), "--out", str(out)])
    nb = nbformat.read(out / "04_x.ipynb", as_version=4)
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", text="ran\n")]
    nb.cells[2].execution_count = 1
    nbformat.write(nb, out / "04_x.ipynb")
    assert not mx.learner_edited(out / "04_x.ipynb")


def test_refuses_to_overwrite_a_learners_work_unless_forced(tmp_path, capsys):
    solution, out = _setup(tmp_path)
    mx.main([str(solution), "--out", str(out)])
    target = out / "04_x.ipynb"
    nb = nbformat.read(target, as_version=4)
    nb.cells[2].source = nb.cells[2].source.replace(
        "raise NotImplementedError()", "return H @ s_t  # my work"
    )
    nbformat.write(nb, target)
    sol = nbformat.read(solution, as_version=4)
    sol.cells[0].source = "# A set, revised"
    nbformat.write(sol, solution)

    assert mx.main([str(solution), "--out", str(out)]) == 1
    assert "refused" in capsys.readouterr().err
    assert "my work" in target.read_text(), "the learner's work was destroyed"

    assert mx.main([str(solution), "--out", str(out), "--force"]) == 0
    assert "my work" not in target.read_text()


def test_check_mode_reports_drift_and_writes_nothing(tmp_path, capsys):
    solution, out = _setup(tmp_path)
    assert mx.main([str(solution), "--out", str(out), "--check"]) == 1
    assert not (out / "04_x.ipynb").exists()
    mx.main([str(solution), "--out", str(out)])
    assert mx.main([str(solution), "--out", str(out), "--check"]) == 0
