"""A small residual MLP noise predictor for 2-D (or any flat) data.

Book: chapter 6, "Training and sampling", trains it on the 2-D toys. ``model(x_t, t)`` returns
``eps_hat`` with the shape of ``x_t``; ``t`` is an int or an integer tensor of shape ``()`` or ``(B,)``
(``1..T`` in DDPM use), checked by ``ddpm._utils.check_t``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from .._utils import net_times
from .embedding import sinusoidal_embedding


@dataclass(frozen=True)
class MLPConfig:
    """Configuration of :class:`MLP`. Every field is a plain number so a checkpoint can store it."""

    dim: int = 2  # data dimension: the 2-D toys
    hidden: int = 256  # width: enough for moons / swiss roll / 8 Gaussians, ~0.7M params, fast on a CPU
    layers: int = 3  # residual blocks; 3 fits every 2-D toy here, more only slows training
    time_dim: int = 128  # sinusoidal embedding size before its own 2-layer MLP (as in DDPM's U-Net)
    dropout: float = 0.0  # toys have unlimited data: no regularisation needed

    def __post_init__(self):
        for name in ("dim", "hidden", "layers", "time_dim"):
            v = getattr(self, name)
            low = 2 if name == "time_dim" else 1
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
                raise ValueError(f"MLPConfig.{name} must be an int >= {low}, got {v!r}")
        if not (isinstance(self.dropout, numbers.Real) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"MLPConfig.dropout must be in [0, 1), got {self.dropout!r}")


class _Block(nn.Module):
    """``h + W2 act(W1 act(h) + emb_t)``: a residual block with the time embedding added.

    No normalisation layer: a LayerNorm would make the output blind to the scale of ``x_t``,
    yet near ``t = T`` the right answer is ``eps_hat ~ x_t``, linear in ``x_t`` (samples that start
    in the tails of ``N(0, I)`` would then land far outside the data).
    """

    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(hidden, hidden)
        self.time = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        u = self.fc1(nn.functional.silu(h)) + self.time(emb)  # (B, hidden)
        return h + self.fc2(self.drop(nn.functional.silu(u)))  # (B, hidden)


class MLP(nn.Module):
    """Residual MLP ``eps_theta(x_t, t)`` with a sinusoidal time embedding (Vaswani et al. 2017;
    DDPM appendix B uses the same embedding).

    Accepts ``x`` of shape ``(B, dim)`` or any ``(B, *event)`` with ``prod(event) = dim``; the
    output has the shape of ``x``. The last layer starts at zero, so an untrained model predicts
    ``eps_hat = 0`` and ``loss_simple`` starts at 1.
    """

    def __init__(self, config: MLPConfig | None = None, **kwargs):
        super().__init__()
        if config is None:
            config = MLPConfig(**kwargs)
        elif kwargs:
            raise ValueError("pass either config= or keyword fields, not both")
        if not isinstance(config, MLPConfig):
            raise ValueError(f"config must be an MLPConfig, got {type(config).__name__}")
        self.config = config
        c = config
        self.time_mlp = nn.Sequential(nn.Linear(c.time_dim, c.hidden), nn.SiLU(), nn.Linear(c.hidden, c.hidden))
        self.inp = nn.Linear(c.dim, c.hidden)
        self.blocks = nn.ModuleList(_Block(c.hidden, c.dropout) for _ in range(c.layers))
        self.out = nn.Linear(c.hidden, c.dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, t) -> Tensor:
        B = x.shape[0] if x.dim() >= 1 else 0
        if x.dim() < 2 or math.prod(x.shape[1:]) != self.config.dim:
            raise ValueError(f"x must have shape (B, {self.config.dim}) (or (B, ...) holding {self.config.dim} numbers), got {tuple(x.shape)}")
        t = net_times(t, B, x.device)  # (B,)
        emb = self.time_mlp(sinusoidal_embedding(t, self.config.time_dim).to(x.dtype))  # (B, hidden)
        h = self.inp(x.reshape(B, -1))  # (B, hidden)
        for block in self.blocks:
            h = block(h, emb)  # (B, hidden)
        return self.out(nn.functional.silu(h)).reshape(x.shape)  # (B, *event)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())
