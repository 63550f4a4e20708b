"""Reading the exercise markup of a chapter notebook (see ``coursework/README.md``).

An exercise is a run of tagged cells that share the metadata ``"exercise": "<id>"``: one
``exercise-stub`` (the student's starting cell), one or more ``exercise-solution`` cells inside a gated
``{solution-start}`` / ``{solution-end}`` dropdown, and one ``exercise-check``.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

STUB, SOLUTION, CHECK, PARAMS = "exercise-stub", "exercise-solution", "exercise-check", "coursework-parameters"
SETUP = "exercise-setup"  # a cell of the chapter the grader runs itself to build the checks' context
_SOL_START = re.compile(r"^\s*[:`]{3,}\s*\{solution-start\}", re.M)
_SOL_END = re.compile(r"^\s*[:`]{3,}\s*\{solution-end\}", re.M)
_VARIANT = re.compile(r"^VARIANT\s*=\s*-?\d+\s*$", re.M)


class MarkupError(ValueError):
    """A chapter's exercise cells do not follow the convention of ``coursework/README.md``."""


def source(cell) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def exercise_id(cell) -> str | None:
    return cell.get("metadata", {}).get("exercise")


def is_solution_start(cell) -> bool:
    return cell.get("cell_type") == "markdown" and bool(_SOL_START.search(source(cell)))


def is_solution_end(cell) -> bool:
    return cell.get("cell_type") == "markdown" and bool(_SOL_END.search(source(cell)))


@dataclass
class Exercise:
    id: str
    stub: int  # cell indices in the master notebook
    solutions: list[int] = field(default_factory=list)
    check: int | None = None
    gate: tuple[int, int] | None = None  # solution-start, solution-end cells


def parameters_cell(cells) -> int:
    """Index of the one ``coursework-parameters`` cell (``VARIANT = 0``)."""
    found = [i for i, c in enumerate(cells) if PARAMS in tags(c)]
    if len(found) != 1:
        raise MarkupError(f"expected one cell tagged {PARAMS!r}, found {len(found)}")
    if not _VARIANT.search(source(cells[found[0]])):
        raise MarkupError(f"the {PARAMS!r} cell must contain a line 'VARIANT = 0'")
    return found[0]


def exercises(cells) -> list[Exercise]:
    """The exercises of a master notebook, in order; ``MarkupError`` names what is malformed."""
    out: dict[str, Exercise] = {}
    order: list[str] = []
    open_gate: int | None = None
    for i, c in enumerate(cells):
        if is_solution_start(c):
            if open_gate is not None:
                raise MarkupError(f"cell {i}: a solution-start inside another solution (opened at cell {open_gate})")
            open_gate = i
            continue
        if is_solution_end(c):
            if open_gate is None:
                raise MarkupError(f"cell {i}: solution-end without solution-start")
            owners = {exercise_id(cells[j]) for j in range(open_gate + 1, i) if SOLUTION in tags(cells[j])}
            if len(owners) != 1:
                raise MarkupError(f"cells {open_gate}-{i}: a solution dropdown must hold the solution cells of exactly one exercise, found {sorted(map(str, owners))}")
            out[owners.pop()].gate = (open_gate, i)
            open_gate = None
            continue
        t = tags(c)
        kinds = [k for k in (STUB, SOLUTION, CHECK) if k in t]
        if not kinds:
            continue
        if len(kinds) > 1 or c.get("cell_type") != "code":
            raise MarkupError(f"cell {i}: a code cell carries one of {STUB}, {SOLUTION}, {CHECK}; got tags {t}")
        eid = exercise_id(c)
        if not eid:
            raise MarkupError(f"cell {i}: tagged {kinds[0]} but has no metadata 'exercise'")
        kind = kinds[0]
        if kind == STUB:
            if eid in out:
                raise MarkupError(f"cell {i}: exercise {eid!r} has a second starting cell")
            out[eid] = Exercise(eid, stub=i)
            order.append(eid)
            continue
        if eid not in out:
            raise MarkupError(f"cell {i}: {kind} of {eid!r} comes before its starting cell")
        ex = out[eid]
        if kind == SOLUTION:
            if open_gate is None:
                raise MarkupError(f"cell {i}: solution of {eid!r} is not inside a solution-start/solution-end dropdown")
            ex.solutions.append(i)
        else:
            if ex.check is not None:
                raise MarkupError(f"cell {i}: exercise {eid!r} has a second check cell")
            ex.check = i
    if open_gate is not None:
        raise MarkupError(f"cell {open_gate}: solution-start is never closed")
    for eid in order:
        ex = out[eid]
        if not ex.solutions or ex.gate is None:
            raise MarkupError(f"exercise {eid!r} has no solution cell in a dropdown")
        if ex.check is None:
            raise MarkupError(f"exercise {eid!r} has no check cell")
        if not (ex.stub < ex.gate[0] and ex.gate[1] < ex.check):
            raise MarkupError(f"exercise {eid!r}: the order must be starting cell, solution dropdown, check")
    return [out[e] for e in order]


