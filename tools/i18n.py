"""The Korean edition: translation catalogues keyed by English units, and the Korean book made from them.

    python tools/i18n.py update     # add new English units to locales/ko/*.po; changed ones become fuzzy
    python tools/i18n.py status     # per page: translated, fuzzy (stale), missing; figure labels; Korean
                                    # figures; exit 1 if anything is not done
    python tools/i18n.py build      # write the Korean book's sources into ko/ (English code and outputs)
    python tools/i18n.py build --check   # exit 1 if ko/ differs from what the catalogues make, or a Korean
                                         # figure is missing or stale
    python tools/i18n.py export chapters/04_attention_scores > 04.json   # units to translate, as JSON
    python tools/i18n.py import chapters/04_attention_scores 04.json     # translations back into the .po
    python tools/i18n.py figures chapters/04_attention_scores   # draw and store its Korean figures
    python tools/i18n.py figures    # ... of every page with figures (executes them: minutes)

The English pages (``_toc.yml``: book/*.md, chapters, exercises' solutions) stay the only source of code,
outputs and figures (the stored output of a graded cell, the grader's own words, is shown in Korean through
the grader's catalogues in attnbook/locales). Their text is cut into *units*: each block of a markdown cell or page (paragraphs,
headings, lists, tables, admonitions), each figure's alt text, and each title and caption of the table of
contents. Maths, code blocks and raw HTML blocks are not units: they are copied as they are. A unit's
Korean text lives in ``locales/ko/<page>.po`` (gettext, one catalogue per page, written with Babel), keyed by
the English text itself: when the English changes, the old translation is kept but marked *fuzzy* (stale),
and ``status`` fails until someone translates it again. A translation must keep every inline formula,
inline code, role (``{cite}`...```), link target and substitution of its English unit, character for
character; ``status`` checks that too.

Figures. The code that draws a figure stays English; its words are translated when it is drawn:
``attnbook.set_language("ko")`` makes attnbook translate a figure's labels (titles, axis and colour-bar
labels, legends, annotations, string tick labels; never data: corpus words, maths, numbers) through
``attnbook/locales/ko/figures.po`` just before matplotlib renders it (``attnbook.i18n.translated_figure``).
``figures`` executes the Korean notebook of each named page in a temporary copy with the language set to
Korean (as ``tools/execute_notebooks.py`` executes), and stores each figure it draws in the page's ko/
notebook in place of the English one, stamped in the output's metadata (``attnbook.figure``: the sha256 of
the English PNG it stands for, and every label it shows with its translation). It merges the labels it met
into figures.po: a new one untranslated, a changed one fuzzy. ``build`` keeps a stored Korean figure while
its stamp is current: the same English PNG, and every label translating as it did. Otherwise it keeps the
English figure, and ``build --check`` and ``status`` fail, naming the page to run ``figures`` on. So after
changing an English figure (re-executing its notebook) or a figure label's translation, run
``figures PAGE``; ``build`` and ``--check`` never execute anything. The Korean notebooks set the language
in their first cell that imports attnbook, so a learner who runs one gets Korean checks and figures too.
"""

from __future__ import annotations

import argparse
import base64
import copy
import datetime
import difflib
import hashlib
import io
import json
import os
import re
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import nbformat
import yaml
from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po, write_po

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_exercises  # noqa: E402  (tools/make_exercises.py: the Korean exercises are made like the English)
import setup_cell  # noqa: E402  (tools/setup_cell.py: the id of the hidden setup cell)

ROOT = Path(__file__).resolve().parents[1]
LOCALE = "ko"
LOCALES = ROOT / "locales" / LOCALE
OUT = ROOT / LOCALE
TOC_CATALOGUE = "_toc"
#: a fuzzy match keeps the old translation for a changed unit when the English is at least this similar
FUZZY_RATIO = 0.6
#: the Korean labels of the figures, read by attnbook.i18n when a figure is drawn in Korean
FIGURE_CATALOGUE = ROOT / "attnbook" / "locales" / LOCALE / "figures.po"
#: the font the stored Korean figures are drawn with (Debian's fonts-nanum, which .ci/run installs)
FIGURE_FONT = "NanumGothic"
#: where a stored Korean figure keeps its stamp: output.metadata["attnbook"]["figure"]
STAMP = "attnbook"
PNG = "image/png"

