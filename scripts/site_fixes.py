"""Sphinx extension: small fixes the book's website needs (found by ``tests/test_site.py``).

Loaded from ``_config.yml``::

    sphinx:
      local_extensions:
        site_fixes: scripts

1. Sphinx 7.4 adds an inline script registered after the builder starts (``app.add_js_file(None,
   body=...)``, as sphinx-thebe and sphinx-togglebutton do) twice: once as filename ``None`` and
   once as ``''``, which its duplicate check treats as different files. sphinx-thebe's body
   declares ``const THEBE_JS_URL``, so the second copy is a JavaScript SyntaxError on every page.
   We drop the repeats.
2. pydata-sphinx-theme reads ``default_mode`` from the page context; unset, its script logs
   "Got invalid theme mode" on every page. We default it to ``light`` (readers can still switch).
3. ``site_static/site_fixes.css``: CSS the theme lacks (autodoc signatures wrap on a phone).
"""

from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).resolve().parent / "site_static"


def _dedup_scripts(app, pagename, templatename, context, doctree):
    files = context.get("script_files")
    if not isinstance(files, list):
        return
    seen, kept = set(), []
    for js in files:
        key = (str(getattr(js, "filename", js) or ""), getattr(js, "priority", 0),
               tuple(sorted(getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(js)
    files[:] = kept


def _config(app, config):
    config.html_context = {**(config.html_context or {})}
    config.html_context.setdefault("default_mode", "light")
    config.html_static_path = [*config.html_static_path, str(STATIC)]


def setup(app):
    app.connect("config-inited", _config)
    app.add_css_file("site_fixes.css")
    app.connect("html-page-context", _dedup_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
