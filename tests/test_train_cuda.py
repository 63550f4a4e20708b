"""ddpm.train on CUDA: no host-device synchronisation in the training step (under
torch.cuda.set_sync_debug_mode("error") any sync raises), and the whole-step CUDA graph gives the
eager run's result. Skipped without CUDA."""

import pytest
import torch

from ddpm import MLP, MLPConfig, Schedule, TrainConfig, TrainStep, UNet, load_dataset, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def mlp():
    torch.manual_seed(0)
    return MLP(MLPConfig(hidden=64, layers=2))


def moons():
    return load_dataset("moons", n=512, generator=torch.Generator().manual_seed(0))


def steps_under_sync_error(model, data, cfg, n=4, accelerated=False):
    """``accelerated``: the step runs ``ddpm.gpu.accelerate``'s copy of the model, as ddpm.train does."""
    from ddpm.gpu import accelerate, for_training

    dev = torch.device("cuda")
    model.to(dev)
    data = data.to(dev)
    net = accelerate(model, for_training(cfg, dev)) if accelerated else None
    st = TrainStep(model, Schedule.linear(1000), cfg, generator=torch.Generator(device=dev).manual_seed(0), net=net)
    st(data, 1)  # first call: lazy state (optimiser moments, cuDNN plans, a graph capture) may sync once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for k in range(2, 2 + n):
            st(data, k)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    vals = st.read_losses()
    assert len(vals) == n + 1 and all(v == v for v in vals)
    return vals


def test_the_mlp_step_has_no_host_sync():
    steps_under_sync_error(mlp(), moons(), TrainConfig(batch_size=64, log_every=10, device="cuda"))


def test_the_unet_step_has_no_host_sync_in_bf16_channels_last():
    torch.manual_seed(0)
    net = UNet.preset("digits")
    data = load_dataset("digits", n=64, generator=torch.Generator().manual_seed(0))
    steps_under_sync_error(net, data, TrainConfig(batch_size=16, log_every=10, device="cuda", bf16=True, channels_last=True),
                           accelerated=True)


def test_the_whole_step_cuda_graph_has_no_host_sync_and_matches_eager():
    cfg = dict(batch_size=64, log_every=10, device="cuda", warmup=3)
    eager = steps_under_sync_error(mlp(), moons(), TrainConfig(**cfg))
    graph = steps_under_sync_error(mlp(), moons(), TrainConfig(cuda_graph=True, **cfg))
    torch.testing.assert_close(torch.tensor(graph), torch.tensor(eager), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("flags", [dict(), dict(cuda_graph=True)], ids=["eager", "cuda_graph"])
def test_ddpm_train_steps_have_no_host_sync(tmp_path, flags):
    """A few steps of ddpm.train under set_sync_debug_mode("error"): train runs its set-up, read-backs
    and checkpoint writes (which synchronise on purpose) in mode 0 and every step after the first in
    the caller's mode, so a sync inside a step raises here."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        r = train(mlp(), Schedule.linear(1000), moons(),
                  TrainConfig(steps=12, batch_size=64, log_every=5, checkpoint_every=6, device="cuda", **flags),
                  out_dir=tmp_path, progress=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(r.losses) == 12 and r.checkpoint.is_file()


def test_the_cuda_graph_run_matches_the_eager_run():
    cfg = dict(steps=60, batch_size=64, log_every=100, device="cuda")
    r = train(mlp(), Schedule.linear(1000), moons(), TrainConfig(**cfg), progress=False)
    assert len(r.losses) == 60 and r.images_per_second > 0
    r2 = train(mlp(), Schedule.linear(1000), moons(), TrainConfig(cuda_graph=True, **cfg), progress=False)
    torch.testing.assert_close(torch.tensor(r2.losses), torch.tensor(r.losses), rtol=1e-3, atol=1e-4)
    for p, q in zip(r2.ema.parameters(), r.ema.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("flags", [dict(), dict(cuda_graph=True)], ids=["eager", "cuda_graph"])
def test_the_unet_step_with_dropout_runs_the_triton_kernels_without_host_sync(monkeypatch, flags):
    """The U-Net's fused GroupNorm + SiLU + dropout kernels (drawing a dropout seed every call) in bf16
    channels-last training, eager and inside the whole-step CUDA graph: no host sync, finite losses."""
    pytest.importorskip("triton")
    from ddpm import UNetConfig
    from ddpm.gpu import _gn_triton

    calls = []
    real = _gn_triton.group_norm_act
    monkeypatch.setattr(_gn_triton, "group_norm_act", lambda *a, **k: calls.append(k.get("p")) or real(*a, **k))
    torch.manual_seed(0)
    net = UNet(UNetConfig(image_size=16, in_channels=1, channels=32, channel_mults=(1, 2), num_res_blocks=1,
                          attn_resolutions=(8,), groups=8, dropout=0.1))
    data = load_dataset("digits", n=64, generator=torch.Generator().manual_seed(0))
    data = torch.nn.functional.pad(data, (4, 4, 4, 4), value=-1.0)  # (64, 1, 16, 16)
    steps_under_sync_error(net, data, TrainConfig(batch_size=16, log_every=10, device="cuda", bf16=True,
                                                  channels_last=True, **flags), accelerated=True)
    assert calls and 0.1 in calls and 0.0 in calls  # the norms with and without dropout took the Triton path
