"""The forward (noising) process q (book chapter 3, "The variance-preserving forward process")."""

from __future__ import annotations

import torch
from torch import Tensor

from ._utils import TimeArg, batch_size, check_same_shape, check_t, extract
from .schedule import Schedule


def _noise_like(x: Tensor, noise: Tensor | None, generator: torch.Generator | None) -> Tensor:
    if noise is None:
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    check_same_shape(noise, x, "noise", "x")
    return noise


def q_step(schedule: Schedule, x_prev: Tensor, t: TimeArg, *, noise: Tensor | None = None, generator=None) -> Tensor:
    """One forward step ``x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) eps_t``.

    DDPM (Ho et al. 2020) eq. 2; claim F1 of book chapter 3. ``eps_t`` is the noise of this
    one step, a different random variable from the ``eps`` of :func:`q_sample` (claim F3).
    """
    t = check_t(t, schedule.T, batch=batch_size(x_prev, "x_prev"))
    noise = _noise_like(x_prev, noise, generator)
    return extract(schedule.alphas.sqrt(), t, x_prev) * x_prev + extract(schedule.betas.sqrt(), t, x_prev) * noise


def q_mean_variance(schedule: Schedule, x0: Tensor, t: TimeArg) -> tuple[Tensor, Tensor]:
    """Mean ``sqrt(abar_t) x0`` and variance ``1 - abar_t`` of ``q(x_t | x0)``.

    DDPM eq. 4; claim F3 of book chapter 3. The variance is broadcastable against ``x0``.
    """
    t = check_t(t, schedule.T, low=0, batch=batch_size(x0, "x0"))
    return extract(schedule.sqrt_alpha_bars, t, x0) * x0, extract(1.0 - schedule.alpha_bars, t, x0)


def q_sample(schedule: Schedule, x0: Tensor, t: TimeArg, *, noise: Tensor | None = None, generator=None) -> Tensor:
    """Draw ``x_t ~ q(x_t | x0)`` in closed form: ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``.

    DDPM eq. 4 (and Algorithm 1, line 5); claim F3 of book chapter 3. ``t`` may be 0
    (``x_0`` itself). Pass ``noise`` (the ``eps`` above, same shape as ``x0``) or a
    ``generator`` to draw it.
    """
    t = check_t(t, schedule.T, low=0, batch=batch_size(x0, "x0"))
    noise = _noise_like(x0, noise, generator)
    return extract(schedule.sqrt_alpha_bars, t, x0) * x0 + extract(schedule.sqrt_one_minus_alpha_bars, t, x0) * noise


def marginal_variance(schedule: Schedule, data_variance, t: TimeArg):
    """``Var x_t = abar_t Var x0 + (1 - abar_t)`` per coordinate (claim F4, book chapter 3).

    Equals 1 for every ``t`` iff ``Var x0 = 1``.
    """
    t = check_t(t, schedule.T, low=0)
    abar = schedule.alpha_bars[t] if isinstance(t, int) else schedule.alpha_bars[t.to(schedule.device)]
    return abar * data_variance + (1.0 - abar)
