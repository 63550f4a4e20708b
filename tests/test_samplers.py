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
    """sigma(eta)^2 = eta^2 Var q(x_{t_prev} | x_t, x0), the variance of the skip posterior, here by
    the precision form of Bayes' rule: 1/var = 1/(1 - abar_{t_prev}) + (abar_t/abar_{t_prev})/(1 - abar_t/abar_{t_prev})."""
    s = Schedule.linear()
    sig = ddpm.ddim_sigma(s, t, t - 1, eta=1.0)
    assert sig.item() ** 2 == pytest.approx(s.posterior_variance[t].item(), rel=1e-9, abs=1e-18)
    eta = torch.rand(1, generator=torch.Generator().manual_seed(seed)).item() * 2
    tp = max(0, t - 1 - seed % 50)
    a, ap = s.alpha_bars[t].item(), s.alpha_bars[tp].item()
    if tp == 0:
        var = 0.0  # x0 is known: no posterior spread
    else:
        r = a / ap  # the skip's own "abar" from t_prev to t
        var = 1 / (1 / (1 - ap) + r / (1 - r))
    assert ddpm.ddim_sigma(s, t, tp, eta=eta).item() ** 2 == pytest.approx(eta**2 * var, rel=1e-9, abs=1e-300)


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
def test_D5_eta1_step_samples_the_bayes_posterior_and_S1(t, seed):
    """With the true noise, a DDIM step with eta = 1 from t to any t_prev < t is a draw from
    q(x_{t_prev} | x_t, x0), whose mean and variance come here from Bayes' rule in precision form
    (not from DDIM's eq. 12)."""
    s = Schedule.cosine()
    g = torch.Generator().manual_seed(seed)
    x0, eps, z = torch.randn(3, 5, 2, generator=g, dtype=torch.float64)
    tp = max(0, t - 1 - seed % 100)
    x = ddpm.q_sample(s, x0, t, noise=eps)
    a, ap = s.alpha_bars[t], s.alpha_bars[tp]
    out = ddpm.ddim_step(s, x, t, tp, eps, eta=1.0, noise=z)
    if tp == 0:
        torch.testing.assert_close(out, x0)
    else:
        r = a / ap  # q(x_t | x_{t_prev}) = N(sqrt(r) x_{t_prev}, 1 - r); prior q(x_{t_prev} | x0) = N(sqrt(ap) x0, 1 - ap)
        prec = 1 / (1 - ap) + r / (1 - r)
        mean = (ap.sqrt() * x0 / (1 - ap) + r.sqrt() * x / (1 - r)) / prec
        torch.testing.assert_close(out, mean + prec.rsqrt() * z)
    # S1: the ancestral mean (eq. 11) is the posterior mean (eqs. 6-7) at x0_hat
    x0h = ddpm.predict_x0(s, x, t, z)  # any eps: here z, so x0_hat != x0
    mean, var = ddpm.q_posterior(s, x, t, x0h)
    torch.testing.assert_close(ddpm.ddpm_step(s, x, t, z, noise=eps), mean + (var.sqrt() if t > 1 else 0) * eps)


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
    """DDIM with eta = 0 integrates an ODE: from the same x_T, its end point approaches the
    1000-step one as S grows (a pathwise error, free of sampling noise)."""
    s = Schedule.linear()
    mix = _mixture().bind(s)
    xT = torch.randn(500, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ref = ddpm.sample_ddim(mix, s, xT.shape, steps=1000, x_T=xT, progress=False)
    errs = [(ddpm.sample_ddim(mix, s, xT.shape, steps=S, x_T=xT, progress=False) - ref).norm(dim=1).mean().item() for S in (5, 20, 100)]
    assert errs[0] > errs[1] > errs[2], errs
    assert errs[2] < 0.2 * errs[0], errs


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


# ---------------------------------------------------------------- the eta bound, explicit spacings, a whole large-variance chain
def test_eta_beyond_the_family_is_refused_not_clamped():
    s = Schedule.linear()
    x = torch.zeros(2, 2, dtype=torch.float64)
    # DDPM's sigma^2 = beta_2 at t = 2 needs eta = sqrt((1 - abar_2)/(1 - abar_1)) = 1.483 > eta_max(2, 1)
    eta_ddpm = ((1 - s.alpha_bars[2]) / (1 - s.alpha_bars[1])).sqrt().item()
    assert ddpm.ddim_sigma(s, 2, 1, eta=eta_ddpm).item() ** 2 == pytest.approx(s.betas[2].item(), rel=1e-9)
    eta_max = ddpm.ddim_eta_max(s, 2, 1).item()
    assert 1 < eta_max < eta_ddpm
    with pytest.raises(ValueError, match=r"eta = 1.48\d* leaves the DDIM family at t = 2 -> t_prev = 1: .* eta must be <= 1.354"):
        ddpm.ddim_step(s, x, 2, 1, x, eta=eta_ddpm)
    with pytest.raises(ValueError, match="leaves the DDIM family at t = 2 -> t_prev = 1"):
        ddpm.sample_ddim(lambda a, b: torch.zeros_like(a), s, (2, 2), steps=1000, eta=eta_ddpm, progress=False)
    # just inside the bound the step exists; 1 - abar_{t_prev} - sigma^2 is then ~0 and the step finite
    out = ddpm.ddim_step(s, torch.ones(2, 2, dtype=torch.float64), 2, 1, x, eta=eta_max * (1 - 1e-9), noise=x)
    assert torch.isfinite(out).all()
    # eta <= 1 is always inside: eta_max >= 1 for every pair, inf at t_prev = 0
    t = torch.arange(2, 1001)
    assert (ddpm.ddim_eta_max(s, t, t - 1) >= 1).all() and ddpm.ddim_eta_max(s, 500, 0).isinf()


def test_explicit_spacing_is_the_given_loop():
    s = Schedule.linear(T=50, beta_start=2e-3, beta_end=0.4)
    mix = _mixture().bind(s)
    xT = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    seq = [50, 31, 30, 7, 2]
    a = ddpm.sample_ddim(mix, s, xT.shape, spacing=seq, x_T=xT, progress=False)
    x = xT
    for t, tp in zip(seq, seq[1:] + [0]):
        x = ddpm.ddim_step(s, x, t, tp, mix(x, t))
    torch.testing.assert_close(a, x, rtol=0, atol=0)
    traj = ddpm.ddim_trajectory(mix, s, xT.shape, spacing=torch.tensor(seq), steps=5, x_T=xT, progress=False)
    assert traj.shape == (6, 8, 2)
    torch.testing.assert_close(traj[-1], a, rtol=0, atol=0)
    with pytest.raises(ValueError, match="conflicts with the explicit sequence"):
        ddpm.sample_ddim(mix, s, xT.shape, spacing=seq, steps=50, x_T=xT, progress=False)


def test_whole_ddpm_large_variance_chain_and_its_last_step():
    """sample_ddpm(variance="large"): every step adds sqrt(beta_t) z except the last, which returns
    x0_hat; for point data with its exact eps the chain must end exactly on the point."""
    s = Schedule.linear(T=30, beta_start=3e-3, beta_end=0.6)
    point = torch.tensor([0.4, -0.7], dtype=torch.float64)
    exact = lambda x, t: (x - s.sqrt_alpha_bars[t].reshape(-1, 1) * point) / s.sqrt_one_minus_alpha_bars[t].reshape(-1, 1)  # noqa: E731
    traj = ddpm.ddpm_trajectory(exact, s, (64, 2), variance="large", generator=torch.Generator().manual_seed(0), progress=False, dtype=torch.float64)
    assert traj.shape == (31, 64, 2)
    torch.testing.assert_close(traj[-1], point.expand(64, 2))  # the last step adds no noise
    # each earlier step's spread about its mean is sqrt(beta_t): the residual / sqrt(beta_t) is N(0, 1)
    z = []
    for k in range(30 - 1):  # k = 0: t = 30 -> 29, ..., t = 2 -> 1
        t = 30 - k
        mean = ddpm.posterior_mean_from_eps(s, traj[k], t, exact(traj[k], torch.full((64,), t)))
        z.append((traj[k + 1] - mean) / s.betas[t].sqrt())
    z = torch.stack(z)
    assert abs(z.mean().item()) < 0.05 and abs(z.var().item() - 1) < 0.05
    # ... and sample_ddpm returns the trajectory's last state
    x = ddpm.sample_ddpm(exact, s, (64, 2), variance="large", generator=torch.Generator().manual_seed(0), progress=False, dtype=torch.float64)
    torch.testing.assert_close(x, traj[-1], rtol=0, atol=0)


def test_device_and_dtype_inference():
    s = Schedule.linear(T=10, beta_start=1e-2, beta_end=0.3)
    net64 = torch.nn.Linear(2, 2).double()
    model64 = lambda x, t: net64(x)  # noqa: E731  a plain callable: float32 by default
    assert ddpm.sample_ddim(model64, s, (3, 2), steps=2, dtype=torch.float64, progress=False).dtype == torch.float64

    class Net(torch.nn.Module):
        def __init__(self, dtype):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2, dtype=dtype)

        def forward(self, x, t):
            return self.lin(x)

    assert ddpm.sample_ddim(Net(torch.float64), s, (3, 2), steps=2, progress=False).dtype == torch.float64  # the parameters'
    assert ddpm.sample_ddpm(Net(torch.float64), s, (3, 2), progress=False).dtype == torch.float64
    assert ddpm.sample_ddim(lambda x, t: torch.zeros_like(x), s, (3, 2), steps=2, progress=False).dtype == torch.float32
    xT = torch.zeros(3, 2, dtype=torch.float64)  # x_T wins over everything
    assert ddpm.sample_ddim(lambda x, t: torch.zeros_like(x), s, (3, 2), steps=2, x_T=xT, dtype=torch.float32, progress=False).dtype == torch.float64
    assert ddpm.sample_ddim(Net(torch.float32), s, (3, 2), steps=2, device="cpu", progress=False).device.type == "cpu"
    with pytest.raises(ValueError, match=r"x_T must be a tensor of shape \(3, 2\)"):
        ddpm.sample_ddim(Net(torch.float32), s, (3, 2), steps=2, x_T=torch.zeros(2, 2), progress=False)