FENCE = re.compile(r"^(\s*)(`{3,}|~{3,}|:{3,})(.*)$")
# What a translation must keep exactly: inline maths, inline code, roles with their target, link targets,
# substitutions and HTML tags.
KEEP = re.compile(
    r"\{[\w:-]+\}`[^`]*`"  # {cite}`key`, {ref}`label`
    r"|(?<!`)`(?!`)[^`\n]+(?:\n[^`\n]+)?`"  # inline code (CommonMark lets it run over a line break)
    r"|\$\$?[^$\n]+\$\$?"  # inline maths
    r"|\]\([^)\s]+\)"  # link targets
    r"|\{\{[^}]+\}\}"  # substitutions
)


@dataclass(frozen=True)
class Unit:
    """One translatable piece of English text and where it comes from (for messages)."""

    text: str
    where: str


# --------------------------------------------------------------------------------------------------
# Cutting English text into units
# --------------------------------------------------------------------------------------------------


def _blocks(text: str) -> list[tuple[str, bool]]:
    """Split markdown into blocks: ``(text, translatable)``. Blank lines separate blocks; a fenced block
    (code, directive, colon fence) or a display-maths block is one block. Code and maths blocks are not
    translatable; a directive (```{note}, :::{admonition}) is translated as a whole unit."""
    lines = text.split("\n")
    blocks: list[tuple[str, bool]] = []
    current: list[str] = []

    def flush():
        if current:
            block = "\n".join(current)
            blocks.append((block, bool(block.strip()) and not _untranslatable(block)))
            current.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        fence = FENCE.match(line)
        if fence and not current:
            marker = fence.group(2)
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith(marker[0] * len(marker)):
                j += 1
            block = "\n".join(lines[i : j + 1])
            info = fence.group(3).strip()
            is_code = marker[0] in "`~" and not info.startswith("{") or info.startswith("{code")
            is_math = info.startswith("{math}")
            body = [b for b in lines[i + 1 : j] if not re.match(r"^\s*:[\w-]+:", b)]
            has_text = bool(re.search(r"[A-Za-z]", info.split("}", 1)[-1] + " ".join(body)))
            blocks.append((block, not (is_code or is_math) and has_text))
            i = j + 1
            continue
        if line.strip().startswith("$$") and not current:
            j = i
            if not (line.strip().endswith("$$") and len(line.strip()) > 2):
                j = i + 1
                while j < len(lines) and "$$" not in lines[j]:
                    j += 1
            blocks.append(("\n".join(lines[i : j + 1]), False))
            i = j + 1
            continue
        if not line.strip():
            flush()
            blocks.append(("", False))
        else:
            current.append(line)
        i += 1
    flush()
    return blocks


def _untranslatable(block: str) -> bool:
    stripped = block.strip()
    return stripped.startswith("<") and stripped.endswith(">") or not re.search(r"[A-Za-z]", stripped)


def markdown_units(text: str, where: str) -> list[Unit]:
    return [Unit(block, where) for block, translatable in _blocks(text) if translatable]


def translate_markdown(text: str, table: dict[str, str]) -> str:
    out = []
    for block, translatable in _blocks(text):
        out.append(table.get(block, block) if translatable else block)
    return "\n".join(out)


def _alt(cell) -> str | None:
    return cell.get("metadata", {}).get("mystnb", {}).get("image", {}).get("alt")


def page_units(path: Path) -> list[Unit]:
    """Every unit of one English page (a .md file or a notebook), in reading order. A solution's catalogue
    also holds the units that only its generated exercise has (the note under the title, answer stubs)."""
    rel = path.relative_to(ROOT).as_posix()
    if rel.startswith("solutions/") and path.suffix == ".ipynb":
        exercise = make_exercises.make_exercise(nbformat.read(path, as_version=4), path.name)
        own = _notebook_units(nbformat.read(path, as_version=4), rel)
        extra = [
            u
            for u in _notebook_units(exercise, f"exercises/{path.name}")
            if u.text not in {o.text for o in own}
        ]
        return own + extra
    if path.suffix == ".md":
        return markdown_units(path.read_text(encoding="utf-8"), rel)
    return _notebook_units(nbformat.read(path, as_version=4), rel)


def _notebook_units(nb, rel: str) -> list[Unit]:
    units: list[Unit] = []
    for index, cell in enumerate(nb.cells):
        where = f"{rel}, cell {index}"
        if cell.cell_type == "markdown":
            units.extend(markdown_units(cell.source, where))
        elif _alt(cell):
            units.append(Unit(_alt(cell), f"{where} (alt text)"))
    return units


def toc_units(toc: dict) -> list[Unit]:
    units = []
    for part in toc.get("parts", []):
        if part.get("caption"):
            units.append(Unit(part["caption"], "_toc.yml, caption"))
        for chapter in part.get("chapters", []):
            if chapter.get("title"):
                units.append(Unit(chapter["title"], f"_toc.yml, title of {chapter['file']}"))
    return units


