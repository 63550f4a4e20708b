"""The built book, checked in a real browser (headless Debian chromium through Selenium), offline.

Run after the book is built (``make book``, i.e. ``jupyter-book build . -W``)::

    pytest tests/test_site.py

The site is ``_build/html`` unless ``DDPM_SITE_DIR`` names another built site. If it is not built
the tests FAIL ("run make book first"); they skip only when ``DDPM_SITE_SKIP_UNBUILT=1`` is set.
The site is served on 127.0.0.1 (a free port) and chromium runs with every host name except
127.0.0.1 resolving to nothing, as on a machine with no network. One browser session; every page of
``_toc.yml`` is loaded once at 1280 px and once at 390 px (phone) and the facts are shared by the tests:

- maths: typeset at build time (every ``.math`` node holds an ``mjx-container``, no MathJax error or
  undefined macro), no MathJax script shipped to the reader;
- every image has loaded; every request went to 127.0.0.1 (DevTools log); every internal link and
  local asset answers 200 and a link's ``#anchor`` exists; no console error;
- layout, at 1280 and 390 px: no equation, table, figure, image, code block or output sticks out of
  the text column unless it sits in its own horizontal scroll box that stays inside the column; no
  content is clipped by a box that hides overflow; a box that scrolls shows a cue (a gradient edge);
  at 1280 px no equation or table needs to scroll at all;
- every figure (image or animation) is in a ``<figure>`` with a caption and real alt text; in a
  chapter, figures, equations and exercises carry the chapter's number ("Fig. 3.2", "(4.7)");
- reader text (the article, title and sidebar) has no internal label (``INTERNAL_LABEL``) and no file
  names in titles;
- a page loads at most ``PAGE_BUDGET`` bytes (everything: HTML, scripts, styles, fonts, images);
- the menu (☰) and "On this page" open and close at 390 px, ☰ collapses the sidebar at 1280 px;
- the cheat sheet's PDF (``_build/cheatsheet.pdf``, also ``<site>/cheatsheet.pdf``, linked by its
  page) has at most 4 pages;
- the bibliography gives every paper a DOI or arXiv link; the API page copies no PyTorch boilerplate.

Plus: no HTML or CSS file of the site loads anything from another host; the search page finds
"Jensen" and names its results by title.
On failure a screenshot goes to ``<site>/../site-test-failures/`` (``_build/site-test-failures/``).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest

from scripts.toc import toc_files

ROOT = Path(__file__).resolve().parents[1]
SITE = Path(os.environ.get("DDPM_SITE_DIR", ROOT / "_build" / "html")).resolve()
FAILURES = SITE.parent / "site-test-failures"
SHOTS = os.environ.get("DDPM_SITE_SCREENSHOTS")  # a folder: save every page's screenshot there, pass or fail
CHROMIUM = os.environ.get("DDPM_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("DDPM_CHROMEDRIVER", "/usr/bin/chromedriver")
SEARCH_WORD = "Jensen"
PHONE_WIDTH = 390
PAGE_TIMEOUT = 60  # seconds for one page to load and render (a long chapter, 2-core CPU)
DESKTOP_WIDTH = 1280
PAGE_BUDGET = 1_500_000  # bytes one page may load, all files together
CHEATSHEET_MAX_PAGES = 4
# Labels of the project's own bookkeeping that mean nothing to a reader (the same regex is in SITE notes for
# the chapter authors): requirement ids, issue numbers, "target met", the people and machines that ran things,
# and paths of our machines.
INTERNAL_LABEL = re.compile(
    r"\bSPEC\b|\b[Ii]ssues?\s*#?\d+|\btarget\b[^.\n]{0,60}\bmet\b|\bmet:\s*(?:yes|no)\b|\bthe lead\b"
    r"|\b[Ll]ent\b|\$OUT\b|/work/|/tmp/|/home/|/root/|\.carry\b|\bBRIEF")
FILE_NAME_IN_TITLE = re.compile(r"\((?:ch\d+_[a-z_]+|appendix_[a-z_]+|intro|notation|cheatsheet|errata|api|bibliography)\)")

pytestmark = pytest.mark.timeout(600)


# ----------------------------------------------------------------------------- the toc's pages
PAGES = [re.sub(r"\.(md|ipynb|rst)$", "", f) for f in toc_files()]
CHAPTERS = [f for f in PAGES if re.search(r"/ch\d+_", f)]


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def site() -> Path:
    if not (SITE / "index.html").is_file():
        if os.environ.get("DDPM_SITE_SKIP_UNBUILT") == "1":
            pytest.skip(f"site not built at {SITE} and DDPM_SITE_SKIP_UNBUILT=1: browser tests skipped")
        pytest.fail(f"no built site at {SITE}: run make book first (or set DDPM_SITE_DIR)", pytrace=False)
    return SITE


@pytest.fixture(scope="module")
def base_url(site):
    spec = importlib.util.spec_from_file_location("ddpm_serve", ROOT / "scripts" / "serve.py")
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    server = serve.make_server(site, port=0, host="127.0.0.1")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def driver(base_url):
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download a driver or a browser
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for exe in (CHROMIUM, CHROMEDRIVER):
        if not Path(exe).exists():
            pytest.fail(f"{exe} missing: apt-get install chromium chromium-driver", pytrace=False)
    profile = tempfile.mkdtemp(prefix="ddpm-site-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--disable-extensions", "--no-first-run", "--disable-quic",
        "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
        # as on a train: no host resolves except this machine's own address
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        f"--user-data-dir={profile}", "--window-size=1280,1000",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    drv = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    drv.set_page_load_timeout(PAGE_TIMEOUT)
    drv.set_script_timeout(PAGE_TIMEOUT)
    drv.get("about:blank")
    yield drv
    drv.quit()
    shutil.rmtree(profile, ignore_errors=True)


# ----------------------------------------------------------------------------- helpers
_WAIT_RENDERED = """
const done = arguments[arguments.length - 1];
const t0 = Date.now();
function finish(state) {
  // fonts (MathJax's woff files among them) are requested only once text is laid out
  document.fonts.ready.then(() => done(state), () => done(state));
}
(function poll() {
  if (Date.now() - t0 > arguments_timeout) { done('timeout: ' + document.readyState); return; }
  if (document.readyState !== 'complete') { setTimeout(poll, 50); return; }
  const mj = window.MathJax;
  if (mj && mj.startup && mj.startup.promise) {
    mj.startup.promise.then(() => finish('typeset'), (e) => done('mathjax failed: ' + e));
  } else if (document.querySelector('script[src*="mathjax"]') && !window.__mjWait) {
    // a deferred script runs before the load event, so MathJax should be here: a short grace, then report
    window.__mjWait = true; setTimeout(poll, 2000);
  } else {
    finish('no mathjax');
  }
})();
""".replace("arguments_timeout", str(PAGE_TIMEOUT * 1000))

_PAGE_FACTS = """
const math = Array.from(document.querySelectorAll('.math'));
const untypeset = math.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.trim().slice(0, 80));
// a TeX error is an merror; an undefined macro (MathJax's noundefined package) is red text "\\name"
const merrors = Array.from(document.querySelectorAll('mjx-merror, mjx-container [style*="color: red"]')).map(
    e => ((e.closest('mjx-container') || e).getAttribute('aria-label') || e.textContent).slice(0, 120));
