"""The training loop: learning, repeatability, resuming, EMA, warm-up, NaN handling, devices."""

import math

import pytest
import torch
from torch import nn

from ddpm import MLP, MLPConfig, Schedule, TrainConfig, load_dataset, sample_ddim, sliced_wasserstein, train
from ddpm.checkpoint import list_checkpoints, load_checkpoint, read_payload
from ddpm.ema import EMA, ema_decay
from ddpm.train import lr_at, resolve_device


pytestmark = pytest.mark.threads(1)  # small models: one thread is the fastest here


def small_mlp(seed=0):
    torch.manual_seed(seed)
    return MLP(MLPConfig(hidden=64, layers=2))


def moons(n=4000):
    return load_dataset("moons", n=n, generator=torch.Generator().manual_seed(123))


def test_training_on_moons_lowers_the_loss_and_brings_samples_to_the_data():
    s = Schedule.linear(1000)
    data = moons()
    r = train(small_mlp(), s, data, TrainConfig(steps=400, batch_size=256, log_every=50), progress=False)
    assert len(r.losses) == 400 and r.step == 400 and r.steps_per_sec > 0
    first, last = sum(r.losses[:50]) / 50, sum(r.losses[-50:]) / 50
    assert last < 0.6 * first
    x = sample_ddim(r.ema, s, (1000, 2), steps=50, generator=torch.Generator().manual_seed(1), progress=False)
    g = torch.Generator().manual_seed(2)
    ref = moons(1000)
    d_samples = sliced_wasserstein(x, ref, generator=torch.Generator().manual_seed(3))
    d_noise = sliced_wasserstein(torch.randn(1000, 2, generator=g), ref, generator=torch.Generator().manual_seed(3))
    assert d_samples < 0.3 * d_noise


def test_a_seed_makes_a_run_repeatable_and_leaves_the_global_rng_alone():
    s = Schedule.linear(100)
    data = moons(500)
    cfg = TrainConfig(steps=30, batch_size=32, log_every=7)
    m = small_mlp()  # seeds the global RNG itself: build it before taking the state
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    a = train(m, s, data, cfg, progress=False)
    assert torch.equal(before, torch.get_rng_state())
    b = train(small_mlp(), s, data, cfg, progress=False)
    c = train(small_mlp(), s, data, TrainConfig(steps=30, batch_size=32, log_every=7, seed=1), progress=False)
    assert a.losses == b.losses and a.losses != c.losses
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)
    for p, q in zip(a.ema.parameters(), b.ema.parameters()):
        assert torch.equal(p, q)


def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(tmp_path):
    s = Schedule.linear(100)
    data = moons(500)
    cfg = TrainConfig(steps=40, batch_size=32, log_every=10, checkpoint_every=15, keep_checkpoints=0)
    full = train(small_mlp(), s, data, cfg, out_dir=tmp_path / "full", progress=False)
    assert [k for k, _ in list_checkpoints(tmp_path / "full")] == [15, 30, 40]
    # A second folder holding only the step-15 checkpoint, then resume to 40.
    part = tmp_path / "part"
    part.mkdir()
    (part / "ckpt-00000015.pt").write_bytes((tmp_path / "full" / "ckpt-00000015.pt").read_bytes())
    r = train(small_mlp(seed=99), s, data, cfg, out_dir=part, progress=False, resume=True)
    assert r.resumed_from == 15 and r.step == 40
    assert r.losses == full.losses
    for p, q in zip(r.model.parameters(), full.model.parameters()):
        assert torch.equal(p, q)
    for p, q in zip(r.ema.parameters(), full.ema.parameters()):
        assert torch.equal(p, q)


def test_resume_refuses_a_different_run(tmp_path):
    s = Schedule.linear(100)
    data = moons(500)
    cfg = TrainConfig(steps=10, batch_size=32, checkpoint_every=5)
    train(small_mlp(), s, data, cfg, out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="lr"):
        train(small_mlp(), s, data, TrainConfig(steps=20, batch_size=32, lr=5e-4), out_dir=tmp_path, progress=False, resume=True)
    with pytest.raises(ValueError, match="model config"):
        train(MLP(MLPConfig(hidden=32, layers=2)), s, data, TrainConfig(steps=20, batch_size=32), out_dir=tmp_path, progress=False, resume=True)
    with pytest.raises(ValueError, match="schedule"):
        train(small_mlp(), Schedule.cosine(100), data, TrainConfig(steps=20, batch_size=32), out_dir=tmp_path, progress=False, resume=True)
    # Extending the same run to more steps is allowed.
    r = train(small_mlp(), s, data, TrainConfig(steps=15, batch_size=32, checkpoint_every=5), out_dir=tmp_path, progress=False, resume=True)
    assert r.resumed_from == 10 and len(r.losses) == 15


