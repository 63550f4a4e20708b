"""An exact-score testbed: Gaussian mixtures and their closed-form ``E[eps | x_t]``
(book chapters 6, "Training and sampling", and 7, "DDIM"; claims S2 and D10).

For ``x0 ~ sum_k w_k N(mu_k, S_k)`` the noisy marginal is again a mixture,
``q_t = sum_k w_k N(sqrt(abar_t) mu_k, abar_t S_k + (1 - abar_t) I)``, so its score is closed
form and Tweedie's formula gives the optimal noise predictor
``E[eps | x_t] = -sqrt(1 - abar_t) grad log q_t(x_t)``. A :class:`GaussianMixture` used as
``model(x_t, t)`` lets the samplers run with no training in the loop.
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
from torch import Tensor

from ._utils import check_t
from .schedule import Schedule


class GaussianMixture:
    """A mixture of ``K`` Gaussians in ``d`` dimensions, held in float64.

    ``means`` (K, d); ``covs`` (K, d, d), a shared (d, d), or variances (K,) or one float for
    isotropic components; ``weights`` (K,) summing to 1 (uniform by default). Data of any shape ``(B, *event_shape)`` with ``prod(event_shape) = d`` is accepted.
    """

    def __init__(self, means, covs=1.0, weights=None, event_shape: Sequence[int] | None = None):
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.dim() == 1:
            means = means[None]
        if means.dim() != 2:
            raise ValueError(f"means must have shape (K, d), got {tuple(means.shape)}")
        K, d = means.shape
        covs = torch.as_tensor(covs, dtype=torch.float64)
        if covs.dim() == 0:
            covs = covs.expand(K)
        if covs.dim() == 1:
            if covs.shape[0] != K:
                raise ValueError(f"covs as variances must have length K = {K}, got {covs.shape[0]}")
            covs = covs[:, None, None] * torch.eye(d, dtype=torch.float64)
        elif covs.dim() == 2:
            covs = covs.expand(K, d, d)
        if tuple(covs.shape) != (K, d, d):
            raise ValueError(f"covs must have shape (K, d, d) = {(K, d, d)}, got {tuple(covs.shape)}")
        covs = 0.5 * (covs + covs.transpose(1, 2))
        if torch.linalg.eigvalsh(covs).min() < -1e-12:
            raise ValueError("covs must be positive semi-definite")
        if weights is None:
            weights = torch.full((K,), 1.0 / K, dtype=torch.float64)
        weights = torch.as_tensor(weights, dtype=torch.float64)
        if weights.shape != (K,) or (weights < 0).any() or abs(float(weights.sum()) - 1) > 1e-9:
            raise ValueError(f"weights must be K = {K} non-negative numbers summing to 1")
        self.means, self.covs, self.weights = means.contiguous(), covs.contiguous(), weights
        self.event_shape = tuple(event_shape) if event_shape is not None else (d,)
        if math.prod(self.event_shape) != d:
            raise ValueError(f"event_shape {self.event_shape} does not hold d = {d} numbers")
        self.schedule: Schedule | None = None
        self._solved: dict = {}  # abar -> (m, C^-1, log det C): a sampler asks for the same T values again and again

    # ------------------------------------------------------------------ constructors
    @classmethod
    def gaussian(cls, mean, cov) -> "GaussianMixture":
        """A single Gaussian ``N(mean, cov)`` (``cov`` a (d, d) matrix or a variance)."""
        mean = torch.as_tensor(mean, dtype=torch.float64).reshape(1, -1)
        cov = torch.as_tensor(cov, dtype=torch.float64)
        return cls(mean, cov[None] if cov.dim() == 2 else cov.reshape(1))

    @classmethod
    def ring(cls, k: int = 8, radius: float = 0.7, std: float = 0.1) -> "GaussianMixture":
        """``k`` equal isotropic Gaussians on a circle: the "8 Gaussians" toy in [-1, 1]^2."""
        ang = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
        means = radius * torch.stack([ang.cos(), ang.sin()], 1)
        return cls(means, torch.full((k,), std**2, dtype=torch.float64))

    # ------------------------------------------------------------------ moments and sampling
    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def mean(self) -> Tensor:
        """``E[x0] = sum_k w_k mu_k``, shape (d,)."""
        return self.weights @ self.means

    def cov(self) -> Tensor:
        """``Cov x0 = sum_k w_k (S_k + mu_k mu_k^T) - m m^T``, shape (d, d)."""
        m = self.mean()
        second = torch.einsum("k,kij->ij", self.weights, self.covs + self.means[:, :, None] * self.means[:, None, :])
        return second - torch.outer(m, m)

    def sample(self, n: int, *, generator: torch.Generator | None = None, dtype=torch.float32, device=None) -> Tensor:
        """``n`` draws of ``x0``, shape ``(n, *event_shape)``."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        L = torch.linalg.cholesky(self.covs + 1e-12 * torch.eye(self.dim, dtype=torch.float64))
        x = self.means[k] + torch.einsum("nij,nj->ni", L[k], z)
        return x.reshape(n, *self.event_shape).to(device=device, dtype=dtype)

    # ------------------------------------------------------------------ the noisy marginal
    def _marginal(self, abar: float):
        a = float(abar)
        m = math.sqrt(a) * self.means  # (K, d)
        C = a * self.covs + (1 - a) * torch.eye(self.dim, dtype=torch.float64)  # (K, d, d)
        return m, C

    def log_prob(self, x: Tensor, abar: float = 1.0) -> Tensor:
        """``log q_t(x)`` of the marginal at ``abar_t`` (``abar = 1``: the data density), (B,)."""
        m, C = self._marginal(abar)
        xf = x.reshape(x.shape[0], -1).to(torch.float64).cpu()
        comp = torch.distributions.MultivariateNormal(m, covariance_matrix=C)
        lp = comp.log_prob(xf[:, None, :]) + torch.log(self.weights)  # (B, K)
        return torch.logsumexp(lp, 1)

    def _solve(self, abar: float):
        """The marginal's means, inverse covariances and log-determinants at ``abar``, kept for reuse
        (up to 64 MB of them)."""
        key = float(abar)
        hit = self._solved.get(key)
        if hit is None:
            m, C = self._marginal(key)
            hit = (m, torch.linalg.inv(C), torch.linalg.slogdet(C)[1])
            if (len(self._solved) + 1) * C.numel() * 8 <= 64 * 2**20:
                self._solved[key] = hit
        return hit

    def score(self, x: Tensor, abar: float) -> Tensor:
        """``grad_x log q_t(x)`` at ``abar_t`` (must be < 1 unless every component has full rank)."""
        m, Cinv, logdet = self._solve(abar)  # (K, d), (K, d, d), (K,)
        xf = x.reshape(x.shape[0], -1).to(torch.float64).cpu()  # (B, d)
        diff = xf[:, None, :] - m[None]  # (B, K, d)
        sol = torch.einsum("kij,bkj->bki", Cinv, diff)  # C_k^{-1}(x - m_k), (B, K, d)
        lp = -0.5 * (diff * sol).sum(2) - 0.5 * logdet + torch.log(self.weights)  # (B, K), constants dropped
        r = torch.softmax(lp, 1)  # responsibilities (B, K)
        s = -(r[:, :, None] * sol).sum(1)  # (B, d)
        return s.reshape(x.shape).to(device=x.device, dtype=x.dtype)

    def eps(self, x_t: Tensor, t, schedule: Schedule | None = None) -> Tensor:
        """The optimal noise predictor ``E[eps | x_t] = -sqrt(1 - abar_t) grad log q_t(x_t)``
        (Tweedie; claim D10 of chapter "DDIM"). ``t``: an int or a LongTensor (B,)."""
        schedule = schedule if schedule is not None else self.schedule
        if schedule is None:
            raise ValueError("eps needs a schedule: pass schedule= or use mixture.bind(schedule)")
        t = check_t(t, schedule.T, batch=x_t.shape[0] if x_t.dim() else None)
        if isinstance(t, Tensor):
            tc = t.cpu()  # the testbed computes on the CPU in float64
            if tc.numel() and bool((tc == tc[0]).all()):
                return self.eps(x_t, int(tc[0]), schedule)
            out = torch.empty_like(x_t)
            for tv in torch.unique(tc).tolist():
                idx = (tc == tv).nonzero().squeeze(1).to(x_t.device)
                out[idx] = self.eps(x_t[idx], int(tv), schedule)
            return out
        a = float(schedule.alpha_bars[t])
        return -math.sqrt(1 - a) * self.score(x_t, a)

    def x0_mean(self, x_t: Tensor, t: int, schedule: Schedule | None = None) -> Tensor:
        """``E[x0 | x_t] = (x_t + (1 - abar_t) grad log q_t) / sqrt(abar_t)`` (Tweedie; claim D10).
        ``t``: an int in 0..T (``t = 0`` gives ``x_t`` itself)."""
        schedule = schedule if schedule is not None else self.schedule
        if schedule is None:
            raise ValueError("x0_mean needs a schedule: pass schedule= or use mixture.bind(schedule)")
        t = check_t(t, schedule.T, low=0)
        if not isinstance(t, int):
            raise ValueError("x0_mean takes one int t for the whole batch")
        if t == 0:
            return x_t.clone()
        a = float(schedule.alpha_bars[t])
        return (x_t + (1 - a) * self.score(x_t, a)) / math.sqrt(a)

    def bind(self, schedule: Schedule) -> "GaussianMixture":
        """A new mixture, the same distribution, bound to ``schedule`` so that it is a model:
        ``mixture.bind(schedule)(x_t, t) -> E[eps | x_t]``. ``self`` is left unchanged (a handle bound
        earlier keeps its schedule)."""
        if not isinstance(schedule, Schedule):
            raise ValueError(f"bind needs a Schedule, got {type(schedule).__name__}")
        new = copy.copy(self)
        new.schedule = schedule
        return new

    def __call__(self, x_t: Tensor, t) -> Tensor:
        return self.eps(x_t, t)

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.means.shape[0]}, d={self.dim})"
