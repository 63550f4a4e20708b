"""Sampler policy for the command line: which sampler runs for a ``--sampler``/``--steps``/``--eta``
choice, the checks on those choices, and drawing ``n`` samples from a checkpoint in batches
(book chapters "Training and sampling" and "DDIM")."""

from __future__ import annotations

import math
import os

import torch

from . import distributed
from .samplers import sample_ddim, sample_ddpm

SAMPLERS = ("ddpm", "ddim")
ETA_MAX = 1.0  # DDIM's eta: 0 deterministic, 1 the DDPM posterior variance; beyond 1 is not a valid process


def check_sampler(sampler: str, T: int, *, steps=None, eta=None) -> tuple[int, float]:
    """Validated ``(steps, eta)``. ``steps=None``: 50 for DDIM (at most T), T for DDPM.
    ``eta=None``: 0 for DDIM; ``eta`` with DDPM is refused (DDPM has no eta)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if sampler == "ddpm" and eta is not None:
        raise ValueError("--eta applies to --sampler ddim only (DDPM's variance is fixed: it is DDIM with eta = 1)")
    if steps is None:
        steps = min(50, T) if sampler == "ddim" else T
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
        raise ValueError(f"--steps must be in 1..T = 1..{T}, got {steps}")
    if sampler == "ddpm":
        return steps, 1.0
    eta = 0.0 if eta is None else float(eta)
    if not (math.isfinite(eta) and 0.0 <= eta <= ETA_MAX):
        raise ValueError(f"--eta must be in [0, {ETA_MAX:g}] (0: deterministic DDIM, 1: DDPM-like), got {eta}")
    return steps, eta


def item_shape(model) -> tuple:
    """The shape of one data item of a package model: ``(C, H, W)`` for a U-Net, ``(d,)`` for the MLP."""
    c = model.config
    if hasattr(c, "image_size"):
        return (c.in_channels, c.image_size, c.image_size)
    return (c.dim,)


def draw(model, schedule, n: int, *, sampler: str, steps: int, eta: float, seed: int, device="cpu",
         progress: bool = False, batch: int = 0, fast: bool = False) -> torch.Tensor | None:
    """``n`` samples from ``model`` as a CPU float32 tensor, in blocks of ``batch`` (0: blocks of 500).
    DDPM with ``steps < T`` is DDIM with eta = 1 on a sub-sequence (Song et al. 2021, sec. 4.2).
    ``fast``: CUDA only, the network runs through :class:`ddpm.FastEps` (bf16, CUDA graphs).

    Block ``j`` is drawn from a generator seeded ``seed + j`` (:func:`ddpm.distributed.sample_sharded`),
    so under ``torchrun`` the blocks are shared out among the processes, gathered on process 0, and the
    samples are the same as in one process; processes other than 0 get ``None``."""

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"-n must be an int >= 1, got {n}")
    shape_item = item_shape(model)
    device = torch.device(device)
    if distributed.under_torchrun() and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # one GPU per process
    model = model.to(device)
    if fast:
        if device.type != "cuda":
            raise ValueError("--fast needs CUDA (bf16 and CUDA graphs); drop it to sample on the CPU")
        from .gpu import FastEps

        model = FastEps(model, channels_last=hasattr(model.config, "image_size"))
    s = schedule.to(device)

    def block(k: int, gen: torch.Generator) -> torch.Tensor:
        shape = (k, *shape_item)
        if sampler == "ddpm" and steps == schedule.T:
            return sample_ddpm(model, s, shape, generator=gen, progress=progress, device=device)
        return sample_ddim(model, s, shape, steps=steps, eta=1.0 if sampler == "ddpm" else eta, generator=gen,
                           progress=progress, device=device)

    ctx = distributed.context(device)
    try:
        x = distributed.sample_sharded(block, n, seed=seed, batch_size=batch or 500, device=device, ctx=ctx)
    finally:
        ctx.close()  # ends the process group if this call started it
    return None if x is None else x.float().cpu()
