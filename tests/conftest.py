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


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def ids(paths):
    return [p.relative_to(ROOT).as_posix() for p in paths]


@pytest.fixture
def root() -> Path:
    return ROOT
