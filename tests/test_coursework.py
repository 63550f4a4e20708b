"""The coursework: editions built from the chapter notebooks, and a grader whose checks bite.

Two layers: a small chapter made here (fast; every kind of bad submission) and the book's own chapters
(the instructor edition scores M/M, the untouched student edition 0/M, each erratum of the field put
into an otherwise correct submission loses exactly its exercise, a variant's checks still hold)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from coursework.build import build, chapters
from coursework.grade import grade_notebook, load_manifest
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
            "T = grading.pick(VARIANT, 'toy-T', [1000, 500, 200, 100])\nsched = ddpm.Schedule.linear(T=T)"
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
    nb.cells.append(nbformat.v4.new_markdown_cell("The end."))
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    src = toy_chapter(root / "ch9_toy.ipynb")
    out = root / "out"
    build(out, 0, root=root, notebooks=[src])
    return root, out, load_manifest(out / "grader")


def _grade(path, out, **kw):
    kw.setdefault("cell_timeout", 60)
    kw.setdefault("notebook_timeout", 240)
    return grade_notebook(Path(path), load_manifest(out / "grader"), out / "grader", **kw)


def _solution(nb, eid):
    return next(c for c in nb.cells if c.metadata.get("exercise") == eid and SOLUTION in c.metadata.get("tags", []))


def test_editions(toy):
    root, out, manifest = toy
    student = nbformat.read(out / "student" / "ch9_toy.ipynb", as_version=4)
    instructor = nbformat.read(out / "instructor" / "ch9_toy.ipynb", as_version=4)
    assert not [c for c in student.cells if SOLUTION in c.metadata.get("tags", [])]
    assert not any("solution-start" in c.source or "Why it holds" in c.source for c in student.cells)
    assert len([c for c in student.cells if CHECK in c.metadata.get("tags", [])]) == 3
    assert [e.id for e in exercises(instructor.cells)] == ["toy-num", "toy-sym", "toy-fn"]
    assert student.cells[-1].source == "The end."  # the rest of the chapter is intact
    assert all(not c.get("outputs") for c in student.cells if c.cell_type == "code")
    assert [e["id"] for e in manifest["chapters"]["ch9_toy"]["exercises"]] == ["toy-num", "toy-sym", "toy-fn"]


def test_instructor_full_marks_student_zero(toy):
    _, out, _ = toy
    assert _grade(out / "instructor" / "ch9_toy.ipynb", out)["score"] == 3
    r = _grade(out / "student" / "ch9_toy.ipynb", out)
    assert (r["score"], r["max"]) == (0, 3)
    msgs = {e["id"]: e["message"] for e in r["exercises"]}
    assert "checked abar_T" in msgs["toy-num"] and "got nothing" in msgs["toy-num"]
    assert "checked my_snr" in msgs["toy-fn"] and "expected" in msgs["toy-fn"]


def test_variant_changes_constants_and_checks_hold(tmp_path, toy):
    root, _, _ = toy
    out = tmp_path / "v"
    seeds = [s for s in range(1, 20) if pick(s, "toy-T", [1000, 500, 200, 100]) != 1000]
    build(out, seeds[0], root=root, notebooks=[root / "ch9_toy.ipynb"])
    inst = nbformat.read(out / "instructor" / "ch9_toy.ipynb", as_version=4)
    assert f"VARIANT = {seeds[0]}" in "".join(c.source for c in inst.cells)
    r = _grade(out / "instructor" / "ch9_toy.ipynb", out)
    assert r["score"] == 3, r
    # the book's answer (T = 1000) is wrong for this variant
    nb = copy.deepcopy(inst)
    _solution(nb, "toy-num").source = "abar_T = float(ddpm.Schedule.linear(T=1000).alpha_bars[1000])"
    nbformat.write(nb, tmp_path / "ch9_toy.ipynb")
    r = _grade(tmp_path / "ch9_toy.ipynb", out)
    assert [e["id"] for e in r["exercises"] if not e["passed"]] == ["toy-num"]


BAD = {
    "loop": ("toy-num", "while True:\n    pass"),
    "raises": ("toy-sym", "raise RuntimeError('boom')"),
    "flood": ("toy-fn", "def my_snr(abar):\n    return abar / (1 - abar)\nprint('x' * 1_000_000)"),
    "cheat": ("toy-num", "import json\nsol = json.load(open('../instructor/ch9_toy.ipynb'))\nabar_T = 0.0"),
}


def test_bad_submissions_fail_only_their_exercise(tmp_path, toy):
    _, out, _ = toy
    inst = nbformat.read(out / "instructor" / "ch9_toy.ipynb", as_version=4)
    folder = tmp_path / "subs"
    for name, (eid, code) in BAD.items():
        nb = copy.deepcopy(inst)
        _solution(nb, eid).source = code
        (folder / name).mkdir(parents=True)
        nbformat.write(nb, folder / name / "ch9_toy.ipynb")
    nb = copy.deepcopy(inst)
    nb.cells = [c for c in nb.cells if not (c.metadata.get("exercise") == "toy-sym" and STUB in c.metadata.get("tags", []))]
    (folder / "deleted").mkdir()
    nbformat.write(nb, folder / "deleted" / "ch9_toy.ipynb")
    (folder / "notjson").mkdir()
    (folder / "notjson" / "ch9_toy.ipynb").write_text('{"cells": [oops')
    (folder / "good").mkdir()
    nbformat.write(inst, folder / "good" / "ch9_toy.ipynb")
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "coursework.grade", str(folder), "--grader", str(out / "grader"), "--report", str(report),
         "--cell-timeout", "20", "--notebook-timeout", "180", "--jobs", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    rows = {Path(r["notebook"]).parent.name: r for r in json.loads(report.read_text())["notebooks"]}
    failed = {k: [e["id"] for e in r["exercises"] if not e["passed"]] for k, r in rows.items()}
    assert failed == {
        "loop": ["toy-num"], "raises": ["toy-sym"], "flood": ["toy-fn"], "cheat": ["toy-num"],
        "deleted": ["toy-sym"], "notjson": ["toy-num", "toy-sym", "toy-fn"], "good": [],
    }
    msg = {k: next((e["message"] for e in r["exercises"] if not e["passed"]), "") for k, r in rows.items()}
    assert "20 s limit" in msg["loop"]
    assert "RuntimeError: boom" in msg["raises"]
    assert "printed 1,000,001 characters" in msg["flood"]
    assert "own files" in msg["cheat"]
    assert "missing" in msg["deleted"]
    assert "not a readable notebook" in msg["notjson"]
    # the last line of each notebook's block is its score
    blocks = [b for b in proc.stdout.split("== ") if b.strip()]
    assert all(b.strip().splitlines()[-1].startswith(("score: ", "report: ")) for b in blocks)
    assert "score: 3/3" in proc.stdout


def test_uninterruptible_cell_hits_the_notebook_limit(tmp_path, toy):
    _, out, _ = toy
    nb = nbformat.read(out / "instructor" / "ch9_toy.ipynb", as_version=4)
    _solution(nb, "toy-sym").source = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"
    nbformat.write(nb, tmp_path / "ch9_toy.ipynb")
    import time

    t0 = time.perf_counter()
    r = _grade(tmp_path / "ch9_toy.ipynb", out, cell_timeout=10, notebook_timeout=45)
    assert time.perf_counter() - t0 < 90
    ok = {e["id"]: e["passed"] for e in r["exercises"]}
    assert ok == {"toy-num": True, "toy-sym": False, "toy-fn": False}
    assert any("45 s limit" in e for e in r["errors"])


def test_markup_errors_are_named(tmp_path):
    nb = nbformat.read(toy_chapter(tmp_path / "ch9_toy.ipynb"), as_version=4)
    nb.cells = [c for c in nb.cells if not (c.metadata.get("exercise") == "toy-fn" and CHECK in c.metadata.get("tags", []))]
    with pytest.raises(MarkupError, match="toy-fn.*no check"):
        exercises(nb.cells)


def test_cli_errors_are_one_line(tmp_path):
    for args in (["/nonexistent.ipynb"], [str(tmp_path), "--grader", str(tmp_path)]):
        p = subprocess.run([sys.executable, "-m", "coursework.grade", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


# --- the book's own chapters -------------------------------------------------------------------------

def _run_grader(folder: Path, grader: Path, report: Path, jobs: int = 2) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "coursework.grade", str(folder), "--grader", str(grader), "--report", str(report), "--jobs", str(jobs)],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    return {r["chapter"]: r for r in json.loads(report.read_text())["notebooks"]}


@pytest.fixture(scope="module")
def book_coursework(tmp_path_factory):
    out = tmp_path_factory.mktemp("book") / "coursework"
    manifest = build(out, 0)
    return out, manifest


def test_every_chapter_has_graded_exercises(book_coursework):
    _, manifest = book_coursework
    names = [p.stem for p in chapters()]
    assert sorted(manifest["chapters"]) == sorted(names)
    assert all(len(c["exercises"]) >= 3 for c in manifest["chapters"].values())


def test_book_instructor_edition_scores_full_marks(book_coursework, tmp_path):
    out, manifest = book_coursework
    rows = _run_grader(out / "instructor", out / "grader", tmp_path / "r.json")
    bad = {k: [e for e in r["exercises"] if not e["passed"]] for k, r in rows.items() if r["score"] != r["max"]}
    assert not bad
    assert sum(r["max"] for r in rows.values()) == sum(len(c["exercises"]) for c in manifest["chapters"].values())


def test_book_student_edition_scores_zero(book_coursework, tmp_path):
    out, _ = book_coursework
    rows = _run_grader(out / "student", out / "grader", tmp_path / "r.json")
    assert all(r["score"] == 0 and r["max"] >= 3 for r in rows.values()), {k: r["score"] for k, r in rows.items()}
    assert all(e["message"] for r in rows.values() for e in r["exercises"])


def test_each_erratum_loses_exactly_its_exercise(book_coursework, tmp_path):
    """A find-the-bug exercise's starting cell is a real erratum of the field: a correct submission with
    that one answer replaced by the erratum loses that exercise and no other."""
    out, _ = book_coursework
    expected = {}
    for path in sorted((out / "instructor").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for ex in exercises(nb.cells):
            stub = nb.cells[ex.stub]
            if not stub.metadata.get("erratum"):
                continue
            bad = copy.deepcopy(nb)
            for i in ex.solutions:
                bad.cells[i].source = stub.source
            name = f"{path.stem}--{ex.id}"
            (tmp_path / name).mkdir()
            nbformat.write(bad, tmp_path / name / path.name)
            expected[name] = [ex.id]
    assert len(expected) >= 6, "the book has fewer than six find-the-bug exercises"
    proc = subprocess.run(
        [sys.executable, "-m", "coursework.grade", str(tmp_path), "--grader", str(out / "grader"), "--report", str(tmp_path / "r.json"), "--jobs", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr
    got = {Path(r["notebook"]).parent.name: [e["id"] for e in r["exercises"] if not e["passed"]] for r in json.loads((tmp_path / "r.json").read_text())["notebooks"]}
    assert got == expected


def test_book_variant_checks_still_hold(tmp_path):
    out = tmp_path / "cw"
    manifest = build(out, 7)
    assert manifest["variant"] == 7
    rows = _run_grader(out / "instructor", out / "grader", tmp_path / "r.json")
    assert {k: r["score"] for k, r in rows.items()} == {k: r["max"] for k, r in rows.items()}
