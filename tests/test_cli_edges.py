"""The command line's edges: OS errors as one line naming the path, resume from the checkpoint's own
settings, users' images with a U-Net sized from the command line, a damaged newest checkpoint, a
classifier trained into a user folder and named by hash, and flags generated from TrainConfig."""

import dataclasses
import errno
import json
import os
import shutil

import numpy as np
import pytest
import torch

from ddpm import TrainConfig, load_checkpoint
from ddpm.cli import main

TINY = ["--T", "20", "--batch-size", "16", "--threads", "1", "--no-progress", "--device", "cpu"]
MLP = ["--hidden", "16", "--layers", "1", "--n", "200"]



def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("edges") / "run"
    assert main(["train", "--data", "moons", "--steps", "20", "--checkpoint-every", "10", "--out", str(out), *MLP, *TINY]) == 0
    return out


def test_a_full_disk_while_writing_a_figure_is_one_line_and_leaves_nothing(run, tmp_path, capsys, monkeypatch):
    real = os.replace

    def full(src, dst):
        if str(dst).endswith(".png"):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", full)
    out = tmp_path / "s.png"
    assert main(["sample", "--checkpoint", str(run), "--steps", "2", "-n", "10", "--out", str(out), "--no-progress"]) == 2
    err = one_error(capsys)
    assert str(out) in err and os.strerror(errno.ENOSPC) in err  # names the file and the reason
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_an_unwritable_out_folder_is_refused_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(os, "access", lambda p, mode: False)  # as for a non-root user in a read-only folder
    assert main(["train", "--data", "moons", "--steps", "5", "--out", str(tmp_path / "run"), *MLP, *TINY]) == 2
    assert "not writable" in one_error(capsys) and not (tmp_path / "run").exists()


def test_resume_reads_the_runs_settings_from_its_checkpoint(run, capsys):
    # No --data, no model or schedule flags: all come from the checkpoint; --steps may grow.
    assert main(["train", "--out", str(run), "--resume", "--steps", "30", "--no-progress", "--threads", "1"]) == 0
    assert "to step 30 (resumed from 20)" in capsys.readouterr().out
    ck = load_checkpoint(run)
    assert ck.step == 30 and ck.meta["data"] == "moons" and ck.model.config.hidden == 16 and ck.schedule.T == 20
    assert ck.config.batch_size == 16 and ck.meta["n"] == 200


def test_a_damaged_newest_checkpoint_is_reported_and_the_older_one_sampled(run, tmp_path, capsys):
    folder = tmp_path / "copy"
    shutil.copytree(run, folder)
    newest = sorted(folder.glob("ckpt-*.pt"))[-1]
    newest.write_bytes(newest.read_bytes()[:500])
    assert main(["sample", "--checkpoint", str(folder), "--steps", "2", "-n", "10", "--out", str(tmp_path / "s.png"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: skipped damaged checkpoint(s) " + newest.name) and "using ckpt-" in err


def test_users_nhwc_images_train_a_unet_sized_from_the_command_line_and_evaluate_elsewhere(tmp_path, capsys):
    g = np.random.default_rng(0)
    imgs = (g.random((40, 12, 12, 3)) * 255).astype(np.uint8)  # NHWC, a size no preset has
    data = tmp_path / "mine.npy"
    np.save(data, imgs)
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--model", "unet", "--channels", "8", "--channel-mult", "1,2",
                 "--groups", "4", "--steps", "2", "--out", str(out), *TINY]) == 0
    ck = load_checkpoint(out)
    assert ck.model.config.image_size == 12 and ck.model.config.in_channels == 3 and ck.model.config.channel_mults == (1, 2)
    assert ck.meta["data"] == str(data.resolve())  # absolute: evaluate works from any folder
    moved = tmp_path / "elsewhere.npy"
    data.rename(moved)
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out), "--steps", "2", "-n", "10", "--no-progress", "--threads", "1"]) == 2
    assert "pass --data with its new location" in one_error(capsys)
    assert main(["evaluate", "--checkpoint", str(out), "--data", str(moved), "--steps", "2", "-n", "10", "--json",
                 "--no-progress", "--threads", "1"]) == 0
    r = json.loads(capsys.readouterr().out)
    sw = r["metrics"]["sliced_wasserstein"]
    assert {"distance", "baseline", "noise"} <= set(sw) and "classifier needs labels" in r["note"]


