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
5. The cheat sheet is printed (headless Chromium, the print CSS of ``site_fixes.css``: A4) to
   ``cheatsheet.pdf`` in the site's root and to ``_build/cheatsheet.pdf``; its page links the PDF.
   ``python scripts/site_fixes.py cheatsheet`` (``make cheatsheet``) prints it again.
6. Weight: the theme's ``fontawesome.js`` (1.5 MB), its icon fonts and glyph table, the ``.map`` files
   are removed from the built site; so are the 95 kB search index on pages other than the search page
   and sphinx-design's style sheet on pages that use none of its components.
7. Compaction, the same page in fewer bytes (a page loads at most 1.5 MB, ``tests/test_site.py``):
   highlighted code loses the ``<span>`` wrappers of tokens drawn exactly like plain code (names,
   punctuation, spaces: about a third of a chapter's HTML); the build-time MathJax markup is shortened
   (its style sheet minified, the font size set once, unused class names and attributes dropped, glyph
   classes renamed in markup and sheet alike); the theme's style sheets lose the rules naming a class
   that no page or script of the site contains (310 kB of pydata-sphinx-theme.css become about 100 kB);
   figures are stored as 256-colour PNGs where that changes a pixel by under half a grey level on
   average (a third of the bytes). Layout, colours and fonts of every element are unchanged.
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


_DESIGN_TAGS = re.compile(r'\s*<(?:link[^>]*href="[^"]*_static/sphinx-design\.min\.css[^"]*"[^>]*>'
                          r'|script[^>]*src="[^"]*_static/design-tabs\.js[^"]*"[^>]*>\s*</script>)')
_FA_GLYPHS = re.compile(r'(?:\.fa-[a-z0-9-]+:(?::)?(?:before|after),?)+\{content:"[^"]*"\}')


def _slim(outdir: Path) -> None:
    for page in outdir.rglob("*.html"):
        text = page.read_text("utf-8")
        new = _FONTAWESOME_TAG.sub("", text)
        if page.name != "search.html":
            new = _SEARCH_TAGS.sub("", new)
        if not re.search(r'class="(?:[^"]* )?sd-', new):  # sphinx-design's 55 kB, on pages that use it only
            new = _DESIGN_TAGS.sub("", new)
        if new != text:
            page.write_text(new, "utf-8")
    static = outdir / "_static"
    # the Font Awesome glyph table (".fa-xxx:before{content:...}", ~90 kB) of the theme's CSS: unused, the
    # icons are masks (site_fixes.css)
    for css in (static / "styles").glob("pydata-sphinx-theme*.css"):
        text = css.read_text("utf-8")
        new = _FA_GLYPHS.sub("", text)
        if new != text:
            css.write_text(new, "utf-8")
    for junk in {*static.rglob("*.map"), *(static / "scripts").glob("fontawesome.js*")}:
        junk.unlink(missing_ok=True)
    shutil.rmtree(static / "vendor" / "fontawesome", ignore_errors=True)


# ----------------------------------------------------------------------------- compaction (same page, fewer bytes)
def _css_blocks(text: str):
    """Top-level items of a style sheet: ``(prelude, body)`` for a rule or an at-rule with a block, ``(statement,
    None)`` for ``@import ...;``-style statements. Strings and comments are respected; comments are dropped."""
    i, n, start, depth, out = 0, len(text), 0, 0, []
    prelude, buf = "", []
    while i < n:
        ch = text[i]
        if ch == "/" and text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            buf.append(text[start:i])
            i = start = j
            continue
        if ch in "\"'":
            j = i + 1
            while j < n and text[j] != ch:
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            continue
        if ch == "{":
            if depth == 0:
                buf.append(text[start:i])
                prelude, buf = "".join(buf).strip(), []
                start = i + 1
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                buf.append(text[start:i])
                out.append((prelude, "".join(buf)))
                buf, start = [], i + 1
        elif ch == ";" and depth == 0:
            buf.append(text[start:i + 1])
            stmt = "".join(buf).strip()
            if stmt and stmt != ";":
                out.append((stmt, None))
            buf, start = [], i + 1
        i += 1
    return out


def _split_selectors(prelude: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(prelude):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(prelude[start:i].strip())
            start = i + 1
    parts.append(prelude[start:].strip())
    return [p for p in parts if p]


_CLASS_IN_SELECTOR = re.compile(r"\.(-?[_a-zA-Z][\w-]*)")


def _selector_may_match(selector: str, tokens: set[str]) -> bool:
    """False only if the selector names a class that no page or script of the site contains (it cannot match)."""
    if "\\" in selector:
        return True
    s = re.sub(r"\[[^\]]*\]", "", selector)  # attribute selectors may hold dots ([href$=".pdf"])
    while True:  # what :not()/:is()/:where()/:has() hold is not required to be present: ignore it
        t = re.sub(r"\([^()]*\)", "", s)
        if t == s:
            break
        s = t
    return all(c in tokens for c in _CLASS_IN_SELECTOR.findall(s))


_CONDITIONAL_AT = ("@media", "@supports", "@layer", "@container", "@document")


def purge_css(text: str, tokens: set[str]) -> str:
    """The style sheet minus the rules (and the selectors of a rule) that name a class found nowhere in the site.

    Conservative: a class counts as used if its name occurs as a word anywhere in any page or script (class
    names that scripts add at run time are words of the scripts). Rules without classes, ``@font-face``,
    ``@keyframes``, custom properties are kept as they are; conditional at-rules are purged inside."""
    out = []
    for prelude, body in _css_blocks(text):
        if body is None:
            out.append(prelude)
        elif prelude.startswith("@"):
            if prelude.lower().startswith(_CONDITIONAL_AT):
                inner = purge_css(body, tokens)
                if inner.strip():
                    out.append(f"{prelude}{{{inner}}}")
            else:
                out.append(f"{prelude}{{{body}}}")
        else:
            kept = [s for s in _split_selectors(prelude) if _selector_may_match(s, tokens)]
            if kept:
                out.append(f"{','.join(kept)}{{{body.strip()}}}")
    return "".join(out)


def _minify_css(text: str) -> str:
    """Whitespace and comments out of a (MathJax-written, pretty-printed) style sheet; meaning unchanged."""
    out = []
    for prelude, body in _css_blocks(text):
        prelude = re.sub(r"\s+", " ", prelude).strip()
        prelude = re.sub(r"\s*([,>])\s*", r"\1", prelude)
        if body is None:
            out.append(prelude)
        elif prelude.startswith("@") and prelude.lower().startswith(_CONDITIONAL_AT):
            out.append(f"{prelude}{{{_minify_css(body)}}}")
        else:
            decls = [re.sub(r"\s+", " ", d).strip() for d in body.split(";")]
            decls = [re.sub(r"^([\w-]+)\s*:\s*", r"\1:", d) for d in decls if d]
            out.append(f"{prelude}{{{';'.join(decls)}}}")
    return "".join(out)


_WORD = re.compile(r"[A-Za-z_][\w-]*")


def _site_tokens(outdir: Path) -> set[str]:
    tokens: set[str] = set()
    for path in [*outdir.rglob("*.html"), *(outdir / "_static").rglob("*.js")]:
        if "_sources" in path.parts:
            continue
        tokens.update(_WORD.findall(path.read_text("utf-8", "replace")))
    return tokens


PURGED_CSS = ("styles/pydata-sphinx-theme.css", "mystnb.*.css", "styles/sphinx-book-theme.css", "basic.css",
              "togglebutton.css", "copybutton.css", "sphinx-thebe.css", "exercise.css", "sphinx-design.min.css")


def _purge_site_css(outdir: Path) -> None:
    tokens = _site_tokens(outdir)
    static = outdir / "_static"
    for pattern in PURGED_CSS:
        for css in static.glob(pattern):
            text = css.read_text("utf-8")
            new = purge_css(text, tokens)
            if len(new) < len(text):
                css.write_text(new, "utf-8")


def _plain_code_classes(outdir: Path) -> set[str]:
    """Pygments token classes drawn exactly like plain code in both themes (colour = the block's colour, nothing
    else): their ``<span>`` wrappers can go. Classes any other style sheet of the site names are kept."""
    css = outdir / "_static" / "pygments.css"
    if not css.is_file():
        return set()
    rules: dict[tuple[str, str], str] = {}
    for prelude, body in _css_blocks(css.read_text("utf-8")):
        if body is None:
            continue
        decl = re.sub(r"\s+", "", body).rstrip(";")
        for sel in _split_selectors(prelude):
            m = re.fullmatch(r'html\[data-theme="(light|dark)"\]\s+\.highlight(?:\s+\.([\w-]+))?', sel.strip())
            if m:
                rules[(m.group(1), m.group(2) or "")] = decl
    plain = set()
    for theme in ("light", "dark"):
        base = re.search(r"(?:^|;)color:(#[0-9A-Fa-f]+)", rules.get((theme, ""), ""))
        if not base:
            return set()
        ok = {cls for (th, cls), decl in rules.items() if th == theme and cls and decl.lower() == f"color:{base.group(1).lower()}"}
        plain = ok if theme == "light" else plain & ok
    others = "".join(p.read_text("utf-8", "replace") for p in (outdir / "_static").rglob("*.css") if p.name != "pygments.css")
    return {c for c in plain if not re.search(rf"\.highlight\s+\.{re.escape(c)}\b", others)}


def compact_code(html: str, plain: set[str]) -> str:
    """Drop the ``<span class="n">x</span>`` wrappers of highlighted code whose class draws like plain text."""
    if not plain:
        return html
    alt = "|".join(sorted(map(re.escape, plain), key=len, reverse=True))
    span = re.compile(rf'<span class="(?:{alt})">([^<]*)</span>')

    def block(m):
        return span.sub(r"\1", m.group(0))

    return re.sub(r'<div class="highlight"><pre>.*?</pre></div>', block, html, flags=re.S)


_MJX_STYLE = re.compile(r'(<style id="MJX-CHTML-styles">)(.*?)(</style>)', re.S)
_MJX_CONTAINER = re.compile(r"<mjx-container\b.*?</mjx-container>", re.S)


def compact_math(html: str, site_css: str) -> str:
    """Shorter build-time MathJax markup, drawn the same:

    - the page's MathJax style sheet minified; ``[jax="CHTML"]`` dropped from its selectors (every container is
      CommonHTML), the font size MathJax writes on every container (the same on the whole page) set once there;
    - class names (``mjx-n``, ``mjx-i``, ...) and ``texclass`` attributes no style sheet uses removed;
    - glyph classes shortened (``mjx-c1D465 TEX-I`` to ``j1D465 TI``) with the sheet's rules renamed alike;
    - inline styles written without spaces.
    The TeX source (``aria-label``) and ``role="math"`` stay. Idempotent: a compacted page is left as it is."""
    m = _MJX_STYLE.search(html)
    if not m or 'jax="CHTML"' not in html:
        return html
    sheet = m.group(2)
    sizes = set(re.findall(r'<mjx-container class="MathJax" jax="CHTML" style="font-size: ([\d.]+%);"', html))
    n_cont = html.count("<mjx-container ")
    one_size = len(sizes) == 1 and len(re.findall(r'<mjx-container class="MathJax" jax="CHTML" style="font-size: [\d.]+%;"', html)) == n_cont
    used_css = sheet + site_css
    used = lambda cls: re.search(rf"\.{re.escape(cls)}(?![\w-])", used_css) is not None
    attr_used = lambda a: re.search(rf"\[{re.escape(a)}[\]=~|^$*]", used_css) is not None

    def fix_class(mc):
        keep = []
        for c in mc.group(1).split():
            g = re.fullmatch(r"mjx-c([0-9A-F]+)", c)
            t = re.fullmatch(r"TEX-([A-Z0-9]+)", c)
            if g:
                keep.append("j" + g.group(1))
            elif t:
                keep.append("T" + t.group(1))
            elif used(c):
                keep.append(c)
        return f' class="{" ".join(keep)}"' if keep else ""

    def fix_style(ms):
        decls = [re.sub(r"^([\w-]+)\s*:\s*", r"\1:", d.strip()) for d in ms.group(1).split(";") if d.strip()]
        return f' style="{";".join(decls)}"'

    drop_texclass = not attr_used("texclass")

    def container(mc):
        head, rest = mc.group(0).split(">", 1)
        head = head.replace(' jax="CHTML"', "")
        if not used("MathJax"):
            head = head.replace(' class="MathJax"', "")
        if one_size:
            head = re.sub(r' style="font-size: [\d.]+%;"', "", head)
        rest = re.sub(r' class="([^"]*)"', fix_class, rest)
        rest = re.sub(r' style="([^"]*)"', fix_style, rest)
        if drop_texclass:
            rest = re.sub(r' texclass="[^"]*"', "", rest)
        return head + ">" + rest

    html = _MJX_CONTAINER.sub(container, html)
    sheet = sheet.replace('[jax="CHTML"]', "")
    sheet = re.sub(r"\.mjx-c([0-9A-F]+)(?![\w-])", r".j\1", sheet)
    sheet = re.sub(r"\.TEX-([A-Z0-9]+)(?![\w-])", r".T\1", sheet)
    sheet = _minify_css(sheet)
    if one_size:
        sheet = f"mjx-container{{font-size:{sizes.pop()}}}" + sheet
    return html[:m.start()] + m.group(1) + sheet + m.group(3) + html[m.end():]


PNG_MAX_MEAN_ERROR = 0.5  # mean |change| per channel (of 255) a palette may cost a figure; else it stays as it is


def lighten_png(data: bytes) -> bytes | None:
    """The PNG as a 256-colour palette PNG if that is smaller and looks the same, else ``None``.

    Matplotlib writes figures as 32-bit RGBA; a line plot or a grid of grey digits has a few hundred distinct
    colours, mostly anti-aliasing. A median-cut palette (no dithering) keeps every pixel within a few grey levels
    (the mean change must stay under ``PNG_MAX_MEAN_ERROR``) at a third of the bytes. Images with transparency or
    already palette-coded are left alone."""
    import io

    from PIL import Image

    im = Image.open(io.BytesIO(data))
    if im.mode not in ("RGB", "RGBA") or getattr(im, "is_animated", False):
        return None
    if im.mode == "RGBA":
        if im.getchannel("A").getextrema() != (255, 255):
            return None
        im = im.convert("RGB")
    q = im.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    import numpy as np

    change = np.abs(np.asarray(im, dtype=np.int16) - np.asarray(q.convert("RGB"), dtype=np.int16)).mean()
    if change > PNG_MAX_MEAN_ERROR:
        return None
    buf = io.BytesIO()
    q.save(buf, "PNG", optimize=True)
    out = buf.getvalue()
    return out if len(out) < 0.9 * len(data) else None


def _lighten_images(outdir: Path) -> None:
    try:
        import PIL  # noqa: F401  (matplotlib's dependency: always there when the book builds)
    except ImportError:
        LOG.warning("figures not palette-compressed: Pillow missing")
        return
    for png in (outdir / "_images").glob("*.png"):
        data = png.read_bytes()
        light = lighten_png(data)
        if light is not None:
            png.write_bytes(light)


def _compact_pages(outdir: Path) -> None:
    plain = _plain_code_classes(outdir)
    site_css = "".join(p.read_text("utf-8", "replace") for p in (outdir / "_static").rglob("*.css"))
    for page in outdir.rglob("*.html"):
        if page.relative_to(outdir).parts[0] in ("_static", "_sources"):
            continue
        text = page.read_text("utf-8")
        new = compact_math(compact_code(text, plain), site_css)
        if new != text:
            page.write_text(new, "utf-8")


# ----------------------------------------------------------------------------- the cheat sheet as a PDF
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--no-pdf-header-footer",
                  "--disable-extensions", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1")
CHEATSHEET_PAGE = "book/cheatsheet.html"
CHEATSHEET_PDF = "cheatsheet.pdf"  # in the site's root: the cheat sheet page links ../cheatsheet.pdf


def print_cheatsheet(site: Path, pdf: Path | None = None) -> Path:
    """Print the built cheat sheet page with headless Chromium (its print CSS: A4) to ``site/cheatsheet.pdf``.

    ``pdf``, if given, receives a copy too. Raises ``FileNotFoundError`` (one line, naming the fix) if the
    page is not built or no Chromium is installed.
    """
    site = Path(site)
    page = site / CHEATSHEET_PAGE
    if not page.is_file():
        raise FileNotFoundError(f"{page} not built: run make book first")
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if exe is None:
        raise FileNotFoundError("no chromium to print the cheat sheet: apt-get install chromium")
    out = site / CHEATSHEET_PDF
    with tempfile.TemporaryDirectory(prefix="site-cheatsheet-") as profile:
        res = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--print-to-pdf={out}",
                              page.resolve().as_uri()], capture_output=True, text=True, timeout=300)
    if res.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
        raise RuntimeError(f"chromium could not print {page}: {res.stderr.strip()[-300:]}")
    if pdf is not None:
        Path(pdf).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out, pdf)
    return out


