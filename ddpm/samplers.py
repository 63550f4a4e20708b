"""The DDPM and DDIM samplers (book chapters 6 and 7).

A model is any callable ``model(x_t, t) -> eps_hat`` with ``t`` a LongTensor of shape
``(B,)`` on the 1..T scale: a trained network, or the exact score of
:class:`ddpm.testbed.GaussianMixture`.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ._utils import TimeArg, batch_size, check_same_shape, check_t, extract
from .posterior import eps_to_x0, posterior_mean_from_eps, q_posterior, x0_to_eps
from .schedule import Schedule

Model = Callable[[Tensor, Tensor], Tensor]
Spacing = Union[str, Sequence[int], Tensor]
SPACINGS = ("trailing", "leading", "linspace", "quadratic")
VARIANCES = ("small", "large")


# ---------------------------------------------------------------------- time steps
def timesteps(T: int, steps: int, spacing: Spacing = "trailing") -> Tensor:
    """The decreasing sequence ``tau_S > ... > tau_1`` of time steps a sampler visits.

    - ``"trailing"``: ``round(T - k T/S)`` for k = 0..S-1; starts at ``T`` (Lin et al. 2024).
    - ``"leading"``: ``1 + k floor(T/S)``; never visits ``T``, a known trap.
    - ``"linspace"``: ``S`` points evenly spaced from 1 to ``T``, both included.
    - ``"quadratic"``: ``floor((k sqrt(0.8 T)/(S-1))^2) + 1`` (DDIM appendix D.2), the
      smallest steps nudged apart so that none repeats.

    An explicit sequence (strictly decreasing, each in 1..T) is accepted too and returned as is.
    Book chapter 7, claim D8. Returns a ``LongTensor`` of length ``steps``.
    """
    if isinstance(T, bool) or not isinstance(T, numbers.Integral) or T < 1:
        raise ValueError(f"T must be an int >= 1, got {T!r}")
    if not isinstance(spacing, str):
        seq = torch.as_tensor(spacing).reshape(-1)
        if seq.dtype.is_floating_point or seq.numel() < 1:
            raise ValueError("an explicit timestep sequence must be a non-empty sequence of ints")
        seq = seq.long()
        if (seq < 1).any() or (seq > T).any():
            raise ValueError(f"explicit timesteps must lie in 1..{T}, got {seq.tolist()}")
        if seq.numel() > 1 and not (seq[:-1] > seq[1:]).all():
            raise ValueError(f"explicit timesteps must be strictly decreasing, got {seq.tolist()}")
        return seq
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or not 1 <= steps <= T:
        raise ValueError(f"steps must be an int in 1..{T} (T = {T}), got {steps!r}")
    k = np.arange(steps)
    if spacing == "trailing":
        seq = np.round(T - k * (T / steps)).astype(np.int64)
    elif spacing == "leading":
        seq = (1 + k * (T // steps))[::-1]
    elif spacing == "linspace":
        seq = np.round(np.linspace(1, T, steps))[::-1].astype(np.int64)
    elif spacing == "quadratic":
        seq = np.floor(np.linspace(0, math.sqrt(0.8 * T), steps) ** 2).astype(np.int64) + 1
        # DDIM's code repeats the smallest steps (floor of k^2 c for small k); nudge each to at
        # least one past its predecessor (seq[k] - k non-decreasing) so none repeats.
        seq = (np.maximum.accumulate(seq - k) + k)[::-1]
    else:
        raise ValueError(f"spacing must be one of {SPACINGS} or an explicit decreasing sequence, got {spacing!r}")
    return torch.from_numpy(np.array(seq, dtype=np.int64))  # a copy: positive strides


# ---------------------------------------------------------------------- one step
def _step_noise(x: Tensor, noise: Tensor | None, generator) -> Tensor:
    if noise is None:
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    check_same_shape(noise, x, "noise", "x_t")
    return noise


def _clip(schedule: Schedule, x_t: Tensor, t: TimeArg, eps: Tensor, clip: float | None) -> tuple[Tensor, Tensor]:
    """x0_hat from eps, clamped to [-clip, clip] when ``clip`` is set (eps then re-derived)."""
    x0 = eps_to_x0(schedule, x_t, t, eps)
    if clip is None:
        return x0, eps
    if clip <= 0:
        raise ValueError(f"clip must be > 0 or None, got {clip}")
    x0 = x0.clamp(-clip, clip)
    return x0, x0_to_eps(schedule, x_t, t, x0)


def ddpm_step(
    schedule: Schedule,
    x_t: Tensor,
    t: TimeArg,
    eps: Tensor,
    noise: Tensor | None = None,
    variance: str = "small",
    *,
    clip: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One ancestral step ``x_{t-1} = mu_theta(x_t, t) + sigma_t z`` (DDPM Algorithm 2, line 4).

    ``mu_theta`` is DDPM eq. 11 (claim K4); it equals the posterior mean of the predicted
    ``x0_hat`` (claim S1, book chapter 6). ``variance="small"`` takes ``sigma_t^2 = beta~_t``,
    ``"large"`` takes ``sigma_t^2 = beta_t`` (DDPM section 3.2). At ``t = 1`` no noise is
    added (``z = 0``), so the first step's variance, ``beta~_1 = 0`` or ``beta_1``, is never used:
    the step returns the mean, ``x0_hat``. ``clip`` clamps ``x0_hat`` to ``[-clip, clip]``.
    """
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
    check_same_shape(eps, x_t, "eps", "x_t")
    t = check_t(t, schedule.T, batch=batch_size(x_t, "x_t"))
    if clip is None:
        mean = posterior_mean_from_eps(schedule, x_t, t, eps)
    else:
        x0, _ = _clip(schedule, x_t, t, eps, clip)
        mean, _ = q_posterior(schedule, x0, x_t, t)
    var = schedule.posterior_variance if variance == "small" else schedule.betas
    if isinstance(t, int):
        if t == 1:
            if noise is not None:
                check_same_shape(noise, x_t, "noise", "x_t")
            return mean
        return mean + extract(var.sqrt(), t, x_t) * _step_noise(x_t, noise, generator)
    sigma = extract(var.sqrt() * (torch.arange(schedule.T + 1, device=var.device) > 1), t, x_t)  # 0 at t = 1
    return mean + sigma * _step_noise(x_t, noise, generator)


