"""Execute every chapter and solution notebook (in memory, files untouched) and print its wall time.

    python tools/benchmark.py                 # all notebooks
    python tools/benchmark.py chapters/07*.ipynb

Targets (2 CPU cores): each notebook at most 40 s on an idle machine, so that it stays under a minute
on slower ones; see also tools/benchmark_attention.py for the cost of
attention itself. This is a measurement, not a test: it prints figures and never fails on time.

The speed of one machine drifts: on the machine these targets were set on, the same code of chapter 7
ran in 50.5 s and, ten minutes later, in 41.0 s, with nothing else running, and the workload below took
0.52 s at one hour and 0.69 s at another (2026-12-02). So the script
also times a fixed reference workload (a small GRU trained for 100 steps on one thread, the kind of work
the chapters do), before and after the notebooks, and prints each time scaled to the speed at which
that workload takes REFERENCE_S (the "scaled" column, which the target applies to), using the
measurement before the notebooks; the one after tells whether the speed changed during the run. Compare
raw figures only from runs whose workload times agree.
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
# the reference workload's time on the machine the targets were set on, at its faster hours (2026-12-02)
REFERENCE_S = 0.56


def reference_workload(steps: int = 100, repeats: int = 3) -> float:
    """Least wall time of ``steps`` training steps of a one-layer GRU (64 -> 128, batch 32 x 20) on one
    thread: a fixed amount of the work the chapters do, to measure how fast the machine is right now."""
    import torch
    from torch import nn

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        gru = nn.GRU(64, 128, batch_first=True)
        x = torch.randn(32, 20, 64)
        opt = torch.optim.Adam(gru.parameters(), lr=1e-3)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(steps):
                out, _ = gru(x)
                out.square().mean().backward()
                opt.step()
                opt.zero_grad()
            best = min(best, time.perf_counter() - start)
        return best
    finally:
        torch.set_num_threads(threads)


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
    before = reference_workload()
    scale = REFERENCE_S / before
    print(f"# reference workload before: {before:.2f} s (the targets assume {REFERENCE_S:.2f} s)", flush=True)
    print(f"{'seconds':>8} {'scaled':>7}  {'status':<8} notebook (includes ~1-2 s of kernel start)")
    timings = []
    for path in paths:
        seconds, status = run(path.resolve())
        timings.append(seconds)
        shown = path.relative_to(ROOT) if path.is_absolute() else path
        print(f"{seconds:8.1f} {seconds * scale:7.1f}  {status:<8} {shown}", flush=True)
    after = reference_workload()
    slow = [p for p, t in zip(paths, timings) if t * scale > TARGET_S]
    drift = after / before
    print(
        f"# reference workload after: {after:.2f} s"
        + (
            " (the speed changed during the run by more than 10 %: run it again)"
            if abs(drift - 1) > 0.1
            else ""
        )
    )
    print(
        f"{sum(timings):8.1f} {sum(timings) * scale:7.1f}  total for {len(paths)} notebook(s); target per "
        f"notebook {TARGET_S:.0f} s, scaled; over: {len(slow)}"
        + "".join(f"\n  over target: {p}" for p in slow)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