const images = Array.from(document.images).map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0}));
const urls = [];
for (const el of document.querySelectorAll('a[href], link[href], script[src], img[src], source[src], iframe[src], video[src], audio[src], object[data]')) {
  const u = el.href || el.src || el.data;
  if (typeof u === 'string') urls.push({tag: el.tagName.toLowerCase(), rel: el.getAttribute('rel') || '', url: u});
}
return {math: math.length, untypeset, merrors, images, urls,
        mathjax_script: !!document.querySelector('script[src*="mathjax" i]')};
"""


def _is_local(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("data", "blob", "about", "javascript", "mailto", "chrome", "chrome-untrusted", "devtools"):
        return True  # in-memory or the browser's own resources: no network
    return parts.scheme in ("http", "https", "ws", "wss") and parts.hostname == "127.0.0.1"


def _requests_since_last_call(drv) -> list[dict]:
    """Every network request (url, status) in the DevTools performance log since the last call."""
    reqs: dict[str, dict] = {}
    for entry in drv.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        method, params = msg.get("method", ""), msg.get("params", {})
        if method == "Network.requestWillBeSent":
            reqs[params["requestId"]] = {"url": params["request"]["url"], "status": None, "error": None}
        elif method == "Network.responseReceived" and params.get("requestId") in reqs:
            reqs[params["requestId"]]["status"] = params["response"].get("status")
        elif method == "Network.loadingFailed" and params.get("requestId") in reqs:
            reqs[params["requestId"]]["error"] = params.get("errorText")
        elif method == "Network.webSocketCreated":
            reqs[params["requestId"]] = {"url": params["url"], "status": None, "error": None}
    return list(reqs.values())


class _Ids(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("id", "name") and v:
                self.ids.add(v)


@functools.lru_cache(maxsize=None)
def _fetch(url: str) -> tuple[int, frozenset]:
    """(HTTP status, ids of the page if HTML) of a local URL, fragment removed."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url), timeout=30) as r:
            status, ctype = r.status, r.headers.get("Content-Type", "")
            if "html" in ctype:
                p = _Ids()
                p.feed(r.read().decode("utf-8", "replace"))
                return status, frozenset(p.ids)
            return status, frozenset()
    except urllib.error.HTTPError as e:
        return e.code, frozenset()
    except OSError as e:  # connection refused etc.
        return -1, frozenset({f"error: {e}"})


def _screenshot(drv, name: str, folder: Path = FAILURES, phone: bool = False) -> Path:
    """A screenshot of the whole page (not just the viewport) at the width the test used."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".png")
    width = drv.execute_script("return window.innerWidth")
    height = min(int(drv.execute_script("return document.documentElement.scrollHeight")), 16000)
    try:
        drv.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": phone})
        drv.save_screenshot(str(path))
    finally:
        if phone:
            _phone(drv)
        else:
            drv.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    return path


def _phone(drv) -> None:
    drv.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                        {"width": PHONE_WIDTH, "height": 844, "deviceScaleFactor": 2, "mobile": True})


def _check(drv, name: str, problems: list[str], phone: bool = False) -> None:
    if SHOTS:
        _screenshot(drv, name, Path(SHOTS), phone)
    if problems:
        shot = _screenshot(drv, name, FAILURES, phone)
        pytest.fail(f"{name}: {len(problems)} problem(s) (screenshot {shot}):\n  " + "\n  ".join(problems[:40]),
                    pytrace=False)


def _load(drv, url: str) -> str:
    drv.get_log("performance")  # drop what earlier pages logged
    drv.get_log("browser")
    drv.get(url)
    return drv.execute_async_script(_WAIT_RENDERED)


# ----------------------------------------------------------------------------- static checks (no browser)
def test_every_toc_file_has_a_page(site):
    missing = [f for f in PAGES if not (site / f"{f}.html").is_file()]
    assert not missing, f"pages of _toc.yml missing from {site}: {missing} (run make book first)"
    assert (site / "search.html").is_file() and (site / "searchindex.js").is_file()


_EXTERNAL_LOAD = re.compile(
    r"""<(?:script|img|iframe|source|audio|video|embed)\b[^>]*\bsrc\s*=\s*["']?\s*(?:https?:)?//"""
    r"""|<link\b(?=[^>]*\brel\s*=\s*["']?(?:stylesheet|preload|prefetch|modulepreload|icon|shortcut icon|manifest))"""
    r"""[^>]*\bhref\s*=\s*["']?\s*(?:https?:)?//""",
    re.I,
)
_CSS_EXTERNAL = re.compile(r"""(?:url\(\s*["']?|@import\s+["'])\s*(?:https?:)?//""", re.I)


