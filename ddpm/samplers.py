"""The DDPM and DDIM samplers (book chapters 6, "Training and sampling", and 7, "DDIM").

A model is any callable ``model(x_t, t) -> eps_hat`` with ``t`` a LongTensor of shape
``(B,)`` on the 1..T scale: a trained network, or the exact score of
:class:`ddpm.testbed.GaussianMixture` (a diffusers ``UNet2DModel``, which counts ``t`` from 0,
through :func:`ddpm.from_diffusers`).

The whole samplers return one type, a tensor: :func:`sample_ddpm` and :func:`sample_ddim` the
final ``x_0``, :func:`ddpm_trajectory` and :func:`ddim_trajectory` every visited state stacked
(the last entry is the same ``x_0`` the sampler returns for the same seed). Inside the loops no
step waits for the device: every ``t`` is a host integer and every check that needs a value is
done once, before the first step.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Sequence, Union

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm  # the text bar: tqdm.auto warns on import in a notebook without ipywidgets

from ._utils import TimeArg, batch_size, check_same_shape, check_t, extract
from .posterior import posterior_mean_from_eps, predict_x0, q_posterior, x0_to_eps
from .schedule import VARIANCES, Schedule

Model = Callable[[Tensor, Tensor], Tensor]
Spacing = Union[str, Sequence[int], Tensor]
SPACINGS = ("trailing", "leading", "linspace", "quadratic")


# ---------------------------------------------------------------------- time steps
def timesteps(T: int, *, steps: int | None = None, spacing: Spacing = "trailing") -> Tensor:
    """The decreasing sequence ``tau_S > ... > tau_1`` of time steps a sampler visits.

    - ``"trailing"``: ``round(T - k T/S)`` for k = 0..S-1; starts at ``T`` (Lin et al. 2024).
    - ``"leading"``: ``1 + k floor(T/S)``; never visits ``T``, a known trap (chapter "DDIM").
    - ``"linspace"``: ``S`` points evenly spaced from 1 to ``T``, both included.
    - ``"quadratic"``: ``floor((k sqrt(0.8 T)/(S-1))^2) + 1`` (DDIM appendix D.2), the
      smallest steps nudged apart so that none repeats.

    A named spacing needs ``steps`` (``S``, an int in 1..T). An explicit sequence (strictly
    decreasing, each in 1..T) is accepted too and returned as is; ``steps`` may then be omitted or
    must equal its length (a different ``steps`` is refused, not ignored). Book chapter "DDIM", claim D8.
    Returns a ``LongTensor`` of length ``S``.
    """
    if isinstance(T, bool) or not isinstance(T, numbers.Integral) or T < 1:
        raise ValueError(f"T must be an int >= 1, got {T!r}")
    if not isinstance(spacing, str):
        seq = torch.as_tensor(spacing).reshape(-1)
        if seq.dtype.is_floating_point or seq.dtype == torch.bool or seq.numel() < 1:
            raise ValueError("an explicit timestep sequence must be a non-empty sequence of ints")
        seq = seq.long().cpu()
        if (seq < 1).any() or (seq > T).any():
            raise ValueError(f"explicit timesteps must lie in 1..{T}, got {seq.tolist()}")
        if seq.numel() > 1 and not (seq[:-1] > seq[1:]).all():
            raise ValueError(f"explicit timesteps must be strictly decreasing, got {seq.tolist()}")
        if steps is not None and steps != seq.numel():
            raise ValueError(
                f"steps = {steps!r} conflicts with the explicit sequence of {seq.numel()} timesteps; omit steps or pass {seq.numel()}"
            )
        return seq.clone()
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


def _check_clip(clip) -> None:
    if clip is not None and not (isinstance(clip, numbers.Real) and not isinstance(clip, bool) and clip > 0):
        raise ValueError(f"clip must be a number > 0 or None, got {clip!r}")


def _check_eta(eta) -> float:
    if isinstance(eta, bool) or not (isinstance(eta, numbers.Real) and math.isfinite(eta) and eta >= 0):
        raise ValueError(f"eta must be a finite number >= 0, got {eta!r}")
    return float(eta)


def _clip(schedule: Schedule, x_t: Tensor, t: TimeArg, eps: Tensor, clip: float | None) -> tuple[Tensor, Tensor]:
    """x0_hat from eps, clamped to [-clip, clip] when ``clip`` is set (eps then re-derived)."""
    x0 = predict_x0(schedule, x_t, t, eps)
    if clip is None:
        return x0, eps
    x0 = x0.clamp(-clip, clip)
    return x0, x0_to_eps(schedule, x_t, t, x0)


def _take(coef: Tensor, t: TimeArg) -> Tensor:
    """``coef[t]``: a 0-d tensor for an int ``t``, ``(B,)`` on ``t``'s device for a tensor ``t``."""
    if isinstance(t, Tensor):
        return coef.to(device=t.device, non_blocking=True)[t]
    return coef[t]


