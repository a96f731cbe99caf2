"""Train chapter 8's Luong and Bahdanau models, and Luong's with nine learned offset numbers, at other
seeds, and the last once more with the numbers stored as they are; print what each reaches.

    python tools/offsets_seeds.py        # seven trainings of 10 to 20 s of CPU each, two at a time

Chapter 8 trains each model once (seed 0) with one recipe: Luong's decoder, Bahdanau's, and Luong's with
``offsets=4``. A page that must run in well under a minute cannot train each several times, so this
script trains them at seeds 1 and 2 with the chapter's recipe, and the model with the numbers once more
at seed 0 with ``offset_scale=1`` (the numbers stored as they are, so that Adam can move each by only a
few times the sum of the learning rates), and the chapter quotes what it prints. This is a measurement:
it prints figures and checks nothing. Its output on the machine that built the book is kept in
``tools/measured/offsets_seeds.txt``; ``tests/test_measured.py`` checks that the chapter quotes it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnbook.models import BUCKETS, evaluate_by_length, train_side_by_side  # noqa: E402

RECIPE = dict(  # chapter 8's
    kind="attention",
    epochs=3,
    max_tokens=900,
    lr=6e-3,
    sort_window=None,
    schedule="cosine",
)
BAHDANAU = dict(RECIPE, kind="bahdanau", attn_hidden=64)
RUNS = {
    "Luong, seed 1": dict(RECIPE, seed=1),
    "Luong, seed 2": dict(RECIPE, seed=2),
    "Bahdanau, seed 1": dict(BAHDANAU, seed=1),
    "Bahdanau, seed 2": dict(BAHDANAU, seed=2),
    "with offsets, seed 1": dict(RECIPE, seed=1, offsets=4),
    "with offsets, seed 2": dict(RECIPE, seed=2, offsets=4),
    "with offsets stored as they are (offset_scale=1), seed 0": dict(RECIPE, offsets=4, offset_scale=1),
}


def main() -> int:
    results = train_side_by_side(*RUNS.values(), processes=2)
    for name, (model, history, splits) in zip(RUNS, results):
        scores = evaluate_by_length(model, splits.test, BUCKETS)
        print(f"{name} ({history['cpu_seconds']:.0f} s of CPU)")
        print("  exact: " + "  ".join(f"{s.label}: {s.sentence_acc:.3f}" for s in scores))
        if getattr(model, "offsets", None) is not None:
            numbers = model.offset_numbers
            print(
                "  numbers r_k - r_0: " + " ".join(f"{k}: {r - numbers[0]:.2f}" for k, r in numbers.items())
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
