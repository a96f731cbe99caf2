"""The grader's messages and the figures' labels in the learner's language: ``set_language("ko")`` or
``ATTNBOOK_LANG=ko``.

The engine and the tasks write their messages in English; :func:`translate` turns a finished English
message into the chosen language with the gettext catalogues in ``attnbook/locales/<lang>/*.po``. A
catalogue's msgid is an English *template*: ``{name}`` is a placeholder that matches any run of characters
(non-greedily), ``{{`` and ``}}`` are literal braces. The msgstr is the same message in the other language,
with the same placeholders. A message is translated by

1. an exact match with a msgid that has no placeholder;
2. else the first template that matches the whole message, in this order: the engine's sentences around a
   whole message (flagged ``attnbook-outer`` in the catalogue: "{message}. Seen on {case}."), then templates
   that end with literal text, then those that end with a placeholder; most literal characters first within
   each group. Each captured
   value is translated the same way (so a task's message captured inside an engine sentence is translated
   too; a value that matches nothing, a name, a number, a shape or code, is kept as it is; a value the
   template puts between backticks, `{code}`, is code and never translated);
3. else, sentence by sentence (split after ". " outside brackets and backticks), each sentence by 1 and 2.

What matched nothing (and reads like English prose) is recorded: :func:`untranslated` lists it, so tests
can require that every message of the catalogue is translated. In English (the default) :func:`translate`
returns its argument unchanged.

Figures speak the language too. ``locales/<lang>/figures.po`` holds the figures' labels (a domain of its
own: the grader never uses it, figures never use the grader's catalogues), matched the same way by
:func:`translate_label`. :func:`install_figure_hook` (called by :func:`set_language` and by
``attnbook.plots``) makes matplotlib translate a figure just before it renders it (``savefig`` and Jupyter's
inline backend both call ``FigureCanvasBase.print_figure``): :func:`translated_figure` translates its titles,
axis and colour-bar labels, legends, texts, annotations and string tick labels, draws them in a font that
has the script (``FONTS``: NanumGothic first), lays the figure out again if ``tight_layout`` had, and puts
everything back afterwards. Only what an entry matches is translated, so data (corpus words, ``$maths$``,
quoted tokens, numbers) stays as it is; a label that no entry translates is recorded
(:func:`untranslated_labels`; :func:`reads_as_words` tells a label from data). Without a font for the
language, figures keep their English labels, with one warning. In English the hook calls matplotlib
unchanged, so English figures are byte for byte what matplotlib draws. With ``ATTNBOOK_FIGURE_LOG`` set,
every translated figure appends what it showed to that file (``tools/i18n.py figures`` stamps the Korean
figures it stores with it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
import warnings
from functools import cache
from pathlib import Path

LANGUAGES = ("en", "ko")
#: the .po flag of a template that wraps a whole message (tried before the messages it may hold)
OUTER_FLAG = "attnbook-outer"
_LOCALES = Path(__file__).resolve().parent / "locales"
_CHOSEN: list[str | None] = [None]
_UNTRANSLATED: set[str] = set()
_RESULTS: dict[tuple[str, str, str], tuple[str, tuple[str, ...], tuple[str, ...]]] = {}
#: the catalogue domains: the grader's messages (every .po but figures.po) and the figures' labels
GRADER = "grader"
FIGURES = "figures"
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_]\w*)\}")
_HANGUL = re.compile(r"[\uac00-\ud7a3]")
_PROSE = re.compile(r"[A-Za-z]{2,}(?: [A-Za-z]{2,}){2,}")
_QUOTED = re.compile(r"`[^`]*`|'[^']*'|\"[^\"]*\"")


def _normalise(lang: str) -> str:
    """``"ko_KR.UTF-8"`` -> ``"ko"``; ``"EN"`` -> ``"en"``."""
    return re.split(r"[_.@-]", str(lang).strip().lower(), maxsplit=1)[0]


def set_language(lang: str | None) -> None:
    """Choose the language of the grader's messages and of figures' labels: ``"en"`` (the default) or
    ``"ko"``. ``None`` goes back to the default (the environment variable ``ATTNBOOK_LANG``, else
    English)."""
    if lang is None:
        _CHOSEN[0] = None
        return
    code = _normalise(lang)
    if code not in LANGUAGES:
        raise ValueError(f"unknown language {lang!r}; the grader speaks {', '.join(LANGUAGES)}")
    _CHOSEN[0] = code
    if code != "en" and "matplotlib" in sys.modules:
        # figures speak it too (attnbook.plots installs the hook when matplotlib comes later)
        install_figure_hook()


def get_language() -> str:
    """The language chosen with :func:`set_language`, else ``ATTNBOOK_LANG`` (when it names a known
    language), else ``"en"``."""
    if _CHOSEN[0] is not None:
        return _CHOSEN[0]
    code = _normalise(os.environ.get("ATTNBOOK_LANG", "") or "en")
    return code if code in LANGUAGES else "en"


@contextlib.contextmanager
def using(lang: str | None):
    """Run the body with ``lang`` chosen (``None``: leave the choice as it is), then restore it."""
    previous = _CHOSEN[0]
    if lang is not None:
        set_language(lang)
    try:
        yield
    finally:
        _CHOSEN[0] = previous


def placeholders(template: str) -> set[str]:
    """The placeholder names of a template (``{{`` and ``}}`` are literal braces, not placeholders)."""
    return {m.group(1) for m in _PLACEHOLDER.finditer(template) if m.group(1)}


#: what ``{case}`` holds in the engine's messages (``Case.describe``: "case 'name'" and maybe " (note)"): a
#: note may itself hold ": " or "; ", so the placeholder matches the note's brackets, nested up to 3 deep,
#: rather than the shortest text before the template's next literal
_CASE = r"(?P<case>case '.*?'(?: \((?:[^()]|\((?:[^()]|\([^()]*\))*\))*\))?)"


def _compile(template: str) -> tuple[re.Pattern, int]:
    """The regex of a template, and its number of literal characters."""
    parts, seen, literal, pos = [], set(), 0, 0
    for match in _PLACEHOLDER.finditer(template):
        text = template[pos : match.start()]
        parts.append(re.escape(text))
        literal += len(text)
        name = match.group(1)
        if name is None:
            parts.append(re.escape(match.group(0)[0]))
            literal += 1
        elif name in seen:
            parts.append(f"(?P={name})")
        else:
            seen.add(name)
            parts.append(_CASE if name == "case" else f"(?P<{name}>.*?)")
        pos = match.end()
    text = template[pos:]
    parts.append(re.escape(text))
    literal += len(text)
    return re.compile("".join(parts), re.S), literal


def _fill(template: str, values: dict[str, str]) -> str:
    def one(match: re.Match) -> str:
        if match.group(1) is None:
            return match.group(0)[0]
        return values[match.group(1)]

    return _PLACEHOLDER.sub(one, template)


@cache
def _catalogue(lang: str, domain: str = GRADER) -> tuple[dict[str, str], tuple]:
    """``(static msgid -> msgstr, ((regex, code placeholders, msgstr, msgid), ...) most literal characters
    first)`` of every finished (translated, not fuzzy) entry of the domain's catalogues: ``FIGURES``, the
    figures' labels (``locales/<lang>/figures.po``), else the grader's messages (every other ``.po``)."""
    from babel.messages.pofile import read_po

    static: dict[str, str] = {}
    templates = []
    for path in sorted((_LOCALES / lang).glob("*.po")):
        if (path.stem == FIGURES) != (domain == FIGURES):
            continue
        with open(path, "rb") as handle:
            catalog = read_po(handle)
        for message in catalog:
            if not message.id or not isinstance(message.id, str) or not message.string or message.fuzzy:
                continue
            if placeholders(message.id):
                regex, literal = _compile(message.id)
                code = frozenset(re.findall(r"`\{([A-Za-z_]\w*)\}`", message.id))
                # an engine sentence around a whole message (flag "attnbook-outer") is tried before the
                # messages it may hold; then a template that ends with a placeholder, which could swallow
                # what follows its message (the engine's ". Seen on case ..."), after those that do not
                outer = OUTER_FLAG in message.flags
                open_end = bool(re.search(r"(?<!\})\{[A-Za-z_]\w*\}$", message.id))
                templates.append(
                    ((not outer, open_end, -literal, len(templates)), regex, code, message.string, message.id)
                )
            else:
                static[_fill(message.id, {})] = _fill(message.string, {})
    templates.sort(key=lambda t: t[0])
    return static, tuple(t[1:] for t in templates)


def reload() -> None:
    """Read the catalogues again (after one was changed) and forget every cached result."""
    _catalogue.cache_clear()
    _RESULTS.clear()


def _prose(text: str) -> bool:
    """English words to be read (not a name, number, shape, code or text already translated)."""
    if not text or _HANGUL.search(text):
        return False
    return bool(_PROSE.search(_QUOTED.sub(" ", text)))


def _sentences(text: str) -> list[str]:
    """``text`` split after each ". " that is outside brackets and backticks."""
    pieces, depth, code, start = [], 0, False, 0
    for i, char in enumerate(text):
        if char == "`":
            code = not code
        elif not code and char in "([{":
            depth += 1
        elif not code and char in ")]}":
            depth = max(0, depth - 1)
        elif not code and depth == 0 and char == "." and text[i + 1 : i + 2] == " ":
            pieces.append(text[start : i + 1])
            start = i + 2
    pieces.append(text[start:])
    return [p for p in pieces if p]


def _whole(text: str, lang: str, missing: list[str], used: list[str], domain: str) -> str | None:
    """``text`` translated by a static entry or a template, or None; the msgids that matched go to
    ``used``."""
    static, templates = _catalogue(lang, domain)
    if text in static:
        used.append(text)
        return static[text]
    for regex, code, msgstr, msgid in templates:
        match = regex.fullmatch(text)
        if match is None:
            continue
        used.append(msgid)
        # a value between backticks in the template (`{code}`) is code: kept as it is, never translated
        values = {
            name: value if name in code else _value(value, lang, missing, used, domain)
            for name, value in match.groupdict().items()
        }
        return _fill(msgstr, values)
    return None


def _value(text: str, lang: str, missing: list[str], used: list[str], domain: str) -> str:
    """A captured value: translated when something matches, else kept (and recorded if it is prose)."""
    if not text or not text.strip():
        return text
    done, inner, inner_used = _translated(text, lang, domain)
    missing.extend(inner)
    used.extend(inner_used)
    return done


def _translated(text: str, lang: str, domain: str = GRADER) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """``(translation, English parts that matched nothing, msgids used)``, cached."""
    key = (lang, domain, text)
    cached = _RESULTS.get(key)
    if cached is not None:
        return cached
    missing: list[str] = []
    used: list[str] = []
    done = _whole(text, lang, missing, used, domain)
    if done is None:
        sentences = _sentences(text)
        if len(sentences) > 1:
            out = []
            for sentence in sentences:
                one = _whole(sentence, lang, missing, used, domain)
                if one is None:
                    if _prose(sentence):
                        missing.append(sentence)
                    one = sentence
                out.append(one)
            done = " ".join(out)
        else:
            if _prose(text):
                missing.append(text)
            done = text
    result = (done, tuple(dict.fromkeys(missing)), tuple(dict.fromkeys(used)))
    _RESULTS[key] = result
    return result


def translate(text: str) -> str:
    """``text`` (a finished English message) in the chosen language; unchanged in English, and unchanged
    (and recorded in :func:`untranslated`) where no catalogue entry matches it."""
    lang = get_language()
    if lang == "en" or not isinstance(text, str) or not text:
        return text
    done, missing, _ = _translated(text, lang)
    _UNTRANSLATED.update(missing)
    return done


def untranslated(clear: bool = False) -> list[str]:
    """The English messages (or parts of messages) seen by :func:`translate` that matched no entry, in
    sorted order; ``clear=True`` forgets them after returning them."""
    found = sorted(_UNTRANSLATED)
    if clear:
        _UNTRANSLATED.clear()
    return found


# --------------------------------------------------------------------------------------------------
# Figures: their labels translated just before matplotlib renders them
# --------------------------------------------------------------------------------------------------

#: fonts that show the language's script, the first that matplotlib finds is used (the book's stored
#: Korean figures are drawn with NanumGothic: Debian's fonts-nanum)
FONTS = {"ko": ("NanumGothic", "Noto Sans CJK KR", "Noto Sans KR", "Malgun Gothic", "Apple SD Gothic Neo")}
#: an environment variable naming a file: every figure rendered in another language appends a JSON line
#: there (the PNG's sha256, its texts and their translations, the catalogue entries used, the labels
#: left untranslated); ``tools/i18n.py figures`` reads it to stamp the Korean figures it stores
FIGURE_LOG = "ATTNBOOK_FIGURE_LOG"
_HOOKED = [False]
_DRAWING = [False]
_FONT_WARNED: set[str] = set()
_UNTRANSLATED_LABELS: set[str] = set()
_DATA_WORDS: list[frozenset] = []
_WORD = re.compile(r"[^\W\d_]{2,}")
_MATHS = re.compile(r"(?<!\\)\$(?:\\.|[^$])*\$")
_TOKEN = re.compile(r"<\w+>")
#: the roles of a figure's texts: words there are always labels (a title, an axis label, a legend entry, a
#: colour bar's label); other texts (tick labels, ``ax.text``, annotations) are often data
LABEL, FREE = "label", "free"


def translate_label(text: str, lang: str | None = None) -> str:
    """A figure's text in ``lang`` (default: the chosen language) through ``locales/<lang>/figures.po``:
    an exact match, else a template (``"head {j}"``); unchanged where nothing matches, and in English."""
    lang = lang or get_language()
    if lang == "en" or not isinstance(text, str) or not text:
        return text
    return _translated(text, lang, FIGURES)[0]


def _data_words() -> frozenset:
    """The words of the book's data: the corpus (both languages) and the worked example."""
    if not _DATA_WORDS:
        from . import worked_example as wx
        from .data import DICTIONARY

        tokens = [*DICTIONARY, *(w for fr in DICTIONARY.values() for w in fr)]
        tokens += [*wx.SOURCE, *wx.TARGET, *wx.TARGET_VOCAB]
        _DATA_WORDS.append(frozenset(w.lower() for t in tokens for w in _WORD.findall(t)))
    return _DATA_WORDS[0]


