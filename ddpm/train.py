"""The training loop: DDPM Algorithm 1 with AdamW, warm-up, gradient clipping and EMA weights
(book chapter "Training and sampling").

Design choices, each checked by the package's tests:

- All randomness (batches, ``t``, ``eps``) comes from one ``torch.Generator`` seeded by
  ``config.seed``; the global RNG is seeded inside a ``fork_rng`` block (for dropout), so calling
  :func:`train` leaves the caller's RNG untouched. Both states go into every checkpoint.
- Resuming from a checkpoint at step ``k`` runs steps ``k+1..steps``; on the CPU the final weights
  equal an uninterrupted run's bit for bit.
- One step is :class:`ddpm.step.TrainStep`; it does no host-device synchronisation: losses go
  into a device buffer read back every ``log_every`` steps (at most every 1024 steps, and before
  every checkpoint). A NaN
  or inf loss is then found, named by its step, and raises ``FloatingPointError``; no checkpoint
  is ever written after it.
- Under ``torchrun`` (``WORLD_SIZE`` > 1) the same call trains with ``DistributedDataParallel``
  (NCCL on CUDA, gloo on the CPU): every process draws the global batch and keeps its slice, so
  the run does not depend on the number of processes; rank 0 alone writes the run folder.
- Before the first step: the run folder is a writable folder that takes a checkpoint, is locked
  against a second run, holds nothing but this run's files (a fresh run needs an empty folder),
  and its stale temporary files are removed; the model's config and the metadata serialise; one
  forward pass on two examples checks that the data fit the model.
- SIGTERM on a single process (a batch system's stop) ends the run at the next step boundary
  with a checkpoint, as :class:`Interrupted`.
- The steps of one call: :func:`train` checks its arguments and makes the :class:`TrainRun`
  (config, device, process group, run folder, generator); :func:`_opened` opens its run folder;
  :func:`_restore` reads a checkpoint to resume from (checked by :func:`ddpm.resume.check_resume`);
  :func:`_make_step` builds the optimiser step; :class:`_Loop` runs the steps with their
  read-backs, checkpoints and sample grids.
- bf16 autocast, ``torch.compile``, channels-last and the whole-step CUDA graph are CUDA-only here;
  asking for them on the CPU raises ``ValueError`` (a silent fallback would make a CPU timing look
  like a GPU recipe).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm  # the text bar: tqdm.auto warns on import in a notebook without ipywidgets

from . import distributed as _dist
from .checkpoint import checkpoint_name, list_checkpoints, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .distributed import DistContext
from .gpu import accelerate, compile_net, for_training
from .presets import class_name
from .resume import check_resume
from .runfolder import RunFolder, RunFolderError, os_error, plottable
from .samplers import sample_ddim
from .schedule import Schedule
from .step import TrainStep, lr_at

__all__ = ["TrainConfig", "TrainResult", "TrainRun", "TrainStep", "train", "lr_at", "resolve_device", "Interrupted", "PeerLost"]

LOSS_BUFFER = 1024  # most losses held on the device between two read-backs (a huge log_every allocates no more)


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    model: nn.Module  # the trained weights
    ema: nn.Module  # the averaged weights: sample with these
    losses: list = field(default_factory=list)  # loss_simple of the global batch at every step 1..steps (a resumed run includes the earlier ones)
    steps_per_sec: float = 0.0  # optimiser steps per second of this call (excluding checkpoint and sample-grid writes)
    step: int = 0  # the last step done
    seconds: float = 0.0  # wall time of this call's steps
    checkpoint: Path | None = None  # the last checkpoint written, if any
    resumed_from: int = 0  # the step a resumed run started after (0: fresh)
    images_per_second: float = 0.0  # training images per second (global batch) after the first warmup_steps steps
    warmup_steps: int = 0  # steps of this call left out of images_per_second (compilation, autotuning, first allocations)
    rank: int = 0  # this process's rank (0 writes the run folder)
    world_size: int = 1  # processes that trained together


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during :func:`train`; ``str(e)`` says which checkpoint is kept, if any.
    ``signal``: ``"SIGINT"`` or ``"SIGTERM"``."""

    def __init__(self, message: str, checkpoint: Path | None, step: int, signal: str = "SIGINT"):
        super().__init__(message)
        self.checkpoint, self.step, self.signal = checkpoint, step, signal

    def __str__(self) -> str:
        return self.args[0]


