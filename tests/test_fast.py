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
    with pytest.raises(ValueError, match="compile_mode"):
        ddpm.TrainConfig(compile_mode="turbo")
    cfg = ddpm.TrainConfig(steps=2, batch_size=4, device="cpu", channels_last=True)
    with pytest.raises(ValueError, match="channels_last"):
        ddpm.train(ddpm.UNet.preset("digits"), ddpm.Schedule.linear(), torch.rand(8, 1, 8, 8) * 2 - 1, cfg, progress=False)
