"""The book's rules for committed notebooks, configuration and dependencies.

nbval proves that stored outputs are what the code produces; these tests make sure there *are* stored
outputs to compare (a notebook saved without outputs would pass nbval vacuously) and that the notebooks
follow the conventions of CONTRIBUTING.md.
"""

from __future__ import annotations

import re

import pytest
import yaml

from conftest import CHAPTERS, EXERCISES, ROOT, SOLUTIONS, ids, read

EXECUTED = CHAPTERS + SOLUTIONS
ALL_NOTEBOOKS = CHAPTERS + SOLUTIONS + EXERCISES


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]


def tags(cell):
    return cell.get("metadata", {}).get("tags", [])


def test_there_is_real_content():
    assert CHAPTERS, "no chapter notebooks"
    assert SOLUTIONS, "no solution notebooks"
    assert len(EXERCISES) == len(SOLUTIONS)


@pytest.mark.parametrize("path", EXECUTED, ids=ids(EXECUTED))
def test_committed_executed_in_order(path):
    nb = read(path)
    cells = code_cells(nb)
    assert any(c.outputs for c in cells), f"{path.name} is committed without outputs"
    counts = [c.execution_count for c in cells]
    assert counts == list(range(1, len(cells) + 1)), (
        f"{path.name} was not executed once, top to bottom: {counts}"
    )


@pytest.mark.parametrize("path", EXECUTED, ids=ids(EXECUTED))
def test_no_unexpected_errors_or_widgets_in_outputs(path):
    for cell in code_cells(read(path)):
        for output in cell.outputs:
            if output.output_type == "error":
                assert "raises-exception" in tags(cell), (
                    f"{path.name}: error output in an untagged cell:\n{cell.source}"
                )
            data = output.get("data", {})
            assert "application/vnd.jupyter.widget-view+json" not in data, f"{path.name}: a widget is stored"
            assert "image/svg+xml" not in data, f"{path.name}: SVG output (embeds a date); use PNG"
            if output.output_type == "stream" and output.name == "stderr":
                assert "Warning" not in output.text, (
                    f"{path.name}: a warning is stored in the outputs:\n{output.text}"
                )


@pytest.mark.parametrize("path", EXECUTED, ids=ids(EXECUTED))
def test_figures_have_alt_text(path):
    for cell in code_cells(read(path)):
        if any("image/png" in o.get("data", {}) for o in cell.outputs):
            alt = cell.metadata.get("mystnb", {}).get("image", {}).get("alt", "")
            assert len(alt) >= 20, (
                f"{path.name}: a figure without alt text (cell metadata mystnb.image.alt):\n{cell.source[:200]}"
            )


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=ids(ALL_NOTEBOOKS))
def test_headings(path):
    nb = read(path)
    levels = []
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        in_fence = False
        for line in cell.source.splitlines():
            if line.startswith("```"):
                in_fence = not in_fence
            match = re.match(r"^(#{1,6}) ", line)
            if match and not in_fence:
                levels.append(len(match.group(1)))
    assert levels and levels[0] == 1 and levels.count(1) == 1, f"{path.name}: exactly one H1, first: {levels}"
    for before, after in zip(levels, levels[1:]):
        assert after <= before + 1, f"{path.name}: heading levels skip ({before} -> {after})"


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=ids(ALL_NOTEBOOKS))
def test_kernelspec(path):
    assert read(path).metadata.get("kernelspec", {}).get("name") == "python3"


def test_every_notebook_and_page_is_in_the_toc():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = {toc["root"]}
    for part in toc["parts"]:
        for chapter in part["chapters"]:
            files.add(chapter["file"])
            files.update(s["file"] for s in chapter.get("sections", []))
    notebooks = {p.relative_to(ROOT).with_suffix("").as_posix() for p in ALL_NOTEBOOKS}
    pages = {p.relative_to(ROOT).with_suffix("").as_posix() for p in (ROOT / "book").glob("*.md")}
    assert notebooks | pages <= files, f"not in _toc.yml: {sorted((notebooks | pages) - files)}"
    assert all(
        (ROOT / f).with_suffix(".ipynb").exists() or (ROOT / f).with_suffix(".md").exists() for f in files
    )


def test_every_solution_has_graded_cells_and_markers():
    for path in SOLUTIONS:
        nb = read(path)
        graded = [c for c in nb.cells if "graded" in tags(c)]
        assert graded, f"{path.name} has no graded cell"
        for cell in graded:
            assert re.fullmatch(r'check\("[\w.]+", \w+\)', cell.source.strip()), (
                f"{path.name}: graded cell must be one check(...) call"
            )
        assert "### BEGIN SOLUTION" in "".join(c.source for c in nb.cells)


