"""Conventions that the exercise texts state and that may change book-wide (return order, weight layout).

The learner reads them from the exercise notebook, as a learner would; the batch follows what the text says
today so that it keeps testing the mistake, not yesterday's convention.
"""

from functools import lru_cache
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]


@lru_cache(maxsize=None)
def exercise_text(set_id: str) -> str:
    path = next((ROOT / "exercises").glob(f"{set_id}_*.ipynb"))
    nb = nbformat.read(path, as_version=4)
    return "\n".join(cell.source for cell in nb.cells)


def def_cell(set_id: str, name: str) -> str:
    """The source of the exercise cell that defines ``name`` (signature and docstring)."""
    path = next((ROOT / "exercises").glob(f"{set_id}_*.ipynb"))
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and f"def {name}(" in cell.source:
            return cell.source
    raise LookupError(f"no cell defines {name} in set {set_id}")


def weights_first_06(name: str) -> bool:
    """True when set 06's task ``name`` asks for ``(alpha, a)``; False for ``(a, alpha)``."""
    doc = def_cell("06", name).replace(" ", "")
    return "->(alpha" in doc


def x_at_W_transposed_09() -> bool:
    """True when set 09 applies weights as ``x @ W.T`` (PyTorch's layout), False for ``x @ W``."""
    text = exercise_text("09")
    return "(not `x @ W.T`)" not in text and "x @ W.T" in text
