"""The book's structure: every claim of SPEC section A has its proof cell, chapters follow the
house rules, every glued number exists, the graded exercises follow coursework/README.md, the toc
is complete. (nbval runs the notebooks themselves; tests/test_site.py the website.)"""

from __future__ import annotations

import ast
import inspect
import json
import re
from pathlib import Path

import pytest

import ddpm
from scripts.toc import toc_files

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
    where = f"{chapter}.ipynb"
    idx = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and f"claim-{claim}" in c.get("metadata", {}).get("tags", [])]
    assert idx, f"{where} has no code cell tagged claim-{claim}"
    cells = [nb["cells"][i] for i in idx]
    code = "\n".join(src(c) for c in cells)
    assert "sympy" in code or "sp." in code, f"{where} cells {idx}: claim-{claim} is not proven with SymPy"
    assert "assert" in code and _ends_in_assert(src(cells[0])), f"{where} cell {idx[0]}: claim-{claim}'s cell does not end in asserts"
    # committed with outputs, executed
    for i, c in zip(idx, cells):
        assert c.get("execution_count"), f"{where} cell {i}: claim-{claim}'s cell was not executed before commit"
    # the MyST target that the cheat sheet and the errata link to
    targets = [c for c in nb["cells"] if c["cell_type"] == "markdown" and f"(claim-{claim})=" in src(c)]
    assert targets, f"{where} has no Markdown target (claim-{claim})="


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_follows_house_rules(chapter):
    nb = load(chapter)
    code_cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    md = "\n".join(src(c) for c in nb["cells"] if c["cell_type"] == "markdown")
    # notebooks import from ddpm and never redefine it
    public = {n for n in dir(ddpm) if not n.startswith("_") and not inspect.ismodule(getattr(ddpm, n))}
    for c in code_cells:
        tree = ast.parse(src(c).replace("%matplotlib inline", ""))
        for node in tree.body:  # a notebook's own functions and classes (methods may be named freely)
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                assert node.name not in public, f"{chapter}.ipynb cell {nb['cells'].index(c)} redefines ddpm.{node.name}"
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
    assert any(o.get("output_type") in ("display_data", "execute_result")
               and ({"image/png", "image/svg+xml"} & set(o.get("data", {})))
               for c in code_cells for o in c.get("outputs", [])), f"{chapter} has no figure"
    # no errors committed
    for c in code_cells:
        assert not any(o.get("output_type") == "error" for o in c.get("outputs", [])), (
            f"{chapter}.ipynb cell {nb['cells'].index(c)} was committed with an error output")


def test_cheatsheet_and_errata_link_every_claim():
    cheat = (BOOK / "cheatsheet.md").read_text()
    for ids in CLAIMS.values():
        for k in ids:
            assert f"claim-{k}>" in cheat or f"(claim-{k})" in cheat or f"#claim-{k}" in cheat, f"cheat sheet does not link claim {k}"
    errata = (BOOK / "errata.md").read_text()
    assert len(re.findall(r"claim-[FEKSD]\d+", errata)) >= 12


# ---------------------------------------------------------------------------------------------
# Glued numbers: every {glue...} name a page's text uses is glued by a cell of that notebook.

# {glue}`name`, {glue:text}`name:.3f`, {glue:any}`name`, {glue:md}`name`, {glue:math}`name`, and
# the directive forms ```{glue:figure} name``` / :::{glue:math} name
GLUE_ROLE = re.compile(r"\{glue(?::(?:any|text|md|math|figure))?\}`([^`]+)`")
GLUE_DIRECTIVE = re.compile(r"^\s*(?:`{3,}|:{3,})\{glue(?::(?:any|figure|math|md))?\}\s+(\S+)", re.M)