def test_no_file_of_the_site_loads_from_another_host(site):
    """Every HTML page and stylesheet of the site (not only the toc's) loads only local files."""
    bad = []
    for path in sorted(site.rglob("*.html")) + sorted(site.rglob("*.css")):
        text = path.read_text("utf-8", "replace")
        pattern = _CSS_EXTERNAL if path.suffix == ".css" else _EXTERNAL_LOAD
        for m in pattern.finditer(text):
            bad.append(f"{path.relative_to(site)}: {text[m.start():m.end() + 60]!r}")
    assert not bad, "the site loads files from the network:\n  " + "\n  ".join(bad[:30])


def test_maths_is_typeset_when_the_site_is_built(site):
    """CommonHTML in the pages, only MathJax's fonts shipped (not its 24 MB distribution), the book's macros used."""
    fonts = site / "_static" / "mathjax" / "woff-v2"
    assert any(fonts.glob("MathJax_Main-Regular.woff")), f"MathJax's CommonHTML fonts are not in {fonts}"
    shipped = sum(f.stat().st_size for f in (site / "_static" / "mathjax").rglob("*") if f.is_file())
    assert shipped < 1_000_000, f"_static/mathjax holds {shipped / 1e6:.1f} MB: ship the fonts the pages use only"
    assert not list(site.rglob("tex-chtml*.js")), "a MathJax script is shipped: maths is typeset at build time"
    pages_with_math = [f for f in PAGES if "mjx-container" in (site / f"{f}.html").read_text("utf-8", "replace")]
    assert len(pages_with_math) >= len(CHAPTERS), f"maths typeset on {pages_with_math} only: is node installed?"
    for f in PAGES:
        html = (site / f"{f}.html").read_text("utf-8", "replace")
        assert not re.search(r"<script[^>]+src=\"[^\"]*mathjax", html, re.I), f"{f}: loads a MathJax script"
        assert "fontawesome.js" not in html, f"{f}: loads fontawesome.js (1.5 MB)"
        # raw TeX left in a math node means the build-time typesetting skipped it
        assert not re.search(r'<(?:span|div) class="math[^"]*">\s*\\[(\[]', html), f"{f}: maths left untypeset"
    ch4 = (site / "book" / "ch4_elbo.html").read_text("utf-8", "replace")
    assert 'aria-label="' in ch4 and "\\abar" in ch4, "typeset maths lost its TeX source (aria-label) or the book's macros"


