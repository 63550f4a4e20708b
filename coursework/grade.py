"""Grade submitted coursework notebooks offline.

    python -m coursework.grade SUBMISSION [--grader _build/coursework/grader] [--out folder]

SUBMISSION is one notebook, or a class folder holding one notebook or one folder of notebooks per student.
Each submission runs in a sandboxed kernel of its own (``coursework/sandbox.py``: no network, no view of
the grader's files, the instructor edition, the book's sources or other submissions; limits on memory,
CPU time, processes and output). The kernel only executes the student's cells and sends back the values
of each exercise's answer names; the verdicts are computed here, in the grader's process, by the check
cells of the grader's manifest, run on that data (functions the student wrote are called in the
sandbox, on inputs chosen here, and their results compared here). Each ``grading.expect*`` call of a
check is one part: an exercise scores the share of its parts that pass.

Writes, in ``--out``: ``class.csv`` (student, exercise, points), ``report.json`` (every student), and per
student ``<student>/report.json`` and ``<student>/results.json`` (the format of Gradescope's
autograder). Grading the same submission twice gives the same per-student files, byte for byte.
"""

from __future__ import annotations

import argparse
import ast
import base64
import contextlib
import copy
import csv
import io
import json
import os
import queue
import random
import re
import resource
import select
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat

from . import wire
from .markup import CHECK, PARAMS, STUB, exercise_id, source, tags
from .sandbox import Kernel, KernelDied, Limits, SandboxUnavailable, check as check_sandbox

ROOT = Path(__file__).resolve().parents[1]
CELL_TIMEOUT = 300  # seconds per cell: the book's slowest cell (training in chapter 6) takes about a minute
NOTEBOOK_TIMEOUT = 900  # seconds per notebook
OUTPUT_LIMIT = 100_000  # characters of output per cell
CHECK_TIMEOUT = 120  # seconds for the grader to check one exercise's answers (its calls of the student's functions included)
CHECK_MEMORY = 4 * 1024**3  # bytes a check may add to the grader's address space
UID_BASE = 61000  # the kernels' unprivileged users: one per grading slot
_TRUSTED = threading.Lock()  # the checks share the grader's global generators: one check at a time


class StudentError(RuntimeError):
    """The student's function raised (in the sandbox)."""


class StudentFunction:
    """A function of the submission: calling it sends the arguments (data, or callbacks to this
    process's functions) to the sandbox and decodes what it returns as plain data."""

    def __init__(self, kernel: Kernel, name: str, timeout: float):
        self.kernel, self.__name__, self.timeout = kernel, name, timeout

    def __call__(self, *args, **kwargs):
        def callables(x):
            if callable(x):
                k = f"cb{len(self.kernel.callbacks)}"
                self.kernel.callbacks[k] = x
                return {"cb": k}
            return None

        _, reply = self.kernel.request(
            "call", self.timeout + 5, name=self.__name__, timeout=self.timeout,
            args=wire.encode(list(args), callables), kwargs=wire.encode(kwargs, callables),
        )
        if "error" in reply:
            err = reply["error"] if isinstance(reply["error"], dict) else {}
            raise StudentError(f"{str(err.get('ename', 'Error'))[:60]}: {str(err.get('evalue', ''))[:300]}")
        return _decode_answer(self.kernel, reply.get("value"), self.timeout)

    def __repr__(self):
        return f"<your function {self.__name__}>"


def _decode_answer(kernel: Kernel, value, timeout: float):
    def refs(d):
        (kind, v), = d.items()
        if kind == "callable" and isinstance(v, str):
            return StudentFunction(kernel, v, timeout)
        return wire.Opaque(str(v)[:100])

    try:
        return wire.decode(value, refs)
    except wire.WireError as e:
        return wire.Opaque(f"unreadable answer: {e}")


def _fail(eid: str, message: str, parts: int = 1) -> dict:
    return {"id": eid, "points": 0.0, "max_points": 1, "passed": False, "parts_passed": 0, "parts": parts, "message": message}


