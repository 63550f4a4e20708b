"""Sphinx extension: what the book's website needs beyond the theme (checked by ``tests/test_site.py``).

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
3. ``site_static/site_fixes.css``: layout (every wide equation, table and code block scrolls in its
   own box with a fading edge, never clipped), the icons (a few inline SVG masks instead of the
   theme's 1.5 MB ``fontawesome.js``), print CSS for the cheat sheet.
   ``site_static/site_fixes.js``: the menu buttons (both themes bind their click handler to the
   first ``.primary-toggle``/``.secondary-toggle`` only, a hidden duplicate in the page header).
4. Maths is typeset when the site is built, not in the reader's browser: MathJax 3 (the copy
   shipped by the ``sphinx-mathjax-offline`` package) runs under Node.js over every page and writes
   CommonHTML into it. A page then loads no MathJax script at all (1.2 MB saved per page), only
   the few MathJax woff fonts it uses, copied to ``_static/mathjax/woff-v2``. A TeX error or an
   undefined macro is a build warning (``-W`` makes it an error). Needs ``node`` on the PATH.
5. Weight: the theme's ``fontawesome.js`` (1.5 MB), its icon fonts, the ``.map`` files and, on pages
   other than the search page, the 95 kB search index are removed from the built site.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from sphinx.util import logging

STATIC = Path(__file__).resolve().parent / "site_static"
LOG = logging.getLogger(__name__)
FONT_DIR = "_static/mathjax/woff-v2"
RENDERED_MARK = 'id="MJX-CHTML-styles"'


def _mathjax_source() -> Path | None:
    """The MathJax 3 ``es5`` folder shipped by sphinx-mathjax-offline (not used as a Sphinx extension)."""
    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "static" / "mathjax"
    return path if (path / "node-main.js").is_file() else None


# ----------------------------------------------------------------------------- page context
def _fix_scripts(app, pagename, templatename, context, doctree):
    files = context.get("script_files")
    if not isinstance(files, list):
        return
    seen, kept = set(), []
    for js in files:
        name = str(getattr(js, "filename", js) or "")
        body = str(getattr(js, "attributes", {}).get("body", ""))
        if "mathjax" in name.lower() or body.lstrip().startswith("window.MathJax"):
            continue  # maths is typeset at build time (see _typeset_math)
        key = (name, getattr(js, "priority", 0), tuple(sorted(getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(js)
    files[:] = kept


def _config(app, config):
    config.html_context = {**(config.html_context or {})}
    config.html_context.setdefault("default_mode", "light")
    config.html_static_path = [*config.html_static_path, str(STATIC)]
    if not config.html_favicon:
        config.html_favicon = str(STATIC / "favicon.svg")


# ----------------------------------------------------------------------------- build-time MathJax
_NODE_RENDER = r"""
// Typeset one HTML page with MathJax 3 (CommonHTML output) and write it back.
const fs = require('fs');
const [MJ, jobFile] = process.argv.slice(2);
const job = JSON.parse(fs.readFileSync(jobFile, 'utf8'));
require(MJ + '/node-main.js').init({
  loader: {paths: {mathjax: MJ}, load: ['adaptors/liteDOM', 'input/tex', 'output/chtml'], require: require},
  tex: job.tex,
  options: job.options,
  chtml: {fontURL: 'MJX-FONT-URL', adaptiveCSS: true},
  startup: {typeset: false}
}).then(async (MathJax) => {
  const adaptor = MathJax.startup.adaptor;
  const html = fs.readFileSync(job.file, 'utf8');
  const doc = MathJax.startup.getDocument(html);
  await MathJax._.util.Retries.handleRetriesFor(() => doc.render());
  const problems = [];
  let n = 0;
  for (const item of doc.math) {
    n++;
    const mml = MathJax.startup.toMML(item.root);
    if (/<merror/.test(mml)) problems.push('TeX error in ' + JSON.stringify(String(item.math).slice(0, 80)));
    const m = mml.match(/<mtext mathcolor="red">(\\[^<]*)<\/mtext>/);
    if (m) problems.push('undefined macro ' + m[1] + ' in ' + JSON.stringify(String(item.math).slice(0, 80)));
    if (item.typesetRoot) {
      // screen readers: the CommonHTML glyphs are CSS content, so say the TeX source instead
      adaptor.setAttribute(item.typesetRoot, 'role', 'math');
      adaptor.setAttribute(item.typesetRoot, 'aria-label', String(item.math).trim());
    }
  }
  if (n) {
    const out = adaptor.doctype(doc.document) + '\n' + adaptor.outerHTML(adaptor.root(doc.document));
    fs.writeFileSync(job.file, out.split('MJX-FONT-URL').join(job.fontURL));
  }
  process.stdout.write(JSON.stringify({math: n, problems}));
}).catch((err) => { process.stdout.write(JSON.stringify({math: 0, problems: ['MathJax failed: ' + err]})); });
"""


def _typeset_math(app, outdir: Path) -> None:
    src = _mathjax_source()
    node = shutil.which("node") or shutil.which("nodejs")
    if src is None or node is None:
        LOG.warning("maths not typeset: %s missing (install it: %s)",
                    "the sphinx-mathjax-offline package" if src is None else "node",
                    "pip install -r requirements.txt" if src is None else "apt-get install nodejs")
        return
    fonts = outdir / FONT_DIR
    fonts.mkdir(parents=True, exist_ok=True)
    for woff in (src / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"):
        shutil.copyfile(woff, fonts / woff.name)
    cfg = app.config.mathjax3_config or {}
    tex = dict(cfg.get("tex", {}))
    options = {"processHtmlClass": "tex2jax_process|mathjax_process|math|output_area",
               **cfg.get("options", {})}
    with tempfile.TemporaryDirectory(prefix="site-mathjax-") as tmp:
        script = Path(tmp) / "render.js"
        script.write_text(_NODE_RENDER)
        for page in sorted(outdir.rglob("*.html")):
            rel = page.relative_to(outdir)
            if rel.parts[0] in ("_static", "_sources", "_modules", "_images"):
                continue
            text = page.read_text("utf-8")
            if RENDERED_MARK in text or not re.search(r"\\\(|\\\[|\$\$|\\begin\{", text):
                continue
            depth = len(rel.parts) - 1
            job = Path(tmp) / "job.json"
            job.write_text(json.dumps({"file": str(page), "tex": tex, "options": options,
                                       "fontURL": "../" * depth + FONT_DIR}))
            res = subprocess.run([node, str(script), str(src), str(job)], capture_output=True, text=True,
                                 timeout=600)
            try:
                report = json.loads(res.stdout.strip().splitlines()[-1])
            except (IndexError, json.JSONDecodeError):
                LOG.warning("maths of %s not typeset: node said %s", rel, (res.stderr or res.stdout)[-300:])
                continue
            for p in report["problems"]:
                LOG.warning("%s: %s", rel, p)


# ----------------------------------------------------------------------------- weight
_FONTAWESOME_TAG = re.compile(r'\s*<script[^>]*src="[^"]*_static/scripts/fontawesome\.js[^"]*"[^>]*>\s*</script>')
_SEARCH_TAGS = re.compile(r'\s*<script[^>]*src="[^"]*(?:_static/searchtools\.js|_static/language_data\.js|searchindex\.js)[^"]*"[^>]*>\s*</script>')


def _slim(outdir: Path) -> None:
    for page in outdir.rglob("*.html"):
        text = page.read_text("utf-8")
        new = _FONTAWESOME_TAG.sub("", text)
        if page.name != "search.html":
            new = _SEARCH_TAGS.sub("", new)
        if new != text:
            page.write_text(new, "utf-8")
    static = outdir / "_static"
    for junk in {*static.rglob("*.map"), *(static / "scripts").glob("fontawesome.js*")}:
        junk.unlink(missing_ok=True)
    shutil.rmtree(static / "vendor" / "fontawesome", ignore_errors=True)


def _finished(app, exc):
    if exc is not None or app.builder.format != "html":
        return
    outdir = Path(app.outdir)
    _slim(outdir)
    _typeset_math(app, outdir)


def setup(app):
    app.connect("config-inited", _config)
    app.add_css_file("site_fixes.css")
    app.add_js_file("site_fixes.js", loading_method="defer")
    app.connect("html-page-context", _fix_scripts, priority=900)
    app.connect("build-finished", _finished, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