# ----------------------------------------------------------------------------- the weight post-processing (no site needed)
@functools.lru_cache(maxsize=None)
def _site_fixes():
    spec = importlib.util.spec_from_file_location("ddpm_site_fixes", ROOT / "scripts" / "site_fixes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_purge_css_drops_only_rules_no_page_can_match():
    css = ('/* c */.used{color:red}.gone{color:blue}.used .gone2,.used>a{margin:0}p:not(.absent){x:1}'
           '@media (max-width:10px){.gone{a:b}.used{c:d}}@media print{.gone{e:f}}'
           '@font-face{font-family:F;src:url("a.woff")}a[href$=".pdf"]{y:2}:root{--v:1}.used:is(.gone){z:3}')
    out = _site_fixes().purge_css(css, {"used", "p", "a"})
    for kept in (".used{color:red}", ".used>a{margin:0}", "p:not(.absent){x:1}", "@media (max-width:10px){.used{c:d}}",
                 '@font-face{font-family:F;src:url("a.woff")}', 'a[href$=".pdf"]{y:2}', ":root{--v:1}",
                 ".used:is(.gone){z:3}"):
        assert kept in out, (kept, out)
    for gone in (".gone{", ".gone2", "@media print", "/* c */"):
        assert gone not in out, (gone, out)


def test_compact_code_keeps_the_text_and_the_colours():
    sf = _site_fixes()
    html = ('<div class="highlight"><pre><span></span><span class="n">x</span><span class="w"> </span>'
            '<span class="o">=</span><span class="w"> </span><span class="n">f</span><span class="p">(</span>'
            '<span class="mi">1</span><span class="p">)</span>\n</pre></div><p><span class="n">kept</span></p>')
    out = sf.compact_code(html, {"n", "p", "w"})
    assert out == ('<div class="highlight"><pre><span></span>x <span class="o">=</span> f(<span class="mi">1</span>)\n'
                   '</pre></div><p><span class="n">kept</span></p>')
    assert re.sub(r"<[^>]+>", "", out) == re.sub(r"<[^>]+>", "", html)


_MJX_PAGE = ('<html><head><style id="MJX-CHTML-styles">\nmjx-container[jax="CHTML"] {\n  line-height: 0;\n}\n\n'
             'mjx-c.mjx-c1D465.TEX-I::before {\n  padding: 0.442em 0.572em 0.011em 0;\n  content: "x";\n}\n\n'
             '.TEX-I {\n  font-family: MJXZERO, MJXTEX-I;\n}\n</style></head><body>'
             '<mjx-container class="MathJax" jax="CHTML" style="font-size: 113.1%;" role="math" aria-label="x">'
             '<mjx-math class=" MJX-TEX"><mjx-mi class="mjx-i"><mjx-c class="mjx-c1D465 TEX-I"></mjx-c></mjx-mi>'
             '<mjx-script style="vertical-align: -0.15em;"><mjx-mi class="mjx-n" texclass="ORD"></mjx-mi></mjx-script>'
             '</mjx-math></mjx-container> and <mjx-container class="MathJax" jax="CHTML" style="font-size: 113.1%;" '
             'display="true" role="math" aria-label="x"><mjx-math class=" MJX-TEX"></mjx-math></mjx-container>'
             '</body></html>')


def test_compact_math_renames_markup_and_style_sheet_alike():
    sf = _site_fixes()
    out = sf.compact_math(_MJX_PAGE, site_css=".MJX-TEX{}")
    assert len(out) < len(_MJX_PAGE)
    sheet = re.search(r'<style id="MJX-CHTML-styles">(.*?)</style>', out, re.S).group(1)
    assert sheet.startswith("mjx-container{font-size:113.1%}") and 'jax="CHTML"' not in out
    assert "mjx-c.j1D465.TI::before{padding:0.442em 0.572em 0.011em 0;content:\"x\"}" in sheet and ".TI{" in sheet
    assert '<mjx-c class="j1D465 TI">' in out and 'class="mjx-i"' not in out and "texclass" not in out
    assert '<mjx-script style="vertical-align:-0.15em">' in out and 'class="MJX-TEX"' in out
    assert out.count('role="math" aria-label="x"') == 2 and 'display="true"' in out
    assert sf.compact_math(out, site_css=".MJX-TEX{}") == out  # idempotent: a second build leaves it alone
    # containers of two sizes on one page: each keeps its own
    two = _MJX_PAGE.replace('style="font-size: 113.1%;" display', 'style="font-size: 90%;" display')
    assert 'style="font-size: 90%;"' in sf.compact_math(two, site_css="")


def test_lighten_png_keeps_the_figure():
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    fig, ax = plt.subplots(figsize=(4, 2.5), dpi=100)
    x = np.linspace(0, 6, 200)
    for k in range(4):
        ax.plot(x, np.sin(x + k), label=f"k = {k}")
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    raw = buf.getvalue()
    light = _site_fixes().lighten_png(raw)
    assert light is not None and len(light) < 0.9 * len(raw)
    a = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"), dtype=int)
    b = np.asarray(Image.open(io.BytesIO(light)).convert("RGB"), dtype=int)
    assert a.shape == b.shape and np.abs(a - b).mean() <= _site_fixes().PNG_MAX_MEAN_ERROR
    # transparency is left alone
    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 128))
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    assert _site_fixes().lighten_png(buf.getvalue()) is None


def test_built_pages_are_compacted(site):
    """The post-processing ran on the built site: no span wrappers that draw like plain code, short MathJax."""
    for page in CHAPTERS:
        html = (site / f"{page}.html").read_text("utf-8", "replace")
        assert 'jax="CHTML"' not in html and "mjx-c1" not in html, f"{page}: MathJax markup not compacted"
        for block in re.findall(r'<div class="highlight"><pre>.*?</pre></div>', html, re.S):
            assert '<span class="n">' not in block, f"{page}: code spans not compacted"
    css = (site / "_static" / "styles" / "pydata-sphinx-theme.css").stat().st_size
    assert css < 200_000, f"the theme's style sheet is {css / 1e3:.0f} kB: not purged"


# ----------------------------------------------------------------------------- every page in the browser
@pytest.mark.parametrize("page", PAGES)
def test_page_renders_offline(page, site, base_url, driver):
    v = _visit(driver, base_url, page, DESKTOP_WIDTH)
    state, facts = v["state"], v["facts"]
    problems = []
    if state.startswith(("timeout", "mathjax failed")):
        problems.append(f"page did not finish rendering: {state}")
    if facts["mathjax_script"]:
        problems.append("the page loads a MathJax script: maths should be typeset when the site is built")
    problems += [f"math not typeset: {t!r}" for t in facts["untypeset"]]
    problems += [f"MathJax error: {e!r}" for e in facts["merrors"]]
    problems += [f"image not loaded: {i['src']}" for i in facts["images"] if not i["ok"]]

    for req in v["requests"]:
        if not _is_local(req["url"]):
            problems.append(f"request left 127.0.0.1: {req['url']}")
        elif req["url"].startswith("http") and (req["error"] or (req["status"] not in (200, 304, None))):
            problems.append(f"request failed: {req['url']} -> {req['status'] or req['error']}")

    for item in facts["urls"]:
        u = item["url"]
        if not u.startswith(base_url):
            # only links (<a>) may point elsewhere; nothing the page loads may
            if item["tag"] != "a" and not (item["tag"] == "link" and item["rel"] in ("canonical", "author", "license")):
                if not _is_local(u):
                    problems.append(f"<{item['tag']}> loads from outside: {u}")
            continue
        target, _, frag = u.partition("#")
        status, ids = _fetch(target)
        if status != 200:
            problems.append(f"<{item['tag']}> {u} -> {status}")
        elif frag and item["tag"] == "a" and ids and urllib.parse.unquote(frag) not in ids:
            problems.append(f"link to a missing anchor: {u}")

    problems += [f"console error: {m[:200]}" for m in v["console"]]
    _check_visit(driver, v, f"page-{page}", problems)


