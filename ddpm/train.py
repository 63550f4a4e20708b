"""The training loop: DDPM Algorithm 1 with AdamW, warm-up, gradient clipping and EMA weights
(book chapter 6, "Training and sampling").

Design choices, each checked by ``tests/test_train.py``:

- All randomness (batches, ``t``, ``eps``) comes from one ``torch.Generator`` seeded by
  ``config.seed``; the global RNG is seeded inside a ``fork_rng`` block (for dropout), so calling
  :func:`train` leaves the caller's RNG untouched. Both states go into every checkpoint.
- Resuming from a checkpoint at step ``k`` runs steps ``k+1..steps``; on the CPU the final weights
  equal an uninterrupted run's bit for bit.
- The hot path does no host-device synchronisation: losses go into a device buffer read back
  every ``log_every`` steps (and before every checkpoint). A NaN or inf loss is then found,
  named by its step, and raises ``FloatingPointError``; no checkpoint is ever written after it.
- bf16 autocast and ``torch.compile`` are CUDA-only here; asking for them on the CPU raises
  ``ValueError`` (a silent fallback would make a CPU timing look like a GPU recipe).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from .config import _RESUMABLE_CHANGES, TrainConfig
from .checkpoint import checkpoint_name, list_checkpoints, load_checkpoint, save_checkpoint
from .ema import EMA
from .losses import loss_simple
from .schedule import Schedule


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    model: nn.Module  # the trained weights
    ema: nn.Module  # the averaged weights: sample with these
    losses: list = field(default_factory=list)  # loss_simple at every step 1..steps (a resumed run includes the earlier ones)
    steps_per_sec: float = 0.0  # optimiser steps per second of this call (excluding checkpoint writes)
    step: int = 0  # the last step done
    seconds: float = 0.0  # wall time of this call's steps
    checkpoint: Path | None = None  # the last checkpoint written, if any
    resumed_from: int = 0  # the step a resumed run started after (0: fresh)


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


def lr_at(config: TrainConfig, step: int) -> float:
    """Learning rate at optimiser step ``step`` (1-based): linear warm-up to ``config.lr``, then constant."""
    return config.lr * min(1.0, step / config.warmup) if config.warmup > 0 else config.lr


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


def train(
    model: nn.Module,
    schedule: Schedule,
    data: Tensor,
    config: TrainConfig | None = None,
    out_dir=None,
    progress: bool = True,
    *,
    resume: bool = False,
    meta: dict | None = None,
) -> TrainResult:
    """Train ``model`` (an ``eps``-predictor ``model(x_t, t)``) on ``data`` with ``loss_simple``
    (DDPM eq. 14, Algorithm 1).

    ``data``: float tensor ``(N, ...)`` in [-1, 1]; batches of ``config.batch_size`` are drawn
    with replacement. ``out_dir``: where checkpoints go (every ``config.checkpoint_every`` steps
    and at the end). ``resume=True`` continues from the latest checkpoint in ``out_dir`` (a fresh
    start if there is none); the model, schedule and training config must match it.
    ``meta``: plain facts stored in each checkpoint (the CLI stores the data set name).

    Raises ``FloatingPointError`` naming the step if the loss becomes NaN or inf, and
    ``ValueError`` for bad arguments, a mismatched checkpoint or an unavailable device.
    """
    config = config if config is not None else TrainConfig()
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
    if not isinstance(schedule, Schedule):
        raise ValueError(f"schedule must be a ddpm.Schedule, got {type(schedule).__name__}")
    data = _check_data(data)
    device = resolve_device(config.device)
    if (config.bf16 or config.compile or config.channels_last) and device.type != "cuda":
        which = "bf16 autocast" if config.bf16 else ("torch.compile" if config.compile else "channels_last")
        raise ValueError(f"{which} is only supported on CUDA here (device is {device}); drop bf16/compile/channels_last to train on the CPU")
    out_dir = Path(out_dir) if out_dir is not None else None
    if resume and out_dir is None:
        raise ValueError("resume=True needs out_dir (the folder holding the checkpoints)")

    model.to(device)
    sched = schedule.to(device)
    data = data.to(device)
    gen = torch.Generator(device=device)
    gen.manual_seed(config.seed)
    ema = EMA(model, config.ema_decay, config.ema_warmup)
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=fused)

    start, losses, last_ckpt = 0, [], None
    global_rng = None
    if resume and list_checkpoints(out_dir):
        ck = load_checkpoint(out_dir, device="cpu")
        _check_resume(ck, model, schedule, config)
        model.load_state_dict(ck.payload["model"])
        if ck.payload.get("ema") is not None:
            ema.load_state_dict(ck.payload["ema"])
        if ck.optimizer_state is not None:
            opt.load_state_dict(ck.optimizer_state)
        rng = ck.rng or {}
        if "generator" in rng:
            gen.set_state(rng["generator"])
        global_rng = rng
        start, losses, last_ckpt = ck.step, list(ck.losses or []), ck.path
        if start >= config.steps:
            print(f"checkpoint {ck.path} is already at step {start} >= steps {config.steps}; nothing to do", file=sys.stderr)
    elif resume:
        print(f"no checkpoint in {out_dir}; starting from step 0", file=sys.stderr)

    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(config.seed)
        if global_rng and "torch" in global_rng:
            torch.set_rng_state(global_rng["torch"])
        if global_rng and "cuda" in global_rng and device.type == "cuda":
            torch.cuda.set_rng_state(global_rng["cuda"], device)
        if config.channels_last:
            model.to(memory_format=torch.channels_last)
        net = torch.compile(model, mode=config.compile_mode) if config.compile else model
        result = _loop(net, model, ema, opt, sched, schedule, data, config, gen, device, out_dir, progress,
                       start, losses, last_ckpt, meta)
    result.resumed_from = start
    return result


def _check_resume(ck, model, schedule, config) -> None:
    if ck.payload["model_class"].split(":")[-1] != type(model).__qualname__:
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


def _loop(net, model, ema, opt, sched, schedule, data, config, gen, device, out_dir, progress, start, losses, last_ckpt, meta):
    N = data.shape[0]
    B = config.batch_size
    buf = torch.zeros(config.log_every, device=device)  # losses since the last read-back, on the device
    pending = 0  # entries of buf in use
    bar = None
    if progress and start < config.steps:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, initial=start, desc="train", unit="step", dynamic_ncols=True)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if config.bf16 else None
    params = [p for p in model.parameters() if p.requires_grad]
    cudagraphs = config.compile and config.compile_mode in ("reduce-overhead", "max-autotune")
    model.train()

    def flush(step: int) -> None:
        nonlocal pending
        if not pending:
            return
        vals = buf[:pending].tolist()  # the one host sync per log interval
        first = step - pending + 1
        for i, v in enumerate(vals):
            if not math.isfinite(v):
                where = f"; the last good checkpoint is {last_ckpt}" if last_ckpt else ""
                raise FloatingPointError(f"loss is {v} at step {first + i}: training stopped{where}")
        losses.extend(vals)
        pending = 0

    t0 = time.perf_counter()
    ckpt_time = 0.0
    step = start
    try:
        for step in range(start + 1, config.steps + 1):
            if cudagraphs:
                torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs may be overwritten
            idx = torch.randint(0, N, (B,), generator=gen, device=device)
            x0 = data[idx]  # (B, ...)
            if config.channels_last and x0.dim() == 4:
                x0 = x0.contiguous(memory_format=torch.channels_last)  # (B, C, H, W), NHWC in memory
            for g in opt.param_groups:
                g["lr"] = lr_at(config, step)
            if autocast is not None:
                with autocast:
                    loss = loss_simple(net, sched, x0, generator=gen)
            else:
                loss = loss_simple(net, sched, x0, generator=gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            opt.step()
            ema.update(model, step)
            buf[pending] = loss.detach()
            pending += 1
            save_now = out_dir is not None and (
                step == config.steps or (config.checkpoint_every and step % config.checkpoint_every == 0)
            )
            if pending == config.log_every or save_now or step == config.steps:
                flush(step)
                if bar is not None:
                    el = time.perf_counter() - t0 - ckpt_time
                    bar.set_postfix(loss=f"{losses[-1]:.4f}", it_s=f"{(step - start) / max(el, 1e-9):.1f}")
                    bar.update(step - bar.n)
            if save_now:
                c0 = time.perf_counter()
                last_ckpt = _save(out_dir, model, schedule, ema, opt, step, config, gen, device, losses, meta)
                ckpt_time += time.perf_counter() - c0
    finally:
        if bar is not None:
            bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0 - ckpt_time
    done = max(step - start, 0)
    model.eval()
    return TrainResult(
        model=model,
        ema=ema.module,
        losses=losses,
        steps_per_sec=done / seconds if done and seconds > 0 else 0.0,
        step=max(step, start),
        seconds=seconds,
        checkpoint=last_ckpt,
    )


def _save(out_dir, model, schedule, ema, opt, step, config, gen, device, losses, meta) -> Path:
    path = save_checkpoint(
        out_dir / checkpoint_name(step),
        model,
        schedule,
        ema=ema.module,
        optimizer=opt,
        step=step,
        train_config=config,
        rng=_rng_state(gen, device),
        losses=losses,
        meta=meta,
    )
    if config.keep_checkpoints:
        for _, old in list_checkpoints(out_dir)[: -config.keep_checkpoints]:
            old.unlink(missing_ok=True)
    return path
