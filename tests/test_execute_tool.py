"""The executor stores outputs deterministically."""

from __future__ import annotations

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

import execute_notebooks as ex


def test_carriage_returns_collapse_to_the_final_state():
    text = "epochs:   0%|  | 0/3\repochs:  33%|# | 1/3\repochs: 100%|##| 3/3\nloss 0.1\n"
    assert ex.collapse_carriage_returns(text) == "epochs: 100%|##| 3/3\nloss 0.1\n"
    assert ex.collapse_carriage_returns("a\r\nb\n") == "a\r\nb\n"


@pytest.mark.slow
def test_execution_is_byte_stable_and_in_order(tmp_path):
    nb = new_notebook(
        cells=[
            new_markdown_cell("# T"),
            new_code_cell(
                "import sys\nfor i in range(3):\n    print(i, end='\\r', file=sys.stderr)\nprint('done', file=sys.stderr)"
            ),
            new_code_cell("1 + 1"),
        ]
    )
    path = tmp_path / "t.ipynb"
    nbformat.write(nb, path)
    ex.execute(path)
    first = path.read_bytes()
    ex.execute(path)
    assert path.read_bytes() == first
    stored = nbformat.read(path, as_version=4)
    code = [c for c in stored.cells if c.cell_type == "code"]
    assert code[0].id == ex.SETUP_ID, "the setup cell comes first"
    assert [c.execution_count for c in code] == [1, 2, 3]
    assert code[1].outputs[0].text == "done\n"
    assert "execution" not in code[1].metadata


def test_split_streams_are_joined():
    nb = new_notebook(cells=[new_code_cell("print(1)")])
    nb.cells[0].outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="a\n"),
        nbformat.v4.new_output("stream", name="stdout", text="b\n"),
        nbformat.v4.new_output("stream", name="stderr", text="c\n"),
    ]
    ex.normalise(nb)
    assert [(o.name, o.text) for o in nb.cells[0].outputs] == [("stdout", "a\nb\n"), ("stderr", "c\n")]