def reads_as_words(text: str, role: str = LABEL) -> bool:
    """Whether a figure's text is words to translate, not data. Maths (``$...$``), quoted tokens
    (``'je'``), special tokens (``<eos>``), numbers and one-letter names are data; what is left must hold a
    word of two letters or more. In a title, axis label, legend or colour bar (``role=LABEL``) that makes
    it a label; in a tick label or a free text (``FREE``) only a word that is not a word of the corpus or
    the worked example does (a tick label "student" is data, "encoder states" a label)."""
    if not isinstance(text, str) or not text.strip() or _HANGUL.search(text):
        return False
    rest = _TOKEN.sub(" ", _QUOTED.sub(" ", _MATHS.sub(" ", text)))
    words = [w.lower() for w in _WORD.findall(rest)]
    if not words:
        return False
    return role == LABEL or any(w not in _data_words() for w in words)


def untranslated_labels(clear: bool = False) -> list[str]:
    """The labels of the figures rendered in another language that no entry of figures.po translated."""
    found = sorted(_UNTRANSLATED_LABELS)
    if clear:
        _UNTRANSLATED_LABELS.clear()
    return found


@cache
def _find_font(names: tuple[str, ...]) -> str | None:
    from matplotlib import font_manager

    for name in names:
        try:
            font_manager.findfont(font_manager.FontProperties(family=name), fallback_to_default=False)
        except ValueError:
            continue
        return name
    return None


