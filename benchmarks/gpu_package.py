"""The package's own GPU path, end to end through the command line (not the benchmark harness):
`python -m ddpm train` with bf16 + CUDA graphs + channels-last on Fashion-MNIST, then
`python -m ddpm evaluate --fast` (DDIM-50 with the network in bf16 + CUDA graphs).

    python -m benchmarks.gpu_package --data-dir /path/to/fashion-mnist --steps 1500

Writes $OUT/package_gpu.json (or benchmarks/results/package_gpu.json without $OUT): the card, torch
version, commit, the wall time of each command, the training speed ddpm.train reported, and the
evaluate JSON. Copied into benchmarks/results/ by hand after a device run (the numbers are not edited).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from .common import RESULTS, environment, out_dir, write_json

ROOT = RESULTS.parents[1]  # the subprocesses run in the checkout, so they import its package


def run(cmd: list[str], log) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    log.write(f"$ {' '.join(cmd)}\n{r.stdout}\n{r.stderr}\n[{dt:.1f} s, rc {r.returncode}]\n")
    log.flush()
    if r.returncode:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return dt, r.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("-n", type=int, default=2000)
    args = ap.parse_args()
    out = out_dir()
    out.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp()) / "fashion"
    py = sys.executable
    with open(out / "package_gpu_log.txt", "w") as log:
        train_s, train_out = run([py, "-m", "ddpm", "train", "--data", "fashion-mnist", "--data-dir", args.data_dir, "--steps", str(args.steps),
                          "--out", str(run_dir), "--device", "cuda", "--bf16", "--compile", "--compile-mode", "reduce-overhead",
                          "--channels-last", "--checkpoint-every", str(args.steps // 2), "--no-progress"], log)
        import ddpm

        ck = ddpm.load_checkpoint(run_dir)
        eval_s, stdout = run([py, "-m", "ddpm", "evaluate", "--checkpoint", str(run_dir), "--sampler", "ddim", "--steps", "50",
                              "-n", str(args.n), "--fast", "--json", "--data-dir", args.data_dir, "--device", "cuda", "--no-progress"], log)
    res = {
        "benchmark": "gpu_package",
        "what": "python -m ddpm train (bf16, torch.compile reduce-overhead, channels-last) then evaluate --fast (DDIM-50)",
        "env": environment(),
        "train_steps": args.steps,
        "train_command_seconds": round(train_s, 1),
        "train_steps_per_sec_reported_incl_compile": float(re.search(r"([\d.]+) steps/s", train_out).group(1)),
        "train_batch_size": ck.payload["train_config"]["batch_size"] if isinstance(ck.payload.get("train_config"), dict) else getattr(ck.payload.get("train_config"), "batch_size", None),
        "final_loss_mean_last100": sum(ck.losses[-100:]) / len(ck.losses[-100:]) if ck.losses else None,
        "evaluate_command_seconds": round(eval_s, 1),
        "evaluate": json.loads(stdout),
    }
    write_json(out / "package_gpu.json", res)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
