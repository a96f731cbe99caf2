"""The Korean edition's figures: labels translated when a figure is drawn, and stored Korean figures that
can never go stale silently.

``attnbook.i18n.translated_figure`` translates a figure's texts through ``attnbook/locales/ko/figures.po``
just before matplotlib renders it; ``tools/i18n.py figures`` stores the Korean figures in ko/ with a stamp
(the English PNG's sha256 and the translations shown), which ``build`` and ``status`` check. Fast: nothing
here executes a chapter.
"""

from __future__ import annotations

import base64
import copy
import io
import re
import sys
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from babel.messages.catalog import Catalog  # noqa: E402
from babel.messages.pofile import read_po, write_po  # noqa: E402
from matplotlib.backend_bases import FigureCanvasBase  # noqa: E402

from attnbook import i18n as labels  # noqa: E402
from attnbook.data import DICTIONARY  # noqa: E402
from attnbook.plots import heatmap  # noqa: E402
from conftest import ROOT  # noqa: E402

sys.path.insert(0, str(ROOT / "tools"))
import i18n as tool  # noqa: E402  (tools/i18n.py)

DEMO = {
    "source position i (keys)": "입력 위치 i (키)",
    "target step t (queries)": "출력 시점 t (쿼리)",
    "weight α": "가중치 α",
    "head {j}": "헤드 {j}",
    "encoder\nstates": "인코더\n상태",
    "step {t}: {s} emits {w}": "시점 {t}: {s}에서 {w} 출력",
    "uniform weights": "균등 가중치",
    "Luong": "Luong",
}
NEEDS_FONT = pytest.mark.skipif(
    labels.figure_font("ko") is None, reason="no Korean font (apt-get install fonts-nanum)"
)


@pytest.fixture
def catalogue(tmp_path, monkeypatch):
    """A figures.po of the test's own (``DEMO``) in a temporary locales folder; call it to rewrite it."""
    locales = tmp_path / "locales"
    (locales / "ko").mkdir(parents=True)

    def write(entries: dict[str, str]) -> None:
        catalog = Catalog(locale="ko")
        for msgid, msgstr in entries.items():
            catalog.add(msgid, msgstr)
        with open(locales / "ko" / "figures.po", "wb") as handle:
            write_po(handle, catalog)
        labels.reload()

    monkeypatch.setattr(labels, "_LOCALES", locales)
    write(DEMO)
    labels.untranslated_labels(clear=True)
    yield write
    labels.reload()