def _spans(cells, ids):
    """{id: (index of its starting cell, index where its check goes)} for the exercises present."""
    stub_at = {}
    for i, c in enumerate(cells):
        if STUB in tags(c) and exercise_id(c) in ids and exercise_id(c) not in stub_at:
            stub_at[exercise_id(c)] = i
    present = sorted(stub_at.items(), key=lambda kv: kv[1])
    spans = {}
    for k, (eid, i) in enumerate(present):
        nxt = present[k + 1][1] if k + 1 < len(present) else len(cells)
        j = nxt
        while j - 1 > i and cells[j - 1].get("cell_type") == "markdown":
            j -= 1  # the check sits right under the answer, before the next exercise's statement
        spans[eid] = (i, j)
    return spans


def prepare(nb, entry: dict, variant: int):
    """The submission's cells to run (check cells dropped, the variant set by the grader) and where
    each exercise's check goes: ``(cells, {id: (start, end)})``."""
    ids = [e["id"] for e in entry["exercises"]]
    cells = [c for c in nb.cells if isinstance(c, dict) and CHECK not in tags(c) and "coursework-note" not in tags(c)]
    for c in cells:
        if PARAMS in tags(c):
            c["source"] = re.sub(r"^VARIANT\s*=.*$", f"VARIANT = {variant}", source(c), flags=re.M)
    if not any(PARAMS in tags(c) for c in cells):
        cells.insert(0, nbformat.v4.new_code_cell(f"VARIANT = {variant}", metadata={"tags": [PARAMS]}))
    return cells, _spans(cells, set(ids))


def _noop(*args, **kwargs):
    return None


_SETUPS: dict = {}  # (setup cells, variant) -> the grader's namespace after them
_BASELINES: dict = {}  # (setup cells, variant, exercise) -> the parts its untouched starting cell passes


def torch_seed(seed: int) -> None:
    import numpy as np
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


@contextlib.contextmanager
def _default_dtype(dtype):
    import torch

    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(torch.float32)