def test_train_classifier_writes_to_out_and_evaluate_names_it_by_hash(tmp_path, capsys):
    from ddpm.classifier import WEIGHTS_DIR

    shipped = {p.name: p.read_bytes() for p in WEIGHTS_DIR.iterdir()}
    clf = tmp_path / "clf"
    assert main(["train-classifier", "--data", "digits", "--epochs", "1", "--out", str(clf), "--no-progress"]) == 0
    assert (clf / "classifier-digits.safetensors").is_file() and (clf / "classifier-digits.json").is_file()
    assert {p.name: p.read_bytes() for p in WEIGHTS_DIR.iterdir()} == shipped  # the package is untouched
    run = tmp_path / "digits"
    assert main(["train", "--data", "digits", "--steps", "1", "--batch-size", "4", "--out", str(run), "--no-progress", "--threads", "1"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run), "--steps", "2", "-n", "20", "--classifier", str(clf), "--no-progress"]) == 0
    text = capsys.readouterr().out
    import hashlib

    sha = hashlib.sha256((clf / "classifier-digits.safetensors").read_bytes()).hexdigest()[:12]
    assert f"classifier {clf / 'classifier-digits.safetensors'} (sha256 {sha})" in text
    assert "frechet" in text and "confident_fraction" in text and "noise" in text


def test_an_image_set_without_a_classifier_says_how_to_train_one(monkeypatch, tmp_path, capsys):
    from ddpm import cli

    class A:
        classifier = None

    clf, note = cli._classifier_for(A(), "mnist")
    assert clf is None and "python -m ddpm train-classifier --data mnist --out classifiers" in note


def test_train_flags_are_generated_from_trainconfig(capsys):
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for f in dataclasses.fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in text, f.name
    assert "1 for a model under 2M parameters" in text  # the thread policy is said
    assert "AdamW learning rate" in text  # help from the field's comment


