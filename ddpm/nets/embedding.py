"""Sinusoidal time embedding (Vaswani et al. 2017, sec. 3.5; used by DDPM, Ho et al. 2020, appendix B).

Book: chapter 6, "Training and sampling", explains why the network sees ``t`` through sines
and cosines of geometrically spaced frequencies rather than as a raw number.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Embed integer times ``t`` of shape ``(B,)`` as a float32 tensor of shape ``(B, dim)``.

    ``emb[:, i] = sin(t * w_i)`` for ``i < dim // 2`` and ``emb[:, dim//2 + i] = cos(t * w_i)``,
    with frequencies ``w_i = max_period ** (-i / (dim // 2))`` (the transformer / DDPM layout:
    sines first, then cosines). An odd ``dim`` gets one trailing zero column.

    ``t`` may be an int (one row), a 0-d tensor or a ``(B,)`` tensor (integer or float; the DDPM
    convention is integer ``t`` in ``1..T``). Raises ``ValueError`` for ``dim < 2`` or a ``t`` of
    another rank.
    """
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim < 2:
        raise ValueError(f"dim must be an int >= 2, got {dim!r}")
    if max_period <= 1:
        raise ValueError(f"max_period must be > 1, got {max_period!r}")
    if isinstance(t, numbers.Number) and not isinstance(t, bool):
        t = torch.tensor([t])
    if not isinstance(t, Tensor):
        raise ValueError(f"t must be a tensor of shape (B,) or an int, got {type(t).__name__}")
    if t.dim() == 0:
        t = t.reshape(1)
    if t.dim() != 1:
        raise ValueError(f"t must have shape (B,), got shape {tuple(t.shape)}")
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )  # (half,)
    args = t.to(torch.float32)[:, None] * freqs[None, :]  # (B, half)
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)  # (B, 2*half)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb
