"""Small helpers shared by every formula: argument checks and per-t broadcasting.

The index ``t`` is the ``t`` of the equations. A function that takes ``t`` accepts a
Python ``int`` for the whole batch or a ``LongTensor`` of shape ``(B,)``.
"""

from __future__ import annotations

import numbers
from typing import Union

import torch
from torch import Tensor

TimeArg = Union[int, Tensor]


def check_t(t: TimeArg, T: int, name: str = "t", low: int = 1, batch: int | None = None) -> TimeArg:
    """Validate a time index: an int in ``low..T`` or an integer tensor of shape ``(B,)``.

    Raises ``ValueError`` naming the argument and the allowed range.
    """
    if isinstance(t, bool):
        raise ValueError(f"{name} must be an int or a LongTensor, got a bool")
    if isinstance(t, numbers.Integral):
        t = int(t)
        if not low <= t <= T:
            raise ValueError(f"{name} must be in {low}..{T} (T = {T}), got {t}")
        return t
    if isinstance(t, Tensor):
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer tensor (torch.long), got dtype {t.dtype}")
        if t.dim() == 0:
            return check_t(int(t.item()), T, name, low, batch)
        if t.dim() != 1:
            raise ValueError(f"{name} must have shape (B,), got shape {tuple(t.shape)}")
        if batch is not None and t.shape[0] != batch:
            raise ValueError(f"{name} has {t.shape[0]} entries but the batch has {batch}")
        if t.numel() and (int(t.min()) < low or int(t.max()) > T):
            raise ValueError(
                f"{name} must be in {low}..{T} (T = {T}), got values from {int(t.min())} to {int(t.max())}"
            )
        return t.long()
    raise ValueError(f"{name} must be an int or a LongTensor of shape (B,), got {type(t).__name__}")


def extract(coef: Tensor, t: TimeArg, x: Tensor) -> Tensor:
    """``coef[t]`` shaped to broadcast against ``x`` (any rank), in ``x``'s dtype and device.

    With an int ``t`` the result is a 0-d tensor; with ``t`` of shape ``(B,)`` it has shape
    ``(B, 1, ..., 1)``. This one helper lets the 2-D MLP and the image U-Net share every formula.
    """
    if isinstance(t, Tensor) and t.dim() == 1:
        c = coef.to(device=x.device)[t.to(x.device)]  # (B,)
        return c.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))  # (B, 1, ..., 1)
    c = coef[int(t)]
    if c.device == x.device or c.device.type == "cpu":
        # A 0-d CPU tensor combines with a tensor on any device without a copy or a sync.
        return c.to(dtype=x.dtype)
    return c.to(device=x.device, dtype=x.dtype)


def check_same_shape(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{name_a} must have the shape of {name_b}, {tuple(b.shape)}; got {tuple(a.shape)}")


def batch_size(x: Tensor, name: str = "x") -> int:
    if x.dim() < 1:
        raise ValueError(f"{name} must have a batch dimension, got a 0-d tensor")
    return x.shape[0]