def _figure():
    """A heat map of the worked example (corpus words on the ticks, a title with maths and a quoted data
    token) beside a line plot with a legend, tick labels that are words, and negative numbers."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    heatmap(
        np.full((3, 4), 0.25),
        ["je", "suis", "étudiant"],
        ["i", "am", "a", "student"],
        ax=left,
        title="head 1",
    )
    right.plot([-1, 0, 1], [1, -1, 0], label="uniform weights")
    right.plot([-1, 0, 1], [0, 1, 0], label="Luong")
    right.plot([-1, 0, 1], [0, 0, 1], label="'student'")
    right.set_xticks([-1, 0, 1], ["encoder\nstates", "<eos>", "student"])
    right.set_title("step $t=1$: $s_1$ emits 'je'")
    right.set_ylabel("a label nobody translated")
    right.text(0, 0.5, "$h_1$")
    right.legend()
    fig.tight_layout()
    return fig


def _shown(fig) -> dict[str, str]:
    """What the figure shows after a draw: the texts, tick labels included, by where they are."""
    fig.canvas.draw()
    left, right = fig.axes[:2]
    return {
        "title": left.get_title(),
        "xlabel": left.get_xlabel(),
        "ylabel": left.get_ylabel(),
        "colorbar": fig.axes[-1].get_ylabel(),
        "left_ticks": " ".join(t.get_text() for t in left.get_xticklabels() + left.get_yticklabels()),
        "right_ticks": " | ".join(t.get_text() for t in right.get_xticklabels()),
        "right_title": right.get_title(),
        "right_ylabel": right.get_ylabel(),
        "legend": " | ".join(t.get_text() for t in right.get_legend().get_texts()),
        "annotations": " ".join(t.get_text() for t in right.texts),
    }


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------------
# Translation when a figure is drawn
# --------------------------------------------------------------------------------------------------


@NEEDS_FONT
def test_labels_are_translated_and_data_tokens_stay(catalogue):
    fig = _figure()
    english = _shown(fig)
    with labels.translated_figure(fig, "ko") as record:
        shown = _shown(fig)
    assert shown["title"] == "헤드 1" and shown["xlabel"] == "입력 위치 i (키)"
    assert shown["ylabel"] == "출력 시점 t (쿼리)" and shown["colorbar"] == "가중치 α"
    assert shown["right_title"] == "시점 $t=1$: $s_1$에서 'je' 출력"  # maths and the quoted word kept
    assert shown["legend"] == "균등 가중치 | Luong | 'student'"  # a kept name and a data token
    assert shown["right_ticks"] == "인코더\n상태 | <eos> | student"
    # data: corpus words on the ticks, numbers, maths; and a label no entry translates stays English
    assert shown["left_ticks"] == english["left_ticks"] and shown["annotations"] == "$h_1$"
    assert shown["right_ylabel"] == "a label nobody translated"
    assert record["untranslated"] == {"a label nobody translated": None}
    assert set(record["entries"]) == {
        "head {j}",
        "source position i (keys)",
        "target step t (queries)",
        "weight α",
        "step {t}: {s} emits {w}",
        "uniform weights",
        "Luong",
        "encoder\nstates",
    }
    assert record["texts"]["Luong"] == "Luong" and record["texts"]["head 1"] == "헤드 1"
    # afterwards the figure is English again
    assert _shown(fig) == english
    plt.close(fig)


def test_what_reads_as_words():
    assert labels.reads_as_words("training loss") and labels.reads_as_words("batch")
    assert labels.reads_as_words("student", labels.LABEL)  # in a title or a legend, a word is a label
    assert not labels.reads_as_words("student", labels.FREE)  # on a tick, a corpus word is data
    assert labels.reads_as_words("encoder\nstates", labels.FREE)
    for data in ("je", "'student'", "<eos>", "$h_1$", "0.25", "t=3: p=1", "q1", "s_t", "3–8", "étudiant"):
        assert not labels.reads_as_words(data, labels.FREE), data
    assert not labels.reads_as_words("$\\alpha^t_i$") and not labels.reads_as_words("이미 한국어")


def test_templates_translate_and_keep_what_they_capture(catalogue):
    assert labels.translate_label("head 3", "ko") == "헤드 3"
    assert (
        labels.translate_label("step $t=2$: $s_2$ emits 'suis'", "ko") == "시점 $t=2$: $s_2$에서 'suis' 출력"
    )
    assert labels.translate_label("head 3", "en") == "head 3"
    assert labels.translate_label("something else", "ko") == "something else"


def test_in_english_a_figure_is_rendered_exactly_as_matplotlib_renders_it(catalogue):
    labels.install_figure_hook()
    original = FigureCanvasBase.print_figure.__wrapped__
    fig = _figure()
    with labels.using("en"):
        hooked = _png(fig)
    buffer = io.BytesIO()
    original(fig.canvas, buffer, format="png")
    assert hooked == buffer.getvalue()
    plt.close(fig)


@NEEDS_FONT
def test_a_korean_render_leaves_the_figure_english_and_shows_hangul_and_minus_signs(catalogue):
    labels.install_figure_hook()
    fig = _figure()
    with labels.using("en"):
        english = _png(fig)
    params = vars(fig.subplotpars).copy()
    with labels.using("ko"), warnings.catch_warnings():
        warnings.simplefilter("error")  # a glyph missing from every font (tofu) warns: it fails here
        korean = _png(fig)
    assert korean != english and vars(fig.subplotpars) == params
    with labels.using("en"):
        assert _png(fig) == english
    assert matplotlib.rcParams["axes.unicode_minus"]
    plt.close(fig)


def test_without_a_korean_font_figures_keep_english_labels_with_one_warning(catalogue, monkeypatch):
    labels.install_figure_hook()
    monkeypatch.setattr(labels, "FONTS", {"ko": ("No Such Font Anywhere",)})
    monkeypatch.setattr(labels, "_FONT_WARNED", set())
    fig = _figure()
    with labels.using("en"):
        english = _png(fig)
    with labels.using("ko"):
        with pytest.warns(UserWarning, match="figures keep their English labels"):
            assert _png(fig) == english
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert _png(fig) == english  # warned once only
    plt.close(fig)


def test_the_grader_does_not_use_figure_labels_and_figures_not_the_grader(catalogue):
    with labels.using("ko"):
        assert labels.translate("uniform weights") == "uniform weights"
        assert labels.translate_label("passed 3 cases, 1/1 point") == "passed 3 cases, 1/1 point"


# --------------------------------------------------------------------------------------------------
# Stored Korean figures and their stamps (synthetic notebooks in tmp_path)
# --------------------------------------------------------------------------------------------------


def _png_output(data: bytes) -> dict:
    return nbformat.v4.new_output(
        "display_data",
        data={
            "image/png": base64.b64encode(data).decode(),
            "text/plain": "<Figure size 640x360 with 1 Axes>",
        },
    )


@pytest.fixture
def book(tmp_path, monkeypatch, catalogue):
    """A one-page book in tmp_path: chapters/99_demo.ipynb with one figure; ko/ empty."""
    monkeypatch.setattr(tool, "ROOT", tmp_path)
    monkeypatch.setattr(tool, "OUT", tmp_path / "ko")
    monkeypatch.setattr(tool, "LOCALES", tmp_path / "locales-pages")
    page = tmp_path / "chapters" / "99_demo.ipynb"
    page.parent.mkdir()
    nb = nbformat.v4.new_notebook()
    imports = nbformat.v4.new_code_cell("import matplotlib.pyplot as plt\nfrom attnbook.plots import heatmap")
    figure = nbformat.v4.new_code_cell("heatmap(w, rows, cols, title='head 1')")
    figure.id, imports.id = "figure-cell", "imports"
    figure.outputs = [_png_output(b"the English figure")]
    nb.cells = [nbformat.v4.new_markdown_cell("# Demo"), imports, figure]
    nbformat.write(nb, page)
    return page


def _store(page, texts: dict[str, str], english: bytes = b"the English figure") -> None:
    """Store a Korean figure for the page's one figure, as `tools/i18n.py figures` does."""
    output = _png_output(b"the Korean figure")
    output.metadata["attnbook"] = {
        "figure": {
            "english_sha256": tool.png_sha256(_png_output(english)),
            "texts": texts,
            "entries": sorted(texts),
        }
    }
    target, text = tool.korean_page(page, figures={("figure-cell", 0): output})
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")


