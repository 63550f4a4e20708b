"""Checks for the book's graded exercises: one line that says what was checked, what was
expected and what came out.

Every graded exercise of a chapter notebook ends in a check cell of the form::

    with grading.exercise("ch3-skip"):
        grading.expect_sym_equal(skip_coef, sp.sqrt(abar_t / abar_s), what="the mean coefficient c")

In the book and in the instructor edition the solution has run and the checks pass; in the
student edition the starting cell has run instead, and the same cell says which part is not right
yet, with a hint, but never the expected answer. ``pick`` draws an exercise's constants for a variant
of the coursework: variant 0 is the book's. Every random input a check draws comes from a generator
seeded by the exercise's id and variant (:func:`exercise_seed`); no check touches the global
generators of the notebook it runs in.

The coursework grader runs the same check cells in its own process, where each ``expect_*`` call is
one part of the exercise (partial credit): see :func:`recording`.
"""

from __future__ import annotations

import contextvars
import functools
import random
import sys
import zlib
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import torch

__all__ = [
    "ExerciseFailed",
    "exercise",
    "exercise_seed",
    "pick",
    "recording",
    "expect",
    "expect_close",
    "expect_equal",
    "expect_sym_equal",
    "expect_same_function",
]


class ExerciseFailed(AssertionError):
    """A check of a graded exercise failed; the message says what was checked and what came out."""


def pick(variant: int, key: str, choices: Sequence[Any]) -> Any:
    """The constant ``key`` of an exercise for coursework variant ``variant``.

    Variant 0 (the book) always gets ``choices[0]``; any other variant gets a choice fixed by
    ``(variant, key)``, so an edition is reproducible and its exercises' constants differ.
    """
    if not len(choices):
        raise ValueError(f"pick({key!r}): choices must not be empty")
    if int(variant) == 0:
        return choices[0]
    rng = random.Random(zlib.crc32(f"{int(variant)}:{key}".encode()))
    return choices[rng.randrange(len(choices))]


def _round(v: Any) -> Any:
    if isinstance(v, float):
        return float(f"{v:.6g}")
    if isinstance(v, list):
        return [_round(u) for u in v]
    return v


def _short(x: Any, limit: int = 200) -> str:
    if isinstance(x, torch.Tensor):
        x = x.detach()
        s = f"tensor of shape {tuple(x.shape)}" if x.numel() > 8 else repr(_round(x.tolist()))
    elif isinstance(x, float):
        s = f"{x:.6g}"
    else:
        s = repr(x) if not hasattr(x, "free_symbols") else str(x)
    return s if len(s) <= limit else s[: limit - 3] + "..."


_CURRENT: contextvars.ContextVar = contextvars.ContextVar("grading_exercise", default=("", 0))
_RECORDER: contextvars.ContextVar = contextvars.ContextVar("grading_recorder", default=None)


def exercise_seed(exercise_id: str, variant: int = 0) -> int:
    """The seed of an exercise's random checks: fixed by ``(exercise_id, variant)``."""
    return zlib.crc32(f"check:{exercise_id}:{int(variant)}".encode())


class _Recorder:
    def __init__(self, filename: str):
        self.filename = filename
        self.parts: list[tuple[int | None, bool, str]] = []  # (line in the check, passed, message)
        self.stopped: str | None = None
        self.depth = 0

    def line(self) -> int | None:
        f = sys._getframe(1)
        while f is not None:
            if f.f_code.co_filename == self.filename:
                return f.f_lineno
            f = f.f_back
        return None


@contextmanager
def recording(filename: str) -> Iterator[_Recorder]:
    """Grade instead of raise: inside, each top-level ``expect_*`` call made from code compiled with
    ``filename`` is recorded as one part (line, passed, message) and does not stop the check; an error
    of any other kind stops it (``stopped``) and is not raised."""
    rec = _Recorder(filename)
    token = _RECORDER.set(rec)
    try:
        yield rec
    finally:
        _RECORDER.reset(token)


def _part(fn):
    @functools.wraps(fn)
    def part(*args, **kwargs):
        rec = _RECORDER.get()
        if rec is None or rec.depth:
            return fn(*args, **kwargs)
        rec.depth += 1
        try:
            fn(*args, **kwargs)
        except ExerciseFailed as e:
            rec.parts.append((rec.line(), False, str(e)))
        else:
            rec.parts.append((rec.line(), True, ""))
        finally:
            rec.depth -= 1

    return part


class exercise:
    """``with grading.exercise("ch3-skip"):`` runs the checks of one exercise: prints
    ``<id>: passed`` or raises ``ExerciseFailed`` whose message starts with ``<id>: failed`` and says
    which part is not right yet (never the expected answer). Random checks inside are seeded by the
    exercise's id and the notebook's ``VARIANT``."""

    def __init__(self, exercise_id: str, variant: int | None = None):
        self.id = exercise_id
        if variant is None:
            variant = sys._getframe(1).f_globals.get("VARIANT", 0)
        self.variant = int(variant) if isinstance(variant, int) else 0

    def __enter__(self):
        self._token = _CURRENT.set((self.id, self.variant))
        return self

    def __exit__(self, kind, e, tb):
        _CURRENT.reset(self._token)
        rec = _RECORDER.get()
        if rec is not None:
            if e is not None:
                rec.stopped = str(e) if isinstance(e, ExerciseFailed) else f"your code raised {type(e).__name__}: {str(e)[:300]}"
            return True
        if e is None:
            print(f"{self.id}: passed")
            return False
        if isinstance(e, ExerciseFailed):
            raise ExerciseFailed(f"{self.id}: failed: {e}") from None
        if isinstance(e, Exception):  # the student's code raised: say so, with the error's own line
            raise ExerciseFailed(f"{self.id}: failed: your code raised {type(e).__name__}: {e}") from None
        return False


