"""The built book in a real browser: Debian's Chromium driven by Playwright (no downloaded browser).

Every page is served from _build/html on localhost and loaded: no console errors, no request leaving the
machine, every formula typeset by MathJax, every image loaded with alt text. Then the search box, the
previous/next links and the notebook download are used as a reader would. Screenshots of the landing
page, one chapter and one exercise go to test-artifacts/screenshots/ for a person to look at.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import HTML, ROOT, book_pages

pytestmark = pytest.mark.html
SHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PAGES = [p.relative_to(HTML).as_posix() for p in book_pages()]
#: the English book's pages (the Korean edition, under ko/, is walked by tests/test_korean_book.py)
ENGLISH = [p for p in PAGES if not p.startswith("ko/")]
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM:
        pytest.fail("Chromium is not installed: `apt-get install chromium` (.ci/run does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        browser.close()


class Visit:
    """One page load with its console errors and outgoing requests recorded."""

    def __init__(self, browser, server: str, path: str, width: int = 1280):
        self.context = browser.new_context(viewport={"width": width, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.outside: list[str] = []
        self.failed: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        # Every local request must succeed (a missing favicon is a 404 on every page load).
        self.page.on(
            "response", lambda r: self.failed.append(f"{r.status} {r.url}") if r.status >= 400 else None
        )
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.route("**/*", self._route)
        self.page.goto(f"{server}/{path}", wait_until="load")
        # MathJax typesets asynchronously: wait for it where it is loaded.
        self.page.evaluate(
            "() => (window.MathJax && MathJax.startup && MathJax.startup.promise) ? MathJax.startup.promise : null"
        )

    def _route(self, route):
        host = urlsplit(route.request.url).hostname
        if host in ("127.0.0.1", "localhost") or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort()

    def close(self):
        self.context.close()


@pytest.mark.parametrize("path", PAGES)
def test_page_loads_cleanly_with_maths_and_figures(browser, server, path):
    visit = Visit(browser, server, path)
    page = visit.page
    try:
        assert not visit.outside, f"{path}: requests left the machine: {visit.outside}"
        assert not visit.failed, f"{path}: requests that failed: {visit.failed}"
        assert not visit.errors, f"{path}: console errors: {visit.errors}"
        # Code must be readable without scrolling sideways in the book's column at 1280 px.
        scrolling = page.evaluate(
            "() => [...document.querySelectorAll('div.cell_input pre, div.highlight pre')]"
            ".filter(p => p.scrollWidth > p.clientWidth + 1)"
            ".map(p => p.textContent.split('\\n').reduce((a, b) => b.length > a.length ? b : a, ''))"
        )
        assert not scrolling, f"{path}: code blocks that scroll sideways; longest lines: {scrolling[:5]}"
        harness = page.evaluate(
            "() => [...document.querySelectorAll('article.bd-article pre')]"
            ".map(p => p.textContent).filter(t => /NBVAL_|nbval-/.test(t)).map(t => t.slice(0, 80))"
        )
        assert not harness, f"{path}: test-harness comments shown to readers: {harness}"
        untypeset = page.evaluate(
            "() => [...document.querySelectorAll('.math')].filter(e => !e.querySelector('mjx-container'))"
            ".map(e => e.textContent.slice(0, 60))"
        )
        assert not untypeset, f"{path}: formulas left as raw TeX: {untypeset[:5]}"
        images = page.evaluate(
            "() => [...document.querySelectorAll('article img, main img')].map(i => "
            "({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0, alt: (i.alt || '').trim()}))"
        )
        broken = [i["src"] for i in images if not i["ok"]]
        no_alt = [i["src"] for i in images if not i["alt"]]
        assert not broken, f"{path}: images that did not load: {broken}"
        assert not no_alt, f"{path}: images without alt text: {no_alt}"
        smallest = page.evaluate(
            "() => Math.min(...[...document.querySelectorAll('article.bd-article p')]"
            ".map(p => parseFloat(getComputedStyle(p).fontSize)), 99)"
        )
        assert smallest >= 14, f"{path}: body text of {smallest}px is too small to read at 1280 px width"
        levels = page.evaluate(
            "() => [...document.querySelectorAll('article.bd-article :is(h1, h2, h3, h4, h5)')]"
            ".map(h => Number(h.tagName[1]))"
        )
        assert levels.count(1) == 1, f"{path}: headings {levels}"
        assert all(b <= a + 1 for a, b in zip(levels, levels[1:])), f"{path}: heading levels skip: {levels}"
    finally:
        visit.close()


def test_previous_and_next_links_walk_the_whole_book(browser, server):
    visit = Visit(browser, server, "book/intro.html")
    seen = ["book/intro.html"]
    try:
        for _ in range(len(ENGLISH) + 1):
            nxt = visit.page.query_selector("a.right-next")
            if nxt is None:
                break
            nxt.click()
            visit.page.wait_for_load_state("load")
            current = urlsplit(visit.page.url).path.lstrip("/")
            assert current not in seen, f"next link loops back to {current}"
            seen.append(current)
        assert not visit.errors and not visit.outside
    finally:
        visit.close()
    assert len(seen) == len(ENGLISH), f"next links reach {len(seen)} of {len(ENGLISH)} pages: {seen}"


def test_search_finds_a_term_from_a_chapter(browser, server):
    visit = Visit(browser, server, "search.html?q=attention+value")
    try:
        visit.page.wait_for_selector("#search-results li, ul.search li", timeout=15000)
        hits = visit.page.eval_on_selector_all(
            "#search-results li a, ul.search li a", "els => els.map(e => e.getAttribute('href'))"
        )
        assert any("chapters/" in h for h in hits), hits
        assert not visit.outside
    finally:
        visit.close()


def test_notebook_download_returns_the_notebook(browser, server):
    chapter = next(p for p in PAGES if p.startswith("chapters/"))
    visit = Visit(browser, server, chapter)
    try:
        href = visit.page.get_attribute("a.btn-download-source-button", "href")
        assert href and href.endswith(".ipynb")
        response = visit.page.request.get(f"{server}/{Path(chapter).parent.as_posix()}/{href}")
        assert response.ok
        assert json.loads(response.text())["cells"]
    finally:
        visit.close()


def test_screenshots_for_a_person_to_look_at(browser, server):
    SHOTS.mkdir(parents=True, exist_ok=True)
    chapter = next(p for p in PAGES if p.startswith("chapters/"))
    exercise = next(p for p in PAGES if p.startswith("exercises/"))
    for name, path in (("landing", "book/intro.html"), ("chapter", chapter), ("exercise", exercise)):
        visit = Visit(browser, server, path)
        try:
            target = SHOTS / f"{name}.png"
            visit.page.screenshot(path=str(target), full_page=False)
            assert target.stat().st_size > 10_000
        finally:
            visit.close()
