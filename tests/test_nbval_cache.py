"""nbval reads the build's execution instead of executing the notebooks again (book/conftest.py), and
still fails when a committed output of an ``nbval-check-output`` cell differs from what the code prints.

A two-cell notebook is executed into a scratch cache by the build's own executor
(scripts/execute_book.py), then checked by pytest with book/conftest.py in a scratch folder: with the
committed outputs (passes, nothing executed again), with a doctored output of the checked cell (fails),
of the unchecked cell (passes: lax), and with a cache made for another ``ddpm/`` (executed again, same
verdicts). A doctored copy of a real chapter is checked against the build's cache (after `make book`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from scripts import execute_book, toc

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ["nbval-check-output"]
# a set prints in an order that depends on PYTHONHASHSEED: the committed outputs hold the order of seed 0
CODE = [
    ('import pathlib\nwith open("runs.txt", "a") as f:\n    f.write("x")\nprint(sorted({3, 1, 2}), {"kl", "mse", "vb", "eps"})', CHECKED),
    ("print(1 / 3)", []),
]


def _notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src, metadata={"tags": tags}) for src, tags in CODE]
    nbformat.write(nb, path)
    return path


def _check(folder: Path, cache: Path, *notebooks: str) -> subprocess.CompletedProcess:
    """pytest with the book's conftest on notebooks of ``folder``, reading ``cache``."""
    env = {**os.environ, "DDPM_NB_CACHE": str(cache), "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", "--rootdir", str(folder),
            "-c", str(folder / "pytest.ini"), "--nbval-current-env",
            "--nbval-sanitize-with", str(ROOT / "tests" / "nbval_sanitize.cfg"), *notebooks]
    return subprocess.run(args, cwd=folder, env=env, capture_output=True, text=True, timeout=300)


def _outcomes(r: subprocess.CompletedProcess) -> dict[str, str]:
    """{"good.ipynb::Cell 0": "PASSED", ...} from pytest -v (which may print a file's node as good::ipynb)."""
    return {f"{name}.ipynb::Cell {k}": verdict
            for name, k, verdict in re.findall(r"^(\S+?)(?:\.|::)ipynb::Cell (\d+) (PASSED|FAILED)", r.stdout, re.M)}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nbval")
    shutil.copy(ROOT / "book" / "conftest.py", folder / "conftest.py")
    (folder / "pytest.ini").write_text("[pytest]\n")
    cache = folder / "cache"
    (folder / "src").mkdir()
    src = _notebook(folder / "src" / "toy.ipynb")
    assert execute_book.execute([src], cache) == []
    from jupyter_cache import get_cache

    executed = get_cache(str(cache)).merge_match_into_notebook(nbformat.read(src, as_version=4))[1]
    assert (folder / "src" / "runs.txt").read_text() == "x"
    good, bad, lax = (executed, nbformat.from_dict(json.loads(json.dumps(executed))),
                      nbformat.from_dict(json.loads(json.dumps(executed))))
    bad.cells[0].outputs[0]["text"] = bad.cells[0].outputs[0]["text"].replace("[1, 2, 3]", "[1, 2, 4]")
    lax.cells[1].outputs[0]["text"] = "0.25\n"
    for name, nb in (("good", good), ("bad", bad), ("lax", lax)):
        nbformat.write(nb, folder / f"{name}.ipynb")
    return folder, cache


def test_the_check_reads_the_build_and_fails_on_a_doctored_output(scratch):
    folder, cache = scratch
    r = _check(folder, cache, "-v", "good.ipynb", "bad.ipynb", "lax.ipynb")
    got = _outcomes(r)
    assert got == {"good.ipynb::Cell 0": "PASSED", "good.ipynb::Cell 1": "PASSED",
                   "bad.ipynb::Cell 0": "FAILED", "bad.ipynb::Cell 1": "PASSED",
                   "lax.ipynb::Cell 0": "PASSED", "lax.ipynb::Cell 1": "PASSED"}, r.stdout[-3000:]
    assert "Cell outputs differ" in r.stdout and "[1, 2, 4]" in r.stdout
    assert not (folder / "runs.txt").exists(), "nbval executed a notebook that the cache holds"


def test_a_cache_for_another_package_is_not_trusted(scratch, tmp_path):
    folder, cache = scratch
    stale = tmp_path / "stale"
    shutil.copytree(cache, stale)
    (stale / execute_book.FINGERPRINT_FILE).write_text("another ddpm\n")
    r = _check(folder, stale, "-v", "good.ipynb", "bad.ipynb")
    got = _outcomes(r)
    assert got == {"good.ipynb::Cell 0": "PASSED", "good.ipynb::Cell 1": "PASSED",
                   "bad.ipynb::Cell 0": "FAILED", "bad.ipynb::Cell 1": "PASSED"}, r.stdout[-3000:]
    # executed again, each in a fresh kernel with PYTHONHASHSEED=0 (the set printed in seed 0's order)
    assert (folder / "runs.txt").read_text() == "xx"
    (folder / "runs.txt").unlink()


def test_a_doctored_chapter_fails_against_the_build(tmp_path):
    """A real chapter: change one committed output of a checked cell; the build's execution disagrees."""
    if not execute_book.cache_is_current():
        if os.environ.get("CI"):
            pytest.fail("the build's execution cache is missing or stale: `make book` runs before the tests")
        pytest.skip("no current build cache (run make book)")
    shutil.copy(ROOT / "book" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    chapter = next(p for p in toc.chapters() if p.stem.startswith("ch3_"))
    nb = nbformat.read(chapter, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    k, cell = next((k, c) for k, c in enumerate(code) if "nbval-check-output" in c.metadata.get("tags", [])
                   and any(o.get("output_type") == "stream" for o in c.outputs))
    stream = next(o for o in cell.outputs if o.get("output_type") == "stream")
    stream["text"] = "".join(stream["text"]) + "a line the code does not print\n"
    nbformat.write(nb, tmp_path / chapter.name)
    r = _check(tmp_path, execute_book.CACHE, "-v", f"{chapter.name}::Cell {k}")
    assert _outcomes(r) == {f"{chapter.name}::Cell {k}": "FAILED"}, r.stdout[-3000:]
    assert "Cell outputs differ" in r.stdout
