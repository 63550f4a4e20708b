"""The exact-score testbed (ddpm.GaussianMixture): its score is the gradient of its log-density, its
eps is Tweedie's formula, the mixed-t path equals the per-t one, and bind has no hidden state."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ddpm
from ddpm import GaussianMixture, Schedule


def _mix():
    means = torch.tensor([[-0.5, 0.2], [0.4, -0.3], [0.1, 0.6]], dtype=torch.float64)
    covs = torch.tensor([[[0.04, 0.01], [0.01, 0.02]], [[0.03, -0.01], [-0.01, 0.05]], [[0.02, 0.0], [0.0, 0.02]]], dtype=torch.float64)
    return GaussianMixture(means, covs, torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))


@settings(max_examples=20, deadline=None)
@given(st.floats(0.01, 0.999), st.integers(0, 2**31 - 1))
def test_score_is_the_gradient_of_log_prob(abar, seed):
    mix = _mix()
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).requires_grad_(True)
    (grad,) = torch.autograd.grad(mix.log_prob(x, abar).sum(), x)
    torch.testing.assert_close(mix.score(x.detach(), abar), grad, rtol=1e-8, atol=1e-10)


def test_log_prob_is_the_noisy_marginal_by_monte_carlo():
    """q_t's density at a point, against a kernel estimate from ddpm.q_sample of mixture draws."""
    s = Schedule.linear()
    mix = _mix()
    t = 200
    x0 = mix.sample(400_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    xt = ddpm.q_sample(s, x0, t, generator=torch.Generator().manual_seed(1))
    p = torch.tensor([[0.1, 0.0]], dtype=torch.float64)
    h = 0.05  # the box's half-width
    frac = ((xt - p).abs() < h).all(1).double().mean().item()
    dens = mix.log_prob(p, s.alpha_bars[t].item()).exp().item()
    assert frac / (2 * h) ** 2 == pytest.approx(dens, rel=0.05)


def test_eps_is_the_posterior_mean_of_the_noise():
    """Tweedie: E[eps | x_t] at a point, against Monte Carlo over the draws that land near it."""
    s = Schedule.linear()
    mix = _mix().bind(s)
    t = 300
    g = torch.Generator().manual_seed(2)
    x0 = mix.sample(1_000_000, generator=g, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    xt = ddpm.q_sample(s, x0, t, noise=eps)
    p = torch.tensor([[0.2, 0.1]], dtype=torch.float64)
    near = ((xt - p).abs() < 0.03).all(1)
    mc = eps[near].mean(0)
    se = eps[near].std(0) / math.sqrt(int(near.sum()))
    assert ((mix(p, t)[0] - mc).abs() < 5 * se + 0.02).all(), (mix(p, t), mc)
    # x0_mean and eps are the two faces of one Tweedie estimate
    torch.testing.assert_close(mix.x0_mean(p, t), ddpm.predict_x0(s, p, t, mix(p, t)))


def test_mixed_t_batch_equals_per_t():
    s = Schedule.linear()
    mix = _mix().bind(s)
    x = torch.randn(7, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    t = torch.tensor([1, 500, 3, 500, 1000, 1, 77])
    out = mix(x, t)
    for i in range(7):
        torch.testing.assert_close(out[i : i + 1], mix(x[i : i + 1], int(t[i])))
    torch.testing.assert_close(mix(x, torch.full((7,), 42)), mix(x, 42))  # the one-t fast path
    with pytest.raises(ValueError, match="t must be in 1..1000"):
        mix(x, torch.tensor([0, 1, 2, 3, 4, 5, 6]))
    with pytest.raises(ValueError, match="integer tensor"):
        mix(x, torch.full((7,), 5.0))


def test_bind_returns_a_new_object():
    s1, s2 = Schedule.linear(100), Schedule.linear(1000)
    mix = _mix()
    a = mix.bind(s1)
    b = a.bind(s2)
    assert mix.schedule is None and a.schedule is s1 and b.schedule is s2  # no handle is rebound
    x = torch.zeros(1, 2, dtype=torch.float64)
    assert not torch.allclose(a(x, 50), b(x, 50))
    with pytest.raises(ValueError, match="needs a schedule"):
        mix(x, 5)
    with pytest.raises(ValueError, match="bind needs a Schedule"):
        mix.bind("linear")
