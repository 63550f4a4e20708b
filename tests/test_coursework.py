"""The coursework: editions built from the chapter notebooks, and a grader a class can trust.

A small chapter made here, graded once as a class folder holding every attack on the grader (each must
leave the score where honest work puts it, and leave later submissions alone). The book's own exercises
are graded in test_coursework_book.py."""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jsonschema
import nbformat
import pytest

from coursework.build import build
from coursework.grade import load_manifest
from ddpm.grading import pick
from coursework.markup import CHECK, SOLUTION, STUB, MarkupError, exercises

ROOT = Path(__file__).resolve().parents[1]


def _exercise(eid, stub, solution, check):
    return [
        nbformat.v4.new_markdown_cell(f":::{{exercise}}\n:label: ex-{eid}\nDo it.\n:::"),
        nbformat.v4.new_code_cell(stub, metadata={"tags": [STUB], "exercise": eid}),
        nbformat.v4.new_markdown_cell(f":::{{solution-start}} ex-{eid}\n:class: dropdown\n:::\nWhy it holds."),
        nbformat.v4.new_code_cell(solution, metadata={"tags": [SOLUTION], "exercise": eid}),
        nbformat.v4.new_markdown_cell(":::{solution-end}\n:::"),
        nbformat.v4.new_code_cell(check, metadata={"tags": [CHECK], "exercise": eid}),
    ]


def toy_chapter(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A small chapter"),
        nbformat.v4.new_code_cell("VARIANT = 0", metadata={"tags": ["coursework-parameters"]}),
        nbformat.v4.new_code_cell(
            "import torch, sympy as sp, ddpm\nfrom ddpm import grading\n"
            "T = grading.pick(VARIANT, 'toy-T', [1000, 500, 200, 100])\nsched = ddpm.Schedule.linear(T=T)",
            metadata={"tags": ["exercise-setup"]},
        ),
    ]
    nb.cells += _exercise(
        "toy-num", "abar_T = None", "abar_T = float(sched.alpha_bars[T])",
        "with grading.exercise('toy-num'):\n"
        "    grading.expect_close(abar_T, float(torch.prod(1 - sched.betas[1:])), what='abar_T', rtol=1e-6)",
    )
    nb.cells += _exercise(
        "toy-sym", "a = sp.Symbol('a', positive=True)\nexpr = None", "a = sp.Symbol('a', positive=True)\nexpr = sp.sqrt(a) ** 2",
        "with grading.exercise('toy-sym'):\n    grading.expect_sym_equal(expr, a, what='expr')",
    )
    nb.cells += _exercise(
        "toy-fn", "def my_snr(abar):\n    return abar / (1 + abar)  # the bug to find",
        "def my_snr(abar):\n    return abar / (1 - abar)",
        "with grading.exercise('toy-fn'):\n    grading.expect_same_function(my_snr, lambda a: a / (1 - a), "
        "lambda g: (torch.rand(5, generator=g) * 0.9 + 0.05,), what='my_snr')",
    )
    nb.cells += _exercise(
        "toy-two", "abar_1 = None\nsnr_1 = None", "abar_1 = float(sched.alpha_bars[1])\nsnr_1 = float(sched.snr[1])",
        "with grading.exercise('toy-two'):\n"
        "    grading.expect_close(abar_1, float(1 - sched.betas[1]), what='abar_1')\n"
        "    grading.expect_close(snr_1, float((1 - sched.betas[1]) / sched.betas[1]), what='snr_1')",
    )
    nb.cells.append(nbformat.v4.new_markdown_cell("The end."))
    nbformat.write(nb, path)
    return path