def test_search_finds_a_word_of_the_book(site, base_url, driver):
    _load(driver, f"{base_url}/search.html?q={SEARCH_WORD}")
    deadline = time.time() + PAGE_TIMEOUT
    hits, summary = [], ""
    while time.time() < deadline:
        hits = driver.execute_script(
            "return Array.from(document.querySelectorAll('#search-results ul.search li a')).map(a => a.href)")
        summary = driver.execute_script(
            "const s = document.querySelector('#search-results p.search-summary'); return s ? s.textContent : ''")
        if hits or summary.strip():
            break
        time.sleep(0.2)
    problems = [] if hits else [f"search for {SEARCH_WORD!r} listed no result (summary: {summary.strip()!r})"]
    for h in hits[:5]:
        status, _ = _fetch(h.partition("#")[0])
        if status != 200:
            problems.append(f"search result {h} -> {status}")
    problems += [f"request left 127.0.0.1: {r['url']}" for r in _requests_since_last_call(driver)
                 if not _is_local(r["url"])]
    _check(driver, "search", problems)


# ----------------------------------------------------------------------------- one visit per page and width
_VISITS: dict[tuple[str, int], dict] = {}

_LAYOUT = """
const col = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
const cr = col.getBoundingClientRect();
const right = cr.right + 1, left = cr.left - 1;
const KINDS = 'div.math, mjx-container, table, figure, img, pre, div.highlight, .cell_output, div.animation, iframe, video, canvas, svg';
function describe(el) {
  const cls = (el.className && el.className.baseVal !== undefined) ? el.className.baseVal : (el.className || '');
  return el.tagName.toLowerCase() + (cls ? '.' + cls.toString().trim().split(/\\s+/).slice(0, 3).join('.') : '') +
         ' "' + (el.getAttribute('aria-label') || el.textContent || el.getAttribute('alt') || '').trim().replace(/\\s+/g, ' ').slice(0, 70) + '"';
}
function hidden(el) { return !(el.offsetWidth || el.offsetHeight || el.getClientRects().length); }
function inScrollBox(el) {
  // some box around el (or el itself) scrolls sideways and stays inside the column
  for (let p = el; p && p !== col; p = p.parentElement) {
    const o = getComputedStyle(p).overflowX;
    if ((o === 'auto' || o === 'scroll') && p.getBoundingClientRect().right <= right) return true;
  }
  return false;
}
const sticking = [], clipped = [], nocue = [], scrolling = [];
for (const el of col.querySelectorAll(KINDS)) {
  if (hidden(el)) continue;
  const r = el.getBoundingClientRect();
  if (r.width === 0) continue;
  if (r.right > right || r.left < left) {
    if (!inScrollBox(el)) sticking.push(describe(el) + ' right=' + Math.round(r.right) + ' > ' + Math.round(right));
  }
}
for (const el of col.querySelectorAll('*')) {
  if (hidden(el)) continue;
  const s = getComputedStyle(el);
  const wide = el.scrollWidth > el.clientWidth + 2 && el.clientWidth > 0;
  if (!wide) continue;
  if (s.overflowX === 'hidden' || s.overflowX === 'clip') {
    // content cut at the box's edge (MathJax's own zero-size boxes and screen-reader-only text excepted)
    if (!el.closest('mjx-container') || el.matches('mjx-container')) clipped.push(describe(el) + ' scrollWidth=' + el.scrollWidth + ' > ' + el.clientWidth);
  } else if (s.overflowX === 'auto' || s.overflowX === 'scroll') {
    if (!/gradient/.test(s.backgroundImage)) nocue.push(describe(el));
    if (el.matches('div.math, mjx-container, table, .pst-scrollable-table-container, .table-wrapper') || el.querySelector('table'))
      scrolling.push(describe(el) + ' needs ' + el.scrollWidth + ' px of ' + el.clientWidth);
  }
}
return {inner: window.innerWidth, docScroll: document.documentElement.scrollWidth,
        colScroll: col.scrollWidth, colClient: col.clientWidth,
        sticking: sticking.slice(0, 30), clipped: clipped.slice(0, 30), nocue: nocue.slice(0, 30), scrolling: scrolling.slice(0, 30)};
"""

