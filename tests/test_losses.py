"""Losses and the bound: claims K1-K5, K8 and F6 as properties."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ddpm
from ddpm import Schedule

seeds = st.integers(0, 2**31 - 1)


class Oracle(torch.nn.Module):
    """Returns a fixed tensor as eps-hat whatever the input (lets a test choose eps_theta)."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, x, t):
        return self.out


@settings(max_examples=40, deadline=None)
@given(st.floats(-3, 3), st.floats(0.05, 3), st.floats(-3, 3), st.floats(0.05, 3))
def test_K1_univariate_kl_matches_torch(m1, s1, m2, s2):
    ours = ddpm.gaussian_kl(m1, s1**2, m2, s2**2)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(torch.tensor(m1, dtype=torch.float64), s1),
        torch.distributions.Normal(torch.tensor(m2, dtype=torch.float64), s2),
    )
    closed = math.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5
    assert ours.item() == pytest.approx(ref.item(), abs=1e-10)
    assert ours.item() == pytest.approx(closed, abs=1e-10)


def test_K1_by_quadrature():
    from scipy import integrate, stats

    for (m1, s1, m2, s2) in [(0.3, 0.7, -0.2, 1.3), (1.0, 2.0, 0.0, 0.5)]:
        p, q = stats.norm(m1, s1), stats.norm(m2, s2)
        val, _ = integrate.quad(lambda x: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)), -30, 30, limit=200)
        assert ddpm.gaussian_kl(m1, s1**2, m2, s2**2).item() == pytest.approx(val, abs=1e-8)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 6), seeds)
def test_K2_isotropic_multivariate_is_sum(d, seed):
    g = torch.Generator().manual_seed(seed)
    m1, m2 = torch.randn(2, d, generator=g, dtype=torch.float64)
    v1, v2 = torch.rand(2, generator=g, dtype=torch.float64) + 0.1
    ref = torch.distributions.kl_divergence(
        torch.distributions.MultivariateNormal(m1, v1 * torch.eye(d, dtype=torch.float64)),
        torch.distributions.MultivariateNormal(m2, v2 * torch.eye(d, dtype=torch.float64)),
    )
    assert ddpm.gaussian_kl(m1, v1, m2, v2).sum().item() == pytest.approx(ref.item(), rel=1e-9)


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 1000), seeds)
def test_K3_K5_vb_term_decomposition(t, seed):
    """L_{t-1} = lambda_t ||eps - eps_theta||^2 + C_t with C_t = (d/2)[r - 1 - ln r], r = beta~/sigma^2."""
    s = Schedule.linear()
    g = torch.Generator().manual_seed(seed)
    d = 6
    x0, noise, eps_hat = torch.randn(3, 2, d, generator=g, dtype=torch.float64)
    model = Oracle(eps_hat)
    err = (noise - eps_hat).pow(2).sum(1)
    for variance in ("small", "large"):
        sigma2 = s.posterior_variance[t] if variance == "small" else s.betas[t]
        r = s.posterior_variance[t] / sigma2
        C = d / 2 * (r - 1 - torch.log(r))
        lam = s.betas[t] ** 2 / (2 * sigma2 * s.alphas[t] * (1 - s.alpha_bars[t]))
        L = ddpm.vb_term(model, s, x0, t, noise=noise, variance=variance)
        torch.testing.assert_close(L, lam * err + C, rtol=1e-6, atol=1e-9)
        if variance == "small":
            assert C.item() == pytest.approx(0, abs=1e-12)
            # in x0 terms: lambda_t ||eps - eps_hat||^2 = 1/2 (SNR(t-1) - SNR(t)) ||x0 - x0_hat||^2
            xt = ddpm.q_sample(s, x0, t, noise=noise)
            x0_hat = ddpm.predict_x0(s, xt, t, eps_hat)
            torch.testing.assert_close(
                lam * err, 0.5 * (s.snr[t - 1] - s.snr[t]) * (x0 - x0_hat).pow(2).sum(1), rtol=1e-6, atol=1e-9
            )
        else:
            assert C.item() > 0


def test_K5_lambda_not_monotone_for_large_variance():
    """lambda_t read off the package's vb_term (a unit eps error in one coordinate, minus the
    zero-error constant), not typed: with sigma^2 = beta_t it rises and falls."""
    s = Schedule.linear(T=200, beta_start=5e-4, beta_end=0.1)
    x0 = torch.zeros(1, 1, dtype=torch.float64)
    noise = torch.zeros(1, 1, dtype=torch.float64)
    lam = []
    for t in range(2, 201):
        L1 = ddpm.vb_term(Oracle(noise + 1.0), s, x0, t, noise=noise, variance="large")
        L0 = ddpm.vb_term(Oracle(noise), s, x0, t, noise=noise, variance="large")
        lam.append((L1 - L0).item())
    lam = torch.tensor(lam)
    diffs = lam[1:] - lam[:-1]
    assert (diffs > 0).any() and (diffs < 0).any()
    # and with sigma^2 = beta~_t it is 1/2 (SNR(t-1) - SNR(t)) (claim K5), from the same route
    t = 50
    L1 = ddpm.vb_term(Oracle(noise + 1.0), s, x0, t, noise=noise, variance="small").item()
    assert L1 == pytest.approx(0.5 * (s.snr[t - 1] - s.snr[t]).item() * (1 - s.alpha_bars[t]).item() / s.alpha_bars[t].item(), rel=1e-9)