def _quiet_ipython() -> None:
    """Some chapter cells start an IPython shell when run here: make it now, in this thread, without a
    history database (else its exit hook fails from another thread)."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    if not InteractiveShell.initialized():
        c = Config()
        c.HistoryManager.enabled = False
        InteractiveShell.instance(config=c)


def _close_figures() -> None:
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


class Trusted:
    """The grader's side of one chapter: the setup cells of the manifest, run here; then, per exercise,
    the starting cell of the manifest, the student's answers from the sandbox, and the check."""

    def __init__(self, entry: dict, variant: int):
        import torch

        self.entry, self.variant = entry, variant
        key = self.key = (json.dumps(entry.get("setup", [])), variant)
        with _TRUSTED:
            base = _SETUPS.get(key)
        if base is None:
            base = {"__name__": "__coursework_check__"}
            error = None
            with self._quiet():
                torch_seed(0)
                try:
                    for k, src in enumerate(entry.get("setup", [])):
                        exec(compile(src, f"<setup {k}>", "exec"), base)
                except Exception as e:  # the course's own cells failed: say so, grade nothing
                    error = f"the grader's setup cells failed: {type(e).__name__}: {e}"
                _close_figures()
                base["__dtype__"] = torch.get_default_dtype()  # a chapter may set it: the checks get it back
                torch.set_default_dtype(torch.float32)
            base["__error__"] = error
            with _TRUSTED:
                _SETUPS[key] = base
        self.ns = dict(base)  # each submission its own names; the setup is run once per chapter and variant
        self.error = self.ns.pop("__error__")
        self.dtype = self.ns.pop("__dtype__")
        self.ns["VARIANT"] = variant
        for name in ("glue", "show", "display"):
            self.ns[name] = _noop

    @contextlib.contextmanager
    def _quiet(self):
        with _TRUSTED, contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield

    def grade(self, ex: dict, kernel: Kernel, timeout: float, check_timeout: float = CHECK_TIMEOUT,
              check_memory: int = CHECK_MEMORY) -> dict:
        from ddpm import grading

        eid, nparts = ex["id"], len(ex["parts"])
        if self.error:
            return _fail(eid, self.error, nparts)
        _, reply = kernel.request("get", timeout + 5, names=ex["answers"])
        values = reply.get("values") if isinstance(reply.get("values"), dict) else {}
        filename = f"<check {eid}>"
        with self._quiet(), _default_dtype(self.dtype):
            torch_seed(grading.exercise_seed(eid, self.variant))
            try:
                exec(compile(ex["stub"], f"<stub {eid}>", "exec"), self.ns)
            except Exception as e:
                return _fail(eid, f"the grader's starting cell failed: {type(e).__name__}: {e}", nparts)
            free = self._free_parts(ex, filename)
            # the check's own helpers (its top-level functions, classes and imports) stay defined here for the
            # later checks, as they would in the notebook; the rest of it runs in the limited copy below
            try:
                exec(_definitions(ex["check"], filename), self.ns)
            except Exception as e:
                return _fail(eid, f"the grader's check failed to define its helpers: {type(e).__name__}: {e}", nparts)
            torch_seed(grading.exercise_seed(eid, self.variant))  # the same state whether or not that ran now

            def check() -> dict:
                missing = []
                for name in ex["answers"]:
                    v = values.get(name)
                    if isinstance(v, dict) and v.get("missing") is True:
                        missing.append(name)
                        self.ns[name] = None
                    else:
                        self.ns[name] = _decode_answer(kernel, v, timeout)
                with grading.recording(filename) as rec:
                    try:
                        exec(compile(ex["check"], filename, "exec"), self.ns)
                    except KernelDied as e:
                        return {"kernel_died": str(e), "dead": kernel.dead}
                    except Exception as e:  # outside the exercise's `with` block
                        rec.stopped = f"your answer broke the check: {type(e).__name__}: {str(e)[:300]}"
                return {"result": _score(eid, ex["parts"], rec, missing, free)}

            child = _Limited(check, check_memory)
        out = child.wait(check_timeout)  # the other grading slots may check while this one waits
        if "kernel_died" in out:
            kernel.dead = kernel.dead or out.get("dead")
            raise KernelDied(out["kernel_died"])
        if "result" in out:
            return out["result"]
        return _fail(eid, out["error"], nparts)

    def _free_parts(self, ex: dict, filename: str) -> set:
        """The parts the untouched starting cell already passes (a find-the-bug exercise's shape checks):
        they earn no partial credit. Found once per chapter and variant, by running the check here on the
        grader's own starting cell."""
        from ddpm import grading

        key = (self.key, ex["id"])
        if key not in _BASELINES:
            scratch = dict(self.ns)
            with grading.recording(filename) as rec:
                try:
                    exec(compile(ex["check"], filename, "exec"), scratch)
                except Exception:
                    pass
            _BASELINES[key] = {k for k, ok in _site_status(ex["parts"], rec).items() if ok}
        return _BASELINES[key]


def _definitions(src: str, filename: str):
    """The top-level ``def``, ``class`` and ``import`` statements of a check cell, compiled."""
    tree = ast.parse(src, filename)
    keep = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)
    tree.body = [node for node in tree.body if isinstance(node, keep)]
    return compile(tree, filename, "exec")