def top_level_names(src: str) -> list[str]:
    """The names a cell binds at top level (assignments, ``def``, ``class``, imports), in order."""
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return []
    out: list[str] = []

    def add(n):
        if n not in out:
            out.append(n)

    def targets(t):
        if isinstance(t, ast.Name):
            add(t.id)
        elif isinstance(t, (ast.Tuple, ast.List)):
            for e in t.elts:
                targets(e)
        elif isinstance(t, ast.Starred):
            targets(t.value)

    for node in tree.body:
        if isinstance(node, ast.Assign):
            for t in node.targets:
                targets(t)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets(node.target)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                add((a.asname or a.name).split(".")[0])
    return out


def answer_names(cells, ex: Exercise) -> list[str]:
    """The names an exercise's answer consists of: those its starting cell and its solution both bind
    (or the starting cell's metadata ``"answers"``)."""
    stub = cells[ex.stub]
    given = stub.get("metadata", {}).get("answers")
    if given:
        return list(given)
    solved = set()
    for i in ex.solutions:
        solved.update(top_level_names(source(cells[i])))
    return [n for n in top_level_names(source(stub)) if n in solved]


def check_parts(src: str) -> list[list[int]]:
    """The parts of a check: its ``grading.expect*`` calls, as ``[first line, last line]``."""
    out = []
    for node in ast.walk(ast.parse(src)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr.startswith("expect")
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "grading"):
            out.append([node.lineno, node.end_lineno])
    return sorted(out)


def loaded_names(src: str) -> set[str]:
    """The names a cell reads (anywhere in it)."""
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return set()
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def stored_names(src: str) -> set[str]:
    """Every name a cell binds anywhere (assignments, loop targets, arguments, definitions, imports)."""
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return set()
    out = set(top_level_names(src))
    for n in ast.walk(tree):
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            out.add(n.id)
        elif isinstance(n, ast.arg):
            out.add(n.arg)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(n.name)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            out.update((a.asname or a.name).split(".")[0] for a in n.names)
    return out


def setup_cells(cells, exs: list[Exercise], params: int) -> list[int]:
    """The chapter cells the exercises need, found by their names: every code cell tagged ``exercise-setup``,
    and, for each name an exercise's cells read but do not bind, the last other code cell before it that
    binds it, and so on for what that cell reads. The grader runs these (and the parameters cell) itself to
    build the checks' context; an exercise-only notebook is made of them and the exercise cells."""
    import builtins

    ex_cells = {params}
    for e in exs:
        ex_cells.update([e.stub, e.check, *e.solutions])
    chosen = {i for i, c in enumerate(cells) if SETUP in tags(c) and c.get("cell_type") == "code"}
    binds = {i: set(top_level_names(source(c))) for i, c in enumerate(cells) if c.get("cell_type") == "code"}
    skip = set(dir(builtins)) | {"VARIANT"}
    todo = []
    for e in exs:
        own = set()
        for i in [e.stub, *e.solutions, e.check]:
            own |= stored_names(source(cells[i]))
        for i in [e.stub, *e.solutions, e.check]:
            todo += [(n, e.stub) for n in loaded_names(source(cells[i])) - own - skip]
    done = set()
    while todo:
        name, before = todo.pop()
        if (name, before) in done:
            continue
        done.add((name, before))
        # the last binding before `before`, outside the exercises (an earlier exercise's cell does not count)
        k = next((i for i in range(before - 1, -1, -1) if i not in ex_cells and name in binds.get(i, ())), None)
        if k is None or k in chosen:
            continue
        chosen.add(k)
        todo += [(n, k) for n in loaded_names(source(cells[k])) - stored_names(source(cells[k])) - skip]
    return sorted(chosen)