def test_nan_samples_write_no_figure_and_no_array(tmp_path):
    from ddpm.plotting import save_array, save_figure

    x = torch.zeros(4, 2)
    x[1, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="1 of 8 values"):
        save_figure(x, tmp_path / "s.png")
    with pytest.raises(FloatingPointError):
        save_array(x, tmp_path / "s.npy")
    assert list(tmp_path.iterdir()) == []
    save_figure(torch.zeros(4, 1, 8, 8), tmp_path / "ok.png")
    assert (tmp_path / "ok.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_from_a_chosen_checkpoint_continues_that_run_exactly(tmp_path, capsys):
    args = ["--data", "moons", "--n", "300", "--T", "50", "--hidden", "16", "--layers", "1", "--batch-size", "32",
            "--checkpoint-every", "20", "--keep-checkpoints", "0", "--log-every", "10", "--threads", "1", "--no-progress",
            "--device", "cpu"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", *args, "--steps", "60", "--out", str(a)]) == 0
    assert main(["train", *args, "--steps", "40", "--out", str(b)]) == 0
    # back to step 20 of run a (not its newest, 60), then on to 40: the same as run b
    assert main(["train", "--out", str(a), "--resume", "--checkpoint", str(a / "ckpt-00000020.pt"), "--steps", "40",
                 "--no-progress", "--threads", "1"]) == 0
    assert "resumed from 20" in capsys.readouterr().out
    x, y = load_checkpoint(a / "ckpt-00000040.pt"), load_checkpoint(b / "ckpt-00000040.pt")
    for k, v in x.model.state_dict().items():
        assert torch.equal(v, y.model.state_dict()[k]), k
    assert main(["train", "--out", str(a), "--checkpoint", str(a / "ckpt-00000020.pt")]) == 2
    assert main(["train", "--out", str(a), "--resume", "--checkpoint", str(b / "ckpt-00000040.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "add --resume" in err[0] and "not in the run folder" in err[1]


def test_out_with_a_tilde_is_expanded_once_and_used_everywhere(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data", "moons", "--steps", "3", "--out=~/run", *MLP, *TINY]) == 0
    assert (home / "run" / "ckpt-00000003.pt").is_file() and not (tmp_path / "~").exists()
    assert str(home / "run") in capsys.readouterr().out
    assert main(["sample", "--checkpoint=~/run", "--steps", "2", "-n", "10", "--out=~/s.png", "--no-progress"]) == 0
    assert (home / "s.png").is_file() and not (tmp_path / "~").exists()


def test_the_package_guard_sees_the_expanded_path(monkeypatch, capsys):
    import ddpm

    pkg = os.path.dirname(ddpm.__file__)
    monkeypatch.setenv("HOME", pkg)
    assert main(["train", "--data", "moons", "--steps", "3", "--out=~/runs", *MLP, *TINY]) == 2
    assert "inside the installed ddpm package" in one_error(capsys) and not os.path.exists(os.path.join(pkg, "runs"))


def test_a_moved_data_file_resumes_with_its_new_data_and_a_changed_one_is_refused(tmp_path, capsys):
    pts = np.random.default_rng(0).uniform(-1, 1, (300, 2)).astype(np.float32)
    src = tmp_path / "pts.npy"
    np.save(src, pts)
    out = tmp_path / "run"
    assert main(["train", "--data", str(src), "--steps", "4", "--checkpoint-every", "2", "--out", str(out), *MLP[:4], *TINY]) == 0
    moved = tmp_path / "elsewhere.npy"
    src.rename(moved)
    assert main(["train", "--out", str(out), "--resume", "--steps", "6", "--no-progress", "--threads", "1"]) == 2
    err = one_error(capsys)
    assert "--data" in err and str(src) in err  # names the missing file and the flag that fixes it
    assert main(["train", "--out", str(out), "--resume", "--data", str(moved), "--steps", "6", "--no-progress", "--threads", "1"]) == 0
    assert "to step 6 (resumed from 4)" in capsys.readouterr().out
    np.save(moved, pts[::-1].copy())  # the same file, changed in place
    assert main(["train", "--out", str(out), "--resume", "--data", str(moved), "--steps", "8", "--no-progress", "--threads", "1"]) == 2
    err = one_error(capsys)
    assert "changed" in err and str(moved) in err
    other = tmp_path / "other.npy"
    np.save(other, pts[:200])
    assert main(["train", "--out", str(out), "--resume", "--data", str(other), "--steps", "8", "--no-progress", "--threads", "1"]) == 2
    assert "--data" in one_error(capsys)


def test_sample_every_0_is_off(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", "moons", "--steps", "3", "--sample-every", "0", "--out", str(out), *MLP, *TINY]) == 0
    assert not (out / "samples.png").exists()
    out2 = tmp_path / "run2"
    assert main(["train", "--data", "moons", "--steps", "4", "--sample-every", "2", "--out", str(out2), *MLP, *TINY]) == 0
    assert (out2 / "samples.png").is_file()


def test_sigterm_ends_a_cli_run_with_a_checkpoint(tmp_path, capsys, monkeypatch):
    import signal

    import ddpm.step

    real = ddpm.step.TrainStep.__call__
    calls = []

    def step(self, data, k):
        calls.append(k)
        if k == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, data, k)

    monkeypatch.setattr(ddpm.step.TrainStep, "__call__", step)
    out = tmp_path / "run"
    assert main(["train", "--data", "moons", "--steps", "50", "--out", str(out), *MLP, *TINY]) == 143
    err = one_error(capsys)
    assert "SIGTERM" in err and str(out / "ckpt-00000003.pt") in err and (out / "ckpt-00000003.pt").is_file()