@settings(max_examples=20, deadline=None)
@given(st.floats(-1, 1), seeds)
def test_F6_prior_loss_closed_form(x, seed):
    s = Schedule.linear()
    a = s.alpha_bars[-1]
    L = ddpm.prior_loss(s, torch.tensor([[x]], dtype=torch.float64))
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(a.sqrt() * x, (1 - a).sqrt()), torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)
    )
    assert L.item() == pytest.approx(ref.item(), rel=1e-6, abs=1e-14)
    assert L.item() / math.log(2) < 5e-5  # about 1e-5 bits per dimension


def test_K8_discretised_decoder_sums_to_one_and_tends_to_density():
    bins = torch.linspace(-1, 1, 256, dtype=torch.float64)
    w = 2 / 255
    for mean, var in [(0.0, 0.5), (0.9, 1e-3), (-0.99, 1e-6), (0.3, 4.0)]:
        lp = ddpm.discretized_gaussian_log_likelihood(bins, torch.tensor(mean, dtype=torch.float64), torch.tensor(var, dtype=torch.float64))
        assert torch.logsumexp(lp, 0).exp().item() == pytest.approx(1.0, abs=1e-9)
    # as sigma -> 0 relative to the bin... as the bin shrinks relative to sigma: P(bin) -> density * width
    x, m, v = torch.tensor(0.2, dtype=torch.float64), torch.tensor(0.25, dtype=torch.float64), torch.tensor(0.09, dtype=torch.float64)
    dens = torch.exp(-0.5 * (x - m) ** 2 / v) / torch.sqrt(2 * math.pi * v)
    for width, tol in [(2 / 255, 1e-4), (2 / 2550, 1e-6)]:
        p = ddpm.discretized_gaussian_log_likelihood(x, m, v, bin_width=width).exp()
        assert (p / (dens * width)).item() == pytest.approx(1.0, abs=tol)


def test_loss_simple_zero_for_the_oracle_and_seeded():
    s = Schedule.linear()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(8, 2)
    noise = torch.randn(8, 2, generator=g)
    assert ddpm.loss_simple(Oracle(noise), s, x0, noise=noise).item() == 0
    net = torch.nn.Linear(2, 2)
    model = lambda x, t: net(x)  # noqa: E731
    a = ddpm.loss_simple(model, s, x0, generator=torch.Generator().manual_seed(3))
    b = ddpm.loss_simple(model, s, x0, generator=torch.Generator().manual_seed(3))
    assert a.item() == b.item()
    a.backward()
    assert net.weight.grad is not None and torch.isfinite(net.weight.grad).all()


def test_loss_simple_draws_cover_1_and_T_never_0():
    s = Schedule.linear(T=6, beta_start=1e-2, beta_end=0.3)
    seen = []

    def model(x, t):
        seen.append(t.clone())
        return torch.zeros_like(x)

    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        ddpm.loss_simple(model, s, torch.zeros(400, 2), generator=g)
    t = torch.cat(seen)
    assert t.dtype == torch.long and set(t.tolist()) == set(range(1, 7))
    counts = torch.bincount(t, minlength=7)
    assert counts[0] == 0 and (counts[1:] > 2000 / 6 * 0.8).all()  # uniform on 1..T


def test_loss_simple_is_the_mse_of_the_noise():
    """An independent route: with a given t and noise, the loss is mean((eps_theta(x_t, t) - eps)^2) with
    x_t built by hand from abar_t."""
    s = Schedule.linear(T=20, beta_start=1e-3, beta_end=0.2)
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(2, 16, 3, generator=g)
    t = torch.randint(1, 21, (16,), generator=g)
    net = torch.nn.Linear(3, 3)
    loss = ddpm.loss_simple(lambda x, tt: net(x) * tt[:, None], s, x0, t=t, noise=noise)
    ab = s.alpha_bars[t].float()[:, None]
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    torch.testing.assert_close(loss, ((net(xt) * t[:, None] - noise) ** 2).mean())
    with pytest.raises(ValueError, match="t must be in 1..20"):
        ddpm.loss_simple(lambda x, tt: x, s, x0, t=torch.zeros(16, dtype=torch.long), noise=noise)


