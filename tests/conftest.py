"""Shared paths and helpers for the test suite."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
EXERCISES = sorted((ROOT / "exercises").glob("*.ipynb"))
sys.path.insert(0, str(ROOT / "tools"))
HTML = ROOT / "_build" / "html"
SPHINX_PAGES = ("genindex.html", "search.html", "index.html")


def book_pages() -> list[Path]:
    """The built pages of both books (the Korean edition is built into _build/html/ko), without Sphinx's
    own pages and static files; empty before `make book`."""
    if not HTML.exists():
        return []
    return sorted(
        p
        for p in HTML.rglob("*.html")
        if not any(part.startswith("_") for part in p.relative_to(HTML).parts)
        and p.relative_to(HTML).as_posix().removeprefix("ko/") not in SPHINX_PAGES
    )


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def ids(paths):
    return [p.relative_to(ROOT).as_posix() for p in paths]


@pytest.fixture
def root() -> Path:
    return ROOT
