"""Distances between sample sets (book chapters 6, "Training and sampling", and 7, "DDIM").

- 2-D data: :func:`sliced_wasserstein` and :func:`energy_distance`.
- Images: :func:`frechet_distance` in the penultimate-layer features of a small classifier
  trained on the same data set (:mod:`ddpm.classifier`; shipped for digits and Fashion-MNIST) -- the
  standard substitute for Inception features on MNIST-like data.
- :func:`distance_report` puts a distance next to the data-vs-data baseline of the same size
  (no finite sample set reaches 0) and the distance of pure noise ``N(0, I)``.
- Bits per dimension through the full variational bound: :func:`ddpm.bits_per_dim`.
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

from .features import features

METRICS = ("sliced_wasserstein", "energy", "frechet")


def _points(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a tensor of shape (N, d), got {type(x).__name__}")
    if x.dim() < 2 or x.shape[0] < 2:
        raise ValueError(f"{name} must have shape (N, d) with N >= 2, got {tuple(x.shape)}")
    x = x.reshape(x.shape[0], -1).to(torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _pair(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    x, y = _points(x, "x"), _points(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    return x, y.to(x.device)


def _quantiles(v: Tensor, m: int) -> Tensor:
    """Sorted ``v`` (P, n) resampled to ``m`` equally spaced quantile levels (P, m) by linear interpolation."""
    v, _ = v.sort(dim=1)
    n = v.shape[1]
    if n == m:
        return v
    pos = (torch.arange(m, dtype=v.dtype, device=v.device) + 0.5) / m * n - 0.5
    pos = pos.clamp(0, n - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=n - 1)
    w = pos - lo
    return v[:, lo] * (1 - w) + v[:, hi] * w


def sliced_wasserstein(x: Tensor, y: Tensor, *, n_projections: int = 256, generator: torch.Generator | None = None) -> float:
    """Sliced 2-Wasserstein distance ``SW_2 = ( E_u W_2^2(u.x, u.y) )^{1/2}`` over random unit
    directions ``u`` (Rabin et al. 2011; Bonneel et al. 2015).

    Each 1-D ``W_2`` is exact from sorted projections (quantiles interpolated when the sizes
    differ). ``x`` (N, d), ``y`` (M, d); images are flattened. Same units as the data.
    """
    if isinstance(n_projections, bool) or not isinstance(n_projections, numbers.Integral) or n_projections < 1:
        raise ValueError(f"n_projections must be an int >= 1, got {n_projections!r}")
    x, y = _pair(x, y)
    d = x.shape[1]
    u = torch.randn(d, n_projections, generator=generator, dtype=torch.float64, device=generator.device if generator is not None else "cpu")
    u = (u / u.norm(dim=0, keepdim=True)).to(x.device)  # (d, P) unit columns
    m = max(x.shape[0], y.shape[0])
    px = _quantiles((x @ u).T, m)  # (P, m)
    py = _quantiles((y @ u).T, m)
    return float((px - py).pow(2).mean().sqrt())


def _mean_dist(a: Tensor, b: Tensor, same: bool, chunk: int = 2048) -> Tensor:
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for i in range(0, a.shape[0], chunk):
        total = total + torch.cdist(a[i : i + chunk], b).sum()
    n, m = a.shape[0], b.shape[0]
    return total / (n * (n - 1) if same else n * m)  # the diagonal of a self-distance matrix is 0


def energy_distance(x: Tensor, y: Tensor) -> float:
    """Energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` (Szekely & Rizzo 2013), with the
    unbiased (U-statistic) within-set means. 0 in expectation iff the distributions agree; this
    estimate can be slightly negative for two samples of one distribution.
    """
    x, y = _pair(x, y)
    return float(2 * _mean_dist(x, y, False) - _mean_dist(x, x, True) - _mean_dist(y, y, True))


# ---------------------------------------------------------------------------- Frechet distance
def frechet_distance_gaussian(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """``||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1^{1/2} S2 S1^{1/2})^{1/2})``: the 2-Wasserstein distance
    squared between two Gaussians (Dowson & Landau 1982), FID's formula (Heusel et al. 2017).

    The cross term uses the symmetric form ``tr (S1^{1/2} S2 S1^{1/2})^{1/2}``, computed with
    symmetric eigendecompositions in float64 (no complex ``sqrtm``).
    """
    mu1, mu2 = mu1.double(), mu2.double()
    cov1, cov2 = cov1.double(), cov2.double()
    w, V = torch.linalg.eigh(0.5 * (cov1 + cov1.T))
    s1 = (V * w.clamp(min=0).sqrt()) @ V.T  # S1^{1/2}
    M = s1 @ cov2 @ s1
    cross = torch.linalg.eigvalsh(0.5 * (M + M.T)).clamp(min=0).sqrt().sum()
    return float((mu1 - mu2).pow(2).sum() + cov1.trace() + cov2.trace() - 2 * cross)


def _stats(f: Tensor) -> tuple[Tensor, Tensor]:
    f = f.double()
    return f.mean(0), torch.cov(f.T)


def frechet_distance_features(fx: Tensor, fy: Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N, k) and (M, k)."""
    fx, fy = _pair(fx, fy)
    return frechet_distance_gaussian(*_stats(fx), *_stats(fy))


def frechet_distance(x: Tensor, y: Tensor, classifier="digits", *, batch_size: int = 500) -> float:
    """Frechet distance between image sets ``x`` and ``y`` in the penultimate-layer features of a
    ``classifier``: the name of a shipped one ("digits": (N, 1, 8, 8); "fashion-mnist":
    (N, 1, 28, 28)), the weight file or folder of one you trained, or a loaded classifier; images in
    [-1, 1]. Smaller is closer; compare with the data-vs-data value at the same size
    (:func:`distance_report`), since the estimate is biased upwards for small sets.
    """
    return frechet_distance_features(features(x, classifier, batch_size), features(y, classifier, batch_size))


# ---------------------------------------------------------------------------- report
def distance_report(
    samples: Tensor,
    data: Tensor,
    metric: str = "sliced_wasserstein",
    *,
    generator: torch.Generator | None = None,
    classifier=None,
    n_projections: int = 256,
) -> dict:
    """The distance from ``samples`` (n of them) to ``n`` data points, next to the data-vs-data
    baseline (two disjoint sets of ``n`` data points) and the noise-vs-data value (``n`` draws of
    ``N(0, I)``). ``data`` must hold at least ``2 n`` points; they are split with ``generator``.

    ``metric``: ``"sliced_wasserstein"``, ``"energy"``, or ``"frechet"`` (images; ``classifier``
    is the classifier, as in :func:`frechet_distance`). Returns ``{"metric", "n", "distance", "baseline", "noise"}``.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if metric == "frechet" and classifier is None:
        raise ValueError("metric='frechet' needs classifier= ('digits', 'fashion-mnist', a weight file or a loaded classifier)")
    n = samples.shape[0]
    if data.shape[0] < 2 * n:
        raise ValueError(f"data must hold at least 2 n = {2 * n} points for the data-vs-data baseline, got {data.shape[0]}; use fewer samples")
    if tuple(samples.shape[1:]) != tuple(data.shape[1:]):
        raise ValueError(f"samples have shape {tuple(samples.shape[1:])} per item, data {tuple(data.shape[1:])}")
    perm = torch.randperm(data.shape[0], generator=generator)
    ref, other = data[perm[:n]], data[perm[n : 2 * n]]
    noise = torch.randn(samples.shape, generator=generator, dtype=torch.float32)

    if metric == "sliced_wasserstein":
        def dist(a, b):
            # Same projections for every pair: a fair comparison.
            g = torch.Generator().manual_seed(0)
            return sliced_wasserstein(a, b, n_projections=n_projections, generator=g)
    elif metric == "energy":
        dist = energy_distance
    else:
        fref = features(ref, classifier)

        def dist(a, b):  # b is always ref
            return frechet_distance_features(features(a, classifier), fref)

    return {
        "metric": metric,
        "n": int(n),
        "distance": dist(samples.detach().cpu().float(), ref),
        "baseline": dist(other, ref),
        "noise": dist(noise, ref),
    }
