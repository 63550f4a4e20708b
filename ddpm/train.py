"""The training loop: DDPM Algorithm 1 with AdamW, warm-up, gradient clipping and EMA weights
(book chapter "Training and sampling").

Design choices, each checked by the package's tests:

- All randomness (batches, ``t``, ``eps``) comes from one ``torch.Generator`` seeded by
  ``config.seed``; the global RNG is seeded inside a ``fork_rng`` block (for dropout), so calling
  :func:`train` leaves the caller's RNG untouched. Both states go into every checkpoint.
- Resuming from a checkpoint at step ``k`` runs steps ``k+1..steps``; on the CPU the final weights
  equal an uninterrupted run's bit for bit.
- One step is :class:`ddpm.step.TrainStep`; it does no host-device synchronisation: losses go
  into a device buffer read back every ``log_every`` steps (and before every checkpoint). A NaN
  or inf loss is then found, named by its step, and raises ``FloatingPointError``; no checkpoint
  is ever written after it.
- Under ``torchrun`` (``WORLD_SIZE`` > 1) the same call trains with ``DistributedDataParallel``
  (NCCL on CUDA, gloo on the CPU): every process draws the global batch and keeps its slice, so
  the run does not depend on the number of processes; rank 0 alone writes the run folder.
- Before the first step: the run folder is a writable folder that takes a checkpoint, is locked
  against a second run, and its stale temporary files are removed; the model's config and the
  metadata serialise; one forward pass on two examples checks that the data fit the model.
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
from tqdm.auto import tqdm

from . import distributed as _dist
from .checkpoint import checkpoint_name, list_checkpoints, load_checkpoint, save_checkpoint
from .config import _RESUMABLE_CHANGES, TrainConfig
from .fast import compile_net
from .presets import class_name
from .runfolder import RunFolder, RunFolderError, os_error
from .samplers import sample_ddim
from .schedule import Schedule
from .step import TrainStep, lr_at

__all__ = ["TrainConfig", "TrainResult", "TrainStep", "train", "lr_at", "resolve_device", "Interrupted", "PeerLost"]


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
    """Ctrl-C during :func:`train`; ``str(e)`` says which checkpoint is kept, if any."""

    def __init__(self, message: str, checkpoint: Path | None, step: int):
        super().__init__(message)
        self.checkpoint, self.step = checkpoint, step

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
    (every ``config.sample_every`` steps). ``resume=True`` continues from the newest valid checkpoint in
    ``out_dir`` (a fresh start if there is none); ``resume=<path of a checkpoint file>`` from that one; the model, schedule and training config must
    match it. ``meta``: plain facts stored in each checkpoint (the CLI stores the data set name);
    ``meta["world_size"]`` is set to the number of processes.

    Under ``torchrun`` every process calls this with the same arguments; ``config.batch_size`` is
    the global batch, split evenly across the processes.

    Raises ``FloatingPointError`` naming the step if the loss becomes NaN or inf, ``ValueError``
    for bad arguments, a mismatched checkpoint or an unavailable device, :class:`RunFolderError`
    (an ``OSError`` and ``ValueError``) naming the path when the run folder cannot be written or is
    in use by another run, :class:`Interrupted` on Ctrl-C and :class:`PeerLost` when another
    process of the job fails.
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
    out_dir = Path(out_dir) if out_dir is not None else None
    if resume and out_dir is None:
        raise ValueError("resume=True needs out_dir (the folder holding the checkpoints)")
    if out_dir is not None:
        _check_serialisable(model, config, meta)
    with _sync_debug(device, 0) as caller_mode:  # the caller's torch.cuda.set_sync_debug_mode applies to the steps
        return _train_checked(model, schedule, data, config, out_dir, progress, resume, meta, device, caller_mode)


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


def _train_checked(model, schedule, data, config, out_dir, progress, resume, meta, device, caller_mode) -> TrainResult:
    model.to(device)
    _check_model(model, schedule, data, device)

    ctx = _dist.context(device, timeout=config.dist_timeout)
    folder, ok = None, False
    try:
        if config.batch_size % ctx.world_size:
            raise ValueError(f"batch_size {config.batch_size} (the global batch) must be divisible by the number "
                             f"of processes, {ctx.world_size}")
        if ctx.distributed and config.cuda_graph:
            raise ValueError("cuda_graph captures one process's step; under torchrun DistributedDataParallel all-reduces "
                             "outside the graph: drop cuda_graph (compile_mode 'reduce-overhead' works per process)")
        msg = None
        if ctx.is_main and out_dir is not None:
            n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
            try:
                folder = RunFolder(out_dir, need_bytes=4 * n_bytes)  # weights, EMA and AdamW's two moments
            except RunFolderError as e:
                msg = str(e)
        msg = _dist.broadcast_error(msg, ctx)  # every process stops with rank 0's message
        if msg is not None:
            raise RunFolderError(msg)
        if folder is not None and folder.cleaned:
            print(f"removed {len(folder.cleaned)} temporary file(s) left by an interrupted write in {out_dir}", file=sys.stderr)
        result = _train(model, schedule, data, config, out_dir, progress and ctx.is_main, resume, meta, device, ctx, folder,
                        caller_mode)
        ok = True
        return result
    finally:
        if folder is not None:
            folder.close()
        if ok or ctx.backend == "gloo":
            ctx.close()  # after a failed NCCL collective, ending the group can block: the process exits instead


def _train(model, schedule, data, config, out_dir, progress, resume, meta, device, ctx, folder, caller_mode) -> TrainResult:
    meta = {**(meta or {}), "world_size": ctx.world_size}
    sched = schedule.to(device)
    data = data.to(device)
    gen = torch.Generator(device=device)
    gen.manual_seed(config.seed)

    start, losses, last_ckpt, ck = 0, [], None, None
    chosen = Path(resume) if isinstance(resume, (str, os.PathLike)) else None
    if chosen is not None or (resume and list_checkpoints(out_dir)):
        ck = load_checkpoint(chosen if chosen is not None else out_dir, device="cpu")
        _check_resume(ck, model, schedule, config)
        model.load_state_dict(ck.payload["model"])
        start, losses, last_ckpt = ck.step, list(ck.losses or []), ck.path
        old_ws = (ck.meta or {}).get("world_size", 1)
        if old_ws != ctx.world_size and ctx.is_main:
            print(f"resuming a run trained with {old_ws} process(es) with {ctx.world_size}: the draws are defined for the "
                  f"global batch, so it continues the same run (to float tolerance)", file=sys.stderr)
        if start >= config.steps and ctx.is_main:
            print(f"checkpoint {ck.path} is already at step {start} >= steps {config.steps}; nothing to do", file=sys.stderr)
    elif resume and ctx.is_main:
        print(f"no checkpoint in {out_dir}; starting from step 0", file=sys.stderr)

    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    net = model
    if ctx.distributed:
        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)  # broadcasts rank 0's weights
    if config.compile:
        net = compile_net(net, config.compile_mode, config.channels_last)
    step_fn = TrainStep(model, sched, config, generator=gen, net=net, rank=ctx.rank, world_size=ctx.world_size,
                        buffer_size=config.log_every)
    if ck is not None:
        if ck.payload.get("ema") is not None:
            step_fn.ema.load_state_dict(ck.payload["ema"])
        if ck.optimizer_state is not None:
            step_fn.opt.load_state_dict(ck.optimizer_state)
        rng = ck.rng or {}
        if "generator" in rng:
            gen.set_state(rng["generator"])
    global_rng = (ck.rng or {}) if ck is not None else {}

    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(config.seed + ctx.rank)  # dropout: each process its own masks
        if ctx.is_main and "torch" in global_rng:
            torch.set_rng_state(global_rng["torch"])
        elif start:
            torch.manual_seed(config.seed + ctx.rank + 7919 * start)
        if ctx.is_main and "cuda" in global_rng and device.type == "cuda":
            torch.cuda.set_rng_state(global_rng["cuda"], device)
        if folder is not None:
            folder.start_log(start)
        result = _loop(step_fn, model, schedule, data, config, gen, device, out_dir, progress, start, losses, last_ckpt,
                       meta, ctx, folder, caller_mode)
    result.resumed_from = start
    result.rank, result.world_size = ctx.rank, ctx.world_size
    return result


def _check_resume(ck, model, schedule, config) -> None:
    if ck.payload["model_class"] != class_name(model):
        raise ValueError(f"checkpoint {ck.path} holds a {ck.payload['model_class']}, not a {type(model).__name__}")
    if ck.payload["model_config"] != dataclasses.asdict(model.config):
        raise ValueError(f"checkpoint {ck.path} was trained with model config {ck.payload['model_config']}, not {dataclasses.asdict(model.config)}")
    if ck.schedule.T != schedule.T or not torch.equal(ck.schedule.betas, schedule.betas.cpu().double()):
        raise ValueError(f"checkpoint {ck.path} was trained with another noise schedule (T = {ck.schedule.T})")
    old = ck.config if isinstance(ck.config, TrainConfig) else None
    if old is not None:
        for f in dataclasses.fields(TrainConfig):
            if f.name not in _RESUMABLE_CHANGES and getattr(old, f.name) != getattr(config, f.name):
                raise ValueError(
                    f"checkpoint {ck.path} was trained with {f.name}={getattr(old, f.name)!r}; "
                    f"resuming with {f.name}={getattr(config, f.name)!r} would not continue the same run"
                )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _is_comm_error(e: BaseException) -> bool:
    dist_error = getattr(torch.distributed, "DistError", ())
    if dist_error and isinstance(e, dist_error):
        return True
    text = str(e).lower()
    return any(w in text for w in ("gloo", "nccl", "connection", "timed out", "timeout", "peer", "socket", "broken pipe"))


def _loop(step_fn, model, schedule, data, config, gen, device, out_dir, progress, start, losses, last_ckpt, meta, ctx, folder,
          caller_mode=None):
    B = config.batch_size
    bar = None
    if progress and start < config.steps:
        bar = tqdm(total=config.steps, initial=start, desc="train", unit="step", dynamic_ncols=True)
    n_steps = config.steps - start
    warm = min(20, n_steps // 4)  # steps left out of images_per_second
    model.train()

    t0 = time.perf_counter()
    paused = 0.0  # seconds spent writing checkpoints and sample grids
    t_warm = paused_warm = None
    last_log = (start, t0, 0.0)  # step, time, paused at the last loss.csv row
    step = start

    def flush(step: int) -> None:
        nonlocal last_log
        vals = step_fn.read_losses()  # the one host sync per log interval (a collective under torchrun)
        if not vals:
            return
        first = step - len(vals) + 1
        for i, v in enumerate(vals):
            if not math.isfinite(v):
                where = f"; the last good checkpoint is {last_ckpt}" if last_ckpt else "; no checkpoint was written"
                raise FloatingPointError(f"loss is {v} at step {first + i}: training stopped{where}")
        losses.extend(vals)
        now = time.perf_counter()
        s0, t_prev, p_prev = last_log
        el = max(now - t_prev - (paused - p_prev), 1e-9)
        if folder is not None:
            folder.log(step, sum(vals) / len(vals), lr_at(config, step), now - t0 - paused, B * (step - s0) / el)
        if bar is not None:
            bar.set_postfix(loss=f"{vals[-1]:.4f}", refresh=False)
        last_log = (step, now, paused)

    old_term = None
    if ctx.distributed and threading.current_thread() is threading.main_thread():
        def on_term(signum, frame):  # torchrun stops the others when one process fails
            raise PeerLost(f"process {ctx.rank} of {ctx.world_size} was stopped by the launcher at step {step} "
                           f"(another process failed); " + (f"the last checkpoint is {last_ckpt}" if last_ckpt else
                           "no checkpoint was written") + "; start the job again with --resume")

        old_term = signal.signal(signal.SIGTERM, on_term)
    try:
        for step in range(start + 1, config.steps + 1):
            if step == start + 1:
                step_fn(data, step)  # the first step creates lazy state (optimiser moments, compiled graphs)
            else:
                with _sync_debug(device, caller_mode):
                    step_fn(data, step)
            if bar is not None:
                bar.update(1)  # host-side only: the bar moves from the first step
            if step == start + warm and t_warm is None:
                _sync(device)  # once: where the throughput measurement starts
                t_warm, paused_warm = time.perf_counter(), paused
            save_now = out_dir is not None and (
                step == config.steps or (config.checkpoint_every and step % config.checkpoint_every == 0)
            )
            grid_now = out_dir is not None and config.sample_every and step % config.sample_every == 0
            if step_fn.pending == config.log_every or save_now or grid_now or step == config.steps:
                flush(step)
            if save_now:
                c0 = time.perf_counter()
                if ctx.is_main:
                    last_ckpt = _save(out_dir, model, schedule, step_fn, step, config, gen, device, losses, meta)
                else:
                    last_ckpt = out_dir / checkpoint_name(step)
                paused += time.perf_counter() - c0
            if grid_now and ctx.is_main:
                c0 = time.perf_counter()
                _sample_grid(folder, step_fn.ema.module, schedule, data, config, device, step)
                paused += time.perf_counter() - c0
    except KeyboardInterrupt:
        kept = f"the last checkpoint, {last_ckpt}, is kept: add --resume to continue" if last_ckpt else \
            "no checkpoint had been written yet, so nothing is kept"
        raise Interrupted(f"interrupted at step {step}; {kept}", last_ckpt, step) from None
    except (FloatingPointError, ValueError, OSError, PeerLost):
        raise
    except RuntimeError as e:
        if ctx.distributed and _is_comm_error(e):
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            kept = f"the last checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was written"
            raise PeerLost(f"process {ctx.rank} of {ctx.world_size} lost contact with the others at step {step} ({first}); "
                           f"{kept}; start the job again with --resume") from None
        raise
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        if bar is not None:
            bar.close()
    _sync(device)
    t_end = time.perf_counter()
    seconds = t_end - t0 - paused
    done = max(step - start, 0)
    ips = 0.0
    if t_warm is not None and step > start + warm:
        el = t_end - t_warm - (paused - paused_warm)
        ips = B * (step - start - warm) / el if el > 0 else 0.0
    model.eval()
    return TrainResult(
        model=model,
        ema=step_fn.ema.module,
        losses=losses,
        steps_per_sec=done / seconds if done and seconds > 0 else 0.0,
        step=max(step, start),
        seconds=seconds,
        checkpoint=last_ckpt,
        images_per_second=ips,
        warmup_steps=warm,
    )


def _sample_grid(folder, ema_model, schedule, data, config, device, step) -> None:
    n = 64 if data.dim() == 4 else 1000
    g = torch.Generator(device=device).manual_seed(config.seed)  # the same noise at every grid: frames compare
    with torch.no_grad():
        x = sample_ddim(ema_model, schedule.to(device), (n, *data.shape[1:]), steps=min(50, schedule.T), generator=g,
                        progress=False, device=device)
    folder.write_samples(x, step)


def _save(out_dir, model, schedule, step_fn, step, config, gen, device, losses, meta) -> Path:
    path = out_dir / checkpoint_name(step)
    try:
        path = save_checkpoint(
            path,
            model,
            schedule,
            ema=step_fn.ema.module,
            optimizer=step_fn.opt,
            step=step,
            train_config=config,
            rng=_rng_state(gen, device),
            losses=losses,
            meta=meta,
        )
    except RunFolderError:
        raise
    except OSError as e:
        raise os_error(path, "write the checkpoint", e) from None
    if config.keep_checkpoints:
        for _, old in list_checkpoints(out_dir)[: -config.keep_checkpoints]:
            try:
                old.unlink(missing_ok=True)
            except OSError:
                pass  # an older checkpoint left behind is harmless
    return path
