"""Schedule: the t-indexing convention, claims F5-F7, and bad input."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ddpm import Schedule

betas_strategy = st.lists(st.floats(1e-5, 0.5), min_size=1, max_size=60)


def test_indexing_convention():
    s = Schedule.linear(T=10)
    assert s.T == 10 and len(s) == 11 and list(range(len(s))) == list(range(s.T + 1))
    for name in ("betas", "alphas", "alpha_bars", "posterior_variance", "snr", "log_snr"):
        v = getattr(s, name)
        assert v.shape == (11,) and v.dtype == torch.float64, name
    assert s.betas[0] == 0 and s.alpha_bars[0] == 1 and s.posterior_variance[1] == 0
    assert math.isinf(s.snr[0])
    torch.testing.assert_close(s.betas[1:], torch.linspace(1e-4, 0.02, 10, dtype=torch.float64))


@settings(max_examples=50, deadline=None)
@given(betas_strategy)
def test_from_betas_identities(b):
    s = Schedule.from_betas(b)
    bt = torch.tensor(b, dtype=torch.float64)
    torch.testing.assert_close(s.alpha_bars[1:], torch.cumprod(1 - bt, 0))
    # F5: SNR strictly decreasing for any beta in (0, 1)
    assert (s.snr[1:] < s.snr[:-1]).all()
    # E5: beta~_t = (1 - abar_{t-1}) beta_t / (1 - abar_t) < beta_t for t >= 2, beta~_1 = 0
    torch.testing.assert_close(s.posterior_variance[1:], (1 - s.alpha_bars[:-1]) * s.betas[1:] / (1 - s.alpha_bars[1:]))
    assert s.posterior_variance[1] == 0
    assert (s.posterior_variance[2:] < s.betas[2:]).all()
    torch.testing.assert_close(s.sqrt_alpha_bars**2 + s.sqrt_one_minus_alpha_bars**2, torch.ones(len(b) + 1, dtype=torch.float64))


def test_linear_reference_numbers_F5_F6():
    s = Schedule.linear()
    assert s.snr[1].item() == pytest.approx(9999.0, rel=1e-9)
    assert s.alpha_bars[-1].item() == pytest.approx(4.036e-5, rel=1e-3)
    assert math.sqrt(s.alpha_bars[-1].item()) == pytest.approx(0.0064, abs=5e-5)


def test_other_T_F7():
    for T in (100, 250, 300, 2000):
        s = Schedule.linear(T, 1e-4 * 1000 / T, 0.02 * 1000 / T)
        assert 2e-5 < s.alpha_bars[-1].item() < 6e-5, T
    assert Schedule.linear(300).alpha_bars[-1].item() == pytest.approx(0.048, abs=5e-4)


def test_F6_terminal_iff_sum_beta_diverges():
    # abar_T = prod(1 - beta) <= exp(-sum beta) and >= exp(-sum beta / (1 - max beta))
    for T in (50, 100, 1000):
        s = Schedule.linear(T, 1e-4 * 1000 / T, 0.02 * 1000 / T)
        total = s.betas.sum().item()
        assert s.alpha_bars[-1].item() <= math.exp(-total) + 1e-15
        assert s.alpha_bars[-1].item() >= math.exp(-total / (1 - s.betas.max().item())) - 1e-15


def test_cosine_matches_nichol_dhariwal():
    T, sfac = 1000, 0.008
    s = Schedule.cosine(T, s=sfac)
    t = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos((t / T + sfac) / (1 + sfac) * math.pi / 2) ** 2
    abar = f / f[0]
    # identical wherever beta was not clipped at max_beta (only the last step is)
    torch.testing.assert_close(s.alpha_bars[:-1], abar[:-1])
    assert s.betas.max() <= 0.999 and (s.betas[1:] > 0).all()


def test_to_moves_every_tensor():
    s = Schedule.linear(T=5).to(dtype=torch.float32)
    assert s.alpha_bars.dtype == torch.float32 and s.posterior_variance.dtype == torch.float32 and s.T == 5


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: Schedule.from_betas([0.1, 1.0]), "betas"),
        (lambda: Schedule.from_betas([0.1, 0.0]), "betas"),
        (lambda: Schedule.from_betas([0.1, float("nan")]), "betas"),
        (lambda: Schedule.from_betas([]), "betas"),
        (lambda: Schedule.from_betas([[0.1, 0.2]]), "betas"),
        (lambda: Schedule.linear(T=0), "T"),
        (lambda: Schedule.linear(T=10, beta_end=1.5), "beta_end"),
        (lambda: Schedule.cosine(T=10, max_beta=1.0), "max_beta"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_frozen():
    s = Schedule.linear(T=3)
    with pytest.raises(Exception):
        s.betas = torch.zeros(4)
