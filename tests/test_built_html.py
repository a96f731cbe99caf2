"""Checks of the built book (`make book` first; `make test` does both, in that order).

The book must work offline: no page loads a script, stylesheet, font, image or frame from outside the
book; MathJax is served locally; every internal link and anchor resolves; every image has alt text;
notebook pages offer the .ipynb download.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml
from bs4 import BeautifulSoup

from conftest import HTML, ROOT, book_pages

pytestmark = pytest.mark.html
PAGES = sorted(HTML.rglob("*.html")) if HTML.exists() else []
BOOK_PAGES = book_pages()
EXTERNAL = re.compile(r"^(https?:)?//", re.IGNORECASE)
CSS_URL = re.compile(r"url\(\s*['\"]?((?:https?:)?//[^'\")]+)")


@cache
def soup(path: Path) -> BeautifulSoup:
    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


def page_ids(paths):
    return [p.relative_to(HTML).as_posix() for p in paths]


def test_the_book_was_built():
    assert (HTML / "index.html").exists(), "run `make book` first"
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    expected = [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]
    missing = [f for f in expected if not (HTML / f"{f}.html").exists()]
    assert not missing, f"pages missing from the build: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=page_ids(PAGES))
def test_nothing_is_loaded_from_outside(page):
    doc = soup(page)
    loaded = []
    for tag, attr in (
        ("script", "src"),
        ("img", "src"),
        ("iframe", "src"),
        ("source", "src"),
        ("audio", "src"),
        ("video", "src"),
        ("embed", "src"),
        ("object", "data"),
    ):
        loaded += [t.get(attr) for t in doc.find_all(tag) if t.get(attr)]
    for link in doc.find_all("link"):
        rel = " ".join(link.get("rel", []))
        if any(word in rel for word in ("stylesheet", "preload", "icon", "modulepreload", "manifest")):
            loaded.append(link.get("href", ""))
    for style in doc.find_all("style"):
        loaded += CSS_URL.findall(style.get_text())
    external = [url for url in loaded if EXTERNAL.match(url)]
    assert not external, f"{page.name} loads from outside the book: {external}"


def test_stylesheets_load_nothing_from_outside():
    offenders = {}
    for css in HTML.rglob("*.css"):
        found = CSS_URL.findall(css.read_text(encoding="utf-8", errors="replace"))
        if found:
            offenders[css.relative_to(HTML).as_posix()] = found
    assert not offenders, offenders


@pytest.mark.parametrize("page", BOOK_PAGES, ids=page_ids(BOOK_PAGES))
def test_mathjax_is_local_and_title_and_copyright_are_set(page):
    doc = soup(page)
    mathjax = [s["src"] for s in doc.find_all("script", src=True) if "mathjax" in s["src"].lower()]
    has_math = bool(doc.select(".math, span.math, div.math"))
    assert mathjax or not has_math, f"{page.name} has maths but loads no MathJax"
    assert all(not EXTERNAL.match(s) for s in mathjax), f"{page.name}: MathJax not served locally: {mathjax}"
    for src in mathjax:
        assert (page.parent / urlsplit(src).path).resolve().exists(), f"{page.name}: {src} is missing"
    korean = page.relative_to(HTML).parts[0] == "ko"
    assert ("한 걸음씩 배우는 어텐션" if korean else "Attention, step by step") in doc.title.get_text()
    footer = doc.get_text(" ")
    assert "2026" in footer and "attnbook authors" in footer


def _target(page: Path, href: str) -> tuple[Path, str] | None:
    parts = urlsplit(href)
    if parts.scheme or parts.netloc or href.startswith(("mailto:", "javascript:")):
        return None
    path = page if not parts.path else (page.parent / unquote(parts.path)).resolve()
    if path.is_dir():
        path = path / "index.html"
    return path, unquote(parts.fragment)


@pytest.mark.parametrize("page", BOOK_PAGES, ids=page_ids(BOOK_PAGES))
def test_internal_links_and_anchors_resolve(page):
    broken = []
    for a in soup(page).find_all("a", href=True):
        target = _target(page, a["href"])
        if target is None:
            continue
        path, fragment = target
        if not path.exists():
            broken.append(a["href"])
        elif fragment and path.suffix == ".html" and not soup(path).find(id=fragment):
            broken.append(a["href"])
    assert not broken, f"{page.name}: broken internal links {broken}"


@pytest.mark.parametrize("page", BOOK_PAGES, ids=page_ids(BOOK_PAGES))
def test_images_exist_and_have_alt_text(page):
    for img in soup(page).find_all("img"):
        src = img.get("src", "")
        if src.startswith("data:") or "logo" in " ".join(img.get("class", [])):
            continue
        assert (page.parent / unquote(urlsplit(src).path)).exists(), f"{page.name}: missing image {src}"
        assert img.get("alt", "").strip(), f"{page.name}: image without alt text: {src}"


@pytest.mark.parametrize(
    "page",
    [p for p in BOOK_PAGES if p.relative_to(HTML).parts[0] in ("chapters", "exercises", "solutions")],
    ids=lambda p: p.relative_to(HTML).as_posix(),
)
def test_notebook_pages_offer_the_ipynb_download(page):
    links = [
        a["href"]
        for a in soup(page).find_all("a", href=True)
        if a["href"].endswith(".ipynb") and "_sources" in a["href"]
    ]
    assert links, f"{page.name}: no .ipynb download"
    assert (page.parent / links[0]).resolve().exists()


def test_no_citation_is_left_unresolved():
    for page in BOOK_PAGES:
        text = soup(page).get_text(" ")
        assert "{cite}" not in text and "[?]" not in text, f"{page.name}: unresolved citation"


CHAPTER_PAGES = [p for p in BOOK_PAGES if p.relative_to(HTML).parts[0] == "chapters"]


@pytest.mark.parametrize("page", CHAPTER_PAGES, ids=page_ids(CHAPTER_PAGES))
def test_chapters_have_colab_and_binder_buttons_for_their_own_notebook(page):
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    repository = urlsplit(config["repository"]["url"]).path.strip("/")
    notebook = f"chapters/{page.stem}.ipynb"
    hrefs = [a["href"] for a in soup(page).find_all("a", href=True)]
    assert any(
        h.startswith("https://colab.research.google.com/github/") and repository in h and h.endswith(notebook)
        for h in hrefs
    )
    assert any(h.startswith("https://mybinder.org/") and repository in h and notebook in h for h in hrefs)


@pytest.mark.parametrize("page", CHAPTER_PAGES, ids=page_ids(CHAPTER_PAGES))
def test_each_exercise_set_is_reachable_from_its_chapter_and_leads_to_its_solution(page):
    number = page.stem[:2]
    sets = sorted((ROOT / "exercises").glob(f"{number}_*.ipynb"))
    article = soup(page).select_one("article")
    links = [a["href"] for a in article.find_all("a", href=True)]
    for exercise in sets:
        assert any(h.split("#")[0].endswith(f"exercises/{exercise.stem}.html") for h in links), (
            f"{page.name} does not link to its exercise set {exercise.name} in its text"
        )
        exercise_page = HTML / "exercises" / f"{exercise.stem}.html"
        body = [a["href"] for a in soup(exercise_page).select_one("article").find_all("a", href=True)]
        assert any(h.split("#")[0].endswith(f"solutions/{exercise.stem}.html") for h in body), (
            f"{exercise_page.name} does not link to its solution"
        )
