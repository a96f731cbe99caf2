"""The grader's messages in the learner's language: ``set_language("ko")`` or ``ATTNBOOK_LANG=ko``.

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
"""

from __future__ import annotations

import contextlib
import os
import re
from functools import cache
from pathlib import Path

LANGUAGES = ("en", "ko")
#: the .po flag of a template that wraps a whole message (tried before the messages it may hold)
OUTER_FLAG = "attnbook-outer"
_LOCALES = Path(__file__).resolve().parent / "locales"
_CHOSEN: list[str | None] = [None]
_UNTRANSLATED: set[str] = set()
_RESULTS: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {}
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_]\w*)\}")
_HANGUL = re.compile(r"[\uac00-\ud7a3]")
_PROSE = re.compile(r"[A-Za-z]{2,}(?: [A-Za-z]{2,}){2,}")
_QUOTED = re.compile(r"`[^`]*`|'[^']*'|\"[^\"]*\"")


def _normalise(lang: str) -> str:
    """``"ko_KR.UTF-8"`` -> ``"ko"``; ``"EN"`` -> ``"en"``."""
    return re.split(r"[_.@-]", str(lang).strip().lower(), maxsplit=1)[0]


def set_language(lang: str | None) -> None:
    """Choose the language of the grader's messages: ``"en"`` (the default) or ``"ko"``. ``None`` goes
    back to the default (the environment variable ``ATTNBOOK_LANG``, else English)."""
    if lang is None:
        _CHOSEN[0] = None
        return
    code = _normalise(lang)
    if code not in LANGUAGES:
        raise ValueError(f"unknown language {lang!r}; the grader speaks {', '.join(LANGUAGES)}")
    _CHOSEN[0] = code


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
            parts.append(f"(?P<{name}>.*?)")
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
def _catalogue(lang: str) -> tuple[dict[str, str], tuple]:
    """``(static msgid -> msgstr, ((regex, code placeholders, msgstr), ...) most literal characters first)`` of every
    finished (translated, not fuzzy) entry of ``locales/<lang>/*.po``."""
    from babel.messages.pofile import read_po

    static: dict[str, str] = {}
    templates = []
    for path in sorted((_LOCALES / lang).glob("*.po")):
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
                    ((not outer, open_end, -literal, len(templates)), regex, code, message.string)
                )
            else:
                static[_fill(message.id, {})] = _fill(message.string, {})
    templates.sort(key=lambda t: t[0])
    return static, tuple((regex, code, msgstr) for _, regex, code, msgstr in templates)


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


def _whole(text: str, lang: str, missing: list[str]) -> str | None:
    """``text`` translated by a static entry or a template, or None."""
    static, templates = _catalogue(lang)
    if text in static:
        return static[text]
    for regex, code, msgstr in templates:
        match = regex.fullmatch(text)
        if match is None:
            continue
        # a value between backticks in the template (`{code}`) is code: kept as it is, never translated
        values = {
            name: value if name in code else _value(value, lang, missing)
            for name, value in match.groupdict().items()
        }
        return _fill(msgstr, values)
    return None


def _value(text: str, lang: str, missing: list[str]) -> str:
    """A captured value: translated when something matches, else kept (and recorded if it is prose)."""
    if not text or not text.strip():
        return text
    done, inner = _translated(text, lang)
    missing.extend(inner)
    return done


def _translated(text: str, lang: str) -> tuple[str, tuple[str, ...]]:
    key = (lang, text)
    cached = _RESULTS.get(key)
    if cached is not None:
        return cached
    missing: list[str] = []
    done = _whole(text, lang, missing)
    if done is None:
        sentences = _sentences(text)
        if len(sentences) > 1:
            out = []
            for sentence in sentences:
                one = _whole(sentence, lang, missing)
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
    result = (done, tuple(dict.fromkeys(missing)))
    _RESULTS[key] = result
    return result


def translate(text: str) -> str:
    """``text`` (a finished English message) in the chosen language; unchanged in English, and unchanged
    (and recorded in :func:`untranslated`) where no catalogue entry matches it."""
    lang = get_language()
    if lang == "en" or not isinstance(text, str) or not text:
        return text
    done, missing = _translated(text, lang)
    _UNTRANSLATED.update(missing)
    return done


def untranslated(clear: bool = False) -> list[str]:
    """The English messages (or parts of messages) seen by :func:`translate` that matched no entry, in
    sorted order; ``clear=True`` forgets them after returning them."""
    found = sorted(_UNTRANSLATED)
    if clear:
        _UNTRANSLATED.clear()
    return found


__all__ = [
    "LANGUAGES",
    "get_language",
    "placeholders",
    "reload",
    "set_language",
    "translate",
    "untranslated",
    "using",
]