class _Limited:
    """``fn()`` (trusted code on the student's data) run in a forked copy of this process, with the
    address space it may add and the wall-clock time it may take limited: an answer that is costly to
    parse, simplify or compare (``10**(10**12)`` is one SymPy object) stops its own check only.
    ``fn`` returns JSON-ready data; the copy sends it back through a pipe and exits."""

    def __init__(self, fn, memory_bytes: int):
        self.rfd, wfd = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the copy: never returns
            try:
                os.close(self.rfd)
                import torch

                torch.set_num_threads(1)
                vm = _address_space()
                resource.setrlimit(resource.RLIMIT_AS, (vm + memory_bytes, vm + memory_bytes))
                try:
                    out = fn()
                except MemoryError:
                    out = {"error": f"checking your answer needed more than the {memory_bytes // 2**20:,} MiB the grader allows"}
                except Exception as e:  # the grader's own failure on this data
                    out = {"error": f"the grader could not check your answer: {type(e).__name__}: {str(e)[:200]}"}
                data = base64.b64encode(json.dumps(out).encode()) + b"\n"
                view = memoryview(data)
                while view:
                    view = view[os.write(wfd, view):]
            finally:
                os._exit(0)
        os.close(wfd)

    def wait(self, seconds: float) -> dict:
        buf, deadline = bytearray(), time.monotonic() + seconds
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return {"error": f"checking your answer took longer than the {seconds:g} s the grader allows "
                                     "(an answer far larger or costlier than the exercise asks for)"}
                r, _, _ = select.select([self.rfd], [], [], min(left, 1.0))
                if r:
                    chunk = os.read(self.rfd, 1 << 20)
                    if not chunk:
                        break
                    buf += chunk
            try:
                out = json.loads(base64.b64decode(bytes(buf)))
            except ValueError:
                out = None
            if not isinstance(out, dict):
                return {"error": "the grader's check of your answer stopped before it finished"}
            return out
        finally:
            os.close(self.rfd)
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(self.pid, 0)


def _address_space() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _site_status(parts: list, rec, messages: list | None = None) -> dict:
    """{part: True (every call of it passed), False, or None (not reached)}."""
    status = {k: None for k in range(len(parts))}
    for line, ok, msg in rec.parts:
        site = next((k for k, (a, b) in enumerate(parts) if line is not None and a <= line <= b), None)
        if site is None:
            continue
        status[site] = ok if status[site] is None else (status[site] and ok)
        if not ok and messages is not None and msg not in messages:
            messages.append(msg)
    return status


def _score(eid: str, parts: list, rec, missing: list, free: set = frozenset()) -> dict:
    """Points: the share of the parts passed, among those the untouched starting cell fails (``free``
    parts count only when all pass)."""
    messages: list = []
    status = _site_status(parts, rec, messages)
    passed = sum(1 for v in status.values() if v)
    earned = [k for k, v in status.items() if v and k not in free]
    graded = len(parts) - len(free)
    if rec.stopped:
        messages.append(rec.stopped)
    if missing:
        messages.insert(0, f"your notebook does not define {', '.join(missing)}")
    ok = passed == len(parts) and not rec.stopped
    points = 1.0 if ok else (round(len(earned) / graded, 4) if graded > 0 else 0.0)
    return {"id": eid, "points": points, "max_points": 1, "passed": ok,
            "parts_passed": passed, "parts": len(parts), "message": "passed" if ok else "; ".join(messages)[:2000] or "not passed"}


def _chapter_of(path: Path, nb, manifest: dict) -> str | None:
    chapters = manifest["chapters"]
    meta = None
    if nb is not None:
        cw = nb.metadata.get("coursework") if isinstance(nb.get("metadata"), dict) else None
        meta = cw.get("chapter") if isinstance(cw, dict) else None
    if isinstance(meta, str) and meta in chapters:
        return meta
    if path.stem in chapters:
        return path.stem
    return {v["file"]: k for k, v in chapters.items()}.get(path.name)


