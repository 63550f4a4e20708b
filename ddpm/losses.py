"""Training loss and the variational bound (book chapters "The variational bound (ELBO)" and "The tractable loss").

All bound terms are in nats per example (summed over the data dimensions), shape ``(B,)``,
computed in float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from tqdm import tqdm  # the text bar: tqdm.auto warns on import in a notebook without ipywidgets

from ._utils import TimeArg, batch_size, check_t, extract
from .forward import _noise_like, q_mean_variance, q_sample
from .posterior import posterior_mean_from_eps, q_posterior
from .schedule import VARIANCES

DEFAULT_BIN_WIDTH = 2.0 / 255.0  # 8-bit data scaled to [-1, 1] (DDPM section 3.3)


def _sum_dims(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).sum(1)  # (B,)


def _call(model, x: Tensor, t: TimeArg) -> Tensor:
    B = x.shape[0]
    tt = t if isinstance(t, Tensor) else torch.full((B,), int(t), dtype=torch.long, device=x.device)
    eps = model(x, tt)
    if tuple(eps.shape) != tuple(x.shape):
        raise ValueError(f"model(x_t, t) must return eps of shape {tuple(x.shape)}, got {tuple(eps.shape)}")
    return eps


def loss_simple(model, schedule, x0: Tensor, *, t=None, noise=None, generator: torch.Generator | None = None) -> Tensor:
    """``L_simple = E_{t, x0, eps} ||eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t)||^2``.

    DDPM (Ho et al. 2020) eq. 14 and Algorithm 1; chapter "The tractable loss" (claims K5, K6). ``t`` is
    drawn uniformly from 1..T per example unless given (the draw is in range by construction and is
    not read back, so on a GPU the step never waits for the device). Returns the mean over the batch
    and the data dimensions (the 1/d factor does not change the minimiser).
    """
    B = batch_size(x0, "x0")
    if t is None:
        t = torch.randint(1, schedule.T + 1, (B,), generator=generator, device=x0.device)
    else:
        t = check_t(t, schedule.T, batch=B)
    noise = _noise_like(x0, noise, generator)
    x_t = q_sample(schedule, x0, t, noise=noise)
    eps = _call(model, x_t, t)
    dtype = torch.promote_types(eps.dtype, torch.float32)  # at least float32, even under bf16 autocast
    return (eps.to(dtype) - noise.to(dtype)).pow(2).mean()


def gaussian_kl(mean1, var1, mean2, var2) -> Tensor:
    """Elementwise ``KL(N(mean1, var1) || N(mean2, var2))`` in nats::

        1/2 [ln(var2/var1) + (var1 + (mean1 - mean2)^2)/var2 - 1]

    Claim K1 of chapter "The tractable loss" (Kullback-Leibler between univariate Gaussians); summed over
    coordinates it is the isotropic multivariate KL (claim K2). Arguments broadcast.
    """
    mean1, var1, mean2, var2 = (torch.as_tensor(v, dtype=torch.float64) if not isinstance(v, Tensor) else v for v in (mean1, var1, mean2, var2))
    return 0.5 * (torch.log(var2) - torch.log(var1) + (var1 + (mean1 - mean2) ** 2) / var2 - 1.0)


def prior_loss(schedule, x0: Tensor) -> Tensor:
    """``L_T = KL(q(x_T | x0) || N(0, I))`` per example (DDPM eq. 5; claim F6 of chapter "The variance-preserving forward process").

    It has no parameter theta (claim E4); per coordinate it is
    ``1/2 [abar_T x0^2 - abar_T - ln(1 - abar_T)]``.
    """
    x0 = x0.to(torch.float64)
    mean, var = q_mean_variance(schedule, x0, schedule.T)
    return _sum_dims(gaussian_kl(mean, var.expand_as(x0), torch.zeros_like(x0), torch.ones_like(x0)))


def _model_variance(schedule, t: TimeArg, x: Tensor, variance: str) -> Tensor:
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
    v = schedule.posterior_variance if variance == "small" else schedule.betas
    return extract(v.to(torch.float64), t, x)


def vb_term(model, schedule, x0: Tensor, t: TimeArg, *, noise: Tensor | None = None, variance: str = "small", generator=None) -> Tensor:
    """``L_{t-1} = KL(q(x_{t-1} | x_t, x0) || p_theta(x_{t-1} | x_t))`` per example, ``t >= 2``.

    DDPM eq. 5; chapter "The tractable loss", claims K3-K5. ``x_t`` is drawn from ``q(x_t | x0)`` with
    ``noise``; ``p_theta`` has mean DDPM eq. 11 and variance ``beta~_t`` ("small") or ``beta_t``
    ("large").
    """
    B = batch_size(x0, "x0")
    t = check_t(t, schedule.T, batch=B, low=2)
    noise = _noise_like(x0, noise, generator)
    x_t = q_sample(schedule, x0, t, noise=noise)
    eps = _call(model, x_t, t).to(torch.float64)
    x0d, x_td = x0.to(torch.float64), x_t.to(torch.float64)
    true_mean, true_var = q_posterior(schedule, x_td, t, x0d)
    mean = posterior_mean_from_eps(schedule, x_td, t, eps)
    return _sum_dims(gaussian_kl(true_mean, true_var.expand_as(x0d), mean, _model_variance(schedule, t, x0d, variance).expand_as(x0d)))


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, variance: Tensor, bin_width: float = DEFAULT_BIN_WIDTH) -> Tensor:
    """Elementwise log-probability of the bin of ``x`` under ``N(mean, variance)``.

    DDPM eq. 13 (section 3.3): the bin ``[x - w/2, x + w/2]``, with the edge bins of [-1, 1]
    extended to -inf and +inf, so the probabilities of all bins sum to 1 (claim K8, chapter "The tractable loss").
    """
    x, mean, variance = (v.to(torch.float64) for v in torch.broadcast_tensors(x, mean, torch.as_tensor(variance, dtype=torch.float64, device=x.device)))
    inv_std = variance.rsqrt()
    half = bin_width / 2
    upper = inv_std * (x - mean + half)
    lower = inv_std * (x - mean - half)
    log_cdf_upper = torch.special.log_ndtr(upper)
    log_sf_lower = torch.special.log_ndtr(-lower)  # log(1 - Phi(lower))
    # log(Phi(u) - Phi(l)), stable on either tail
    mid = torch.where(
        lower > 0,
        log_sf_lower + torch.log1p(-torch.exp(torch.special.log_ndtr(-upper) - log_sf_lower).clamp(max=1 - 1e-16)),
        log_cdf_upper + torch.log1p(-torch.exp(torch.special.log_ndtr(lower) - log_cdf_upper).clamp(max=1 - 1e-16)),
    )
    return torch.where(x < -1 + half, log_cdf_upper, torch.where(x > 1 - half, log_sf_lower, mid))


def decoder_variance(schedule, *, variance: str = "small") -> float:
    """The variance of the decoder ``p_theta(x0 | x1)``.

    ``beta~_1 = 0`` cannot be used, so DDPM's released code takes ``beta~_2`` (``beta_1`` when ``T = 1``)
    for *both* choices: ``variance`` is checked (it must be one of ``VARIANCES``) but does not change the
    result. It is accepted so that the bound's functions take the same ``variance`` everywhere."""
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
    return float(schedule.posterior_variance[2]) if schedule.T >= 2 else float(schedule.betas[1])


