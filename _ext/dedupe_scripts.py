"""Drop repeated inline scripts from every page.

sphinx-thebe and sphinx-togglebutton add their inline configuration scripts each time the environment
is read; Jupyter Book reads it twice, so pages declared `const THEBE_JS_URL` twice and the browser
reported "Identifier 'THEBE_JS_URL' has already been declared". Identical entries are kept once.
"""


def _dedupe(app, pagename, templatename, context, doctree):
    for key in ("script_files", "css_files"):
        files = context.get(key)
        if not files:
            continue
        seen, unique = set(), []
        for item in files:
            attributes = getattr(item, "attributes", {}) or {}
            identity = (
                str(getattr(item, "filename", item) or ""),
                tuple(sorted((k, str(v)) for k, v in attributes.items())),
            )
            if identity not in seen:
                seen.add(identity)
                unique.append(item)
        files[:] = unique  # in place: the builder's own list, whatever later handlers do


def setup(app):
    # html-page-context is emitted with emit_firstresult: run early, return None.
    app.connect("html-page-context", _dedupe, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
