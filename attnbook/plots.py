"""Figures in one style: colour-blind-safe colours, labelled axes, readable fonts.

Every figure in the book is drawn by code in its notebook with these helpers, so the look is consistent.
In another language (``attnbook.set_language("ko")`` or ``ATTNBOOK_LANG=ko``) the figures' labels are
translated when a figure is rendered, through ``attnbook/locales/<lang>/figures.po``
(:func:`attnbook.i18n.translated_figure`); the code that draws them stays English.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from . import i18n

#: Okabe–Ito palette (safe for the common forms of colour blindness), in the order the book uses it.
PALETTE = [
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#D55E00",  # vermillion
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#F0E442",  # yellow
    "#000000",  # black
]

#: Sequential colour map for heat maps of weights (perceptually uniform, colour-blind safe).
HEATMAP_CMAP = "cividis"


def use_book_style() -> None:
    """Set matplotlib defaults for the book: palette, font sizes, PNG output at a crisp resolution."""
    matplotlib.rcParams.update(
        {
            "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
            "figure.figsize": (6.4, 3.6),
            "figure.dpi": 100,
            "savefig.dpi": 100,
            "font.size": 11,
            "axes.titlesize": 12,
            "axes.labelsize": 11,
            "legend.fontsize": 10,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "image.cmap": HEATMAP_CMAP,
        }
    )
    if i18n.get_language() != "en":
        i18n.install_figure_hook()
    # Inline figures as PNG only: SVG output embeds a date and would make stored outputs unstable.
    ipython = _ipython()
    if ipython is not None:
        try:
            from matplotlib_inline.backend_inline import set_matplotlib_formats

            set_matplotlib_formats("png")
        except Exception:  # pragma: no cover - outside an IPython kernel
            pass


if i18n.get_language() != "en":  # ATTNBOOK_LANG=ko: figures in Korean (set_language installs it too)
    i18n.install_figure_hook()


def _ipython():
    if "IPython" not in sys.modules:
        return None
    from IPython import get_ipython

    return get_ipython()


def in_jupyter() -> bool:
    """True when a person is looking: a kernel started by a Jupyter server (JupyterLab, Notebook) or Colab.

    Kernels run by nbclient, nbval or ``jupyter execute`` are also ``ZMQInteractiveShell``s but have no
    front end; only a Jupyter server sets ``JPY_SESSION_NAME``. Interactive widgets are shown only here,
    so that no widget is ever stored in a committed notebook.
    """
    if "google.colab" in sys.modules:
        return True
    ipython = _ipython()
    return (
        ipython is not None
        and type(ipython).__name__ == "ZMQInteractiveShell"
        and bool(os.environ.get("JPY_SESSION_NAME"))
    )


def heatmap(
    weights,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    ax=None,
    title: str | None = None,
    xlabel: str = "source position i (keys)",
    ylabel: str = "target step t (queries)",
    annotate: bool = True,
    vmax: float = 1.0,
    cbar_label: str = "weight α",
):
    """Heat map of attention weights: one row per query (target step), one column per key.

    Args:
        weights: ``(T_q, T_k)`` array or tensor of weights in [0, 1].
        row_labels: ``T_q`` labels (target tokens); col_labels: ``T_k`` labels (source tokens).

    Returns:
        The matplotlib ``Axes``.
    """
    w = np.asarray(weights.detach().cpu() if hasattr(weights, "detach") else weights, dtype=float)
    if w.shape != (len(row_labels), len(col_labels)):
        raise ValueError(
            f"weights have shape {w.shape} but there are {len(row_labels)} row labels and "
            f"{len(col_labels)} column labels"
        )
    if ax is None:
        _, ax = plt.subplots(figsize=(0.5 * len(col_labels) + 2.0, 0.45 * len(row_labels) + 1.5))
    image = ax.imshow(w, cmap=HEATMAP_CMAP, vmin=0.0, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=45, ha="right")
    ax.set_yticks(range(len(row_labels)), row_labels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(False)
    if title:
        ax.set_title(title)
    if annotate and w.size <= 150:
        for (r, c), value in np.ndenumerate(w):
            ax.text(
                c,
                r,
                f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=8,
                color="black" if value > 0.6 * vmax else "white",
            )
    ax.figure.colorbar(image, ax=ax, label=cbar_label)
    return ax