def test_t_is_checked_one_way():
    s = Schedule.linear(T=100, beta_start=1e-3, beta_end=0.2)
    x = torch.randn(4, 3)
    z = torch.randn(4, 3)
    for call in (lambda t: ddpm.q_sample(s, x, t, noise=z), lambda t: ddpm.ddpm_step(s, x, t, x, noise=z), lambda t: ddpm.predict_x0(s, x, t, x)):
        with pytest.raises(ValueError, match="t must be an integer tensor"):
            call(torch.full((4,), 3.0))
        with pytest.raises(ValueError, match="t has 3 entries but the batch has 4"):
            call(torch.tensor([1, 2, 3]))
        with pytest.raises(ValueError, match="t must be in"):
            call(torch.tensor([1, 2, 3, 101]))
        torch.testing.assert_close(call(torch.tensor(7)), call(7))  # a 0-d tensor is one t for the batch
    with pytest.raises(ValueError, match="t must be in 1..100"):
        ddpm.ddim_sigma(s, 0, 0, eta=1.0)
    with pytest.raises(ValueError, match="t_prev must be < t, got t_prev = 20 and t = 10"):
        ddpm.ddim_sigma(s, 10, 20, eta=1.0)
    with pytest.raises(ValueError, match="t_prev must be < t"):
        ddpm.ddim_sigma(s, torch.tensor([5, 6]), torch.tensor([4, 6]), eta=1.0)
    with pytest.raises(ValueError, match="eta must be a finite number >= 0"):
        ddpm.ddim_sigma(s, 5, 4, eta=float("nan"))


