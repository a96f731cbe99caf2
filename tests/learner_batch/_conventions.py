"""What the task texts say today, read as a learner reads them.

Some conventions change book-wide while the graders are being reworked (the order of a returned pair, the
weight layout, the numbers of a hand task). The batch reads them from the task text so that it keeps testing
the mistake, not yesterday's convention. The text is read from ``solutions/`` (the single source that
``exercises/`` is generated from), and only what a learner sees: markdown cells and the code before
``### BEGIN SOLUTION``.
"""

import re
from functools import cache
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]


@cache
def _cells(set_id: str) -> tuple[tuple[str, str], ...]:
    path = next((ROOT / "solutions").glob(f"{set_id}_*.ipynb"))
    nb = nbformat.read(path, as_version=4)
    return tuple((c.cell_type, c.source.split("### BEGIN SOLUTION")[0]) for c in nb.cells)


def task_text(set_id: str, name: str) -> str:
    """The markdown cell that introduces task ``name`` and the signature/docstring of its function."""
    cells = list(_cells(set_id))
    for i, (kind, src) in enumerate(cells):
        if kind == "code" and f"def {name}(" in src:
            intro = next((s for k, s in reversed(cells[:i]) if k == "markdown"), "")
            return intro + "\n" + src
    raise LookupError(f"no cell defines {name} in set {set_id}")


def exercise_text(set_id: str) -> str:
    return "\n".join(src for _, src in _cells(set_id))


def weights_first_06(name: str) -> bool:
    """True when set 06's task ``name`` asks for ``(alpha, a)``; False for ``(a, alpha)``."""
    text = task_text("06", name).replace(" ", "")
    return "->(alpha" in text


def x_at_W_transposed_09() -> bool:
    """True when set 09 applies weights as ``x @ W.T`` (PyTorch's layout), False for ``x @ W``."""
    text = task_text("09", "multi_head_attention")
    return "(not `x @ W.T`)" not in text and ("x @ W.T" in text or "(out, in)" in text)


def out_in_layout_04() -> bool:
    """True when set 04's additive task stores W_q as ``(d_a, d_q)`` (nn.Linear's layout)."""
    return "(d_a, d_q)" in task_text("04", "additive_scores")


def numbers_in_text(set_id: str, name: str, n: int = 4) -> list[float] | None:
    """The first bracketed list of ``n`` numbers in the task's text (a hand task's given vector)."""
    for match in re.finditer(r"\[([-+0-9.,\s]+)\]", task_text(set_id, name)):
        parts = [p for p in match.group(1).split(",") if p.strip()]
        try:
            values = [float(p) for p in parts]
        except ValueError:
            continue
        if len(values) == n:
            return values
    return None


def task_id(set_id: str, fn_name: str) -> str:
    """The id under which the graded cell of set ``set_id`` checks the function ``fn_name``."""
    for kind, src in _cells(set_id):
        match = re.search(r'check\("([^"]+)",\s*' + re.escape(fn_name) + r"\)", src)
        if kind == "code" and match:
            return match.group(1)
    return f"{set_id}.{fn_name}"