def glue_uses(text: str) -> list[str]:
    """The glue names a Markdown text uses (a role's ``name:format`` gives ``name``)."""
    names = [m.group(1) for m in GLUE_ROLE.finditer(text)]
    names += [m.group(1) for m in GLUE_DIRECTIVE.finditer(text)]
    out = []
    for n in names:
        n = n.strip()
        doc, sep, key = n.rpartition("::")  # "notebook.ipynb::name:.3f" or "name:.3f"
        out.append(doc + sep + key.split(":", 1)[0])
    return out


def glued_names(nb: dict) -> set[str]:
    """Names glued by the notebook's code: ``glue("name", ...)`` calls with a literal name (a static
    parse of the source) and, for names built at run time, the glue outputs the cells committed."""
    names = set()
    for c in nb["cells"]:
        if c["cell_type"] != "code":
            continue
        try:
            tree = ast.parse(re.sub(r"^\s*[%!].*$", "", src(c), flags=re.M))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                f = node.func
                fname = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
                if fname == "glue" and node.args and isinstance(node.args[0], ast.Constant):
                    names.add(str(node.args[0].value))
        for o in c.get("outputs", []):
            name = o.get("metadata", {}).get("scrapbook", {}).get("name")
            if name:
                names.add(name)
    return names


def book_pages() -> list[Path]:
    pages = []
    for f in toc_files():
        for ext in (".ipynb", ".md"):
            if (ROOT / f"{f}{ext}").exists():
                pages.append(ROOT / f"{f}{ext}")
    return pages


def test_glue_finds_names_it_should():
    """The parser itself: roles with and without formats, directives, and a glue call."""
    text = "a {glue:text}`t_star:.1f` b {glue}`n_train` c\n```{glue:figure} fig_x\n:name: f\n```\n"
    assert glue_uses(text) == ["t_star", "n_train", "fig_x"]
    assert glue_uses("{glue:text}`ch3.ipynb::abar-T:.3e`") == ["ch3.ipynb::abar-T"]
    nb = {"cells": [{"cell_type": "code", "source": 'from myst_nb import glue\nglue("t_star", 1.0, display=False)', "outputs": []}]}
    assert glued_names(nb) == {"t_star"}
    assert set(glue_uses(text)) - glued_names(nb) == {"n_train", "fig_x"}


@pytest.mark.parametrize("page", book_pages(), ids=lambda p: p.name)
def test_every_glued_name_is_glued(page):
    if page.suffix == ".md":
        uses = glue_uses(page.read_text())
        for n in uses:  # a .md page can only take glue from a notebook: "ch3_forward_process.ipynb::name"
            assert "::" in n, f"{page.name} uses {{glue}}`{n}`, but a .md page has no cells: glue it as <notebook>::{n}"
            nb_path, name = n.split("::", 1)
            other = (page.parent / nb_path).resolve()
            assert other.exists(), f"{page.name}: {{glue}}`{n}` names {nb_path}, which does not exist"
            assert name in glued_names(json.loads(other.read_text())), f"{page.name}: {other.name} never glues {name!r}"
        return
    nb = json.loads(page.read_text())
    have = glued_names(nb)
    for i, c in enumerate(nb["cells"]):
        if c["cell_type"] != "markdown":
            continue
        for n in glue_uses(src(c)):
            if "::" in n:
                nb_path, name = n.split("::", 1)
                other = (page.parent / nb_path).resolve()
                assert other.exists() and name in glued_names(json.loads(other.read_text())), (
                    f"{page.name} cell {i}: {{glue}}`{n}`: {nb_path} does not glue {name!r}")
            else:
                assert n in have, (f"{page.name} cell {i} uses {{glue}}`{n}`, but no cell of {page.name} "
                                   f"calls glue({n!r}, ...): glue it, or fix the name")



