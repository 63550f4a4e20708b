"""An exact ELBO testbed: a 1-D diffusion whose reverse model has a mean affine in ``x_t``
(book chapter 4, "The variational bound (ELBO)", claims E1 and E4).

If every ``p_theta(x_{t-1} | x_t)`` is Gaussian with mean ``A_t x_t + B_t`` (true of DDPM's eq. 11
whenever ``eps_theta`` is affine in ``x_t``, e.g. the exact ``E[eps | x_t]`` of Gaussian data plus an
offset) and ``x_T ~ N(0, 1)``, the whole model ``p_theta(x_{0:T})`` is one ``(T + 1)``-dimensional
Gaussian. So are the forward process ``q(x_{1:T} | x_0)`` and the model's posterior
``p_theta(x_{1:T} | x_0)``: ``log p_theta(x_0)``, the ELBO and the Jensen gap
``KL(q(x_{1:T} | x_0) || p_theta(x_{1:T} | x_0))`` are closed-form matrix expressions, computed here
without the term-by-term decomposition of DDPM eq. 5 (``torch.distributions`` does the Gaussian
algebra and the KL). :meth:`LinearGaussianChain.bound_terms` computes that decomposition with the
package's own ``prior_loss``, ``vb_term`` and ``decoder_nll``, so the two routes can be compared.

The decoder ``p_theta(x_0 | x_1)`` is a Gaussian *density* with DDPM's decoder variance
(:func:`ddpm.decoder_variance`); the package's ``L_0`` integrates that density over a bin of width
``bin_width``, so ``bound_terms`` adds back ``log(bin_width)`` (the difference is ``O(bin_width^2)``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torch.distributions import MultivariateNormal, kl_divergence

from .losses import decoder_nll, decoder_variance, prior_loss, vb_term
from .posterior import posterior_mean_from_eps
from .schedule import Schedule

__all__ = ["EpsOffset", "LinearGaussianChain"]

_F64 = torch.float64


class EpsOffset:
    """The reverse model ``eps_theta(x_t, t) = base(x_t, t) + theta``: one parameter that moves a model."""

    def __init__(self, base, theta: float):
        self.base, self.theta = base, float(theta)

    def __call__(self, x_t: Tensor, t) -> Tensor:
        return self.base(x_t, t) + self.theta

    def __repr__(self) -> str:
        return f"EpsOffset({self.base!r}, theta={self.theta})"


class LinearGaussianChain:
    """The exact joint Gaussians of a 1-D diffusion with an affine reverse model.

    ``model(x_t, t) -> eps`` must be affine in ``x_t`` for every ``t`` (checked at three points; a
    ``ValueError`` otherwise); data are scalars, passed as floats. ``variance`` is the reverse
    variance of the steps ``t >= 2`` ("small": ``beta~_t``, "large": ``beta_t``), as in
    :func:`ddpm.vb_term`; the step ``t = 1`` uses :func:`ddpm.decoder_variance`.
    """

    def __init__(self, schedule: Schedule, model, *, variance: str = "small"):
        if not isinstance(schedule, Schedule):
            raise ValueError(f"schedule must be a ddpm.Schedule, got {type(schedule).__name__}")
        if variance not in ("small", "large"):
            raise ValueError(f"variance must be one of ('small', 'large'), got {variance!r}")
        self.schedule, self.model, self.variance = schedule.to(dtype=_F64), model, variance
        self.T = schedule.T
        self.A, self.B = self._reverse_coefficients()
        v = (self.schedule.posterior_variance if variance == "small" else self.schedule.betas).clone()
        v[1] = decoder_variance(self.schedule, variance=variance)  # beta~_1 = 0 cannot be used
        self.reverse_var = v  # index t: the variance of x_{t-1} given x_t

    def _reverse_coefficients(self) -> tuple[Tensor, Tensor]:
        """``mu_theta(x_t, t) = A_t x_t + B_t`` (DDPM eq. 11 through the package), read off at
        ``x_t = 0, 1`` and checked at ``x_t = -2``."""
        T = self.T
        A, B = torch.zeros(T + 1, dtype=_F64), torch.zeros(T + 1, dtype=_F64)
        x = torch.tensor([[0.0], [1.0], [-2.0]], dtype=_F64)
        for t in range(1, T + 1):
            eps = self.model(x, torch.full((3,), t, dtype=torch.long)).to(_F64)
            mu = posterior_mean_from_eps(self.schedule, x, t, eps)[:, 0]
            B[t], A[t] = mu[0], mu[1] - mu[0]
            if not torch.allclose(mu[2], B[t] - 2 * A[t], rtol=1e-9, atol=1e-9):
                raise ValueError(f"the model's mean is not affine in x_t at t = {t}: the testbed needs an affine eps_theta")
        return A, B

    # ------------------------------------------------------------------ the three Gaussians
    def model_joint(self) -> MultivariateNormal:
        """``p_theta(x_0, ..., x_T)`` (coordinate ``t`` is ``x_t``): ``x_T ~ N(0, 1)``,
        ``x_{t-1} = A_t x_t + B_t + sigma_t z``."""
        T = self.T
        mean = torch.zeros(T + 1, dtype=_F64)
        L = torch.zeros(T + 1, T + 1, dtype=_F64)  # x = mean + L z, z ~ N(0, I)
        L[T, T] = 1.0
        for t in range(T, 0, -1):
            mean[t - 1] = self.A[t] * mean[t] + self.B[t]
            L[t - 1] = self.A[t] * L[t]
            L[t - 1, t - 1] = self.reverse_var[t].sqrt()
        return MultivariateNormal(mean, scale_tril=torch.linalg.cholesky(L @ L.T))

    def forward_joint(self, x0: float) -> MultivariateNormal:
        """``q(x_1, ..., x_T | x_0)`` in closed form (DDPM eq. 4 and the Markov chain):
        ``E x_t = sqrt(abar_t) x_0`` and ``Cov(x_s, x_t) = sqrt(abar_t / abar_s) (1 - abar_s)`` for ``s <= t``."""
        ab = self.schedule.alpha_bars[1:]  # abar_1..abar_T
        s_idx = torch.arange(self.T)
        lo = torch.minimum(s_idx[:, None], s_idx[None, :])
        hi = torch.maximum(s_idx[:, None], s_idx[None, :])
        cov = (ab[hi] / ab[lo]).sqrt() * (1 - ab[lo])
        return MultivariateNormal(ab.sqrt() * float(x0), covariance_matrix=cov)

    def posterior(self, x0: float) -> MultivariateNormal:
        """``p_theta(x_1, ..., x_T | x_0)``: the model joint conditioned on its first coordinate."""
        joint = self.model_joint()
        c, S = joint.mean, joint.covariance_matrix
        m = c[1:] + S[1:, 0] / S[0, 0] * (float(x0) - c[0])
        C = S[1:, 1:] - torch.outer(S[1:, 0], S[0, 1:]) / S[0, 0]
        return MultivariateNormal(m, covariance_matrix=0.5 * (C + C.T))

    # ------------------------------------------------------------------ the exact quantities
    def log_prob(self, x0: float) -> float:
        """``log p_theta(x_0)``: the density of the model's marginal of ``x_0``."""
        joint = self.model_joint()
        return torch.distributions.Normal(joint.mean[0], joint.covariance_matrix[0, 0].sqrt()).log_prob(
            torch.tensor(float(x0), dtype=_F64)).item()

    def elbo(self, x0: float) -> float:
        """``E_q[log p_theta(x_{0:T}) - log q(x_{1:T} | x_0)]`` (DDPM eq. 3 with the sign flipped),
        computed from the two Gaussians' moments, not from the per-step terms."""
        joint, q = self.model_joint(), self.forward_joint(x0)
        ybar = torch.cat([torch.tensor([float(x0)], dtype=_F64), q.mean])
        Cy = torch.zeros(self.T + 1, self.T + 1, dtype=_F64)
        Cy[1:, 1:] = q.covariance_matrix  # x_0 is fixed, x_{1:T} ~ q
        P = joint.precision_matrix
        e_log_joint = joint.log_prob(ybar) - 0.5 * torch.trace(P @ Cy)  # E of a quadratic form
        return (e_log_joint + q.entropy()).item()

    def gap(self, x0: float) -> float:
        """``KL(q(x_{1:T} | x_0) || p_theta(x_{1:T} | x_0))`` (``torch.distributions.kl_divergence``)."""
        return kl_divergence(self.forward_joint(x0), self.posterior(x0)).item()

    def exact(self, x0: float) -> tuple[float, float, float]:
        """``(log p_theta(x_0), ELBO(x_0), KL gap)``, each by its own route."""
        return self.log_prob(x0), self.elbo(x0), self.gap(x0)

    def bound_terms(self, x0: float, *, n_nodes: int = 20, bin_width: float = 1e-4) -> tuple[float, float, list[float]]:
        """``(L_T, L_0, [L_1, ..., L_{T-1}])`` of DDPM eq. 5 from the package's ``prior_loss``,
        ``decoder_nll`` and ``vb_term``, their expectation over the noise by Gauss-Hermite quadrature
        with ``n_nodes`` nodes (exact up to rounding for these Gaussian integrands, the discretised
        decoder aside). ``L_0`` is returned as a density (``log(bin_width)`` added back), so
        ``L_T + L_0 + sum(L_{t-1}) = -ELBO`` up to ``O(bin_width^2)``."""
        z, w = np.polynomial.hermite_e.hermegauss(n_nodes)
        w = torch.tensor(w / math.sqrt(2 * math.pi), dtype=_F64)
        xb = torch.full((n_nodes, 1), float(x0), dtype=_F64)
        noise = torch.tensor(z, dtype=_F64)[:, None]
        s = self.schedule
        L_T = prior_loss(s, xb[:1]).item()
        L_0 = (w * decoder_nll(self.model, s, xb, noise=noise, variance=self.variance, bin_width=bin_width)).sum().item()
        L_0 += math.log(bin_width)
        mids = [(w * vb_term(self.model, s, xb, t, noise=noise, variance=self.variance)).sum().item() for t in range(2, self.T + 1)]
        return L_T, L_0, mids