# ---------------------------------------------------------------- found by mutation testing (tests/README.md)
def test_mutation_found_edges():
    s = Schedule.linear(T=100, beta_start=1e-3, beta_end=0.2)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="T must be an int >= 1"):
            ddpm.timesteps(bad, steps=1)
    assert ddpm.timesteps(1, steps=1).tolist() == [1]
    assert ddpm.timesteps(100, spacing=[7]).tolist() == [7]  # one explicit step is a sequence
    assert ddpm.timesteps(100, steps=5).dtype == torch.long and ddpm.timesteps(100, steps=5, spacing="quadratic").dtype == torch.long
    assert ddpm.timesteps(100, steps=3, spacing="leading").tolist() == [67, 34, 1]
    with pytest.raises(ValueError, match="non-empty sequence of ints"):
        ddpm.timesteps(100, spacing=[])
    with pytest.raises(ValueError, match="strictly decreasing, got \\[9, 9\\]"):
        ddpm.timesteps(100, spacing=[9, 9])
    with pytest.raises(ValueError, match="strictly decreasing"):
        ddpm.timesteps(100, spacing=[9, 5, 6])
    # clip clamps both sides, in ddim_step and in the whole samplers
    x = torch.zeros(2, 3, dtype=torch.float64)
    for sign in (1, -1):
        eps = -sign * 50 * torch.ones(2, 3, dtype=torch.float64)  # x0_hat = +-50 sqrt(1 - abar)/sqrt(abar)
        out = ddpm.ddim_step(s, x, 50, 0, eps, clip=1.0)
        torch.testing.assert_close(out, sign * torch.ones(2, 3, dtype=torch.float64))
        y = ddpm.sample_ddim(lambda a, t: sign * -3 * torch.ones_like(a), s, (3, 2), steps=4, clip=0.5, progress=False)
        assert (y * sign > 0).all() and y.abs().max() <= 0.5 + 1e-6
    with pytest.raises(ValueError, match="clip must be a number > 0 or None"):
        ddpm.ddim_step(s, x, 5, 4, x, clip=0)
    with pytest.raises(ValueError, match="clip must be a number > 0 or None"):
        ddpm.sample_ddim(lambda a, t: a, s, (2, 3), steps=2, clip=-1.0, progress=False)
    # the default is 50 steps for a named spacing
    seen = []
    ddpm.sample_ddim(lambda a, t: (seen.append(int(t[0])), torch.zeros_like(a))[1], s, (1, 1), progress=False)
    assert seen == ddpm.timesteps(100, steps=50).tolist()
    # t_prev checks name t_prev and its range; a t_prev tensor must match the batch
    with pytest.raises(ValueError, match="t_prev must be in 0..99"):
        ddpm.ddim_step(s, x, 100, 100, x)
    with pytest.raises(ValueError, match="t_prev has 3 entries but the batch has 2"):
        ddpm.ddim_step(s, x, torch.tensor([5, 6]), torch.tensor([1, 2, 3]), x)
    with pytest.raises(ValueError, match="t has 3 entries but the batch has 2"):
        ddpm.ddim_step(s, x, torch.tensor([5, 6, 7]), 1, x)
    with pytest.raises(ValueError, match="t and t_prev must have the same shape, got \\(2,\\) and \\(3,\\)"):
        ddpm.ddim_sigma(s, torch.tensor([5, 6]), torch.tensor([1, 2, 3]), eta=1.0)
    with pytest.raises(ValueError, match="t_prev must be < t, got t_prev = 6 and t = 6"):
        ddpm.ddim_step(s, x, torch.tensor([5, 6]), torch.tensor([4, 6]), x)
    with pytest.raises(ValueError, match="model\\(x_t, t\\) must have the shape of x_t"):
        ddpm.sample_ddim(lambda a, t: a[:, :1], s, (2, 3), steps=2, progress=False)
    # exactly at eta = 1 nothing is refused; just above the bound is
    ddpm.ddim_step(s, x, 2, 1, x, eta=1.0)
    eta_max = ddpm.ddim_eta_max(s, 2, 1).item()
    assert eta_max == pytest.approx(1.1538, abs=1e-4)
    with pytest.raises(ValueError, match="there eta must be <= 1.1538"):
        ddpm.ddim_step(s, x, 2, 1, x, eta=1.4)