# A page without cells quotes a computed number only through glue. What such a page may type: the
# schedule's parameters and sizes (definitions, not results), and numbers quoted from a cited paper.
TYPED_ALLOWED = {
    "0.02", "1000", "300", "100", "2000", "255",  # DDPM's linear schedule, T, the bin width 2/255
    "4.04", "4.67", "13.36",  # DDIM paper, Table 1 (errata item 5 cites it)
}
_FENCED = re.compile(r"(?ms)^(`{3,}|:{3,}).*?^\1")
_NOT_PROSE = re.compile(r"(?:sec|eq|eqs|Table|Algorithm)\.? \d[\d.]*|\{[a-z:-]+\}`[^`]*`|``[^`]*``|`[^`]*`|\(\w[\w-]*\)=|\[[^\]]*\]\([^)]*\)|href=\"[^\"]*\"|<[^>]+>")
_NUMBER = re.compile(r"(?<![\w.{^-])\d+\.\d+|(?<![\w.{^-])\d{3,}(?![\w}])")


@pytest.mark.parametrize("page", [p for p in book_pages() if p.suffix == ".md"], ids=lambda p: p.name)
def test_pages_without_cells_type_no_computed_numbers(page):
    text = _NOT_PROSE.sub(" ", _FENCED.sub(" ", page.read_text()))  # code, references to a paper's sections, roles
    typed = sorted(set(_NUMBER.findall(text)) - TYPED_ALLOWED)
    assert not typed, (f"{page.name} types the number(s) {typed} by hand: glue them from the notebook that "
                       "computes them ({glue:text}`<notebook>.ipynb::name:fmt`), or add a cited source")


def test_typed_number_check_can_fail():
    assert _NUMBER.findall(_NOT_PROSE.sub(" ", "SNR(1) = 9999 and {glue:text}`a.ipynb::b:.3e` and 0.0064")) == ["9999", "0.0064"]


# ---------------------------------------------------------------------------------------------
# Graded exercises follow coursework/README.md.

EXERCISE_TAGS = ("exercise-stub", "exercise-solution", "exercise-check")
MIN_EXERCISES = 3


def _tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def _names_stored(code: str) -> set[str]:
    """Names a cell binds at its top level (assignments, defs, imports, for/with targets); names
    local to its functions, lambdas and comprehensions are not the notebook's."""
    out = set()
    try:
        tree = ast.parse(re.sub(r"^\s*[%!].*$", "", code, flags=re.M))
    except SyntaxError:
        return out
    scopes = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda,
              ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                out.add(child.name)
            elif isinstance(child, (ast.Import, ast.ImportFrom)):
                out.update((a.asname or a.name).split(".")[0] for a in child.names)
            elif isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store):
                out.add(child.id)
            if not isinstance(child, scopes):
                visit(child)

    visit(tree)
    return out