def figure_font(lang: str) -> str | None:
    """The font that shows ``lang``'s script (``FONTS``), or None when matplotlib finds none of them."""
    return _find_font(tuple(FONTS.get(lang, ())))


def _families(text: str, families: list[str], font: str) -> list[str]:
    """The font families of a translated text: its own first, then ``font`` for the glyphs they lack
    (NanumGothic's √, → and ² are poor; DejaVu's minus sign stays). Maths text (``$...$``) is the
    exception: mathtext sets what is outside the dollars in the first family only, so ``font`` leads."""
    families = [f for f in families if f != font]
    return [font, *families] if _MATHS.search(text) else [*families, font]


def _texts(fig) -> tuple[list, list]:
    """``[(text artist, role)]`` of every text of ``fig`` except tick labels, and ``[(axis, ticker)]`` of
    every axis (``ticker``: its ``major`` or ``minor`` locator and formatter), whose tick labels are made
    when the figure is drawn."""
    from matplotlib.text import Text

    roles: dict[int, str] = {}
    skip: set[int] = set()
    tickers = []
    for ax in fig.get_axes():
        for title in (ax.title, getattr(ax, "_left_title", None), getattr(ax, "_right_title", None)):
            if title is not None:
                roles[id(title)] = LABEL
        for axis in ax._axis_map.values():
            roles[id(axis.label)] = LABEL
            skip.add(id(axis.offsetText))
            for tick in [*axis.majorTicks, *axis.minorTicks]:
                skip.update((id(tick.label1), id(tick.label2)))
            tickers.extend([(axis, axis.major), (axis, axis.minor)])
        legend = ax.get_legend()
        if legend is not None:
            roles.update((id(t), LABEL) for t in [*legend.get_texts(), legend.get_title()])
    for legend in fig.legends:
        roles.update((id(t), LABEL) for t in [*legend.get_texts(), legend.get_title()])
    for name in ("_suptitle", "_supxlabel", "_supylabel"):
        if getattr(fig, name, None) is not None:
            roles[id(getattr(fig, name))] = LABEL
    texts = [(t, roles.get(id(t), FREE)) for t in fig.findobj(Text) if id(t) not in skip]
    return texts, tickers


