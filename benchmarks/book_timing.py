"""Time the execution of every notebook of the book on this machine (issue: the whole book executes
on a 2-core CPU in at most 10 minutes). Writes benchmarks/results/book_timing.json.

    python benchmarks/book_timing.py            # time only; the committed notebooks are untouched
    python benchmarks/book_timing.py --inplace  # also write the fresh outputs back (how notebooks are committed)

Each notebook runs top to bottom in a fresh kernel with book/ as its working directory, exactly as
`jupyter-book build` and nbval run it, with PYTHONHASHSEED=0 so that printed SymPy results are the
same in every process (book/conftest.py sets the same for nbval).
"""

from __future__ import annotations

import argparse
import sys
import json
import os
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

if __package__ in (None, ""):  # run as a file (python benchmarks/x.py): the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import environment  # noqa: E402

from scripts.toc import notebooks  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inplace", action="store_true", help="write the executed notebooks back")
    ap.add_argument("--only", nargs="*", default=None, help="notebook stems to run (default: all in the toc)")
    args = ap.parse_args()
    os.environ["PYTHONHASHSEED"] = "0"  # inherited by the kernels
    rows = []
    for path in notebooks():
        if args.only is not None and path.stem not in args.only:
            continue
        nb = nbformat.read(path, as_version=4)
        t0 = time.perf_counter()
        NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
        rows.append({"notebook": str(path.relative_to(ROOT)), "seconds": round(time.perf_counter() - t0, 1)})
        if args.inplace:
            nbformat.write(nb, path)
        print(f"{rows[-1]['notebook']:45s} {rows[-1]['seconds']:7.1f} s", flush=True)
    out = {
        "benchmark": "book_timing",
        "what": "wall time to execute each notebook in a fresh kernel (nbclient), one after another",
        "notebooks": rows,
        "total_seconds": round(sum(r["seconds"] for r in rows), 1),
        "limit_seconds": 600,
        "machine": environment("cpu"),
    }
    if args.only is not None:
        return  # a partial run is not a timing of the book
    dest = ROOT / "benchmarks" / "results" / "book_timing.json"
    dest.write_text(json.dumps(out, indent=1) + "\n")
    print(f"total {out['total_seconds']} s -> {dest.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
