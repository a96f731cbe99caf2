"""Search for the Korean edition: a Sphinx search language for ``ko`` (Sphinx 7.4 has none).

Korean attaches particles to words ("내적이", "내적을", "가중치를"), so a reader who searches "내적" would miss
every page where the word carries a particle. This language indexes each Hangul word together with its
prefixes of two or more syllables ("내적이" -> "내적이", "내적"), which covers the particles without a
dictionary; Latin words are lower-cased and indexed like English words without stemming. The query is
split the same way in the browser (Sphinx's default splitter keeps Hangul words whole), so "어텐션 가중치"
finds pages with both "어텐션" and "가중치(를)".
"""

from __future__ import annotations

import re

from sphinx.search import SearchLanguage

HANGUL = re.compile(r"[\uac00-\ud7a3]+")


class SearchKorean(SearchLanguage):
    lang = "ko"
    language_name = "Korean"
    _word_re = re.compile(r"\w+")

    def split(self, input: str) -> list[str]:
        words = []
        for word in self._word_re.findall(input):
            words.append(word)
            if HANGUL.fullmatch(word):
                words.extend(word[:n] for n in range(2, len(word)))
        return words

    def stem(self, word: str) -> str:
        return word.lower()

    def word_filter(self, word: str) -> bool:
        return len(word) > 1 or bool(HANGUL.fullmatch(word))


def setup(app):
    app.add_search_language(SearchKorean)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