class PeerLost(RuntimeError):
    """Another process of a ``torchrun`` job failed or stopped answering."""


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available else CPU. A CUDA request without CUDA raises ``ValueError``."""
    if not isinstance(device, (str, torch.device)):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available on this machine; use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} requested but this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    return dev


def _rng_state(gen: torch.Generator, device: torch.device) -> dict:
    state = {"generator": gen.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _check_data(data: Tensor) -> Tensor:
    if not isinstance(data, Tensor):
        raise ValueError(f"data must be a tensor of shape (N, ...), got {type(data).__name__}")
    if data.dim() < 2 or data.shape[0] < 1:
        raise ValueError(f"data must have shape (N, ...) with N >= 1, got {tuple(data.shape)}")
    if not data.dtype.is_floating_point:
        raise ValueError(f"data must be a float tensor in [-1, 1], got dtype {data.dtype}")
    return data


def _check_model(model: nn.Module, schedule: Schedule, data: Tensor, device: torch.device) -> None:
    """One forward pass on two examples (eval mode, no grad, no random draws): the data fit the model."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module eps-predictor model(x_t, t), got {type(model).__name__}")
    x = data[:2].to(device)
    t = torch.full((x.shape[0],), schedule.T, dtype=torch.long, device=device)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            eps = model(x, t)
    except Exception as e:  # noqa: BLE001 - any failure here means data and model disagree
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise ValueError(f"the model cannot take this data: model(x_t, t) on 2 examples of shape {tuple(data.shape[1:])} "
                         f"failed ({type(e).__name__}: {first})") from None
    finally:
        model.train(was)
    if not isinstance(eps, Tensor) or tuple(eps.shape) != tuple(x.shape):
        got = tuple(eps.shape) if isinstance(eps, Tensor) else type(eps).__name__
        raise ValueError(f"model(x_t, t) must return eps of the data's shape {tuple(x.shape)}, got {got}")


def _check_serialisable(model: nn.Module, config: TrainConfig, meta: dict | None) -> None:
    """What a checkpoint stores besides tensors must save and load with ``weights_only=True``."""
    mc = getattr(model, "config", None)
    if mc is None or not dataclasses.is_dataclass(mc):
        raise ValueError(f"model must have a dataclass .config to be checkpointed; {type(model).__name__} has none "
                         f"(train without out_dir, or give it one)")
    buf = io.BytesIO()
    try:
        torch.save({"model_config": dataclasses.asdict(mc), "train_config": dataclasses.asdict(config), "meta": dict(meta or {})}, buf)
        buf.seek(0)
        torch.load(buf, weights_only=True)
    except Exception as e:  # noqa: BLE001
        first = (str(e).strip().splitlines() or [type(e).__name__])[-1][:200]
        raise ValueError(f"the model config or meta cannot be stored in a checkpoint (only numbers, strings, lists and dicts): {first}") from None


@dataclass(kw_only=True)
class TrainRun:
    """One call of :func:`train` as the loop sees it: everything a step, a read-back, a checkpoint or
    a sample grid needs besides the weights and the optimiser."""

    config: TrainConfig
    device: torch.device
    ctx: DistContext  # the process group (world_size 1 outside torchrun)
    folder: RunFolder | None  # the locked run folder (process 0 with out_dir only)
    out_dir: Path | None  # where checkpoints go (every process knows it; process 0 writes)
    generator: torch.Generator  # batches, t and eps: seeded by config.seed
    schedule: Schedule  # on the device
    data: Tensor  # on the device
    meta: dict = field(default_factory=dict)  # stored in every checkpoint
    progress: bool = False  # a progress bar (process 0 only)
    caller_mode: object = None  # the caller's CUDA sync debug mode, applied to the steps


