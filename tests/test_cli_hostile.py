"""Hostile input through the command line, in-process (``ddpm.cli.main(argv)``, stdout and stderr
captured): every case exits with code 2, prints exactly one line on stderr that names the flag or
the bad value, no traceback, and loses nothing (the run folder's checkpoints are unchanged and no
output file appears). One case also runs as a real ``python -m ddpm`` process (test_cli.py has the
other subprocess smoke tests)."""

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddpm.checkpoint import payload_digest
from ddpm.classifier import WEIGHTS_DIR
from ddpm.cli import main

TINY = ["--hidden", "16", "--layers", "1", "--T", "20", "--n", "200", "--batch-size", "16", "--threads", "1",
        "--no-progress", "--device", "cpu"]


def _bad_copy(run: Path, dest: Path, change) -> Path:
    d = torch.load(sorted(run.glob("ckpt-*.pt"))[-1], weights_only=True)
    change(d)
    d["sha256"] = payload_digest(d)
    torch.save(d, dest)
    return dest


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    run = root / "run"
    n = torch.get_num_threads()
    try:
        assert main(["train", "--data", "moons", "--steps", "20", "--checkpoint-every", "10", "--out", str(run), *TINY]) == 0
    finally:
        torch.set_num_threads(n)
    (root / "afile").write_text("not a folder")
    (root / "userfiles").mkdir()
    (root / "userfiles" / "notes.tmp").write_text("a user's file: never deleted")
    (root / "userfiles" / "loss.csv").write_text("a user's table: never overwritten")
    ck = sorted(run.glob("ckpt-*.pt"))[-1]
    (root / "truncated.pt").write_bytes(ck.read_bytes()[:2000])
    _bad_copy(run, root / "nan.pt", lambda d: d["ema"].update({k: v * float("nan") for k, v in d["ema"].items()}))
    _bad_copy(run, root / "nokeys.pt", lambda d: d.pop("model"))
    return root


