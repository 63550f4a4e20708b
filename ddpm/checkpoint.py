"""Checkpoints: one self-describing file per save that any PyTorch user can open, written
atomically and checked on load.

A checkpoint is a plain ``torch.save`` of a dict, so ``torch.load(path, weights_only=True)`` opens
it anywhere (tensors, numbers, strings, lists and dicts; no pickled objects). The dict holds the
model and EMA weights, the optimiser state, the step, the model's class (a name of
:data:`ddpm.presets.MODEL_CLASSES`, never a module to import) and config, the schedule's betas,
the :class:`~ddpm.TrainConfig`, the random-number states, the loss history, the data set it was
trained on (``meta``) and ``sha256``: the SHA-256 of everything else, recomputed on load, so a
corrupted file is refused even where its bytes still unpickle. The book's API page documents
every key.

Writing goes to a temporary name in the same folder, is fsync'ed, then renamed over the target:
a kill at any moment leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ._io import atomic_write
from .config import TrainConfig
from .presets import class_name, model_from_config
from .schedule import Schedule

FORMAT = "ddpm-checkpoint"
FORMAT_VERSION = 2
REQUIRED_KEYS = ("format", "version", "model_class", "model_config", "model", "step", "betas", "sha256")
_NAME = re.compile(r"^ckpt-(\d{8,})\.pt$")


class CheckpointWarning(UserWarning):
    """A damaged checkpoint in a run folder was skipped in favour of an older, valid one."""


def checkpoint_name(step: int) -> str:
    """``ckpt-00001000.pt``: zero-padded so names sort by step."""
    return f"ckpt-{int(step):08d}.pt"


def list_checkpoints(folder) -> list[tuple[int, Path]]:
    """``(step, path)`` of every finished checkpoint in ``folder``, by increasing step
    (temporary files of an interrupted write are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    out = []
    for p in folder.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(folder) -> Path | None:
    """The checkpoint file of the highest step in ``folder`` (not opened), or None.
    :func:`load_checkpoint` on a folder also skips a damaged newest file."""
    found = list_checkpoints(folder)
    return found[-1][1] if found else None


# ---------------------------------------------------------------------------- the digest
def _feed(h, obj) -> None:
    """Hash ``obj`` (nested dicts/lists of tensors and plain values) in a canonical order."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(b"D%d" % len(obj))
        for k in sorted(obj, key=lambda k: (type(k).__name__, str(k))):
            h.update(f"K{type(k).__name__}:{k}".encode())
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(b"L%d" % len(obj))
        for v in obj:
            _feed(h, v)
    elif obj is None or isinstance(obj, (bool, int, float, str)):
        h.update(f"V{type(obj).__name__}:{obj!r}".encode())
    else:
        raise ValueError(f"a checkpoint can hold only tensors and plain values, got {type(obj).__name__}")


def payload_digest(payload: dict) -> str:
    """The SHA-256 (hex) of a checkpoint dict without its ``sha256`` entry."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in payload.items() if k != "sha256"})
    return h.hexdigest()


def _cpu(obj):
    """Move every tensor in a nested dict/list to the CPU (checkpoints load on any machine)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def save_checkpoint(
    path,
    model: nn.Module,
    schedule: Schedule,
    *,
    ema: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    step: int = 0,
    train_config=None,
    rng: dict | None = None,
    losses: list | None = None,
    meta: dict | None = None,
) -> Path:
    """Write a checkpoint to ``path`` atomically (see the module docstring) and return the path.

    ``model`` must be one of the package's models (:class:`ddpm.MLP`, :class:`ddpm.UNet`), so that
    :func:`load_checkpoint` can rebuild it from its config. ``meta`` holds plain extra facts (the
    command line stores the data set there).
    """
    name = class_name(model)
    config = model.config
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model_class": name,
        "model_config": dataclasses.asdict(config),
        "model": _cpu(model.state_dict()),
        "ema": _cpu(ema.state_dict()) if ema is not None else None,
        "optimizer": _cpu(optimizer.state_dict()) if optimizer is not None else None,
        "step": int(step),
        "betas": schedule.betas[1:].detach().cpu().to(torch.float64).clone(),
        "train_config": dataclasses.asdict(train_config) if train_config is not None else None,
        "rng": _cpu(rng) if rng is not None else None,
        "losses": [float(v) for v in losses] if losses is not None else None,
        "meta": dict(meta) if meta else {},
        "torch_version": str(torch.__version__),
    }
    payload["sha256"] = payload_digest(payload)
    return atomic_write(path, lambda f: torch.save(payload, f))


@dataclass(repr=False)
class Checkpoint:
    """What :func:`load_checkpoint` returns: ready-to-use modules plus the raw states for resuming."""

    model: nn.Module  # the trained weights (eval mode)
    ema: nn.Module | None  # the averaged weights (eval mode); sample with these
    schedule: Schedule
    config: Any  # the TrainConfig (a ddpm.TrainConfig, or a dict if its fields changed)
    step: int
    path: Path
    meta: dict = field(default_factory=dict)
    optimizer_state: dict | None = None
    rng: dict | None = None
    losses: list | None = None
    payload: dict | None = None
    skipped: list = field(default_factory=list)  # (path, reason) of damaged newer files passed over

    @property
    def data(self) -> str | None:
        """The data set name (or the absolute path of the user's file) the model was trained on."""
        return self.meta.get("data")

    @property
    def sampling_model(self) -> nn.Module:
        """The EMA weights if present, else the raw model."""
        return self.ema if self.ema is not None else self.model

    @property
    def sha256(self) -> str:
        """The checkpoint's content digest (hex)."""
        return (self.payload or {}).get("sha256", "")

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.model.parameters())
        return (f"Checkpoint({self.path}, step {self.step}, {type(self.model).__name__} with {n:,} parameters, "
                f"T = {self.schedule.T}, data {self.data!r}, ema {'yes' if self.ema is not None else 'no'}, "
                f"sha256 {self.sha256[:12]})")


def read_payload(path) -> dict:
    """Read and verify a checkpoint file; return its dict. ``ValueError`` names the file if it is
    not a checkpoint, truncated, corrupted or lacks keys; ``FileNotFoundError`` if it is missing."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; read_payload takes a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    with open(path, "rb") as f:  # PermissionError and the like surface as themselves
        try:
            payload = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - a damaged zip or pickle: one line naming the file
            payload, err = None, e
        else:
            err = None
    if err is not None:
        e = err  # noqa: BLE001 - a damaged zip or pickle: one line naming the file
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        why = lines[-1].split(". ")[0][:120] if lines else type(e).__name__  # torch's first sentence says it
        raise ValueError(f"{path} is truncated, corrupted or not a ddpm checkpoint (torch.load: {why})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a ddpm checkpoint (no format={FORMAT!r} entry)")
    if payload.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format version {payload.get('version')!r} is not supported (this ddpm reads {FORMAT_VERSION})")
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks the keys {missing}; it is damaged or was not written by ddpm")
    try:
        digest = payload_digest(payload)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    if digest != payload["sha256"]:
        raise ValueError(f"{path} is corrupted (its SHA-256 does not match its contents); use an earlier checkpoint or retrain")
    return payload


def _check_finite(state: dict, what: str, path: Path) -> None:
    for k, v in state.items():
        if isinstance(v, torch.Tensor) and v.dtype.is_floating_point and not torch.isfinite(v).all():
            raise ValueError(f"{path}: the {what} weights hold NaN or inf (in {k}); the run diverged: use an earlier checkpoint")


def _load_file(path: Path, device, strict: bool) -> Checkpoint:
    payload = read_payload(path)
    try:
        model = model_from_config(payload["model_class"], payload["model_config"])
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    if not isinstance(payload["model"], dict):
        raise ValueError(f"{path}: the 'model' entry is not a state dict")
    _check_finite(payload["model"], "model", path)
    ema = None
    try:
        model.load_state_dict(payload["model"], strict=strict)
        if payload.get("ema") is not None:
            _check_finite(payload["ema"], "EMA", path)
            ema = model_from_config(payload["model_class"], payload["model_config"])
            ema.load_state_dict(payload["ema"], strict=strict)
            ema.requires_grad_(False)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ValueError(f"{path}: weights do not match the stored {payload['model_class']} config ({first})") from None
    model.to(device).eval()
    if ema is not None:
        ema.to(device).eval()
    try:
        schedule = Schedule.from_betas(payload["betas"])
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: bad schedule ({e})") from None
    config = payload.get("train_config")
    if config is not None:
        try:
            config = TrainConfig(**config)
        except (TypeError, ValueError):
            pass  # a config from another version stays a dict
    return Checkpoint(model=model, ema=ema, schedule=schedule, config=config, step=int(payload["step"]), path=path,
                      meta=dict(payload.get("meta") or {}), optimizer_state=payload.get("optimizer"),
                      rng=payload.get("rng"), losses=payload.get("losses"), payload=payload)


def load_checkpoint(path, device="cpu", *, strict: bool = True, report: Callable[[str], None] | None = None) -> Checkpoint:
    """Load a checkpoint file, or the newest valid one in a run folder, and rebuild model, EMA and schedule.

    In a folder, a damaged newest file is reported (``report(message)``, by default a
    :class:`CheckpointWarning`) and the next older one is tried; the skipped files are listed in
    ``Checkpoint.skipped``. Raises ``FileNotFoundError`` (missing file or empty folder) or
    ``ValueError`` (not a checkpoint, corrupted, truncated, missing keys, NaN weights, or weights
    that do not fit the stored model config), each naming the path.
    """
    path = Path(path)
    if not path.is_dir():
        return _load_file(path, device, strict)
    found = list_checkpoints(path)
    if not found:
        raise FileNotFoundError(f"no checkpoint (ckpt-*.pt) in folder {path}")
    skipped: list[tuple[Path, str]] = []
    for _, p in reversed(found):
        try:
            ck = _load_file(p, device, strict)
        except ValueError as e:
            skipped.append((p, str(e)))
            continue
        if skipped:
            names = ", ".join(s.name for s, _ in skipped)
            msg = f"skipped damaged checkpoint(s) {names} in {path} ({skipped[0][1]}); using {p.name} (step {ck.step})"
            if report is None:
                warnings.warn(msg, CheckpointWarning, stacklevel=2)
            else:
                report(msg)
        ck.skipped = skipped
        return ck
    raise ValueError(f"no valid checkpoint in {path}: all {len(found)} are damaged (newest: {skipped[0][1]})")