def toc() -> dict:
    return yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))


def pages() -> list[Path]:
    """The English pages of the book, from the table of contents (exercises are made from solutions)."""
    data = toc()
    files = [data["root"]] + [c["file"] for p in data.get("parts", []) for c in p.get("chapters", [])]
    found = []
    for name in files:
        if name.startswith("exercises/"):
            continue
        for suffix in (".md", ".ipynb"):
            if (ROOT / f"{name}{suffix}").exists():
                found.append(ROOT / f"{name}{suffix}")
                break
        else:
            raise SystemExit(f"i18n: {name} is in _toc.yml but has no .md or .ipynb file")
    return found


# --------------------------------------------------------------------------------------------------
# Catalogues
# --------------------------------------------------------------------------------------------------


def catalogue_path(name: str) -> Path:
    return LOCALES / f"{name}.po"


def catalogue_name(page: Path) -> str:
    return page.relative_to(ROOT).with_suffix("").as_posix()


def read_catalogue(name: str) -> Catalog:
    path = catalogue_path(name)
    if not path.exists():
        return Catalog(locale=LOCALE, project="Attention, step by step", fuzzy=False)
    with path.open("rb") as handle:
        return read_po(handle, locale=LOCALE)


def write_catalogue(name: str, catalog: Catalog) -> None:
    path = catalogue_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    write_po(
        buffer,
        catalog,
        width=0,
        omit_header=True,
        include_previous=True,
        sort_output=False,
        ignore_obsolete=False,
    )
    path.write_bytes(buffer.getvalue())


def merge(catalog: Catalog, units: list[Unit]) -> Catalog:
    """A catalogue with exactly ``units``: kept translations, fuzzy matches for changed English, and the
    translations that no unit uses any more kept as obsolete entries (for reference)."""
    old = {m.id: m for m in catalog if m.id}
    merged = Catalog(locale=LOCALE, project="Attention, step by step", fuzzy=False)
    used = set()
    for unit in units:
        if unit.text in merged:
            merged[unit.text].locations.append((unit.where, 0))
            continue
        previous = old.get(unit.text)
        if previous is not None:
            merged.add(unit.text, previous.string, locations=[(unit.where, 0)], flags=previous.flags)
            used.add(unit.text)
            continue
        match = difflib.get_close_matches(
            unit.text, [k for k in old if old[k].string], n=1, cutoff=FUZZY_RATIO
        )
        if match:
            merged.add(
                unit.text,
                old[match[0]].string,
                locations=[(unit.where, 0)],
                flags={"fuzzy"},
                previous_id=match[0],
            )
            used.add(match[0])
        else:
            merged.add(unit.text, "", locations=[(unit.where, 0)])
    for key, message in old.items():
        if key not in used and key not in merged and message.string:
            merged.obsolete[key] = message
    return merged


def kept(text: str) -> Counter:
    return Counter(KEEP.findall(text))


def problems(name: str, catalog: Catalog) -> list[str]:
    """What is not done in one catalogue: missing, fuzzy, and translations that lost a formula or a role."""
    found = []
    for message in catalog:
        if not message.id:
            continue
        where = message.locations[0][0] if message.locations else name
        first = message.id.strip().splitlines()[0][:60]
        if not message.string:
            found.append(f"{where}: missing: {first!r}")
        elif message.fuzzy:
            found.append(f"{where}: stale (the English changed): {first!r}")
        else:
            lost = kept(message.id) - kept(message.string)
            extra = kept(message.string) - kept(message.id)
            if lost or extra:
                keep = " ".join(sorted(lost)) or "-"
                add = " ".join(sorted(extra)) or "-"
                found.append(f"{where}: the translation lost {keep} and added {add}: keep them as in English")
    return found


# --------------------------------------------------------------------------------------------------
# The Korean book
# --------------------------------------------------------------------------------------------------


def _table(name: str) -> dict[str, str]:
    """English -> Korean for the finished units of a catalogue (missing or stale units stay English)."""
    return {m.id: m.string for m in read_catalogue(name) if m.id and m.string and not m.fuzzy}


HEADLINE = re.compile(r"^([✔✘…]) (\S+) \((.*)\): (.*)$")


def _korean_output(text: str) -> str:
    """A graded cell's stored output line by line in Korean, through the grader's own catalogues: the
    check's headline (mark, task, title, message) and the lines of progress(); other lines unchanged."""
    import attnbook.i18n as grader_i18n

    with grader_i18n.using(LOCALE):
        lines = []
        for line in text.split("\n"):
            match = HEADLINE.match(line)
            if match:
                mark, task, title, message = match.groups()
                line = f"{mark} {task} ({grader_i18n.translate(title)}): {grader_i18n.translate(message)}"
            elif line.strip():
                line = grader_i18n.translate(line)
            lines.append(line)
    return "\n".join(lines)