def grade_notebook(path: Path, manifest: dict, grader_dir: Path, cell_timeout: int = CELL_TIMEOUT,
                   notebook_timeout: int = NOTEBOOK_TIMEOUT, output_limit: int = OUTPUT_LIMIT,
                   uid: int = UID_BASE, limits: Limits | None = None, check_timeout: float = CHECK_TIMEOUT) -> dict:
    """Grade one submitted notebook; never raises for a bad submission."""
    report = {"notebook": path.name, "chapter": None, "score": 0.0, "max": 0, "exercises": [], "errors": []}
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
    exs = entry["exercises"]
    report.update(chapter=chapter, max=len(exs))
    if nb is None:
        report["errors"].append(problem)
        report["exercises"] = [_fail(e["id"], f"not graded: the file is {problem}", len(e["parts"])) for e in exs]
        return report
    try:
        cells, spans = prepare(nb, entry, manifest["variant"])
    except Exception as e:  # a structurally odd notebook: fail its exercises, never the grader
        report["errors"].append(f"could not read the notebook's cells: {type(e).__name__}")
        report["exercises"] = [_fail(e_["id"], "not graded: the notebook's cells could not be read", len(e_["parts"])) for e_ in exs]
        return report
    results = {}
    for e in exs:
        if e["id"] not in spans:
            results[e["id"]] = _fail(e["id"], f"the starting cell of {e['id']} is missing (deleted, or its cell metadata was "
                                     "lost): put your answer back into that cell of a fresh student edition", len(e["parts"]))
    checks_at = {end: eid for eid, (start, end) in spans.items()}
    owner = {i: eid for eid, (start, end) in spans.items() for i in range(start, end)}
    by_id = {e["id"]: e for e in exs}
    trusted = Trusted(entry, manifest["variant"])
    limits = limits or Limits(output_bytes=output_limit, cpu_seconds=notebook_timeout + 60)
    notes: dict[str, str] = {}  # per exercise: what its cells did (raised, printed too much)
    kernel = Kernel(uid, grader_dir / "data", limits)
    deadline = time.monotonic() + notebook_timeout
    stopped = None
    try:
        for i, c in enumerate(cells + [None]):
            if i in checks_at:
                eid = checks_at[i]
                if eid not in results:
                    if eid in notes and notes[eid].startswith("your code printed"):
                        results[eid] = _fail(eid, notes[eid], len(by_id[eid]["parts"]))
                    else:
                        r = trusted.grade(by_id[eid], kernel, min(cell_timeout, max(1.0, deadline - time.monotonic())),
                                          check_timeout=check_timeout)
                        if not r["passed"] and eid in notes:
                            r["message"] += f" ({notes[eid]})"
                        results[eid] = r
            if c is None:
                break
            if c.get("cell_type") != "code":
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise KernelDied("timeout")
            printed, reply = kernel.request("run", min(cell_timeout + 10, left), code=source(c), timeout=min(cell_timeout, left))
            eid = owner.get(i)
            if eid is None:
                continue
            if printed > output_limit and eid not in notes:
                notes[eid] = f"your code printed {printed:,} characters; the limit is {output_limit:,} per cell"
            err = reply.get("error")
            if isinstance(err, dict) and eid not in notes:
                if err.get("ename") in ("_Timeout", "KeyboardInterrupt"):
                    notes[eid] = f"your starting cell was stopped after the {cell_timeout} s limit per cell"
                else:
                    notes[eid] = f"your starting cell raised {str(err.get('ename'))[:60]}: {str(err.get('evalue'))[:200]}"
    except KernelDied as e:
        if kernel.dead == "timeout" or str(e) == "timeout":
            stopped = f"the notebook ran past its time limit ({notebook_timeout} s per notebook, {cell_timeout} s per cell) and was stopped"
        else:
            stopped = f"the kernel stopped ({e}): a limit of the sandbox (memory, processes, CPU time) or an exit"
        report["errors"].append(stopped)
    finally:
        kernel.close()
    report["exercises"] = [results.get(e["id"]) or _fail(e["id"], f"its check was not reached: {stopped or 'execution stopped'}", len(e["parts"])) for e in exs]
    report["score"] = round(sum(r["points"] for r in report["exercises"]), 4)
    return report


