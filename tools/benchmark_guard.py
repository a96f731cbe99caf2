"""What the forbidden-call guard costs a learner's function: plain calls against guarded ones.

    .venv/bin/python tools/benchmark_guard.py

Two guards: the profiler alone (every set's tasks), and the profiler with the dispatch mode that sets 09
and 10 add (every PyTorch operation looked at, its values fingerprinted, set 10's block record). The
function is a small attention, ``softmax(Q Kᵀ / √d) V`` on ``(2, 4, 8)`` float64 tensors; each figure is
the fastest of 15 interleaved repeats of 200 calls (the machine may be shared), in microseconds per call.
The profiler alone adds little. The dispatch mode adds a fixed cost per PyTorch operation, most of it the
profiler seeing PyTorch's own Python code around each operation: measured on the machine that builds the
book, about 80 us per operation, so a set-10 answer of some 150 operations pays about 12 ms per call,
far below the 5 s limit of a call. Speed targets live here, not in timed tests.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from attnbook.grading import ForbiddenCallGuard  # noqa: E402
from attnbook.grading.engine import TORCH_ATTENTION  # noqa: E402

CALLS, REPEATS = 200, 15


def learner(Q, K, V):
    s = Q @ K.transpose(-2, -1) / K.shape[-1] ** 0.5
    return torch.softmax(s, dim=-1) @ V


def main() -> None:
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    Q, K, V = (torch.randn(2, 4, 8, generator=g, dtype=torch.float64) for _ in range(3))
    guards = {
        "profiler only": ForbiddenCallGuard(["attnbook.attention:softmax"]),
        "profiler + dispatch mode": ForbiddenCallGuard(list(TORCH_ATTENTION)),
    }
    for guard in guards.values():
        guard.inputs = [Q, K, V]

    def plain():
        for _ in range(CALLS):
            learner(Q, K, V)

    def guarded(guard):
        def run():
            for _ in range(CALLS):
                with guard:
                    learner(Q, K, V)

        return run

    runs = {"plain": plain, **{name: guarded(g) for name, g in guards.items()}}
    for run in runs.values():
        run()  # warm: classify the code objects, import what a dispatch mode needs
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(REPEATS):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - t0)
    base = best["plain"]
    print(f"{'':>26} | {'us per call':>11} | {'x plain':>7}")
    for name, seconds in best.items():
        print(f"{name:>26} | {seconds / CALLS * 1e6:>11.1f} | {seconds / base:>7.2f}")


if __name__ == "__main__":
    main()
