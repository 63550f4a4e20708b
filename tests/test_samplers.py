"""Samplers: claims D2, D4, D5, D7, D8 and S2, the t = T and t = 1 steps, and bad input."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ddpm
from ddpm import GaussianMixture, Schedule

seeds = st.integers(0, 2**31 - 1)


# ---------------------------------------------------------------- timesteps
def test_timesteps_spacings():
    T = 1000
    tr = ddpm.timesteps(T, steps=10, spacing="trailing")
    assert tr.tolist() == [1000, 900, 800, 700, 600, 500, 400, 300, 200, 100]
    le = ddpm.timesteps(T, steps=10, spacing="leading")
    assert le.tolist() == [901, 801, 701, 601, 501, 401, 301, 201, 101, 1] and T not in le.tolist()
    li = ddpm.timesteps(T, steps=10, spacing="linspace")
    assert li[0] == T and li[-1] == 1
    qu = ddpm.timesteps(T, steps=10, spacing="quadratic")
    assert qu[-1] == 1 and qu[0] == int(800) + 1  # (sqrt(0.8 T))^2 = 800, 0-based -> 801
    for sp in ("trailing", "leading", "linspace"):
        full = ddpm.timesteps(T, steps=T, spacing=sp)
        assert full.tolist() == list(range(T, 0, -1)), sp
    for sp in ddpm.samplers.SPACINGS:
        for S in (1, 7, 50, 999, 1000):
            seq = ddpm.timesteps(T, steps=S, spacing=sp)
            assert len(seq) == S and (seq[:-1] > seq[1:]).all() and seq.min() >= 1 and seq.max() <= T
    assert ddpm.timesteps(T, steps=3, spacing=[50, 20, 1]).tolist() == [50, 20, 1]


@pytest.mark.parametrize(
    "args, match",
    [
        (dict(steps=0), "steps must be an int in 1..1000"),
        (dict(steps=1001), "steps must be an int in 1..1000"),
        (dict(steps=10, spacing="cubic"), "spacing must be one of"),
        (dict(steps=2.5), "steps must be an int"),
        (dict(), "steps must be an int"),
        (dict(steps=3, spacing=[1, 20, 50]), "strictly decreasing"),
        (dict(steps=3, spacing=[1001, 20, 5]), "1..1000"),
        (dict(steps=10, spacing=[50, 20, 1]), "conflicts with the explicit sequence of 3"),
        (dict(spacing=[50.0, 20.0]), "sequence of ints"),
    ],
)
def test_timesteps_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        ddpm.timesteps(1000, **args)


# ---------------------------------------------------------------- single steps
@settings(max_examples=30, deadline=None)
@given(st.integers(1, 1000), seeds)
def test_D4_sigma_eta1_is_posterior_std(t, seed):
    s = Schedule.linear()
    sig = ddpm.ddim_sigma(s, t, t - 1, eta=1.0)
    assert sig.item() ** 2 == pytest.approx(s.posterior_variance[t].item(), rel=1e-9, abs=1e-18)
    eta = torch.rand(1, generator=torch.Generator().manual_seed(seed)).item() * 2
    tp = max(0, t - 1 - seed % 50)
    a, ap = s.alpha_bars[t], s.alpha_bars[tp]
    expect = eta * ((1 - ap) / (1 - a)).sqrt() * (1 - a / ap).sqrt()
    assert ddpm.ddim_sigma(s, t, tp, eta=eta).item() == pytest.approx(expect.item(), rel=1e-12, abs=1e-300)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 1000), seeds, st.sampled_from(["small", "large"]))
def test_ddim_eta1_equals_ddpm_small_step(t, seed, variance):
    s = Schedule.linear()
    g = torch.Generator().manual_seed(seed)
    x, eps, z = torch.randn(3, 4, 3, generator=g, dtype=torch.float64)
    a = ddpm.ddim_step(s, x, t, t - 1, eps, eta=1.0, noise=z)
    b = ddpm.ddpm_step(s, x, t, eps, noise=z, variance="small")
    torch.testing.assert_close(a, b)
    if variance == "large" and 1 < t <= 100:  # ... and not DDPM with beta (they differ where abar_{t-1} is not small)
        c = ddpm.ddpm_step(s, x, t, eps, noise=z, variance="large")
        assert not torch.allclose(a, c)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 1000), seeds)
def test_D5_update_formula_and_S1(t, seed):
    s = Schedule.cosine()
    g = torch.Generator().manual_seed(seed)
    x, eps, z = torch.randn(3, 5, 2, generator=g, dtype=torch.float64)
    tp = max(0, t - 1 - seed % 100)
    eta = 0.5
    sig = ddpm.ddim_sigma(s, t, tp, eta=eta)
    x0h = ddpm.predict_x0(s, x, t, eps)
    ap = s.alpha_bars[tp]
    expect = ap.sqrt() * x0h + (1 - ap - sig**2).sqrt() * eps + sig * z
    torch.testing.assert_close(ddpm.ddim_step(s, x, t, tp, eps, eta=eta, noise=z), expect)
    # S1: the ancestral mean is the posterior mean at x0_hat (unclipped)
    mean, var = ddpm.q_posterior(s, x, t, x0h)
    torch.testing.assert_close(ddpm.ddpm_step(s, x, t, eps, noise=z), mean + (var.sqrt() if t > 1 else 0) * z)


def test_step_at_t1_and_T():
    s = Schedule.linear()
    x, eps, z = torch.randn(3, 4, 2, dtype=torch.float64)
    # t = 1: no noise, the step returns x0_hat; DDIM's last step uses abar_0 = 1
    x0h = ddpm.predict_x0(s, x, 1, eps)
    torch.testing.assert_close(ddpm.ddpm_step(s, x, 1, eps, noise=z), x0h)
    torch.testing.assert_close(ddpm.ddpm_step(s, x, 1, eps, noise=z, variance="large"), x0h)
    torch.testing.assert_close(ddpm.ddim_step(s, x, 1, 0, eps, eta=1.0, noise=z), x0h)
    torch.testing.assert_close(ddpm.ddim_step(s, x, 100, 0, eps, noise=z), ddpm.predict_x0(s, x, 100, eps))
    # t = T: coefficients are the schedule's last
    out = ddpm.ddpm_step(s, x, 1000, eps, noise=z, variance="large")
    mean = (x - s.betas[1000] / s.sqrt_one_minus_alpha_bars[1000] * eps) / s.alphas[1000].sqrt()
    torch.testing.assert_close(out, mean + s.betas[1000].sqrt() * z)


def test_tensor_t_matches_int_t():
    s = Schedule.linear()
    x, eps, z = torch.randn(3, 4, 1, 2, 2, dtype=torch.float64)
    t = torch.tensor([1, 2, 500, 1000])
    tp = torch.tensor([0, 1, 250, 999])
    a = ddpm.ddpm_step(s, x, t, eps, noise=z)
    b = ddpm.ddim_step(s, x, t, tp, eps, eta=0.7, noise=z)
    for i in range(4):
        sl = slice(i, i + 1)
        torch.testing.assert_close(a[sl], ddpm.ddpm_step(s, x[sl], int(t[i]), eps[sl], noise=z[sl]))
        torch.testing.assert_close(b[sl], ddpm.ddim_step(s, x[sl], int(t[i]), int(tp[i]), eps[sl], eta=0.7, noise=z[sl]))


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 1000), seeds)
def test_D7_eta0_is_an_euler_step(t, seed):
    s = Schedule.linear()
    g = torch.Generator().manual_seed(seed)
    x, eps = torch.randn(2, 6, generator=g, dtype=torch.float64)
    tp = max(0, t - 1 - seed % 200)
    a, ap = s.alpha_bars[t], s.alpha_bars[tp]
    xbar = x / a.sqrt()
    sbar, sbar_p = ((1 - a) / a).sqrt(), ((1 - ap) / ap).sqrt()
    out = ddpm.ddim_step(s, x[None], t, tp, eps[None], eta=0.0)[0]
    torch.testing.assert_close(out / ap.sqrt(), xbar + (sbar_p - sbar) * eps)


@pytest.mark.parametrize("t, t_prev, eta", [(1000, 999, 0.0), (1000, 0, 0.0), (600, 100, 0.5), (300, 200, 1.0), (50, 0, 1.0)])
def test_D2_D8_family_keeps_marginals(t, t_prev, eta):
    """For data that is a point x0, E[eps|x_t] is the true eps; a DDIM step (consecutive or
    skipped) then maps q(x_t|x0) onto q(x_{t_prev}|x0) for every sigma."""
    s = Schedule.linear()
    g = torch.Generator().manual_seed(t + t_prev)
    n = 200_000
    x0 = torch.tensor([[0.6, -0.3]], dtype=torch.float64).expand(n, 2)
    eps = torch.randn(n, 2, generator=g, dtype=torch.float64)
    xt = ddpm.q_sample(s, x0, t, noise=eps)
    out = ddpm.ddim_step(s, xt, t, t_prev, eps, eta=eta, generator=g)
    mean, var = ddpm.q_mean_variance(s, x0[:1], t_prev)
    v = var.item()
    torch.testing.assert_close(out.mean(0), mean[0], atol=5 * (v / n) ** 0.5 + 1e-9, rtol=0)
    torch.testing.assert_close(out.var(0), torch.full((2,), v, dtype=torch.float64), atol=6 * v * (2 / n) ** 0.5 + 1e-9, rtol=0)


# ---------------------------------------------------------------- whole samplers with the exact score
def _mixture():
    means = torch.tensor([[-0.5, 0.2], [0.4, -0.3], [0.1, 0.6]], dtype=torch.float64)
    covs = torch.tensor([[[0.04, 0.01], [0.01, 0.02]], [[0.03, -0.01], [-0.01, 0.05]], [[0.02, 0.0], [0.0, 0.02]]], dtype=torch.float64)
    return GaussianMixture(means, covs, torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))


def _moments_close(x, mix, n):
    x = x.double()
    m, C = mix.mean(), mix.cov()
    se_m = (torch.diagonal(C) / n).sqrt()
    assert ((x.mean(0) - m).abs() < 5 * se_m + 5e-3).all(), (x.mean(0), m)
    # covariance entries: standard error about sqrt((C_ii C_jj + C_ij^2)/n)
    se_c = ((torch.diagonal(C)[:, None] * torch.diagonal(C)[None] + C**2) / n).sqrt()
    assert ((torch.cov(x.T) - C).abs() < 6 * se_c + 5e-3).all(), (torch.cov(x.T), C)


def test_S2_ddpm_1000_reproduces_mixture():
    s = Schedule.linear()
    mix = _mixture().bind(s)
    n = 4000
    x = ddpm.sample_ddpm(mix, s, (n, 2), generator=torch.Generator().manual_seed(0), progress=False, dtype=torch.float64)
    _moments_close(x, mix, n)


@pytest.mark.parametrize("steps", [50, 200])
def test_S2_ddim_eta0_reproduces_mixture(steps):
    s = Schedule.linear()
    mix = _mixture().bind(s)
    n = 4000
    x = ddpm.sample_ddim(mix, s, (n, 2), steps=steps, generator=torch.Generator().manual_seed(1), progress=False, dtype=torch.float64)
    _moments_close(x, mix, n)


def test_ddim_error_shrinks_as_steps_grow():
    s = Schedule.linear()
    mix = _mixture().bind(s)
    xT = torch.randn(3000, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    errs = []
    for steps in (5, 20, 100):
        x = ddpm.sample_ddim(mix, s, xT.shape, steps=steps, x_T=xT, progress=False)
        errs.append((torch.cov(x.T) - mix.cov()).norm().item())
    assert errs[0] > errs[1] > errs[2] * 0.9 or errs[2] < 2e-3, errs
    assert errs[0] > errs[2]


def test_ddim_eta1_all_steps_equals_ddpm_small_given_same_noise():
    s = Schedule.linear(T=200, beta_start=5e-4, beta_end=0.1)
    mix = _mixture().bind(s)
    a = ddpm.ddim_trajectory(mix, s, (64, 2), steps=200, eta=1.0, generator=torch.Generator().manual_seed(5), progress=False, dtype=torch.float64)
    b = ddpm.ddpm_trajectory(mix, s, (64, 2), generator=torch.Generator().manual_seed(5), progress=False, dtype=torch.float64)
    torch.testing.assert_close(a, b)  # step by step
    assert a.shape == (201, 64, 2)
    # the trajectory's last state is the sampler's result for the same seed
    c = ddpm.sample_ddpm(mix, s, (64, 2), generator=torch.Generator().manual_seed(5), progress=False, dtype=torch.float64)
    torch.testing.assert_close(b[-1], c, rtol=0, atol=0)


def test_eta0_is_deterministic_and_eta1_is_not():
    s = Schedule.linear()
    mix = _mixture().bind(s)
    xT = torch.randn(16, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    a = ddpm.sample_ddim(mix, s, xT.shape, steps=20, x_T=xT, generator=torch.Generator().manual_seed(1), progress=False)
    b = ddpm.sample_ddim(mix, s, xT.shape, steps=20, x_T=xT, generator=torch.Generator().manual_seed(2), progress=False)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    c = ddpm.sample_ddim(mix, s, xT.shape, steps=20, eta=1.0, x_T=xT, generator=torch.Generator().manual_seed(1), progress=False)
    d = ddpm.sample_ddim(mix, s, xT.shape, steps=20, eta=1.0, x_T=xT, generator=torch.Generator().manual_seed(2), progress=False)
    assert not torch.allclose(c, d)


def test_float32_agrees_with_float64():
    s = Schedule.linear()
    mix = _mixture().bind(s)
    xT = torch.randn(256, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    a = ddpm.sample_ddim(mix, s, xT.shape, steps=50, x_T=xT, progress=False)
    b = ddpm.sample_ddim(mix, s, xT.shape, steps=50, x_T=xT.float(), progress=False)
    assert b.dtype == torch.float32
    assert ((a - b.double()).norm() / a.norm()).item() < 1e-4


def test_sampler_options_clip_and_image_shapes():
    s = Schedule.linear(T=50, beta_start=2e-3, beta_end=0.4)
    model = lambda x, t: 3 * torch.ones_like(x)  # noqa: E731  (x0_hat far outside [-1, 1])
    x = ddpm.sample_ddim(model, s, (3, 1, 4, 4), steps=10, clip=1.0, generator=torch.Generator().manual_seed(0), progress=False)
    assert x.shape == (3, 1, 4, 4) and x.abs().max() <= 1.0 + 1e-6
    y = ddpm.sample_ddpm(model, s, (3, 1, 4, 4), generator=torch.Generator().manual_seed(0), clip=1.0, progress=False)
    assert y.abs().max() <= 1.0 + 1e-6
    seen = []
    ddpm.sample_ddim(lambda x, t: (seen.append(t), torch.zeros_like(x))[1], s, (2, 3), steps=5, progress=False)
    assert all(t.dtype == torch.long and t.shape == (2,) for t in seen)
    assert [int(t[0]) for t in seen] == ddpm.timesteps(50, steps=5).tolist() and seen[0][0] == 50


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda s, x: ddpm.ddim_step(s, x, 10, 10, x), "t_prev must be < t"),
        (lambda s, x: ddpm.ddim_step(s, x, 10, 11, x), "t_prev must be < t"),
        (lambda s, x: ddpm.ddim_step(s, x, 10, 5, x, eta=-0.1), "eta must be"),
        (lambda s, x: ddpm.ddim_step(s, x, 10, 5, x, eta=0.5, noise=torch.zeros(3)), "noise must have the shape"),
        (lambda s, x: ddpm.ddpm_step(s, x, 0, x), "t must be in 1..100"),
        (lambda s, x: ddpm.ddpm_step(s, x, 101, x), "t must be in 1..100"),
        (lambda s, x: ddpm.ddpm_step(s, x, 5, x, noise=torch.zeros(2, 2)), "noise must have the shape"),
        (lambda s, x: ddpm.ddpm_step(s, x, 5, x, variance="tiny"), "variance must be one of"),
        (lambda s, x: ddpm.sample_ddim(lambda a, b: a, s, (2, 3), steps=0, progress=False), "steps must be an int in 1..100"),
        (lambda s, x: ddpm.sample_ddim(lambda a, b: a, s, (2, 3), steps=101, progress=False), "steps must be an int in 1..100"),
        (lambda s, x: ddpm.sample_ddim(lambda a, b: a, s, (2, 3), eta=-1, progress=False), "eta must be"),
    ],
)
def test_bad_input(call, match):
    s = Schedule.linear(T=100, beta_start=1e-3, beta_end=0.2)
    with pytest.raises(ValueError, match=match):
        call(s, torch.randn(4, 3))
