"""The built book, checked in a real browser (headless Debian chromium through Selenium), offline.

Run after the book is built (``make book``, i.e. ``jupyter-book build . -W``, its log kept in ``_build/build.log``)::

    pytest tests/test_site.py

The site is ``_build/html`` unless ``DDPM_SITE_DIR`` names another built site. If it is not built
the tests FAIL ("run make book first"); they skip only when ``DDPM_SITE_SKIP_UNBUILT=1`` is set.
The site is served on 127.0.0.1 (a free port) and chromium runs with every host name except
127.0.0.1 resolving to nothing, as on a machine with no network. Two browser sessions, one at 1280 px and
one at 390 px (a phone, emulated), run side by side; each loads every page of ``_toc.yml`` once and the
tests share what it measured:

- maths: typeset at build time (every ``.math`` node holds an ``mjx-container``, no MathJax error or
  undefined macro), no MathJax script shipped to the reader; each formula keeps its TeX source as its
  accessible name (``role="math"``, ``aria-label``);
- every image has loaded; every request went to 127.0.0.1 (DevTools log); every internal link and
  local asset answers 200 and a link's ``#anchor`` exists; no console error;
- layout, at 1280 and 390 px: nothing sticks out of the text column unless it sits in its own horizontal
  scroll box inside the column, with a cue (a gradient edge); no content is clipped. At 1280 px no code,
  maths, table or figure is wider than its column, scroll box or not, and a code cell holds the
  formatter's line length (pyproject.toml). At 390 px every displayed equation starts at its scroll box's
  left edge and the box's scroll range reaches its right end; figures keep their text >= 10 px;
- accessibility: axe-core (npm, pinned by package-lock.json, installed by ``make install``) on every page
  at both widths: no serious or critical violation, nor any of ``AXE_ALWAYS``;
- commands: every shell command shown parses with the CLI's own parser and holds no smart dash or quote;
- every figure (image or animation) is in a ``<figure>`` with a caption and real alt text; in a
  chapter, figures, equations and exercises carry the chapter's number ("Fig. 3.2", "(4.7)");
- reader text has no internal label (``INTERNAL_LABEL``), no commit hash, ``.py``/``.json`` name or
  ``glue(`` outside code, no file names in titles, no doubled chapter number in titles or prev/next;
- weight: a page's own files (HTML, figures) at most ``PAGE_BUDGET`` bytes; the shared files (``_static``)
  at most ``SHARED_BUDGET``, each counted once;
- the menu (☰) and "On this page" open and close at 390 px ("On this page" also on a tap of its links),
  ☰ collapses the sidebar at 1280 px;
- the cheat sheet's PDF (``make cheatsheet``; printed by the test if absent) has at most 4 pages;
- the bibliography gives every paper a DOI or arXiv link; the API page copies no PyTorch boilerplate;
- the installed versions of the site's packages are requirements.txt's pins; the build log has no warning.

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
PAGE_BUDGET = 1_500_000  # bytes of a page's own files (HTML, figures): what a reader downloads for a second page
SHARED_BUDGET = 4_000_000  # bytes of the files pages share (_static: theme, scripts, styles, fonts), each once
MIN_FIGURE_TEXT_PX = 10  # a figure's tick labels at 390 px, CSS px
AXE_JS = ROOT / "node_modules" / "axe-core" / "axe.min.js"  # make install: npm ci (package-lock.json pins it)
AXE_VERSION = json.loads((ROOT / "package-lock.json").read_text())["packages"]["node_modules/axe-core"]["version"]
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]
# colours do not change with the width (site.css has no colour in a media query): checked at 1280 px only, as
# they are the slowest rules (a chapter's typeset maths and highlighted code are 20,000 elements)
AXE_SKIP_AT_PHONE = ["color-contrast", "link-in-text-block"]
# checked whatever impact axe gives them: headings in order, landmarks, page language, names of links and images
AXE_ALWAYS = {"heading-order", "landmark-one-main", "landmark-unique", "region", "html-has-lang", "html-lang-valid",
              "link-name", "image-alt", "color-contrast", "document-title", "page-has-heading-one"}
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


def _browser(width: int):
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
        f"--user-data-dir={profile}", f"--window-size={DESKTOP_WIDTH},1000",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    drv = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    drv.set_page_load_timeout(PAGE_TIMEOUT)
    drv.set_script_timeout(PAGE_TIMEOUT)
    if width == PHONE_WIDTH:
        _phone(drv)
    drv.get("about:blank")
    return drv, profile


@pytest.fixture(scope="module")
def drivers(base_url):
    """One browser session per width, reused by every test: {1280: desktop, 390: phone (emulated)}."""
    made = {}
    try:
        for w in (DESKTOP_WIDTH, PHONE_WIDTH):
            made[w] = _browser(w)
        yield {w: d for w, (d, _) in made.items()}
    finally:
        for d, profile in made.values():
            d.quit()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def driver(drivers):
    return drivers[DESKTOP_WIDTH]


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
    """A screenshot of the viewport of ``drv`` (the browser of the width the test used)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".png")
    drv.save_screenshot(str(path))
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
        # raw TeX left in a math node means the build-time typesetting skipped it
        assert not re.search(r'<(?:span|div) class="math[^"]*">\s*\\[(\[]', html), f"{f}: maths left untypeset"
    ch4 = (site / "book" / "ch4_elbo.html").read_text("utf-8", "replace")
    assert 'aria-label="' in ch4 and "\\abar" in ch4, "typeset maths lost its TeX source (aria-label) or the book's macros"


