"""Tests of the U-Net (ddpm/nets/unet.py): shapes, parameter counts, t handling, precision, determinism."""

import pytest
import torch

from ddpm.nets.unet import PRESETS, UNet, UNetConfig

# A small network with every feature (two levels, attention, several heads, dropout) for fast tests.
TINY = UNetConfig(
    image_size=8, in_channels=2, channels=16, channel_mults=(1, 2), num_res_blocks=1,
    attn_resolutions=(4,), dropout=0.1, groups=4, heads=2,
)


def _inputs(cfg, B=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, cfg.in_channels, cfg.image_size, cfg.image_size, generator=g)
    t = torch.randint(1, 1001, (B,), generator=g)
    return x, t


def _perturb(model, seed=1):
    """Ho's zero-initialised output layers make a fresh net output 0; give every weight a random value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_shapes(name):
    model = UNet.preset(name).eval()
    cfg = model.config
    assert cfg == UNetConfig.preset(name)
    x, t = _inputs(cfg, B=1)  # one image is enough to check the shape (the 35M network is slow on a CPU)
    with torch.no_grad():
        out = model(x, t)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_ddpm_cifar10_parameter_count():
    # Ho et al. 2020: 35.7M; diffusers' google/ddpm-cifar10-32 UNet2DModel has 35,746,307.
    with torch.device("meta"):  # counting needs no memory and no initialisation
        n = UNet.preset("ddpm-cifar10").num_parameters()
    assert abs(n - 35.7e6) / 35.7e6 < 0.01
    assert n == 35_746_307


def test_fresh_net_predicts_zero_and_gradients_flow():
    model = UNet(TINY).eval()
    x, t = _inputs(TINY)
    assert torch.count_nonzero(model(x, t)) == 0  # zero-initialised output conv (Ho's code)
    model.train()
    model(x, t).pow(2).sum().backward()  # zero output layer still gets a gradient
    assert model.conv_out.weight.grad is not None


def test_time_argument_forms():
    model = _perturb(UNet(TINY)).eval()
    x, _ = _inputs(TINY, B=3)
    with torch.no_grad():
        a = model(x, 7)
        b = model(x, torch.tensor(7))
        c = model(x, torch.full((3,), 7, dtype=torch.long))
        d = model(x, torch.tensor([7, 8, 9]))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)
    torch.testing.assert_close(a[0], d[0])
    assert not torch.allclose(a[1], d[1])  # the net depends on t
    with pytest.raises(ValueError, match="t has 2 entries but the batch has 3"):
        model(x, torch.tensor([1, 2]))  # wrong batch
    with pytest.raises(ValueError, match=r"t must have shape \(\) or \(B,\)"):
        model(x, torch.ones(3, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="t must be an int or an integer tensor"):
        model(x, "5")
    with pytest.raises(ValueError, match="t must be an integer tensor"):
        model(x, torch.full((3,), 7.0))  # float t: the one t check refuses it, as the maths does
    with pytest.raises(ValueError, match="t must be >= 0, got -1"):
        model(x, -1)
    with pytest.raises(ValueError, match="t must be an integer"):
        model(x, 7.5)


def test_batch_independence():
    model = _perturb(UNet(TINY)).eval()
    x, t = _inputs(TINY, B=4)
    with torch.no_grad():
        full = model(x, t)
        one = model(x[2:3], t[2:3])
    torch.testing.assert_close(full[2:3], one, rtol=1e-4, atol=1e-5)


def test_eval_is_deterministic_train_uses_dropout():
    model = _perturb(UNet(TINY))
    x, t = _inputs(TINY)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x, t), model(x, t))
    model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        a = model(x, t)
        b = model(x, t)
    assert not torch.equal(a, b)  # dropout 0.1 is active in training


def test_bf16_autocast_matches_float32():
    model = _perturb(UNet(TINY)).eval()
    x, t = _inputs(TINY)
    with torch.no_grad():
        ref = model(x, t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x, t)
    assert torch.isfinite(low).all()
    rel = (low.float() - ref).norm() / ref.norm()
    assert rel < 5e-2, rel


def test_channels_last_matches():
    model = _perturb(UNet(TINY)).eval()
    x, t = _inputs(TINY)
    with torch.no_grad():
        ref = model(x, t)
        cl = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last), t)
    torch.testing.assert_close(cl, ref, rtol=1e-4, atol=1e-5)


def test_attention_heads_change_the_function_not_the_shape():
    from ddpm.nets.unet import Attention

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 4, 4, generator=g)
    ref = Attention(16, 1, 4, 1e-6)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5 if p.dim() > 1 else torch.randn(p.shape, generator=g))
    outs = {}
    for heads in (1, 2, 4):
        a = Attention(16, heads, 4, 1e-6)
        a.load_state_dict(ref.state_dict())  # the same weights: the heads only split q, k, v
        with torch.no_grad():
            outs[heads] = a(x)
        assert outs[heads].shape == x.shape
    assert (outs[1] - outs[2]).abs().max() > 1e-2 and (outs[2] - outs[4]).abs().max() > 1e-2
    # ... and the whole network with several heads still maps x to eps of x's shape
    xt, t = _inputs(TINY)
    assert UNet(TINY.replace(heads=4)).eval()(xt, t).shape == xt.shape


@pytest.mark.parametrize(
    "changes, word",
    [
        (dict(channels=0), "channels"),
        (dict(channel_mults=()), "channel_mults"),
        (dict(channel_mults=(1, 0)), "channel_mults"),
        (dict(num_res_blocks=0), "num_res_blocks"),
        (dict(image_size=6, channel_mults=(1, 2, 2)), "image_size"),
        (dict(groups=5), "groups"),
        (dict(attn_resolutions=(3,)), "attn_resolutions"),
        (dict(dropout=1.0), "dropout"),
        (dict(heads=3), "heads"),
        (dict(time_embed_dim=0), "time_embed_dim"),
        (dict(in_channels=True), "in_channels"),
    ],
)
def test_bad_config_raises(changes, word):
    with pytest.raises(ValueError, match=word):
        TINY.replace(**changes)


def test_unknown_preset_lists_names():
    with pytest.raises(ValueError, match="ddpm-cifar10"):
        UNet.preset("imagenet")
    with pytest.raises(ValueError, match="digits"):
        UNetConfig.preset("nope")


def test_bad_input_shape_raises():
    model = UNet(TINY)
    with pytest.raises(ValueError, match="x"):
        model(torch.randn(2, 3, 8, 8), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="x"):
        model(torch.randn(2, 2, 7, 7), torch.tensor([1, 2]))


def test_works_with_the_core_loss_and_sampler():
    import ddpm

    s = ddpm.Schedule.linear(T=50)
    model = UNet(TINY)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, TINY.in_channels, 8, 8, generator=g).clamp(-1, 1)
    loss = ddpm.loss_simple(model, s, x0, generator=g)
    loss.backward()
    assert torch.isfinite(loss)
    model.eval()
    with torch.no_grad():
        x = ddpm.sample_ddim(model, s, (2, TINY.in_channels, 8, 8), steps=5, generator=g, progress=False)
    assert x.shape == (2, TINY.in_channels, 8, 8) and torch.isfinite(x).all()
