"""Print the built cheat sheet page to PDF with headless Chromium (its print CSS: A4): ``make cheatsheet``.

``python scripts/cheatsheet_pdf.py [SITE_DIR]`` (default ``_build/html``) writes ``SITE_DIR/cheatsheet.pdf``,
the file the cheat sheet page links, and a copy next to the site (``_build/cheatsheet.pdf``). The site build
does not run this; ``tests/test_site.py`` checks the PDF when it is there.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--no-pdf-header-footer",
                  "--disable-extensions", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1")
CHEATSHEET_PAGE = "book/cheatsheet.html"
CHEATSHEET_PDF = "cheatsheet.pdf"  # in the site's root: the cheat sheet page links ../cheatsheet.pdf


def print_cheatsheet(site: Path) -> Path:
    """``site/cheatsheet.pdf`` (and a copy in ``site``'s parent folder); one-line errors naming the fix."""
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
    shutil.copyfile(out, site.parent / CHEATSHEET_PDF)
    return out


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) > 1 or (args and args[0].startswith("-")):
        print("usage: python scripts/cheatsheet_pdf.py [SITE_DIR (default _build/html)]", file=sys.stderr)
        return 2
    site = Path(args[0]) if args else ROOT / "_build" / "html"
    try:
        out = print_cheatsheet(site)
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out} (and {site.parent / CHEATSHEET_PDF})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