class NaNAfter(MLP):
    """An eps-model that returns NaN from its `bad`-th call on (an MLP, so checkpoints can hold it)."""

    def __init__(self, bad):
        super().__init__(MLPConfig(hidden=16, layers=1))
        self.calls = 0
        self.bad = bad

    def forward(self, x, t):
        self.calls += 1
        out = super().forward(x, t)
        return out * float("nan") if self.calls >= self.bad else out


def test_a_nan_loss_stops_training_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    s = Schedule.linear(100)
    m = NaNAfter(bad=24)  # call 1 is train's pre-flight forward pass; call k + 1 is step k
    cfg = TrainConfig(steps=100, batch_size=16, checkpoint_every=10, log_every=50, keep_checkpoints=0)
    with pytest.raises(FloatingPointError, match=r"step 23\b.*ckpt-00000020"):
        train(m, s, moons(200), cfg, out_dir=tmp_path, progress=False)
    steps = [k for k, _ in list_checkpoints(tmp_path)]
    assert steps == [10, 20]
    payload = read_payload(tmp_path / "ckpt-00000020.pt")
    assert payload["step"] == 20
    assert all(torch.isfinite(v).all() for v in payload["model"].values())
    assert all(math.isfinite(v) for v in payload["losses"]) and len(payload["losses"]) == 20


def test_ema_update_is_the_lerp_with_warmup_and_copies_buffers():
    assert ema_decay(0.9999, 0) == pytest.approx(0.1)
    assert ema_decay(0.9999, 1) == pytest.approx(2 / 11)
    assert ema_decay(0.9999, 10**6) == 0.9999
    assert ema_decay(0.99, 5, warmup=False) == 0.99
    m = nn.BatchNorm1d(3)  # parameters and running-statistics buffers
    e = EMA(m, decay=0.9)
    ref = [p.detach().clone() for p in m.parameters()]
    for step in range(1, 6):
        with torch.no_grad():
            for p in m.parameters():
                p.add_(step)
            m.running_mean.fill_(float(step))
        d = e.update(m, step)
        assert d == pytest.approx(min(0.9, (1 + step) / (10 + step)))
        ref = [d * r + (1 - d) * p.detach() for r, p in zip(ref, m.parameters())]
        for r, p in zip(ref, e.module.parameters()):
            torch.testing.assert_close(p, r)
        assert torch.equal(e.module.running_mean, torch.full((3,), float(step)))  # copied, never averaged
    assert not any(p.requires_grad for p in e.module.parameters())
    with pytest.raises(ValueError, match="decay"):
        EMA(m, decay=1.0)


def test_learning_rate_warmup():
    cfg = TrainConfig(lr=1e-3, warmup=10)
    assert [lr_at(cfg, k) for k in (1, 5, 10, 11, 1000)] == pytest.approx([1e-4, 5e-4, 1e-3, 1e-3, 1e-3])
    assert lr_at(TrainConfig(lr=2e-4, warmup=0), 1) == 2e-4


def test_gradient_clipping_bounds_the_gradient_norm(tmp_path):
    """Adam's first moment after one step is m_1 = (1 - beta1) g: the checkpointed optimizer
    state shows the gradient that was used, clipped to grad_clip or not."""
    s = Schedule.linear(100)
    data = moons(200) * 50  # huge inputs: gradients far above the clip

    def first_grad_norm(clip, d):
        train(small_mlp(), s, data, TrainConfig(steps=1, batch_size=64, grad_clip=clip), out_dir=d, progress=False)
        st = load_checkpoint(d).optimizer_state["state"]
        return float(torch.sqrt(sum((v["exp_avg"] / 0.1).pow(2).sum() for v in st.values())))

    assert first_grad_norm(0.01, tmp_path / "on") == pytest.approx(0.01, rel=1e-3)
    assert first_grad_norm(0, tmp_path / "off") > 1


