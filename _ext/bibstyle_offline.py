"""A pybtex style that prints DOIs and arXiv ids as text, not links: the book makes no external links
from its bibliography, so that every link in it works offline."""

from pybtex.plugin import register_plugin
from pybtex.style.formatting.alpha import Style as AlphaStyle
from pybtex.style.template import field, join


class OfflineStyle(AlphaStyle):
    def format_doi(self, e):
        return join["doi:", field("doi", raw=True)]

    def format_eprint(self, e):
        return join["arXiv:", field("eprint", raw=True)]

    def format_url(self, e):
        return join["URL: ", field("url", raw=True)]


def setup(app):
    register_plugin("pybtex.style.formatting", "offline", OfflineStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
