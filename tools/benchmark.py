"""Execute every chapter and solution notebook (in memory, files untouched) and print its wall time.

    python tools/benchmark.py                 # all notebooks
    python tools/benchmark.py chapters/07*.ipynb

Targets (2 CPU cores): each notebook at most 40 s on an idle machine, so that it stays under a minute
on slower ones; see also tools/benchmark_attention.py for the cost of
attention itself. This is a measurement, not a test: it prints figures and never fails on time.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 40.0


def run(path: Path) -> tuple[float, str]:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    try:
        client.execute()
        status = "ok"
    except Exception as exc:  # report and go on: this is a measurement
        status = f"ERROR {type(exc).__name__}"
    return time.perf_counter() - start, status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "chapters").glob("*.ipynb")) + sorted(
        (ROOT / "solutions").glob("*.ipynb")
    )
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s), Python {platform.python_version()}"
    )
    print(f"{'seconds':>8}  {'status':<8} notebook (includes ~1-2 s of kernel start)")
    total = 0.0
    slow = []
    for path in paths:
        seconds, status = run(path.resolve())
        total += seconds
        flag = "  <-- over target" if seconds > TARGET_S else ""
        if flag:
            slow.append(path)
        print(
            f"{seconds:8.1f}  {status:<8} {path.relative_to(ROOT) if path.is_absolute() else path}{flag}",
            flush=True,
        )
    print(
        f"{total:8.1f}  total for {len(paths)} notebook(s); target per notebook {TARGET_S:.0f} s; over: {len(slow)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
