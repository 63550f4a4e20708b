"""Sphinx extension: the three things the book's website needs that no Sphinx or theme option gives.

Loaded from ``_config.yml`` (``sphinx: local_extensions: site_fixes: scripts``); everything else (static files,
the site's CSS and JavaScript, the favicon, the theme's colour mode) is an option in ``_config.yml``.

1. Maths is typeset when the site is built, not in the reader's browser. MathJax 3 (the copy shipped by the
   pinned ``sphinx-mathjax-offline`` package) runs under Node.js over every built page and writes CommonHTML
   into it; a page then loads no MathJax script, only the MathJax fonts its glyphs use, copied to
   ``_static/mathjax/woff-v2``. Each typeset formula keeps its TeX source for screen readers
   (``role="math"`` and ``aria-label``). A TeX error or an undefined macro is a build warning (``-W``
   makes it an error). Needs ``node`` on the PATH.
2. The signatures the notation page quotes are the package's own: ``{{ sig_NAME }}`` (a MyST substitution,
   e.g. ``{{ sig_q_posterior }}``) is set here from ``inspect.signature`` of ``ddpm.NAME`` for every name in
   ``SIGNATURES``, so a changed signature changes the page.
3. Sphinx 7.4 registers an inline script added after the builder starts (``app.add_js_file(None, body=...)``,
   as sphinx-thebe does) twice, under the names ``None`` and ``''``; the second copy redeclares a ``const``
   and is a JavaScript error on every page. The repeats are dropped, with the browser MathJax script (1).

The cheat sheet's PDF is not made here: ``make cheatsheet`` (``scripts/cheatsheet_pdf.py``).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from sphinx.util import logging

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


SIGNATURES = ("q_posterior", "predict_x0", "ddim_sigma", "timesteps", "q_sample", "q_step")


def signature_text(name: str) -> str:
    """``ddpm.NAME``'s call signature as a reader writes it: parameter names, ``*``, defaults of keyword-only ones."""
    import inspect

    import ddpm

    parts, star = [], False
    for p in inspect.signature(getattr(ddpm, name)).parameters.values():
        if p.kind is p.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        parts.append(p.name if p.default is p.empty else f"{p.name}={p.default!r}")
    return f"{name}({', '.join(parts)})"


def _signatures(app, config):
    subs = dict(config.myst_substitutions or {})
    for name in SIGNATURES:
        subs.setdefault(f"sig_{name}", f"`{signature_text(name)}`")
    config.myst_substitutions = subs


def _fix_scripts(app, pagename, templatename, context, doctree):
    files = context.get("script_files")
    if not isinstance(files, list):
        return
    seen, kept = set(), []
    for js in files:
        name = str(getattr(js, "filename", js) or "")
        attrs = getattr(js, "attributes", {})
        if "mathjax" in name.lower() or str(attrs.get("body", "")).lstrip().startswith("window.MathJax"):
            continue  # maths is typeset at build time
        key = (name, getattr(js, "priority", 0), tuple(sorted(attrs.items())))
        if key not in seen:
            seen.add(key)
            kept.append(js)
    files[:] = kept


_NODE_RENDER = r"""
// Typeset one HTML page with MathJax 3 (CommonHTML output) and write it back.
const fs = require('fs');
const [MJ, jobFile] = process.argv.slice(2);
const job = JSON.parse(fs.readFileSync(jobFile, 'utf8'));
require(MJ + '/node-main.js').init({
  loader: {paths: {mathjax: MJ}, load: ['adaptors/liteDOM', 'input/tex', 'output/chtml'], require: require},
  tex: job.tex, options: job.options,
  chtml: {fontURL: 'MJX-FONT-URL', adaptiveCSS: true},
  startup: {typeset: false}
}).then(async (MathJax) => {
  const adaptor = MathJax.startup.adaptor;
  const results = [];
  for (const file of job.files) {
    const doc = MathJax.startup.getDocument(fs.readFileSync(file.path, 'utf8'));
    await MathJax._.util.Retries.handleRetriesFor(() => doc.render());
    const problems = [];
    let n = 0;
    for (const item of doc.math) {
      n++;
      const mml = MathJax.startup.toMML(item.root);
      if (/<merror/.test(mml)) problems.push('TeX error in ' + JSON.stringify(String(item.math).slice(0, 80)));
      const m = mml.match(/<mtext mathcolor="red">(\\[^<]*)<\/mtext>/);
      if (m) problems.push('undefined macro ' + m[1] + ' in ' + JSON.stringify(String(item.math).slice(0, 80)));
      if (item.typesetRoot) {  // screen readers: the glyphs are CSS content, so they read the TeX source
        adaptor.setAttribute(item.typesetRoot, 'role', 'math');
        adaptor.setAttribute(item.typesetRoot, 'aria-label', String(item.math).trim());
      }
    }
    if (n) {
      const out = adaptor.doctype(doc.document) + '\n' + adaptor.outerHTML(adaptor.root(doc.document));
      fs.writeFileSync(file.path, out.split('MJX-FONT-URL').join(file.fontURL));
    }
    results.push({path: file.path, math: n, problems});
    MathJax.startup.output.clearCache && MathJax.startup.output.clearCache();
  }
  process.stdout.write(JSON.stringify(results));
}).catch((err) => { process.stdout.write(JSON.stringify([{path: '', math: 0, problems: ['MathJax failed: ' + err]}])); });
"""


def _typeset_math(app, exc) -> None:
    if exc is not None or app.builder.format != "html":
        return
    outdir = Path(app.outdir)
    src = _mathjax_source()
    node = shutil.which("node") or shutil.which("nodejs")
    if src is None or node is None:
        LOG.warning("maths not typeset: %s missing", "sphinx-mathjax-offline" if src is None else "node (apt-get install nodejs)")
        return
    fonts = outdir / FONT_DIR
    fonts.mkdir(parents=True, exist_ok=True)
    for woff in (src / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"):
        shutil.copyfile(woff, fonts / woff.name)
    cfg = app.config.mathjax3_config or {}
    options = {"processHtmlClass": "tex2jax_process|mathjax_process|math|output_area", **cfg.get("options", {})}
    files = []
    for page in sorted(outdir.rglob("*.html")):
        rel = page.relative_to(outdir)
        if rel.parts[0] in ("_static", "_sources", "_modules", "_images"):
            continue
        text = page.read_text("utf-8")
        if RENDERED_MARK not in text and re.search(r"\\\(|\\\[|\$\$|\\begin\{", text):
            files.append({"path": str(page), "fontURL": "../" * (len(rel.parts) - 1) + FONT_DIR})
    if not files:
        return
    with tempfile.TemporaryDirectory(prefix="site-mathjax-") as tmp:
        script, job = Path(tmp) / "render.js", Path(tmp) / "job.json"
        script.write_text(_NODE_RENDER)
        job.write_text(json.dumps({"files": files, "tex": dict(cfg.get("tex", {})), "options": options}))
        res = subprocess.run([node, str(script), str(src), str(job)], capture_output=True, text=True, timeout=1800)
    try:
        report = json.loads(res.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        LOG.warning("maths not typeset: node said %s", (res.stderr or res.stdout)[-300:])
        return
    for page in report:
        for p in page["problems"]:
            LOG.warning("%s: %s", Path(page["path"]).relative_to(outdir) if page["path"] else "MathJax", p)


def setup(app):
    app.connect("config-inited", _signatures)
    app.connect("html-page-context", _fix_scripts, priority=900)
    app.connect("build-finished", _typeset_math, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
