"""The forward process: claims F1-F4 as properties, on fresh random inputs."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ddpm
from ddpm import Schedule

N = 200_000


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 1000), st.integers(0, 2**31 - 1))
def test_F1_one_step_moments(t, seed):
    s = Schedule.linear()
    g = _gen(seed)
    x_prev = torch.randn(3, generator=g, dtype=torch.float64).expand(N, 3)
    x = ddpm.q_step(s, x_prev, t, generator=g)
    b = s.betas[t].item()
    se = 5 * (b / N) ** 0.5 + 1e-12
    torch.testing.assert_close(x.mean(0), s.alphas[t].sqrt() * x_prev[0], atol=se, rtol=0)
    torch.testing.assert_close(x.var(0), torch.full((3,), b, dtype=torch.float64), atol=6 * b * (2 / N) ** 0.5, rtol=0)


@settings(max_examples=15, deadline=None)
@given(st.integers(2, 1000), st.integers(0, 2**31 - 1))
def test_F2_two_steps_merge(t, seed):
    s = Schedule.linear()
    g = _gen(seed)
    e1, e2 = torch.randn(2, N, generator=g, dtype=torch.float64)
    z = s.alphas[t].sqrt() * s.betas[t - 1].sqrt() * e1 + s.betas[t].sqrt() * e2
    target = 1 - s.alphas[t] * s.alphas[t - 1]
    # the merged noise is the x_{t-2} -> x_t noise: its variance is 1 - alpha_t alpha_{t-1}
    assert z.var().item() == pytest.approx(target.item(), rel=6 * (2 / N) ** 0.5)
    x0 = torch.zeros(1, dtype=torch.float64)
    assert ddpm.q_mean_variance(Schedule.from_betas(s.betas[t - 1 : t + 1]), x0, 2)[1].item() == pytest.approx(target.item())


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 1000), st.integers(0, 2**31 - 1))
def test_F3_closed_form_moments(t, seed):
    s = Schedule.linear()
    g = _gen(seed)
    x0 = (2 * torch.rand(4, generator=g, dtype=torch.float64) - 1).expand(N, 4)
    x = ddpm.q_sample(s, x0, t, generator=g)
    mean, var = ddpm.q_mean_variance(s, x0[:1], t)
    v = var.item()
    torch.testing.assert_close(x.mean(0), mean[0], atol=5 * (max(v, 1e-12) / N) ** 0.5 + 1e-12, rtol=0)
    torch.testing.assert_close(x.var(0), torch.full((4,), v, dtype=torch.float64), atol=6 * v * (2 / N) ** 0.5 + 1e-12, rtol=0)


def test_F3_iterating_steps_matches_closed_form_in_law_not_pathwise():
    s = Schedule.linear(T=50, beta_start=2e-3, beta_end=0.4)
    g = _gen(0)
    n = 100_000
    x0 = torch.full((n, 1), 0.7, dtype=torch.float64)
    x = x0
    step_noises = []
    for t in range(1, s.T + 1):
        e = torch.randn(n, 1, generator=g, dtype=torch.float64)
        step_noises.append(e)
        x = ddpm.q_step(s, x, t, noise=e)
    mean, var = ddpm.q_mean_variance(s, x0[:1], s.T)
    assert x.mean().item() == pytest.approx(mean.item(), abs=5 * (var.item() / n) ** 0.5)
    assert x.var().item() == pytest.approx(var.item(), rel=6 * (2 / n) ** 0.5)
    # the aggregate noise is a weighted sum of the per-step noises, weights^2 telescoping to 1 - abar_T
    eps = (x - s.sqrt_alpha_bars[-1] * x0) / s.sqrt_one_minus_alpha_bars[-1]
    w2 = torch.stack([s.alpha_bars[-1] / s.alpha_bars[t] * s.betas[t] for t in range(1, s.T + 1)])
    assert w2.sum().item() == pytest.approx(1 - s.alpha_bars[-1].item(), rel=1e-12)
    # ... so the last step's noise and the closed form's eps are different random variables
    corr = torch.corrcoef(torch.cat([eps, step_noises[-1]], 1).T)[0, 1].item()
    expected = (s.betas[-1].sqrt() / s.sqrt_one_minus_alpha_bars[-1]).item()
    assert corr == pytest.approx(expected, abs=0.02) and corr < 0.9


@settings(max_examples=20, deadline=None)
@given(st.floats(0.01, 4.0), st.integers(0, 1000))
def test_F4_marginal_variance(data_var, t):
    s = Schedule.linear()
    v = ddpm.marginal_variance(s, data_var, t).item()
    abar = s.alpha_bars[t].item()
    assert v == pytest.approx(1 + abar * (data_var - 1))
    assert (v - 1) * (data_var - 1) >= -1e-15  # on the same side of 1 as the data
    if abs(data_var - 1) > 1e-9 and 0 < t < 1000:
        # monotone toward 1
        assert abs(ddpm.marginal_variance(s, data_var, t + 1).item() - 1) <= abs(v - 1)


def test_F4_monte_carlo():
    s = Schedule.linear()
    g = _gen(1)
    x0 = 0.5 * torch.randn(400_000, 1, generator=g, dtype=torch.float64)  # s ~ 0.5, as for images
    for t in (1, 100, 500, 1000):
        xt = ddpm.q_sample(s, x0, t, generator=g)
        assert xt.var().item() == pytest.approx(ddpm.marginal_variance(s, 0.25, t).item(), rel=0.01)


def test_shapes_and_tensor_t():
    s = Schedule.linear()
    x0 = torch.randn(5, 1, 8, 8)
    t = torch.tensor([1, 10, 100, 999, 1000])
    noise = torch.randn_like(x0)
    xt = ddpm.q_sample(s, x0, t, noise=noise)
    for i in range(5):
        torch.testing.assert_close(xt[i : i + 1], ddpm.q_sample(s, x0[i : i + 1], int(t[i]), noise=noise[i : i + 1]))
    assert xt.dtype == torch.float32
    torch.testing.assert_close(ddpm.q_sample(s, x0, 0, noise=noise), x0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(t=1001), "t must be in 0..1000"),
        (dict(t=-1), "t must be in"),
        (dict(t=torch.tensor([1, 2])), "t has 2 entries"),
        (dict(t=torch.tensor([0.5, 1.0, 2.0])), "integer tensor"),
        (dict(t=5, noise=torch.randn(3, 3)), "noise must have the shape"),
    ],
)
def test_bad_input(kwargs, match):
    s = Schedule.linear()
    with pytest.raises(ValueError, match=match):
        ddpm.q_sample(s, torch.randn(3, 2), **kwargs)
