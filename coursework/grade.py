"""Grade submitted coursework notebooks offline.

    python -m coursework.grade SUBMISSION [--grader _build/coursework/grader] [--report report.json]

SUBMISSION is a notebook or a folder of them. Each is executed in a fresh kernel, in an empty working
folder that holds only the chapter's data, with a time limit per cell and per notebook. The checks that
decide the score are the grader's own (from ``manifest.json``), inserted after each exercise's starting
cell; whatever check cells a submission contains are ignored. For every exercise the grader prints
``passed`` or ``FAILED`` with what was checked, what was expected and what came out, then a last line
``score: P/M`` per notebook, and writes a JSON report. A broken submission (not JSON, a deleted
exercise cell, an endless loop, an error, a flood of output, reading the coursework's files) fails the
exercises it touches; the grader itself does not crash or hang, and other submissions are unaffected.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat

from .markup import CHECK, PARAMS, STUB, exercise_id, source, tags

ROOT = Path(__file__).resolve().parents[1]
CELL_TIMEOUT = 300  # seconds per cell: the book's slowest cell (training in chapter 6) takes about a minute
NOTEBOOK_TIMEOUT = 900  # seconds per notebook
OUTPUT_LIMIT = 100_000  # characters of output per cell
# A submission may not read the coursework's own files (the instructor edition, the grader's manifest,
# any notebook): answers must be the student's.
_READS_COURSEWORK = re.compile(r"instructor|manifest\.json|exercise-solution|\.ipynb\b|coursework/grader")
_PRELUDE = "import importlib as _cw_importlib, ddpm.grading as grading\ngrading = _cw_importlib.reload(grading)\n"


def _fail(message: str) -> dict:
    return {"passed": False, "message": message}


def prepare(nb, manifest_entry: dict, variant: int):
    """The notebook to execute and, per exercise, a result decided before execution (or None).

    Returns (notebook, {id: check cell index in the prepared notebook}, {id: [student cell indices]},
    {id: early failure message}).
    """
    ids = [e["id"] for e in manifest_entry["exercises"]]
    checks = {e["id"]: e["check"] for e in manifest_entry["exercises"]}
    cells = [c for c in nb.cells if CHECK not in tags(c) and "coursework-note" not in tags(c)]
    # the variant is the grader's, whatever the submission says
    params = [c for c in cells if PARAMS in tags(c)]
    if params:
        for c in params:
            c["source"] = re.sub(r"^VARIANT\s*=.*$", f"VARIANT = {variant}", source(c), flags=re.M)
    else:
        cells.insert(0, nbformat.v4.new_code_cell(f"VARIANT = {variant}", metadata={"tags": [PARAMS]}))
    stub_at = {}
    for i, c in enumerate(cells):
        if STUB in tags(c) and exercise_id(c) in checks and exercise_id(c) not in stub_at:
            stub_at[exercise_id(c)] = i
    early: dict[str, str] = {}
    for eid in ids:
        if eid not in stub_at:
            early[eid] = (
                f"the starting cell of {eid} is missing (deleted, or its cell metadata was lost): "
                "put your answer back into that cell of a fresh student edition"
            )
    # each check goes after its starting cell and the student's own cells below it, before the next exercise
    present = sorted(stub_at.items(), key=lambda kv: kv[1])
    insert_after = {}
    for k, (eid, i) in enumerate(present):
        nxt = present[k + 1][1] if k + 1 < len(present) else len(cells)
        # back up over markdown (the next exercise's statement) so the check sits right under the answer
        j = nxt
        while j - 1 > i and cells[j - 1].get("cell_type") == "markdown":
            j -= 1
        insert_after[eid] = (i, j)
    owned: dict[str, list[int]] = {}
    out, check_at = [], {}
    boundaries = {end: eid for eid, (start, end) in insert_after.items()}
    spans = {eid: range(start, end) for eid, (start, end) in insert_after.items()}
    for i, c in enumerate(cells + [None]):
        if i in boundaries:
            eid = boundaries[i]
            check_at[eid] = len(out)
            out.append(nbformat.v4.new_code_cell(_PRELUDE + checks[eid], metadata={"tags": [CHECK], "exercise": eid}))
        if c is None:
            break
        for eid, span in spans.items():
            if i in span and c.get("cell_type") == "code":
                owned.setdefault(eid, []).append(len(out))
                if _READS_COURSEWORK.search(source(c)) and eid not in early:
                    early[eid] = "your code reads the coursework's own files (a notebook, the instructor edition or the grader); answers must be your own"
        out.append(c)
    prepared = copy.deepcopy(nb)
    prepared.cells = out
    return prepared, check_at, owned, early


def _rows(results: Path) -> list[dict]:
    """The rows the child process streamed so far (a line cut by a kill is skipped)."""
    out = []
    for line in results.read_text().splitlines() if results.exists() else []:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _kill(proc: subprocess.Popen, results: Path) -> None:
    pids = [int(r["kernel_pid"]) for r in _rows(results) if r.get("kernel_pid")]
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    for pid in [proc.pid] + pids:
        for kill in (lambda p: os.killpg(p, signal.SIGKILL), lambda p: os.kill(p, signal.SIGKILL)):
            try:
                kill(pid)
            except (ProcessLookupError, PermissionError, OSError):
                pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def execute(prepared, grader_dir: Path, cell_timeout: int, notebook_timeout: int, output_limit: int) -> tuple[dict, str | None, float]:
    """Run the prepared notebook in a child process; return ({cell index: summary}, fatal message, seconds)."""
    with tempfile.TemporaryDirectory(prefix="coursework-") as tmp:
        tmp = Path(tmp)
        work = tmp / "work"
        work.mkdir()
        if (grader_dir / "data").is_dir():
            shutil.copytree(grader_dir / "data", work / "data")
        nb_path, results = tmp / "submission.ipynb", tmp / "results.jsonl"
        nbformat.write(prepared, nb_path)
        env = dict(os.environ, PYTHONHASHSEED="0", HOME=str(tmp), MPLBACKEND="Agg", PYTHONPATH=os.environ.get("PYTHONPATH", ""))
        env.setdefault("OMP_NUM_THREADS", "1")
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "coursework._run", str(nb_path), str(results), str(work), str(cell_timeout), str(output_limit)],
            cwd=str(ROOT), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )
        fatal = None
        try:
            _, err = proc.communicate(timeout=notebook_timeout)
        except subprocess.TimeoutExpired:
            _kill(proc, results)
            fatal = f"the notebook ran past its {notebook_timeout} s limit"
        seconds = time.perf_counter() - t0
        rows, done = {}, False
        for row in _rows(results):
            if "cell" in row:
                rows[row["cell"]] = row
            elif "fatal" in row and fatal is None:
                fatal = f"the kernel stopped: {row['fatal']}"
            elif row.get("done"):
                done = True
        if fatal is None and not done:
            fatal = "the kernel stopped before the end of the notebook"
        return rows, fatal, seconds


def _chapter_of(path: Path, nb, manifest: dict) -> str | None:
    chapters = manifest["chapters"]
    meta = (nb.metadata.get("coursework") or {}).get("chapter") if nb is not None else None
    if meta in chapters:
        return meta
    if path.stem in chapters:
        return path.stem
    by_file = {v["file"]: k for k, v in chapters.items()}
    return by_file.get(path.name)


def grade_notebook(path: Path, manifest: dict, grader_dir: Path, cell_timeout: int = CELL_TIMEOUT,
                   notebook_timeout: int = NOTEBOOK_TIMEOUT, output_limit: int = OUTPUT_LIMIT) -> dict:
    """Grade one submitted notebook; never raises for a bad submission."""
    report = {"notebook": str(path), "chapter": None, "score": 0, "max": 0, "exercises": [], "errors": [], "seconds": 0.0}
    nb, problem = None, None
    try:
        nb = nbformat.reads(path.read_text(encoding="utf-8", errors="replace"), as_version=4)
        if not isinstance(nb.get("cells"), list):
            raise ValueError("it has no list of cells")
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        problem = f"not a readable notebook ({first[:200]})"
        nb = None
    chapter = _chapter_of(path, nb, manifest)
    if chapter is None:
        known = ", ".join(v["file"] for v in manifest["chapters"].values())
        report["errors"].append(problem or f"not a notebook of this coursework (its metadata and name match none of: {known})")
        return report
    entry = manifest["chapters"][chapter]
    ids = [e["id"] for e in entry["exercises"]]
    report.update(chapter=chapter, max=len(ids))
    if nb is None:
        report["errors"].append(problem)
        report["exercises"] = [{"id": e, **_fail(f"not graded: the file is {problem}")} for e in ids]
        return report
    try:
        prepared, check_at, owned, early = prepare(nb, entry, manifest["variant"])
    except Exception as e:  # a structurally odd notebook: fail its exercises, never the grader
        report["errors"].append(f"could not prepare the notebook: {type(e).__name__}: {e}")
        report["exercises"] = [{"id": e_, **_fail("not graded: the notebook's cells could not be read")} for e_ in ids]
        return report
    rows, fatal, seconds = execute(prepared, grader_dir, cell_timeout, notebook_timeout, output_limit)
    report["seconds"] = round(seconds, 1)
    if fatal:
        report["errors"].append(fatal)
    results = []
    for eid in ids:
        if eid in early:
            results.append({"id": eid, **_fail(early[eid])})
            continue
        mine = [rows.get(i) for i in owned.get(eid, [])]
        big = [r for r in mine if r and r["over_limit"]]
        crash = next((r["error"] for r in mine if r and r["error"]), None)
        row = rows.get(check_at[eid])
        if big:
            results.append({"id": eid, **_fail(f"your code printed {big[0]['output_bytes']:,} characters; the limit is {output_limit:,} per cell")})
            continue
        if row is None:
            results.append({"id": eid, **_fail(f"its check was not reached: {fatal or 'execution stopped'}")})
            continue
        if row["error"] is None and f"{eid}: passed" in row["stdout"]:
            results.append({"id": eid, "passed": True, "message": "passed"})
            continue
        if row["error"] is not None:
            msg = row["error"]["evalue"] if row["error"]["ename"] == "ExerciseFailed" else f"{row['error']['ename']}: {row['error']['evalue']}"
            msg = re.sub(rf"^{re.escape(eid)}: failed: ", "", msg)
        else:
            msg = "the check did not report a pass"
        if crash is not None:
            if crash["ename"] == "KeyboardInterrupt":
                msg += f" (your starting cell was stopped after the {cell_timeout} s limit per cell)"
            else:
                msg += f" (your starting cell raised {crash['ename']}: {crash['evalue'][:200]})"
        results.append({"id": eid, **_fail(msg)})
    report["exercises"] = results
    report["score"] = sum(r["passed"] for r in results)
    return report


def submissions(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    return [path]


def load_manifest(grader_dir: Path) -> dict:
    f = grader_dir / "manifest.json"
    if not f.is_file():
        raise ValueError(f"no grader at {grader_dir} (missing manifest.json): run 'make coursework' first")
    return json.loads(f.read_text())


def format_report(r: dict) -> str:
    lines = [f"== {r['notebook']}" + (f" ({r['chapter']})" if r["chapter"] else "")]
    lines += [f"  note: {e}" for e in r["errors"]]
    width = max([len(e["id"]) for e in r["exercises"]] + [8])
    for e in r["exercises"]:
        lines.append(f"  {e['id']:<{width}}  passed" if e["passed"] else f"  {e['id']:<{width}}  FAILED: {e['message']}")
    lines.append(f"score: {r['score']}/{r['max']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m coursework.grade", description=__doc__.splitlines()[0])
    ap.add_argument("submission", help="a notebook or a folder of notebooks")
    ap.add_argument("--grader", default=str(ROOT / "_build" / "coursework" / "grader"), help="the grader folder made by 'make coursework'")
    ap.add_argument("--report", default=None, help="JSON report path (default: grade-report.json beside the submission)")
    ap.add_argument("--cell-timeout", type=int, default=CELL_TIMEOUT, help=f"seconds per cell (default {CELL_TIMEOUT})")
    ap.add_argument("--notebook-timeout", type=int, default=NOTEBOOK_TIMEOUT, help=f"seconds per notebook (default {NOTEBOOK_TIMEOUT})")
    ap.add_argument("--output-limit", type=int, default=OUTPUT_LIMIT, help=f"characters of output per cell (default {OUTPUT_LIMIT})")
    ap.add_argument("--jobs", type=int, default=1, help="notebooks graded at once (default 1)")
    args = ap.parse_args(argv)
    for name in ("cell_timeout", "notebook_timeout", "output_limit", "jobs"):
        if getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}", file=sys.stderr)
            return 2
    sub = Path(args.submission)
    if not sub.exists():
        print(f"error: submission {sub} does not exist (give a notebook or a folder of notebooks)", file=sys.stderr)
        return 2
    try:
        manifest = load_manifest(Path(args.grader))
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    files = submissions(sub)
    if not files:
        print(f"error: no .ipynb files in {sub}", file=sys.stderr)
        return 2

    def one(p: Path) -> dict:
        try:
            return grade_notebook(p, manifest, Path(args.grader), args.cell_timeout, args.notebook_timeout, args.output_limit)
        except Exception as e:  # the last guard: one submission never stops the others
            return {"notebook": str(p), "chapter": None, "score": 0, "max": 0, "exercises": [], "errors": [f"grader error: {type(e).__name__}: {e}"], "seconds": 0.0}

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        reports = list(pool.map(one, files))
    for r in reports:
        print(format_report(r), flush=True)
    dest = Path(args.report) if args.report else (sub if sub.is_dir() else sub.parent) / "grade-report.json"
    payload = {"variant": manifest["variant"], "commit": manifest.get("commit"), "limits": {"cell_seconds": args.cell_timeout, "notebook_seconds": args.notebook_timeout, "output_characters": args.output_limit}, "notebooks": reports}
    try:
        dest.write_text(json.dumps(payload, indent=1) + "\n")
    except OSError as e:
        print(f"error: cannot write the report {dest}: {e.strerror}", file=sys.stderr)
        return 2
    print(f"report: {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