def _names_loaded(code: str) -> set[str]:
    try:
        tree = ast.parse(re.sub(r"^\s*[%!].*$", "", code, flags=re.M))
    except SyntaxError:
        return set()
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def coursework_problems(nb: dict, name: str) -> list[str]:
    """Every way the notebook breaks the coursework convention, each naming the notebook and cell."""
    where = f"{name}.ipynb"
    probs = []
    cells = nb["cells"]
    chapter_no = re.match(r"ch(\d+)_", name)
    # the variant cell
    params = [i for i, c in enumerate(cells) if "coursework-parameters" in _tags(c)]
    if len(params) != 1:
        probs.append(f"{where}: expected one code cell tagged coursework-parameters holding `VARIANT = 0`, found {len(params)}")
    else:
        i = params[0]
        body = [ln.strip() for ln in src(cells[i]).splitlines() if ln.strip() and not ln.strip().startswith("#")]
        if cells[i]["cell_type"] != "code" or body != ["VARIANT = 0"]:
            probs.append(f"{where} cell {i}: the coursework-parameters cell must hold exactly `VARIANT = 0`, holds {body}")
    # the exercise cells, by id
    by_id: dict[str, dict[str, list[int]]] = {}
    for i, c in enumerate(cells):
        tags = [t for t in _tags(c) if t in EXERCISE_TAGS]
        if not tags:
            continue
        if c["cell_type"] != "code":
            probs.append(f"{where} cell {i}: tagged {tags[0]} but is not a code cell")
            continue
        ex = c.get("metadata", {}).get("exercise")
        if not ex:
            probs.append(f"{where} cell {i}: tagged {tags[0]} without an \"exercise\" id in its metadata")
            continue
        for t in tags:
            by_id.setdefault(ex, {k: [] for k in EXERCISE_TAGS})[t].append(i)
    if len(by_id) < MIN_EXERCISES:
        probs.append(f"{where}: {len(by_id)} graded exercises (ids {sorted(by_id)}), at least {MIN_EXERCISES} wanted")
    if params and by_id and min(min(v for vs in d.values() for v in vs) for d in by_id.values()) < params[0]:
        probs.append(f"{where} cell {params[0]}: the coursework-parameters cell must come before every exercise")
    md = {i: src(c) for i, c in enumerate(cells) if c["cell_type"] == "markdown"}
    solution_only: dict[str, int] = {}  # name -> the solution cell that alone defines it
    for ex, d in sorted(by_id.items()):
        if chapter_no and not re.fullmatch(rf"ch{int(chapter_no.group(1))}-[a-z0-9-]+", ex):
            probs.append(f"{where}: exercise id {ex!r} is not of the form ch{int(chapter_no.group(1))}-<slug>")
        stub, sols, chk = d["exercise-stub"], d["exercise-solution"], d["exercise-check"]
        for tag, got, want in (("exercise-stub", stub, "exactly one"), ("exercise-check", chk, "exactly one")):
            if len(got) != 1:
                probs.append(f"{where}: exercise {ex} has {len(got)} cells tagged {tag} (cells {got}), {want} wanted")
        if not sols:
            probs.append(f"{where}: exercise {ex} has no cell tagged exercise-solution")
        if len(stub) != 1 or len(chk) != 1 or not sols:
            continue
        s, k = stub[0], chk[0]
        statement = [i for i, t in md.items() if i < s and re.search(r"\{exercise\}", t) and re.search(rf":label:\s*ex-{re.escape(ex)}\s*$", t, re.M)]
        if not statement:
            probs.append(f"{where} cell {s}: exercise {ex} has no :::{{exercise}} statement with :label: ex-{ex} before its starting cell")
        opens = [i for i, t in md.items() if re.search(rf"\{{solution-start\}}\s+ex-{re.escape(ex)}(?![\w-])", t)]
        if len(opens) != 1:
            probs.append(f"{where}: exercise {ex} needs one markdown cell opening {{solution-start}} ex-{ex}, found {len(opens)}")
            continue
        o = opens[0]
        if ":class: dropdown" not in md[o]:
            probs.append(f"{where} cell {o}: the solution of {ex} is not hidden (:class: dropdown missing)")
        closes = [i for i, t in md.items() if i > o and "{solution-end}" in t]
        c_end = closes[0] if closes else None
        if c_end is None:
            probs.append(f"{where} cell {o}: the solution of {ex} is never closed by a {{solution-end}} cell")
            continue
        if not s < o:
            probs.append(f"{where} cell {s}: the starting cell of {ex} must come before its solution-start (cell {o})")
        for j in sols:
            if not o < j < c_end:
                probs.append(f"{where} cell {j}: solution cell of {ex} lies outside its gated dropdown (cells {o}-{c_end})")
        between = [j for j in range(o + 1, c_end) if cells[j]["cell_type"] == "code" and j not in sols]
        if between:
            probs.append(f"{where} cells {between}: code inside the dropdown of {ex} that is not tagged exercise-solution")
        if not c_end < k:
            probs.append(f"{where} cell {k}: the check of {ex} must come after its {{solution-end}} (cell {c_end})")
        if not re.search(rf"grading\.exercise\(\s*[\"']{re.escape(ex)}[\"']\s*\)", src(cells[k])):
            probs.append(f"{where} cell {k}: the check of {ex} does not run `with grading.exercise(\"{ex}\"):`")
        stub_names = _names_stored(src(cells[s]))
        for j in sols:
            for n in _names_stored(src(cells[j])) - stub_names:
                solution_only.setdefault(n, j)
        check_src = src(cells[k])
        missing = ((set().union(*(_names_stored(src(cells[j])) for j in sols)) & _names_loaded(check_src))
                   - stub_names - _names_stored(check_src))
        for n in sorted(missing):
            probs.append(f"{where} cell {k}: the check of {ex} uses {n!r}, which only the solution (not the starting cell {s}) defines")
    # no cell outside the solutions may need a name that only a solution defines
    sol_cells = {j for d in by_id.values() for j in d["exercise-solution"]}
    defined_elsewhere = set()
    for i, c in enumerate(cells):
        if c["cell_type"] == "code" and i not in sol_cells:
            defined_elsewhere |= _names_stored(src(c))
    for n, j in sorted(solution_only.items()):
        if n in defined_elsewhere:
            continue
        for i in range(j + 1, len(cells)):
            c = cells[i]
            if (c["cell_type"] == "code" and i not in sol_cells and n in _names_loaded(src(c))
                    and n not in _names_stored(src(c))):
                if "exercise-check" in _tags(c):
                    continue  # reported above, with the exercise's name
                probs.append(f"{where} cell {i} uses {n!r}, which only the solution cell {j} defines: "
                             "the student edition (solutions removed) would fail here")
    return probs


