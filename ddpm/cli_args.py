"""The command line's parser: one-line errors, validated flag types, and the ``train`` flags
generated from :class:`ddpm.TrainConfig`'s fields (help from the field comments, defaults from the
dataclass), so a new training field appears on the command line by itself."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import math
import os
import re
import sys

from .config import DIST_TIMEOUT_MAX, INT_RANGES, LR_MAX, TrainConfig

SUPPRESS = argparse.SUPPRESS


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line on stderr (``error: ...``) and exit code 2."""

    def error(self, message: str):
        sub = self.prog.split()[-1] if " " in self.prog and self.prog.split()[-1] != "ddpm" else ""
        hint = f"python -m ddpm {sub} --help" if sub else "python -m ddpm --help"
        print(f"error: {message.strip().replace(chr(10), ' ')} (see {hint})", file=sys.stderr)
        sys.exit(2)


# ---------------------------------------------------------------------------- flag types
def int_at_least(low: int, high: int | None = None):
    """An int parser: at least ``low`` and, if given, at most ``high`` (a typing error such as a
    seed of 40 digits is refused here, by name, instead of overflowing or hanging later)."""
    want = f">= {low}" if high is None else f"in {low}..{high}"

    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer {want}, got {s[:40]!r}") from None
        if v < low or (high is not None and v > high):
            shown = str(v) if len(str(v)) <= 20 else f"{str(v)[:12]}... ({len(str(v))} digits)"
            raise argparse.ArgumentTypeError(f"must be an integer {want}, got {shown}")
        return v

    parse.__name__ = f"int {want}"
    return parse


def user_path(s: str) -> str:
    """A path flag: ``~`` expanded once, here, so every use (and the package guard) sees the real path
    (the shell does not expand ``--out=~/run``)."""
    return os.path.expanduser(s)


def finite_float(low: float | None = None, high: float | None = None, *, low_open: bool = False, high_open: bool = False):
    """A float parser: finite, and in ``[low, high]`` (open ends with ``low_open``/``high_open``)."""
    lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
    hi = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
    rng = f" in {lo}, {hi}" if low is not None else ""

    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number{rng}, got {s!r}") from None
        bad = not math.isfinite(v) or (low is not None and (v <= low if low_open else v < low)) or (high is not None and (v >= high if high_open else v > high))
        if bad:
            raise argparse.ArgumentTypeError(f"must be a finite number{rng}, got {s}")
        return v

    parse.__name__ = "number"
    return parse


def int_list(s: str) -> tuple[int, ...]:
    """``"1,2,2"`` -> ``(1, 2, 2)``; ``""`` -> ``()``."""
    try:
        vals = tuple(int(v) for v in s.replace(" ", "").split(",") if v != "")
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers such as 1,2,2, got {s!r}") from None
    if any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"entries must be >= 1, got {s!r}")
    return vals


# ---------------------------------------------------------------------------- TrainConfig -> flags
# TrainConfig's numeric fields on the command line, in the ranges its __post_init__ checks (config.INT_RANGES).
_FLOAT_RANGES = {"lr": dict(low=0.0, high=LR_MAX, low_open=True), "ema_decay": dict(low=0.0, high=1.0, high_open=True),
                 "dist_timeout": dict(low=0.0, high=DIST_TIMEOUT_MAX, low_open=True)}
_FIELD_TYPES = {
    "int": lambda name: int_at_least(*INT_RANGES.get(name, (0, None))),
    "float": lambda name: finite_float(**_FLOAT_RANGES.get(name, dict(low=0.0))),
    "str": lambda name: str,
}
# Fields whose default depends on the data set (presets.DEFAULTS), not on the dataclass.
PER_DATA = ("batch_size", "lr", "warmup")


def field_comments(cls) -> dict[str, str]:
    """``{field: comment}`` from the ``name: type = default  # comment`` lines of a dataclass."""
    out = {}
    for line in inspect.getsource(cls).splitlines():
        m = re.match(r"^\s+(\w+)\s*:[^=#]+=[^#]*#\s*(.+)$", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_train_config_flags(p: argparse.ArgumentParser, per_data: dict | None = None) -> None:
    """One flag per :class:`TrainConfig` field (bools as ``--x/--no-x``); every default is
    ``SUPPRESS`` so the command knows which flags were given (for ``--resume``). ``per_data``: the
    per data set defaults of the :data:`PER_DATA` fields (``{data set: {field: value}}``), for the help."""
    notes = field_comments(TrainConfig)
    g = p.add_argument_group("training (ddpm.TrainConfig)")
    for f in dataclasses.fields(TrainConfig):
        kind = str(f.type).replace(" ", "")
        help_ = notes.get(f.name, "").replace("%", "%%")
        if f.name in PER_DATA and per_data:
            help_ += " (default per data set: " + ", ".join(f"{k} {v[f.name]:g}" for k, v in per_data.items()) + ")"
        elif f.default is not dataclasses.MISSING:
            help_ += f" (default: {f.default})"
        if kind == "bool":
            g.add_argument(flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction, default=SUPPRESS, help=help_)
        elif kind in _FIELD_TYPES:
            g.add_argument(flag(f.name), dest=f.name, type=_FIELD_TYPES[kind](f.name), default=SUPPRESS, help=help_,
                           metavar=f.name.upper())
        else:  # a type the command line cannot parse: leave the field at its default
            continue


def train_config_fields(a: argparse.Namespace) -> dict:
    """The TrainConfig fields given on the command line."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in vars(a).items() if k in names}


def make_train_config(**fields) -> TrainConfig:
    """``TrainConfig(**fields)`` whose errors name the command-line flag instead of the field."""
    try:
        return TrainConfig(**fields)
    except ValueError as e:
        msg = re.sub(r"TrainConfig\.(\w+)", lambda m: flag(m.group(1)), str(e))
        raise CLIError(msg) from None