def test_requirements_are_pinned_exactly():
    lines = [
        l.strip()
        for l in (ROOT / "requirements.txt").read_text().splitlines()
        if l.strip() and not l.startswith("#")
    ]
    loose = [l for l in lines if not re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[A-Za-z0-9_.+\-]+", l)]
    assert not loose, f"not pinned exactly: {loose}"
    assert "torch==2.13.0" in lines


def test_config_is_offline_and_strict():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert "sphinx-mathjax-offline" in config["sphinx"]["extra_extensions"]
    assert config["execute"]["execute_notebooks"] == "off"
    assert ".venv" in config["exclude_patterns"]
    assert str(2026) in config["copyright"]
    assert not (ROOT / "_static").exists() or not list((ROOT / "_static").rglob("*.js")), (
        "no .js under _static/: Jupyter Book injects every one of them into every page"
    )


@pytest.mark.parametrize("path", EXECUTED, ids=ids(EXECUTED))
def test_figures_use_the_book_style(path):
    nb = read(path)
    has_figures = any("image/png" in o.get("data", {}) for c in code_cells(nb) for o in c.outputs)
    if has_figures:
        source = "\n".join(c.source for c in code_cells(nb))
        assert "use_book_style()" in source, (
            f"{path.name} draws figures without attnbook.plots.use_book_style()"
        )
        hardcoded = re.findall(
            r"""colou?r\s*=\s*["'](?!#(?:0072B2|E69F00|009E73|D55E00|CC79A7|56B4E9|F0E442|000000))[^"']+["']""",
            source,
            flags=re.I,
        )
        assert not hardcoded, f"{path.name}: colours outside the Okabe–Ito PALETTE: {hardcoded}"


@pytest.mark.parametrize("path", EXECUTED, ids=ids(EXECUTED))
def test_no_pages_of_noise(path):
    for cell in code_cells(read(path)):
        text = "".join(
            o.get("text", "") + "".join(o.get("data", {}).get("text/plain", "")) for o in cell.outputs
        )
        assert text.count("\n") <= 60 and len(text) <= 6000, (
            f"{path.name}: a cell prints {text.count(chr(10))} lines:\n{cell.source[:200]}"
        )


@pytest.mark.parametrize("path", EXECUTED, ids=ids(EXECUTED))
def test_training_loops_show_progress(path):
    for cell in code_cells(read(path)):
        if (
            re.search(r"^\s*\w*\s*=?\s*(\w+\.)?train\w*\(", cell.source, flags=re.M)
            and "def train" not in cell.source
        ):
            stderr = "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stderr")
            assert "%|" in stderr, (
                f"{path.name}: a training cell without a progress bar:\n{cell.source[:200]}"
            )


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=ids(ALL_NOTEBOOKS))
def test_first_code_cell_is_the_setup_cell(path):
    import execute_notebooks

    first = next(c for c in read(path).cells if c.cell_type == "code")
    assert first.get("id") == execute_notebooks.SETUP_ID and first.source == execute_notebooks.SETUP_SOURCE, (
        f"{path.name}: run tools/execute_notebooks.py on it (it adds the setup cell)"
    )
    assert "remove-cell" in first.metadata.get("tags", [])


def test_setup_cell_stops_with_one_sentence_when_the_install_fails(monkeypatch):
    """Outside a copy of the book, a failed install ends the cell with one sentence, not a pip traceback."""
    import importlib.util
    import subprocess

    import execute_notebooks

    class Failed:
        returncode = 1

    calls = []
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd) or Failed())
    with pytest.raises(SystemExit) as stop:
        exec(compile(execute_notebooks.SETUP_SOURCE, "<setup cell>", "exec"), {})
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    url = config["repository"]["url"].rstrip("/")
    assert calls and calls[0][-1] == f"attnbook @ git+{url}", calls
    message = str(stop.value)
    assert url in message and "Running everything locally" in message
    assert message.count(". ") == 0 and "\n" not in message, message


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=ids(ALL_NOTEBOOKS))
def test_no_test_harness_comments_in_code_readers_see(path):
    """nbval is steered by cell tags (nbval-ignore-output), never by comments that the book would show."""
    for cell in code_cells(read(path)):
        assert not re.search(r"#\s*NBVAL_", cell.source), (
            f"{path.name}: move the NBVAL comment to a cell tag (nbval-ignore-output):\n{cell.source[:120]}"
        )