def _cell(source, kind="code", tags=(), exercise=None):
    meta = {"tags": list(tags)}
    if exercise:
        meta["exercise"] = exercise
    return {"cell_type": kind, "source": source, "metadata": meta, "outputs": []}


def _good_exercise(ex):
    return [
        _cell(f":::{{exercise}}\n:label: ex-{ex}\nq\n:::", "markdown"),
        _cell("ans = None", tags=["exercise-stub"], exercise=ex),
        _cell(f":::{{solution-start}} ex-{ex}\n:class: dropdown\n:::", "markdown"),
        _cell("ans = 1", tags=["exercise-solution"], exercise=ex),
        _cell(":::{solution-end}\n:::", "markdown"),
        _cell(f'with grading.exercise("{ex}"):\n    grading.expect_equal(ans, 1, what="a")', tags=["exercise-check"], exercise=ex),
    ]


def test_coursework_check_bites():
    """The convention check passes a well-formed chapter and names each kind of breakage."""
    good = {"cells": [_cell("VARIANT = 0", tags=["coursework-parameters"])]
            + sum((_good_exercise(f"ch9-e{k}") for k in range(3)), [])}
    assert coursework_problems(good, "ch9_x") == []
    import copy

    def broken(edit):
        nb = copy.deepcopy(good)
        edit(nb["cells"])
        return " | ".join(coursework_problems(nb, "ch9_x"))

    assert "coursework-parameters" in broken(lambda c: c.pop(0))
    assert "at least 3" in broken(lambda c: [c.pop(1) for _ in range(6)])
    assert "dropdown" in broken(lambda c: c[3].update(source=":::{solution-start} ex-ch9-e0\n:::"))
    assert "exercise-check" in broken(lambda c: c[6]["metadata"].update(tags=[]))
    assert "only the solution" in broken(lambda c: c[2].update(source="x = None"))
    assert "outside its gated dropdown" in broken(lambda c: c.insert(6, c.pop(4)))
    assert "student edition" in broken(lambda c: [c[4].update(source="helper = 1\nans = helper"),
                                                  c.append(_cell("print(helper + 1)"))])
    assert "not of the form" in broken(lambda c: [x["metadata"].update(exercise="ex0") for x in c if x["metadata"].get("exercise") == "ch9-e0"])


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_exercises_follow_the_coursework_convention(chapter):
    problems = coursework_problems(load(chapter), chapter)
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------
# Figures: every image a chapter's cell shows is a numbered figure with a caption and alt text
# (myst-nb cell metadata; the website test checks the rendered pages, this one the sources).