def korean_page(page: Path, figures: dict | None = None) -> tuple[Path, str]:
    """The Korean page's path under ko/ and its text. Each English figure is replaced by its Korean one,
    from ``figures`` (``{(cell, n): output}``; default: the figures stored in the page's ko/ notebook)
    where that one's stamp is current (:func:`figure_problem`); else the English figure stays."""
    table = _table(catalogue_name(page))
    target = OUT / page.relative_to(ROOT)
    if page.suffix == ".md":
        return target, translate_markdown(page.read_text(encoding="utf-8"), table)
    nb = nbformat.read(page, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = translate_markdown(cell.source, table)
        elif _alt(cell) in table:
            cell.metadata["mystnb"]["image"]["alt"] = table[_alt(cell)]
        if cell.cell_type == "code" and (
            "graded" in cell.metadata.get("tags", []) or cell.source.strip().startswith("progress(")
        ):
            for output in cell.get("outputs", []):
                if output.get("output_type") == "stream" and output.get("name") == "stdout":
                    output["text"] = _korean_output(output["text"])
    if page.suffix == ".ipynb":
        korean = stored_figures(page) if figures is None else figures
        for key, (cell, index) in _figure_slots(nb).items():
            figure = korean.get(key)
            if figure is not None and figure_problem(cell.outputs[index], figure) is None:
                cell.outputs[index] = copy.deepcopy(figure)
    _speak_korean(nb)
    return target, nbformat.writes(nb) + "\n"


#: the first line of the cell that imports the graders (else the book's package), in a Korean notebook: the
#: checks answer in Korean and the figures are drawn with Korean labels
SET_LANGUAGE = 'import attnbook; attnbook.set_language("ko")\n'
IMPORTS_ATTNBOOK = re.compile(r"^(?:from attnbook[.\s]|import attnbook\b)", re.M)


def _speak_korean(nb) -> None:
    """A Korean notebook says so (``metadata.attnbook.language``, read by ``attnbook-grade``) and sets the
    language at the top of the cell that imports the graders, or else of the first cell that imports the
    book's package (after the hidden setup cell, whose failure sentence it puts in Korean): a learner who
    runs it gets Korean checks, figures and messages."""
    setup = setup_cell.setup_cell(nb)
    if setup is not None:  # its one sentence, for a reader who runs the notebook where the install fails
        setup.source = setup_cell.korean_source(setup.source)
    cells = [c for c in nb.cells if c.cell_type == "code" and c.get("id") != setup_cell.CELL_ID]
    cell = next((c for c in cells if "from attnbook.grading" in c.source), None) or next(
        (c for c in cells if IMPORTS_ATTNBOOK.search(c.source)), None
    )
    if cell is None:
        return
    if not cell.source.startswith(SET_LANGUAGE):
        cell.source = SET_LANGUAGE + cell.source
    nb.metadata.setdefault("attnbook", {})["language"] = LOCALE


# --------------------------------------------------------------------------------------------------
# Figures: Korean figures stored in ko/, each stamped with what it was made from
# --------------------------------------------------------------------------------------------------


def _figure_slots(nb) -> dict[tuple[str, int], tuple]:
    """``{(cell id, n): (cell, output index)}`` of the n-th PNG output of every code cell."""
    slots = {}
    for position, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        pngs = [i for i, output in enumerate(cell.get("outputs", [])) if PNG in output.get("data", {})]
        for n, index in enumerate(pngs):
            slots[(cell.get("id") or f"#{position}", n)] = (cell, index)
    return slots


def png_sha256(output) -> str:
    """The sha256 of a PNG output's bytes."""
    data = output["data"][PNG]
    return hashlib.sha256(base64.b64decode("".join(data) if isinstance(data, list) else data)).hexdigest()


def stamp_of(output) -> dict | None:
    return output.get("metadata", {}).get(STAMP, {}).get("figure")


def stored_figures(page: Path) -> dict:
    """The stamped Korean figures of the page's notebook in ko/, by ``(cell id, n)``."""
    path = OUT / page.relative_to(ROOT)
    if not path.exists():
        return {}
    nb = nbformat.read(path, as_version=4)
    return {
        key: cell.outputs[index]
        for key, (cell, index) in _figure_slots(nb).items()
        if stamp_of(cell.outputs[index])
    }


def figure_problem(english, korean) -> str | None:
    """Why ``korean`` (a stored Korean figure) cannot stand for ``english`` (the English PNG output): it is
    missing or unstamped, it was made from another English figure, or a label it shows translates
    differently now (a changed or new entry of figures.po); None when it is current."""
    import attnbook.i18n as labels

    stamp = stamp_of(korean) if korean is not None else None
    if not stamp:
        return "no Korean figure"
    if stamp.get("english_sha256") != png_sha256(english):
        return "the English figure changed"
    for text, shown in stamp.get("texts", {}).items():
        now = labels.translate_label(text, LOCALE)
        if now != shown:
            first = text.splitlines()[0][:50]
            if shown == text:
                return f"the label {first!r} has a translation now"
            return f"the translation of {first!r} changed"
    return None


def figure_pages() -> list[Path]:
    """The pages whose English notebook shows figures (PNG outputs)."""
    return [p for p in pages() if p.suffix == ".ipynb" and _figure_slots(nbformat.read(p, as_version=4))]


def figure_problems(page: Path) -> list[str]:
    """One line per English figure of ``page`` whose Korean figure is missing or not current."""
    name = catalogue_name(page)
    korean = stored_figures(page)
    found = []
    slots = _figure_slots(nbformat.read(page, as_version=4))
    for number, (key, (cell, index)) in enumerate(slots.items(), start=1):
        reason = figure_problem(cell.outputs[index], korean.get(key))
        if reason:
            found.append(
                f"{name}: figure {number} of {len(slots)} (cell {key[0]}): {reason}: run "
                f"`python tools/i18n.py figures {name}`"
            )
    return found


FIGURE_HEADER = """\
# Korean labels of the book's figures: attnbook.i18n translates a figure's texts with them just before
# matplotlib renders it (titles, axis and colour-bar labels, legends, annotations, string tick labels).
# msgid: an English label as a figure shows it, or a template ({name} matches any text, non-greedily; a
# value it captures is translated too, or kept); msgstr: its Korean, with the same placeholders. A msgstr
# equal to its msgid keeps the label as it is (a name, a formula). Data (corpus words, maths, numbers) is
# never translated. Never put a placeholder directly before a particle whose form depends on the word.
# `#:` the pages that use an entry. `python tools/i18n.py figures PAGE` adds the labels it meets (new
# ones untranslated) and stores the page's Korean figures; `python tools/i18n.py status` lists what is left."""


def read_figure_catalogue() -> Catalog:
    if not FIGURE_CATALOGUE.exists():
        return Catalog(locale=LOCALE, fuzzy=False)
    with FIGURE_CATALOGUE.open("rb") as handle:
        return read_po(handle, locale=LOCALE)


def write_figure_catalogue(catalog: Catalog) -> None:
    """figures.po, with a fixed header (no dates that change at every write)."""
    fixed = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    out = Catalog(
        locale=LOCALE,
        header_comment=FIGURE_HEADER,
        project="attnbook",
        version="0.1.0",
        creation_date=fixed,
        revision_date=fixed,
        fuzzy=False,
    )
    for message in catalog:
        if message.id:
            out[message.id] = message
    for key, message in catalog.obsolete.items():
        out.obsolete[key] = message
    buffer = io.BytesIO()
    write_po(buffer, out, width=0, include_previous=True, sort_output=False, ignore_obsolete=False)
    FIGURE_CATALOGUE.write_bytes(buffer.getvalue())


def merge_labels(catalog: Catalog, name: str, met: list[str]) -> Catalog:
    """figures.po after the figures of page ``name`` met ``met`` (the entries they used and the labels no
    entry translated): each entry lists the pages that use it; a new label is added untranslated (fuzzy,
    with the old translation, when it looks like a label that changed); an entry that only this page used
    and no longer uses becomes obsolete."""
    lost = []
    for message in catalog:
        if not message.id:
            continue
        had = bool(message.locations)
        message.locations = [loc for loc in message.locations if loc[0] != name]
        if had and not message.locations and message.id not in met:
            lost.append(message.id)
    done = {m.id: m for m in catalog if m.id and m.string and not m.fuzzy and m.id not in met}
    done.update({k: m for k, m in catalog.obsolete.items() if m.string})
    for text in met:
        if text in catalog:
            catalog[text].locations.append((name, 0))
            continue
        if text in catalog.obsolete and catalog.obsolete[text].string:  # the same English label is back
            old = catalog.obsolete.pop(text)
            catalog.add(text, old.string, locations=[(name, 0)], flags=set(old.flags) - {"fuzzy"})
            continue
        match = difflib.get_close_matches(text, list(done), n=1, cutoff=FUZZY_RATIO)
        if match:
            catalog.add(
                text, done[match[0]].string, locations=[(name, 0)], flags={"fuzzy"}, previous_id=match[0]
            )
        else:
            catalog.add(text, "", locations=[(name, 0)])
    for msgid in lost:
        message = catalog[msgid]
        if message.string:
            catalog.obsolete[msgid] = message
        del catalog[msgid]
    return catalog


def figure_catalogue_problems(catalog: Catalog) -> list[str]:
    """What is not done in figures.po: missing, fuzzy, lost formulas, placeholders that differ."""
    import attnbook.i18n as labels

    found = [f"attnbook/locales/ko/figures.po: {p}" for p in problems("figures", catalog)]
    for message in catalog:
        if (
            message.id
            and message.string
            and labels.placeholders(message.id) != labels.placeholders(message.string)
        ):
            found.append(
                f"attnbook/locales/ko/figures.po: {message.id!r}: the translation's placeholders differ"
            )
    return found


def _korean_run(page: Path, timeout: int) -> tuple[dict, dict]:
    """Execute the page's Korean notebook in a temporary copy, the language set to Korean; return its PNG
    outputs by ``(cell id, n)`` and the figure log (``attnbook.i18n.FIGURE_LOG``) by PNG sha256."""
    import attnbook.i18n as labels
    import execute_notebooks  # tools/execute_notebooks.py: the book's way of executing a notebook

    _, text = korean_page(page, figures={})
    with tempfile.TemporaryDirectory(prefix="attnbook-figures-") as tmp:
        path = Path(tmp) / page.name
        path.write_text(text, encoding="utf-8")
        log = Path(tmp) / "figures.jsonl"
        saved = {k: os.environ.get(k) for k in ("ATTNBOOK_LANG", labels.FIGURE_LOG)}
        os.environ.update({"ATTNBOOK_LANG": LOCALE, labels.FIGURE_LOG: str(log)})
        try:
            execute_notebooks.execute(path, timeout)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        executed = nbformat.read(path, as_version=4)
        lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    records = {r["png_sha256"]: r for r in map(json.loads, lines)}
    pngs = {key: cell.outputs[index] for key, (cell, index) in _figure_slots(executed).items()}
    return pngs, records


def cmd_figures(names: list[str], timeout: int) -> int:
    """Draw the Korean figures of the named pages (default: every page with figures), store them in the
    ko/ notebooks with their stamps, and merge the labels met into figures.po."""
    import attnbook.i18n as labels

    if labels.figure_font(LOCALE) != FIGURE_FONT:
        print(f"i18n: the Korean figures are drawn with {FIGURE_FONT}: install fonts-nanum", file=sys.stderr)
        return 2
    candidates = {catalogue_name(p): p for p in figure_pages()}
    wanted = [re.sub(r"\.ipynb$", "", n.removeprefix(f"{LOCALE}/").removeprefix("./")) for n in names]
    unknown = [n for n in wanted if n not in candidates]
    if unknown:
        print(
            f"i18n: no English figures in {unknown}; pages with figures: {sorted(candidates)}",
            file=sys.stderr,
        )
        return 2
    failed = 0
    for name in wanted or list(candidates):
        page = candidates[name]
        start = time.perf_counter()
        try:
            pngs, records = _korean_run(page, timeout)
        except Exception as exc:  # a failing cell: say which page, go on with the others
            failed += 1
            print(f"FAILED {name}: {str(exc).strip().splitlines()[-1][:300]}", file=sys.stderr)
            continue
        english = _figure_slots(nbformat.read(page, as_version=4))
        if set(pngs) != set(english):
            failed += 1
            print(
                f"FAILED {name}: the Korean run drew figures {sorted(pngs)}, the English notebook stores "
                f"{sorted(english)}",
                file=sys.stderr,
            )
            continue
        figures, met = {}, {}
        for key, output in pngs.items():
            record = records.get(png_sha256(output))
            if record is None:
                failed += 1
                print(f"FAILED {name}: figure in cell {key[0]} was not drawn in Korean", file=sys.stderr)
                break
            cell, index = english[key]
            figure = copy.deepcopy(cell.outputs[index])
            figure["data"][PNG] = output["data"][PNG]
            figure.setdefault("metadata", {})[STAMP] = {
                "figure": {
                    "english_sha256": png_sha256(cell.outputs[index]),
                    "texts": record["texts"],
                    "entries": record["entries"],
                }
            }
            figures[key] = figure
            met.update(dict.fromkeys(record["entries"] + record["untranslated"]))
        else:
            write_figure_catalogue(merge_labels(read_figure_catalogue(), name, list(met)))
            labels.reload()
            target, text = korean_page(page, figures=figures)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            left = sorted({t for r in records.values() for t in r["untranslated"]})
            note = f", {len(left)} label(s) to translate in figures.po" if left else ""
            print(f"{time.perf_counter() - start:6.1f} s  {name}: {len(figures)} Korean figure(s){note}")
    return 1 if failed else 0


def korean_toc() -> str:
    table = _table(TOC_CATALOGUE)
    data = copy.deepcopy(toc())
    for part in data.get("parts", []):
        if part.get("caption"):
            part["caption"] = table.get(part["caption"], part["caption"])
        for chapter in part.get("chapters", []):
            if chapter.get("title"):
                chapter["title"] = table.get(chapter["title"], chapter["title"])
    header = "# Generated by tools/i18n.py from ../_toc.yml and locales/ko/_toc.po: do not edit.\n"
    return header + yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


def korean_config() -> str:
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    config["title"] = "한 걸음씩 배우는 어텐션"
    config["logo"] = "book/images/logo_ko.png"
    config["html"]["favicon"] = "book/images/favicon.png"
    config["repository"]["path_to_book"] = LOCALE
    config["sphinx"]["config"]["language"] = LOCALE
    extensions = dict(
        config["sphinx"].get("local_extensions", {}), korean_search="_ext/", other_edition="_ext/"
    )
    config["sphinx"]["local_extensions"] = {name: "../_ext/" for name in extensions}
    config["sphinx"]["config"]["html_search_language"] = LOCALE
    config["sphinx"]["config"]["other_edition"] = {"prefix": "../", "label": "English edition", "lang": "en"}
    config["repository"]["path_to_book"] = LOCALE
    config["bibtex_bibfiles"] = ["book/references.bib"]
    header = "# Generated by tools/i18n.py from ../_config.yml: do not edit.\n"
    return header + yaml.safe_dump(config, allow_unicode=True, sort_keys=False)


def korean_files() -> dict[Path, bytes]:
    """Every file of the Korean book's sources, by path."""
    files: dict[Path, bytes] = {}
    for page in pages():
        target, text = korean_page(page)
        files[target] = text.encode("utf-8")
        if page.parent.name == "solutions":
            table = _table(catalogue_name(page))
            exercise = make_exercises.make_exercise(nbformat.reads(text, as_version=4), page.name)
            for cell in exercise.cells:
                if cell.cell_type == "markdown":
                    cell.source = translate_markdown(cell.source, table)
            _speak_korean(exercise)
            exercise.metadata["attnbook"]["sources_sha256"] = make_exercises.sources_digest(exercise.cells)
            files[OUT / "exercises" / page.name] = (nbformat.writes(exercise) + "\n").encode("utf-8")
    files[OUT / "_toc.yml"] = korean_toc().encode("utf-8")
    files[OUT / "_config.yml"] = korean_config().encode("utf-8")
    for asset in (
        "book/references.bib",
        "book/images/logo_ko.png",
        "book/images/favicon.png",
        "_static/book.css",
    ):
        files[OUT / asset] = (ROOT / asset).read_bytes()
    return files


# --------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------


def cmd_update(only: list[str]) -> int:
    for page in pages():
        name = catalogue_name(page)
        if not only or name in only:
            write_catalogue(name, merge(read_catalogue(name), page_units(page)))
    if not only or TOC_CATALOGUE in only:
        write_catalogue(TOC_CATALOGUE, merge(read_catalogue(TOC_CATALOGUE), toc_units(toc())))
    return cmd_status(quiet=True)


def cmd_status(quiet: bool = False) -> int:
    names = [catalogue_name(p) for p in pages()] + [TOC_CATALOGUE]
    total = {"units": 0, "done": 0}
    issues = []
    for name in names:
        catalog = read_catalogue(name)
        units = [m for m in catalog if m.id]
        found = problems(name, catalog)
        total["units"] += len(units)
        total["done"] += len(units) - len(found)
        if not catalogue_path(name).exists():
            found.insert(0, f"{name}: no catalogue (run `python tools/i18n.py update`)")
        issues.extend(found)
        if not quiet:
            print(f"{name:40s} {len(units) - len(found):4d}/{len(units):4d} translated")
    print(f"{total['done']}/{total['units']} units translated and current")
    figure_catalogue = read_figure_catalogue()
    labels = [m for m in figure_catalogue if m.id]
    found = figure_catalogue_problems(figure_catalogue)
    issues.extend(found)
    pictures = [figure_problems(p) for p in figure_pages()]
    count = sum(len(_figure_slots(nbformat.read(p, as_version=4))) for p in figure_pages())
    issues.extend(line for lines in pictures for line in lines)
    print(
        f"{len(labels) - len(found)}/{len(labels)} figure labels translated (attnbook/locales/ko/figures.po), "
        f"{count - sum(map(len, pictures))}/{count} Korean figures current"
    )
    if issues and not quiet:
        print("\n".join(issues[:50]) + (f"\n... and {len(issues) - 50} more" if len(issues) > 50 else ""))
    return 1 if issues else 0


def cmd_build(check: bool) -> int:
    """Write ko/ (or, with ``check``, only say what differs). A stored Korean figure is kept while its stamp
    is current; one that is not is replaced by the English figure, and the command says which page to run
    ``figures`` on (``--check`` fails)."""
    pictures = {catalogue_name(page): figure_problems(page) for page in figure_pages()}
    files = korean_files()
    stale = [p for p, data in files.items() if not p.exists() or p.read_bytes() != data]
    for line in (line for lines in pictures.values() for line in lines):
        print(f"{'figure' if check else 'English figure kept'}: {line}", file=sys.stderr)
    if check:
        for path in stale:
            name = path.relative_to(OUT).with_suffix("").as_posix()
            run = f"figures {name}" if pictures.get(name) else "build"
            print(f"stale: {path.relative_to(ROOT)} (run `python tools/i18n.py {run}`)", file=sys.stderr)
        return 1 if stale or any(pictures.values()) else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[path])
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


