"""Posterior and parameterisations: claims E5, K4 and D9 on fresh random inputs."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ddpm
from ddpm import Schedule

seeds = st.integers(0, 2**31 - 1)


def _normal_logpdf(x, m, v):
    return -0.5 * (math.log(2 * math.pi) + torch.log(v) + (x - m) ** 2 / v)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 1000), seeds)
def test_E5_posterior_is_bayes(t, seed):
    """q(x_{t-1}|x_t,x0) = q(x_t|x_{t-1}) q(x_{t-1}|x0) / q(x_t|x0): the log-density
    difference is constant in x_{t-1} and the normaliser matches."""
    s = Schedule.linear()
    g = torch.Generator().manual_seed(seed)
    x0, xt = torch.randn(2, 1, generator=g, dtype=torch.float64)
    xprev = torch.randn(50, generator=g, dtype=torch.float64)
    mean, var = ddpm.q_posterior(s, xt, t, x0)
    lhs = _normal_logpdf(xprev, mean, var)
    a, ab, abp = s.alphas[t], s.alpha_bars[t], s.alpha_bars[t - 1]
    rhs = (
        _normal_logpdf(xt, a.sqrt() * xprev, s.betas[t])
        + _normal_logpdf(xprev, abp.sqrt() * x0, 1 - abp)
        - _normal_logpdf(xt, ab.sqrt() * x0, 1 - ab)
    )
    torch.testing.assert_close(lhs, rhs, rtol=1e-7, atol=1e-7)
    # precision form: 1/beta~ = alpha/beta + 1/(1 - abar_{t-1})
    torch.testing.assert_close(1 / var.squeeze(), a / s.betas[t] + 1 / (1 - abp))


def test_E5_t1_is_deterministic():
    s = Schedule.linear()
    x0, xt = torch.randn(2, 4, 3, dtype=torch.float64)
    mean, var = ddpm.q_posterior(s, xt, 1, x0)
    torch.testing.assert_close(mean, x0)
    assert var.item() == 0


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 1000), seeds)
def test_K4_eps_form_of_mean(t, seed):
    s = Schedule.linear()
    g = torch.Generator().manual_seed(seed)
    x0, eps = torch.randn(2, 6, 2, generator=g, dtype=torch.float64)
    xt = ddpm.q_sample(s, x0, t, noise=eps)
    mean, _ = ddpm.q_posterior(s, xt, t, x0)
    torch.testing.assert_close(ddpm.posterior_mean_from_eps(s, xt, t, eps), mean)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 1000), seeds)
def test_D9_conversions_round_trip(t, seed):
    s = Schedule.cosine()
    g = torch.Generator().manual_seed(seed)
    x0, eps = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    xt = ddpm.q_sample(s, x0, t, noise=eps)
    v = ddpm.v_target(s, x0, t, eps)
    torch.testing.assert_close(ddpm.predict_x0(s, xt, t, eps), x0)
    torch.testing.assert_close(ddpm.x0_to_eps(s, xt, t, x0), eps)
    torch.testing.assert_close(ddpm.v_to_x0(s, xt, t, v), x0)
    torch.testing.assert_close(ddpm.v_to_eps(s, xt, t, v), eps)
    torch.testing.assert_close(ddpm.eps_to_v(s, xt, t, eps), v)
    torch.testing.assert_close(ddpm.x0_to_v(s, xt, t, x0), v)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 1000), seeds)
def test_D9_error_weights(t, seed):
    """||eps - eps_hat||^2 = SNR ||x0 - x0_hat||^2 and ||v - v_hat||^2 = (1 + SNR) ||x0 - x0_hat||^2."""
    s = Schedule.linear()
    g = torch.Generator().manual_seed(seed)
    x0, eps, eps_hat = torch.randn(3, 8, generator=g, dtype=torch.float64)
    xt = ddpm.q_sample(s, x0[None], t, noise=eps[None])
    x0_hat = ddpm.predict_x0(s, xt, t, eps_hat[None])
    v = ddpm.v_target(s, x0[None], t, eps[None])
    v_hat = ddpm.eps_to_v(s, xt, t, eps_hat[None])
    e_x0 = (x0 - x0_hat).pow(2).sum()
    snr = s.snr[t]
    torch.testing.assert_close((eps - eps_hat).pow(2).sum(), snr * e_x0, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close((v - v_hat).pow(2).sum(), (1 + snr) * e_x0, rtol=1e-6, atol=1e-9)


def test_float32_matches_float64():
    s = Schedule.linear()
    x0, xt, eps = torch.randn(3, 16, 2, dtype=torch.float64)
    t = torch.randint(1, 1001, (16,))
    m64, v64 = ddpm.q_posterior(s, xt, t, x0)
    m32, v32 = ddpm.q_posterior(s, xt.float(), t, x0.float())
    assert m32.dtype == torch.float32
    torch.testing.assert_close(m32.double(), m64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(v32.double(), v64, rtol=1e-5, atol=1e-8)


def test_bad_input():
    s = Schedule.linear()
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="x_t must have the shape"):
        ddpm.q_posterior(s, torch.randn(3, 2), 5, x)
    with pytest.raises(ValueError, match="t must be in 1..1000"):
        ddpm.q_posterior(s, x, 0, x)
    with pytest.raises(ValueError, match="eps must have the shape"):
        ddpm.predict_x0(s, x, 3, torch.randn(4))
