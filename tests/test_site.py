"""The built book, checked in a real browser (headless Debian chromium through Selenium), offline.

Run after the book is built (``make book``, i.e. ``jupyter-book build . -W``)::

    pytest tests/test_site.py

The site is ``_build/html`` unless ``DDPM_SITE_DIR`` names another built site. If it is not built
the tests FAIL ("run make book first"); they skip only when ``DDPM_SITE_SKIP_UNBUILT=1`` is set.
The site is served on 127.0.0.1 (a free port) and chromium runs with every host name except
127.0.0.1 resolving to nothing, as on a machine with no network. Every page of ``_toc.yml`` is
loaded and checked:

- every ``.math`` node holds an ``mjx-container`` and MathJax reports no error (no ``mjx-merror``,
  no undefined macro);
- every image has loaded (``naturalWidth > 0``);
- every request the page made went to 127.0.0.1 (DevTools performance log; data: and blob: allowed);
- every internal link and local asset answers 200 (urllib), and a link's ``#anchor`` exists.

Plus: no HTML or CSS file of the site loads anything from another host; the search page finds
"Jensen"; each chapter and the API page at phone width (390 px) have no horizontal overflow of the
text column.
On failure a screenshot goes to ``<site>/../site-test-failures/`` (``_build/site-test-failures/``).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SITE = Path(os.environ.get("DDPM_SITE_DIR", ROOT / "_build" / "html")).resolve()
FAILURES = SITE.parent / "site-test-failures"
SHOTS = os.environ.get("DDPM_SITE_SCREENSHOTS")  # a folder: save every page's screenshot there, pass or fail
CHROMIUM = os.environ.get("DDPM_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("DDPM_CHROMEDRIVER", "/usr/bin/chromedriver")
SEARCH_WORD = "Jensen"
PHONE_WIDTH = 390
PAGE_TIMEOUT = 60  # seconds for one page to load and typeset (MathJax on a long chapter, 2-core CPU)

pytestmark = pytest.mark.timeout(600)


# ----------------------------------------------------------------------------- the toc's pages
def toc_files(toc_path: Path = ROOT / "_toc.yml") -> list[str]:
    """Every ``file`` of the Jupyter Book toc (root, parts, chapters, sections), in reading order."""
    toc = yaml.safe_load(toc_path.read_text())
    out: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            for key in ("root", "file"):
                if key in node:
                    out.append(str(node[key]))
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []) or []:
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(toc)
    return [re.sub(r"\.(md|ipynb|rst)$", "", f) for f in out]


PAGES = toc_files()
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
const merrors = Array.from(document.querySelectorAll('mjx-merror')).map(
    e => (e.getAttribute('data-mjx-error') || e.textContent).slice(0, 120));
// MathJax's noundefined package typesets an unknown macro as red text "\\\\name", not as an merror
try {
  for (const item of (window.MathJax && MathJax.startup && MathJax.startup.document) ? MathJax.startup.document.math : []) {
    const mml = MathJax.startup.toMML(item.root);
    const m = mml.match(/<mtext mathcolor="red">(\\\\[^<]*)<\\/mtext>/);
    if (m) merrors.push('undefined macro ' + m[1] + ' in ' + String(item.math).slice(0, 60));
  }
} catch (e) { merrors.push('could not inspect MathJax output: ' + e); }
const images = Array.from(document.images).map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0}));
const urls = [];
for (const el of document.querySelectorAll('a[href], link[href], script[src], img[src], source[src], iframe[src], video[src], audio[src], object[data]')) {
  const u = el.href || el.src || el.data;
  if (typeof u === 'string') urls.push({tag: el.tagName.toLowerCase(), rel: el.getAttribute('rel') || '', url: u});
}
return {math: math.length, untypeset, merrors, images, urls,
        macros: !!(window.MathJax && MathJax.config && MathJax.config.tex && MathJax.config.tex.macros &&
                   MathJax.config.tex.macros.abar)};
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


def test_mathjax_is_bundled_and_configured(site):
    mathjax = site / "_static" / "mathjax" / "tex-chtml.js"
    assert mathjax.is_file(), "MathJax is not bundled with the site (_static/mathjax/tex-chtml.js missing)"
    assert any((site / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff")), \
        "MathJax's CHTML fonts are not bundled"
    pages_with_math = [f for f in PAGES if 'class="math' in (site / f"{f}.html").read_text("utf-8", "replace")]
    assert pages_with_math, "no page has math: is this the book?"
    for f in pages_with_math:
        html = (site / f"{f}.html").read_text("utf-8", "replace")
        assert re.search(r'<script[^>]+src="[./]*_static/mathjax/tex-chtml\.js(\?[^"]*)?"', html), f"{f}: MathJax not loaded locally"
        assert '"abar"' in html, f"{f}: the book's MathJax macros (mathjax3_config) are missing"


# ----------------------------------------------------------------------------- every page in the browser
@pytest.mark.parametrize("page", PAGES)
def test_page_renders_offline(page, site, base_url, driver):
    url = f"{base_url}/{page}.html"
    state = _load(driver, url)
    facts = driver.execute_script(_PAGE_FACTS)
    problems = []
    if state.startswith(("timeout", "mathjax failed")):
        problems.append(f"page did not finish rendering: {state}")
    if facts["math"] and not facts["macros"]:
        problems.append("MathJax runs without the book's macros (mathjax3_config not applied)")
    problems += [f"math not typeset: {t!r}" for t in facts["untypeset"]]
    problems += [f"MathJax error: {e!r}" for e in facts["merrors"]]
    problems += [f"image not loaded: {i['src']}" for i in facts["images"] if not i["ok"]]

    for req in _requests_since_last_call(driver):
        if not _is_local(req["url"]):
            problems.append(f"request left 127.0.0.1: {req['url']}")
        elif req["url"] == f"{base_url}/favicon.ico":
            continue  # the browser guesses this address itself when a page names no icon
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

    for entry in driver.get_log("browser"):
        if entry.get("level") == "SEVERE" and "/favicon.ico" not in entry.get("message", ""):
            problems.append(f"console error: {entry.get('message', '')[:200]}")
    _check(driver, f"page-{page}", problems)


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


_OVERFLOW = """
const col = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
const wide = [];
// the elements that stick out of the column (for the report): not those that scroll inside their own box
const right = col.getBoundingClientRect().right + 1;
for (const el of col.querySelectorAll('*')) {
  const r = el.getBoundingClientRect();
  if (r.width > 0 && r.right > right) {
    let p = el.parentElement, clipped = false;
    while (p && p !== col) {
      const s = getComputedStyle(p);
      if (s.overflowX !== 'visible' && p.getBoundingClientRect().right <= right) { clipped = true; break; }
      p = p.parentElement;
    }
    if (!clipped) wide.push(el.tagName.toLowerCase() + '.' + (el.className || '').toString().split(' ').join('.') +
                            ' right=' + Math.round(r.right) + ': ' + (el.textContent || '').trim().slice(0, 60));
  }
}
return {inner: window.innerWidth, docScroll: document.documentElement.scrollWidth,
        colScroll: col.scrollWidth, colClient: col.clientWidth, col: col.tagName + '.' + col.className,
        wide: wide.slice(0, 10)};
"""


@pytest.mark.parametrize("page", CHAPTERS + [p for p in PAGES if p.endswith("/api")])
def test_phone_width_has_no_horizontal_overflow(page, site, base_url, driver):
    _phone(driver)
    try:
        _load(driver, f"{base_url}/{page}.html")
        m = driver.execute_script(_OVERFLOW)
        problems = []
        if m["inner"] != PHONE_WIDTH:
            problems.append(f"viewport is {m['inner']} px wide, not {PHONE_WIDTH}")
        if m["docScroll"] > m["inner"]:
            problems.append(f"the page scrolls sideways: scrollWidth {m['docScroll']} > innerWidth {m['inner']}")
        if m["colScroll"] > m["colClient"]:
            problems.append(f"the text column {m['col']} overflows: scrollWidth {m['colScroll']} > "
                            f"clientWidth {m['colClient']}; wide elements: {m['wide']}")
        _check(driver, f"phone-{page}", problems, phone=True)
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