def test_bad_configs_and_devices():
    for kw in (dict(steps=0), dict(batch_size=0), dict(lr=0), dict(lr=-1.0), dict(ema_decay=1.0), dict(grad_clip=-1.0),
               dict(warmup=-1), dict(log_every=0), dict(steps=2.5)):
        with pytest.raises(ValueError, match=next(iter(kw))):
            TrainConfig(**kw)
    s = Schedule.linear(10)
    with pytest.raises(ValueError, match="data"):
        train(small_mlp(), s, torch.zeros(10, dtype=torch.long), TrainConfig(steps=1), progress=False)
    with pytest.raises(ValueError, match="resume"):
        train(small_mlp(), s, moons(10), TrainConfig(steps=1), progress=False, resume=True)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
        for kw in (dict(bf16=True), dict(compile=True)):
            with pytest.raises(ValueError, match="only supported on CUDA"):
                train(small_mlp(), s, moons(10), TrainConfig(steps=1, **kw), progress=False)
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_trains_the_digits_unet_and_its_checkpoint_rebuilds_it(tmp_path):
    from ddpm import UNet

    torch.manual_seed(0)
    net = UNet.preset("digits")
    data = load_dataset("digits", n=64, generator=torch.Generator().manual_seed(0))
    s = Schedule.linear(1000)
    r = train(net, s, data, TrainConfig(steps=3, batch_size=8, lr=1e-3), out_dir=tmp_path, progress=False)
    assert all(math.isfinite(v) for v in r.losses)
    ck = load_checkpoint(tmp_path)
    assert type(ck.model).__name__ == "UNet" and ck.model.config == net.config
    x = torch.randn(2, 1, 8, 8)
    t = torch.tensor([5, 900])
    with torch.no_grad():
        torch.testing.assert_close(ck.ema(x, t), r.ema(x, t))
        torch.testing.assert_close(ck.model(x, t), r.model(x, t))


def test_the_train_step_reads_nothing_back_from_the_device(monkeypatch):
    """No .item(), .tolist(), int(), float() or bool() of a tensor in ddpm/step.py or ddpm/ema.py during
    a step (each would be a host-device sync on CUDA): counted by wrapping those methods."""
    import sys

    from ddpm import TrainStep

    mine = ("ddpm/step.py", "ddpm/ema.py")
    calls = []

    def wrap(name):
        orig = getattr(torch.Tensor, name)

        def f(self, *a, **k):
            caller = sys._getframe(1).f_code.co_filename.replace("\\", "/")
            if caller.endswith(mine):
                calls.append((name, caller))
            return orig(self, *a, **k)

        return f

    model = small_mlp()
    cfg = TrainConfig(steps=10, batch_size=16, log_every=10)
    st = TrainStep(model, Schedule.linear(100), cfg, generator=torch.Generator().manual_seed(0))
    data = moons(100)
    for name in ("item", "tolist", "__int__", "__float__", "__bool__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, wrap(name))
    for k in range(1, 6):
        st(data, k)
    assert calls == []
    st.read_losses()  # the one read-back, outside the step
    assert [n for n, _ in calls] == ["tolist"]
    monkeypatch.undo()
    # The step is the step train() runs: the same losses from the same seed.
    r = train(small_mlp(), Schedule.linear(100), data, TrainConfig(steps=5, batch_size=16, log_every=10), progress=False)
    st2 = TrainStep(small_mlp(), Schedule.linear(100), cfg, generator=torch.Generator().manual_seed(0))
    for k in range(1, 6):
        st2(data, k)
    assert st2.read_losses() == r.losses


def test_train_reports_images_per_second_after_warm_up():
    r = train(small_mlp(), Schedule.linear(100), moons(200), TrainConfig(steps=40, batch_size=16, log_every=10), progress=False)
    assert r.warmup_steps == 10 and r.images_per_second > 0
    assert r.images_per_second == pytest.approx(16 * r.steps_per_sec, rel=0.9)  # the same order as the whole-run rate
    assert (r.rank, r.world_size) == (0, 1)
    with pytest.raises(ValueError, match="cuda_graph is only supported on CUDA"):
        from ddpm import TrainStep

        TrainStep(small_mlp(), Schedule.linear(10), TrainConfig(cuda_graph=True), generator=torch.Generator())
