"""No host-device synchronisation in the hot paths: the loss and its backward, the forward process,
the sampler steps and the whole samplers, run under ``torch.cuda.set_sync_debug_mode("error")``
(any blocking copy, ``.item()``, ``nonzero`` or stream synchronisation raises). Skipped without CUDA.

Each call runs once before the checked run (first calls initialise cuBLAS/cuDNN); the schedule is
used both on the CPU (the samplers' usual case) and moved to the device (as ``ddpm.train`` does).
"""

import contextlib

import pytest
import torch

import ddpm
from ddpm import MLP, MLPConfig, Schedule, UNet, UNetConfig

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DEV = "cuda"
TINY_UNET = UNetConfig(image_size=8, in_channels=1, channels=32, channel_mults=(1, 2), num_res_blocks=1,
                       attn_resolutions=(4,), groups=8, dropout=0.0)


@contextlib.contextmanager
def no_sync():
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()


def twice(fn):
    """Run ``fn`` once to warm up, then again with every host-device sync an error."""
    fn()
    with no_sync():
        return fn()


def _schedules(T=50):  # 20 steps would scale beta_T to 1.0, outside (0, 1)
    s = Schedule.linear(T, 1e-4 * 1000 / T, 0.02 * 1000 / T)
    return {"cpu-schedule": s, "device-schedule": s.to(DEV, torch.float32)}


@pytest.fixture(params=["cpu-schedule", "device-schedule"])
def schedule(request):
    return _schedules()[request.param]


@pytest.fixture(params=["mlp", "unet"])
def model_and_shape(request):
    torch.manual_seed(0)
    if request.param == "mlp":
        return MLP(MLPConfig(hidden=32, layers=2)).to(DEV), (16, 2)
    return UNet(TINY_UNET).to(DEV), (4, 1, 8, 8)


def test_loss_simple_and_backward(schedule, model_and_shape):
    model, shape = model_and_shape
    g = torch.Generator(device=DEV).manual_seed(0)
    x0 = torch.randn(shape, device=DEV)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def steps():
        for _ in range(3):
            loss = ddpm.loss_simple(model, schedule, x0, generator=g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return loss

    assert twice(steps).device.type == "cuda"


def test_q_sample_with_device_t(schedule):
    x0 = torch.randn(8, 2, device=DEV)
    g = torch.Generator(device=DEV).manual_seed(1)
    t = torch.randint(1, schedule.T + 1, (8,), device=DEV, generator=g)
    t0 = torch.tensor(3, device=DEV)  # made here: building it copies from the host, which the check would flag

    def run():
        a = ddpm.q_sample(schedule, x0, t, generator=g)
        b = ddpm.q_sample(schedule, x0, 5, noise=torch.randn_like(x0))
        c = ddpm.q_sample(schedule, x0, t0, generator=g)  # a 0-d device t
        return a + b + c

    assert twice(run).shape == x0.shape


def test_step_loops(schedule, model_and_shape):
    model, shape = model_and_shape
    g = torch.Generator(device=DEV).manual_seed(2)
    B = shape[0]

    def ddpm_loop():
        x = torch.randn(shape, device=DEV, generator=g)
        for t in range(schedule.T, 0, -1):
            eps = model(x, torch.full((B,), t, device=DEV, dtype=torch.long))
            x = ddpm.ddpm_step(schedule, x, t, eps, generator=g, variance="large")
        return x

    def ddim_loop(eta):
        def run():
            x = torch.randn(shape, device=DEV, generator=g)
            seq = ddpm.timesteps(schedule.T, steps=5).tolist()
            for t, tp in zip(seq, seq[1:] + [0]):
                eps = model(x, torch.full((B,), t, device=DEV, dtype=torch.long))
                x = ddpm.ddim_step(schedule, x, t, tp, eps, eta=eta, generator=g, clip=1.0)
            return x
        return run

    def tensor_t_steps():
        x = torch.randn(shape, device=DEV, generator=g)
        t = torch.full((B,), 7, device=DEV, dtype=torch.long)
        eps = model(x, t)
        y = ddpm.ddpm_step(schedule, x, t, eps, generator=g)
        return ddpm.ddim_step(schedule, y, t - 1, t - 3, eps, eta=0.5, generator=g)

    for fn in (ddpm_loop, ddim_loop(0.0), ddim_loop(0.5), ddim_loop(1.0), tensor_t_steps):
        assert torch.isfinite(twice(fn)).all()


def test_whole_samplers(schedule, model_and_shape):
    model, shape = model_and_shape
    g = torch.Generator(device=DEV).manual_seed(3)
    runs = [
        lambda: ddpm.sample_ddpm(model, schedule, shape, generator=g, progress=False),
        lambda: ddpm.sample_ddpm(model, schedule, shape, generator=g, variance="large", clip=1.0, progress=False),
        lambda: ddpm.sample_ddim(model, schedule, shape, steps=5, generator=g, progress=False),
        lambda: ddpm.sample_ddim(model, schedule, shape, steps=5, eta=1.0, generator=g, progress=False),
    ]
    for fn in runs:
        x = twice(fn)
        assert x.device.type == "cuda" and x.shape == shape
