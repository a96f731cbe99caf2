"""Progress bars for training loops: plain text tqdm on stderr, never a notebook widget.

Widgets would store JavaScript in the executed notebooks; a text bar stores a line of text.
"""

from __future__ import annotations

from collections.abc import Iterable

from tqdm.std import tqdm

__all__ = ["progress"]


def progress(iterable: Iterable, desc: str, total: int | None = None) -> tqdm:
    """Wrap ``iterable`` in a text progress bar labelled ``desc`` (``total``: its length, if known)."""
    return tqdm(iterable, desc=desc, total=total, ascii=False, mininterval=0.5, leave=True)
