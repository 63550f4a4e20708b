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
from ddpm.checkpoint import CheckpointWarning, latest_checkpoint, list_checkpoints, payload_digest, read_payload
from ddpm.cli import main
from ddpm.ema import EMA



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


def _rewrite(path, change):
    """Load a checkpoint dict, change it, save it with a fresh digest (a file that passes the checksum)."""
    d = torch.load(path, weights_only=True)
    change(d)
    d["sha256"] = payload_digest(d)
    torch.save(d, path)


def test_any_pytorch_user_opens_a_checkpoint_and_the_digest_catches_edits(tmp_path):
    path, m, *_ = _saved(tmp_path)
    d = torch.load(path, weights_only=True)  # no ddpm needed
    assert d["model_class"] == "MLP" and d["model_config"]["hidden"] == 16 and d["step"] == 7
    assert all(torch.equal(d["model"][k], v) for k, v in m.state_dict().items())
    # An edit that still unpickles (one weight changed, the digest kept) is refused.
    d["model"][next(iter(d["model"]))].add_(1e-3)
    torch.save(d, path)
    with pytest.raises(ValueError, match="corrupted"):
        load_checkpoint(path)


def test_checkpoints_name_a_registry_class_never_a_module(tmp_path):
    path, *_ = _saved(tmp_path)
    _rewrite(path, lambda d: d.update(model_class="os:system"))
    with pytest.raises(ValueError, match="not one of the package's models"):
        load_checkpoint(path)

    class Custom(torch.nn.Module):
        config = MLPConfig()

    with pytest.raises(ValueError, match="not one of the package's models"):
        save_checkpoint(tmp_path / "c.pt", Custom(), Schedule.linear(10))


@pytest.mark.parametrize("change, match", [
    (lambda d: d.pop("model"), "lacks the keys \\['model'\\]"),
    (lambda d: d.pop("betas"), "lacks the keys"),
    (lambda d: d["model"].update({k: torch.full_like(v, float("nan")) for k, v in d["model"].items()}), "NaN or inf"),
    (lambda d: d["ema"].update({k: v * float("inf") for k, v in d["ema"].items()}), "EMA weights hold NaN or inf"),
    (lambda d: d.update(version=1), "version 1 is not supported"),
])
def test_a_valid_checksum_with_bad_contents_is_one_clear_error(tmp_path, change, match):
    path, *_ = _saved(tmp_path)
    _rewrite(path, change)
    with pytest.raises(ValueError, match=match) as e:
        load_checkpoint(path)
    assert path.name in str(e.value) and "\n" not in str(e.value)


def test_a_damaged_newest_checkpoint_is_reported_and_the_older_one_used(tmp_path):
    old, *_ = _saved(tmp_path, 5)
    new, *_ = _saved(tmp_path, 9)
    new.write_bytes(new.read_bytes()[:1000])  # truncated
    with pytest.warns(CheckpointWarning, match="ckpt-00000009.pt.*using ckpt-00000005.pt"):
        ck = load_checkpoint(tmp_path)
    assert ck.path == old and ck.step == 5 and [p for p, _ in ck.skipped] == [new]
    msgs = []
    assert load_checkpoint(tmp_path, report=msgs.append).step == 5 and len(msgs) == 1
    old.write_bytes(b"")
    with pytest.raises(ValueError, match="no valid checkpoint"):
        load_checkpoint(tmp_path)


def test_print_checkpoint_is_one_short_line(tmp_path):
    path, *_ = _saved(tmp_path)
    text = repr(load_checkpoint(path))
    assert "\n" not in text and len(text) < 300 and "step 7" in text and "exp_avg" not in text


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


def test_the_books_shipped_checkpoint_is_in_the_current_format():
    path = Path(__file__).resolve().parents[1] / "book" / "data" / "digits_unet.pt"
    d = torch.load(path, weights_only=True)
    assert d["format"] == "ddpm-checkpoint" and d["model_class"] == "UNet" and d["sha256"] == payload_digest(d)
    ck = load_checkpoint(path)
    assert ck.data == "digits" and ck.model.config.image_size == 8
