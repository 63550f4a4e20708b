"""The coursework on the book's own exercises: the book's editions built (variant 0) and graded on
notebooks made of each chapter's setup and exercise cells only. The instructor edition scores full marks,
the untouched student edition 0, and each erratum loses exactly its exercise. (The grader's defences are
tested on a small chapter in test_coursework.py; the two modules run in parallel under pytest-xdist.)"""

from __future__ import annotations

import nbformat
import pytest

from coursework.build import build, chapters, exercise_only
from coursework.markup import exercises
from test_coursework import _grade_folder


@pytest.fixture(scope="module")
def book_graded(tmp_path_factory):
    """The book's coursework built (variant 0), then graded on exercise-only notebooks: per chapter the
    instructor edition, the untouched student edition and, where the chapter has find-the-bug exercises,
    the instructor edition with every erratum put back in place of its solution."""
    tmp = tmp_path_factory.mktemp("book")
    out = tmp / "coursework"
    manifest = build(out, 0)
    folder = tmp / "class"
    errata = {}
    for path in sorted((out / "instructor").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for kind, cut in (("instructor", exercise_only(nb)), ("student", exercise_only(nb, student=True))):
            (folder / f"{kind}-{path.stem}").mkdir(parents=True)
            nbformat.write(cut, folder / f"{kind}-{path.stem}" / path.name)
        bad = exercise_only(nb)
        ids = []
        for ex in exercises(bad.cells):
            stub = bad.cells[ex.stub]
            if stub.metadata.get("erratum"):
                for i in ex.solutions:
                    bad.cells[i].source = stub.source
                ids.append(ex.id)
        if ids:
            (folder / f"errata-{path.stem}").mkdir()
            nbformat.write(bad, folder / f"errata-{path.stem}" / path.name)
            errata[f"errata-{path.stem}"] = ids
    proc, rows = _grade_folder(folder, out / "grader", tmp / "out", "--cell-timeout", "120", "--notebook-timeout", "300", timeout=900)
    return manifest, rows, errata


def test_every_chapter_has_graded_exercises(book_graded):
    manifest, _, _ = book_graded
    assert sorted(manifest["chapters"]) == sorted(p.stem for p in chapters())
    assert all(len(c["exercises"]) >= 3 for c in manifest["chapters"].values())
    assert all(e["answers"] and e["parts"] for c in manifest["chapters"].values() for e in c["exercises"])


def test_book_instructor_edition_scores_full_marks(book_graded):
    manifest, rows, _ = book_graded
    inst = {k: r for k, r in rows.items() if k.startswith("instructor-")}
    assert len(inst) == len(manifest["chapters"])
    bad = {k: [(e["id"], e["message"]) for e in _exs(r) if not e["passed"]] for k, r in inst.items() if r["score"] != r["max"]}
    assert not bad


def test_book_student_edition_scores_zero(book_graded):
    _, rows, _ = book_graded
    stud = {k: r for k, r in rows.items() if k.startswith("student-")}
    assert stud and all(r["score"] == 0 and r["max"] >= 3 for r in stud.values()), {k: r["score"] for k, r in stud.items()}
    assert all(e["message"] for r in stud.values() for e in _exs(r))


def test_each_erratum_loses_exactly_its_exercise(book_graded):
    _, rows, errata = book_graded
    assert sum(map(len, errata.values())) >= 6, "the book has fewer than six find-the-bug exercises"
    assert {k: [e["id"] for e in _exs(rows[k]) if not e["passed"]] for k in errata} == errata


def _exs(row):
    return [e for nb in row["notebooks"] for e in nb["exercises"]]
