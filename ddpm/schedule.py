"""Noise schedules (book chapter "The variance-preserving forward process").

Every per-step quantity is a float64 tensor of length ``T + 1`` whose index ``t`` is the
``t`` of the equations; index 0 stands for clean data: ``beta_0 = 0``, ``abar_0 = 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Sequence, Union

import torch
from torch import Tensor

# The two choices of the reverse variance sigma_t^2 (DDPM sec. 3.2): "small" beta~_t, "large" beta_t.
VARIANCES = ("small", "large")

ArrayLike = Union[Sequence[float], Tensor]


@dataclass(frozen=True, eq=False)
class Schedule:
    """A variance-preserving noise schedule ``beta_1..beta_T`` and everything derived from it.

    Build one with :meth:`linear`, :meth:`cosine` or :meth:`from_betas` (which take ``beta_1..beta_T``).
    ``Schedule(betas)`` itself takes the full length-``(T + 1)`` vector with ``betas[0] = 0``. Every other
    field is derived from ``betas`` (in float64, on the CPU) and cannot be passed, so the fields always
    agree; :meth:`to` moves or casts all of them together.

    Attributes (each a tensor of length ``T + 1``, index ``t`` = the ``t`` of the equations):

    - ``betas``: ``beta_t`` (DDPM eq. 2), ``beta_0 = 0``.
    - ``alphas``: ``alpha_t = 1 - beta_t``.
    - ``alpha_bars``: ``abar_t = prod_{s<=t} alpha_s`` (DDPM eq. 4), ``abar_0 = 1``.
    - ``posterior_variance``: ``beta~_t = (1 - abar_{t-1}) beta_t / (1 - abar_t)`` (DDPM eq. 7);
      ``beta~_1 = 0`` and ``beta~_0`` is set to 0.
    - ``snr``: ``abar_t / (1 - abar_t)`` (Kingma et al. 2021); ``snr[0] = inf``.
    - ``log_snr``: ``lambda_t = log snr_t``.
    - ``sqrt_alpha_bars``, ``sqrt_one_minus_alpha_bars``: the two coefficients of ``q_sample``.

    ``schedule.T`` is the number of steps; ``len(schedule)`` is ``T + 1``, the length of every tensor
    above, so ``range(len(schedule))`` runs over the valid indices ``0..T``.
    """

    betas: Tensor
    alphas: Tensor = field(init=False)
    alpha_bars: Tensor = field(init=False)
    posterior_variance: Tensor = field(init=False)
    snr: Tensor = field(init=False)
    log_snr: Tensor = field(init=False)
    sqrt_alpha_bars: Tensor = field(init=False)
    sqrt_one_minus_alpha_bars: Tensor = field(init=False)

    def __post_init__(self):
        b = torch.as_tensor(self.betas, dtype=torch.float64).detach().cpu()
        if b.dim() != 1 or b.numel() < 2:
            raise ValueError(
                f"Schedule(betas) takes beta_0..beta_T (length T + 1 >= 2, beta_0 = 0), got shape {tuple(b.shape)};"
                " use Schedule.from_betas for beta_1..beta_T"
            )
        if b[0] != 0:
            raise ValueError(f"betas[0] must be 0 (t = 0 is clean data), got {b[0].item()}; use Schedule.from_betas for beta_1..beta_T")
        _check_open_unit(b[1:])
        alphas = 1.0 - b
        alpha_bars = torch.cumprod(alphas, 0)  # abar_0 = 1
        one_minus = 1.0 - alpha_bars
        post = torch.zeros_like(b)
        post[1:] = one_minus[:-1] * b[1:] / one_minus[1:]  # beta~_1 = 0 since abar_0 = 1
        snr = alpha_bars / one_minus  # snr[0] = inf
        derived = dict(
            betas=b,
            alphas=alphas,
            alpha_bars=alpha_bars,
            posterior_variance=post,
            snr=snr,
            log_snr=torch.log(snr),
            sqrt_alpha_bars=alpha_bars.sqrt(),
            sqrt_one_minus_alpha_bars=one_minus.sqrt(),
        )
        for k, v in derived.items():
            object.__setattr__(self, k, v)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_betas(cls, betas: ArrayLike) -> "Schedule":
        """A schedule from ``beta_1..beta_T`` (length ``T``, each strictly inside (0, 1))."""
        b = torch.as_tensor(betas, dtype=torch.float64).detach().cpu()
        if b.dim() != 1 or b.numel() < 1:
            raise ValueError(f"betas must be a 1-D sequence of length T >= 1 (beta_1..beta_T), got shape {tuple(b.shape)}")
        _check_open_unit(b)
        return cls(torch.cat([torch.zeros(1, dtype=torch.float64), b]))  # (T+1,), beta_0 = 0

    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "Schedule":
        """DDPM's linear schedule (Ho et al. 2020, section 4): ``beta_t`` evenly spaced from
        ``beta_start`` to ``beta_end``. The defaults are tuned for ``T = 1000`` and data in
        [-1, 1]; for other ``T`` scale both by ``1000 / T`` (chapter "The variance-preserving forward process", claim F7)."""
        T = _check_T(T)
        for name, v in (("beta_start", beta_start), ("beta_end", beta_end)):
            if not 0 < v < 1:
                raise ValueError(f"{name} must lie strictly inside (0, 1), got {v}")
        return cls.from_betas(torch.linspace(beta_start, beta_end, T, dtype=torch.float64))

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> "Schedule":
        """The cosine schedule of Nichol and Dhariwal 2021 (eq. 17):
        ``abar_t = f(t)/f(0)``, ``f(t) = cos^2(((t/T + s)/(1 + s)) pi/2)``,
        ``beta_t = min(1 - abar_t/abar_{t-1}, max_beta)``."""
        T = _check_T(T)
        if s < 0:
            raise ValueError(f"s must be >= 0, got {s}")
        if not 0 < max_beta < 1:
            raise ValueError(f"max_beta must lie strictly inside (0, 1), got {max_beta}")
        t = torch.arange(T + 1, dtype=torch.float64)
        f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
        abar = f / f[0]
        betas = (1 - abar[1:] / abar[:-1]).clamp(min=1e-12, max=max_beta)
        return cls.from_betas(betas)

    # ------------------------------------------------------------------ properties
    @property
    def T(self) -> int:
        """The number of diffusion steps."""
        return self.betas.shape[0] - 1

    @property
    def device(self) -> torch.device:
        return self.betas.device

    @property
    def dtype(self) -> torch.dtype:
        return self.betas.dtype

    def to(self, device=None, dtype=None) -> "Schedule":
        """A copy with every tensor moved to ``device`` and/or cast to ``dtype`` (each field converted
        from its float64 value, not recomputed in the new dtype)."""
        new = object.__new__(Schedule)
        for f in fields(self):
            object.__setattr__(new, f.name, getattr(self, f.name).to(device=device, dtype=dtype))
        return new

    def __len__(self) -> int:
        """``T + 1``: the length of every tensor of the schedule (indices ``0..T``)."""
        return self.T + 1

    def __repr__(self) -> str:
        return (
            f"Schedule(T={self.T}, beta_1={self.betas[1].item():.3g}, beta_T={self.betas[-1].item():.3g}, "
            f"abar_T={self.alpha_bars[-1].item():.3g}, dtype={self.dtype}, device={self.device})"
        )


def _check_open_unit(b: Tensor) -> None:
    ok = torch.isfinite(b) & (b > 0) & (b < 1)
    if not ok.all():
        raise ValueError(f"betas must lie strictly inside (0, 1); got {b[~ok][0].item()}")


def _check_T(T) -> int:
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be an int >= 1, got {T!r}")
    return T
