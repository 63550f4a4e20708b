"""Several processes, one run: ``torch.distributed`` helpers for training and sampling under
``torchrun`` (NCCL on CUDA, gloo on the CPU).

- :func:`context` reads ``torchrun``'s environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``) and
  starts the process group with a timeout, so a lost process ends the job with an error instead of
  a hang. Without ``torchrun`` it is one process, rank 0, and nothing is started.
- :func:`shard` / :func:`gather` split ``n`` items across the processes and bring them back to
  rank 0 in their original order.
- :func:`sample_sharded` draws ``n`` samples in blocks seeded by the block's index, so the samples
  are the same whatever the number of processes.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job."""

    rank: int = 0  # this process's index, 0..world_size-1
    world_size: int = 1  # processes in the job
    local_rank: int = 0  # index on this machine (its GPU under torchrun)
    backend: str | None = None  # "nccl", "gloo" or None for one process
    started_here: bool = False  # this context started the process group (and ends it in close())

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints, logs and the progress bar."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """A process group is running (``torchrun``, even with one process)."""
        return self.backend is not None

    def close(self) -> None:
        """End the process group if this context started it."""
        if self.started_here:
            if dist.is_initialized():
                dist.destroy_process_group()


def _env_int(name: str) -> int | None:
    v = os.environ.get(name)
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {v!r}") from None


def under_torchrun() -> bool:
    """True when the environment says this process was started by ``torchrun`` (``WORLD_SIZE`` and
    ``RANK`` set), even as its only process: ``torchrun --nproc_per_node=1`` trains with DDP too."""
    return _env_int("WORLD_SIZE") is not None and _env_int("RANK") is not None


def context(device: torch.device | str = "cpu", timeout: float = 600.0) -> DistContext:
    """This process's :class:`DistContext`; under ``torchrun`` (``WORLD_SIZE`` and ``RANK`` set) the process
    group is started if it is not yet (NCCL for a CUDA ``device``, gloo otherwise; every collective
    fails after ``timeout`` seconds instead of waiting forever)."""

    device = torch.device(device)
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK") or 0, dist.get_backend())
    if not under_torchrun():
        return DistContext()
    if not dist.is_available():
        raise ValueError("WORLD_SIZE is set but this torch build has no torch.distributed")
    ws, rank, local = _env_int("WORLD_SIZE"), _env_int("RANK"), _env_int("LOCAL_RANK")
    if local is None:
        local = 0
    if ws < 1 or not 0 <= rank < ws:
        raise ValueError(f"WORLD_SIZE={ws} needs RANK in 0..{ws - 1} and LOCAL_RANK (start the job with torchrun)")
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {}
    if backend == "nccl":
        torch.cuda.set_device(local)
        kwargs["device_id"] = torch.device("cuda", local)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=float(timeout)), **kwargs)
    return DistContext(rank, ws, local, backend, started_here=True)


def shard(n: int, rank: int, world_size: int) -> range:
    """The item indices ``0..n-1`` this rank handles: a contiguous block, the first ``n % world_size``
    ranks taking one more."""
    if n < 0 or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"shard needs n >= 0 and 0 <= rank < world_size, got n={n}, rank={rank}, world_size={world_size}")
    base, extra = divmod(n, world_size)
    lo = rank * base + min(rank, extra)
    return range(lo, lo + base + (1 if rank < extra else 0))


def gather(x: Tensor, n: int, ctx: DistContext | None = None) -> Tensor | None:
    """Each rank holds its :func:`shard` of ``n`` items (``x`` of shape ``(len(shard), ...)``); rank 0
    gets all ``n`` in order, the others ``None``. One process: ``x`` itself."""
    ctx = ctx if ctx is not None else context(x.device)
    if not ctx.distributed:
        return x

    sizes = [len(shard(n, r, ctx.world_size)) for r in range(ctx.world_size)]
    if x.shape[0] != sizes[ctx.rank]:
        raise ValueError(f"rank {ctx.rank} holds {x.shape[0]} items, its shard of {n} has {sizes[ctx.rank]}")
    m = max(sizes)
    pad = torch.zeros((m, *x.shape[1:]), dtype=x.dtype, device=x.device)  # (m, ...): equal sizes for the collective
    pad[: x.shape[0]] = x
    if ctx.backend == "nccl":  # NCCL has no gather: all_gather
        parts = [torch.empty_like(pad) for _ in range(ctx.world_size)]
        dist.all_gather(parts, pad)
    else:
        parts = [torch.empty_like(pad) for _ in range(ctx.world_size)] if ctx.is_main else None
        dist.gather(pad, parts, dst=0)
    if not ctx.is_main:
        return None
    return torch.cat([p[:s] for p, s in zip(parts, sizes)])  # (n, ...)


def sample_sharded(sample_fn, n: int, *, seed: int = 0, batch_size: int = 256, device="cpu",
                   ctx: DistContext | None = None) -> Tensor | None:
    """Draw ``n`` samples across the processes of the job; rank 0 returns all ``n`` in index order,
    the other ranks ``None`` (one process: all ``n``).

    ``sample_fn(k, generator) -> Tensor (k, ...)`` draws ``k`` samples using only ``generator``
    (e.g. ``lambda k, g: ddpm.sample_ddim(model, schedule, (k, 2), generator=g, ...)``). The samples
    come in blocks of ``batch_size``: block ``j`` (samples ``j*batch_size`` to ``(j+1)*batch_size - 1``)
    is drawn from a generator seeded ``seed + j``, on whichever process handles it, so the result
    does not depend on the number of processes (it does on ``batch_size``). Blocks are sharded with
    :func:`shard`.
    """
    ctx = ctx if ctx is not None else context(device)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    blocks = (n + batch_size - 1) // batch_size
    size = lambda j: min(batch_size, n - j * batch_size)  # noqa: E731
    outs = []
    for j in shard(blocks, ctx.rank, ctx.world_size):
        g = torch.Generator(device=device).manual_seed(seed + j)
        x = sample_fn(size(j), g)
        if x.shape[0] != size(j):
            raise ValueError(f"sample_fn(k, generator) must return k = {size(j)} samples, got {x.shape[0]}")
        outs.append(x.to(device))
    if not ctx.distributed:
        return torch.cat(outs)
    x = torch.cat(outs) if outs else None
    counts = [sum(size(j) for j in shard(blocks, r, ctx.world_size)) for r in range(ctx.world_size)]
    return _gather_counts(x, counts, ctx)


def _gather_counts(x: Tensor, counts: list[int], ctx: DistContext) -> Tensor | None:
    # A rank with no block still takes part: it learns the item shape and dtype from rank 0.
    meta = [None if x is None else (tuple(x.shape[1:]), x.dtype, str(x.device))]
    dist.broadcast_object_list(meta, src=0)
    shape, dtype, dev = meta[0]
    dev = x.device if x is not None else torch.device(dev if ctx.backend != "nccl" else f"cuda:{ctx.local_rank}")
    m = max(counts)
    pad = torch.zeros((m, *shape), dtype=dtype, device=dev)  # (m, ...): equal sizes for the collective
    if x is not None:
        pad[: x.shape[0]] = x
    parts = [torch.empty_like(pad) for _ in range(ctx.world_size)]
    dist.all_gather(parts, pad)
    if not ctx.is_main:
        return None
    return torch.cat([p[:c] for p, c in zip(parts, counts)])


def broadcast_error(message: str | None, ctx: DistContext) -> str | None:
    """Rank 0's ``message`` (an error found by a check only rank 0 makes, or ``None``) on every rank,
    so that all processes stop together with the same message."""
    if not ctx.distributed:
        return message

    box = [message]
    dist.broadcast_object_list(box, src=0)
    return box[0]
