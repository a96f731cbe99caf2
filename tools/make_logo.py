"""Draw the book's logo and favicon (an attention map: each target word looks mostly at one source word).

    python tools/make_logo.py      # writes book/images/logo.png, logo_ko.png and favicon.png

Drawn by code like every figure of the book, in the Okabe-Ito blue of attnbook.plots.PALETTE, so the files
can be remade and reviewed; the output is committed (the build does not run this).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "book" / "images"
BLUE = "#0072B2"

# A 5x5 attention map with one non-monotonic step (like French adjectives after nouns).
ORDER = [0, 1, 3, 2, 4]


def weights() -> np.ndarray:
    w = np.full((5, 5), 0.04)
    for t, i in enumerate(ORDER):
        w[t, i] = 0.84
    return w / w.sum(axis=1, keepdims=True)


def draw(
    path: Path,
    size_px: int,
    with_title: bool,
    title: tuple[str, str] = ("Attention,", "step by step"),
    font: str | None = None,
) -> None:
    cmap = LinearSegmentedColormap.from_list("book", ["#ffffff", BLUE])
    width = 3.2 if with_title else 1.0
    fig = plt.figure(figsize=(width, 1.0), dpi=size_px)
    ax = fig.add_axes((0.04, 0.04, 0.92 / width, 0.92))
    ax.imshow(weights(), cmap=cmap, vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color(BLUE)
        spine.set_linewidth(max(size_px / 64, 1))
    if with_title:
        family = {"family": font} if font else {}
        fig.text(
            1.12 / width, 0.62, title[0], fontsize=15, color="#222222", weight="bold", va="center", **family
        )
        fig.text(1.12 / width, 0.3, title[1], fontsize=13, color=BLUE, va="center", **family)
    fig.savefig(
        path,
        transparent=not with_title,
        facecolor="white" if with_title else "none",
        metadata={"Software": None},
    )
    plt.close(fig)


def main() -> None:
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        print(__doc__)
        return
    OUT.mkdir(parents=True, exist_ok=True)
    draw(OUT / "logo.png", 200, with_title=True)
    draw(OUT / "favicon.png", 64, with_title=False)
    # The Korean edition's logo (a Hangul font: Debian's fonts-nanum, which .ci/run installs).
    draw(OUT / "logo_ko.png", 200, with_title=True, title=("어텐션,", "한 걸음씩"), font="NanumGothic")
    print(f"wrote {OUT / 'logo.png'}, {OUT / 'logo_ko.png'} and {OUT / 'favicon.png'}")


if __name__ == "__main__":
    main()
