"""The Korean edition's machinery (tools/i18n.py, _ext/korean_search.py), on small examples.

The whole-book checks (every unit translated and current, the Korean build, Korean search in a browser)
join `make test` when the translation is complete; these tests pin down the rules they will rely on.
"""

from __future__ import annotations

import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "_ext"))
import i18n  # noqa: E402
import korean_search  # noqa: E402

PAGE = """# Attention scores

The score is $e^t_i = s_t^\\top h_i$, see {cite}`luong2015`.

$$
e^t = H s_t
$$

```python
scores = H @ s_t
```

```{note}
A note is translated as a whole.
```

| symbol | meaning |
|---|---|
| $h_i$ | encoder state |
"""


def test_units_are_text_blocks_and_never_code_or_maths():
    units = [u.text for u in i18n.markdown_units(PAGE, "page")]
    assert units[0] == "# Attention scores"
    assert any("{cite}`luong2015`" in u for u in units)
    assert any(u.startswith("```{note}") for u in units)
    assert any(u.startswith("| symbol") for u in units)
    assert not any("H @ s_t" in u or u.startswith("$$") for u in units)


def test_translating_replaces_only_units_and_keeps_everything_else():
    assert i18n.translate_markdown(PAGE, {}) == PAGE
    korean = i18n.translate_markdown(PAGE, {"# Attention scores": "# 어텐션 스코어"})
    assert korean.startswith("# 어텐션 스코어\n") and "scores = H @ s_t" in korean and "e^t = H s_t" in korean


def test_a_changed_english_unit_keeps_its_old_translation_marked_stale():
    old = i18n.merge(
        i18n.Catalog(locale="ko"),
        [i18n.Unit("The score of one word.", "p"), i18n.Unit("Removed later.", "p")],
    )
    old["The score of one word."].string = "단어 하나의 스코어."
    old["Removed later."].string = "나중에 지워진다."
    new = i18n.merge(old, [i18n.Unit("The score of one source word.", "p"), i18n.Unit("A new unit.", "p")])
    changed = new["The score of one source word."]
    assert changed.string == "단어 하나의 스코어." and changed.fuzzy
    assert new["A new unit."].string == ""
    problems = i18n.problems("p", new)
    assert any("stale" in p for p in problems) and any("missing" in p for p in problems)
    assert "Removed later." in new.obsolete


def test_a_translation_must_keep_formulas_roles_code_and_link_targets():
    catalog = i18n.merge(
        i18n.Catalog(locale="ko"),
        [
            i18n.Unit(
                "The weights $\\alpha^t$ of `softmax` [chapter 5](05_softmax_weights.ipynb), {cite}`vaswani2017`.",
                "p",
            )
        ],
    )
    message = next(m for m in catalog if m.id)
    message.string = (
        "가중치 $\\alpha^t$는 `softmax`로 구한다 [5장](05_softmax_weights.ipynb), {cite}`vaswani2017`."
    )
    assert i18n.problems("p", catalog) == []
    message.string = "가중치 α는 softmax로 구한다 [5장](05_softmax_weights.ipynb)."
    (problem,) = i18n.problems("p", catalog)
    assert "$\\alpha^t$" in problem and "{cite}`vaswani2017`" in problem


def test_every_page_of_the_toc_has_units():
    pages = i18n.pages()
    assert any(p.parent.name == "chapters" for p in pages) and any(
        p.parent.name == "solutions" for p in pages
    )
    for page in pages:
        assert i18n.page_units(page), f"{page.name}: no translatable text found"


def test_korean_search_indexes_words_with_their_particles_removed():
    search = korean_search.SearchKorean({})
    words = search.split("내적이 큰 키에 어텐션 가중치를 준다 (attention weights)")
    assert {"내적", "내적이", "가중치", "어텐션", "attention"} <= set(words)
    assert search.stem("Attention") == "attention"


# --------------------------------------------------------------------------------------------------
# The whole book: every unit translated and current, the book's terms used
# --------------------------------------------------------------------------------------------------

#: English term -> the Korean term the book uses for it (book/glossary.md): a page whose English uses the
#: term uses the Korean term (checked page by page: a sentence may rightly say it in other words).
TERMS = {
    "attention score": "어텐션 스코어",
    "attention weight": "어텐션 가중치",
    "attention value": "어텐션 값",
    "context vector": "컨텍스트 벡터",
    "teacher forcing": "교사 강요",
    "vanishing gradient": "기울기 소실",
    "self-attention": "셀프 어텐션",
    "multi-head attention": "멀티 헤드 어텐션",
    "dot product": "내적",
    "weighted sum": "가중합",
    "scaled dot-product attention": "스케일드 닷-프로덕트 어텐션",
}
#: synonyms that must never stand for the book's terms (machine-translation habits and rival usages)
NEVER = [
    "주의 메커니즘",
    "주의 가중치",
    "주의 점수",
    "어텐션 점수",
    "스케일 도트",
    "도트 제품",
    "점곱",
    "문맥 벡터",
    "교사 강제",
    "티처 포싱",
    "경사 소실",
    "그래디언트 소실",
    "멀티-헤드",
    "자기 주의",
    "셀프-어텐션",
]


def _words(text: str) -> str:
    return " ".join(text.split())


def catalogues():
    names = [i18n.catalogue_name(p) for p in i18n.pages()] + [i18n.TOC_CATALOGUE]
    return {name: i18n.read_catalogue(name) for name in names}


def test_every_unit_of_every_page_is_translated_and_current():
    problems = [p for name, catalog in catalogues().items() for p in i18n.problems(name, catalog)]
    assert not problems, f"{len(problems)} unit(s) to translate (tools/i18n.py status):\n" + "\n".join(
        problems[:20]
    )


def test_catalogues_hold_exactly_the_english_units():
    """`tools/i18n.py update` would change nothing: no English unit is missing from its catalogue."""
    for page in i18n.pages():
        name = i18n.catalogue_name(page)
        expected = {u.text for u in i18n.page_units(page)}
        present = {m.id for m in i18n.read_catalogue(name) if m.id}
        assert expected == present, (
            f"{name}: run `python tools/i18n.py update {name}`; new or changed English: "
            f"{sorted(expected - present)[:3]}"
        )


def test_the_books_terms_are_used_not_synonyms():
    wrong = []
    for name, catalog in catalogues().items():
        units = [m for m in catalog if m.id and m.string]
        english = _words(" ".join(m.id for m in units)).lower()
        korean = _words(" ".join(m.string for m in units))
        wrong.extend(
            f"{name}: uses {term!r} but never {ko!r}"
            for term, ko in TERMS.items()
            if term in english and ko not in korean
        )
        wrong.extend(
            f"{name}: {never!r} in {m.string[:80]!r}"
            for m in units
            for never in NEVER
            if never in _words(m.string)
        )
    assert not wrong, "\n".join(wrong[:20])


def test_the_korean_sources_are_what_the_catalogues_make():
    """ko/ is generated (committed, so that the Korean notebooks launch from the repository): it must be
    exactly what `tools/i18n.py build` makes from the English pages and the catalogues."""
    stale = [p for p, data in i18n.korean_files().items() if not p.exists() or p.read_bytes() != data]
    assert not stale, f"run `python tools/i18n.py build`: {[str(p.relative_to(ROOT)) for p in stale[:5]]}"
