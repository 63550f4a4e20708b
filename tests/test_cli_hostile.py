"""Hostile input through the real command line (``python -m ddpm`` in a subprocess): every case exits
with code 2, prints exactly one line on stderr, no traceback, and loses nothing (the run folder's
checkpoints are unchanged and no output file appears)."""

import hashlib
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
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
    ck = sorted(run.glob("ckpt-*.pt"))[-1]
    (root / "truncated.pt").write_bytes(ck.read_bytes()[:2000])
    _bad_copy(run, root / "nan.pt", lambda d: d["ema"].update({k: v * float("nan") for k, v in d["ema"].items()}))
    _bad_copy(run, root / "nokeys.pt", lambda d: d.pop("model"))
    return root


R, O = "{run}", "{root}"  # placeholders filled per case
CASES = [
    # (arguments, a phrase the one error line must hold)
    (["train", "--data", "moons", "--lr", "0", "--out", f"{O}/new"], "--lr"),
    (["train", "--data", "moons", "--lr", "nan", "--out", f"{O}/new"], "--lr"),
    (["train", "--data", "moons", "--batch-size", "0", "--out", f"{O}/new"], "--batch-size"),
    (["train", "--data", "moons", "--threads", "0", "--out", f"{O}/new"], "--threads"),
    (["train", "--data", "moons", "--steps", "-5", "--out", f"{O}/new"], "--steps"),
    (["train", "--data", "moons", "--ema-decay", "1", "--out", f"{O}/new"], "[0, 1)"),
    (["train", "--data", "moons", "--model", "unet", "--out", f"{O}/new"], "square images"),
    (["train", "--data", "moons", "--channels", "8", "--out", f"{O}/new"], "--channels not for --model mlp"),
    (["train", "--data", "digits", "--hidden", "8", "--out", f"{O}/new"], "--hidden not for --model unet-digits"),
    (["train", "--data", "nope", "--out", f"{O}/new"], "unknown data set 'nope'"),
    (["train", "--data", "moons", "--out", f"{O}/afile"], "is a file"),
    (["train", "--data", "moons", "--out", f"{O}/afile/run"], "is a file"),
    (["train", "--data", "moons", "--out", R], "already holds checkpoints"),
    (["train", "--out", R, "--resume", "--data", "swissroll"], "--data swissroll differs from the run's moons"),
    (["train", "--out", R, "--resume", "--lr", "0.5"], "--lr 0.5 differs"),
    (["train", "--out", R, "--resume", "--hidden", "32"], "model config has hidden=16"),
    (["train", "--out", f"{O}/empty", "--resume"], "--data is required"),
    (["train-classifier", "--data", "digits", "--epochs", "0", "--out", f"{O}/clf"], "--epochs"),
    (["train-classifier", "--data", "digits"], "--out"),
    (["train-classifier", "--data", "digits", "--out", str(WEIGHTS_DIR)], "inside the installed ddpm package"),
    (["evaluate", "--checkpoint", R, "-n", "0"], "-n"),
    (["sample", "--checkpoint", R, "--eta", "inf", "--out", f"{O}/s.png"], "--eta"),
    (["sample", "--checkpoint", R, "--eta", "5", "--out", f"{O}/s.png"], "[0, 1]"),
    (["sample", "--checkpoint", R, "--sampler", "ddpm", "--eta", "0.3", "--out", f"{O}/s.png"], "--eta applies to --sampler ddim only"),
    (["sample", "--checkpoint", R, "--steps", "0", "--out", f"{O}/s.png"], "--steps"),
    (["sample", "--checkpoint", R, "--steps", "21", "--out", f"{O}/s.png"], "1..T = 1..20"),
    (["sample", "--checkpoint", R, "--out", f"{O}/s.txt"], "image file"),
    (["sample", "--checkpoint", R, "--out", f"{O}/afile/s.png"], "is a file"),
    (["sample", "--checkpoint", f"{O}/truncated.pt", "--out", f"{O}/s.png"], "truncated.pt is truncated, corrupted"),
    (["sample", "--checkpoint", f"{O}/nan.pt", "--out", f"{O}/s.png"], "NaN or inf"),
    (["sample", "--checkpoint", f"{O}/nokeys.pt", "--out", f"{O}/s.png"], "lacks the keys ['model']"),
    (["sample", "--checkpoint", f"{O}/missing.pt", "--out", f"{O}/s.png"], "checkpoint not found"),
]


def _digest_folder(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def _run(argv):
    return subprocess.run([sys.executable, "-m", "ddpm", *argv], capture_output=True, text=True, timeout=300)


def test_hostile_cases_through_the_real_cli(world):
    run = world / "run"
    before = _digest_folder(world)
    argvs = [[a.replace(R, str(run)).replace(O, str(world)) for a in argv] for argv, _ in CASES]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(_run, argvs))
    failures = []
    for (argv, phrase), p in zip(CASES, results):
        lines = p.stderr.strip().splitlines()
        ok = (p.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and phrase in lines[0]
              and "Traceback" not in p.stderr)
        if not ok:
            failures.append(f"{' '.join(argv)}\n   rc={p.returncode} stderr={p.stderr.strip()[-400:]!r}")
    assert not failures, "\n".join(failures)
    assert _digest_folder(world) == before  # nothing written, nothing lost (run folder included)