IMAGE_MIMES = {"image/png", "image/svg+xml", "image/jpeg"}


def figure_problems(nb: dict, name: str) -> list[str]:
    where = f"{name}.ipynb"
    probs = []
    chapter_no = re.match(r"ch(\d+)_", name)
    for i, c in enumerate(nb["cells"]):
        if c["cell_type"] != "code":
            continue
        images = [o for o in c.get("outputs", []) if o.get("output_type") in ("display_data", "execute_result")
                  and IMAGE_MIMES & set(o.get("data", {}))]
        if not images:
            continue
        if len(images) > 1:
            probs.append(f"{where} cell {i}: {len(images)} images in one cell; one figure per cell")
        meta = c.get("metadata", {}).get("mystnb", {})
        fig, img = meta.get("figure", {}), meta.get("image", {})
        caption, fname, alt = str(fig.get("caption", "")).strip(), str(fig.get("name", "")), str(img.get("alt", "")).strip()
        if not caption:
            probs.append(f"{where} cell {i}: figure without a caption (metadata mystnb.figure.caption)")
        if chapter_no and not re.fullmatch(rf"fig-ch{int(chapter_no.group(1))}-[a-z0-9-]+", fname):
            probs.append(f"{where} cell {i}: figure name {fname!r} is not fig-ch{int(chapter_no.group(1))}-<slug> (metadata mystnb.figure.name)")
        if len(alt) < 15 or re.search(r"\.(png|svg|jpe?g)$|_images/", alt):
            probs.append(f"{where} cell {i}: figure alt text {alt!r} is not a description (metadata mystnb.image.alt, >= 15 characters)")
    return probs


def test_figure_check_bites():
    def nb_with(meta):
        out = {"output_type": "display_data", "data": {"image/png": "iVBOR", "text/plain": "<Figure>"}, "metadata": {}}
        return {"cells": [{"cell_type": "code", "source": "plt.show()", "metadata": meta, "outputs": [out]}]}

    good = {"mystnb": {"figure": {"name": "fig-ch9-x", "caption": "Look at the dip."}, "image": {"alt": "A curve with a dip near t = 350."}}}
    assert figure_problems(nb_with(good), "ch9_x") == []
    assert "caption" in " ".join(figure_problems(nb_with({}), "ch9_x"))
    bad_alt = json.loads(json.dumps(good))
    bad_alt["mystnb"]["image"]["alt"] = "fig_1.png"
    assert "alt text" in " ".join(figure_problems(nb_with(bad_alt), "ch9_x"))


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_figures_have_captions_and_alt_text(chapter):
    problems = figure_problems(load(chapter), chapter)
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------
# Claim meta-test: every claim's proof must be able to fail. Convention (tests/README.md):
# - a claim's proof cells are code cells tagged ``claim-<ID>``, each ending in asserts;
# - the cells they need (imports, symbols, small helpers, a schedule) are tagged ``claim-setup``;
#   a claim cell uses only names from those, so it runs alone after them in a fresh namespace;
# - each claim cell's metadata ``claim-mutations`` lists ``[exact text in the cell, wrong text]``
#   pairs, each a deliberately wrong version of the formula the claim proves; every occurrence of
#   the text is replaced. At least one mutation per claim id.
# The unmutated cell must pass; every mutated one must raise AssertionError (a NameError or a
# SyntaxError means the mutation, not the proof, is broken).

MUTATION_RESULTS: dict[str, tuple[int, int]] = {}  # claim id -> (mutants killed, mutants run)


def _tagged(nb: dict, tag: str) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code" and tag in c.get("metadata", {}).get("tags", [])]


