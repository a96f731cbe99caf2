"""A link on every page to the same page in the book's other edition (English <-> 한국어).

Configured in ``_config.yml`` under ``sphinx.config.other_edition``: ``prefix`` is the other edition's
root relative to this edition's root (``ko/`` from the English book, ``../`` from the Korean one, which is
built into ``_build/html/ko``), ``label`` the link text and ``lang`` its language. Without the setting the
extension adds nothing, so a book built alone has no link to a page that does not exist.
"""

from __future__ import annotations

from html import escape


def _add_link(app, pagename, templatename, context, doctree):
    edition = app.config.other_edition
    if not edition or doctree is None or "body" not in context:
        return
    root = context["pathto"]("", 1) if "pathto" in context else ""
    root = "" if root in ("#", "./") else root
    href = f"{root}{edition['prefix']}{pagename}.html"
    link = (
        f'<p class="other-edition"><a href="{escape(href)}" hreflang="{escape(edition["lang"])}" '
        f'lang="{escape(edition["lang"])}">{escape(edition["label"])}</a></p>'
    )
    context["body"] = link + context["body"]


def setup(app):
    app.add_config_value("other_edition", {}, "html")
    app.connect("html-page-context", _add_link)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
