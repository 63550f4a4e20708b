"""Small helpers shared by every formula: the one check of a time index ``t``, and per-t broadcasting.

The index ``t`` is the ``t`` of the equations. Every function that takes ``t`` (the maths, the
losses, the samplers and the networks) checks it with :func:`check_t`:

- a Python ``int`` (or a NumPy integer) for the whole batch, checked against its range;
- or an integer tensor (``torch.long``; any integer dtype is accepted and cast) of shape ``()``
  (one value for the whole batch) or ``(B,)`` with ``B`` the batch size.

Floating-point, boolean and complex tensors are refused: ``t`` indexes the schedule. The values of a
tensor are checked only when it lives on the CPU. A tensor on an accelerator is checked for dtype and
shape alone, because reading its values would make the host wait for the device (a host-device
synchronisation on every call); the entry points that build ``t`` there (the samplers, from host
integers; ``loss_simple``, which draws it in range itself) know its values are valid.
"""

from __future__ import annotations

import numbers
from typing import Union

import torch
from torch import Tensor

TimeArg = Union[int, Tensor]


def _host_readable(t: Tensor) -> bool:
    return t.device.type == "cpu"


def check_t(
    t: TimeArg, T: int | None, name: str = "t", *, low: int = 1, batch: int | None = None
) -> TimeArg:
    """Validate a time index and return it as an ``int`` or a ``LongTensor`` of shape ``(B,)``.

    ``T`` is the number of steps (the upper bound; ``None`` checks only ``t >= low``, for the networks,
    which do not know ``T``). ``low`` is 1, or 0 where the equation allows ``t = 0`` (clean data).
    ``batch`` is the batch size a tensor ``t`` must match. A 0-d tensor on the CPU becomes an ``int``;
    a 0-d tensor on an accelerator is expanded to ``(batch,)`` (or ``(1,)``) without reading it.
    Raises ``ValueError`` naming the argument and what is allowed.
    """
    rng = f"in {low}..{T} (T = {T})" if T is not None else f">= {low}"
    if isinstance(t, bool):
        raise ValueError(f"{name} must be an int or an integer tensor, got a bool")
    if isinstance(t, numbers.Integral):
        t = int(t)
        if t < low or (T is not None and t > T):
            raise ValueError(f"{name} must be {rng}, got {t}")
        return t
    if isinstance(t, Tensor):
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer tensor (torch.long), got dtype {t.dtype}")
        if t.dim() == 0:
            if _host_readable(t):
                return check_t(int(t), T, name, low=low, batch=batch)
            t = t.reshape(1).expand(batch if batch is not None else 1)
        if t.dim() != 1:
            raise ValueError(f"{name} must have shape () or (B,), got shape {tuple(t.shape)}")
        if batch is not None and t.shape[0] != batch:
            raise ValueError(f"{name} has {t.shape[0]} entries but the batch has {batch}")
        if _host_readable(t) and t.numel():
            lo, hi = int(t.min()), int(t.max())
            if lo < low or (T is not None and hi > T):
                raise ValueError(f"{name} must be {rng}, got values from {lo} to {hi}")
        return t.long()
    if isinstance(t, numbers.Real):
        raise ValueError(f"{name} must be an integer (the t of the equations), got {t!r}")
    raise ValueError(f"{name} must be an int or an integer tensor of shape () or (B,), got {type(t).__name__}")


def net_times(t: TimeArg, B: int, device) -> Tensor:
    """The networks' ``t``: :func:`check_t` with no upper bound (a network does not know ``T``),
    returned as a ``LongTensor`` of shape ``(B,)`` on ``device``."""
    t = check_t(t, None, low=0, batch=B)
    if isinstance(t, int):
        return torch.full((B,), t, dtype=torch.long, device=device)
    if t.shape[0] == 1 and B != 1:
        t = t.expand(B)
    return t.to(device)


def extract(coef: Tensor, t: TimeArg, x: Tensor) -> Tensor:
    """``coef[t]`` shaped to broadcast against ``x`` (any rank), in ``x``'s dtype and device.

    ``t`` is what :func:`check_t` returns. With an int ``t`` the result is a 0-d tensor; with ``t`` of
    shape ``(B,)`` it has shape ``(B, 1, ..., 1)``. This one helper lets the 2-D MLP and the image U-Net
    share every formula. No step waits for the device: a 0-d CPU tensor combines with a tensor on any
    device as a scalar, and a CPU table indexed on the device is copied there without blocking.
    """
    if isinstance(t, Tensor):
        if coef.device != t.device:
            coef = coef.to(device=t.device, non_blocking=True)
        c = coef[t]  # (B,)
        return c.to(device=x.device, dtype=x.dtype, non_blocking=True).reshape(-1, *([1] * (x.dim() - 1)))  # (B, 1, ..., 1)
    c = coef[int(t)]
    if c.device == x.device or c.device.type == "cpu":
        return c.to(dtype=x.dtype)
    return c.to(device=x.device, dtype=x.dtype)


def check_same_shape(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    if not isinstance(a, Tensor):
        raise ValueError(f"{name_a} must be a tensor of shape {tuple(b.shape)}, got {type(a).__name__}")
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{name_a} must have the shape of {name_b}, {tuple(b.shape)}; got {tuple(a.shape)}")


def batch_size(x: Tensor, name: str = "x") -> int:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a tensor, got {type(x).__name__}")
    if x.dim() < 1:
        raise ValueError(f"{name} must have a batch dimension, got a 0-d tensor")
    return x.shape[0]