def train(
    model: nn.Module,
    schedule: Schedule,
    data: Tensor,
    config: TrainConfig | None = None,
    *,
    out_dir=None,
    progress: bool = True,
    resume: bool | str | Path = False,
    meta: dict | None = None,
) -> TrainResult:
    """Train ``model`` (an ``eps``-predictor ``model(x_t, t)``) on ``data`` with ``loss_simple``
    (DDPM eq. 14, Algorithm 1).

    ``data``: float tensor ``(N, ...)`` in [-1, 1]; batches of ``config.batch_size`` are drawn
    with replacement. ``out_dir``: the run folder: checkpoints (every ``config.checkpoint_every``
    steps and at the end), ``loss.csv`` (every ``config.log_every`` steps) and ``samples.png``
    (every ``config.sample_every`` steps). A fresh run needs an empty (or new) folder; a folder
    holding files the run did not write is refused. ``resume=True`` continues from the newest valid
    checkpoint in ``out_dir`` (a fresh start if there is none); ``resume=<path of a checkpoint
    file>`` from that one; the model, schedule, training config and the data facts in ``meta``
    must match it (:func:`ddpm.resume.check_resume`). ``meta``: plain facts stored in each
    checkpoint (the command line stores the data set name and, for a user's file, its SHA-256);
    ``meta["world_size"]`` is set to the number of processes.

    Under ``torchrun`` every process calls this with the same arguments; ``config.batch_size`` is
    the global batch, split evenly across the processes.

    Raises ``FloatingPointError`` naming the step if the loss becomes NaN or inf, ``ValueError``
    for bad arguments, a mismatched checkpoint or an unavailable device, :class:`RunFolderError`
    (an ``OSError`` and ``ValueError``) naming the path when the run folder cannot be written, is
    in use by another run or holds files of its own, :class:`Interrupted` on Ctrl-C or SIGTERM
    and :class:`PeerLost` when another process of the job fails.
    """
    config = config if config is not None else TrainConfig()
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
    if not isinstance(schedule, Schedule):
        raise ValueError(f"schedule must be a ddpm.Schedule, got {type(schedule).__name__}")
    data = _check_data(data)
    device = resolve_device(config.device)
    if _dist.under_torchrun() and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", _dist._env_int("LOCAL_RANK") or 0)  # one GPU per process
    cuda_only = [n for n, on in (("bf16 autocast", config.bf16), ("torch.compile", config.compile),
                                 ("channels_last", config.channels_last), ("cuda_graph", config.cuda_graph)) if on]
    if cuda_only and device.type != "cuda":
        raise ValueError(f"{cuda_only[0]} is only supported on CUDA here (device is {device}); "
                         f"drop bf16/compile/channels_last/cuda_graph to train on the CPU")
    out_dir = Path(out_dir).expanduser() if out_dir is not None else None
    if resume and out_dir is None:
        raise ValueError("resume=True needs out_dir (the folder holding the checkpoints)")
    if out_dir is not None:
        _check_serialisable(model, config, meta)
    with _sync_debug(device, 0) as caller_mode:  # the caller's torch.cuda.set_sync_debug_mode applies to the steps
        model.to(device)
        _check_model(model, schedule, data, device)
        gen = torch.Generator(device=device)
        gen.manual_seed(config.seed)
        ctx = _dist.context(device, timeout=config.dist_timeout)
        run = TrainRun(config=config, device=device, ctx=ctx, folder=None, out_dir=out_dir, generator=gen,
                       schedule=schedule.to(device), data=data.to(device), meta={**(meta or {}), "world_size": ctx.world_size},
                       progress=progress and ctx.is_main, caller_mode=caller_mode)
        with _opened(run, model, resuming=bool(resume)):
            ck = _restore(run, model, resume)
            step_fn = _make_step(run, model, ck)
            with _dropout_rng(run, ck):
                return _Loop(run, model, step_fn, ck).run_steps()