def _translated_ticks(inner, table: dict[str, str]):
    """A tick formatter whose labels are ``inner``'s translated by ``table``; the rest is ``inner``'s."""
    from matplotlib.ticker import Formatter

    class TranslatedTicks(Formatter):
        def __init__(self):
            self.axis = inner.axis

        def __call__(self, x, pos=None):
            text = inner(x, pos)
            return table.get(text, text)

        def format_ticks(self, values):
            return [table.get(text, text) for text in inner.format_ticks(values)]

        def set_locs(self, locs):
            inner.set_locs(locs)

        def get_offset(self):
            return inner.get_offset()

        def format_data(self, value):
            return inner.format_data(value)

        def format_data_short(self, value):
            return inner.format_data_short(value)

    return TranslatedTicks()


def _string_formatters() -> tuple:
    """The tick formatters that show strings (set_xticks(ticks, labels), functions, categories); the
    others show numbers."""
    from matplotlib.category import StrCategoryFormatter
    from matplotlib.ticker import FixedFormatter, FuncFormatter

    return (FixedFormatter, FuncFormatter, StrCategoryFormatter)


def _label(text: str, role: str, lang: str, record: dict) -> str:
    """One text of a figure, translated; the record notes what it used and what it left."""
    if not isinstance(text, str) or not text:
        return text
    done, _, used = _translated(text, lang, FIGURES)
    if used:  # an entry matched (its translation may keep the text as it is: a name, a formula)
        record["texts"][text] = done
        record["entries"].update(dict.fromkeys(used))
    elif reads_as_words(text, role):
        record["texts"][text] = text
        record["untranslated"][text] = None
        _UNTRANSLATED_LABELS.add(text)
    return done


