"""How fast trusted grading goes through a class, and where the seconds go.

    .venv/bin/python tools/benchmark_grading.py                 # 40 submissions, N = 1 and 2
    .venv/bin/python tools/benchmark_grading.py --size 12 --jobs 1 --no-prefetch-too

A synthetic class of set-08 submissions is made from ``solutions/`` and ``exercises/``: correct work,
untouched stubs, learner-style wrong answers, three cells that never end (they ignore signals), and malformed
files (not JSON, another set's notebook). Each is graded exactly as ``attnbook-grade -j N`` grades it
(bubblewrap sandbox where available, one fresh sandbox per submission). Printed: notebooks per second
for each N, and the seconds summed over the class by part: the sandbox and interpreter start, the torch
import inside the sandbox, the time the grader waited for a kernel (what starting the next sandbox early
does not hide), the learner's cells, the cases (the engine's comparisons in the grader, the learner's
function in the kernel). On a shared machine run it twice and keep the better figures.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import nbformat  # noqa: E402

from attnbook.grading import cli  # noqa: E402
from attnbook.grading.sandbox import backend  # noqa: E402

SOLUTION = ROOT / "solutions" / "08_attention_matrix_form.ipynb"
EXERCISE = ROOT / "exercises" / "08_attention_matrix_form.ipynb"
OTHER_SET = ROOT / "exercises" / "05_softmax_weights.ipynb"

WRONG = {  # function name -> body that replaces the stub
    "sdpa": "    w = torch.softmax(Q @ K.transpose(-2, -1), dim=-1)\n    return w @ V, w",
    "causal_mask": "    return torch.ones(T, T, dtype=torch.bool).triu()",
    "padding_mask": "    return (torch.arange(T_k)[None] <= lengths[:, None])[:, None]",
}
HANG = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"


def _wrong(rng: random.Random):
    nb = nbformat.read(EXERCISE, as_version=4)
    solution = nbformat.read(SOLUTION, as_version=4)
    bodies = {name: next(c.source for c in solution.cells if f"def {name}(" in c.source) for name in WRONG}
    broken = rng.choice(list(WRONG))
    for cell in nb.cells:
        for name in WRONG:
            if f"def {name}(" in cell.source:
                cell.source = (
                    cell.source.replace("    # YOUR CODE HERE\n    raise NotImplementedError()", WRONG[name])
                    if name == broken
                    else bodies[name]
                )
    return nb


def make_class(folder: Path, size: int, seed: int = 0) -> list[Path]:
    """``size`` submissions: 40 % correct, 20 % blank, 25 % wrong, 7.5 % hanging, 7.5 % malformed."""
    rng = random.Random(seed)
    kinds = ["correct"] * 16 + ["blank"] * 8 + ["wrong"] * 10 + ["hanging"] * 3 + ["malformed"] * 3
    kinds = (
        [kinds[i * len(kinds) // size] for i in range(size)]
        if size < len(kinds)
        else [kinds[i % len(kinds)] for i in range(size)]
    )
    rng.shuffle(kinds)
    paths = []
    for i, kind in enumerate(kinds):
        path = folder / f"learner{i:03d}_{kind}" / SOLUTION.name
        path.parent.mkdir(parents=True)
        if kind == "correct":
            nbformat.write(nbformat.read(SOLUTION, as_version=4), path)
        elif kind == "blank":
            nbformat.write(nbformat.read(EXERCISE, as_version=4), path)
        elif kind == "wrong":
            nbformat.write(_wrong(rng), path)
        elif kind == "hanging":
            nb = nbformat.read(SOLUTION, as_version=4)
            nb.cells.insert(len(nb.cells) // 2, nbformat.v4.new_code_cell(HANG))
            nbformat.write(nb, path)
        elif i % 2:
            path.write_text('{"cells": [', encoding="utf-8")
        else:
            nbformat.write(nbformat.read(OTHER_SET, as_version=4), path)
        paths.append(path)
    return paths


def old_path(paths: list[Path], cell_timeout: float) -> float:
    """Seconds per notebook of the former grader: a Jupyter kernel per notebook, no sandbox, verdicts
    computed in the learner's kernel (for comparison only)."""
    from nbclient import NotebookClient

    start = time.perf_counter()
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        NotebookClient(
            nb,
            timeout=int(cell_timeout),
            kernel_name="python3",
            allow_errors=True,
            record_timing=False,
            resources={"metadata": {"path": str(path.parent)}},
        ).execute()
    return (time.perf_counter() - start) / len(paths)


PARTS = ("sandbox_start", "torch_import", "kernel_wait", "learner_cells", "cases")


def run(paths: list[Path], jobs: int, prefetch: bool, cell_timeout: float) -> dict:
    start = time.perf_counter()
    outcomes = cli.grade_many(paths, jobs, prefetch=prefetch, cell_timeout=cell_timeout, set_id="08")
    wall = time.perf_counter() - start
    reports = [v for k, v in outcomes if k == "ok"]
    parts = {p: sum(r["timing"][p] for r in reports) for p in PARTS}
    parts["grading_total"] = sum(r["timing"]["total"] for r in reports)
    return {
        "wall": wall,
        "rate": len(paths) / wall,
        "graded": len(reports),
        "errors": len(paths) - len(reports),
        "points": sum(r["points"] for r in reports),
        "restarts": sum(r["timing"]["restarts"] for r in reports),
        "parts": parts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=40)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cell-timeout", type=float, default=5.0)
    parser.add_argument(
        "--no-prefetch-too",
        action="store_true",
        help="also time N = 1 without starting the next sandbox early",
    )
    parser.add_argument(
        "--old-path-too",
        type=int,
        default=0,
        metavar="K",
        help="also time the former grader (a Jupyter kernel per notebook) on K correct notebooks",
    )
    args = parser.parse_args()
    print(
        f"sandbox: {backend()}; class of {args.size} set-08 submissions; cell limit {args.cell_timeout:g} s; "
        f"{os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_class(Path(tmp), args.size)
        settings = [(n, True) for n in args.jobs] + ([(1, False)] if args.no_prefetch_too else [])
        for jobs, prefetch in settings:
            result = run(paths, jobs, prefetch, args.cell_timeout)
            parts = result["parts"]
            print(
                f"\nN = {jobs}{'' if prefetch else ', no early start'}: {result['wall']:.1f} s, "
                f"{result['rate']:.2f} notebooks/s ({result['graded']} graded, {result['errors']} not gradable, "
                f"{result['restarts']} kernel restarts)"
            )
            print("  seconds summed over the class (parallel parts overlap):")
            for name in (*PARTS, "grading_total"):
                print(f"    {name:<14} {parts[name]:7.1f}")
        if args.old_path_too:
            correct = [p for p in paths if p.parent.name.endswith("_correct")][: args.old_path_too]
            print(
                f"\nformer grader (Jupyter kernel per notebook, no sandbox): "
                f"{old_path(correct, args.cell_timeout):.1f} s per notebook ({len(correct)} correct notebooks)"
            )


if __name__ == "__main__":
    main()
