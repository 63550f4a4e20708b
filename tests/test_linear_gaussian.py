"""The exact linear-Gaussian ELBO testbed, and the package's bound against it (claims E1, E4)."""

import math

import pytest
import torch

import ddpm
from ddpm import EpsOffset, GaussianMixture, LinearGaussianChain, Schedule

BIN = 1e-4


def _chain(theta=0.0, variance="small"):
    s = Schedule.linear(10, 0.02, 0.6)
    exact = GaussianMixture.gaussian([0.3], 0.25**2).bind(s)
    return s, EpsOffset(exact, theta), LinearGaussianChain(s, EpsOffset(exact, theta), variance=variance)


@pytest.mark.parametrize("theta, x0", [(0.0, 0.3), (0.3, -0.4), (-0.5, 0.9)])
def test_E1_gap_identity_three_routes(theta, x0):
    """log p - ELBO = KL(q || p_theta posterior): three quantities, three independent computations."""
    _, _, ch = _chain(theta)
    log_p, elbo, gap = ch.exact(x0)
    assert gap > 0
    assert log_p - elbo == pytest.approx(gap, abs=1e-9)


@pytest.mark.parametrize("variance", ["small", "large"])
@pytest.mark.parametrize("theta", [0.0, 0.4])
def test_E4_package_terms_sum_to_minus_elbo(theta, variance):
    _, _, ch = _chain(theta, variance)
    L_T, L_0, mids = ch.bound_terms(0.2, bin_width=BIN)
    assert L_T + L_0 + sum(mids) == pytest.approx(-ch.elbo(0.2), abs=1e-6)
    assert all(m >= 0 for m in mids) and L_T >= 0


def test_variational_bound_and_bits_per_dim_match_the_exact_elbo():
    """ddpm.variational_bound draws one x_t per term: its mean over many draws is -ELBO."""
    s, model, ch = _chain(0.3)
    x0 = 0.2
    n = 4000
    xb = torch.full((n, 1), x0, dtype=torch.float64)
    out = ddpm.variational_bound(model, s, xb, generator=torch.Generator().manual_seed(0), bin_width=BIN)
    total = out["total"] + math.log(BIN)  # back to a density, as the testbed
    se = total.std().item() / math.sqrt(n)
    assert total.mean().item() == pytest.approx(-ch.elbo(x0), abs=5 * se + 1e-6)
    bpd = ddpm.bits_per_dim(model, s, xb, generator=torch.Generator().manual_seed(0), bin_width=BIN)
    torch.testing.assert_close(bpd, out["total"] / math.log(2))  # d = 1: nats -> bits
    # the bound is an upper bound on -log p: on average, strictly above it here (the gap is > 0)
    assert total.mean().item() > -ch.log_prob(x0)


def test_forward_joint_against_simulated_chain():
    s, _, ch = _chain()
    g = torch.Generator().manual_seed(1)
    n = 200_000
    x = torch.full((n, 1), 0.5, dtype=torch.float64)
    xs = []
    for t in range(1, s.T + 1):
        x = ddpm.q_step(s, x, t, generator=g)
        xs.append(x[:, 0])
    X = torch.stack(xs, 1)
    q = ch.forward_joint(0.5)
    torch.testing.assert_close(X.mean(0), q.mean, atol=0.01, rtol=0)
    torch.testing.assert_close(torch.cov(X.T), q.covariance_matrix, atol=0.01, rtol=0)


def test_model_joint_against_ancestral_sampling():
    """The x_0 marginal of p_theta, from running DDPM's steps with the model (decoder noise at t = 1)."""
    s, model, ch = _chain(0.3)
    g = torch.Generator().manual_seed(2)
    n = 200_000
    x = torch.randn(n, 1, generator=g, dtype=torch.float64)
    for t in range(s.T, 1, -1):
        x = ddpm.ddpm_step(s, x, t, model(x, t), generator=g)
    mu1 = ddpm.posterior_mean_from_eps(s, x, 1, model(x, 1))
    x0 = mu1 + math.sqrt(ddpm.decoder_variance(s)) * torch.randn(n, 1, generator=g, dtype=torch.float64)
    joint = ch.model_joint()
    m, v = joint.mean[0].item(), joint.covariance_matrix[0, 0].item()
    assert x0.mean().item() == pytest.approx(m, abs=5 * math.sqrt(v / n))
    assert x0.var().item() == pytest.approx(v, rel=6 * math.sqrt(2 / n))
    assert ch.log_prob(0.1) == pytest.approx(-0.5 * (math.log(2 * math.pi * v) + (0.1 - m) ** 2 / v), abs=1e-12)


def test_bad_input():
    s = Schedule.linear(10, 0.02, 0.6)
    with pytest.raises(ValueError, match="not affine"):
        LinearGaussianChain(s, lambda x, t: x**2)
    with pytest.raises(ValueError, match="variance must be one of"):
        LinearGaussianChain(s, lambda x, t: x, variance="medium")
    with pytest.raises(ValueError, match="ddpm.Schedule"):
        LinearGaussianChain("linear", lambda x, t: x)
