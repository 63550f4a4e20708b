"""The posterior q(x_{t-1} | x_t, x0) and the eps / x0 / v parameterisations
(book chapters "The variational bound (ELBO)", "The tractable loss" and "DDIM")."""

from __future__ import annotations

import torch
from torch import Tensor

from ._utils import TimeArg, batch_size, check_same_shape, check_t, extract
from .schedule import Schedule


def _t(schedule: Schedule, t: TimeArg, x: Tensor, low: int = 1) -> TimeArg:
    return check_t(t, schedule.T, low=low, batch=batch_size(x, "x_t"))


def q_posterior(schedule: Schedule, x_t: Tensor, t: TimeArg, x0: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance of ``q(x_{t-1} | x_t, x0)``.

    DDPM (Ho et al. 2020) eqs. 6-7; claim E5 of chapter "The variational bound (ELBO)"::

        mu~_t   = [sqrt(abar_{t-1}) beta_t x0
                   + sqrt(alpha_t) (1 - abar_{t-1}) x_t] / (1 - abar_t)
        beta~_t = (1 - abar_{t-1}) beta_t / (1 - abar_t)

    The variance is returned broadcastable against ``x0``; at ``t = 1`` it is 0 and the mean is ``x0``.
    """
    check_same_shape(x_t, x0, "x_t", "x0")
    t = _t(schedule, t, x_t)
    s = schedule
    one_minus = 1.0 - s.alpha_bars
    c0 = s.sqrt_alpha_bars[:-1] * s.betas[1:] / one_minus[1:]  # coefficient of x0, index t-1
    ct = s.alphas[1:].sqrt() * one_minus[:-1] / one_minus[1:]  # coefficient of x_t, index t-1
    c0 = torch.cat([c0.new_zeros(1), c0])  # index t; entry 0 is unused (t >= 1)
    ct = torch.cat([ct.new_zeros(1), ct])
    mean = extract(c0, t, x0) * x0 + extract(ct, t, x_t) * x_t
    return mean, extract(s.posterior_variance, t, x0)


def predict_x0(schedule: Schedule, x_t: Tensor, t: TimeArg, eps: Tensor) -> Tensor:
    """``x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``: DDPM eq. 4 solved for x0
    (DDIM eq. 9, ``f_theta``; book chapters "Training and sampling" and "DDIM")."""
    check_same_shape(eps, x_t, "eps", "x_t")
    t = _t(schedule, t, x_t)
    return (x_t - extract(schedule.sqrt_one_minus_alpha_bars, t, x_t) * eps) / extract(schedule.sqrt_alpha_bars, t, x_t)



def x0_to_eps(schedule: Schedule, x_t: Tensor, t: TimeArg, x0: Tensor) -> Tensor:
    """``eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)``: the inverse of :func:`predict_x0`."""
    check_same_shape(x0, x_t, "x0", "x_t")
    t = _t(schedule, t, x_t)
    return (x_t - extract(schedule.sqrt_alpha_bars, t, x_t) * x0) / extract(schedule.sqrt_one_minus_alpha_bars, t, x_t)


def v_target(schedule: Schedule, x0: Tensor, t: TimeArg, eps: Tensor) -> Tensor:
    """``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0`` (Salimans and Ho 2022, section 4;
    claim D9 of chapter "DDIM")."""
    check_same_shape(eps, x0, "eps", "x0")
    t = _t(schedule, t, x0, low=0)
    return extract(schedule.sqrt_alpha_bars, t, x0) * eps - extract(schedule.sqrt_one_minus_alpha_bars, t, x0) * x0


def v_to_x0(schedule: Schedule, x_t: Tensor, t: TimeArg, v: Tensor) -> Tensor:
    """``x0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v`` (Salimans and Ho 2022; claim D9)."""
    check_same_shape(v, x_t, "v", "x_t")
    t = _t(schedule, t, x_t, low=0)
    return extract(schedule.sqrt_alpha_bars, t, x_t) * x_t - extract(schedule.sqrt_one_minus_alpha_bars, t, x_t) * v


def v_to_eps(schedule: Schedule, x_t: Tensor, t: TimeArg, v: Tensor) -> Tensor:
    """``eps = sqrt(1 - abar_t) x_t + sqrt(abar_t) v`` (Salimans and Ho 2022; claim D9)."""
    check_same_shape(v, x_t, "v", "x_t")
    t = _t(schedule, t, x_t, low=0)
    return extract(schedule.sqrt_one_minus_alpha_bars, t, x_t) * x_t + extract(schedule.sqrt_alpha_bars, t, x_t) * v


def eps_to_v(schedule: Schedule, x_t: Tensor, t: TimeArg, eps: Tensor) -> Tensor:
    """The v-prediction implied by an eps-prediction at ``x_t`` (claim D9)."""
    return v_target(schedule, predict_x0(schedule, x_t, t, eps), t, eps)


def x0_to_v(schedule: Schedule, x_t: Tensor, t: TimeArg, x0: Tensor) -> Tensor:
    """The v-prediction implied by an x0-prediction at ``x_t`` (claim D9)."""
    return v_target(schedule, x0, t, x0_to_eps(schedule, x_t, t, x0))


def posterior_mean_from_eps(schedule: Schedule, x_t: Tensor, t: TimeArg, eps: Tensor) -> Tensor:
    """``mu = (x_t - beta_t eps / sqrt(1 - abar_t)) / sqrt(alpha_t)``.

    DDPM eq. 11; claim K4 of chapter "The tractable loss". With ``eps`` the true noise this is ``mu~_t``
    exactly; with ``eps_theta`` it is the model's mean ``mu_theta``.
    """
    check_same_shape(eps, x_t, "eps", "x_t")
    t = _t(schedule, t, x_t)
    coef = schedule.betas / schedule.sqrt_one_minus_alpha_bars.clamp(min=1e-300)
    return (x_t - extract(coef, t, x_t) * eps) / extract(schedule.alphas.sqrt(), t, x_t)
