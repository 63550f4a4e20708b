"""Schedule: the t-indexing convention, claims F5-F7, and bad input."""

import dataclasses
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
    # abar_t through logarithms (a different route from the cumulative product)
    torch.testing.assert_close(s.alpha_bars[1:], torch.exp(torch.cumsum(torch.log1p(-bt), 0)))
    # F5: SNR strictly decreasing for any beta in (0, 1)
    assert (s.snr[1:] < s.snr[:-1]).all()
    # E5 by the precision form of Bayes' rule: 1/beta~_t = alpha_t/beta_t + 1/(1 - abar_{t-1}) (t >= 2)
    if len(b) >= 2:
        prec = s.alphas[2:] / s.betas[2:] + 1 / (1 - s.alpha_bars[1:-1])
        torch.testing.assert_close(1 / s.posterior_variance[2:], prec, rtol=1e-9, atol=0)
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
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.betas = torch.zeros(4)


def test_fields_are_derived_from_betas():
    s = Schedule.linear(T=7)
    direct = Schedule(s.betas)  # the full beta_0..beta_T vector
    for f in dataclasses.fields(Schedule):
        torch.testing.assert_close(getattr(direct, f.name), getattr(s, f.name), rtol=0, atol=0)
    with pytest.raises(TypeError):
        Schedule(s.betas, alphas=s.alphas)  # derived fields cannot be passed, so they cannot disagree
    with pytest.raises(ValueError, match="betas\\[0\\] must be 0"):
        Schedule(s.betas[1:])
    with pytest.raises(ValueError, match="strictly inside"):
        Schedule(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    # to() converts each float64 field, it does not recompute in the new dtype
    s32 = s.to(dtype=torch.float32)
    torch.testing.assert_close(s32.snr, s.snr.float(), rtol=0, atol=0)
    assert s.alpha_bars.dtype == torch.float64  # the original is untouched


# ---------------------------------------------------------------- found by mutation testing (tests/README.md)
def test_input_is_converted_to_float64():
    b32 = torch.linspace(1e-4, 0.02, 10, dtype=torch.float32)
    for s in (Schedule.from_betas(b32), Schedule(torch.cat([torch.zeros(1), b32]))):
        for f in dataclasses.fields(Schedule):
            assert getattr(s, f.name).dtype == torch.float64, f.name


def test_constructor_messages_name_the_problem():
    with pytest.raises(ValueError, match=r"Schedule\(betas\) takes beta_0..beta_T .* got shape \(2, 3\); use Schedule.from_betas for beta_1..beta_T"):
        Schedule(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"got shape \(1,\)"):
        Schedule(torch.zeros(1))
    with pytest.raises(ValueError, match=r"betas\[0\] must be 0 \(t = 0 is clean data\), got 0.1"):
        Schedule(torch.tensor([0.1, 0.2], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"strictly inside \(0, 1\); got 1.5"):
        Schedule(torch.tensor([0.0, 1.5, 0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"strictly inside \(0, 1\); got 0.0"):
        Schedule.from_betas([0.1, 0.0, 0.2])
    with pytest.raises(ValueError, match="beta_start must lie strictly inside"):
        Schedule.linear(10, beta_start=0.0)
    with pytest.raises(ValueError, match="beta_end must lie strictly inside"):
        Schedule.linear(10, beta_end=1.0)
    with pytest.raises(ValueError, match="max_beta must lie strictly inside"):
        Schedule.cosine(10, max_beta=0.0)
    with pytest.raises(ValueError, match="s must be >= 0, got -0.1"):
        Schedule.cosine(10, s=-0.1)
    for bad in (0, 2.5, True, "10"):
        with pytest.raises(ValueError, match="T must be an int >= 1"):
            Schedule.linear(bad)


def test_edges_that_are_allowed():
    assert Schedule.linear(1).T == 1 and len(Schedule.linear(1)) == 2
    assert Schedule.cosine(10, s=0.0).T == 10  # s = 0 is allowed
    c = Schedule.cosine()
    assert c.T == 1000
    torch.testing.assert_close(c.betas, Schedule.cosine(1000, s=0.008, max_beta=0.999).betas, rtol=0, atol=0)
    assert c.betas[-1] == 0.999  # only the last beta is clipped at max_beta


def test_to_device_and_repr():
    s = Schedule.linear(T=10).to(device="meta")
    assert all(getattr(s, f.name).device.type == "meta" for f in dataclasses.fields(Schedule))
    r = repr(Schedule.linear(T=10))
    assert r.startswith("Schedule(T=10, beta_1=0.0001, beta_T=0.02, abar_T=0.904, dtype=torch.float64"), r


def test_a_python_list_is_read_in_float64():
    s = Schedule.from_betas([0.1, 0.2])
    assert s.betas[1].item() == 0.1 and s.betas[2].item() == 0.2  # not float32-rounded