def ddim_sigma(schedule: Schedule, t: TimeArg, t_prev: TimeArg, eta: float) -> Tensor:
    """``sigma_t(eta) = eta sqrt((1 - abar_{t_prev})/(1 - abar_t)) sqrt(1 - abar_t/abar_{t_prev})``.

    DDIM (Song et al. 2021) eq. 16; claim D4 of book chapter 7. ``eta = 1`` gives
    ``sigma^2 = beta~_t`` (DDPM with the small variance), ``eta = 0`` the deterministic sampler.
    Returned as a float64 tensor (0-d for int ``t``, shape ``(B,)`` otherwise).
    """
    if not eta >= 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    a = schedule.alpha_bars
    at = a[t.to(a.device)] if isinstance(t, Tensor) else a[int(t)]
    ap = a[t_prev.to(a.device)] if isinstance(t_prev, Tensor) else a[int(t_prev)]
    return eta * ((1 - ap) / (1 - at)).sqrt() * (1 - at / ap).clamp(min=0).sqrt()


def ddim_step(
    schedule: Schedule,
    x_t: Tensor,
    t: TimeArg,
    t_prev: TimeArg,
    eps: Tensor,
    eta: float = 0.0,
    noise: Tensor | None = None,
    *,
    clip: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One DDIM step from ``t`` to ``t_prev < t`` (DDIM eq. 12, sigma from eq. 16)::

        x_{t_prev} = sqrt(abar_{t_prev}) x0_hat + sqrt(1 - abar_{t_prev} - sigma^2) eps + sigma z

    Claim D5 of book chapter 7. ``t_prev = 0`` uses ``abar_0 = 1`` (the last step returns
    ``x0_hat``). ``eta = 0`` is deterministic; ``noise`` is ignored where sigma is 0.
    """
    if not (isinstance(eta, numbers.Real) and eta >= 0):
        raise ValueError(f"eta must be a number >= 0, got {eta!r}")
    check_same_shape(eps, x_t, "eps", "x_t")
    B = batch_size(x_t, "x_t")
    t = check_t(t, schedule.T, batch=B)
    t_prev = check_t(t_prev, schedule.T, name="t_prev", low=0, batch=B)
    if isinstance(t, int) and isinstance(t_prev, int):
        if t_prev >= t:
            raise ValueError(f"t_prev must be < t, got t_prev = {t_prev} and t = {t}")
    elif bool((torch.as_tensor(t_prev).cpu() >= torch.as_tensor(t).cpu()).any()):
        raise ValueError("t_prev must be < t for every element of the batch")
    x0, eps = _clip(schedule, x_t, t, eps, clip)
    abar_prev = schedule.alpha_bars
    sigma = ddim_sigma(schedule, t, t_prev, float(eta))  # float64
    a_prev = abar_prev[t_prev.to(abar_prev.device)] if isinstance(t_prev, Tensor) else abar_prev[t_prev]
    dir_coef = (1 - a_prev - sigma**2).clamp(min=0).sqrt()
    shape = (-1,) + (1,) * (x_t.dim() - 1) if sigma.dim() == 1 else ()
    c_x0 = _as(a_prev.sqrt(), x_t, shape)
    out = c_x0 * x0 + _as(dir_coef, x_t, shape) * eps
    if eta == 0 or (sigma == 0).all():
        if noise is not None:
            check_same_shape(noise, x_t, "noise", "x_t")
        return out
    return out + _as(sigma, x_t, shape) * _step_noise(x_t, noise, generator)


def _as(c: Tensor, x: Tensor, shape) -> Tensor:
    c = c.reshape(shape) if shape else c
    if c.dim() == 0 and c.device.type == "cpu":
        return c.to(dtype=x.dtype)
    return c.to(device=x.device, dtype=x.dtype)


# ---------------------------------------------------------------------- whole samplers
def _start(model, schedule: Schedule, shape, generator, x_T, device, dtype) -> Tensor:
    if x_T is not None:
        if tuple(x_T.shape) != tuple(shape):
            raise ValueError(f"x_T must have shape {tuple(shape)}, got {tuple(x_T.shape)}")
        return x_T
    if device is None or dtype is None:
        p = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
        device = device if device is not None else (p.device if p is not None else (generator.device if generator is not None else schedule.device))
        dtype = dtype if dtype is not None else (p.dtype if p is not None and p.dtype.is_floating_point else torch.float32)
    return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)


def _progress(it, progress: bool, desc: str, total: int):
    if not progress:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc=desc, leave=False)


@torch.no_grad()
def sample_ddpm(
    model: Model,
    schedule: Schedule,
    shape: Sequence[int],
    generator: torch.Generator | None = None,
    *,
    variance: str = "small",
    clip: float | None = None,
    x_T: Tensor | None = None,
    return_trajectory: bool = False,
    progress: bool = True,
    device=None,
    dtype=None,
):
    """Ancestral sampling, DDPM Algorithm 2: ``x_T ~ N(0, I)``, then ``T`` calls of
    :func:`ddpm_step` from ``t = T`` down to 1 (book chapter 6).

    Runs on the device and dtype of ``x_T`` if given, else of ``device``/``dtype``, else of
    the model's parameters (float32 on the schedule's device for a plain callable).
    Returns ``x_0``, or ``(x_0, trajectory)`` with ``trajectory`` of shape ``(T + 1, *shape)``
    holding ``x_T, ..., x_0`` when ``return_trajectory`` is set.
    """
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
    x = _start(model, schedule, shape, generator, x_T, device, dtype)
    traj = [x] if return_trajectory else None
    B = x.shape[0]
    for t in _progress(range(schedule.T, 0, -1), progress, "DDPM", schedule.T):
        tt = torch.full((B,), t, dtype=torch.long, device=x.device)
        eps = model(x, tt)
        x = ddpm_step(schedule, x, t, eps, variance=variance, clip=clip, generator=generator)
        if traj is not None:
            traj.append(x)
    return (x, torch.stack(traj)) if traj is not None else x


@torch.no_grad()
def sample_ddim(
    model: Model,
    schedule: Schedule,
    shape: Sequence[int],
    steps: int = 50,
    eta: float = 0.0,
    spacing: Spacing = "trailing",
    generator: torch.Generator | None = None,
    *,
    clip: float | None = None,
    x_T: Tensor | None = None,
    return_trajectory: bool = False,
    progress: bool = True,
    device=None,
    dtype=None,
):
    """DDIM sampling (Song et al. 2021, eq. 12 over a sub-sequence tau, section 4.2):
    ``steps`` calls of :func:`ddim_step` over :func:`timesteps` ``(T, steps, spacing)``,
    the last one to ``t_prev = 0`` (book chapter 7, claims D5 and D8).

    ``eta = 0`` is deterministic given ``x_T``; ``eta = 1`` with every step is DDPM with
    the small variance. Device, dtype and return value as for :func:`sample_ddpm`
    (the trajectory has ``steps + 1`` entries).
    """
    if not (isinstance(eta, numbers.Real) and eta >= 0):
        raise ValueError(f"eta must be a number >= 0, got {eta!r}")
    seq = timesteps(schedule.T, steps, spacing).tolist()
    x = _start(model, schedule, shape, generator, x_T, device, dtype)
    traj = [x] if return_trajectory else None
    B = x.shape[0]
    nxt = seq[1:] + [0]
    for t, t_prev in _progress(zip(seq, nxt), progress, "DDIM", len(seq)):
        tt = torch.full((B,), t, dtype=torch.long, device=x.device)
        eps = model(x, tt)
        x = ddim_step(schedule, x, t, t_prev, eps, eta=eta, clip=clip, generator=generator)
        if traj is not None:
            traj.append(x)
    return (x, torch.stack(traj)) if traj is not None else x
