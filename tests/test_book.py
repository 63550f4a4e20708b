"""The book's structure: every claim of SPEC section A has its proof cell, chapters follow the
house rules, the toc is complete. (nbval runs the notebooks themselves; tests/test_site.py the website.)"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

import ddpm

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"

CLAIMS = {
    "ch3_forward_process": [f"F{i}" for i in range(1, 8)],
    "ch4_elbo": [f"E{i}" for i in range(1, 6)],
    "ch5_tractable_loss": [f"K{i}" for i in range(1, 9)],
    "ch6_training_sampling": ["S1", "S2"],
    "ch7_ddim": [f"D{i}" for i in range(1, 11)],
}
CHAPTERS = [
    "ch1_generative_modelling",
    "ch2_intuition",
    "ch3_forward_process",
    "ch4_elbo",
    "ch5_tractable_loss",
    "ch6_training_sampling",
    "ch7_ddim",
]


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(toc.get("parts", []))
    return files


def load(name: str) -> dict:
    return json.loads((BOOK / f"{name}.ipynb").read_text())


def src(cell) -> str:
    s = cell["source"]
    return "".join(s) if isinstance(s, list) else s


def test_toc_files_exist():
    for f in toc_files():
        assert any((ROOT / f"{f}{ext}").exists() for ext in (".md", ".ipynb")), f"_toc.yml lists {f}, which does not exist"


def test_every_chapter_is_in_the_toc():
    files = toc_files()
    for ch in CHAPTERS:
        assert f"book/{ch}" in files


def _ends_in_assert(code: str) -> bool:
    tree = ast.parse(code)
    body = [n for n in tree.body]
    if not body:
        return False
    last = body[-1]
    if isinstance(last, ast.Assert):
        return True
    if isinstance(last, ast.Expr) and isinstance(last.value, ast.Call):
        f = last.value.func
        name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
        if "assert" in name:
            return True
        # a final print after the asserts is fine if asserts precede it
        return name == "print" and any(isinstance(n, ast.Assert) for n in ast.walk(tree))
    return False


@pytest.mark.parametrize("chapter, claim", [(c, k) for c, ks in CLAIMS.items() for k in ks])
def test_claim_has_a_proof_cell(chapter, claim):
    nb = load(chapter)
    cells = [c for c in nb["cells"] if c["cell_type"] == "code" and f"claim-{claim}" in c.get("metadata", {}).get("tags", [])]
    assert cells, f"{chapter}.ipynb has no code cell tagged claim-{claim}"
    code = "\n".join(src(c) for c in cells)
    assert "sympy" in code or "sp." in code, f"claim-{claim} is not proven with SymPy"
    assert "assert" in code and _ends_in_assert(src(cells[0])), f"claim-{claim}'s cell does not end in asserts"
    # committed with outputs, executed
    assert all(c.get("execution_count") for c in cells), f"claim-{claim}'s cell was not executed before commit"
    # the MyST target that the cheat sheet and the errata link to
    targets = [c for c in nb["cells"] if c["cell_type"] == "markdown" and f"(claim-{claim})=" in src(c)]
    assert targets, f"{chapter}.ipynb has no Markdown target (claim-{claim})="


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_follows_house_rules(chapter):
    nb = load(chapter)
    code_cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    md = "\n".join(src(c) for c in nb["cells"] if c["cell_type"] == "markdown")
    # notebooks import from ddpm and never redefine it
    public = {n for n in dir(ddpm) if not n.startswith("_")}
    for c in code_cells:
        tree = ast.parse(src(c).replace("%matplotlib inline", ""))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                assert node.name not in public, f"{chapter} redefines ddpm.{node.name}"
    assert any("ddpm" in src(c) for c in code_cells), f"{chapter} never uses ddpm"
    # executed top to bottom and committed with outputs
    counts = [c.get("execution_count") for c in code_cells]
    assert all(counts), f"{chapter} has unexecuted code cells"
    assert counts == sorted(counts), f"{chapter} was not executed top to bottom"
    # exercises with hidden solutions, and a checking cell for each
    n_ex = len(re.findall(r"\{exercise\}", md))
    n_sol = len(re.findall(r"\{solution(?:-start)?\}", md))
    assert n_ex >= 2 and n_sol >= n_ex, f"{chapter}: {n_ex} exercises, {n_sol} solutions"
    assert md.count(":class: dropdown") >= n_ex, f"{chapter}: solutions must be hidden in a dropdown"
    checks = [c for c in code_cells if "nbval-check-output" in c.get("metadata", {}).get("tags", [])]
    assert checks, f"{chapter} has no nbval-checked cell"
    # at least one figure
    assert any(o.get("output_type") in ("display_data", "execute_result") and "image/png" in o.get("data", {}) for c in code_cells for o in c.get("outputs", [])), f"{chapter} has no figure"
    # no errors committed
    assert not any(o.get("output_type") == "error" for c in code_cells for o in c.get("outputs", []))


def test_cheatsheet_and_errata_link_every_claim():
    cheat = (BOOK / "cheatsheet.md").read_text()
    for ids in CLAIMS.values():
        for k in ids:
            assert f"claim-{k}>" in cheat or f"(claim-{k})" in cheat or f"#claim-{k}" in cheat, f"cheat sheet does not link claim {k}"
    errata = (BOOK / "errata.md").read_text()
    assert len(re.findall(r"claim-[FEKSD]\d+", errata)) >= 12