def _host(t: TimeArg) -> bool:
    return not isinstance(t, Tensor) or t.device.type == "cpu"


def ddpm_step(
    schedule: Schedule,
    x_t: Tensor,
    t: TimeArg,
    eps: Tensor,
    *,
    variance: str = "small",
    noise: Tensor | None = None,
    clip: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One ancestral step ``x_{t-1} = mu_theta(x_t, t) + sigma_t z`` (DDPM Algorithm 2, line 4).

    ``mu_theta`` is DDPM eq. 11 (claim K4); it equals the posterior mean of the predicted
    ``x0_hat`` (claim S1, chapter "Training and sampling"). ``variance="small"`` takes ``sigma_t^2 = beta~_t``,
    ``"large"`` takes ``sigma_t^2 = beta_t`` (DDPM section 3.2). At ``t = 1`` no noise is
    added (``z = 0``), so the first step's variance, ``beta~_1 = 0`` or ``beta_1``, is never used:
    the step returns the mean, ``x0_hat``. ``clip`` clamps ``x0_hat`` to ``[-clip, clip]``.
    ``noise`` is ``z`` (drawn with ``generator`` if not given).
    """
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
    _check_clip(clip)
    check_same_shape(eps, x_t, "eps", "x_t")
    t = check_t(t, schedule.T, batch=batch_size(x_t, "x_t"))
    if clip is None:
        mean = posterior_mean_from_eps(schedule, x_t, t, eps)
    else:
        x0, _ = _clip(schedule, x_t, t, eps, clip)
        mean, _ = q_posterior(schedule, x_t, t, x0)
    var = schedule.posterior_variance if variance == "small" else schedule.betas
    if isinstance(t, int):
        if t == 1:
            if noise is not None:
                check_same_shape(noise, x_t, "noise", "x_t")
            return mean
        return mean + extract(var.sqrt(), t, x_t) * _step_noise(x_t, noise, generator)
    sigma = extract(var.sqrt() * (torch.arange(schedule.T + 1, device=var.device) > 1), t, x_t)  # 0 at t = 1
    return mean + sigma * _step_noise(x_t, noise, generator)


def _check_pair(schedule: Schedule, t: TimeArg, t_prev: TimeArg, batch: int | None) -> tuple[TimeArg, TimeArg]:
    t = check_t(t, schedule.T, batch=batch)
    t_prev = check_t(t_prev, schedule.T - 1, name="t_prev", low=0, batch=batch)
    if isinstance(t, Tensor) and isinstance(t_prev, Tensor) and batch is None and t.shape != t_prev.shape:
        raise ValueError(f"t and t_prev must have the same shape, got {tuple(t.shape)} and {tuple(t_prev.shape)}")
    if _host(t) and _host(t_prev):  # values known on the host: check t_prev < t (skipped on a device)
        bad = torch.as_tensor(t_prev) >= torch.as_tensor(t)
        if bool(bad.any()):
            tv = torch.as_tensor(t).expand_as(bad)[bad].reshape(-1)[0].item()
            pv = torch.as_tensor(t_prev).expand_as(bad)[bad].reshape(-1)[0].item()
            raise ValueError(f"t_prev must be < t, got t_prev = {pv} and t = {tv}")
    return t, t_prev


def _sigma(schedule: Schedule, t: TimeArg, t_prev: TimeArg, eta: float) -> Tensor:
    a = schedule.alpha_bars
    at, ap = _take(a, t), _take(a, t_prev)
    return eta * ((1 - ap) / (1 - at)).sqrt() * (1 - at / ap).clamp(min=0).sqrt()


def ddim_sigma(schedule: Schedule, t: TimeArg, t_prev: TimeArg, *, eta: float) -> Tensor:
    """``sigma_t(eta) = eta sqrt((1 - abar_{t_prev})/(1 - abar_t)) sqrt(1 - abar_t/abar_{t_prev})``.

    DDIM (Song et al. 2021) eq. 16; claim D4 of chapter "DDIM". ``eta = 1`` gives
    ``sigma^2 = beta~_t`` (DDPM with the small variance), ``eta = 0`` the deterministic sampler.
    ``t`` in 1..T, ``t_prev`` in 0..T-1 with ``t_prev < t`` (ints, or integer tensors of one shape;
    the order is checked where the values are on the host). Returned in the schedule's dtype
    (0-d for int ``t``, shape ``(B,)`` otherwise).
    """
    eta = _check_eta(eta)
    t, t_prev = _check_pair(schedule, t, t_prev, None)
    return _sigma(schedule, t, t_prev, eta)


def ddim_eta_max(schedule: Schedule, t: TimeArg, t_prev: TimeArg) -> Tensor:
    """The largest ``eta`` for which the DDIM step from ``t`` to ``t_prev`` exists.

    DDIM eq. 12 needs ``sigma^2 <= 1 - abar_{t_prev}``; with eq. 16 this is
    ``eta^2 <= (1 - abar_t) abar_{t_prev} / (abar_{t_prev} - abar_t)``, which is ``>= 1`` for every
    pair (so ``eta <= 1`` is always allowed) and ``inf`` at ``t_prev = 0``. Book chapter "DDIM", claim D4.
    """
    t, t_prev = _check_pair(schedule, t, t_prev, None)
    a = schedule.alpha_bars
    at, ap = _take(a, t), _take(a, t_prev)
    out = ((1 - at) * ap / (ap - at)).sqrt()
    return torch.where(ap == 1, torch.full_like(out, math.inf), out)  # t_prev = 0: sigma = 0 for every eta


def _check_ddim_bound(schedule: Schedule, t: TimeArg, t_prev: TimeArg, eta: float) -> None:
    """Raise if ``1 - abar_{t_prev} - sigma^2 < 0`` (only possible for ``eta > 1``)."""
    if eta <= 1:
        return
    a = schedule.alpha_bars.detach().cpu().to(torch.float64)  # one read, before any step
    tt, tp = torch.broadcast_tensors(torch.as_tensor(t).cpu().reshape(-1), torch.as_tensor(t_prev).cpu().reshape(-1))
    at, ap = a[tt], a[tp]
    sigma2 = eta**2 * (1 - ap) / (1 - at) * (1 - at / ap)
    room = 1 - ap - sigma2
    bad = room < -1e-12 * (1 - ap)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        eta_max = math.sqrt(float((1 - at[i]) * ap[i] / (ap[i] - at[i])))
        raise ValueError(
            f"eta = {eta:g} leaves the DDIM family at t = {int(tt[i])} -> t_prev = {int(tp[i])}: "
            f"1 - abar_t_prev - sigma^2 = {float(room[i]):.3g} < 0 (DDIM eq. 12 needs sigma^2 <= 1 - abar_t_prev); "
            f"there eta must be <= {eta_max:.4f}"
        )


def ddim_step(
    schedule: Schedule,
    x_t: Tensor,
    t: TimeArg,
    t_prev: TimeArg,
    eps: Tensor,
    *,
    eta: float = 0.0,
    noise: Tensor | None = None,
    clip: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One DDIM step from ``t`` to ``t_prev < t`` (DDIM eq. 12, sigma from eq. 16)::

        x_{t_prev} = sqrt(abar_{t_prev}) x0_hat
                     + sqrt(1 - abar_{t_prev} - sigma^2) eps + sigma z

    Claim D5 of chapter "DDIM". ``t_prev = 0`` uses ``abar_0 = 1`` (the last step returns
    ``x0_hat``). ``eta = 0`` is deterministic; ``noise`` (``z``) is ignored where ``eta = 0`` or
    ``t_prev = 0``. An ``eta`` above 1 can make ``1 - abar_{t_prev} - sigma^2`` negative, where
    the step does not exist: that raises ``ValueError`` naming ``eta``, ``t`` and the largest
    allowed ``eta`` (:func:`ddim_eta_max`); it is never clamped. For ``eta > 1`` this check reads
    the schedule's values (on a GPU schedule: one wait per call; :func:`sample_ddim` checks every
    step once, before the loop).
    """
    eta = _check_eta(eta)
    _check_clip(clip)
    check_same_shape(eps, x_t, "eps", "x_t")
    t, t_prev = _check_pair(schedule, t, t_prev, batch_size(x_t, "x_t"))
    _check_ddim_bound(schedule, t, t_prev, eta)
    return _ddim_update(schedule, x_t, t, t_prev, eps, eta, noise, clip, generator)


def _ddim_update(schedule, x_t, t, t_prev, eps, eta, noise, clip, generator) -> Tensor:
    x0, eps = _clip(schedule, x_t, t, eps, clip)
    sigma = _sigma(schedule, t, t_prev, eta)
    a_prev = _take(schedule.alpha_bars, t_prev)
    dir_coef = (1 - a_prev - sigma**2).clamp(min=0).sqrt()  # >= 0 up to rounding once checked
    shape = (-1,) + (1,) * (x_t.dim() - 1) if sigma.dim() == 1 else ()
    out = _as(a_prev.sqrt(), x_t, shape) * x0 + _as(dir_coef, x_t, shape) * eps
    if eta == 0 or (isinstance(t_prev, int) and t_prev == 0):
        if noise is not None:
            check_same_shape(noise, x_t, "noise", "x_t")
        return out
    return out + _as(sigma, x_t, shape) * _step_noise(x_t, noise, generator)


def _as(c: Tensor, x: Tensor, shape) -> Tensor:
    c = c.reshape(shape) if shape else c
    if c.dim() == 0 and c.device.type == "cpu":
        return c.to(dtype=x.dtype)
    return c.to(device=x.device, dtype=x.dtype, non_blocking=True)


# ---------------------------------------------------------------------- whole samplers
def _start(model, schedule: Schedule, shape, generator, x_T, device, dtype) -> Tensor:
    if x_T is not None:
        if not isinstance(x_T, Tensor) or tuple(x_T.shape) != tuple(shape):
            raise ValueError(f"x_T must be a tensor of shape {tuple(shape)}, got {tuple(getattr(x_T, 'shape', ()))}")
        return x_T
    if device is None or dtype is None:
        p = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
        device = device if device is not None else (p.device if p is not None else (generator.device if generator is not None else schedule.device))
        dtype = dtype if dtype is not None else (p.dtype if p is not None and p.dtype.is_floating_point else torch.float32)
    return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)


