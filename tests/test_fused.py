"""ddpm.nets.fused: the NHWC GroupNorm is PyTorch's GroupNorm (values and gradients, fresh random inputs),
and the GroupNorm module keeps nn.GroupNorm's parameters and eager behaviour."""

import os
import subprocess
import sys

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


# ---- norm_act and the Triton GroupNorm kernels --------------------------------------------------------------
def _reference(x, groups, w, b, eps, shift, silu, keep, p):
    h = x.float() + (shift.float()[:, :, None, None] if shift is not None else 0.0)
    h = F.group_norm(h, groups, w, b, eps)
    h = F.silu(h) if silu else h
    return h * keep / (1 - p) if p > 0 else h


def test_norm_act_on_the_cpu_is_pytorchs_ops_in_order():
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    norm = fused.GroupNorm(4, 8, eps=1e-6)
    with torch.no_grad():
        norm.weight.normal_(generator=g), norm.bias.normal_(generator=g)
    x, shift = torch.randn(2, 8, 5, 5, generator=g), torch.randn(2, 8, generator=g)
    torch.manual_seed(3)
    y = fused.norm_act(norm, x, shift=shift, dropout=0.2)
    torch.manual_seed(3)
    ref = F.dropout(F.silu(norm(x + shift[:, :, None, None])), 0.2, training=True)
    torch.testing.assert_close(y, ref, rtol=0, atol=0)
    torch.testing.assert_close(fused.norm_act(norm, x, silu=False), norm(x), rtol=0, atol=0)


def _triton_device():
    """cuda where there is a GPU; the CPU under Triton's interpreter (TRITON_INTERPRET=1); else skip."""
    pytest.importorskip("triton")
    if torch.cuda.is_available():
        return "cuda"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return "cpu"
    pytest.skip("needs a CUDA device or TRITON_INTERPRET=1 (test_triton_kernels_in_the_interpreter runs it so)")


CASES = [  # B, C, H, W, groups, shift, silu, dropout p, dtype
    (2, 64, 4, 4, 32, False, True, 0.0, torch.float32),
    (3, 96, 5, 3, 8, True, True, 0.0, torch.float32),
    (2, 384, 4, 4, 32, True, False, 0.0, torch.float32),  # 12 channels per group: padded tiles
    (2, 64, 32, 32, 32, True, True, 0.1, torch.float32),  # several programs per image
    (2, 32, 8, 8, 8, False, True, 0.0, torch.bfloat16),
    (1, 256, 16, 16, 32, True, True, 0.3, torch.bfloat16),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}x{c[1]}x{c[2]}x{c[3]}-g{c[4]}-{'shift' if c[5] else 'noshift'}-"
                                             f"{'silu' if c[6] else 'id'}-p{c[7]}-{str(c[8])[6:]}" for c in CASES])
def test_triton_group_norm_act_matches_pytorch(case):
    device = _triton_device()
    from ddpm.nets import _gn_triton

    B, C, H, W, G, has_shift, silu, p, dt = case
    g = torch.Generator().manual_seed(torch.seed() % 2**31)  # fresh inputs every run

    def rnd(*shape, scale=1.0, loc=0.0):
        return (scale * torch.randn(*shape, generator=g) + loc).to(device)

    x = rnd(B, C, H, W, scale=2.0, loc=3.0).to(dt).contiguous(memory_format=torch.channels_last).requires_grad_()
    w, b = rnd(C, scale=0.5, loc=1.0).requires_grad_(), rnd(C).requires_grad_()
    shift = rnd(B, C).to(dt).requires_grad_() if has_shift else None
    seed = torch.tensor([int(torch.randint(0, 2**31 - 1, (1,), generator=g))], dtype=torch.int32, device=device)
    y = _gn_triton.group_norm_act(x, G, w, b, 1e-6, shift=shift, silu=silu, p=p, seed=seed)
    assert y.dtype == dt and y.shape == x.shape and y.is_contiguous(memory_format=torch.channels_last)
    keep = (y != 0).float()  # the dropout mask, read back from the zeros
    if p > 0:
        assert abs(keep.mean().item() - (1 - p)) < 0.05
        y2 = _gn_triton.group_norm_act(x, G, w, b, 1e-6, shift=shift, silu=silu, p=p, seed=seed)
        assert torch.equal(y, y2)  # the same seed, the same mask (the backward draws it again)
        default = dict(_gn_triton.TUNING)
        try:  # other tile sizes and splits: the same mask (it is a function of the element alone)
            _gn_triton.TUNING.update(elems=default["elems"] // 4, programs_per_sm=8 * default["programs_per_sm"])
            y3 = _gn_triton.group_norm_act(x, G, w, b, 1e-6, shift=shift, silu=silu, p=p, seed=seed)
        finally:
            _gn_triton.TUNING.update(default)
        assert torch.equal(y3 != 0, y != 0)
    ref = _reference(x, G, w, b, 1e-6, shift, silu, keep, p)
    tol = dict(rtol=2e-2, atol=2e-2) if dt == torch.bfloat16 else dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(y.float(), ref, **tol)
    dy = rnd(*ref.shape)
    leaves = [x, w, b] + ([shift] if has_shift else [])
    for name, a, r in zip(["x", "weight", "bias", "shift"], torch.autograd.grad(y.float(), leaves, dy),
                          torch.autograd.grad(ref, leaves, dy)):
        scale = r.float().abs().max().item() + 1e-6
        assert (a.float() - r.float()).abs().max().item() / scale < (2e-2 if dt == torch.bfloat16 else 1e-4), name


def test_triton_kernels_in_the_interpreter():
    """On a machine without a GPU but with Triton, the kernel tests above run in Triton's CPU interpreter."""
    pytest.importorskip("triton")
    if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("the kernel tests run directly here")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider", __file__,
                        "-k", "test_triton_group_norm_act_matches_pytorch"], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]