@contextlib.contextmanager
def translated_figure(fig, lang: str | None = None):
    """Within the body, ``fig``'s labels are in ``lang`` (default: the chosen language) with a font that
    shows them, laid out again where ``tight_layout`` had laid it out; afterwards the figure is as it
    was. Yields the record of what was translated: ``{"texts": {English: shown}, "entries": msgids used,
    "untranslated": labels no entry translated}``, or None when nothing is done (English, or no font for
    the language: then the figure keeps its English labels, with one warning)."""
    lang = lang or get_language()
    if lang == "en":
        yield None
        return
    font = figure_font(lang)
    if font is None:
        if lang not in _FONT_WARNED:
            _FONT_WARNED.add(lang)
            warnings.warn(
                f"attnbook: no font for {lang!r} found ({', '.join(FONTS.get(lang, ()))}): figures keep "
                "their English labels. Install one (Debian, Ubuntu, Colab: `apt-get install fonts-nanum`), "
                "then restart the kernel.",
                stacklevel=3,
            )
        yield None
        return
    record = {"texts": {}, "entries": {}, "untranslated": {}}
    undo = []
    texts, tickers = _texts(fig)
    for artist, role in texts:
        text = artist.get_text()
        done = _label(text, role, lang, record)
        if done != text:
            undo.append((artist.set_fontfamily, list(artist.get_fontfamily())))
            undo.append((artist.set_text, text))
            artist.set_fontfamily(_families(done, artist.get_fontfamily(), font))
            artist.set_text(done)
    for axis, ticker in tickers:
        if not isinstance(ticker.formatter, _string_formatters()):
            continue
        locs = list(ticker.locator())
        shown = list(ticker.formatter.format_ticks(locs))
        table = {text: _label(text, FREE, lang, record) for text in shown}
        changed = " ".join(done for text, done in table.items() if done != text)
        if not changed:
            continue
        undo.append((lambda old, t=ticker: setattr(t, "formatter", old), ticker.formatter))
        ticker.formatter = _translated_ticks(ticker.formatter, table)
        ticks = axis.get_major_ticks(len(locs)) if ticker is axis.major else axis.get_minor_ticks(len(locs))
        for label in (label for tick in ticks for label in (tick.label1, tick.label2)):
            undo.append((label.set_fontfamily, list(label.get_fontfamily())))
            label.set_fontfamily(_families(changed, label.get_fontfamily(), font))
    tight = getattr(fig, "_attnbook_tight_layout", None)
    if undo and tight is not None:
        params = fig.subplotpars
        saved = {k: getattr(params, k) for k in ("left", "right", "bottom", "top", "wspace", "hspace")}
        undo.append((lambda old: fig.subplots_adjust(**old), saved))
        fig.tight_layout(**tight)
    try:
        yield record
    finally:
        for restore, value in reversed(undo):
            restore(value)


