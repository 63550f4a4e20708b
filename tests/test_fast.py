"""The fast GPU paths, as far as a CPU can check them: FastEps is the same function as its model,
and TrainConfig's GPU options are validated and refused on the CPU with a clear message."""

import pytest
import torch

import ddpm


def test_fasteps_eager_equals_model():
    torch.manual_seed(0)
    net = ddpm.UNet.preset("digits").eval()
    for p in net.parameters():  # the presets start with zero output layers; make the test bite
        p.data.add_(0.01 * torch.randn_like(p))
    fast = ddpm.FastEps(net, bf16=False, channels_last=True, cudagraphs=False, compile=False)
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([1, 10, 500, 1000])
    with torch.no_grad():
        ref = net(x, t)
    out = fast(x, t)
    assert out.is_contiguous() and out.dtype == x.dtype and out.abs().max() > 0
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    s = ddpm.Schedule.linear()
    a = ddpm.sample_ddim(fast, s, (2, 1, 8, 8), steps=5, generator=torch.Generator().manual_seed(1), progress=False)
    b = ddpm.sample_ddim(net, s, (2, 1, 8, 8), steps=5, generator=torch.Generator().manual_seed(1), progress=False)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_train_config_gpu_options():
    with pytest.raises(ValueError, match="compile_mode must be one of auto, default"):
        ddpm.TrainConfig(compile_mode="turbo")
    assert ddpm.TrainConfig().compile_mode == "auto"
    cfg = ddpm.TrainConfig(steps=2, batch_size=4, device="cpu", channels_last=True)
    with pytest.raises(ValueError, match="channels_last"):
        ddpm.train(ddpm.UNet.preset("digits"), ddpm.Schedule.linear(), torch.rand(8, 1, 8, 8) * 2 - 1, cfg, progress=False)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_upsample_is_nearest_interpolation_with_its_gradient(channels_last):
    from ddpm.gpu import upsample_nearest2x

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    y, ref = upsample_nearest2x(x), torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
    assert y.shape == (2, 5, 6, 8) and torch.equal(y, ref)
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last
    w = torch.randn(ref.shape, dtype=torch.float64, generator=g)
    (a,), (b,) = torch.autograd.grad(y, x, w), torch.autograd.grad(ref, x, w)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_gpu_gn_tune_says_in_one_line_what_it_needs():
    import os
    import subprocess
    import sys
    from pathlib import Path

    if torch.cuda.is_available():
        pytest.skip("on a GPU the script runs for real")
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-m", "benchmarks.gpu_gn_tune"], cwd=root, capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 2 and "needs Triton and a CUDA device" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_gpu_gn_tune_records_every_normalisation_of_the_unet():
    from benchmarks.gpu_gn_tune import unet_shapes

    shapes = unet_shapes()
    per_forward = sum(s["calls_per_forward"] for s in shapes)
    net = ddpm.UNet.preset("ddpm-cifar10")
    norms = sum(isinstance(m, torch.nn.GroupNorm) for m in net.modules())
    assert per_forward == norms  # one norm_act call per GroupNorm of the network
    assert {s["p"] for s in shapes} == {0.0, 0.1} and any(s["shift"] for s in shapes) and not all(s["silu"] for s in shapes)
