"""Train chapter 7's plain model four and eight times as long as the chapter does, and print what it reaches.

    python tools/plain_to_plateau.py        # about 70 and 140 s of CPU; the two run side by side

Chapter 7 compares the plain model and Luong's attention model at one budget (one pass over 18 000 pairs),
where the plain model's validation loss is still falling. Training it much longer does not fit in a
page that must run in well under a minute, so this script does it, with the chapter's recipe and only
the number of epochs changed (the cosine schedule then spans all of them), and the chapter quotes what
it prints. This is a measurement: it prints figures and checks nothing. Its output on the machine that
built the book is kept in ``tools/measured/plain_to_plateau.txt``; ``tests/test_measured.py`` checks that
the chapter quotes it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnbook.models import BUCKETS, evaluate_by_length, train_side_by_side  # noqa: E402

RECIPE = dict(  # chapter 7's, except the epochs
    kind="plain",
    bidirectional=True,
    n_train=18_000,
    hidden=192,
    max_tokens=600,
    sort_window=None,
    schedule="cosine",
    validate=True,
    val_points=2,
)


def main() -> int:
    runs = train_side_by_side(*(dict(RECIPE, epochs=e) for e in (4, 8)))
    for epochs, (model, history, splits) in zip((4, 8), runs):
        scores = evaluate_by_length(model, splits.test, BUCKETS)
        print(f"plain model, {epochs} epochs ({history['cpu_seconds']:.0f} s of CPU)")
        print("  validation loss every half epoch: " + " ".join(f"{v:.3f}" for v in history["val_loss"]))
        print(
            "  "
            + "  ".join(f"{s.label}: tokens {s.token_acc:.3f}, exact {s.sentence_acc:.3f}" for s in scores)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