_FIGURES = """
const col = document.querySelector('article.bd-article') || document.body;
const out = [];
function bad_alt(a) { a = (a || '').trim(); return a.length < 15 || /\\.(png|svg|jpe?g|gif|webp)$/i.test(a) || a.includes('_images/'); }
for (const img of col.querySelectorAll('img')) {
  const fig = img.closest('figure');
  const cap = fig ? fig.querySelector('figcaption') : null;
  const name = (img.getAttribute('src') || '').split('/').pop().slice(0, 24);
  const where = img.closest('div.animation') ? 'animation frame ' : 'image ';
  if (!cap || !cap.textContent.trim()) out.push(where + name + ': no <figure> with a caption');
  if (bad_alt(img.getAttribute('alt'))) out.push(where + name + ': no real alt text (' + JSON.stringify(img.getAttribute('alt') || '') + ')');
}
for (const anim of col.querySelectorAll('div.animation, video')) {
  const fig = anim.closest('figure');
  if (!fig || !fig.querySelector('figcaption')) out.push('animation: no <figure> with a caption');
}
const numbers = {
  figures: Array.from(col.querySelectorAll('figure figcaption .caption-number')).map(e => e.textContent.trim()),
  captionless_figures: Array.from(col.querySelectorAll('figure')).filter(f => !f.querySelector('figcaption .caption-number')).length,
  equations: Array.from(col.querySelectorAll('span.eqno')).map(e => e.firstChild ? e.firstChild.textContent.trim() : ''),
  exercises: Array.from(col.querySelectorAll('.admonition-title .caption-number')).map(e => e.textContent.trim()),
};
return {problems: out, numbers, animations: col.querySelectorAll('div.animation, video').length};
"""

_TEXT = """
const col = (document.querySelector('article.bd-article') || document.body).cloneNode(true);
col.querySelectorAll('script, style, mjx-container').forEach(e => e.remove());
const nav = Array.from(document.querySelectorAll('nav.bd-links a, .bd-sidebar-primary a')).map(a => a.textContent.trim());
return {article: col.textContent, title: document.title, nav};
"""

_WEIGHT = """
const done = arguments[arguments.length - 1];
document.querySelectorAll('img[loading="lazy"]').forEach(i => { i.loading = 'eager'; });
const t0 = Date.now();
(function poll() {
  const waiting = Array.from(document.images).filter(i => !i.complete).length;
  if (waiting && Date.now() - t0 < 20000) { setTimeout(poll, 100); return; }
  document.fonts.ready.then(() => setTimeout(() => {
    const files = performance.getEntriesByType('resource').map(e => [e.name, e.decodedBodySize || e.encodedBodySize || 0]);
    const nav = performance.getEntriesByType('navigation')[0];
    files.push([location.href, nav ? nav.decodedBodySize : document.documentElement.outerHTML.length]);
    done(files);
  }, 300));
})();
"""


def _visit(drv, base_url: str, page: str, width: int) -> dict:
    """Load ``page`` at ``width`` px once per session; every check of that page and width reads this."""
    key = (page, width)
    if key in _VISITS:
        return _VISITS[key]
    phone = width == PHONE_WIDTH
    if phone:
        _phone(drv)
    else:
        drv.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        drv.set_window_size(width, 1000)
    drv.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})  # weigh every file, every page
    try:
        state = _load(drv, f"{base_url}/{page}.html")
        v = {"page": page, "width": width, "phone": phone, "state": state}
        if not phone:
            v["facts"] = drv.execute_script(_PAGE_FACTS)
            v["files"] = drv.execute_async_script(_WEIGHT)
            v["requests"] = [r for r in _requests_since_last_call(drv)
                             if r["url"] != f"{base_url}/favicon.ico"]  # the browser's own guess, when no icon is named
            v["console"] = [e.get("message", "") for e in drv.get_log("browser")
                            if e.get("level") == "SEVERE" and "/favicon.ico" not in e.get("message", "")]
            v["figures"] = drv.execute_script(_FIGURES)
            v["text"] = drv.execute_script(_TEXT)
        v["layout"] = drv.execute_script(_LAYOUT)
        if SHOTS:
            _screenshot(drv, f"{'phone' if phone else 'desktop'}-{page}", Path(SHOTS), phone)
    finally:
        drv.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": False})
        if phone:
            drv.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    _VISITS[key] = v
    return v


def _check_visit(drv, v: dict, name: str, problems: list[str]) -> None:
    """Fail with a screenshot of the page at the visit's width (reloaded: other tests moved on since)."""
    if not problems:
        return
    phone = v["phone"]
    if phone:
        _phone(drv)
    else:
        drv.set_window_size(v["width"], 1000)
    try:
        _load(drv, _page_url(drv, v["page"]))
        shot = _screenshot(drv, name, FAILURES, phone)
    finally:
        if phone:
            drv.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    pytest.fail(f"{name}: {len(problems)} problem(s) (screenshot {shot}):\n  " + "\n  ".join(problems[:40]),
                pytrace=False)


def _page_url(drv, page: str) -> str:
    parts = urllib.parse.urlsplit(drv.current_url)
    return f"{parts.scheme}://{parts.netloc}/{page}.html"


WIDTHS = [DESKTOP_WIDTH, PHONE_WIDTH]

# Known defects, each still to fix (strict: the mark must go the moment the page passes).
KNOWN_WIDE_AT_1280: dict[str, str] = {}  # page -> why it still has a display wider than the column at 1280 px
KNOWN_HEAVY: dict[str, str] = {}  # page -> why it still loads more than PAGE_BUDGET


def _known(pages, known, width=None):
    out = []
    for page in pages:
        for w in ([width] if width is None else WIDTHS):
            args = (page,) if width is None else (page, w)
            bad = page in known and (width is None or w == DESKTOP_WIDTH)
            out.append(pytest.param(*args, marks=pytest.mark.xfail(strict=True, reason=known[page])) if bad else pytest.param(*args))
    return out


