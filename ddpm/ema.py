"""Exponential moving average of model weights (Polyak averaging; DDPM appendix B uses decay 0.9999).

Book: chapter 6, "Training and sampling", explains why samples come from the averaged weights.
"""

from __future__ import annotations

import copy
import numbers

import torch
from torch import nn


def ema_decay(decay: float, step: int, warmup: bool = True) -> float:
    """The decay used at optimiser step ``step`` (1-based): ``min(decay, (1 + step) / (10 + step))``
    with warm-up (as in TensorFlow's ``ExponentialMovingAverage(num_updates=...)``), else ``decay``.

    Without warm-up a decay of 0.9999 keeps the random initial weights in the average for tens of
    thousands of steps; with it the average follows the early weights closely and slows down later.
    """
    return min(decay, (1.0 + step) / (10.0 + step)) if warmup else decay


class EMA:
    """An averaged copy of a model: ``theta_ema <- d theta_ema + (1 - d) theta`` after each step.

    Only parameters are averaged; buffers (a schedule stored in the model, BatchNorm statistics,
    ...) are copied as they are. ``ema.module`` is a separate ``nn.Module`` in eval mode with
    ``requires_grad=False``; sample with it.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True):
        if not (isinstance(decay, numbers.Real) and 0.0 <= decay < 1.0):
            raise ValueError(f"decay must be in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)
        self._cache = None  # (model id, EMA float params, model float params, buffer pairs) for the hot path
        self._pairs(model)  # checks that the structures match

    def _pairs(self, model: nn.Module):
        if self._cache is not None and self._cache[0] is model:
            return self._cache[1:]
        ep = list(self.module.parameters())
        mp = list(model.parameters())
        if len(ep) != len(mp) or any(a.shape != b.shape for a, b in zip(ep, mp)):
            raise ValueError("model does not have the parameters of the EMA copy")
        floats = [(e, p) for e, p in zip(ep, mp) if e.dtype.is_floating_point]
        buffers = list(zip(self.module.buffers(), model.buffers()))
        self._cache = (model, [e for e, _ in floats], [p for _, p in floats], buffers)
        return self._cache[1:]

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> float:
        """Average ``model``'s parameters in after optimiser step ``step``; copy its buffers.
        Returns the decay used. No host-device synchronisation."""
        d = ema_decay(self.decay, step, self.warmup)
        ep_f, mp_f, buffers = self._pairs(model)
        if ep_f:
            torch._foreach_lerp_(ep_f, mp_f, 1.0 - d)  # e += (1 - d) (p - e)
        for eb, mb in buffers:
            eb.copy_(mb)
        return d

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)  # copies in place: cached parameter lists stay valid

    def to(self, *args, **kwargs) -> "EMA":
        self.module.to(*args, **kwargs)
        self._cache = None
        return self