def test_mutation_found_edges_2():
    s = Schedule.linear(T=100, beta_start=1e-3, beta_end=0.2)
    assert ddpm.timesteps(10, steps=4, spacing="leading").tolist() == [7, 5, 3, 1]  # 1 + k floor(T/S)
    with pytest.raises(ValueError, match="^an explicit timestep sequence must be a non-empty sequence of ints$"):
        ddpm.timesteps(100, spacing=torch.zeros(0, dtype=torch.long))
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match=r"^noise must have the shape of x_t, \(2, 3\); got \(3,\)$"):
        ddpm.ddim_step(s, x, 10, 5, x, eta=0.0, noise=torch.zeros(3))  # checked even where sigma = 0
    with pytest.raises(ValueError, match=r"^eps must have the shape of x_t, \(2, 3\); got \(2, 2\)$"):
        ddpm.ddim_step(s, x, 10, 5, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="^x_t must have a batch dimension"):
        ddpm.ddim_step(s, torch.tensor(1.0), 10, 5, torch.tensor(1.0))
    # a tensor t keeps the data's dtype (the per-example coefficients are cast to it)
    out = ddpm.ddim_step(s, x, torch.tensor([10, 20]), torch.tensor([5, 0]), x, eta=0.5, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32
    assert ddpm.ddpm_step(s, x, torch.tensor([10, 20]), x, generator=torch.Generator().manual_seed(0)).dtype == torch.float32