def _finished(app, exc):
    if exc is not None or app.builder.format != "html":
        return
    outdir = Path(app.outdir)
    # Sphinx does not always refresh a changed static file on an incremental build: copy ours again
    for f in STATIC.iterdir():
        if f.is_file():
            shutil.copyfile(f, outdir / "_static" / f.name)
    _slim(outdir)
    _typeset_math(app, outdir)
    _compact_pages(outdir)
    _purge_site_css(outdir)
    _lighten_images(outdir)
    if (outdir / CHEATSHEET_PAGE).is_file():
        try:
            print_cheatsheet(outdir, outdir.parent / CHEATSHEET_PDF)
        except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
            LOG.warning("cheat sheet PDF not written: %s", e)


def main(argv=None) -> int:
    """``python scripts/site_fixes.py cheatsheet [SITE]``: print the built cheat sheet (``make cheatsheet``)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "cheatsheet" or len(args) > 2:
        print("usage: python scripts/site_fixes.py cheatsheet [SITE_DIR (default _build/html)]", file=sys.stderr)
        return 2
    site = Path(args[1]) if len(args) == 2 else Path(__file__).resolve().parents[1] / "_build" / "html"
    try:
        out = print_cheatsheet(site, site.parent / CHEATSHEET_PDF)
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {site.parent / CHEATSHEET_PDF} (and {out})")
    return 0


def setup(app):
    app.connect("config-inited", _config)
    app.add_css_file("site_fixes.css")
    app.add_js_file("site_fixes.js", loading_method="defer")
    app.connect("html-page-context", _fix_scripts, priority=900)
    app.connect("build-finished", _finished, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    raise SystemExit(main())
