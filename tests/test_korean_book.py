"""The Korean edition (한국어판) as built by `make book` into _build/html/ko, beside the English book.

Every page of the table of contents exists in Korean, says `lang="ko"`, links to the same page of the
English edition (and the English page back to it); the notebooks it offers for download and for Colab
are the Korean ones; Korean search finds words with their particles attached ("내적", "어텐션 가중치",
"교사 강요" find the chapters that teach them); the whole previous/next walk stays in Korean.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from bs4 import BeautifulSoup

from conftest import HTML, ROOT
from test_browser import Visit, browser, server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.html
KO = HTML / "ko"


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    return [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]


def soup(path: Path) -> BeautifulSoup:
    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


def test_every_page_of_the_toc_is_there_in_korean():
    missing = [f for f in toc_files() if not (KO / f"{f}.html").exists()]
    assert not missing, f"Korean pages missing (run `make book`): {missing}"


@pytest.mark.parametrize("name", toc_files())
def test_each_korean_page_is_korean_and_links_to_its_english_twin(name):
    page = soup(KO / f"{name}.html")
    assert page.html.get("lang") == "ko"
    text = page.select_one("article.bd-article").get_text(" ", strip=True)
    hangul = sum("\uac00" <= ch <= "\ud7a3" for ch in text)
    assert hangul > 50, f"{name}: only {hangul} Hangul characters in the Korean page"
    link = page.select_one("p.other-edition a")
    assert link is not None and link.get("hreflang") == "en"
    target = (KO / name).parent / link["href"]
    assert target.resolve() == (HTML / f"{name}.html").resolve()
    back = soup(HTML / f"{name}.html").select_one("p.other-edition a")
    assert back is not None and back.get("hreflang") == "ko"
    assert ((HTML / name).parent / back["href"]).resolve() == (KO / f"{name}.html").resolve()


@pytest.mark.parametrize("name", [f for f in toc_files() if f.startswith(("chapters/", "exercises/"))])
def test_korean_notebooks_download_and_launch_as_korean_notebooks(name):
    page = soup(KO / f"{name}.html")
    download = page.select_one("a.btn-download-source-button")
    assert download is not None
    notebook = json.loads(((KO / name).parent / download["href"]).read_text(encoding="utf-8"))
    markdown = " ".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "markdown")
    assert sum("\uac00" <= ch <= "\ud7a3" for ch in markdown) > 50
    if name.startswith("chapters/"):
        hrefs = [a["href"] for a in page.find_all("a", href=True)]
        assert any(
            h.startswith("https://colab.research.google.com/") and h.endswith(f"ko/{name}.ipynb")
            for h in hrefs
        ), hrefs


@pytest.mark.parametrize(
    "query, chapter",
    [
        ("내적", "chapters/04_attention_scores.html"),
        ("어텐션 가중치", "chapters/05_softmax_weights.html"),
        ("교사 강요", "chapters/01_seq2seq_rnn.html"),
    ],
)
def test_korean_search_finds_the_chapter_that_teaches_the_term(browser, server, query, chapter):  # noqa: F811
    visit = Visit(browser, server, f"ko/search.html?q={query}")
    try:
        visit.page.wait_for_selector("#search-results li, ul.search li", timeout=20000)
        hits = visit.page.eval_on_selector_all(
            "#search-results li a, ul.search li a", "els => els.map(e => e.getAttribute('href'))"
        )
        assert any(urlsplit(h).path.endswith(chapter) for h in hits), hits
        assert not visit.outside and not visit.errors
    finally:
        visit.close()


def test_previous_and_next_links_walk_the_whole_korean_book(browser, server):  # noqa: F811
    visit = Visit(browser, server, "ko/book/intro.html")
    seen = ["ko/book/intro.html"]
    try:
        for _ in range(len(toc_files()) + 1):
            nxt = visit.page.query_selector("a.right-next")
            if nxt is None:
                break
            nxt.click()
            visit.page.wait_for_load_state("load")
            current = urlsplit(visit.page.url).path.lstrip("/")
            assert current.startswith("ko/") and current not in seen, current
            seen.append(current)
    finally:
        visit.close()
    assert len(seen) == len(toc_files()), f"next links reach {len(seen)} of {len(toc_files())} pages"
