"""Time and peak memory of three exact attentions as the sequence grows (the note of chapter 10).

Compares, for T_q = T_k = T (self-attention sized), B = 1, h = 1, d_k = d_v = 64, float32, on the CPU:

* ``naive``: the book's ``attnbook.attention.scaled_dot_product_attention`` (builds the (T, T) scores);
* ``blockwise``: ``attnbook.blockwise.online_softmax_attention`` (keys in blocks, running max and sum);
* ``torch``: ``torch.nn.functional.scaled_dot_product_attention`` (PyTorch's fused CPU kernel).

Every (method, T) runs in a **fresh subprocess**, so that one measurement cannot inherit memory from
another. The worker builds Q, K, V, runs the method once on a tiny input (to load libraries and start
threads), reads ``ru_maxrss`` (the process's peak resident memory), runs the method once at size T and
reads ``ru_maxrss`` again: the difference is the peak memory of that call beyond its inputs. Another fresh
process times the call (median and minimum of repeats after three warm-up calls, under ``torch.no_grad()``). ``tracemalloc`` is not used: it
does not see PyTorch's CPU allocations.

Next to the measured peak, the table gives the *counted* size of the intermediates the algorithm needs at
once (``attnbook.blockwise.peak_intermediate_elements``): two (T, T) matrices for the full computation.
The book's naive code measures about three, because ``softmax`` holds the scores, their exponentials and
the normalised weights at the same moment.

    .venv/bin/python tools/benchmark_attention.py            # T = 256 ... 4096
    .venv/bin/python tools/benchmark_attention.py --sizes 256 512 --repeats 5

Timings depend on the machine and on what else runs on it: measure when it is quiet, and repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

METHODS = ("naive", "blockwise", "torch")
D = 64
BLOCK = 128


def _attention(method: str):
    import torch.nn.functional as F

    from attnbook.attention import scaled_dot_product_attention
    from attnbook.blockwise import online_softmax_attention

    if method == "naive":
        return lambda Q, K, V: scaled_dot_product_attention(Q, K, V)[0]
    if method == "blockwise":
        return lambda Q, K, V: online_softmax_attention(Q, K, V, BLOCK)
    if method == "torch":
        return lambda Q, K, V: F.scaled_dot_product_attention(Q, K, V)
    raise ValueError(method)


def worker(kind: str, method: str, T: int, repeats: int, threads: int) -> dict:
    """One measurement of (method, T) in this fresh process: ``kind`` is "memory" or "time"."""
    import torch

    torch.set_num_threads(threads)
    fn = _attention(method)
    gen = torch.Generator().manual_seed(0)
    Q, K, V = (torch.randn(1, 1, T, D, generator=gen) for _ in range(3))  # (B, h, T, d)
    with torch.no_grad():
        fn(*(x[..., :16, :] for x in (Q, K, V)))  # warm-up on a tiny input: libraries, thread pool
        if kind == "memory":
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
            out = fn(Q, K, V)
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            assert out.shape == (1, 1, T, D) and torch.isfinite(out).all()
            return {"peak_bytes": (after - before) * 1024}
        for _ in range(3):  # warm-up at full size: the allocator reaches its steady state
            fn(Q, K, V)
        times = []
        deadline = time.perf_counter() + 10.0
        for _ in range(repeats):
            start = time.perf_counter()
            fn(Q, K, V)
            times.append(time.perf_counter() - start)
            if time.perf_counter() > deadline and len(times) >= 3:
                break
    return {"time_s": statistics.median(times), "min_s": min(times), "repeats": len(times)}


def _run_worker(kind: str, method: str, T: int, repeats: int, threads: int, env: dict) -> dict:
    command = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        method,
        str(T),
        "--repeats",
        str(repeats),
        "--threads",
        str(threads),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(method: str, T: int, repeats: int, threads: int) -> dict:
    """Peak memory and time of (method, T), each measured in its own fresh process."""
    env = dict(os.environ)
    # Idle OpenMP threads sleep instead of spinning. On a machine whose few cores are shared, a spinning
    # team waits for a scheduler time slice at every parallel region whenever a neighbour is busy: the
    # blockwise loop at T=512 took 320 ms that way and 5 ms with passive waiting, on the same machine.
    env["OMP_WAIT_POLICY"] = os.environ.get("OMP_WAIT_POLICY", "passive")
    timing = _run_worker("time", method, T, repeats, threads, env)
    # For memory only: a fixed mmap threshold makes glibc hand every large tensor back to the system when
    # it is freed, so that ru_maxrss follows the tensors alive at once (not a heap that grew earlier and
    # kept its pages). It would slow the timed calls down (fresh pages for every allocation).
    memory = _run_worker("memory", method, T, repeats, threads, dict(env, MALLOC_MMAP_THRESHOLD_="65536"))
    return {"method": method, "T": T, **memory, **timing}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def _model_bytes(method: str, T: int) -> float | None:
    """Bytes of the largest set of intermediates alive at once, counted from the algorithm."""
    from attnbook.blockwise import peak_intermediate_elements

    if method == "naive":
        return 4 * peak_intermediate_elements(T, T, D)
    if method == "blockwise":
        return 4 * peak_intermediate_elements(T, T, D, block_size=BLOCK)
    return None


def _mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:9.2f}"


def _ratio(a: float, b: float, floor: float) -> str:
    return f"{a / b:7.2f}" if b > floor else "    n/a"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the measurements to this file")
    parser.add_argument("--worker", nargs=3, metavar=("KIND", "METHOD", "T"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        kind, method, T = args.worker
        print(json.dumps(worker(kind, method, int(T), args.repeats, args.threads)))
        return 0

    import torch

    load_before = os.getloadavg()[0]
    print(
        f"attention benchmark: B=1, h=1, T_q=T_k=T, d_k=d_v={D}, float32, CPU ({_cpu_name()}), "
        f"torch {torch.__version__}, torch.set_num_threads({args.threads}), "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'passive')}; blockwise block={BLOCK}"
    )
    print(
        f"time: median of up to {args.repeats} runs (min: the fastest of them); peak: extra resident memory of one call beyond its "
        f"inputs (ru_maxrss, fresh process per cell); counted: largest intermediates alive at once, from the "
        f"algorithm (attnbook.blockwise.peak_intermediate_elements); scores: one (T, T) float32 matrix"
    )
    header = (
        f"{'T':>6} | {'method':<9} | {'time ms':>9} | {'x torch':>7} | {'min ms':>9} | {'peak MiB':>9} | "
        f"{'x torch':>7} | "
        f"{'counted MiB':>11} | {'scores MiB':>10}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for T in args.sizes:
        cell = {m: measure(m, T, args.repeats, args.threads) for m in METHODS}
        rows.extend(cell.values())
        ref = cell["torch"]
        for m in METHODS:
            r = cell[m]
            model = _model_bytes(m, T)
            counted = "—" if model is None else _mib(model).strip()
            print(
                f"{T:>6} | {m:<9} | {r['time_s'] * 1e3:9.2f} | {_ratio(r['time_s'], ref['time_s'], 0):>7} | "
                f"{r['min_s'] * 1e3:9.2f} | "
                f"{_mib(r['peak_bytes'])} | {_ratio(r['peak_bytes'], ref['peak_bytes'], 2**18):>7} | "
                f"{counted:>11} | {_mib(T * T * 4):>10}",
                flush=True,
            )
    load_after = os.getloadavg()[0]

    print()
    print("growth of peak memory per doubling of T (4 = quadratic, 2 = linear):")
    for m in METHODS:
        peaks = [r["peak_bytes"] for r in rows if r["method"] == m]
        growth = [f"{b / a:.2f}" if a > 0 else "n/a" for a, b in zip(peaks, peaks[1:])]
        print(f"  {m:<9} " + "  ".join(growth))
    naive_ratio = {r["T"]: r["time_s"] for r in rows if r["method"] == "naive"}
    torch_time = {r["T"]: r["time_s"] for r in rows if r["method"] == "torch"}
    print(
        "naive time / torch time (medians): "
        + "  ".join(f"T={T}: {naive_ratio[T] / torch_time[T]:.2f}" for T in args.sizes)
    )
    naive_min = {r["T"]: r["min_s"] for r in rows if r["method"] == "naive"}
    torch_min = {r["T"]: r["min_s"] for r in rows if r["method"] == "torch"}
    print(
        "naive time / torch time (fastest runs, less disturbed by other work): "
        + "  ".join(f"T={T}: {naive_min[T] / torch_min[T]:.2f}" for T in args.sizes)
    )
    print(
        f"load average (1 min) before: {load_before:.2f}, after: {load_after:.2f} "
        f"(on {os.cpu_count()} CPUs; above ~0.5 the timings are disturbed by other work)"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"threads": args.threads, "rows": rows}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