@pytest.mark.parametrize("page, width", _known(PAGES, KNOWN_WIDE_AT_1280, width=True))
def test_nothing_sticks_out_of_the_column(page, width, site, base_url, driver):
    m = _visit(driver, base_url, page, width)["layout"]
    problems = []
    if m["inner"] != width:
        problems.append(f"viewport is {m['inner']} px wide, not {width}")
    if m["docScroll"] > m["inner"]:
        problems.append(f"the page scrolls sideways: scrollWidth {m['docScroll']} > innerWidth {m['inner']}")
    if m["colScroll"] > m["colClient"] + 1:
        problems.append(f"the text column scrolls sideways: {m['colScroll']} > {m['colClient']}")
    problems += [f"sticks out of the column: {w}" for w in m["sticking"]]
    problems += [f"content clipped: {w}" for w in m["clipped"]]
    problems += [f"scrolls without a visible cue: {w}" for w in m["nocue"]]
    if width == DESKTOP_WIDTH:
        problems += [f"wider than the column at {width} px: {w}" for w in m["scrolling"]]
    _check_visit(driver, _visit(driver, base_url, page, width), f"layout-{width}-{page}", problems)


@pytest.mark.parametrize("page", PAGES)
def test_every_figure_has_a_caption_and_alt_text(page, site, base_url, driver):
    v = _visit(driver, base_url, page, DESKTOP_WIDTH)
    problems = list(v["figures"]["problems"])
    m = re.search(r"/ch(\d+)_", "/" + page)
    if m:  # a chapter: its figures, equations and exercises carry the chapter's number
        n = m.group(1)
        nums = v["figures"]["numbers"]
        problems += [f"figure numbered {f!r}, not Fig. {n}.k" for f in nums["figures"] if not re.match(rf"Fig\. {n}\.\d+", f)]
        problems += [f"equation numbered {e!r}, not ({n}.k)" for e in nums["equations"] if not re.fullmatch(rf"\({n}\.\d+\)", e)]
        problems += [f"exercise numbered {e!r}, not Exercise {n}.k" for e in nums["exercises"]
                     if not re.fullmatch(rf"Exercise {n}\.\d+", e)]
        if nums["captionless_figures"]:
            problems.append(f"{nums['captionless_figures']} figure(s) without a numbered caption")
    if "Exercise Exercise" in v["text"]["article"]:
        problems.append('"Exercise Exercise": a reference to an exercise already says "Exercise"')
    _check_visit(driver, v, f"figures-{page}", problems)


@pytest.mark.parametrize("page", PAGES)
def test_reader_text_has_no_internal_labels(page, site, base_url, driver):
    t = _visit(driver, base_url, page, DESKTOP_WIDTH)["text"]
    problems = []
    for where, text in (("title", t["title"]), ("page", t["article"]), *(("sidebar", n) for n in t["nav"])):
        for mm in INTERNAL_LABEL.finditer(text):
            a, b = max(0, mm.start() - 50), mm.end() + 30
            problems.append(f"{where}: {mm.group(0)!r} in ...{' '.join(text[a:b].split())}...")
    for where, text in (("title", t["title"]), *(("sidebar", n) for n in t["nav"])):
        if FILE_NAME_IN_TITLE.search(text) or re.search(r"\bch\d+_[a-z]", text):
            problems.append(f"{where} shows a file name: {text!r}")
    if page.endswith("/api"):
        for phrase in ("Should be overridden by all subclasses", "Training a denoiser"):
            if phrase in t["article"]:
                problems.append(f"API page: {phrase!r} (a copied docstring or a chapter that does not exist)")
    assert not problems, f"{page}: {len(problems)} internal label(s):\n  " + "\n  ".join(problems[:40])


@pytest.mark.parametrize("page", _known(PAGES, KNOWN_HEAVY))
def test_page_weight(page, site, base_url, driver):
    files = _visit(driver, base_url, page, DESKTOP_WIDTH)["files"]
    total = sum(int(b) for _, b in files)
    biggest = sorted(files, key=lambda f: -int(f[1]))[:6]
    assert total <= PAGE_BUDGET, (
        f"{page} loads {total / 1e6:.2f} MB > {PAGE_BUDGET / 1e6:.1f} MB; biggest: "
        + ", ".join(f"{urllib.parse.urlsplit(u).path.rsplit('/', 1)[-1][:40]} {b / 1e3:.0f} kB" for u, b in biggest))


def test_site_has_a_favicon(site):
    html = (site / "book" / "ch1_generative_modelling.html").read_text("utf-8")
    m = re.search(r'<link rel="icon" href="([^"]+)"', html)
    assert m, "no <link rel=icon>: the site has no favicon"
    assert (site / "book" / m.group(1)).resolve().is_file(), f"the favicon {m.group(1)} is missing"


# ----------------------------------------------------------------------------- the menus
_VISIBLE = "const e = arguments[0]; const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0 && getComputedStyle(e).visibility !== 'hidden';"


def _visible_button(drv, selector: str):
    for b in drv.find_elements("css selector", selector):
        if drv.execute_script(_VISIBLE, b):
            return b
    return None