def _progress(it, progress: bool, desc: str, total: int):
    if not progress:
        return it

    return tqdm(it, total=total, desc=desc, leave=False)


def _ddpm_states(model, schedule, shape, generator, variance, clip, x_T, progress, device, dtype):
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
    _check_clip(clip)
    x = _start(model, schedule, shape, generator, x_T, device, dtype)
    yield x
    B = x.shape[0]
    for t in _progress(range(schedule.T, 0, -1), progress, "DDPM", schedule.T):
        tt = torch.full((B,), t, dtype=torch.long, device=x.device)
        eps = model(x, tt)
        x = ddpm_step(schedule, x, t, eps, variance=variance, clip=clip, generator=generator)
        yield x


def _ddim_states(model, schedule, shape, steps, eta, spacing, generator, clip, x_T, progress, device, dtype):
    eta = _check_eta(eta)
    _check_clip(clip)
    if steps is None and isinstance(spacing, str):
        steps = 50
    seq = timesteps(schedule.T, steps=steps, spacing=spacing).tolist()
    nxt = seq[1:] + [0]
    _check_ddim_bound(schedule, torch.tensor(seq), torch.tensor(nxt), eta)  # every step, once, on the host
    x = _start(model, schedule, shape, generator, x_T, device, dtype)
    yield x
    B = x.shape[0]
    for t, t_prev in _progress(zip(seq, nxt), progress, "DDIM", len(seq)):
        tt = torch.full((B,), t, dtype=torch.long, device=x.device)
        eps = model(x, tt)
        check_same_shape(eps, x, "model(x_t, t)", "x_t")
        x = _ddim_update(schedule, x, t, t_prev, eps, eta, None, clip, generator)
        yield x


def _last(states) -> Tensor:
    x = None
    for x in states:
        pass
    return x


_SAMPLER_ARGS = """
    ``generator`` draws ``x_T`` and every step's noise; ``x_T`` (shape ``shape``) replaces the first
    draw. Runs on the device and dtype of ``x_T`` if given, else of ``device``/``dtype``, else of the
    model's parameters (float32 on the generator's, else the schedule's, device for a plain callable).
    ``clip`` clamps every ``x0_hat`` to ``[-clip, clip]``; ``progress`` shows a tqdm bar."""


@torch.no_grad()
def sample_ddpm(
    model: Model,
    schedule: Schedule,
    shape: Sequence[int],
    *,
    generator: torch.Generator | None = None,
    variance: str = "small",
    clip: float | None = None,
    x_T: Tensor | None = None,
    progress: bool = True,
    device=None,
    dtype=None,
) -> Tensor:
    """Ancestral sampling, DDPM Algorithm 2: ``x_T ~ N(0, I)``, then ``T`` calls of
    :func:`ddpm_step` from ``t = T`` down to 1 (chapter "Training and sampling"). Returns ``x_0``, shape ``shape``;
    :func:`ddpm_trajectory` returns every state.
    """
    return _last(_ddpm_states(model, schedule, shape, generator, variance, clip, x_T, progress, device, dtype))