@contextlib.contextmanager
def _sync_debug(device: torch.device, mode):
    """Set ``torch.cuda``'s sync debug mode inside the block (and yield the previous one). ``train`` runs
    its set-up, read-backs and checkpoint writes, which synchronise on purpose, with mode 0, and the
    steps with the caller's mode: under ``set_sync_debug_mode("error")`` a sync inside a step raises."""
    if device.type != "cuda" or mode is None:
        yield None
        return
    before = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode(mode)
    try:
        yield before
    finally:
        torch.cuda.set_sync_debug_mode(before)


@contextlib.contextmanager
def _opened(run: TrainRun, model: nn.Module, *, resuming: bool):
    """Check the run against the process group and open its run folder (process 0: checked, locked,
    stale temporary files removed; a fresh run's folder must hold nothing); close both afterwards."""
    config, ctx, ok = run.config, run.ctx, False
    try:
        if config.batch_size % ctx.world_size:
            raise ValueError(f"batch_size {config.batch_size} (the global batch) must be divisible by the number "
                             f"of processes, {ctx.world_size}")
        if ctx.distributed and config.cuda_graph:
            raise ValueError("cuda_graph captures one process's step; under torchrun DistributedDataParallel all-reduces "
                             "outside the graph: drop cuda_graph (compile_mode 'reduce-overhead' works per process)")
        msg = None
        if ctx.is_main and run.out_dir is not None:
            n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
            try:  # weights, EMA and AdamW's two moments
                run.folder = RunFolder(run.out_dir, need_bytes=4 * n_bytes, fresh=not resuming)
            except RunFolderError as e:
                msg = str(e)
        msg = _dist.broadcast_error(msg, ctx)  # every process stops with rank 0's message
        if msg is not None:
            raise RunFolderError(msg)
        if run.folder is not None and run.folder.cleaned:
            print(f"removed {len(run.folder.cleaned)} temporary file(s) left by an interrupted write in {run.out_dir}",
                  file=sys.stderr)
        yield
        ok = True
    finally:
        if run.folder is not None:
            run.folder.close()
        if ok or ctx.backend == "gloo":
            ctx.close()  # after a failed NCCL collective, ending the group can block: the process exits instead


def _restore(run: TrainRun, model: nn.Module, resume):
    """The checkpoint to continue from (checked against this run, its weights loaded into ``model``),
    or None for a fresh start."""
    chosen = Path(resume).expanduser() if isinstance(resume, (str, os.PathLike)) else None
    main = run.ctx.is_main
    if chosen is None and not (resume and list_checkpoints(run.out_dir)):
        if resume and main:
            print(f"no checkpoint in {run.out_dir}; starting from step 0", file=sys.stderr)
        return None
    ck = load_checkpoint(chosen if chosen is not None else run.out_dir, device="cpu")
    check_resume(ck, model_class=class_name(model), model_config=dataclasses.asdict(model.config),
                 schedule=run.schedule, config=run.config, meta=run.meta)
    model.load_state_dict(ck.payload["model"])
    old_ws = (ck.meta or {}).get("world_size", 1)
    if old_ws != run.ctx.world_size and main:
        print(f"resuming a run trained with {old_ws} process(es) with {run.ctx.world_size}: the draws are defined for the "
              f"global batch, so it continues the same run (to float tolerance)", file=sys.stderr)
    if ck.step >= run.config.steps and main:
        print(f"checkpoint {ck.path} is already at step {ck.step} >= steps {run.config.steps}; nothing to do", file=sys.stderr)
    return ck


