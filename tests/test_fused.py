"""ddpm.nets.fused: the NHWC GroupNorm is PyTorch's GroupNorm (values and gradients, fresh random inputs),
and the GroupNorm module keeps nn.GroupNorm's parameters and eager behaviour."""

import pytest
import torch
import torch.nn.functional as F

import ddpm
from ddpm.nets import fused


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("channels_last", [True, False], ids=["nhwc", "nchw"])
def test_group_norm_nhwc_is_group_norm_with_its_gradients(affine, channels_last):
    g = torch.Generator().manual_seed(torch.seed() % 2**31)  # fresh inputs every run
    x = 3 * torch.randn(3, 12, 5, 7, dtype=torch.float64, generator=g) + 1.5
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(12, dtype=torch.float64, generator=g) if affine else None
    b = torch.randn(12, dtype=torch.float64, generator=g) if affine else None
    leaves = [x] + ([w, b] if affine else [])
    for v in leaves:
        v.requires_grad_(True)
    y, ref = fused.group_norm_nhwc(x, 4, w, b, 1e-6), F.group_norm(x, 4, w, b, 1e-6)
    assert y.dtype == x.dtype and y.is_contiguous(memory_format=torch.channels_last) == channels_last
    torch.testing.assert_close(y, ref, rtol=1e-6, atol=1e-6)  # statistics in float32, as PyTorch's kernel
    up = torch.randn(ref.shape, dtype=torch.float64, generator=g)
    for a, r in zip(torch.autograd.grad(y, leaves, up), torch.autograd.grad(ref, leaves, up)):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)


def test_group_norm_nhwc_under_autocast_is_float32_and_refuses_bad_shapes():
    x = torch.randn(2, 8, 4, 4).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fused.group_norm_nhwc(x, 2, torch.ones(8), torch.zeros(8))
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, F.group_norm(x.float(), 2), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="4-d"):
        fused.group_norm_nhwc(torch.randn(2, 8, 4), 2)
    with pytest.raises(ValueError, match="divide"):
        fused.group_norm_nhwc(torch.randn(2, 8, 4, 4), 3)


def test_groupnorm_module_keeps_nn_groupnorm_state_and_compiled_path(monkeypatch):
    m = fused.GroupNorm(4, 12, eps=1e-6)
    assert isinstance(m, torch.nn.GroupNorm) and set(m.state_dict()) == {"weight", "bias"}
    with torch.no_grad():
        m.weight.normal_(), m.bias.normal_()
    x = torch.randn(2, 12, 6, 6).contiguous(memory_format=torch.channels_last)
    ref = F.group_norm(x, 4, m.weight, m.bias, 1e-6)
    torch.testing.assert_close(m(x), ref)
    monkeypatch.setattr(fused, "NHWC_GROUPNORM", True)
    torch._dynamo.reset()
    out = torch.compile(m, backend="eager")(x)  # traced: takes the NHWC path
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch._dynamo.reset()


def test_unet_state_dict_keys_unchanged():
    net = ddpm.UNet.preset("digits")
    ref = {k for k, _ in net.named_parameters()} | {k for k, _ in net.named_buffers()}
    assert set(net.state_dict()) == ref and "down.0.0.norm1.weight" in ref


def test_compile_net_options(monkeypatch):
    from ddpm.fast import compile_net

    calls = []
    monkeypatch.setattr(torch, "compile", lambda net, **kw: calls.append(kw) or net)
    net = torch.nn.Linear(2, 2)
    compile_net(net, "reduce-overhead", channels_last=True)
    compile_net(net, "default", channels_last=False)
    assert calls[0] == {"dynamic": False, "options": {"triton.cudagraphs": True, "force_layout_optimization": True}}
    assert calls[1] == {"dynamic": False, "mode": "default"}