@torch.no_grad()
def ddpm_trajectory(
    model: Model,
    schedule: Schedule,
    shape: Sequence[int],
    *,
    generator: torch.Generator | None = None,
    variance: str = "small",
    clip: float | None = None,
    x_T: Tensor | None = None,
    progress: bool = True,
    device=None,
    dtype=None,
) -> Tensor:
    """:func:`sample_ddpm`, keeping every state: a tensor of shape ``(T + 1, *shape)`` holding
    ``x_T, x_{T-1}, ..., x_0`` (entry ``k`` is ``x_{T-k}``; the last is ``sample_ddpm``'s result
    for the same arguments)."""
    return torch.stack(list(_ddpm_states(model, schedule, shape, generator, variance, clip, x_T, progress, device, dtype)))


@torch.no_grad()
def sample_ddim(
    model: Model,
    schedule: Schedule,
    shape: Sequence[int],
    *,
    steps: int | None = None,
    eta: float = 0.0,
    spacing: Spacing = "trailing",
    generator: torch.Generator | None = None,
    clip: float | None = None,
    x_T: Tensor | None = None,
    progress: bool = True,
    device=None,
    dtype=None,
) -> Tensor:
    """DDIM sampling (Song et al. 2021, eq. 12 over a sub-sequence tau, section 4.2):
    ``steps`` calls of :func:`ddim_step` over :func:`timesteps` ``(T, steps=steps, spacing=spacing)``,
    the last one to ``t_prev = 0`` (chapter "DDIM", claims D5 and D8). Returns ``x_0``;
    :func:`ddim_trajectory` returns every state.

    ``steps`` defaults to 50 for a named spacing and to the sequence's length for an explicit one.
    ``eta = 0`` is deterministic given ``x_T``; ``eta = 1`` with every step is DDPM with the small
    variance. An ``eta`` for which some step does not exist (possible only above 1) is refused
    before the first step (see :func:`ddim_step`).
    """
    return _last(_ddim_states(model, schedule, shape, steps, eta, spacing, generator, clip, x_T, progress, device, dtype))


@torch.no_grad()
def ddim_trajectory(
    model: Model,
    schedule: Schedule,
    shape: Sequence[int],
    *,
    steps: int | None = None,
    eta: float = 0.0,
    spacing: Spacing = "trailing",
    generator: torch.Generator | None = None,
    clip: float | None = None,
    x_T: Tensor | None = None,
    progress: bool = True,
    device=None,
    dtype=None,
) -> Tensor:
    """:func:`sample_ddim`, keeping every state: a tensor of shape ``(S + 1, *shape)`` holding
    ``x_{tau_S}, ..., x_{tau_1}, x_0`` (the last is ``sample_ddim``'s result for the same arguments)."""
    return torch.stack(list(_ddim_states(model, schedule, shape, steps, eta, spacing, generator, clip, x_T, progress, device, dtype)))


for _f in (sample_ddpm, ddpm_trajectory, sample_ddim, ddim_trajectory):
    if _f.__doc__ is not None:  # None under python -OO
        _f.__doc__ += _SAMPLER_ARGS
