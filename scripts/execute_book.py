"""Execute the book's notebooks into jupyter-book's execution cache, as many at a time as the machine
has cores (the chapters set one torch thread each), before ``jupyter-book build`` reads them.

    python -m scripts.execute_book          # what `make book` runs first

The build (``execute_notebooks: cache`` in ``_config.yml``) then takes every notebook's outputs from
the cache instead of executing it again, and nbval (``book/conftest.py``) compares the committed
outputs with the same cached execution: one execution of each notebook per run of the tests.

jupyter-cache matches a notebook by its code, not by the package it imports, so the cache also records
a fingerprint of ``ddpm/`` and ``book/data/`` (``FINGERPRINT_FILE``): when those change, every
notebook is executed afresh, and nbval trusts only a cache whose fingerprint is the current one.
Kernels run with ``PYTHONHASHSEED=0``, as the committed outputs were made (SymPy prints in hash order).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from pathlib import Path

from scripts import toc

ROOT = toc.ROOT
CACHE = ROOT / "_build" / ".jupyter_cache"  # where jupyter-book's myst-nb looks (next to _build/html)
FINGERPRINT_FILE = "ddpm-fingerprint.txt"
TIMEOUT = 600  # seconds per cell, as _config.yml's execute.timeout
TIMINGS = ROOT / "benchmarks" / "results" / "book_timing.json"


def fingerprint(root: Path = ROOT) -> str:
    """sha256 of every file the notebooks import or read besides themselves (``ddpm/``, ``book/data/``)."""
    h = hashlib.sha256()
    files = sorted(p for d in ("ddpm", "book/data") for p in (root / d).rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts)
    for p in files:
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def cache_is_current(cache: Path = CACHE, root: Path = ROOT) -> bool:
    """True when the cache's executions were made with today's ``ddpm/`` and ``book/data/``."""
    f = cache / FINGERPRINT_FILE
    return f.is_file() and f.read_text().strip() == fingerprint(root)


def longest_first(notebooks: list[Path]) -> list[Path]:
    """The notebooks, the slowest (by the last committed timing) first, so the pool ends together."""
    try:
        seconds = {r["notebook"]: r["seconds"] for r in json.loads(TIMINGS.read_text())["notebooks"]}
    except (OSError, KeyError, ValueError, TypeError):
        return notebooks
    return sorted(notebooks, key=lambda p: -seconds.get(str(p.relative_to(ROOT)), 0.0))


def execute(notebooks: list[Path], cache_dir: Path = CACHE, root: Path = ROOT) -> list[str]:
    """Execute into ``cache_dir`` every notebook that has no current execution there, in parallel;
    return the notebooks that failed (their tracebacks printed). A cache made with another ``ddpm/``
    is emptied first."""
    from jupyter_cache import get_cache
    from jupyter_cache.executors import load_executor

    os.environ["PYTHONHASHSEED"] = "0"  # inherited by the kernels
    log = logging.getLogger("execute_book")
    cache = get_cache(str(cache_dir))
    stamp = cache_dir / FINGERPRINT_FILE
    if not cache_is_current(cache_dir, root):
        cache.clear_cache()  # executions made with another ddpm: none may be reused
    uris = [str(nb) for nb in notebooks]
    for uri in uris:
        cache.add_nb_to_project(uri)
    executor = load_executor("local-parallel", cache=cache, logger=log)
    result = executor.run_and_cache(filter_uris=uris, timeout=TIMEOUT, allow_errors=False)
    failed = result.excepted + result.errored
    for uri in failed:
        print(f"{uri} failed:\n{cache.get_project_record(uri).traceback or '(no traceback)'}", file=sys.stderr)
    if not failed:
        stamp.write_text(fingerprint(root) + "\n")
    return failed


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return 1 if execute(longest_first(toc.notebooks())) else 0


if __name__ == "__main__":
    sys.exit(main())
