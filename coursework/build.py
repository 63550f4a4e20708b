"""Build the coursework from the book's chapter notebooks: a student edition, an instructor edition
and the grader's files, all from the one source.

    python -m coursework.build                 # -> _build/coursework/{student,instructor,grader}
    python -m coursework.build --seed 3        # a variant: other constants -> _build/coursework-seed3/

The student edition drops every solution (the ``exercise-solution`` cells and their dropdown) and every
output; the check cells stay, so a student can run the checks one exercise at a time. The instructor
edition is the chapter itself. The grader's ``manifest.json`` holds each exercise's check cell and where
it goes: the grader runs those, not whatever a submission contains. A variant sets ``VARIANT = n`` in the
``coursework-parameters`` cell; exercises draw their constants from it with ``ddpm.grading.pick``.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from .markup import MarkupError, answer_names, check_parts, exercises, parameters_cell, setup_cells, source

ROOT = Path(__file__).resolve().parents[1]


def default_out(seed: int) -> Path:
    return ROOT / "_build" / ("coursework" if seed == 0 else f"coursework-seed{seed}")


def chapters(root: Path = ROOT) -> list[Path]:
    """The chapter notebooks of the table of contents, in order (the book's one reader of ``_toc.yml``)."""
    from scripts.toc import chapters as toc_chapters

    return toc_chapters(root)


def _commit(root: Path) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _set_variant(cell, seed: int) -> None:
    cell["source"] = re.sub(r"^VARIANT\s*=\s*-?\d+\s*$", f"VARIANT = {seed}", source(cell), flags=re.M)


def _clear(cell) -> None:
    if cell.get("cell_type") == "code":
        cell["outputs"] = []
        cell["execution_count"] = None
        cell.get("metadata", {}).pop("execution", None)


def _note(edition: str, seed: int, ids: list[str]):
    if edition == "student":
        text = (
            "**Coursework, student edition.** Each graded exercise has a starting cell to complete and, below "
            "it, a check cell: run the check to see whether your answer passes and, if not, which part is not "
            "right yet, with a hint (it never shows the answer). The grader runs its own copy of the checks. "
            "`VARIANT` (near the top) fixes the constants the exercises draw with `grading.pick`: leave it as "
            f"it is. Exercises: {', '.join(ids)}."
        )
    else:
        text = f"**Coursework, instructor edition** (with solutions). Exercises: {', '.join(ids)}."
    if seed:
        text += f" Variant {seed}: the exercises' constants differ from the book's."
    return nbformat.v4.new_markdown_cell(text, metadata={"tags": ["coursework-note"]})


def build_notebook(path: Path, seed: int):
    """(student, instructor, manifest entry) for one chapter; ``None`` if it has no exercises."""
    nb = nbformat.read(path, as_version=4)
    cells = nb.cells
    exs = exercises(cells)
    if not exs:
        return None
    p = parameters_cell(cells)
    ids = [e.id for e in exs]
    drop = set()
    for e in exs:
        drop.update(range(e.gate[0], e.gate[1] + 1))
    editions = {}
    for edition in ("student", "instructor"):
        out = copy.deepcopy(nb)
        kept = []
        for i, c in enumerate(out.cells):
            if edition == "student" and i in drop:
                continue
            if i == p:
                _set_variant(c, seed)
            if edition == "student" or seed != 0:
                _clear(c)
            kept.append(c)
        first_md = next((k for k, c in enumerate(kept) if c.cell_type == "markdown"), -1)
        kept.insert(first_md + 1, _note(edition, seed, ids))
        out.cells = kept
        out.metadata["coursework"] = {"chapter": path.stem, "edition": edition, "variant": seed, "exercises": ids}
        editions[edition] = out
    # the grader runs these itself, in order: the parameters cell (with this variant) and the chapter cells the
    # exercises read names from (markup.setup_cells)
    keep = sorted({p, *setup_cells(cells, exs, p)})
    setup = [
        re.sub(r"^VARIANT\s*=\s*-?\d+\s*$", f"VARIANT = {seed}", source(cells[i]), flags=re.M) if i == p else source(cells[i])
        for i in keep
    ]
    entries = []
    for e in exs:
        answers = answer_names(cells, e)
        if not answers:
            raise MarkupError(f"exercise {e.id!r}: its starting cell and solution bind no common name (the answer); "
                              "name it in the starting cell's metadata \"answers\"")
        parts = check_parts(source(cells[e.check]))
        if not parts:
            raise MarkupError(f"exercise {e.id!r}: its check calls no grading.expect* function")
        entries.append({"id": e.id, "stub": source(cells[e.stub]), "answers": answers,
                        "check": source(cells[e.check]), "parts": parts})
    manifest = {"file": path.name, "setup": setup, "exercises": entries}
    return editions["student"], editions["instructor"], manifest


def exercise_only(nb, student: bool = False):
    """A chapter (master or instructor edition) cut down to its parameters cell, the cells its exercises
    read names from, and the exercise cells; with ``student``, the solutions removed too. Graded, it
    scores as the whole chapter would, in a fraction of the time (the tests grade the book this way)."""
    cells = nb.cells
    exs = exercises(cells)
    p = parameters_cell(cells)
    keep = {p, *setup_cells(cells, exs, p)}
    for e in exs:
        statement = next((i for i in range(e.stub - 1, -1, -1) if cells[i].get("cell_type") == "markdown"), None)
        keep.update(i for i in (statement,) if i is not None)
        keep.update([e.stub, e.check])
        if not student:
            keep.update(range(e.gate[0], e.gate[1] + 1))
    out = copy.deepcopy(nb)
    out.cells = [copy.deepcopy(c) for i, c in enumerate(cells) if i in keep]
    return out


def build(out: Path, seed: int = 0, root: Path = ROOT, notebooks: list[Path] | None = None) -> dict:
    """Write ``out/{student,instructor,grader}``; return the manifest."""
    notebooks = chapters(root) if notebooks is None else notebooks
    if out.exists():
        shutil.rmtree(out)
    dirs = {k: out / k for k in ("student", "instructor", "grader")}
    for d in dirs.values():
        d.mkdir(parents=True)
    manifest = {"variant": seed, "commit": _commit(root), "chapters": {}}
    for path in notebooks:
        try:
            built = build_notebook(path, seed)
        except MarkupError as e:
            raise MarkupError(f"{path.name}: {e}") from None
        if built is None:
            continue
        student, instructor, entry = built
        nbformat.write(student, dirs["student"] / path.name)
        nbformat.write(instructor, dirs["instructor"] / path.name)
        manifest["chapters"][path.stem] = entry
    data = root / "book" / "data"
    for d in dirs.values():
        if data.is_dir():
            shutil.copytree(data, d / "data")
    (dirs["grader"] / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m coursework.build", description=__doc__.splitlines()[0])
    ap.add_argument("--seed", default="0", help="variant number (0: the book's constants)")
    ap.add_argument("--out", default=None, help="output folder (default _build/coursework, or _build/coursework-seed<n>)")
    args = ap.parse_args(argv)
    try:
        seed = int(args.seed or 0)
        if seed < 0:
            raise ValueError
    except ValueError:
        print(f"error: --seed must be an integer >= 0, got {args.seed!r}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else default_out(seed)
    try:
        manifest = build(out, seed)
    except MarkupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = sum(len(c["exercises"]) for c in manifest["chapters"].values())
    print(f"coursework (variant {seed}): {len(manifest['chapters'])} notebooks, {n} graded exercises -> {out}")
    for k in ("student", "instructor", "grader"):
        print(f"  {k}: {out / k}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