# ----------------------------------------------------------------------------- every page in the browser
@pytest.mark.parametrize("page", PAGES)
def test_page_renders_offline(page, site, base_url, drivers):
    v = _visit(drivers, base_url, page, DESKTOP_WIDTH)
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
    _check_visit(drivers, v, f"page-{page}", problems)


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
    if (el.matches('div.math, span.math, mjx-container, table, pre, div.highlight, figure, .cell_output, .pst-scrollable-table-container, .table-wrapper') || el.querySelector('table, img, pre'))
      scrolling.push(describe(el) + ' needs ' + el.scrollWidth + ' px of ' + el.clientWidth);
  }
}
// the code column: how many characters of the code font a code cell's line holds
const pre = col.querySelector('.cell_input div.highlight pre') || col.querySelector('div.highlight pre');
let codeChars = null;
if (pre) {
  const ps = getComputedStyle(pre), probe = document.createElement('span');
  probe.textContent = 'x'.repeat(100); pre.appendChild(probe);
  codeChars = (pre.clientWidth - parseFloat(ps.paddingLeft) - parseFloat(ps.paddingRight)) / (probe.getBoundingClientRect().width / 100);
  probe.remove();
}
return {inner: window.innerWidth, docScroll: document.documentElement.scrollWidth, codeChars,
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
const art = document.querySelector('article.bd-article') || document.body;
const col = art.cloneNode(true);
col.querySelectorAll('script, style, mjx-container').forEach(e => e.remove());
const nav = Array.from(document.querySelectorAll('nav.bd-links a, .bd-sidebar-primary a')).map(a => a.textContent.trim());
const h1 = art.querySelector('h1');
const prevnext = Array.from(document.querySelectorAll('.prev-next-area a .prev-next-title')).map(e => e.textContent);
// prose: the article less code cells (input and output), code blocks and inline code of the API's signatures
const prose = col.cloneNode(true);
prose.querySelectorAll('pre, div.highlight, .cell_input, .cell_output, dt.sig').forEach(e => e.remove());
return {article: col.textContent, prose: prose.textContent, title: document.title, nav,
        h1: h1 ? h1.textContent.replace(/#$/, '') : '', prevnext};
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

_COMMANDS = """
// every shell command the page shows: lines of shell code blocks, and code in prose that starts like a command;
// plus command lines written as prose (they are not literal code: a theme may restyle them)
const col = document.querySelector('article.bd-article') || document.body;
const CMD = /^(?:\\$\\s*)?(?:python3? -m ddpm\\b|ddpm (?:train|sample|evaluate|train-classifier)\\b|make [a-z]|pip install\\b)/;
const code = [], prose = [];
for (const pre of col.querySelectorAll('pre')) {
  const shell = !!pre.closest('div[class*="highlight-bash"], div[class*="highlight-shell"], div[class*="highlight-console"], div[class*="highlight-sh"]');
  for (const line of pre.textContent.split('\\n')) {
    const l = line.trim();
    if (l && (shell || CMD.test(l))) code.push([l, true]);
  }
}
for (const c of col.querySelectorAll('code')) {
  if (c.closest('pre')) continue;
  const l = c.textContent.trim();
  if (CMD.test(l)) code.push([l, false]);
}
const walker = document.createTreeWalker(col, NodeFilter.SHOW_TEXT);
for (let n = walker.nextNode(); n; n = walker.nextNode()) {
  if (n.parentElement.closest('pre, code, script, style, mjx-container')) continue;
  for (const line of n.textContent.split('\\n')) if (/^\\s*python3? -m ddpm \\S+ --/.test(line)) prose.push(line.trim());
}
return {code, prose};
"""

_PHONE_FIGURES = """
// every loaded image of the article: its rendered width over its pixel width (the scale its text is drawn at)
const col = document.querySelector('article.bd-article') || document.body;
return Array.from(col.querySelectorAll('img')).filter(i => i.complete && i.naturalWidth > 0).map(i => ({
  src: (i.getAttribute('src') || '').split('/').pop().slice(0, 40), svg: /\\.svg(\\?|$)/i.test(i.currentSrc || i.src),
  natural: i.naturalWidth, shown: i.getBoundingClientRect().width}));
"""

_EQUATION_REACH = """
// every displayed equation: at scrollLeft 0 its content must not start left of its box, and the box's scroll
// range must reach its right end (every part can be scrolled into view)
const col = document.querySelector('article.bd-article') || document.body;
const out = [];
for (const box of col.querySelectorAll('div.math')) {
  if (!(box.offsetWidth || box.offsetHeight)) continue;
  box.scrollLeft = 0;
  const b = box.getBoundingClientRect();
  let lo = Infinity, hi = -Infinity;
  for (const m of box.querySelectorAll('mjx-math')) {
    const r = m.getBoundingClientRect();
    if (r.width === 0) continue;
    lo = Math.min(lo, r.left); hi = Math.max(hi, r.right);
  }
  if (lo === Infinity) continue;
  const label = ((box.querySelector('mjx-container') || box).getAttribute('aria-label') || '').trim().replace(/\\s+/g, ' ').slice(0, 60);
  if (lo < b.left - 1) out.push('starts ' + Math.round(b.left - lo) + ' px left of its box: ' + label);
  else if (hi - b.left > box.scrollWidth + 1) out.push('ends ' + Math.round(hi - b.left - box.scrollWidth) + ' px beyond the scroll range: ' + label);
}
return out;
"""


_AXE_RUN = """
// axe-core's rules of the given tags, less its experimental ones (what axe runs by default), less the skipped
const [tags, skip] = arguments;
const done = arguments[arguments.length - 1];
const rules = axe.getRules(tags).filter(r => !r.tags.includes('experimental') && !skip.includes(r.ruleId)).map(r => r.ruleId);
axe.run(document, {resultTypes: ['violations'], runOnly: {type: 'rule', values: rules}}).then(
  r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                     nodes: v.nodes.slice(0, 3).map(n => n.target.join(' ') + ' ' + (n.failureSummary || '').split('\\n').slice(1, 2).join(''))}))),
  e => done([{id: 'axe-failed', impact: 'critical', help: String(e), nodes: []}]));
"""


@functools.lru_cache(maxsize=None)
def _axe_source() -> str:
    if not AXE_JS.is_file():
        pytest.fail(f"{AXE_JS} missing: make install (npm ci installs axe-core as package-lock.json pins it)",
                    pytrace=False)
    return AXE_JS.read_text("utf-8")


def _visit(drivers, base_url: str, page: str, width: int) -> dict:
    """Every page is loaded once per session in each browser (the two browsers at once, in two threads); every
    check of a page and width reads what that visit measured."""
    key = (page, width)
    if key not in _VISITS:
        from concurrent.futures import ThreadPoolExecutor

        def visit_all(w):
            for p in [page, *PAGES]:
                if (p, w) not in _VISITS:
                    _VISITS[(p, w)] = _visit_one(drivers, base_url, p, w)

        with ThreadPoolExecutor(max_workers=len(WIDTHS)) as pool:
            for f in [pool.submit(visit_all, w) for w in WIDTHS]:
                f.result()
    return _VISITS[key]


def _visit_one(drivers, base_url: str, page: str, width: int) -> dict:
    drv = drivers[width]
    phone = width == PHONE_WIDTH
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
        v["commands"] = drv.execute_script(_COMMANDS)
    else:
        v["phone_figures"] = drv.execute_script(_PHONE_FIGURES)
        v["equations"] = drv.execute_script(_EQUATION_REACH)
    v["layout"] = drv.execute_script(_LAYOUT)
    drv.execute_script(_axe_source())
    v["axe"] = drv.execute_async_script(_AXE_RUN, AXE_TAGS, AXE_SKIP_AT_PHONE if phone else [])
    if SHOTS:
        _screenshot(drv, f"{'phone' if phone else 'desktop'}-{page}", Path(SHOTS), phone)
    return v


def _check_visit(drivers, v: dict, name: str, problems: list[str]) -> None:
    """Fail with a screenshot of the page in the visit's browser (reloaded: other tests moved on since)."""
    if not problems:
        return
    drv = drivers[v["width"]]
    _load(drv, _page_url(drv, v["page"]))
    shot = _screenshot(drv, name, FAILURES, v["phone"])
    pytest.fail(f"{name}: {len(problems)} problem(s) (screenshot {shot}):\n  " + "\n  ".join(problems[:40]),
                pytrace=False)


def _page_url(drv, page: str) -> str:
    parts = urllib.parse.urlsplit(drv.current_url)
    return f"{parts.scheme}://{parts.netloc}/{page}.html"


WIDTHS = [DESKTOP_WIDTH, PHONE_WIDTH]
PAGE_WIDTHS = [(p, w) for p in PAGES for w in WIDTHS]  # page by page: both browsers, then the next page


def _ruff_line_length() -> int:
    import tomllib

    return int(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["line-length"])


@pytest.mark.parametrize("page, width", PAGE_WIDTHS)
def test_nothing_sticks_out_of_the_column(page, width, site, base_url, drivers):
    """At both widths nothing sticks out unless it scrolls in its own box with a cue; at 1280 px no code, maths,
    table or figure is wider than the column, scroll box or not; at 390 px every displayed equation can be
    scrolled into view whole (it starts at its box's left edge)."""
    v = _visit(drivers, base_url, page, width)
    m = v["layout"]
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
    else:
        problems += [f"equation cut at {width} px: {e}" for e in v["equations"]]
    _check_visit(drivers, v, f"layout-{width}-{page}", problems)


def test_code_column_holds_the_line_length(site, base_url, drivers):
    """The formatter's line length (pyproject.toml [tool.ruff]) fits a code cell at 1280 px."""
    n = _ruff_line_length()
    chars = [(p, _visit(drivers, base_url, p, DESKTOP_WIDTH)["layout"]["codeChars"]) for p in CHAPTERS]
    short = [f"{p}: {c:.1f}" for p, c in chars if c is not None and c < n]
    assert any(c for _, c in chars), "no code cell found in the chapters"
    assert not short, f"a code cell at {DESKTOP_WIDTH} px holds fewer than line-length = {n} characters: {short}"


def _figure_font_px() -> float:
    """The figures' tick-label size in CSS px at their own pixel size: ``font_size`` of ddpm.notebook.setup_figures
    (points, read from its source: importing it loads torch) at the figures' 100 dpi (SVG: 96 px per inch)."""
    import ast

    tree = ast.parse((ROOT / "ddpm" / "notebook.py").read_text())
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "setup_figures")
    kw = dict(zip([a.arg for a in fn.args.kwonlyargs], fn.args.kw_defaults))
    return float(ast.literal_eval(kw["font_size"])) * 96 / 72  # the smaller of 100 dpi (PNG) and 96 (SVG)


@pytest.mark.parametrize("page", PAGES)
def test_phone_figures_are_legible(page, site, base_url, drivers):
    """At 390 px a figure's text is drawn at least MIN_FIGURE_TEXT_PX tall: a wide figure keeps its scale and
    scrolls in its box rather than shrinking to the column."""
    v = _visit(drivers, base_url, page, PHONE_WIDTH)
    font = _figure_font_px()
    problems = [f"{f['src']}: drawn at {f['shown'] / f['natural']:.2f} of its size, text about "
                f"{font * f['shown'] / f['natural']:.1f} px (< {MIN_FIGURE_TEXT_PX} px)"
                for f in v["phone_figures"] if font * f["shown"] / f["natural"] < MIN_FIGURE_TEXT_PX - 0.05]
    _check_visit(drivers, v, f"phone-figures-{page}", problems)


@pytest.mark.parametrize("page, width", PAGE_WIDTHS)
def test_accessibility_audit(page, width, site, base_url, drivers):
    """axe-core (npm, pinned) finds no serious or critical violation, nor any of AXE_ALWAYS (headings order,
    landmarks, page language ...) whatever its impact."""
    v = _visit(drivers, base_url, page, width)
    bad = [x for x in v["axe"] if x["impact"] in ("serious", "critical") or x["id"] in AXE_ALWAYS]
    problems = [f"{x['id']} ({x['impact']}): {x['help']}; e.g. " + " | ".join(x["nodes"]) for x in bad]
    assert not problems, f"{page} at {width} px: axe-core {AXE_VERSION}:\n  " + "\n  ".join(problems)


def test_maths_is_readable_by_screen_readers(site):
    """Build-time CommonHTML draws glyphs with CSS: every formula keeps its TeX source as its accessible name."""
    for f in CHAPTERS:
        html = (site / f"{f}.html").read_text("utf-8", "replace")
        containers = re.findall(r'<mjx-container\b(?:[^>"]|"[^"]*")*>', html)
        unnamed = [c[:120] for c in containers if 'role="math"' not in c or not re.search(r'aria-label="[^"]+"', c)]
        assert containers and not unnamed, f"{f}: {len(unnamed)} formula(s) without role=math and a TeX aria-label"


def _cli_parser():
    import ddpm.cli

    return ddpm.cli._parser()


def test_commands_copy_paste(site, base_url, drivers):
    """Every shell command shown on the site is plain ASCII where it matters (no smart dashes or quotes) and, if it
    runs the package's CLI, parses with the CLI's own argparse parser (in-process); no command is set as prose."""
    import contextlib
    import io
    import shlex

    parser = _cli_parser()
    problems, seen = [], 0
    for page in PAGES:
        cmds = _visit(drivers, base_url, page, DESKTOP_WIDTH)["commands"]
        problems += [f"{page}: a command set as prose, not literal code: {c!r}" for c in cmds["prose"]]
        for cmd, whole in cmds["code"]:
            seen += 1
            cmd = re.sub(r"^\$\s*", "", cmd)
            smart = re.findall(r"[\u2010-\u2015\u2018-\u201f\u2212\u00a0]", cmd)
            if smart:
                problems.append(f"{page}: {cmd!r} holds {''.join(smart)!r}: it does not copy-paste")
                continue
            try:
                words = shlex.split(cmd, comments=True)
            except ValueError as e:
                problems.append(f"{page}: {cmd!r} is not a shell command line ({e})")
                continue
            m = re.match(r"(?:python3? -m ddpm|ddpm)\s", cmd)
            if not m or "..." in words or re.search(r"[{}<>\[\]]", cmd):
                continue  # not the CLI, or a synopsis ("python -m ddpm {train,sample}"), not a command
            args = words[3:] if words[0].startswith("python") else words[1:]
            if not whole and not any(w.startswith("-") for w in args):
                continue  # inline code naming a subcommand in a sentence ("python -m ddpm sample writes ...")
            err = io.StringIO()
            try:
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    parser.parse_args(args)
            except SystemExit as e:
                if e.code not in (0, None):  # --help exits 0
                    problems.append(f"{page}: {cmd!r}: the CLI's parser says {err.getvalue().strip()!r}")
    assert seen, "no shell command found on the site: is the intro's set-up block still there?"
    assert not problems, f"{len(problems)} command(s) that do not copy-paste:\n  " + "\n  ".join(problems)


LEFTOVER = re.compile(
    r"(?<![\w/.-])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}(?![\w-])"  # a commit hash (hex, digits and letters)
    r"|\b[\w./-]+\.(?:py|json)\b"  # a script or result file
    r"|\bglue\(")  # a myst-nb call


@pytest.mark.parametrize("page", PAGES)
def test_reader_text_has_no_leftovers_of_its_making(page, site, base_url, drivers):
    """Outside code cells and code blocks a reader page names no commit hash, no .py/.json file, no glue(."""
    t = _visit(drivers, base_url, page, DESKTOP_WIDTH)["text"]
    problems = []
    for mm in LEFTOVER.finditer(t["prose"]):
        a, b = max(0, mm.start() - 50), mm.end() + 30
        problems.append(f"{mm.group(0)!r} in ...{' '.join(t['prose'][a:b].split())}...")
    assert not problems, f"{page}: {len(problems)} leftover(s):\n  " + "\n  ".join(problems[:40])


@pytest.mark.parametrize("page", PAGES)
def test_titles_do_not_double_the_chapter_number(page, site, base_url, drivers):
    """The tab title, the page's h1 and the prev/next links say a chapter's number once ("4. The evidence lower
    bound", not "4. Chapter 4: ...")."""
    t = _visit(drivers, base_url, page, DESKTOP_WIDTH)["text"]
    doubled = re.compile(r"\bChapter\s+\d+\s*[:.]|^\s*(\d+)\.\s+\1\b")
    problems = [f"{where}: {text.strip()!r}" for where, text in
                (("tab title", t["title"]), ("h1", t["h1"]), *(("prev/next", x) for x in t["prevnext"]))
                if doubled.search(" ".join(text.split()))]
    assert not problems, f"{page}: the chapter number said twice:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("page", PAGES)
def test_every_figure_has_a_caption_and_alt_text(page, site, base_url, drivers):
    v = _visit(drivers, base_url, page, DESKTOP_WIDTH)
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
    _check_visit(drivers, v, f"figures-{page}", problems)


@pytest.mark.parametrize("page", PAGES)
def test_reader_text_has_no_internal_labels(page, site, base_url, drivers):
    t = _visit(drivers, base_url, page, DESKTOP_WIDTH)["text"]
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


def _shared(url: str) -> bool:
    """A file every page may load (theme, scripts, styles, fonts, the search index): the browser downloads it
    once for the site."""
    path = urllib.parse.urlsplit(url).path
    return "/_static/" in path or path.endswith("/searchindex.js")


@pytest.mark.parametrize("page", PAGES)
def test_page_weight(page, site, base_url, drivers):
    """A page's own bytes (its HTML, its figures) stay under PAGE_BUDGET: what a reader downloads for a second page."""
    files = _visit(drivers, base_url, page, DESKTOP_WIDTH)["files"]
    own = [(u, int(b)) for u, b in files if not _shared(u)]
    total = sum(b for _, b in own)
    biggest = sorted(own, key=lambda f: -f[1])[:6]
    assert total <= PAGE_BUDGET, (
        f"{page}: its own files are {total / 1e6:.2f} MB > {PAGE_BUDGET / 1e6:.1f} MB; biggest: "
        + ", ".join(f"{urllib.parse.urlsplit(u).path.rsplit('/', 1)[-1][:40]} {b / 1e3:.0f} kB" for u, b in biggest))


def test_shared_assets_weight(site, base_url, drivers):
    """The files pages share (``_static``: theme, scripts, styles, fonts), each counted once over every page."""
    shared: dict[str, int] = {}
    for page in PAGES:
        for u, b in _visit(drivers, base_url, page, DESKTOP_WIDTH)["files"]:
            if _shared(u):
                shared[urllib.parse.urlsplit(u).path] = max(int(b), shared.get(urllib.parse.urlsplit(u).path, 0))
    total = sum(shared.values())
    biggest = sorted(shared.items(), key=lambda f: -f[1])[:6]
    assert total <= SHARED_BUDGET, (
        f"the shared files are {total / 1e6:.2f} MB > {SHARED_BUDGET / 1e6:.1f} MB; biggest: "
        + ", ".join(f"{p.rsplit('/', 1)[-1][:40]} {b / 1e3:.0f} kB" for p, b in biggest))


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


def test_phone_menus_open_and_close(site, base_url, drivers):
    """At 390 px the menu (☰) and "On this page" open on a tap and close on Escape; "On this page" closes when one
    of its links is tapped (the reader goes to that section, not back to a drawer over it)."""
    driver = drivers[PHONE_WIDTH]
    page = next(p for p in CHAPTERS)
    problems = []
    _load(driver, f"{base_url}/{page}.html")
    is_open = ("const d = document.getElementById(arguments[0]); return !!d && d.open && "
               "d.getBoundingClientRect().width > 0 && d.querySelectorAll('a').length > 0")
    for label, selector, dialog in (("menu (☰)", ".primary-toggle", "pst-primary-sidebar-modal"),
                                    ("On this page", ".secondary-toggle", "pst-secondary-sidebar-modal")):
        btn = _visible_button(driver, selector)
        if btn is None:
            problems.append(f"no visible {label} button at {PHONE_WIDTH} px")
            continue
        btn.click()
        time.sleep(0.4)
        if not driver.execute_script(is_open, dialog):
            problems.append(f"{label}: a click does not open it (#{dialog})")
            continue
        driver.execute_script("document.getElementById(arguments[0]).dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape', bubbles: true}))", dialog)
        time.sleep(0.3)
        if driver.execute_script("return document.getElementById(arguments[0]).open", dialog):
            problems.append(f"{label}: Escape does not close it")
    btn = _visible_button(driver, ".secondary-toggle")
    if btn is not None:
        btn.click()
        time.sleep(0.4)
        links = [a for a in driver.find_elements("css selector", "#pst-secondary-sidebar-modal a[href^='#']")
                 if driver.execute_script(_VISIBLE, a)]
        if not links:
            problems.append('"On this page" shows no section link')
        else:
            links[min(2, len(links) - 1)].click()
            time.sleep(0.4)
            if driver.execute_script("return document.getElementById('pst-secondary-sidebar-modal').open"):
                problems.append('"On this page" stays open after a tap on one of its links')
    if problems:
        shot = _screenshot(driver, "phone-menus", FAILURES, phone=True)
        problems.append(f"screenshot {shot}")
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


def test_cheatsheet_pdf_has_at_most_four_pages(site, tmp_path):
    """The PDF ``make cheatsheet`` prints (the site build does not): printed here again into a temporary copy of
    the page's folder, so the test checks what the target makes, built or not."""
    spec = importlib.util.spec_from_file_location("ddpm_cheatsheet_pdf", ROOT / "scripts" / "cheatsheet_pdf.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    pdf = site / mod.CHEATSHEET_PDF
    if not pdf.is_file():
        copy = tmp_path / "html"
        shutil.copytree(site, copy, ignore=shutil.ignore_patterns("_sources", "_images", "*.ipynb"))
        pdf = mod.print_cheatsheet(copy)
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


# ----------------------------------------------------------------------------- pins and the build log
def _site_pins() -> dict[str, str]:
    """The pins of requirements.txt's website block (from its "# the book's website" line to the next comment)."""
    pins, inside = {}, False
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.startswith("#"):
            inside = line.startswith("# the book's website") or (inside and not pins)
            continue
        if inside and "==" in line:
            name, version = line.split("#")[0].strip().split("==")
            pins[name] = version
    return pins


def test_site_packages_are_the_pinned_versions():
    from importlib.metadata import PackageNotFoundError, version

    pins = _site_pins()
    assert {"sphinx-book-theme", "pydata-sphinx-theme", "jupyter-book", "Sphinx"} <= set(pins), (
        f"requirements.txt pins no theme or Sphinx in its website block: {sorted(pins)}")
    wrong = []
    for name, pinned in pins.items():
        try:
            got = version(name)
        except PackageNotFoundError:
            got = "not installed"
        if got != pinned:
            wrong.append(f"{name}: {got}, pinned {pinned}")
    assert not wrong, "the site is built with other versions than requirements.txt pins (pip install -r " \
                      "requirements.txt):\n  " + "\n  ".join(wrong)
    lock = json.loads((ROOT / "package-lock.json").read_text())["packages"]
    spec = json.loads((ROOT / "package.json").read_text())["devDependencies"]["axe-core"]
    assert spec == lock["node_modules/axe-core"]["version"], "package.json and package-lock.json disagree on axe-core"
    if AXE_JS.is_file():
        installed = json.loads((AXE_JS.parent / "package.json").read_text())["version"]
        assert installed == spec, f"node_modules holds axe-core {installed}, pinned {spec}: make install"


BUILD_LOG = SITE.parent / "build.log"  # make book writes it


def test_build_log_has_no_warnings(site):
    """The log of the build that made the site (``make book``: ``_build/build.log``) names every page of the toc
    and has no warning or error."""
    if not BUILD_LOG.is_file():
        pytest.fail(f"{BUILD_LOG} missing: build with make book (it keeps the build's log)", pytrace=False)
    log = re.sub(r"\x1b\[[0-9;]*m", "", BUILD_LOG.read_text("utf-8", "replace"))
    bad = [line for line in log.splitlines() if re.search(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback", line)]
    assert not bad, f"the build warned ({BUILD_LOG}):\n  " + "\n  ".join(bad[:30])
    assert "build succeeded" in log or "Finished generating HTML" in log, f"{BUILD_LOG}: the build did not finish"