def _make_step(run: TrainRun, model: nn.Module, ck) -> TrainStep:
    """The optimiser step (the network accelerated, wrapped for DDP and compiled as the config asks), its
    states restored from ``ck`` when resuming."""
    config, ctx, device, sched, gen = run.config, run.ctx, run.device, run.schedule, run.generator
    gpu = for_training(config, device)  # None: the plain network; else its accelerated copy (shared weights)
    net = model if gpu is None else accelerate(model, gpu.replace(compile=gpu.compile and not ctx.distributed))
    if ctx.distributed:
        net = DDP(net, device_ids=[device.index] if device.type == "cuda" else None)  # broadcasts rank 0's weights
        if gpu is not None and gpu.compile:
            net = compile_net(net, gpu)
    step_fn = TrainStep(model, sched, config, generator=gen, net=net, rank=ctx.rank, world_size=ctx.world_size,
                        buffer_size=min(config.log_every, LOSS_BUFFER),
                        channels_last=gpu is not None and gpu.channels_last)
    if ck is not None:
        if ck.payload.get("ema") is not None:
            step_fn.ema.load_state_dict(ck.payload["ema"])
        if ck.optimizer_state is not None:
            step_fn.opt.load_state_dict(ck.optimizer_state)
        if "generator" in (ck.rng or {}):
            gen.set_state(ck.rng["generator"])
    return step_fn


@contextlib.contextmanager
def _dropout_rng(run: TrainRun, ck):
    """The global RNG (dropout masks) seeded for this run inside a ``fork_rng`` block, or restored from
    the checkpoint; the caller's RNG is untouched after the block. The loss log is started here."""
    ctx, device, config = run.ctx, run.device, run.config
    start = ck.step if ck is not None else 0
    saved = (ck.rng or {}) if ck is not None else {}
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(config.seed + ctx.rank)  # dropout: each process its own masks
        if ctx.is_main and "torch" in saved:
            torch.set_rng_state(saved["torch"])
        elif start:
            torch.manual_seed(config.seed + ctx.rank + 7919 * start)
        if ctx.is_main and "cuda" in saved and device.type == "cuda":
            torch.cuda.set_rng_state(saved["cuda"], device)
        if run.folder is not None:
            run.folder.start_log(start)
        yield


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _is_comm_error(e: BaseException) -> bool:
    dist_error = getattr(torch.distributed, "DistError", ())
    if dist_error and isinstance(e, dist_error):
        return True
    text = str(e).lower()
    return any(w in text for w in ("gloo", "nccl", "connection", "timed out", "timeout", "peer", "socket", "broken pipe"))


