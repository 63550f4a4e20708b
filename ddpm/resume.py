"""Resuming a run: the one check that a checkpoint and the run that would continue it agree
(book chapter "Training and sampling"). :func:`ddpm.train` calls it with the model, schedule and
config it is given; the command line calls it with the settings its flags ask for, before it
loads any data, and names the flag in its message.

A resumed run continues the same run, draw for draw: the model (class and config), the noise
schedule, every :class:`~ddpm.TrainConfig` field outside :data:`RESUMABLE` and the data must be
those of the checkpoint. The data are compared through the facts both sides record in ``meta``
(the command line records the data set, ``n``, the data folder, the model and schedule names, and
for a user's file its SHA-256): a file that moved and has the same hash is the same data; a file
changed in place is not.
"""

from __future__ import annotations

import dataclasses

import torch

from .config import RESUMABLE, TrainConfig
from .schedule import Schedule

# meta entries that describe the data and the model's preset: compared when both sides record them
META_KEYS = ("data", "data_sha256", "data_dir", "n", "data_seed", "model", "schedule")


class ResumeMismatch(ValueError):
    """A checkpoint and the run resuming it disagree on ``field`` (``old`` is the checkpoint's value).
    ``kind``: ``"data"`` (a ``meta`` entry), ``"model"`` (a model config field or the class),
    ``"schedule"`` or ``"train"`` (a :class:`~ddpm.TrainConfig` field)."""

    def __init__(self, path, kind: str, field: str, old, new, why: str = ""):
        self.path, self.kind, self.field, self.old, self.new = path, kind, field, old, new
        why = why or "would not continue the same run"
        label = {"model": "model config ", "train": "training config ", "data": "data "}.get(kind, "")
        if field in ("model class", "model", "schedule", "data"):
            label = ""
        super().__init__(f"checkpoint {path} was trained with {label}{field}={old!r}; resuming with {field}={new!r} {why}")


def _plain(v):
    """Lists and tuples compare alike (a checkpoint stores a config's tuples as lists)."""
    return tuple(_plain(x) for x in v) if isinstance(v, (list, tuple)) else v


def _check_meta(path, old: dict, new: dict) -> None:
    both = [k for k in META_KEYS if k in old and k in new]
    same_file = "data_sha256" in both and old["data_sha256"] is not None and old["data_sha256"] == new["data_sha256"]
    for k in both:
        if k == "data" and same_file:
            continue  # the same bytes at another place: the file moved
        if k == "data_sha256" and old[k] != new[k]:
            if old.get("data") == new.get("data"):
                raise ResumeMismatch(path, "data", "data_sha256", old[k], new[k],
                                     f"means the data file {new.get('data')} changed since the run started")
            raise ResumeMismatch(path, "data", "data", old.get("data"), new.get("data"),
                                 "would train on other data (the files' SHA-256 differ)")
        if _plain(old[k]) != _plain(new[k]):
            raise ResumeMismatch(path, "data" if k not in ("model", "schedule") else "model", k, old[k], new[k])


def check_resume(ck, *, model_class: str, model_config: dict, schedule: Schedule, config: TrainConfig,
                 meta: dict | None = None) -> None:
    """Raise :class:`ResumeMismatch` (a ``ValueError`` naming the checkpoint, the field and both values)
    unless the run described by the arguments continues the run of checkpoint ``ck``
    (a :class:`~ddpm.Checkpoint`). ``meta``: the facts about the data the new run records."""
    path = ck.path
    _check_meta(path, dict(ck.meta or {}), dict(meta or {}))
    if ck.payload["model_class"] != model_class:
        raise ResumeMismatch(path, "model", "model class", ck.payload["model_class"], model_class)
    old_cfg = ck.payload["model_config"]
    for k in sorted(set(old_cfg) | set(model_config)):
        if _plain(old_cfg.get(k)) != _plain(model_config.get(k)):
            raise ResumeMismatch(path, "model", k, old_cfg.get(k), model_config.get(k))
    if ck.schedule.T != schedule.T:
        raise ResumeMismatch(path, "schedule", "T", ck.schedule.T, schedule.T)
    if not torch.equal(ck.schedule.betas, schedule.betas.cpu().double()):
        raise ResumeMismatch(path, "schedule", "schedule", "its betas", "other betas", "(another noise schedule) "
                             "would not continue the same run")
    old = ck.config if isinstance(ck.config, TrainConfig) else None
    if old is not None:
        for f in dataclasses.fields(TrainConfig):
            if f.name not in RESUMABLE and getattr(old, f.name) != getattr(config, f.name):
                raise ResumeMismatch(path, "train", f.name, getattr(old, f.name), getattr(config, f.name))