def _log(record: dict, target) -> None:
    path = os.environ.get(FIGURE_LOG)
    if not path or record is None or not hasattr(target, "getvalue"):
        return
    entry = {
        "png_sha256": hashlib.sha256(target.getvalue()).hexdigest(),
        "texts": record["texts"],
        "entries": list(record["entries"]),
        "untranslated": list(record["untranslated"]),
    }
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, ensure_ascii=False) + "\n")


def install_figure_hook() -> None:
    """Make matplotlib render figures in the chosen language: ``FigureCanvasBase.print_figure`` (what
    ``savefig`` and Jupyter's inline backend call) translates the figure's labels first
    (:func:`translated_figure`); ``Figure.tight_layout`` remembers its arguments, so that a translated
    figure is laid out again. In English both do exactly what matplotlib does. Installed once;
    :func:`set_language` and ``attnbook.plots`` call it."""
    if _HOOKED[0]:
        return
    import functools

    from matplotlib.backend_bases import FigureCanvasBase
    from matplotlib.figure import Figure

    print_figure = FigureCanvasBase.print_figure
    tight_layout = Figure.tight_layout

    @functools.wraps(print_figure)
    def translated_print_figure(self, filename, *args, **kwargs):
        if _DRAWING[0] or get_language() == "en":
            return print_figure(self, filename, *args, **kwargs)
        _DRAWING[0] = True
        try:
            with translated_figure(self.figure) as record:
                result = print_figure(self, filename, *args, **kwargs)
        finally:
            _DRAWING[0] = False
        _log(record, filename)
        return result

    @functools.wraps(tight_layout)
    def remembered_tight_layout(self, **kwargs):
        self._attnbook_tight_layout = kwargs
        return tight_layout(self, **kwargs)

    FigureCanvasBase.print_figure = translated_print_figure
    Figure.tight_layout = remembered_tight_layout
    _HOOKED[0] = True


__all__ = [
    "FIGURES",
    "FONTS",
    "LANGUAGES",
    "figure_font",
    "get_language",
    "install_figure_hook",
    "placeholders",
    "reads_as_words",
    "reload",
    "set_language",
    "translate",
    "translate_label",
    "translated_figure",
    "untranslated",
    "untranslated_labels",
    "using",
]
