"""Train chapter 7's third model (Luong's decoder with nine learned offset numbers, d = 128) at other
seeds and with other kernel settings, and a Luong model as narrow without the numbers; print what each
reaches.

    python tools/learned_hint.py        # nine trainings of 10 to 20 s of CPU each, two at a time

Chapter 7 trains that model once, in the background, with the recipe of its two other models but
d = 128 instead of 192. A page that must run in well under a minute cannot train it several times, so
this script trains it again at seeds 1 to 3; at seed 0 with PyTorch's AVX2 kernels
(``ATEN_CPU_CAPABILITY=avx2``) and with MKL's most compatible ones (``MKL_CBWR=COMPATIBLE``), two
settings that round differently (chapter 7's note "Your numbers may differ a little"); and, as a
control for the width, Luong's model at d = 128 without the numbers, at seeds 0 to 3. The chapter quotes what it
prints. This is a measurement: it prints figures and checks nothing. Its output is kept in
``tools/measured/learned_hint.txt``; ``tests/test_measured.py`` checks that the chapter quotes it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from attnbook.models import BUCKETS, evaluate_by_length, train_side_by_side  # noqa: E402

LEARNED = dict(  # chapter 7's third model
    kind="attention",
    n_train=18_000,
    hidden=128,
    epochs=1,
    max_tokens=600,
    sort_window=None,
    schedule="cosine",
    offsets=4,
)
RUNS = {  # name: (job, environment of its worker)
    "with the numbers, seed 1": (dict(LEARNED, seed=1), {}),
    "with the numbers, seed 2": (dict(LEARNED, seed=2), {}),
    "with the numbers, seed 3": (dict(LEARNED, seed=3), {}),
    **{
        f"as narrow, without the numbers, seed {seed}": (
            dict({k: v for k, v in LEARNED.items() if k != "offsets"}, seed=seed),
            {},
        )
        for seed in (0, 1, 2, 3)
    },
    "with the numbers, seed 0, ATEN_CPU_CAPABILITY=avx2": (LEARNED, {"ATEN_CPU_CAPABILITY": "avx2"}),
    "with the numbers, seed 0, MKL_CBWR=COMPATIBLE": (LEARNED, {"MKL_CBWR": "COMPATIBLE"}),
}


def main() -> int:
    import platform

    torch.set_num_threads(1)  # as the chapter: its evaluation runs on one thread
    cpu = platform.machine()
    try:  # Linux: the processor's name, vendor, family and model
        info = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value)  # the first processor's
        fields = ("model name", "vendor_id", "cpu family", "model")
        cpu = "{}, {} family {} model {}".format(*(info[k].strip() for k in fields))
    except (OSError, KeyError):
        pass
    print(f"# {cpu}, PyTorch {torch.__version__} (CPU capability {torch.backends.cpu.get_cpu_capability()})")
    results = {}
    settings = sorted({tuple(env.items()) for _, env in RUNS.values()})
    for setting in settings:  # the workers inherit this process's environment
        names = [name for name, (_, env) in RUNS.items() if tuple(env.items()) == setting]
        saved = dict(os.environ)
        os.environ.update(dict(setting))
        try:
            trained = train_side_by_side(*(RUNS[name][0] for name in names), processes=2, progress=False)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        results.update(zip(names, trained))
    for name in RUNS:
        model, history, splits = results[name]
        scores = evaluate_by_length(model, splits.test, BUCKETS)
        print(f"{name} ({history['cpu_seconds']:.0f} s of CPU)")
        print("  exact: " + "  ".join(f"{s.label}: {s.sentence_acc:.3f}" for s in scores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
