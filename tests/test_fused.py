"""ddpm.gpu: the accelerated copy is the plain network (values, gradients, state dict, shared weights), its
switches are frozen data validated with one-line errors, and the Triton GroupNorm kernels are PyTorch's
GroupNorm + shift + SiLU + dropout (values and gradients, fresh random inputs; on the CPU in Triton's
interpreter where Triton is installed, on the GPU on the device)."""

import dataclasses
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import ddpm
from ddpm import gpu
from ddpm.gpu import GpuConfig, GroupNormTuning, accelerate
from ddpm.gpu import modules as fused

SMALL = ddpm.UNetConfig(image_size=8, in_channels=3, channels=16, channel_mults=(1, 2), num_res_blocks=1,
                        attn_resolutions=(8, 4), dropout=0.2, groups=4, heads=2)


def _perturbed(config=SMALL, seed=0):
    torch.manual_seed(seed)
    net = ddpm.UNet(config)
    with torch.no_grad():  # the zero-initialised output layers would hide the residual branches
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_accelerated_copy_is_the_plain_network(channels_last):
    net = _perturbed()
    keys = list(net.state_dict())
    fast = accelerate(net, GpuConfig(channels_last=channels_last))
    assert list(fast.state_dict()) == keys and type(fast) is not type(net)
    assert all(a is b for a, b in zip(fast.parameters(), net.parameters()))  # shared: training it trains net
    assert type(net.down[0][0]) is ddpm.nets.unet.ResBlock  # the original keeps its plain layers
    x, t = torch.randn(3, 3, 8, 8), torch.tensor([1, 500, 1000])
    for train in (False, True):  # train: the same dropout draws, in the same order
        net.train(train), fast.train(train)
        torch.manual_seed(7)
        ref = net(x, t)
        g_ref = torch.autograd.grad(ref.square().sum(), list(net.parameters()))
        torch.manual_seed(7)
        xin = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        out = fast(xin, t)
        assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
        g = torch.autograd.grad(out.square().sum(), list(fast.parameters()))
        for a, b in zip(g, g_ref):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    sd = {k: v.clone() for k, v in fast.state_dict().items()}
    plain = ddpm.UNet(SMALL)
    plain.load_state_dict(sd)  # the copy's state dict loads into a plain network
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), net.state_dict().values()))


def test_accelerate_leaves_other_networks_alone_and_refuses_bad_input():
    mlp = ddpm.MLP(ddpm.MLPConfig())
    fast = accelerate(mlp, GpuConfig())
    x, t = torch.randn(5, 2), torch.randint(1, 1000, (5,))
    torch.testing.assert_close(fast(x, t), mlp(x, t), rtol=0, atol=0)
    with pytest.raises(ValueError, match="GpuConfig"):
        accelerate(mlp, {"channels_last": True})
    with pytest.raises(ValueError, match="nn.Module"):
        accelerate(lambda x, t: x, GpuConfig())


@pytest.mark.parametrize("kw, match", [
    (dict(channels_last=1), "channels_last must be True or False"),
    (dict(compile_mode="turbo"), "compile_mode must be one of"),
    (dict(compile_mode="auto"), "compile_mode must be one of"),
    (dict(inductor_options=5), "inductor_options"),
    (dict(groupnorm_tuning=(1, 2)), "GroupNormTuning"),
])
def test_gpu_config_is_validated_in_one_line(kw, match):
    with pytest.raises(ValueError, match=match) as e:
        GpuConfig(**kw)
    assert "\n" not in str(e.value)


def test_gpu_config_is_frozen_and_tuning_validated():
    c = GpuConfig(inductor_options={"coordinate_descent_tuning": True})
    assert c.inductor_options == (("coordinate_descent_tuning", True),) and hash(c)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.compile = True
    with pytest.raises(ValueError, match="power of two"):
        GroupNormTuning(elems=1000)
    with pytest.raises(ValueError, match="int >= 1"):
        GroupNormTuning(programs_per_sm=0)


def test_for_training_chooses_the_fast_path_for_compile():
    cfg = ddpm.TrainConfig
    assert gpu.for_training(cfg(compile=True), "cpu") is None and gpu.for_training(cfg(), "cuda") is None
    auto = gpu.for_training(cfg(compile=True), "cuda")
    assert auto.channels_last and auto.triton_groupnorm and auto.compile and auto.compile_mode == "reduce-overhead"
    assert auto.cudagraphs and auto.force_layout
    whole = gpu.for_training(cfg(compile=True, cuda_graph=True), "cuda")
    assert whole.compile_mode == "default" and not whole.cudagraphs and whole.channels_last
    expert = gpu.for_training(cfg(compile=True, compile_mode="default"), "cuda")
    assert not expert.channels_last and expert.compile_mode == "default"
    eager = gpu.for_training(cfg(channels_last=True), "cuda")
    assert eager.channels_last and not eager.compile


def test_compile_kwargs():
    kw = gpu.compile_kwargs
    assert kw(GpuConfig(compile=True, compile_mode="reduce-overhead")) == {
        "dynamic": False, "options": {"triton.cudagraphs": True, "force_layout_optimization": True}}
    assert kw(GpuConfig(channels_last=False, compile=True)) == {"dynamic": False, "mode": "default"}
    assert kw(GpuConfig(channels_last=False, inductor_options={"coordinate_descent_tuning": True})) == {
        "dynamic": False, "options": {"coordinate_descent_tuning": True}}