IDS = ["toy-num", "toy-sym", "toy-fn", "toy-two"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    src = toy_chapter(root / "ch9_toy.ipynb")
    out = root / "out"
    build(out, 0, root=root, notebooks=[src])
    return root, out, load_manifest(out / "grader")


def _solution(nb, eid):
    return next(c for c in nb.cells if c.metadata.get("exercise") == eid and SOLUTION in c.metadata.get("tags", []))


def _stub(nb, eid):
    return next(c for c in nb.cells if c.metadata.get("exercise") == eid and STUB in c.metadata.get("tags", []))


def _grade_folder(folder: Path, grader: Path, out: Path, *extra, jobs: int = 2, timeout: int = 600):
    proc = subprocess.run(
        [sys.executable, "-m", "coursework.grade", str(folder), "--grader", str(grader), "--out", str(out), "--jobs", str(jobs), *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc, {r["student"]: r for r in json.loads((out / "report.json").read_text())["students"]}


def _tree_hash(*dirs: Path) -> str:
    h = hashlib.sha256()
    for d in dirs:
        for p in sorted(d.rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                h.update(str(p).encode() + p.read_bytes())
    return h.hexdigest()


def test_editions(toy):
    root, out, manifest = toy
    student = nbformat.read(out / "student" / "ch9_toy.ipynb", as_version=4)
    instructor = nbformat.read(out / "instructor" / "ch9_toy.ipynb", as_version=4)
    assert not [c for c in student.cells if SOLUTION in c.metadata.get("tags", [])]
    assert not any("solution-start" in c.source or "Why it holds" in c.source for c in student.cells)
    assert len([c for c in student.cells if CHECK in c.metadata.get("tags", [])]) == 4
    assert [e.id for e in exercises(instructor.cells)] == IDS
    assert student.cells[-1].source == "The end."  # the rest of the chapter is intact
    assert all(not c.get("outputs") for c in student.cells if c.cell_type == "code")
    entries = manifest["chapters"]["ch9_toy"]["exercises"]
    assert [e["id"] for e in entries] == IDS
    assert {e["id"]: e["answers"] for e in entries} == {
        "toy-num": ["abar_T"], "toy-sym": ["a", "expr"], "toy-fn": ["my_snr"], "toy-two": ["abar_1", "snr_1"]}
    assert [len(e["parts"]) for e in entries] == [1, 1, 1, 2]
    assert "sched = ddpm.Schedule.linear" in "".join(manifest["chapters"]["ch9_toy"]["setup"])


def test_checks_print_no_answer(toy):
    """What a student sees under a check: passed, or which part failed and a hint; never the answer."""
    from ddpm import grading

    with pytest.raises(grading.ExerciseFailed) as e:
        with grading.exercise("x"):
            grading.expect_close(0.25, 0.4864, what="the bits")
    assert "0.4864" not in str(e.value) and "0.25" in str(e.value)
    with pytest.raises(grading.ExerciseFailed) as e:
        with grading.exercise("x"):
            grading.expect_equal(3, 168, what="t")
    assert "168" not in str(e.value)
    import sympy as sp

    a = sp.Symbol("a", positive=True)
    with pytest.raises(grading.ExerciseFailed) as e:
        with grading.exercise("x"):
            grading.expect_sym_equal(a, sp.sqrt(a) * 7, what="e")
    assert "sqrt" not in str(e.value) and "7" not in str(e.value).split("differs")[0]


def test_checks_leave_global_generators_alone():
    import torch
    from ddpm import grading

    torch.manual_seed(5)
    before = torch.get_rng_state()
    VARIANT = 0  # noqa: F841 (read by grading.exercise from this frame)
    with grading.exercise("x"):
        grading.expect_same_function(lambda v: v, lambda v: v, lambda g: (torch.rand(3, generator=g),), what="id")
    assert torch.equal(before, torch.get_rng_state())
    assert grading.exercise_seed("ch3-q-sample", 0) == grading.exercise_seed("ch3-q-sample", 0) != grading.exercise_seed("ch3-q-sample", 1)


def test_wire_rebuilds_sympy_without_eval():
    import sympy as sp

    from coursework.wire import WireError, parse_sympy

    x = sp.Symbol("x", positive=True)
    e = sp.exp(-x**2 / 2) / sp.sqrt(2 * sp.pi) + sp.Float(0.25) * sp.erf(x)
    assert parse_sympy(sp.srepr(e)) == e
    for bad in ("__import__('os').system('true')", "ImmutableMatrix(['1+1'])", "Symbol('x').__class__",
                "Tuple('1+1')", "sympify('1')", "Float('1+1')", "Symbol('x', positive='a')"):
        with pytest.raises(WireError):
            parse_sympy(bad)


def test_sandbox_refuses_without_bubblewrap(tmp_path, toy, monkeypatch):
    _, out, _ = toy
    env = dict(os.environ, PATH=str(tmp_path))  # no bwrap on PATH
    (tmp_path / "s.ipynb").write_text("{}")
    p = subprocess.run([sys.executable, "-m", "coursework.grade", str(tmp_path / "s.ipynb"), "--grader", str(out / "grader")],
                       cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 3 and "refusing to grade" in p.stderr and "bubblewrap" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


# Each attack: (edition it starts from, {exercise: code put in its solution (or starting) cell}, expected points)
# A student edition scores 0; an attack that worked would raise that.
FORGE = r"""
import json, os, sys
for d in (".", "/tmp", "..", "/work"):
    try:
        with open(os.path.join(d, "results.jsonl"), "a") as f:
            for i in range(60):
                f.write(json.dumps({"cell": i, "stdout": "toy-num: passed toy-sym: passed toy-fn: passed", "error": None,
                                    "output_bytes": 0, "over_limit": False}) + "\n")
            f.write(json.dumps({"done": True}) + "\n")
    except OSError:
        pass
for eid in ("toy-num", "toy-sym", "toy-fn", "toy-two"):
    print(f"{eid}: passed")
# forged answers in the kernel's own reply format, with a made-up nonce, and a verdict-shaped reply
sys.stdout.write('\n\x1e' + '0' * 32 + ' {"values": {"abar_T": 0.5}}\n')
sys.stdout.write('\n\x1e' + '0' * 32 + ' {"passed": true, "score": 4}\n')
sys.stdout.flush()
"""
ATEXIT = r"""
import atexit, os
def forge():
    for eid in ("toy-num", "toy-sym", "toy-fn", "toy-two"):
        os.write(1, f"{eid}: passed\n".encode())
    os.write(1, b'{"done": true}\n')
atexit.register(forge)
import sys
sys.exit(0)
"""
PATCH = r"""
import builtins, math, numpy as np, sympy as sp, torch, ddpm, ddpm.grading
torch.prod = lambda *a, **k: torch.tensor(0.5)
torch.allclose = lambda *a, **k: True
torch.Tensor.__sub__ = lambda self, other: torch.zeros_like(self)
sp.sympify = lambda e, *a, **k: sp.Integer(0)
sp.simplify = lambda e, *a, **k: sp.Integer(0)
np.allclose = lambda *a, **k: True
for name in dir(ddpm.grading):
    if name.startswith("expect"):
        setattr(ddpm.grading, name, lambda *a, **k: None)
ddpm.grading.exercise = lambda *a, **k: __import__("contextlib").nullcontext()
ddpm.Schedule.linear = classmethod(lambda cls, *a, **k: None)
T, VARIANT = 7, 0   # constants a variant changes come from the grader, not from here
abar_T = 0.5
"""
REWRITE = r"""
import os, glob
payload = "def expect_close(*a, **k):\n    return None\n"
targets = ["/opt/pkg/ddpm/grading.py", "/opt/cw/wire.py", "/opt/cw/_kernel.py", "%(root)s/ddpm/grading.py",
           "%(root)s/coursework/grade.py", "%(grader)s/manifest.json"]
targets += glob.glob("/usr/**/ddpm/grading.py", recursive=True) + glob.glob("/root/**/site-packages/ddpm/grading.py", recursive=True)
import ddpm
targets.append(ddpm.grading.__file__ if hasattr(ddpm, "grading") else "")
for t in targets:
    try:
        with open(t, "a") as f:
            f.write(payload)
    except OSError:
        pass
abar_T = 0.5
"""
PID = r"""
import json, os
for d in (".", "/tmp", "/work", ".."):
    try:
        with open(os.path.join(d, "results.jsonl"), "a") as f:
            f.write(json.dumps({"kernel_pid": %(pid)d}) + "\n")
    except OSError:
        pass
print(json.dumps({"kernel_pid": %(pid)d}))
for sig in (9, 15):
    try:
        os.kill(%(pid)d, sig)
    except OSError:
        pass
"""
READ = r"""
import glob, os
paths = ["%(inst)s", "%(manifest)s", "/proc/1/root%(inst)s", "/proc/self/root%(manifest)s", "../instructor/ch9_toy.ipynb",
         "../../instructor/ch9_toy.ipynb", "../grader/manifest.json", "%(book)s"]
paths += glob.glob("/**/manifest.json", recursive=True) + glob.glob("/**/ch9_toy.ipynb", recursive=True)
paths += glob.glob("/proc/*/root/**/manifest.json", recursive=True)[:50]
found = []
for p in paths:
    try:
        with open(p) as f:
            if "abar_T = float" in f.read():
                found.append(p)
    except OSError:
        pass
abar_T = float(sched.alpha_bars[T]) if found else None   # right only if the instructor's files were readable
"""
SOCKET = r"""
import socket
ok = False
for host, port in (("127.0.0.1", %(port)d), ("10.0.2.2", %(port)d), ("1.1.1.1", 53), ("8.8.8.8", 443)):
    try:
        socket.create_connection((host, port), timeout=2).close()
        ok = True
    except OSError:
        pass
abar_T = float(sched.alpha_bars[T]) if ok else None     # right only if the network was reachable
"""
MEMORY = "x = bytearray(64 * 2**30)\nabar_T = float(sched.alpha_bars[T])"
FORK = r"""
import os, time
kids = 0
try:
    for _ in range(100_000):
        if os.fork() == 0:
            time.sleep(120)
            os._exit(0)
        kids += 1
except OSError:
    pass
print("forked", kids)
"""
FLOOD = "def my_snr(abar):\n    return abar / (1 - abar)\nimport os\nprint('x' * 1_000_000)\nfor _ in range(200):\n    os.write(1, b'y' * 1_000_000)"


ATTACKS = {  # name: (edition, (exercise, cell it goes in), code, expected points)
    "a_forge": ("stud", ("toy-num", STUB), FORGE, 0),
    "a_atexit": ("stud", ("toy-num", STUB), ATEXIT, 0),
    "a_patch": ("stud", ("toy-num", STUB), PATCH, 0),
    "a_rewrite": ("stud", ("toy-num", STUB), REWRITE, 0),
    "a_pid": ("stud", ("toy-num", STUB), PID, 0),
    "a_read": ("stud", ("toy-num", STUB), READ, 0),
    "a_socket": ("stud", ("toy-num", STUB), SOCKET, 0),
    "a_memory": ("inst", ("toy-num", SOLUTION), MEMORY, 3),
    "a_fork": ("inst", ("toy-sym", SOLUTION), FORK, 3),
    "a_flood": ("inst", ("toy-fn", SOLUTION), FLOOD, 3),
    # the loops sleep: stopping them is the same, and they leave the CPU to the other submissions
    "b_loop": ("inst", ("toy-num", SOLUTION), "import time\nwhile True:\n    time.sleep(0.01)", 3),
    "b_raises": ("inst", ("toy-sym", SOLUTION), "raise RuntimeError('boom')", 3),
    "b_uninterruptible": ("inst", ("toy-fn", SOLUTION), "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
                          "signal.signal(signal.SIGINT, signal.SIG_IGN)\nimport time\nwhile True:\n    time.sleep(0.01)", 2),
    # an answer whose check would never end: SymPy evaluates 10**(10**12) as soon as it is built
    "a_costly": ("inst", ("toy-sym", SOLUTION), "a = sp.Symbol('a', positive=True)\n"
                 "expr = sp.Pow(sp.Integer(10), sp.Integer(10**12), evaluate=False)", 3),
    "b_half": ("inst", ("toy-two", SOLUTION), "abar_1 = float(sched.alpha_bars[1])\nsnr_1 = 0.0", 3.5),
}



@pytest.fixture(scope="module")
def graded_class(tmp_path_factory, toy):
    """One class folder holding every attack (and honest work before and after), graded once, two kernels
    at a time; each test below reads its own student's row."""
    root, out, _ = toy
    tmp_path = tmp_path_factory.mktemp("class")
    grader = out / "grader"
    inst = nbformat.read(out / "instructor" / "ch9_toy.ipynb", as_version=4)
    stud = nbformat.read(out / "student" / "ch9_toy.ipynb", as_version=4)
    sentinel = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.1)
    fill = {"root": ROOT, "grader": grader, "pid": sentinel.pid, "inst": out / "instructor" / "ch9_toy.ipynb",
            "manifest": grader / "manifest.json", "book": ROOT / "book" / "ch3_forward_process.ipynb",
            "port": server.getsockname()[1]}
    folder = tmp_path / "class"
    folder.mkdir()
    for name, (base, (eid, tag), code, _) in ATTACKS.items():
        nb = copy.deepcopy(inst if base == "inst" else stud)
        cell = next(c for c in nb.cells if c.metadata.get("exercise") == eid and tag in c.metadata.get("tags", []))
        cell.source = code % fill if tag == SOLUTION else cell.source + "\n" + code % fill
        nbformat.write(nb, folder / f"{name}.ipynb")
    nb = copy.deepcopy(inst)
    nb.cells = [c for c in nb.cells if not (c.metadata.get("exercise") == "toy-sym" and STUB in c.metadata.get("tags", []))]
    nbformat.write(nb, folder / "b_deleted.ipynb")
    (folder / "b_notjson.ipynb").write_text('{"cells": [oops')
    (folder / "z_good").mkdir()
    nbformat.write(inst, folder / "z_good" / "ch9_toy.ipynb")
    nbformat.write(stud, folder / "z_untouched.ipynb")
    nbformat.write(inst, folder / "z_good_again.ipynb")
    protected = (ROOT / "ddpm", ROOT / "coursework", grader, out / "instructor")
    before = _tree_hash(*protected)
    try:
        proc, rows = _grade_folder(folder, grader, tmp_path / "out", "--cell-timeout", "15", "--notebook-timeout", "100",
                                    "--check-timeout", "8")
        killed = sentinel.poll() is not None
        try:
            server.accept()
            reached = True
        except (socket.timeout, BlockingIOError):
            reached = False
    finally:
        sentinel.kill()
        server.close()
    ps = subprocess.run(["ps", "-eo", "uid="], capture_output=True, text=True).stdout.split()
    return {
        "rows": rows, "stdout": proc.stdout, "out": tmp_path / "out", "killed": killed, "reached": reached,
        "changed": _tree_hash(*protected) != before, "left": [u for u in ps if 61000 <= int(u) < 61100],
    }


def _failed(row):
    return [e["id"] for nb in row["notebooks"] for e in nb["exercises"] if not e["passed"]]


def _messages(row):
    return " ".join(e["message"] for nb in row["notebooks"] for e in nb["exercises"] if not e["passed"]) + " " + " ".join(
        " ".join(nb["errors"]) for nb in row["notebooks"])


def _score_as_expected(graded_class, name):
    rows = graded_class["rows"]
    assert rows[name]["score"] == ATTACKS[name][3], (name, _messages(rows[name]))
    # and the honest submissions graded in the same run, after it, are unaffected
    assert (rows["z_good"]["score"], rows["z_good_again"]["score"], rows["z_untouched"]["score"]) == (4, 4, 0)
    assert not graded_class["changed"], "a submission changed the package, the grader or the instructor edition"


@pytest.mark.parametrize("name", ["a_forge", "a_atexit", "a_patch"])
def test_forged_rows_atexit_hooks_and_monkey_patches_score_nothing(graded_class, name):
    _score_as_expected(graded_class, name)
    assert _failed(graded_class["rows"][name]) == IDS


def test_rewriting_package_or_grader_files_fails(graded_class):
    _score_as_expected(graded_class, "a_rewrite")


def test_a_written_pid_is_never_killed(graded_class):
    _score_as_expected(graded_class, "a_pid")
    assert not graded_class["killed"], "a submission killed a process of the grader's machine"


def test_instructor_edition_and_manifest_are_out_of_reach(graded_class):
    _score_as_expected(graded_class, "a_read")


def test_no_network(graded_class):
    _score_as_expected(graded_class, "a_socket")
    assert not graded_class["reached"], "a submission reached the grader's machine over the network"


def test_fork_bomb(graded_class):
    _score_as_expected(graded_class, "a_fork")
    assert not graded_class["left"], "processes of a sandbox outlived it"


@pytest.mark.parametrize("name, exercise, message", [
    ("a_memory", "toy-num", "MemoryError"),  # allocating past the memory limit
    ("a_flood", "toy-fn", "your code printed"),  # flooding the output
    ("a_costly", "toy-sym", "the grader allows"),  # an answer too costly for the grader to check
])
def test_a_limit_reached_fails_only_its_exercise(graded_class, name, exercise, message):
    _score_as_expected(graded_class, name)
    assert _failed(graded_class["rows"][name]) == [exercise]
    assert message in _messages(graded_class["rows"][name])


def test_loops_errors_and_broken_notebooks_fail_only_their_exercise(graded_class):
    rows = graded_class["rows"]
    for name in ("b_loop", "b_raises", "b_uninterruptible", "b_half"):
        _score_as_expected(graded_class, name)
    assert _failed(rows["b_loop"]) == ["toy-num"] and "15 s limit" in _messages(rows["b_loop"])
    assert _failed(rows["b_raises"]) == ["toy-sym"] and "RuntimeError: boom" in _messages(rows["b_raises"])
    assert _failed(rows["b_uninterruptible"]) == ["toy-fn", "toy-two"] and "time limit" in _messages(rows["b_uninterruptible"])
    assert _failed(rows["b_deleted"]) == ["toy-sym"] and "missing" in _messages(rows["b_deleted"])
    assert rows["b_notjson"]["score"] == 0 and "not a readable notebook" in _messages(rows["b_notjson"])
    assert "score: 4/4" in graded_class["stdout"]


def test_partial_credit(graded_class):
    half = next(e for e in graded_class["rows"]["b_half"]["notebooks"][0]["exercises"] if e["id"] == "toy-two")
    assert (half["points"], half["parts_passed"], half["parts"], half["passed"]) == (0.5, 1, 2, False)
    with open(graded_class["out"] / "class.csv") as f:
        rows_csv = list(csv.DictReader(f))
    assert {(r["student"], r["exercise"]) for r in rows_csv} >= {("z_good", e) for e in IDS}
    assert sum(float(r["points"]) for r in rows_csv if r["student"] == "b_half") == 3.5


def test_results_json_validates_against_gradescope_schema(graded_class):
    dirs = [d for d in graded_class["out"].iterdir() if d.is_dir()]
    assert len(dirs) == len(graded_class["rows"])
    for d in dirs:
        data = json.loads((d / "results.json").read_text())
        jsonschema.validate(data, GRADESCOPE_SCHEMA)
        assert data["score"] == graded_class["rows"][d.name]["score"]
    a, b = (graded_class["out"] / n for n in ("z_good", "z_good_again"))
    assert (a / "results.json").read_bytes() == (b / "results.json").read_bytes()


# Gradescope's autograder results format (its documentation, "Autograder Specifications"): the fields used.
GRADESCOPE_SCHEMA = {
    "type": "object",
    "required": ["score", "tests"],
    "properties": {
        "score": {"type": "number"},
        "tests": {"type": "array", "items": {
            "type": "object",
            "required": ["name", "score", "max_score", "output"],
            "properties": {"name": {"type": "string"}, "score": {"type": "number"}, "max_score": {"type": "number"},
                           "output": {"type": "string"}},
        }},
    },
}


def test_same_submission_twice_same_report(tmp_path, toy):
    """Two separate runs of the grader on one submission write identical per-student files."""
    _, out, _ = toy
    folder = tmp_path / "c"
    folder.mkdir()
    nb = nbformat.read(out / "student" / "ch9_toy.ipynb", as_version=4)
    _stub(nb, "toy-fn").source = "def my_snr(abar):\n    return abar / (1 - abar) + 1e-3 * abar"
    _stub(nb, "toy-two").source = "abar_1 = 0.9\nsnr_1 = 0.0"
    nbformat.write(nb, folder / "s.ipynb")
    runs = []
    for k in range(2):
        _grade_folder(folder, out / "grader", tmp_path / f"o{k}", jobs=1)
        runs.append([(tmp_path / f"o{k}" / "s" / n).read_bytes() for n in ("report.json", "results.json")])
        runs[-1].append((tmp_path / f"o{k}" / "class.csv").read_bytes())
    assert runs[0] == runs[1]
    assert b"off by up to" in runs[0][0]


def test_variant_changes_constants_and_checks_hold(tmp_path, toy):
    root, _, _ = toy
    out = tmp_path / "v"
    seeds = [s for s in range(1, 20) if pick(s, "toy-T", [1000, 500, 200, 100]) != 1000]
    build(out, seeds[0], root=root, notebooks=[root / "ch9_toy.ipynb"])
    inst = nbformat.read(out / "instructor" / "ch9_toy.ipynb", as_version=4)
    assert f"VARIANT = {seeds[0]}" in "".join(c.source for c in inst.cells)
    folder = tmp_path / "c"
    folder.mkdir()
    nbformat.write(inst, folder / "inst.ipynb")
    # the book's answer (T = 1000) is wrong for this variant, even if the submission says VARIANT = 0
    nb = copy.deepcopy(inst)
    _solution(nb, "toy-num").source = "VARIANT = 0\nT = 1000\nabar_T = float(ddpm.Schedule.linear(T=1000).alpha_bars[1000])"
    nbformat.write(nb, folder / "book_answer.ipynb")
    _, rows = _grade_folder(folder, out / "grader", tmp_path / "o")
    assert rows["inst"]["score"] == 4
    assert [e["id"] for e in rows["book_answer"]["notebooks"][0]["exercises"] if not e["passed"]] == ["toy-num"]


def test_markup_errors_are_named(tmp_path):
    nb = nbformat.read(toy_chapter(tmp_path / "ch9_toy.ipynb"), as_version=4)
    nb.cells = [c for c in nb.cells if not (c.metadata.get("exercise") == "toy-fn" and CHECK in c.metadata.get("tags", []))]
    with pytest.raises(MarkupError, match="toy-fn.*no check"):
        exercises(nb.cells)


def test_cli_errors_are_one_line(tmp_path):
    for args in (["/nonexistent.ipynb"], [str(tmp_path), "--grader", str(tmp_path)]):
        p = subprocess.run([sys.executable, "-m", "coursework.grade", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
