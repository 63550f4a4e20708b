"""One training step of DDPM Algorithm 1 (eq. 14), the step :func:`ddpm.train` runs: time it to time
what a user runs (book chapter "Training and sampling").

A step draws a batch, ``t`` and ``eps`` for the *global* batch, takes this process's slice of
them, computes ``loss_simple`` (DDPM eq. 14), back-propagates, clips the gradient norm, takes an
AdamW step (fused on CUDA), updates the EMA weights and writes the loss into a device buffer.
Nothing in it waits for the device: no ``.item()``, no ``int()`` of a tensor, no ``.tolist()``;
the losses are read back by :meth:`TrainStep.read_losses`, once per log interval.

Under ``torch.distributed`` every process draws the whole global batch from the same generator and
keeps its own slice, so the draws, and hence the run, do not depend on the number of processes.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from .config import TrainConfig
from .ema import EMA, ema_decay
from .gpu.config import CUDAGRAPH_MODES, resolve_compile_mode
from .losses import loss_simple
from .schedule import Schedule


def lr_at(config: TrainConfig, step: int) -> float:
    """Learning rate at optimiser step ``step`` (1-based): linear warm-up to ``config.lr``, then constant."""
    return config.lr * min(1.0, step / config.warmup) if config.warmup > 0 else config.lr


class TrainStep:
    """The training step: ``step(data, k)`` runs optimiser step ``k`` (1-based) on ``data``.

    ``model``: the ``eps``-predictor whose parameters are trained. ``net``: what is called in the
    forward pass (``model`` itself, or ``model`` wrapped by ``torch.compile`` and/or
    ``DistributedDataParallel``). ``generator``: the one source of the batch, ``t`` and ``eps``
    draws; it must be on ``device`` and seeded identically on every process. ``rank`` /
    ``world_size``: this process's slice of the global batch ``config.batch_size`` (which
    ``world_size`` must divide).

    ``config.cuda_graph=True`` captures the whole step (forward, backward, clipping, AdamW with
    ``capturable=True``, EMA) in one CUDA graph at the first call (:func:`ddpm.gpu.capture_step`); the
    draws stay outside it (on the same generator, so the run is the same as without the graph). One
    process only. ``channels_last``: the batch is drawn channels-last (None: ``config.channels_last``;
    ``ddpm.train`` passes what :func:`ddpm.gpu.for_training` chose).
    """

    def __init__(self, model: nn.Module, schedule: Schedule, config: TrainConfig | None = None, *,
                 generator: torch.Generator, net: nn.Module | None = None, rank: int = 0, world_size: int = 1,
                 buffer_size: int | None = None, channels_last: bool | None = None):
        config = config if config is not None else TrainConfig()
        if config.batch_size % world_size:
            raise ValueError(f"batch_size {config.batch_size} (the global batch) must be divisible by the number of processes, {world_size}")
        self.config = config
        self.model = model
        self.net = net if net is not None else model
        self.device = next(iter(model.parameters())).device
        self.schedule = schedule.to(self.device)
        self.gen = generator
        self.rank, self.world_size = rank, world_size
        self.local_batch = config.batch_size // world_size
        cuda = self.device.type == "cuda"
        self.graph_mode = bool(config.cuda_graph)
        if self.graph_mode:
            if not cuda:
                raise ValueError("cuda_graph is only supported on CUDA; drop it to train on the CPU")
            if world_size > 1:
                raise ValueError("cuda_graph is for one process; drop it under torchrun (DDP all-reduces outside the graph)")
            if config.compile and config.compile_mode in CUDAGRAPH_MODES:
                raise ValueError(f"cuda_graph captures the whole step itself; use compile_mode 'default' or "
                                 f"'max-autotune-no-cudagraphs' with it, not {config.compile_mode!r}")
        self.params = [p for p in model.parameters() if p.requires_grad]
        lr = torch.tensor(lr_at(config, 1), device=self.device) if self.graph_mode else lr_at(config, 1)
        self.opt = torch.optim.AdamW(self.params, lr=lr, weight_decay=config.weight_decay, fused=cuda,
                                     capturable=self.graph_mode)
        self.ema = EMA(model, config.ema_decay, config.ema_warmup)
        self.losses = torch.zeros(buffer_size or config.log_every, device=self.device)  # on the device
        self.pending = 0  # entries of self.losses in use
        mode = resolve_compile_mode(config.compile_mode, cuda_graph=self.graph_mode)
        self._cudagraph_marks = config.compile and mode in CUDAGRAPH_MODES
        self.channels_last = config.channels_last if channels_last is None else bool(channels_last)
        self._graph = None
        self._ema_weight = torch.zeros((), device=self.device) if self.graph_mode else None

    # -- the draws -----------------------------------------------------------------------------
    def draw(self, data: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """This process's slice of the global batch: ``(x0, t, eps)``. Draw order: batch indices,
        ``t``, ``eps`` (the order of one process with :func:`ddpm.loss_simple`)."""
        B, N = self.config.batch_size, data.shape[0]
        lo, hi = self.rank * self.local_batch, (self.rank + 1) * self.local_batch
        idx = torch.randint(0, N, (B,), generator=self.gen, device=self.device)  # (B,) global
        t = torch.randint(1, self.schedule.T + 1, (B,), generator=self.gen, device=self.device)  # (B,) global
        eps = torch.randn((B, *data.shape[1:]), generator=self.gen, device=self.device, dtype=data.dtype)  # (B, ...) global
        x0 = data[idx[lo:hi]]  # (b, ...) local
        if self.channels_last and x0.dim() == 4:
            x0 = x0.contiguous(memory_format=torch.channels_last)  # (b, C, H, W), NHWC in memory
            eps = eps.contiguous(memory_format=torch.channels_last)
        return x0, t[lo:hi], eps[lo:hi]

    # -- the update ----------------------------------------------------------------------------
    def _autocast(self):
        if self.config.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=not self.graph_mode)
        return contextlib.nullcontext()

    def _compute(self, x0: Tensor, t: Tensor, eps: Tensor, ema_weight) -> Tensor:
        with self._autocast():
            loss = loss_simple(self.net, self.schedule, x0, t=t, noise=eps)
        loss.backward()
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip, foreach=True)
        self.opt.step()
        self.ema.update_weight(self.model, ema_weight)
        return loss.detach()

    def __call__(self, data: Tensor, step: int) -> None:
        """Optimiser step ``step`` (1-based) on a batch drawn from ``data`` (on this device)."""
        x0, t, eps = self.draw(data)
        lr = lr_at(self.config, step)
        w = 1.0 - ema_decay(self.config.ema_decay, step, self.config.ema_warmup)
        if self.graph_mode:
            loss = self._replay(x0, t, eps, lr, w)
        else:
            if self._cudagraph_marks:
                torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs may be overwritten
            for g in self.opt.param_groups:
                g["lr"] = lr
            self.opt.zero_grad(set_to_none=True)
            loss = self._compute(x0, t, eps, w)
        if self.pending == self.losses.numel():
            raise RuntimeError("the loss buffer is full: call read_losses() at least every buffer_size steps")
        self.losses[self.pending] = loss  # a device copy, no sync
        self.pending += 1

    # -- whole-step CUDA graph -------------------------------------------------------------------
    def _state_tensors(self) -> list[Tensor]:
        out = [p.data for p in self.params] + list(self.ema.module.parameters()) + list(self.ema.module.buffers())
        for st in self.opt.state.values():
            out += [v for v in st.values() if isinstance(v, Tensor)]
        return out

    def _replay(self, x0, t, eps, lr, w) -> Tensor:
        if self._graph is None:
            self._capture(x0, t, eps)
        self._static[0].copy_(x0)
        self._static[1].copy_(t)
        self._static[2].copy_(eps)
        for g in self.opt.param_groups:
            g["lr"].fill_(lr)
        self._ema_weight.fill_(w)
        self._graph.replay()
        return self._static_loss

    def _capture(self, x0, t, eps) -> None:
        from .gpu.graphs import capture_step

        self._static = (x0.clone(), t.clone(), eps.clone())
        for g in self.opt.param_groups:  # a resumed optimiser state brings a float lr back
            if not isinstance(g["lr"], Tensor) or g["lr"].device != self.device:
                g["lr"] = torch.tensor(float(g["lr"]), device=self.device)
        fixed = len(self.params) + len(list(self.ema.module.parameters())) + len(list(self.ema.module.buffers()))
        fresh_from = None if self.opt.state else fixed  # a fresh AdamW: step 0, both moments 0 after the warm-up
        self._ema_weight.fill_(0.0)

        def compute() -> Tensor:
            self.opt.zero_grad(set_to_none=True)
            return self._compute(*self._static, self._ema_weight)

        self._graph, self._static_loss = capture_step(compute, self._state_tensors, fresh_from=fresh_from,
                                                      device=self.device)

    # -- read-back -------------------------------------------------------------------------------
    def read_losses(self) -> list[float]:
        """The losses since the last call, one per step, as floats: the one host-device sync per
        log interval. Under ``torch.distributed`` they are averaged over the processes (the loss of
        the global batch), a collective every process must call at the same step."""
        n = self.pending
        if not n:
            return []
        vals = self.losses[:n]
        if self.world_size > 1:
            import torch.distributed as dist

            vals = vals.clone()
            dist.all_reduce(vals)  # SUM (gloo has no AVG)
            vals = vals / self.world_size
        self.pending = 0
        return vals.tolist()
