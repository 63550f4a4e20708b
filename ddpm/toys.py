"""The 2-D toy data sets, drawn fresh with a ``generator`` and scaled into [-1, 1]^2 (book chapter
"Training and sampling"): ``moons``, ``swissroll``, ``8gaussians``, ``checkerboard``, ``mixture``.
The last two Gaussian ones are :class:`ddpm.GaussianMixture` objects, so their exact
``E[eps | x_t]`` is known (:func:`toy_mixture`). They are scaled so that almost all of their mass
lies in [-1, 1], never clipped (clipping would change the distribution whose exact score the
testbed knows).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .testbed import GaussianMixture

TOYS = ("moons", "swissroll", "8gaussians", "checkerboard", "mixture")
DEFAULT_TOY_N = 10_000  # points drawn for a toy when n is not given: plenty for a 2-D MLP


def _check_n(n) -> int | None:
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an int >= 1 or None, got {n!r}")
    return int(n)


def _rand(shape, generator) -> Tensor:
    return torch.rand(shape, generator=generator, dtype=torch.float64)


def _randn(shape, generator) -> Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float64)


# ---------------------------------------------------------------------------- 2-D toys
def make_moons(n: int, *, noise: float = 0.05, generator: torch.Generator | None = None) -> Tensor:
    """Two interleaved half circles (scikit-learn's ``make_moons`` shape), scaled into [-1, 1]^2.

    The noiseless moons span x in [-1, 2], y in [-0.5, 1]; they are centred and divided by 1.6
    (same factor on both axes, so the shape is kept). ``noise`` is the Gaussian std before scaling.
    """
    n = _check_n(n)
    half = n // 2
    a = math.pi * _rand(n, generator)  # (n,)
    upper = torch.arange(n) < half
    x = torch.where(upper, a.cos(), 1 - a.cos())
    y = torch.where(upper, a.sin(), 0.5 - a.sin())
    pts = torch.stack([x, y], 1) + noise * _randn((n, 2), generator)  # (n, 2)
    pts = (pts - torch.tensor([0.5, 0.25], dtype=torch.float64)) / 1.6
    return pts[torch.randperm(n, generator=generator)].float()


def make_swissroll(n: int, *, noise: float = 0.3, generator: torch.Generator | None = None) -> Tensor:
    """The 2-D swiss roll ``r (cos r, sin r)``, ``r ~ U[1.5 pi, 4.5 pi]``, divided by 15 (so in ~[-0.95, 0.95]^2).

    ``noise`` is the Gaussian std before scaling (0.3 -> 0.02 after).
    """
    n = _check_n(n)
    r = 1.5 * math.pi * (1 + 2 * _rand(n, generator))  # (n,)
    pts = torch.stack([r * r.cos(), r * r.sin()], 1) + noise * _randn((n, 2), generator)
    return (pts / 15.0).float()


def make_checkerboard(n: int, *, generator: torch.Generator | None = None) -> Tensor:
    """Uniform on the 8 dark squares of a 4x4 board covering [-1, 1]^2 (the FFJORD toy, halved)."""
    n = _check_n(n)
    x1 = 4 * _rand(n, generator) - 2  # (n,) in [-2, 2)
    x2 = _rand(n, generator) - 2 * torch.randint(0, 2, (n,), generator=generator).double()
    x2 = x2 + torch.floor(x1).remainder(2)
    return (torch.stack([x1, x2], 1) / 2).float()


def toy_mixture(name: str = "mixture") -> GaussianMixture:
    """The :class:`GaussianMixture` behind a Gaussian toy, for its exact score.

    ``"8gaussians"``: ``GaussianMixture.ring(8, radius=0.7, std=0.1)``. ``"mixture"``: three
    unequal, anisotropic components (weights 0.5, 0.3, 0.2), the exact-score testbed's 2-D example.
    """
    if name == "8gaussians":
        return GaussianMixture.ring(k=8, radius=0.7, std=0.1)
    if name == "mixture":
        means = [[-0.45, -0.35], [0.45, 0.45], [0.5, -0.5]]
        covs = [
            [[0.04, 0.015], [0.015, 0.02]],
            [[0.015, 0.0], [0.0, 0.03]],
            [[0.01, -0.005], [-0.005, 0.01]],
        ]
        return GaussianMixture(means, covs, [0.5, 0.3, 0.2])
    raise ValueError(f"toy_mixture name must be '8gaussians' or 'mixture', got {name!r}")


def make_toy(name: str, n: int = DEFAULT_TOY_N, *, generator: torch.Generator | None = None) -> Tensor:
    """``n`` points of the 2-D toy ``name`` (one of ``TOYS``), float32 ``(n, 2)``."""
    n = _check_n(n)
    if name == "moons":
        return make_moons(n, generator=generator)
    if name == "swissroll":
        return make_swissroll(n, generator=generator)
    if name == "checkerboard":
        return make_checkerboard(n, generator=generator)
    if name in ("8gaussians", "mixture"):
        return toy_mixture(name).sample(n, generator=generator)
    raise ValueError(f"toy name must be one of {TOYS}, got {name!r}")