def _korean_png(page) -> bytes:
    _, text = tool.korean_page(page)
    cell = nbformat.reads(text, as_version=4).cells[2]
    return base64.b64decode(cell.outputs[0]["data"]["image/png"])


def test_a_current_korean_figure_is_kept_by_the_build(book):
    assert tool.figure_problems(book) == [
        "chapters/99_demo: figure 1 of 1 (cell figure-cell): no Korean figure: run "
        "`python tools/i18n.py figures chapters/99_demo`"
    ]
    assert _korean_png(book) == b"the English figure"
    _store(book, {"head 1": "헤드 1", "a label nobody translated": "a label nobody translated"})
    assert tool.figure_problems(book) == []
    assert _korean_png(book) == b"the Korean figure"
    # the learner's Korean notebook draws Korean figures: its imports cell sets the language
    _, text = tool.korean_page(book)
    korean = nbformat.reads(text, as_version=4)
    assert (
        korean.cells[1].source.startswith(tool.SET_LANGUAGE)
        and korean.metadata["attnbook"]["language"] == "ko"
    )


def test_a_changed_english_figure_makes_the_korean_one_stale(book):
    _store(book, {"head 1": "헤드 1"})
    nb = nbformat.read(book, as_version=4)
    nb.cells[2].outputs = [_png_output(b"the English figure, redrawn")]
    nbformat.write(nb, book)
    (problem,) = tool.figure_problems(book)
    assert "chapters/99_demo" in problem and "the English figure changed" in problem
    assert "`python tools/i18n.py figures chapters/99_demo`" in problem
    assert _korean_png(book) == b"the English figure, redrawn"  # never a Korean figure of old data


def test_a_changed_or_new_translation_makes_the_korean_figure_stale(book, catalogue):
    _store(book, {"head 1": "헤드 1", "a label nobody translated": "a label nobody translated"})
    catalogue({**DEMO, "head {j}": "{j}번 헤드"})
    (problem,) = tool.figure_problems(book)
    assert "the translation of 'head 1' changed" in problem
    assert _korean_png(book) == b"the English figure"
    catalogue({**DEMO, "a label nobody translated": "아무도 번역하지 않은 라벨"})
    (problem,) = tool.figure_problems(book)
    assert "'a label nobody translated' has a translation now" in problem


def test_build_check_fails_and_names_the_page_and_the_command(book, monkeypatch, capsys):
    monkeypatch.setattr(tool, "figure_pages", lambda: [book])
    monkeypatch.setattr(tool, "korean_files", dict)
    assert tool.cmd_build(check=True) == 1
    err = capsys.readouterr().err
    assert "chapters/99_demo" in err and "python tools/i18n.py figures chapters/99_demo" in err
    _store(book, {"head 1": "헤드 1"})
    assert tool.cmd_build(check=True) == 0