def test_cat_channels_is_torch_cat_with_dense_channels_last_gradients():
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        g = torch.Generator().manual_seed(0)
        a = torch.randn(2, 3, 4, 5, generator=g).to(dev).contiguous(memory_format=torch.channels_last).requires_grad_()
        b = torch.randn(2, 6, 4, 5, generator=g).to(dev).contiguous(memory_format=torch.channels_last).requires_grad_()
        y = fused.cat_channels(a, b)
        torch.testing.assert_close(y, torch.cat([a, b], 1), rtol=0, atol=0)
        dy = torch.randn(y.shape, generator=g).to(dev)
        da, db = torch.autograd.grad(y, [a, b], dy)
        torch.testing.assert_close(da, dy[:, :3], rtol=0, atol=0)
        torch.testing.assert_close(db, dy[:, 3:], rtol=0, atol=0)
        if dev == "cuda":  # dense channels-last, so a convolution's backward needs no copy of its own
            cl = torch.channels_last
            assert da.is_contiguous(memory_format=cl) and db.is_contiguous(memory_format=cl)


def test_unet_triton_path_is_the_pytorch_path_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pytest.importorskip("triton")
    torch.manual_seed(0)
    net = ddpm.UNet.preset("ddpm-cifar10").cuda().to(memory_format=torch.channels_last).eval()
    with torch.no_grad():  # non-zero residual convs, so every block matters
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    x = torch.randn(4, 3, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
    t = torch.randint(1, 1001, (4,), device="cuda")
    outs, grads = [], []
    default, tf32 = fused.TRITON_GROUPNORM, torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # full fp32 convolutions: the two paths differ by rounding alone
    try:
        for triton_on in (True, False):
            fused.TRITON_GROUPNORM = triton_on
            out = net(x, t)
            grads.append(torch.autograd.grad(out.square().mean(), list(net.parameters())))
            outs.append(out.detach())
    finally:
        fused.TRITON_GROUPNORM, torch.backends.cudnn.allow_tf32 = default, tf32
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-3, atol=1e-3)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-4)
    calls, real = [], fused._TRITON.group_norm_act
    no_grad = fused.TRITON_GROUPNORM_NO_GRAD
    try:  # sampling (gradients off): the Triton forward where the switch is on, the same numbers
        fused._TRITON.group_norm_act = lambda *a, **k: calls.append(1) or real(*a, **k)
        fused.TRITON_GROUPNORM_NO_GRAD, torch.backends.cudnn.allow_tf32 = True, False
        with torch.no_grad():
            out = net(x, t)
    finally:
        fused._TRITON.group_norm_act, fused.TRITON_GROUPNORM_NO_GRAD = real, no_grad
        torch.backends.cudnn.allow_tf32 = tf32
    assert calls
    torch.testing.assert_close(out, outs[1], rtol=1e-3, atol=1e-3)
