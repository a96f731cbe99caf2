"""Each generated exercise runs in a fresh kernel; every graded cell says "not attempted yet" and no
other cell fails."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import EXERCISES, ids

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("path", EXERCISES, ids=ids(EXERCISES))
def test_blank_exercise_reports_not_attempted_for_every_task(path):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    graded = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if "graded" in cell.metadata.get("tags", []):
            graded += 1
            assert len(errors) == 1 and errors[0].ename == "NotAttemptedYet", (
                f"{path.name}:\n{cell.source}\n{errors}"
            )
            assert "not attempted yet" in errors[0].evalue
            assert len(errors[0].traceback) == 1, "the learner must see the message, not a traceback"
        else:
            assert not errors, f"{path.name}: unexpected error in\n{cell.source}\n{errors}"
    assert graded >= 3