def test_phone_menus_open_and_close(site, base_url, driver):
    page = next(p for p in CHAPTERS)
    _phone(driver)
    problems = []
    try:
        _load(driver, f"{base_url}/{page}.html")
        for label, selector, dialog in (("menu (☰)", ".primary-toggle", "pst-primary-sidebar-modal"),
                                        ("On this page", ".secondary-toggle", "pst-secondary-sidebar-modal")):
            btn = _visible_button(driver, selector)
            if btn is None:
                problems.append(f"no visible {label} button at {PHONE_WIDTH} px")
                continue
            btn.click()
            time.sleep(0.4)
            is_open = driver.execute_script(
                "const d = document.getElementById(arguments[0]); return !!d && d.open && "
                "d.getBoundingClientRect().width > 0 && d.querySelectorAll('a').length > 0", dialog)
            if not is_open:
                problems.append(f"{label}: a click does not open it (#{dialog})")
                continue
            driver.execute_script("document.getElementById(arguments[0]).dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape', bubbles: true}))", dialog)
            time.sleep(0.3)
            if driver.execute_script("return document.getElementById(arguments[0]).open", dialog):
                problems.append(f"{label}: Escape does not close it")
        if problems:
            shot = _screenshot(driver, "phone-menus", FAILURES, phone=True)
            problems.append(f"screenshot {shot}")
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    assert not problems, "\n  ".join(problems)


def test_menu_button_collapses_the_sidebar_on_desktop(site, base_url, driver):
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    driver.set_window_size(DESKTOP_WIDTH, 1000)
    _load(driver, f"{base_url}/{CHAPTERS[0]}.html")
    width = ("const s = document.getElementById('pst-primary-sidebar'); const r = s.getBoundingClientRect();"
             "return getComputedStyle(s).visibility === 'hidden' ? 0 : Math.max(0, Math.round(r.right))")
    before = driver.execute_script(width)
    btn = _visible_button(driver, ".primary-toggle")
    assert btn is not None and before > 0, "no visible ☰ button or no sidebar at 1280 px"
    btn.click()
    time.sleep(0.8)  # the theme slides it out
    after = driver.execute_script(width)
    btn.click()
    time.sleep(0.8)
    again = driver.execute_script(width)
    assert after == 0 and again > 0, f"☰ does not collapse and restore the sidebar: visible width {before} -> {after} -> {again}"


# ----------------------------------------------------------------------------- the cheat sheet's PDF
def _pdf_pages(pdf: Path) -> int:
    if shutil.which("pdfinfo"):
        out = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, timeout=60).stdout
        return int(re.search(r"^Pages:\s+(\d+)", out, re.M).group(1))
    return len(re.findall(rb"/Type\s*/Page(?!s)", pdf.read_bytes()))


def test_cheatsheet_pdf_has_at_most_four_pages(site):
    pdf = site.parent / "cheatsheet.pdf"
    assert pdf.is_file(), f"{pdf} missing: make book (or make cheatsheet) writes it"
    assert (site / "cheatsheet.pdf").is_file(), "the site has no cheatsheet.pdf for its page to link"
    n = _pdf_pages(pdf)
    assert 1 <= n <= CHEATSHEET_MAX_PAGES, f"the cheat sheet prints on {n} pages (at most {CHEATSHEET_MAX_PAGES})"
    html = (site / "book" / "cheatsheet.html").read_text("utf-8")
    assert 'href="../cheatsheet.pdf"' in html, "the cheat sheet page does not link its PDF"


def test_cheatsheet_prints_every_column(site, base_url, driver):
    """In print layout (A4 width), no table of the cheat sheet is wider than the page: no column is lost."""
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    driver.set_window_size(DESKTOP_WIDTH, 1000)
    _load(driver, f"{base_url}/book/cheatsheet.html")
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 718, "height": 1000, "deviceScaleFactor": 1, "mobile": False})  # A4 - margins at 96 dpi
    try:
        time.sleep(0.5)
        wide = driver.execute_script("""
            const w = document.documentElement.clientWidth;
            return Array.from(document.querySelectorAll('table, div.math, pre')).filter(
                t => t.getBoundingClientRect().right > w + 1 || t.scrollWidth > t.clientWidth + 2).map(
                t => t.tagName + ' ' + Math.round(t.getBoundingClientRect().right) + ' ' + (t.textContent || '').trim().slice(0, 50));""")
    finally:
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    assert not wide, "printed cheat sheet: wider than the A4 page (columns lost):\n  " + "\n  ".join(wide)


# ----------------------------------------------------------------------------- bibliography, search titles
def test_bibliography_links_every_paper(site):
    html = (site / "book" / "bibliography.html").read_text("utf-8")
    entries = re.findall(r'<div class="citation"[^>]*>(.*?)</div>', html, re.S)
    assert len(entries) >= 10, f"only {len(entries)} bibliography entries rendered"
    missing = [re.sub(r"<[^>]+>", "", e)[:90] for e in entries
               if not re.search(r'href="https://(?:doi\.org|arxiv\.org)/', e) and "ISBN" not in e]
    assert not missing, "bibliography entries without a DOI or arXiv link:\n  " + "\n  ".join(missing)


def test_search_names_results_by_title(site, base_url, driver):
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    _load(driver, f"{base_url}/search.html?q=DDIM")
    deadline, items = time.time() + PAGE_TIMEOUT, []
    while time.time() < deadline and not items:
        items = driver.execute_script(
            "return Array.from(document.querySelectorAll('#search-results ul.search li')).map(li => li.textContent)")
        time.sleep(0.2)
    assert items, "search for DDIM listed nothing"
    bad = [i[:100] for i in items if FILE_NAME_IN_TITLE.search(i) or re.search(r"\bch\d+_[a-z]", i.split("\n")[0])]
    assert not bad, "search results show file names:\n  " + "\n  ".join(bad)