@_part
def expect(condition: bool, *, what: str, expected: Any = None, got: Any = None) -> None:
    """Fail unless ``condition``. ``expected`` describes what is wanted in words a student may read (a
    type, a threshold: never the answer itself); ``got`` is what the student's answer gave."""
    if not bool(condition):
        msg = f"checked {what}: not right yet"
        if expected is not None:
            msg += f"; wanted {expected if isinstance(expected, str) else _short(expected)}"
        if got is not None:
            msg += f"; got {got if isinstance(got, str) else _short(got)}"
        raise ExerciseFailed(msg)


@_part
def expect_equal(got: Any, expected: Any, *, what: str) -> None:
    """Exact equality (ints, strings, tuples)."""
    if got is None or got is Ellipsis:
        raise ExerciseFailed(f"checked {what}: got nothing ({got!r}); set it in the starting cell")
    if not got == expected:
        raise ExerciseFailed(f"checked {what}: not right yet (got {_short(got)})")


def _close(got: Any, expected: Any, what: str, rtol: float, atol: float) -> None:
    if got is None or got is Ellipsis:
        raise ExerciseFailed(f"checked {what}: got nothing ({got!r}); set it in the starting cell")
    try:
        g = torch.as_tensor(got, dtype=torch.float64)
        e = torch.as_tensor(expected, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise ExerciseFailed(f"checked {what}: expected a number or tensor, got {type(got).__name__}") from None
    if g.shape != e.shape:
        raise ExerciseFailed(f"checked {what}: expected shape {tuple(e.shape)}, got shape {tuple(g.shape)}")
    if not torch.isfinite(g).all():
        raise ExerciseFailed(f"checked {what}: got non-finite values")
    err = (g - e).abs()
    tol = atol + rtol * e.abs()
    if bool((err > tol).any()):
        rel = float((err / e.abs().clamp_min(1e-300)).max())
        raise ExerciseFailed(
            f"checked {what} (rtol {rtol:g}, atol {atol:g}): not right yet, got {_short(got)}"
            f" (off by up to {rel:.2g} of the expected size)"
        )


@_part
def expect_close(got: Any, expected: Any, *, what: str, rtol: float = 1e-5, atol: float = 1e-8) -> None:
    """Numbers or tensors equal within ``atol + rtol * |expected|``; shapes must agree."""
    _close(got, expected, what, rtol, atol)


@_part
def expect_sym_equal(got: Any, expected: Any, *, what: str, probes: int = 5, seed: int = 0) -> None:
    """Two SymPy expressions equal: equal values at ``probes`` random points in (0.05, 0.95) of every
    free symbol and, as an independent route, ``simplify(got - expected) == 0``."""
    import sympy as sp

    if got is None or got is Ellipsis:
        raise ExerciseFailed(f"checked {what}: got nothing ({got!r}); set it to a SymPy expression")
    if not isinstance(got, (sp.Basic, int, float)):
        raise ExerciseFailed(f"checked {what}: expected a SymPy expression, got {type(got).__name__}")
    g = sp.sympify(got)
    e = sp.sympify(expected)
    syms = sorted(g.free_symbols | e.free_symbols, key=str)
    rng = random.Random(seed)
    for _ in range(probes):
        point = {s: sp.Rational(rng.randint(5, 95), 100) for s in syms}
        try:
            gv, ev = complex(g.subs(point).evalf()), complex(e.subs(point).evalf())
        except (TypeError, ValueError):
            raise ExerciseFailed(f"checked {what}: got {_short(g)}, which does not evaluate to a number") from None
        if abs(gv - ev) > 1e-9 * (1 + abs(ev)):
            raise ExerciseFailed(f"checked {what}: not right yet, got {_short(g)} (it differs at {point})")
    if sp.simplify(g - e) != 0:
        raise ExerciseFailed(f"checked {what}: got {_short(g)}, which SymPy cannot show equal to the answer")


@_part
def expect_same_function(
    candidate: Callable,
    reference: Callable,
    make_inputs: Callable[[torch.Generator], tuple | dict],
    *,
    what: str,
    trials: int = 5,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    seed: int | None = None,
) -> None:
    """``candidate`` behaves as ``reference`` on ``trials`` random inputs.

    ``make_inputs(generator)`` returns the positional arguments (a tuple) or keyword arguments
    (a dict) of one call. The generator is seeded by ``seed`` or, without it, by the exercise's id
    and variant (:func:`exercise_seed`): the same inputs on every run, and the global generators
    are left alone.
    """
    if not callable(candidate):
        raise ExerciseFailed(f"checked {what}: expected a function, got {type(candidate).__name__}")
    g = torch.Generator()
    g.manual_seed(seed if seed is not None else exercise_seed(*_CURRENT.get()))
    for trial in range(trials):
        inputs = make_inputs(g)
        args, kwargs = (inputs, {}) if isinstance(inputs, tuple) else ((), inputs)
        want = reference(*args, **kwargs)
        try:
            out = candidate(*args, **kwargs)
        except ExerciseFailed:
            raise
        except Exception as e:
            raise ExerciseFailed(f"checked {what}: on random input {trial + 1} your function raised {type(e).__name__}: {e}") from None
        wants = want if isinstance(want, (tuple, list)) else (want,)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        if len(outs) != len(wants):
            raise ExerciseFailed(f"checked {what}: expected {len(wants)} outputs, got {len(outs)}")
        for k, (o, w) in enumerate(zip(outs, wants)):
            label = what if len(wants) == 1 else f"{what}, output {k + 1}"
            _close(o, w, f"{label} on random input {trial + 1}", rtol, atol)
