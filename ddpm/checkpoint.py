"""Checkpoints: one self-describing file per save, written atomically and checked on load.

File layout: a 10-byte magic ``b"DDPMCKPT1\\n"``, the SHA-256 of the payload in hex and a newline,
then the payload, a ``torch.save`` of a plain dict (loaded with ``weights_only=True``: tensors,
numbers, strings, lists, dicts; no arbitrary pickled objects). The dict holds the model and EMA
weights, the optimiser state, the step, the model's class and config, the schedule's betas,
the :class:`~ddpm.train.TrainConfig`, the random-number states and the loss history, so
:func:`load_checkpoint` rebuilds everything from the file alone.

Writing goes to a temporary name in the same folder, is flushed and fsync'ed, then renamed over
the target with ``os.replace`` (atomic on POSIX): a kill at any moment leaves either the old
file or the new one, never half of one. A truncated or corrupted file fails the checksum and
is refused with a ``ValueError`` naming it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import TrainConfig
from .schedule import Schedule

MAGIC = b"DDPMCKPT1\n"
FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt-(\d{8,})\.pt$")


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
    """The checkpoint of the highest step in ``folder``, or None."""
    found = list_checkpoints(folder)
    return found[-1][1] if found else None


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def _class_path(obj) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}:{cls.__qualname__}"


def _import(path: str):
    module, _, qual = path.partition(":")
    if not module or not qual:
        raise ValueError(f"bad class path {path!r}")
    obj = importlib.import_module(module)
    for part in qual.split("."):
        obj = getattr(obj, part)
    return obj


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

    ``model`` must have a ``.config`` dataclass and be rebuildable as ``type(model)(config)``
    (true of :class:`ddpm.MLP` and :class:`ddpm.UNet`). ``meta`` holds plain extra facts
    (the CLI stores the data set name there).
    """
    config = getattr(model, "config", None)
    if config is None or not dataclasses.is_dataclass(config):
        raise ValueError(f"model must have a dataclass .config to be checkpointed; {type(model).__name__} has none")
    payload = {
        "format": "ddpm-checkpoint",
        "version": FORMAT_VERSION,
        "model_class": _class_path(model),
        "config_class": _class_path(config),
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
    buf = io.BytesIO()
    torch.save(payload, buf)
    body = buf.getvalue()
    digest = hashlib.sha256(body).hexdigest().encode()
    atomic_write_bytes(path, MAGIC + digest + b"\n" + body)
    return Path(path)


@dataclass
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
    payload: dict | None = field(default=None, repr=False)

    @property
    def data(self) -> str | None:
        """The data set name the model was trained on (if the trainer recorded it)."""
        return self.meta.get("data")

    @property
    def sampling_model(self) -> nn.Module:
        """The EMA weights if present, else the raw model."""
        return self.ema if self.ema is not None else self.model


def read_payload(path) -> dict:
    """Read and verify a checkpoint file; return its dict. ``ValueError`` names the file if it
    is not a checkpoint, truncated or corrupted; ``FileNotFoundError`` if it is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    raw = path.read_bytes()
    if not raw.startswith(MAGIC):
        raise ValueError(f"{path} is not a ddpm checkpoint (no DDPMCKPT1 header)")
    head = raw[len(MAGIC) : len(MAGIC) + 65]
    body = raw[len(MAGIC) + 65 :]
    if len(head) != 65 or head[64:65] != b"\n":
        raise ValueError(f"{path} is a truncated ddpm checkpoint (header cut short)")
    if hashlib.sha256(body).hexdigest().encode() != head[:64]:
        raise ValueError(f"{path} is corrupted or truncated (checksum mismatch); use an earlier checkpoint or retrain")
    try:
        payload = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - the checksum matched, so this is a foreign or newer format
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        why = lines[-1][:300] if lines else ""
        raise ValueError(f"{path}: cannot read the checkpoint payload ({type(e).__name__}: {why})") from None
    if not isinstance(payload, dict) or payload.get("format") != "ddpm-checkpoint":
        raise ValueError(f"{path} is not a ddpm checkpoint")
    if payload.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format version {payload.get('version')} is not supported (this ddpm reads {FORMAT_VERSION})")
    return payload


def build_model(payload: dict) -> nn.Module:
    """Rebuild the (untrained) model described by a checkpoint payload."""
    try:
        cls = _import(payload["model_class"])
        cfg_cls = _import(payload["config_class"])
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(f"checkpoint names model class {payload.get('model_class')!r}, which cannot be imported ({e})") from None
    cfg = payload["model_config"]
    # dataclasses.asdict turns tuples into tuples and nested dataclasses into dicts; rebuild field by field.
    names = {f.name for f in dataclasses.fields(cfg_cls)}
    unknown = set(cfg) - names
    if unknown:
        raise ValueError(f"checkpoint's {cfg_cls.__name__} has fields {sorted(unknown)} that this version does not know")
    return cls(cfg_cls(**cfg))


def load_checkpoint(path, device="cpu", *, strict: bool = True) -> Checkpoint:
    """Load a checkpoint file, or the latest one in a folder, and rebuild model, EMA and schedule.

    Raises ``FileNotFoundError`` (missing file or empty folder) or ``ValueError`` (not a
    checkpoint, corrupted, truncated, or weights that do not fit the stored model config),
    each naming the path.
    """
    path = Path(path)
    if path.is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(f"no checkpoint (ckpt-*.pt) in folder {path}")
        path = latest
    payload = read_payload(path)
    model = build_model(payload)
    try:
        model.load_state_dict(payload["model"], strict=strict)
        ema = None
        if payload.get("ema") is not None:
            ema = build_model(payload)
            ema.load_state_dict(payload["ema"], strict=strict)
            ema.requires_grad_(False)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ValueError(f"{path}: weights do not match the stored {payload['model_class']} config ({first})") from None
    model.to(device).eval()
    if ema is not None:
        ema.to(device).eval()
    schedule = Schedule.from_betas(payload["betas"])
    config = payload.get("train_config")
    if config is not None:
        try:
            config = TrainConfig(**config)
        except (TypeError, ValueError):
            pass  # a config from another version stays a dict
    return Checkpoint(
        model=model,
        ema=ema,
        schedule=schedule,
        config=config,
        step=int(payload["step"]),
        path=path,
        meta=dict(payload.get("meta") or {}),
        optimizer_state=payload.get("optimizer"),
        rng=payload.get("rng"),
        losses=payload.get("losses"),
        payload=payload,
    )
