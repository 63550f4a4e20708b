"""Bad input to the maths gets a one-line ValueError naming the argument and what is allowed; the
generator and dtype reach the draw. (Most of these were found by mutation testing: tests/README.md.)"""

import pytest
import torch

import ddpm
from ddpm import Schedule

S = Schedule.linear(T=100, beta_start=1e-3, beta_end=0.2)
X = torch.randn(4, 3)
BAD = torch.randn(2, 3)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: ddpm.q_step(S, X, 101), r"t must be in 1..100 \(T = 100\), got 101"),
        (lambda: ddpm.q_step(S, X, 0), r"t must be in 1..100"),
        (lambda: ddpm.q_step(S, X, torch.tensor([1, 2])), "t has 2 entries but the batch has 4"),
        (lambda: ddpm.q_step(S, X, 5, noise=BAD), r"noise must have the shape of x, \(4, 3\); got \(2, 3\)"),
        (lambda: ddpm.q_step(S, torch.tensor(1.0), 5), "x_prev must have a batch dimension"),
        (lambda: ddpm.q_mean_variance(S, X, 101), r"t must be in 0..100"),
        (lambda: ddpm.q_mean_variance(S, X, torch.tensor([1, 2])), "t has 2 entries but the batch has 4"),
        (lambda: ddpm.q_mean_variance(S, torch.tensor(1.0), 5), "x0 must have a batch dimension"),
        (lambda: ddpm.q_sample(S, X, torch.tensor([1, 2])), "t has 2 entries but the batch has 4"),
        (lambda: ddpm.q_sample(S, torch.tensor(1.0), 5), "x0 must have a batch dimension"),
        (lambda: ddpm.q_sample(S, X, 5, noise="z"), r"noise must be a tensor of shape \(4, 3\), got str"),
        (lambda: ddpm.marginal_variance(S, 1.0, 101), r"t must be in 0..100"),
        (lambda: ddpm.q_posterior(S, X, 5, BAD), r"x_t must have the shape of x0, \(2, 3\); got \(4, 3\)"),
        (lambda: ddpm.predict_x0(S, X, 5, BAD), r"eps must have the shape of x_t, \(4, 3\)"),
        (lambda: ddpm.predict_x0(S, X, torch.tensor([1, 2]), X), "t has 2 entries but the batch has 4"),
        (lambda: ddpm.predict_x0(S, torch.tensor(1.0), 5, torch.tensor(1.0)), "x_t must have a batch dimension"),
        (lambda: ddpm.x0_to_eps(S, X, 5, BAD), r"x0 must have the shape of x_t, \(4, 3\)"),
        (lambda: ddpm.v_target(S, X, 5, BAD), r"eps must have the shape of x0, \(4, 3\)"),
        (lambda: ddpm.v_to_x0(S, X, 5, BAD), r"v must have the shape of x_t, \(4, 3\)"),
        (lambda: ddpm.v_to_eps(S, X, 5, BAD), r"v must have the shape of x_t, \(4, 3\)"),
        (lambda: ddpm.posterior_mean_from_eps(S, X, 5, BAD), r"eps must have the shape of x_t, \(4, 3\)"),
        (lambda: ddpm.posterior_mean_from_eps(S, X, 0, X), r"t must be in 1..100"),
        (lambda: ddpm.v_to_x0(S, X, 101, X), r"t must be in 0..100"),
    ],
)
def test_messages(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_t0_is_allowed_where_the_equation_allows_it():
    x0, eps = torch.randn(2, 4, 3, dtype=torch.float64)
    torch.testing.assert_close(ddpm.q_sample(S, x0, 0, noise=eps), x0)
    torch.testing.assert_close(ddpm.v_target(S, x0, 0, eps), eps)  # abar_0 = 1: v = eps
    torch.testing.assert_close(ddpm.v_to_x0(S, x0, 0, eps), x0)  # x_0 itself
    torch.testing.assert_close(ddpm.v_to_eps(S, x0, 0, eps), eps)
    assert ddpm.marginal_variance(S, 0.3, 0) == pytest.approx(0.3)
    torch.testing.assert_close(ddpm.marginal_variance(S, 0.3, torch.tensor([0, 100])),
                               torch.stack([ddpm.marginal_variance(S, 0.3, 0), ddpm.marginal_variance(S, 0.3, 100)]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_generator_and_dtype_reach_the_draw(dtype):
    x = torch.randn(5, 3, dtype=dtype)
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    z = torch.randn(x.shape, generator=g(), dtype=dtype)
    torch.testing.assert_close(ddpm.q_sample(S, x, 30, generator=g()), ddpm.q_sample(S, x, 30, noise=z), rtol=0, atol=0)
    torch.testing.assert_close(ddpm.q_step(S, x, 30, generator=g()), ddpm.q_step(S, x, 30, noise=z), rtol=0, atol=0)
    torch.testing.assert_close(ddpm.ddpm_step(S, x, 30, x, generator=g()), ddpm.ddpm_step(S, x, 30, x, noise=z), rtol=0, atol=0)
    torch.testing.assert_close(ddpm.ddim_step(S, x, 30, 10, x, eta=0.5, generator=g()),
                               ddpm.ddim_step(S, x, 30, 10, x, eta=0.5, noise=z), rtol=0, atol=0)
    m = lambda a, t: torch.zeros_like(a)  # noqa: E731
    torch.testing.assert_close(ddpm.loss_simple(m, S, x, t=torch.full((5,), 3), generator=g()),
                               ddpm.loss_simple(m, S, x, t=torch.full((5,), 3), noise=z))
    assert ddpm.q_sample(S, x, 30, generator=g()).dtype == dtype
