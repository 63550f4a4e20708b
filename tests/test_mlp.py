"""The sinusoidal time embedding and the 2-D MLP noise predictor."""

import math

import pytest
import torch

from ddpm import MLP, MLPConfig, Schedule, loss_simple, sinusoidal_embedding


def test_embedding_layout_matches_the_transformer_formula():
    t = torch.tensor([0, 1, 7, 1000])
    dim = 16
    emb = sinusoidal_embedding(t, dim)
    assert emb.shape == (4, dim) and emb.dtype == torch.float32
    half = dim // 2
    for i in range(half):
        w = 10000 ** (-i / half)
        torch.testing.assert_close(emb[:, i], torch.sin(t.double() * w).float(), atol=1e-4, rtol=0)  # float32 arguments up to 1000
        torch.testing.assert_close(emb[:, half + i], torch.cos(t.double() * w).float(), atol=1e-4, rtol=0)  # float32 arguments up to 1000
    # t = 0: sines 0, cosines 1.
    assert torch.equal(emb[0, :half], torch.zeros(half)) and torch.equal(emb[0, half:], torch.ones(half))


def test_embedding_separates_times_and_handles_odd_dims_and_ints():
    e = sinusoidal_embedding(torch.arange(1, 1001), 64)
    d = torch.cdist(e, e) + torch.eye(1000) * 10
    assert d.min() > 0.05  # every t in 1..T gets its own code
    odd = sinusoidal_embedding(torch.tensor([3, 4]), 7)
    assert odd.shape == (2, 7) and torch.equal(odd[:, -1], torch.zeros(2))
    assert torch.equal(sinusoidal_embedding(5, 8), sinusoidal_embedding(torch.tensor([5]), 8))


@pytest.mark.parametrize("bad", [0, 1, -3, 2.5, True])
def test_embedding_rejects_bad_dim(bad):
    with pytest.raises(ValueError, match="dim"):
        sinusoidal_embedding(torch.tensor([1]), bad)


def test_embedding_rejects_bad_t_shape():
    with pytest.raises(ValueError, match="shape"):
        sinusoidal_embedding(torch.ones(2, 2, dtype=torch.long), 8)


def test_mlp_shapes_and_fresh_output_is_zero():
    torch.manual_seed(0)
    m = MLP(MLPConfig(hidden=32, layers=2))
    x = torch.randn(5, 2)
    t = torch.tensor([1, 2, 3, 500, 1000])
    out = m(x, t)
    assert out.shape == (5, 2)
    assert torch.equal(out, torch.zeros(5, 2))  # zero-initialised last layer: loss starts at E|eps|^2 = 1
    assert m(x, 3).shape == (5, 2)  # an int t for the whole batch
    assert m(x.reshape(5, 1, 2), t).shape == (5, 1, 2)  # any (B, *event) holding dim numbers
    assert MLP(hidden=32).config == MLPConfig(hidden=32)


def test_mlp_depends_on_t_and_x_after_a_step():
    torch.manual_seed(0)
    m = MLP(MLPConfig(hidden=32, layers=2))
    s = Schedule.linear(100)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        loss = loss_simple(m, s, torch.randn(64, 2, generator=g) * 0.5, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = torch.randn(4, 2)
    assert not torch.allclose(m(x, 10), m(x, 90))
    assert not torch.allclose(m(x, 10), m(x + 0.5, 10))
    assert all(p.grad is not None for p in m.parameters())


def test_mlp_can_output_eps_linear_in_x_at_large_t():
    """Near t = T the optimal eps_hat is ~x_t itself; the network must not be blind to |x|.
    With weights that make each block the identity, out(x) is a fixed function of x whose
    magnitude grows with |x| (no normalisation layer squashes it)."""
    torch.manual_seed(0)
    m = MLP(MLPConfig(hidden=16, layers=1))
    torch.nn.init.normal_(m.out.weight)
    x = torch.tensor([[1.0, 0.0]])
    a, b = m(x, 1000).norm(), m(10 * x, 1000).norm()
    assert b > 3 * a


@pytest.mark.parametrize("field, value", [("dim", 0), ("hidden", -1), ("layers", 0), ("time_dim", 1), ("dropout", 1.0), ("hidden", 2.5)])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        MLPConfig(**{field: value})


def test_mlp_rejects_bad_inputs():
    m = MLP(MLPConfig(hidden=8, layers=1))
    with pytest.raises(ValueError, match="x must have shape"):
        m(torch.randn(4, 3), torch.ones(4, dtype=torch.long))
    with pytest.raises(ValueError, match="t has 3 entries but the batch has 4"):
        m(torch.randn(4, 2), torch.ones(3, dtype=torch.long))
    with pytest.raises(ValueError, match="t must be an integer tensor"):
        m(torch.randn(4, 2), torch.ones(4))
    with pytest.raises(ValueError, match="t must be >= 0, got -1"):
        m(torch.randn(4, 2), -1)
    with pytest.raises(ValueError, match=r"shape \(\) or \(B,\)"):
        m(torch.randn(4, 2), torch.ones(4, 1, dtype=torch.long))
    # a 0-d integer tensor is one t for the whole batch, as an int is
    torch.testing.assert_close(m(torch.randn(4, 2, generator=torch.Generator().manual_seed(0)), torch.tensor(7)),
                               m(torch.randn(4, 2, generator=torch.Generator().manual_seed(0)), 7))
    with pytest.raises(ValueError, match="config"):
        MLP("big")
