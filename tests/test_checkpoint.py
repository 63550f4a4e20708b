"""Checkpoints: round trip, atomic writes, corrupted files refused, and kill -9 then --resume."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ddpm import MLP, MLPConfig, Schedule, TrainConfig, load_checkpoint, save_checkpoint
from ddpm.checkpoint import MAGIC, latest_checkpoint, list_checkpoints, read_payload
from ddpm.cli import main
from ddpm.ema import EMA


@pytest.fixture(autouse=True)
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _saved(tmp_path, step=7):
    torch.manual_seed(0)
    m = MLP(MLPConfig(hidden=16, layers=1))
    ema = EMA(m, 0.9)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    opt = torch.optim.AdamW(m.parameters())
    s = Schedule.cosine(50)
    path = save_checkpoint(tmp_path / f"ckpt-{step:08d}.pt", m, s, ema=ema.module, optimizer=opt, step=step,
                           train_config=TrainConfig(steps=99), rng={"generator": torch.Generator().get_state()},
                           losses=[0.5, 0.25], meta={"data": "moons"})
    return path, m, ema.module, s


def test_round_trip_rebuilds_everything(tmp_path):
    path, m, ema, s = _saved(tmp_path)
    ck = load_checkpoint(path)
    assert isinstance(ck.model, MLP) and ck.model.config == m.config
    for a, b in zip(ck.model.parameters(), m.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(ck.ema.parameters(), ema.parameters()):
        assert torch.equal(a, b)
    assert not torch.equal(next(ck.model.parameters()), next(ck.ema.parameters()))
    assert torch.equal(ck.schedule.betas, s.betas) and ck.schedule.T == 50
    assert ck.config == TrainConfig(steps=99) and ck.step == 7 and ck.losses == [0.5, 0.25]
    assert ck.data == "moons" and ck.sampling_model is ck.ema
    assert not ck.model.training and not ck.ema.training
    assert load_checkpoint(tmp_path).path == path  # a folder: its latest checkpoint


def test_latest_checkpoint_ignores_temporary_files(tmp_path):
    _saved(tmp_path, 5)
    _saved(tmp_path, 120)
    (tmp_path / ".ckpt-00000200.pt.tmp-123").write_bytes(b"partial")
    (tmp_path / "ckpt-notes.txt").write_text("x")
    assert [k for k, _ in list_checkpoints(tmp_path)] == [5, 120]
    assert latest_checkpoint(tmp_path).name == "ckpt-00000120.pt"
    assert latest_checkpoint(tmp_path / "nothing") is None


def test_a_failed_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path, m, ema, s = _saved(tmp_path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, MLP(MLPConfig(hidden=16, layers=1)), s, step=8)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left behind


@pytest.mark.parametrize("damage", ["flip", "truncate", "header", "empty"])
def test_corrupted_checkpoints_are_refused_with_a_clear_message(tmp_path, damage):
    path, *_ = _saved(tmp_path)
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0xFF
    elif damage == "truncate":
        raw = raw[: len(raw) * 2 // 3]
    elif damage == "header":
        raw = raw[:40]
    else:
        raw = b""
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=str(path.name)) as e:
        load_checkpoint(path)
    assert any(w in str(e.value) for w in ("corrupted", "truncated", "not a ddpm checkpoint"))


def test_foreign_missing_and_mismatched_files(tmp_path):
    other = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="not a ddpm checkpoint"):
        load_checkpoint(other)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "empty")
    # Weights that do not fit the stored config (a config edited after training).
    m = MLP(MLPConfig(hidden=16, layers=1))
    m.config = MLPConfig(hidden=32, layers=1)
    save_checkpoint(tmp_path / "bad.pt", m, Schedule.linear(10))
    with pytest.raises(ValueError, match="do not match"):
        load_checkpoint(tmp_path / "bad.pt")
    # A payload that passes the checksum but is not a torch file.
    import hashlib

    body = b"not a torch file"
    (tmp_path / "weird.pt").write_bytes(MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body)
    with pytest.raises(ValueError, match="cannot read"):
        read_payload(tmp_path / "weird.pt")


TRAIN = ["train", "--data", "moons", "--n", "500", "--T", "100", "--hidden", "32", "--layers", "1",
         "--batch-size", "32", "--steps", "150", "--checkpoint-every", "10", "--log-every", "5", "--seed", "3",
         "--threads", "1", "--no-progress", "--device", "cpu"]


def test_kill_9_then_resume_ends_with_the_same_weights_as_an_uninterrupted_run(tmp_path):
    killed = tmp_path / "killed"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "ddpm", *TRAIN, "--out", str(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and not list_checkpoints(killed):
            time.sleep(0.01)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = [k for k, _ in list_checkpoints(killed)]
    assert done and max(done) < 150  # killed mid-run
    for _, p in list_checkpoints(killed):
        read_payload(p)  # every file left behind is whole

    assert main([*TRAIN, "--out", str(killed), "--resume"]) == 0
    assert main([*TRAIN, "--out", str(tmp_path / "straight")]) == 0
    a = read_payload(killed / "ckpt-00000150.pt")
    b = read_payload(tmp_path / "straight" / "ckpt-00000150.pt")
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs"
    for i, st in a["optimizer"]["state"].items():
        assert torch.equal(st["exp_avg_sq"], b["optimizer"]["state"][i]["exp_avg_sq"])
    assert a["losses"] == b["losses"] and len(a["losses"]) == 150
    assert torch.equal(a["rng"]["generator"], b["rng"]["generator"])
