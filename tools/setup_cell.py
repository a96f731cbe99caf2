"""Keep the setup cell of every notebook in step with the book's one repository setting.

    python tools/setup_cell.py            # rewrite the setup cell of chapters/ and solutions/ from _config.yml
    python tools/setup_cell.py --check    # exit 1 if a notebook's setup cell differs from what it should be

The repository's address is set in one place: ``repository.url`` in ``_config.yml``. The book's launch
buttons (Colab, Binder) are made from it by Jupyter Book, and the first code cell of every notebook (id
``setup-attnbook``, hidden in the book) installs the helper package from it when the notebook runs outside a
copy of the book. If that install fails, the cell stops with one sentence saying what to do instead.
Exercises get the cell from their solution through ``tools/make_exercises.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
CELL_ID = "setup-attnbook"
FOLDERS = ("chapters", "solutions")

#: the failure sentence of the cell, and what the Korean edition says instead (tools/i18n.py puts it there)
MESSAGE = """\
            f"Could not install the book's package from {BOOK_REPOSITORY}: "
            "run this notebook from a copy of the book instead (see the "
            "page 'Running everything locally')."
"""
MESSAGE_KO = """\
            f"책의 패키지를 {BOOK_REPOSITORY}에서 설치하지 못했습니다. "
            "이 노트북은 책의 사본에서 실행하세요('내 컴퓨터에서 모두 "
            "실행하기' 페이지를 보세요)."
"""
#: the cell, with ``{url}`` for the address (braces of the code itself doubled for ``str.format``)
TEMPLATE = (
    """\
# Setup: outside a copy of the book (Colab, Binder) this installs the book's
# package; inside one it does nothing. The address is `repository.url` in
# the book's _config.yml (tools/setup_cell.py writes it here).
import importlib.util
import subprocess
import sys

BOOK_REPOSITORY = "{url}"
if importlib.util.find_spec("attnbook") is None:
    package = f"attnbook @ git+{{BOOK_REPOSITORY}}"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", package]
    if subprocess.run(pip, capture_output=True).returncode != 0:
        raise SystemExit(
"""
    + MESSAGE.replace("{", "{{").replace("}", "}}")
    + "        )"
)


def korean_source(source: str) -> str:
    """The setup cell of the Korean edition: the same code, with its failure sentence in Korean."""
    if MESSAGE_KO in source:
        return source
    if MESSAGE not in source:
        raise ValueError("the setup cell's failure message is not the template's: run tools/setup_cell.py")
    return source.replace(MESSAGE, MESSAGE_KO)


def repository_url(root: Path = ROOT) -> str:
    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    return str(config["repository"]["url"]).rstrip("/")


def setup_source(url: str) -> str:
    return TEMPLATE.format(url=url)


def notebooks(root: Path = ROOT) -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (root / folder).glob("*.ipynb"))


def setup_cell(nb):
    return next((c for c in nb.cells if c.get("id") == CELL_ID), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="report differences, change nothing")
    args = parser.parse_args(argv)
    source = setup_source(repository_url())
    stale = []
    for path in notebooks():
        nb = nbformat.read(path, as_version=4)
        cell = setup_cell(nb)
        if cell is None:
            stale.append(f"{path.relative_to(ROOT)}: no code cell with id {CELL_ID!r}")
            continue
        if cell.source == source:
            continue
        stale.append(f"{path.relative_to(ROOT)}: setup cell differs from _config.yml's repository.url")
        if not args.check:
            cell.source = source
            nbformat.write(nb, path)
    for line in stale:
        print(line)
    if args.check and stale:
        print("run `python tools/setup_cell.py` to rewrite them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