class _Loop:
    """Steps ``start + 1 .. config.steps`` of a run: each step, the loss read-backs (a row of
    ``loss.csv`` every ``log_every`` steps), checkpoints, sample grids, and the timing."""

    def __init__(self, run: TrainRun, model: nn.Module, step_fn: TrainStep, ck):
        self.run, self.model, self.step_fn = run, model, step_fn
        self.start = ck.step if ck is not None else 0
        self.step = self.start
        self.losses = list(ck.losses or []) if ck is not None else []
        self.last_ckpt = ck.path if ck is not None else None
        self.paused = 0.0  # seconds spent writing checkpoints and sample grids
        self.stop = None  # the signal that asked the run to stop at the next step boundary
        self.t0 = time.perf_counter()
        self.last_row = (self.start, self.t0, 0.0)  # step, time, paused at the last loss.csv row
        self.row = []  # losses read back since the last row
        self.bar = None  # the progress bar (process 0, progress=True)
        cfg, item = run.config, tuple(run.data.shape[1:])
        self.grids = bool(cfg.sample_every) and run.out_dir is not None and run.ctx.is_main
        if self.grids and not plottable(item):
            print(f"warning: no sample grids (--sample-every): samples of shape {item} are neither images (C, H, W) "
                  f"with C = 1 or 3 nor 2-D points; training goes on", file=sys.stderr)
            self.grids = False

    # -- the pieces of one step -----------------------------------------------------------------
    def _read_back(self, row: bool) -> None:
        """Read the losses held on the device (the one host sync per interval, a collective under
        torchrun), stop on a non-finite one, and write a ``loss.csv`` row if ``row``."""
        vals = self.step_fn.read_losses()
        first = self.step - len(vals) + 1
        for i, v in enumerate(vals):
            if not math.isfinite(v):
                where = f"; the last good checkpoint is {self.last_ckpt}" if self.last_ckpt else "; no checkpoint was written"
                raise FloatingPointError(f"loss is {v} at step {first + i}: training stopped{where}")
        self.losses.extend(vals)
        self.row.extend(vals)
        if not row or not self.row:
            return
        now = time.perf_counter()
        s0, t_prev, p_prev = self.last_row
        el = max(now - t_prev - (self.paused - p_prev), 1e-9)
        cfg = self.run.config
        if self.run.folder is not None:
            self.run.folder.log(self.step, sum(self.row) / len(self.row), lr_at(cfg, self.step), now - self.t0 - self.paused,
                                cfg.batch_size * (self.step - s0) / el)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{self.row[-1]:.4f}", refresh=False)
        self.last_row, self.row = (self.step, now, self.paused), []

    def _save(self) -> None:
        c0 = time.perf_counter()
        run = self.run
        if run.ctx.is_main:
            self.last_ckpt = _save(run, self.model, self.step_fn, self.step, self.losses)
        else:
            self.last_ckpt = run.out_dir / checkpoint_name(self.step)
        self.paused += time.perf_counter() - c0

    def _grid(self) -> None:
        c0 = time.perf_counter()
        run = self.run
        n = 64 if run.data.dim() == 4 else 1000
        g = torch.Generator(device=run.device).manual_seed(run.config.seed)  # the same noise at every grid: frames compare
        with torch.no_grad():
            x = sample_ddim(self.step_fn.ema.module, run.schedule, (n, *run.data.shape[1:]), steps=min(50, run.schedule.T),
                            generator=g, progress=False, device=run.device)
        run.folder.write_samples(x, self.step)
        self.paused += time.perf_counter() - c0

    def _kept(self) -> str:
        return f"the last checkpoint is {self.last_ckpt}" if self.last_ckpt else "no checkpoint was written"

    @contextlib.contextmanager
    def _on_sigterm(self):
        """Under torchrun SIGTERM means another process failed (the launcher stops the rest): stop at
        once. In a single process it is a request to stop: the loop saves a checkpoint at the next
        step boundary and raises :class:`Interrupted`."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        ctx = self.run.ctx

        def on_term(signum, frame):
            if ctx.distributed:
                raise PeerLost(f"process {ctx.rank} of {ctx.world_size} was stopped by the launcher at step {self.step} "
                               f"(another process failed); {self._kept()}; start the job again with --resume")
            self.stop = "SIGTERM"

        old = signal.signal(signal.SIGTERM, on_term)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, old)

    def _stop_now(self) -> None:
        """SIGTERM in a single process: read back, save a checkpoint (with a run folder), stop."""
        self._read_back(row=True)
        if self.run.out_dir is not None and (self.last_ckpt is None or self.last_ckpt.name != checkpoint_name(self.step)):
            self._save()
        saved = (f"saved {self.last_ckpt}: add --resume to continue" if self.run.out_dir is not None
                 else "no run folder, so nothing is saved")
        raise Interrupted(f"stopped by SIGTERM at step {self.step}; {saved}", self.last_ckpt, self.step, "SIGTERM")

    # -- the loop -------------------------------------------------------------------------------
    def run_steps(self) -> TrainResult:
        run, cfg, step_fn = self.run, self.run.config, self.step_fn
        self.bar = None
        if run.progress and self.start < cfg.steps:
            self.bar = tqdm(total=cfg.steps, initial=self.start, desc="train", unit="step", dynamic_ncols=True)
        warm = min(20, (cfg.steps - self.start) // 4)  # steps left out of images_per_second
        t_warm = paused_warm = None
        self.model.train()
        self.t0 = time.perf_counter()
        self.last_row = (self.start, self.t0, 0.0)
        try:
            with self._on_sigterm():
                for self.step in range(self.start + 1, cfg.steps + 1):
                    step = self.step
                    if step == self.start + 1:
                        step_fn(run.data, step)  # the first step creates lazy state (optimiser moments, compiled graphs)
                    else:
                        with _sync_debug(run.device, run.caller_mode):
                            step_fn(run.data, step)
                    if self.bar is not None:
                        self.bar.update(1)  # host-side only: the bar moves from the first step
                    if step == self.start + warm and t_warm is None:
                        _sync(run.device)  # once: where the throughput measurement starts
                        t_warm, paused_warm = time.perf_counter(), self.paused
                    save_now = run.out_dir is not None and (
                        step == cfg.steps or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0))
                    grid_now = self.grids and step % cfg.sample_every == 0
                    row_now = step - self.last_row[0] >= cfg.log_every or save_now or grid_now or step == cfg.steps
                    if row_now or step_fn.pending == LOSS_BUFFER:
                        self._read_back(row=row_now)
                    if save_now:
                        self._save()
                    if grid_now:
                        self._grid()
                    if self.stop is not None:
                        self._stop_now()
        except Interrupted:
            raise
        except KeyboardInterrupt:
            kept = f"the last checkpoint, {self.last_ckpt}, is kept: add --resume to continue" if self.last_ckpt else \
                "no checkpoint had been written yet, so nothing is kept"
            raise Interrupted(f"interrupted at step {self.step}; {kept}", self.last_ckpt, self.step) from None
        except (FloatingPointError, ValueError, OSError, PeerLost):
            raise
        except RuntimeError as e:
            if run.ctx.distributed and _is_comm_error(e):
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                raise PeerLost(f"process {run.ctx.rank} of {run.ctx.world_size} lost contact with the others at step "
                               f"{self.step} ({first}); {self._kept()}; start the job again with --resume") from None
            raise
        finally:
            if self.bar is not None:
                self.bar.close()
        _sync(run.device)
        t_end = time.perf_counter()
        seconds = t_end - self.t0 - self.paused
        done = max(self.step - self.start, 0)
        ips = 0.0
        if t_warm is not None and self.step > self.start + warm:
            el = t_end - t_warm - (self.paused - paused_warm)
            ips = cfg.batch_size * (self.step - self.start - warm) / el if el > 0 else 0.0
        self.model.eval()
        return TrainResult(model=self.model, ema=step_fn.ema.module, losses=self.losses,
                           steps_per_sec=done / seconds if done and seconds > 0 else 0.0, step=max(self.step, self.start),
                           seconds=seconds, checkpoint=self.last_ckpt, resumed_from=self.start,
                           images_per_second=ips, warmup_steps=warm, rank=run.ctx.rank, world_size=run.ctx.world_size)


def _save(run: TrainRun, model: nn.Module, step_fn: TrainStep, step: int, losses: list) -> Path:
    """Write the checkpoint of ``step`` (process 0) and delete the older ones beyond ``keep_checkpoints``."""
    path = run.out_dir / checkpoint_name(step)
    try:
        path = save_checkpoint(path, model, run.schedule, ema=step_fn.ema.module, optimizer=step_fn.opt, step=step,
                               train_config=run.config, rng=_rng_state(run.generator, run.device), losses=losses,
                               meta=run.meta)
    except RunFolderError:
        raise
    except OSError as e:
        raise os_error(path, "write the checkpoint", e) from None
    if run.config.keep_checkpoints:
        for _, old in list_checkpoints(run.out_dir)[: -run.config.keep_checkpoints]:
            try:
                old.unlink(missing_ok=True)
            except OSError:
                pass  # an older checkpoint left behind is harmless
    return path