R, O = "{run}", "{root}"  # placeholders filled per case
HUGE = "1" + "0" * 40
CASES = [
    # (arguments, words the one error line must hold: the flag and/or the bad value)
    (["train", "--data", "moons", "--lr", "0", "--out", f"{O}/new"], ["--lr"]),
    (["train", "--data", "moons", "--lr", "nan", "--out", f"{O}/new"], ["--lr", "nan"]),
    (["train", "--data", "moons", "--lr", "1e300", "--out", f"{O}/new"], ["--lr", "1e300"]),
    (["train", "--data", "moons", "--batch-size", "0", "--out", f"{O}/new"], ["--batch-size"]),
    (["train", "--data", "moons", "--threads", "0", "--out", f"{O}/new"], ["--threads"]),
    (["train", "--data", "moons", "--threads", HUGE, "--out", f"{O}/new"], ["--threads", "digits"]),
    (["train", "--data", "moons", "--seed", HUGE, "--out", f"{O}/new"], ["--seed", "digits"]),
    (["train", "--data", "moons", "--seed", str(2**40), "--out", f"{O}/new"], ["--seed", str(2**40)]),
    (["train", "--data", "moons", "--dist-timeout", "1e300", "--out", f"{O}/new"], ["--dist-timeout"]),
    (["train", "--data", "digits", "--res-blocks", HUGE, "--out", f"{O}/new"], ["--res-blocks"]),
    (["train", "--data", "moons", "--n", HUGE, "--out", f"{O}/new"], ["--n"]),
    (["train", "--data", "moons", "--T", HUGE, "--out", f"{O}/new"], ["--T"]),
    (["train", "--data", "moons", "--steps", "-5", "--out", f"{O}/new"], ["--steps", "-5"]),
    (["train", "--data", "moons", "--sample-every", "-1", "--out", f"{O}/new"], ["--sample-every", "-1"]),
    (["train", "--data", "moons", "--ema-decay", "1", "--out", f"{O}/new"], ["--ema-decay", "1"]),
    (["train", "--data", "moons", "--model", "unet", "--out", f"{O}/new"], ["--model unet"]),
    (["train", "--data", "moons", "--channels", "8", "--out", f"{O}/new"], ["--channels", "--model mlp"]),
    (["train", "--data", "digits", "--hidden", "8", "--out", f"{O}/new"], ["--hidden", "unet-digits"]),
    (["train", "--data", "nope", "--out", f"{O}/new"], ["nope"]),
    (["train", "--data", "moons", "--out", f"{O}/afile"], ["afile"]),
    (["train", "--data", "moons", "--out", f"{O}/afile/run"], ["afile"]),
    (["train", "--data", "moons", "--out", f"{O}/userfiles"], ["userfiles", "notes.tmp"]),
    (["train", "--data", "moons", "--out", R], [R, "--resume"]),
    (["train", "--out", R, "--resume", "--data", "swissroll"], ["--data", "swissroll", "moons"]),
    (["train", "--out", R, "--resume", "--lr", "0.5"], ["--lr", "0.5"]),
    (["train", "--out", R, "--resume", "--hidden", "32"], ["--hidden", "32", "16"]),
    (["train", "--out", R, "--resume", "--n", "300"], ["--n", "300", "200"]),
    (["train", "--out", R, "--resume", "--T", "30"], ["--T", "30", "20"]),
    (["train", "--out", f"{O}/empty", "--resume"], ["--data"]),
    (["train-classifier", "--data", "digits", "--epochs", "0", "--out", f"{O}/clf"], ["--epochs"]),
    (["train-classifier", "--data", "digits"], ["--out"]),
    (["train-classifier", "--data", "digits", "--out", str(WEIGHTS_DIR)], [str(WEIGHTS_DIR)]),
    (["evaluate", "--checkpoint", R, "-n", "0"], ["-n"]),
    (["sample", "--checkpoint", R, "--eta", "inf", "--out", f"{O}/s.png"], ["--eta", "inf"]),
    (["sample", "--checkpoint", R, "--eta", "5", "--out", f"{O}/s.png"], ["--eta", "5"]),
    (["sample", "--checkpoint", R, "--sampler", "ddpm", "--eta", "0.3", "--out", f"{O}/s.png"], ["--eta", "--sampler"]),
    (["sample", "--checkpoint", R, "--steps", "0", "--out", f"{O}/s.png"], ["--steps", "0"]),
    (["sample", "--checkpoint", R, "--steps", "21", "--out", f"{O}/s.png"], ["--steps", "21"]),
    (["sample", "--checkpoint", R, "--seed", HUGE, "--out", f"{O}/s.png"], ["--seed"]),
    (["sample", "--checkpoint", R, "--out", f"{O}/s.txt"], ["--out", "s.txt"]),
    (["sample", "--checkpoint", R, "--out", f"{O}/afile/s.png"], ["afile"]),
    (["sample", "--checkpoint", f"{O}/truncated.pt", "--out", f"{O}/s.png"], ["truncated.pt"]),
    (["sample", "--checkpoint", f"{O}/nan.pt", "--out", f"{O}/s.png"], ["nan.pt", "NaN"]),
    (["sample", "--checkpoint", f"{O}/nokeys.pt", "--out", f"{O}/s.png"], ["nokeys.pt", "model"]),
    (["sample", "--checkpoint", f"{O}/missing.pt", "--out", f"{O}/s.png"], ["missing.pt"]),
]


def _digest_folder(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def _fill(argv, root: Path):
    return [a.replace(R, str(root / "run")).replace(O, str(root)) for a in argv]


@pytest.mark.parametrize("argv,words", CASES, ids=[" ".join(a[:4]) for a, _ in CASES])
def test_hostile_case_is_one_named_line_and_loses_nothing(world, argv, words, capsys):
    before = _digest_folder(world)
    n = torch.get_num_threads()
    try:
        code = main(_fill(argv, world))
    finally:
        torch.set_num_threads(n)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (code, err[-400:])
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err[-400:]
    for w in _fill(words, world):
        assert w in lines[0], (w, lines[0])
    assert _digest_folder(world) == before  # nothing written, nothing lost (run folder included)


def test_a_hostile_case_in_a_real_process(world):
    p = subprocess.run([sys.executable, "-m", "ddpm", "train", "--data", "moons", "--seed", HUGE, "--out", str(world / "new")],
                       capture_output=True, text=True, timeout=300)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "--seed" in lines[0] and "Traceback" not in p.stderr