def decoder_nll(model, schedule, x0: Tensor, *, noise: Tensor | None = None, variance: str = "small", generator=None, bin_width: float = DEFAULT_BIN_WIDTH) -> Tensor:
    """``L_0 = -log p_theta(x0 | x1)`` per example, with DDPM's discretised Gaussian decoder
    (eq. 13). It depends on theta (claim E4 of chapter 4, "The variational bound (ELBO)").

    This is the log of a probability *mass* (of the bin of width ``bin_width`` around ``x0``),
    while the other terms are KLs between densities: to compare the whole bound with a continuous
    log-density, add ``d * log(bin_width)`` (chapter "The variational bound (ELBO)" does so)."""
    noise = _noise_like(x0, noise, generator)
    x1 = q_sample(schedule, x0, 1, noise=noise)
    eps = _call(model, x1, 1).to(torch.float64)
    mean = posterior_mean_from_eps(schedule, x1.to(torch.float64), 1, eps)
    var = torch.tensor(decoder_variance(schedule, variance=variance), dtype=torch.float64, device=x0.device)
    return -_sum_dims(discretized_gaussian_log_likelihood(x0, mean, var, bin_width))


@torch.no_grad()
def variational_bound(model, schedule, x0: Tensor, *, variance: str = "small", generator=None, bin_width: float = DEFAULT_BIN_WIDTH, progress: bool = False) -> dict:
    """The whole negative ELBO ``L = L_T + sum_{t=2}^T L_{t-1} + L_0`` (DDPM eq. 5), per
    example, in nats: a dict with ``"prior"`` (B,), ``"terms"`` (B, T) where column ``t - 1``
    holds ``L_{t-1}`` (column 0 is ``L_0``), and ``"total"`` (B,). Each term uses its own
    ``x_t ~ q(x_t | x0)``. Book chapter "The variational bound (ELBO)", claim E4.
    """
    B = batch_size(x0, "x0")
    terms = torch.zeros(B, schedule.T, dtype=torch.float64, device=x0.device)
    terms[:, 0] = decoder_nll(model, schedule, x0, variance=variance, generator=generator, bin_width=bin_width)
    rng = range(2, schedule.T + 1)
    if progress:
        rng = tqdm(rng, desc="bound", leave=False)
    for t in rng:
        terms[:, t - 1] = vb_term(model, schedule, x0, t, variance=variance, generator=generator)
    prior = prior_loss(schedule, x0)
    return {"prior": prior, "terms": terms, "total": prior + terms.sum(1)}


def bits_per_dim(model, schedule, x0: Tensor, *, variance: str = "small", generator=None, bin_width: float = DEFAULT_BIN_WIDTH, progress: bool = False) -> Tensor:
    """The negative ELBO of :func:`variational_bound` in bits per dimension, shape ``(B,)``:
    an upper bound on ``-log2 p_theta(x0) / d`` (DDPM Table 2 reports 3.75 on CIFAR-10)."""
    total = variational_bound(model, schedule, x0, variance=variance, generator=generator, bin_width=bin_width, progress=progress)["total"]
    d = x0[0].numel()
    return total / (d * math.log(2))