def test_bound_terms_and_bits_per_dim():
    s = Schedule.linear(T=50, beta_start=1e-4 * 20, beta_end=0.02 * 20)
    mix = ddpm.GaussianMixture.ring().bind(s)
    x0 = mix.sample(16, generator=torch.Generator().manual_seed(0), dtype=torch.float64).clamp(-1, 1)
    g = torch.Generator().manual_seed(1)
    out = ddpm.variational_bound(mix, s, x0, generator=g)
    assert out["terms"].shape == (16, 50)
    torch.testing.assert_close(out["total"], out["prior"] + out["terms"].sum(1))
    assert (out["terms"][:, 1:] >= -1e-9).all()  # KLs are non-negative
    bpd = ddpm.bits_per_dim(mix, s, x0, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(bpd, out["total"] / (2 * math.log(2)))
    # the exact-score model beats a model that predicts zero noise
    worse = ddpm.bits_per_dim(lambda x, t: torch.zeros_like(x), s, x0, generator=torch.Generator().manual_seed(1))
    assert bpd.mean() < worse.mean()


def test_bad_input():
    s = Schedule.linear(T=10)
    x0 = torch.randn(2, 3)
    with pytest.raises(ValueError, match="t must be in 2..10"):
        ddpm.vb_term(Oracle(x0), s, x0, 1)
    with pytest.raises(ValueError, match="variance"):
        ddpm.vb_term(Oracle(x0), s, x0, 3, variance="medium")
    with pytest.raises(ValueError, match="must return eps of shape"):
        ddpm.loss_simple(Oracle(torch.zeros(2)), s, x0)
    with pytest.raises(ValueError, match="variance must be one of"):
        ddpm.decoder_variance(s, variance="medium")
    # both variances share DDPM's decoder variance beta~_2, as documented
    assert ddpm.decoder_variance(s, variance="small") == ddpm.decoder_variance(s, variance="large") == s.posterior_variance[2].item()
    assert ddpm.decoder_variance(Schedule.linear(T=1), variance="small") == Schedule.linear(T=1).betas[1].item()


# ---------------------------------------------------------------- found by mutation testing (tests/README.md)
class TRecorder(torch.nn.Module):
    """Returns a fixed eps and checks that the model is called with t a LongTensor of shape (B,)."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, x, t):
        assert isinstance(t, torch.Tensor) and t.dtype == torch.long and t.shape == (x.shape[0],), t
        return self.out.to(x.dtype)


def test_bound_terms_are_computed_in_float64_from_float32_inputs():
    s = Schedule.linear(T=20, beta_start=1e-3, beta_end=0.2)
    g = torch.Generator().manual_seed(0)
    x0, noise, eps = torch.rand(3, 4, 3, generator=g) * 2 - 1  # float32
    m = TRecorder(eps)
    for f in (lambda x, z: ddpm.vb_term(m, s, x, 7, noise=z), lambda x, z: ddpm.decoder_nll(m, s, x, noise=z)):
        assert f(x0, noise).dtype == torch.float64  # x_t is drawn in the data's dtype, the terms in float64
    torch.testing.assert_close(ddpm.prior_loss(s, x0), ddpm.prior_loss(s, x0.double()), rtol=1e-12, atol=0)


def test_defaults_and_passthrough():
    s = Schedule.linear(T=2, beta_start=1e-2, beta_end=0.2)
    x0, noise = torch.rand(2, 3, 2, dtype=torch.float64) * 2 - 1
    m = TRecorder(noise * 0.5)
    torch.testing.assert_close(ddpm.vb_term(m, s, x0, 2, noise=noise), ddpm.vb_term(m, s, x0, 2, noise=noise, variance="small"))
    torch.testing.assert_close(ddpm.decoder_nll(m, s, x0, noise=noise), ddpm.decoder_nll(m, s, x0, noise=noise, variance="small"))
    assert ddpm.decoder_variance(s) == s.posterior_variance[2].item()  # T = 2 already has beta~_2
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    one = x0[:1]  # a batch of one
    m = TRecorder(noise[:1] * 0.5)
    bpd = ddpm.bits_per_dim(m, s, one, variance="large", generator=g())
    vb = ddpm.variational_bound(m, s, one, variance="large", generator=g())["total"]
    torch.testing.assert_close(bpd, vb / (2 * math.log(2)))
    assert not torch.allclose(bpd, ddpm.bits_per_dim(m, s, one, variance="small", generator=g()))
    with pytest.raises(ValueError, match="t has 2 entries but the batch has 3"):
        ddpm.vb_term(m, s, x0, torch.tensor([2, 2]), noise=noise)
    with pytest.raises(ValueError, match="t has 2 entries but the batch has 3"):
        ddpm.loss_simple(m, s, x0, t=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="x0 must have a batch dimension"):
        ddpm.loss_simple(m, s, torch.tensor(1.0))
    # loss_simple is at least float32 under a bf16 model output, and gaussian_kl keeps a tensor's dtype
    bf = ddpm.loss_simple(lambda x, t: torch.zeros_like(x, dtype=torch.bfloat16), s, x0.float())
    assert bf.dtype == torch.float32
    assert ddpm.gaussian_kl(torch.zeros(2), torch.ones(2), torch.ones(2), torch.ones(2)).dtype == torch.float32
