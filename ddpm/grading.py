"""Checks for the book's graded exercises: one line that says what was checked, what was
expected and what came out.

Every graded exercise of a chapter notebook ends in a check cell of the form::

    with grading.exercise("ch3-skip"):
        grading.expect_sym_equal(skip_coef, sp.sqrt(abar_t / abar_s), what="the mean coefficient c")

In the book and in the instructor edition the solution has run and the checks pass; in the
student edition the starting cell has run instead, and the same cell reports what is wrong.
``pick`` draws an exercise's constants for a variant of the coursework: variant 0 is the book's.
"""

from __future__ import annotations

import random
import zlib
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import torch

__all__ = [
    "ExerciseFailed",
    "exercise",
    "pick",
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


@contextmanager
def exercise(exercise_id: str) -> Iterator[None]:
    """Run the checks of one exercise: prints ``<id>: passed`` or raises ``ExerciseFailed``
    whose message starts with ``<id>: failed``."""
    try:
        yield
    except ExerciseFailed as e:
        raise ExerciseFailed(f"{exercise_id}: failed: {e}") from None
    except Exception as e:  # the student's code raised: say so, with the error's own line
        raise ExerciseFailed(f"{exercise_id}: failed: your code raised {type(e).__name__}: {e}") from None
    print(f"{exercise_id}: passed")


def expect(condition: bool, *, what: str, expected: Any = None, got: Any = None) -> None:
    """Fail unless ``condition``; the message names ``what`` and, if given, expected and got."""
    if not bool(condition):
        msg = f"checked {what}"
        if expected is not None or got is not None:
            msg += f"; expected {_short(expected)}, got {_short(got)}"
        raise ExerciseFailed(msg)


def expect_equal(got: Any, expected: Any, *, what: str) -> None:
    """Exact equality (ints, strings, tuples)."""
    expect(got == expected, what=what, expected=expected, got=got)


def expect_close(got: Any, expected: Any, *, what: str, rtol: float = 1e-5, atol: float = 1e-8) -> None:
    """Numbers or tensors equal within ``atol + rtol * |expected|``; shapes must agree."""
    if got is None or got is Ellipsis:
        raise ExerciseFailed(f"checked {what}; expected {_short(expected)}, got nothing ({got!r})")
    try:
        g = torch.as_tensor(got, dtype=torch.float64)
        e = torch.as_tensor(expected, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise ExerciseFailed(f"checked {what}; expected a number or tensor, got {type(got).__name__}") from None
    if g.shape != e.shape:
        raise ExerciseFailed(f"checked {what}; expected shape {tuple(e.shape)}, got shape {tuple(g.shape)}")
    if not torch.isfinite(g).all():
        raise ExerciseFailed(f"checked {what}; got non-finite values: {_short(got)}")
    err = (g - e).abs()
    tol = atol + rtol * e.abs()
    if bool((err > tol).any()):
        worst = float((err - tol).max())
        raise ExerciseFailed(
            f"checked {what} (rtol {rtol:g}, atol {atol:g}); expected {_short(expected)}, got {_short(got)}"
            f" (largest excess error {worst:.3g})"
        )


def expect_sym_equal(got: Any, expected: Any, *, what: str, probes: int = 5, seed: int = 0) -> None:
    """Two SymPy expressions equal: ``simplify(got - expected) == 0`` and, as an independent
    route, equal values at ``probes`` random points in (0.05, 0.95) of every free symbol."""
    import sympy as sp

    if got is None or got is Ellipsis:
        raise ExerciseFailed(f"checked {what}; expected a SymPy expression, got nothing ({got!r})")
    try:
        g = sp.sympify(got)
    except (sp.SympifyError, TypeError):
        raise ExerciseFailed(f"checked {what}; expected a SymPy expression, got {type(got).__name__}") from None
    e = sp.sympify(expected)
    syms = sorted(g.free_symbols | e.free_symbols, key=str)
    rng = random.Random(seed)
    for _ in range(probes):
        point = {s: sp.Rational(rng.randint(5, 95), 100) for s in syms}
        try:
            gv, ev = complex(g.subs(point).evalf()), complex(e.subs(point).evalf())
        except (TypeError, ValueError):
            raise ExerciseFailed(f"checked {what}; got {g}, which does not evaluate to a number") from None
        if abs(gv - ev) > 1e-9 * (1 + abs(ev)):
            raise ExerciseFailed(f"checked {what}; expected {e}, got {g} (they differ at {point})")
    if sp.simplify(g - e) != 0:
        raise ExerciseFailed(f"checked {what}; expected {e}, got {g} (SymPy cannot show them equal)")


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
    """``candidate`` behaves as ``reference`` on ``trials`` fresh random inputs.

    ``make_inputs(generator)`` returns the positional arguments (a tuple) or keyword arguments
    (a dict) of one call. Without ``seed`` the inputs are new on every run.
    """
    if not callable(candidate):
        raise ExerciseFailed(f"checked {what}; expected a function, got {type(candidate).__name__}")
    g = torch.Generator()
    g.manual_seed(seed if seed is not None else torch.seed())
    for trial in range(trials):
        inputs = make_inputs(g)
        args, kwargs = (inputs, {}) if isinstance(inputs, tuple) else ((), inputs)
        want = reference(*args, **kwargs)
        try:
            out = candidate(*args, **kwargs)
        except ExerciseFailed:
            raise
        except Exception as e:
            raise ExerciseFailed(f"checked {what}; on random input {trial + 1} your function raised {type(e).__name__}: {e}") from None
        wants = want if isinstance(want, (tuple, list)) else (want,)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        if len(outs) != len(wants):
            raise ExerciseFailed(f"checked {what}; expected {len(wants)} outputs, got {len(outs)}")
        for k, (o, w) in enumerate(zip(outs, wants)):
            label = what if len(wants) == 1 else f"{what}, output {k + 1}"
            expect_close(o, w, what=f"{label} on random input {trial + 1}", rtol=rtol, atol=atol)
