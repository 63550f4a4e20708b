"""`python -m ddpm`: smoke tests of every sub-command and its one-line errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from ddpm.cli import main

SMALL = ["--hidden", "32", "--layers", "1", "--T", "100", "--n", "2000", "--batch-size", "64",
         "--threads", "1", "--no-progress", "--device", "cpu"]



@pytest.fixture(scope="module")
def moons_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "moons"
    assert main(["train", "--data", "moons", "--steps", "300", "--checkpoint-every", "100", "--out", str(out), *SMALL]) == 0
    return out


def run_error(argv, capsys):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_train_writes_checkpoints_and_resume_continues(moons_run, capsys):
    assert sorted(p.name for p in moons_run.glob("ckpt-*.pt")) == ["ckpt-00000200.pt", "ckpt-00000300.pt"]
    assert main(["train", "--data", "moons", "--steps", "400", "--checkpoint-every", "100", "--out", str(moons_run), "--resume", *SMALL]) == 0
    assert "resumed from 300" in capsys.readouterr().out
    from ddpm import load_checkpoint

    ck = load_checkpoint(moons_run)
    assert ck.step == 400 and len(ck.losses) == 400 and ck.data == "moons"


def test_sample_scatter_and_raw_samples(moons_run, tmp_path, capsys):
    out = tmp_path / "s.png"
    for sampler, steps in (("ddim", "20"), ("ddpm", "100"), ("ddpm", "10")):
        assert main(["sample", "--checkpoint", str(moons_run), "--sampler", sampler, "--steps", steps, "-n", "300",
                     "--seed", "0", "--out", str(out), "--no-progress", "--threads", "1"]) == 0
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        x = np.load(tmp_path / "s.npy")
        assert x.shape == (300, 2) and np.isfinite(x).all()
    # The same seed gives the same DDIM samples.
    args = ["sample", "--checkpoint", str(moons_run), "--steps", "10", "-n", "50", "--no-progress", "--out"]
    main([*args, str(tmp_path / "a.png")])
    main([*args, str(tmp_path / "b.png")])
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


def test_evaluate_prints_metrics_and_json(moons_run, capsys):
    assert main(["evaluate", "--checkpoint", str(moons_run), "--sampler", "ddim", "--steps", "20", "-n", "400",
                 "--json", "--no-progress", "--bpd", "2"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["data"] == "moons" and r["n"] == 400 and r["steps"] == 20
    for m in ("sliced_wasserstein", "energy"):
        v = r["metrics"][m]
        assert v["distance"] < v["noise"]  # 300 steps of training already beat noise
    assert r["metrics"]["bits_per_dim"]["n"] == 2 and np.isfinite(r["metrics"]["bits_per_dim"]["mean"])
    assert main(["evaluate", "--checkpoint", str(moons_run), "--steps", "5", "-n", "100", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "sliced_wasserstein" in text and "data vs data" in text


def test_digits_unet_train_sample_evaluate(tmp_path, capsys):
    out = tmp_path / "digits"
    assert main(["train", "--data", "digits", "--steps", "2", "--batch-size", "8", "--out", str(out),
                 "--no-progress", "--threads", "1"]) == 0
    assert "unet-digits" in capsys.readouterr().out
    assert main(["sample", "--checkpoint", str(out), "--steps", "2", "-n", "6", "--out", str(tmp_path / "g.png"), "--no-progress"]) == 0
    assert np.load(tmp_path / "g.npy").shape == (6, 1, 8, 8)
    assert (tmp_path / "g.png").stat().st_size > 500
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out), "--steps", "2", "-n", "50", "--json", "--no-progress"]) == 0
    r = json.loads(capsys.readouterr().out)
    f = r["metrics"]["frechet"]
    assert f["baseline"] < f["noise"]
    c = r["metrics"]["confident_fraction"]  # always beside the same fraction for real data and for noise
    assert all(0 <= c[k] <= 1 for k in ("distance", "baseline", "noise"))
    assert r["classifier"]["sha256"] and "classifier-digits.safetensors" in r["classifier"]["path"]
    assert "sliced_wasserstein" in r["metrics"]  # pixel space: defined for every data set


def test_train_classifier_subcommand(tmp_path, capsys):
    assert main(["train-classifier", "--data", "digits", "--epochs", "5", "--out", str(tmp_path)]) == 0
    meta = json.loads((tmp_path / "classifier-digits.json").read_text())
    assert meta["epochs"] == 5 and 0.8 < meta["test_accuracy"] <= 1
    assert (tmp_path / "classifier-digits.safetensors").is_file()


def test_clear_errors(moons_run, tmp_path, capsys):
    base = ["--out", str(tmp_path / "x"), "--no-progress"]
    assert "nope" in run_error(["train", "--data", "nope", *base], capsys)  # names the bad value
    msg = run_error(["sample", "--checkpoint", str(moons_run), "--steps", "500", "--out", str(tmp_path / "s.png")], capsys)
    assert "--steps" in msg and "500" in msg
    assert str(tmp_path / "none.pt") in run_error(["sample", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "s.png")], capsys)
    assert str(tmp_path) in run_error(["evaluate", "--checkpoint", str(tmp_path)], capsys)
    bad = tmp_path / "bad.pt"
    raw = bytearray(sorted(moons_run.glob("ckpt-*.pt"))[-1].read_bytes())
    raw[len(raw) // 2] ^= 1
    bad.write_bytes(bytes(raw))
    assert str(bad) in run_error(["sample", "--checkpoint", str(bad), "--out", str(tmp_path / "s.png")], capsys)
    # Resuming a run with another model is a mismatched checkpoint.
    msg = run_error(["train", "--data", "moons", "--steps", "900", "--out", str(moons_run), "--resume",
                     *[a if a != "32" else "48" for a in SMALL]], capsys)
    assert "--hidden" in msg and "48" in msg and "32" in msg  # names the flag, the new and the run's value
    msg = run_error(["train", "--data", "moons", "--steps", "10", "--out", str(moons_run), *SMALL], capsys)
    assert str(moons_run) in msg and "--resume" in msg  # names the folder and the way on
    msg = run_error(["train", "--data", "mnist", "--data-dir", str(tmp_path / "empty"), *base], capsys)
    assert str(tmp_path / "empty" / "train-images-idx3-ubyte.gz") in msg and "--data-dir" in msg
    assert "--model mlp" in run_error(["train", "--data", "digits", "--model", "mlp", *base], capsys)
    if not torch.cuda.is_available():
        assert "CUDA is not available" in run_error(["train", "--data", "moons", "--device", "cuda", *base], capsys)
        assert "CUDA is not available" in run_error(["sample", "--checkpoint", str(moons_run), "--device", "cuda", "--out", str(tmp_path / "s.png")], capsys)


def test_errors_exit_2_without_a_traceback_in_a_real_process(tmp_path):
    p = subprocess.run([sys.executable, "-m", "ddpm", "sample", "--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "s.png")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().startswith("error: ") and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = subprocess.run([sys.executable, "-m", "ddpm", "--help"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and all(c in p.stdout for c in ("train", "sample", "evaluate"))