def students(path: Path) -> list[tuple[str, list[Path]]]:
    """(student, notebooks): one notebook or one folder per student; a single notebook is one student."""
    if path.is_file():
        return [(path.stem, [path])]
    out = []
    for p in sorted(path.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_file() and p.suffix == ".ipynb":
            out.append((p.stem, [p]))
        elif p.is_dir():
            nbs = sorted(q for q in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in q.parts)
            if nbs:
                out.append((p.name, nbs))
    return out


def submissions(path: Path) -> list[Path]:
    """Every notebook under ``path`` (or ``path`` itself)."""
    if path.is_dir():
        return sorted(q for q in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in q.parts)
    return [path]


def load_manifest(grader_dir: Path) -> dict:
    f = grader_dir / "manifest.json"
    if not f.is_file():
        raise ValueError(f"no grader at {grader_dir} (missing manifest.json): run 'make coursework' first")
    return json.loads(f.read_text())


def gradescope(student_report: dict) -> dict:
    """Gradescope's autograder ``results.json``: ``score`` and one test per exercise."""
    tests = []
    for nb in student_report["notebooks"]:
        for e in nb["exercises"]:
            tests.append({"name": f"{nb['chapter'] or nb['notebook']}: {e['id']}", "score": e["points"], "max_score": e["max_points"],
                          "output": e["message"] if e["passed"] else f"{e['parts_passed']}/{e['parts']} parts: {e['message']}"})
        for err in nb["errors"]:
            if not nb["exercises"]:
                tests.append({"name": nb["notebook"], "score": 0, "max_score": 0, "output": err})
    return {"score": round(sum(t["score"] for t in tests), 4), "tests": tests}


def format_report(r: dict) -> str:
    lines = [f"== {r['notebook']}" + (f" ({r['chapter']})" if r["chapter"] else "")]
    lines += [f"  note: {e}" for e in r["errors"]]
    width = max([len(e["id"]) for e in r["exercises"]] + [8])
    for e in r["exercises"]:
        lines.append(f"  {e['id']:<{width}}  passed" if e["passed"] else
                     f"  {e['id']:<{width}}  FAILED ({e['parts_passed']}/{e['parts']} parts): {e['message']}")
    lines.append(f"score: {r['score']:g}/{r['max']}")
    return "\n".join(lines)


def _dump(obj) -> str:
    return json.dumps(obj, indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m coursework.grade", description=__doc__.splitlines()[0])
    ap.add_argument("submission", help="a notebook, or a class folder (one notebook or folder per student)")
    ap.add_argument("--grader", default=str(ROOT / "_build" / "coursework" / "grader"), help="the grader folder made by 'make coursework'")
    ap.add_argument("--out", default=None, help="where the reports go (default: <submission>-grades beside it)")
    ap.add_argument("--report", default=None, help="the class JSON report (default: OUT/report.json)")
    ap.add_argument("--cell-timeout", type=int, default=CELL_TIMEOUT, help=f"seconds per cell (default {CELL_TIMEOUT})")
    ap.add_argument("--notebook-timeout", type=int, default=NOTEBOOK_TIMEOUT, help=f"seconds per notebook (default {NOTEBOOK_TIMEOUT})")
    ap.add_argument("--check-timeout", type=int, default=CHECK_TIMEOUT,
                    help=f"seconds the grader may spend checking one exercise's answers (default {CHECK_TIMEOUT})")
    ap.add_argument("--output-limit", type=int, default=OUTPUT_LIMIT, help=f"characters of output per cell (default {OUTPUT_LIMIT})")
    ap.add_argument("--memory", type=int, default=6144, help="MiB of address space per kernel (default 6144)")
    ap.add_argument("--jobs", type=int, default=1, help="students graded at once (default 1)")
    ap.add_argument("--student", default=None, help="grade SUBMISSION as the work of one student of this name (Gradescope)")
    args = ap.parse_args(argv)
    for name in ("cell_timeout", "notebook_timeout", "check_timeout", "output_limit", "jobs", "memory"):
        if getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}", file=sys.stderr)
            return 2
    sub = Path(args.submission)
    if not sub.exists():
        print(f"error: submission {sub} does not exist (give a notebook or a class folder)", file=sys.stderr)
        return 2
    try:
        manifest = load_manifest(Path(args.grader))
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.student is not None and not re.fullmatch(r"[\w.-]{1,100}", args.student):
        print(f"error: --student must be letters, digits, '.', '_' or '-', got {args.student!r}", file=sys.stderr)
        return 2
    class_ = students(sub) if args.student is None else [(args.student, submissions(sub) if sub.is_dir() else [sub])]
    class_ = [(name, nbs) for name, nbs in class_ if nbs]
    if not class_:
        print(f"error: no .ipynb files in {sub}", file=sys.stderr)
        return 2
    try:
        check_sandbox(UID_BASE)
    except SandboxUnavailable as e:
        print(f"error: refusing to grade: {e}", file=sys.stderr)
        return 3
    _quiet_ipython()
    import torch

    # the checks are small: one thread each (a busy machine's default count slows them down); students are
    # graded in parallel by --jobs
    torch.set_num_threads(1)
    out = Path(args.out) if args.out else sub.resolve().parent / f"{sub.stem}-grades"
    limits = Limits(memory_bytes=args.memory * 2**20, output_bytes=args.output_limit, cpu_seconds=args.notebook_timeout + 60)
    uids: queue.Queue = queue.Queue()
    for k in range(args.jobs):
        uids.put(UID_BASE + 1 + k)

    def one(item) -> dict:
        name, nbs = item
        uid = uids.get()
        try:
            reports = []
            for p in nbs:
                try:
                    r = grade_notebook(p, manifest, Path(args.grader), args.cell_timeout, args.notebook_timeout,
                                       args.output_limit, uid=uid, limits=copy.copy(limits), check_timeout=args.check_timeout)
                except Exception as e:  # the last guard: one submission never stops the others
                    r = {"notebook": p.name, "chapter": None, "score": 0.0, "max": 0, "exercises": [], "errors": [f"grader error: {type(e).__name__}: {e}"]}
                r["path"] = str(p.relative_to(sub)) if sub.is_dir() else p.name
                reports.append(r)
            return {"student": name, "variant": manifest["variant"], "score": round(sum(r["score"] for r in reports), 4),
                    "max": sum(r["max"] for r in reports), "notebooks": reports}
        finally:
            uids.put(uid)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        reports = list(pool.map(one, class_))
    seconds = round(time.perf_counter() - t0, 1)
    try:
        out.mkdir(parents=True, exist_ok=True)
        rows = []
        for r in reports:
            d = out / re.sub(r"[^\w.-]", "_", r["student"])
            d.mkdir(exist_ok=True)
            (d / "report.json").write_text(_dump(r))
            (d / "results.json").write_text(_dump(gradescope(r)))
            for nb in r["notebooks"]:
                for e in nb["exercises"]:
                    rows.append([r["student"], e["id"], e["points"], e["max_points"]])
        with open(out / "class.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["student", "exercise", "points", "max_points"])
            w.writerows(rows)
        report = Path(args.report) if args.report else out / "report.json"
        report.write_text(_dump({"variant": manifest["variant"], "commit": manifest.get("commit"), "seconds": seconds,
                                 "limits": {"cell_seconds": args.cell_timeout, "notebook_seconds": args.notebook_timeout, "check_seconds": args.check_timeout,
                                            "output_characters": args.output_limit, "memory_mib": args.memory},
                                 "students": reports}))
    except OSError as e:
        print(f"error: cannot write the reports in {out}: {e.strerror}", file=sys.stderr)
        return 2
    for r in reports:
        for nb in r["notebooks"]:
            print(format_report(nb), flush=True)
    print(f"reports: {out} (class.csv, report.json, <student>/results.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