def _runnable(code: str) -> str:
    return re.sub(r"^\s*[%!].*$", "", code, flags=re.M)  # IPython magics and shell lines


def _run_claim_cell(setup: list[str], code: str, where: str) -> None:
    """Run the notebook's claim-setup cells, then one claim cell, in a fresh namespace; quiet."""
    import contextlib
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    dtype = torch.get_default_dtype()
    ns: dict = {"__name__": "__claim__"}
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            for k, s in enumerate(setup):
                exec(compile(_runnable(s), f"<{where} claim-setup {k}>", "exec"), ns)
            exec(compile(_runnable(code), f"<{where}>", "exec"), ns)
    finally:
        torch.set_default_dtype(dtype)
        plt.close("all")


def _claim_params():
    return [(c, k) for c, ks in CLAIMS.items() for k in ks]


@pytest.mark.parametrize("chapter, claim", _claim_params())
def test_claim_checks_fail_on_wrong_formulas(chapter, claim):
    nb = load(chapter)
    cells = _tagged(nb, f"claim-{claim}")
    assert cells, f"{chapter}.ipynb has no code cell tagged claim-{claim}"
    setup = [src(c) for c in _tagged(nb, "claim-setup")]
    if not setup and not any("claim-mutations" in c.get("metadata", {}) for c in cells):
        pytest.skip(f"{chapter}.ipynb does not follow the claim convention yet (no claim-setup cell, "
                    f"no claim-mutations for {claim}): see tests/README.md")
    pairs = [(i, m) for i, c in enumerate(cells) for m in c.get("metadata", {}).get("claim-mutations", [])]
    assert pairs, f"{chapter}.ipynb: no claim-mutations in the metadata of claim-{claim}'s cells"
    for i, c in enumerate(cells):  # every unmutated cell passes on its own
        _run_claim_cell(setup, src(c), f"{chapter} claim-{claim} cell {i}")
    survivors, broken = [], []
    for i, m in pairs:
        assert isinstance(m, list) and len(m) == 2 and all(isinstance(s, str) for s in m), (
            f"{chapter} claim-{claim}: a mutation must be [text, wrong text], got {m!r}")
        old, new = m
        code = src(cells[i])
        assert old in code, f"{chapter} claim-{claim} cell {i}: mutation text {old!r} is not in the cell"
        assert old != new, f"{chapter} claim-{claim}: mutation {old!r} changes nothing"
        try:
            _run_claim_cell(setup, code.replace(old, new), f"{chapter} claim-{claim} cell {i} mutated")
        except AssertionError:
            continue  # killed
        except Exception as e:  # noqa: BLE001 - any other error means the mutant is not a formula
            broken.append(f"{old!r} -> {new!r}: {type(e).__name__}: {e}")
        else:
            survivors.append(f"{old!r} -> {new!r}")
    MUTATION_RESULTS[claim] = (len(pairs) - len(survivors) - len(broken), len(pairs))
    print(f"claim {claim}: {MUTATION_RESULTS[claim][0]} of {len(pairs)} mutations killed")
    assert not broken, f"{chapter} claim-{claim}: mutations that fail for another reason than an assert:\n" + "\n".join(broken)
    assert not survivors, f"{chapter} claim-{claim}: the checks pass on wrong formulas:\n" + "\n".join(survivors)


def test_mutation_score(record_property):
    """The mutation score of the claim checks run above (all claims when the whole file runs)."""
    if not MUTATION_RESULTS:
        pytest.skip("no claim meta-test ran in this session")
    killed = sum(k for k, _ in MUTATION_RESULTS.values())
    total = sum(n for _, n in MUTATION_RESULTS.values())
    record_property("claim_mutation_score", f"{killed}/{total}")
    print(f"claim mutation score: {killed} of {total} mutations killed ({100 * killed / total:.0f}%) "
          f"over {len(MUTATION_RESULTS)} claims")
    assert killed == total