def test_merging_labels_keeps_other_pages_and_marks_changes():
    catalog = Catalog(locale="ko")
    catalog.add("training loss per batch", "배치마다의 학습 손실", locations=[("chapters/01", 0)])
    catalog.add("shared", "공유", locations=[("chapters/01", 0), ("chapters/02", 0)])
    catalog.add("other page", "다른 쪽", locations=[("chapters/02", 0)])
    catalog.add("never met", "아직", locations=[])
    merged = tool.merge_labels(catalog, "chapters/01", ["shared", "training loss per epoch", "brand new"])
    assert merged["training loss per epoch"].fuzzy  # a changed label keeps its old translation, stale
    assert merged["training loss per epoch"].string == "배치마다의 학습 손실"
    assert merged["brand new"].string == "" and "training loss per batch" in merged.obsolete
    assert [loc[0] for loc in merged["shared"].locations] == ["chapters/02", "chapters/01"]
    assert merged["other page"].string and merged["never met"].string
    problems = tool.figure_catalogue_problems(merged)
    assert any("brand new" in p for p in problems) and any("training loss per epoch" in p for p in problems)


def test_a_label_that_comes_back_gets_its_translation_back():
    """A label one page dropped (obsolete) and another page now draws is translated again, not stale."""
    catalog = Catalog(locale="ko")
    catalog.add("Bahdanau", "바다나우", locations=[("chapters/07", 0)])
    catalog = tool.merge_labels(catalog, "chapters/07", [])
    assert "Bahdanau" in catalog.obsolete
    catalog = tool.merge_labels(catalog, "chapters/08", ["Bahdanau"])
    assert catalog["Bahdanau"].string == "바다나우" and not catalog["Bahdanau"].fuzzy
    assert "Bahdanau" not in catalog.obsolete
    assert not tool.figure_catalogue_problems(catalog)


# --------------------------------------------------------------------------------------------------
# The book's own catalogue and Korean figures
# --------------------------------------------------------------------------------------------------


def _entries():
    with open(tool.FIGURE_CATALOGUE, "rb") as handle:
        return [m for m in read_po(handle) if m.id]


def test_every_figure_label_is_translated_with_its_placeholders_and_formulas():
    problems = tool.figure_catalogue_problems(tool.read_figure_catalogue())
    assert not problems, "\n".join(problems[:20])
    assert len(_entries()) > 100


def test_no_figure_entry_would_translate_a_data_token():
    corpus = {w for en, fr in DICTIONARY.items() for w in (en, *fr)}
    literal = [re.sub(r"\{\w+\}", "", m.id).strip() for m in _entries()]
    assert not corpus & set(literal), sorted(corpus & set(literal))


def test_figure_labels_use_the_books_terms():
    never = ["주의", "점수", "문맥 벡터", "에포크", "그래디언트", "타깃"]  # the text says 에폭
    wrong = [(m.id, m.string) for m in _entries() for word in never if word in m.string]
    assert not wrong, wrong


def test_every_english_figure_has_a_current_korean_figure_in_ko():
    pages = tool.figure_pages()
    assert len(pages) >= 11
    problems = [line for page in pages for line in tool.figure_problems(page)]
    assert not problems, "\n".join(problems[:20])
    for page in pages:
        korean = nbformat.read(tool.OUT / page.relative_to(ROOT), as_version=4)
        cell = next(
            c for c in korean.cells if c.cell_type == "code" and tool.IMPORTS_ATTNBOOK.search(c.source)
        )
        assert cell.source.startswith(tool.SET_LANGUAGE), page.name
        stored = tool.stored_figures(page)
        english = nbformat.read(page, as_version=4)
        for key, (cell, index) in tool._figure_slots(english).items():
            if stored[key]["metadata"]["attnbook"]["figure"]["entries"]:  # it shows Korean labels
                assert stored[key]["data"]["image/png"] != cell.outputs[index]["data"]["image/png"]


def test_the_stamp_is_what_the_build_checks():
    page = tool.figure_pages()[0]
    english = nbformat.read(page, as_version=4)
    key, (cell, index) = next(iter(tool._figure_slots(english).items()))
    korean = copy.deepcopy(tool.stored_figures(page)[key])
    assert tool.figure_problem(cell.outputs[index], korean) is None
    korean["metadata"]["attnbook"]["figure"]["english_sha256"] = "0" * 64
    assert tool.figure_problem(cell.outputs[index], korean) == "the English figure changed"
    assert tool.figure_problem(cell.outputs[index], None) == "no Korean figure"