def cmd_export(name: str, todo_only: bool) -> int:
    """Print the catalogue's units as a JSON list of {"english", "korean", "where", "stale"}."""
    if not catalogue_path(name).exists():
        print(
            f"i18n: no catalogue {catalogue_path(name)} (run `python tools/i18n.py update`)", file=sys.stderr
        )
        return 2
    units = [
        {
            "english": m.id,
            "korean": m.string,
            "where": m.locations[0][0] if m.locations else "",
            "stale": m.fuzzy,
        }
        for m in read_catalogue(name)
        if m.id and (not todo_only or not m.string or m.fuzzy)
    ]
    print(json.dumps(units, ensure_ascii=False, indent=1))
    return 0


def cmd_import(name: str, source: Path) -> int:
    """Put the translations of a JSON list (as ``export`` writes it) into the catalogue; a unit whose
    English is not in the catalogue any more is refused, and formulas, code and roles are checked."""
    catalog = read_catalogue(name)
    entries = json.loads(source.read_text(encoding="utf-8"))
    unknown = [e["english"][:60] for e in entries if e["english"] not in catalog]
    if unknown:
        print(f"i18n: {len(unknown)} unit(s) are not in {name}, e.g. {unknown[0]!r}", file=sys.stderr)
        return 1
    for entry in entries:
        if entry.get("korean"):
            message = catalog[entry["english"]]
            message.string = entry["korean"]
            message.flags.discard("fuzzy")
            message.previous_id = []
    write_catalogue(name, catalog)
    found = problems(name, catalog)
    print(
        f"{name}: {len([m for m in catalog if m.id]) - len(found)} of {len([m for m in catalog if m.id])} "
        "units translated and current"
    )
    for line in found:
        if "lost" in line:
            print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    update = sub.add_parser("update", help="merge the English units into the catalogues")
    update.add_argument("names", nargs="*", help="only these catalogues (e.g. chapters/04_attention_scores)")
    sub.add_parser("status", help="what is translated, stale or missing")
    build = sub.add_parser("build", help="write the Korean book's sources into ko/")
    build.add_argument("--check", action="store_true", help="write nothing; exit 1 if ko/ is stale")
    export = sub.add_parser("export", help="a catalogue's units as JSON, for translating")
    export.add_argument("name", help="the page without extension, e.g. chapters/04_attention_scores or _toc")
    export.add_argument("--todo", action="store_true", help="only units that are missing or stale")
    imp = sub.add_parser("import", help="put translations from a JSON file into a catalogue")
    imp.add_argument("name")
    imp.add_argument("json", type=Path)
    figures = sub.add_parser("figures", help="draw and store the Korean figures (executes the notebooks)")
    figures.add_argument("pages", nargs="*", help="only these pages (e.g. chapters/05_softmax_weights)")
    figures.add_argument("--timeout", type=int, default=300, help="seconds per cell")
    args = parser.parse_args(argv)
    if args.command == "figures":
        return cmd_figures(args.pages, args.timeout)
    if args.command == "export":
        return cmd_export(args.name, args.todo)
    if args.command == "import":
        return cmd_import(args.name, args.json)
    if args.command == "update":
        return cmd_update(args.names)
    if args.command == "status":
        return cmd_status()
    return cmd_build(args.check)


if __name__ == "__main__":
    sys.exit(main())