def test_import_ddpm_imports_no_triton():
    code = "import sys, ddpm, ddpm.gpu; print(sorted(m for m in sys.modules if m.split('.')[0] == 'triton' or m.endswith('_gn_triton')))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


# ---- norm_act and the Triton GroupNorm kernels --------------------------------------------------------------
def _reference(x, groups, w, b, eps, shift, silu, keep, p):
    h = x.float() + (shift.float()[:, :, None, None] if shift is not None else 0.0)
    h = F.group_norm(h, groups, w, b, eps)
    h = F.silu(h) if silu else h
    return h * keep / (1 - p) if p > 0 else h


def test_norm_act_on_the_cpu_is_pytorchs_ops_in_order():
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    norm = torch.nn.GroupNorm(4, 8, eps=1e-6)
    cfg = GpuConfig()
    with torch.no_grad():
        norm.weight.normal_(generator=g), norm.bias.normal_(generator=g)
    x, shift = torch.randn(2, 8, 5, 5, generator=g), torch.randn(2, 8, generator=g)
    torch.manual_seed(3)
    y = fused.norm_act(norm, x, cfg, shift=shift, dropout=0.2)
    torch.manual_seed(3)
    ref = F.dropout(F.silu(norm(x + shift[:, :, None, None])), 0.2, training=True)
    torch.testing.assert_close(y, ref, rtol=0, atol=0)
    torch.testing.assert_close(fused.norm_act(norm, x, cfg, silu=False), norm(x), rtol=0, atol=0)


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
    from ddpm.gpu import _gn_triton

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
        d = GroupNormTuning()  # other tile sizes and splits: the same mask (it is a function of the element alone)
        other = dataclasses.replace(d, elems=d.elems // 4, programs_per_sm=8 * d.programs_per_sm).as_tuple()
        y3 = _gn_triton.group_norm_act(x, G, w, b, 1e-6, shift=shift, silu=silu, p=p, seed=seed, tuning=other)
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
    net = ddpm.UNet.preset("ddpm-cifar10").cuda().eval()
    with torch.no_grad():  # non-zero residual convs, so every block matters
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    x = torch.randn(4, 3, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
    t = torch.randint(1, 1001, (4,), device="cuda")
    with torch.no_grad():
        ref = net(x.contiguous(), t)  # the plain network, NCHW
    outs, grads = [], []
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # full fp32 convolutions: the paths differ by rounding alone
    calls, real = [], fused._triton_module().group_norm_act
    try:
        fused._TRITON.group_norm_act = lambda *a, **k: calls.append(1) or real(*a, **k)
        for triton_on in (True, False):
            fast = accelerate(net, GpuConfig(triton_groupnorm=triton_on))
            n0 = len(calls)
            out = fast(x, t)
            assert (len(calls) > n0) == triton_on
            grads.append(torch.autograd.grad(out.square().mean(), list(fast.parameters())))
            outs.append(out.detach())
        with torch.no_grad():  # sampling (gradients off): the Triton forward, the same numbers
            n0 = len(calls)
            out = accelerate(net, GpuConfig())(x, t)
            assert len(calls) > n0
    finally:
        fused._TRITON.group_norm_act = real
        torch.backends.cudnn.allow_tf32 = tf32
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(outs[1], ref, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-3)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-4)


def test_triton_dropout_mask_is_a_dropout_mask_on_cuda():
    """On the GPU: the fused dropout drops a fraction p of the elements, independently of position (no stripes
    along rows or channels), with fresh masks on every call, and the kept ones scaled by 1 / (1 - p)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pytest.importorskip("triton")
    from ddpm.gpu import _gn_triton

    g = torch.Generator(device="cuda").manual_seed(torch.seed() % 2**31)
    B, C, H, W, p = 8, 256, 16, 16, 0.1
    x = torch.randn(B, C, H, W, device="cuda", generator=g).contiguous(memory_format=torch.channels_last)
    w, b = torch.ones(C, device="cuda"), torch.zeros(C, device="cuda")
    masks = []
    for _ in range(2):
        seed = torch.randint(0, 2**31 - 1, (1,), device="cuda", dtype=torch.int32, generator=g)
        y = _gn_triton.group_norm_act(x, 32, w, b, 1e-6, silu=False, p=p, seed=seed)
        masks.append((y != 0).float())
        ref = F.group_norm(x, 32, w, b, 1e-6) / (1 - p)
        torch.testing.assert_close(y[y != 0], ref[y != 0], rtol=1e-4, atol=1e-4)
    m = masks[0]
    n = m.numel()
    assert abs(m.mean().item() - (1 - p)) < 4 * (p * (1 - p) / n) ** 0.5
    per_channel, per_row = m.mean((0, 2, 3)), m.mean((0, 1))  # (C,), (H, W)
    assert (per_channel - (1 - p)).abs().max() < 0.06 and (per_row - (1 - p)).abs().max() < 0.06
    agree = (masks[0] == masks[1]).float().mean().item()  # independent masks agree on (1-p)^2 + p^2 of elements
    assert abs(agree - ((1 - p) ** 2 + p ** 2)) < 0.01
