"""Multi-GPU scaling on one machine: ``torchrun --nproc_per_node=k -m ddpm train`` for k = 1, 2, ..., N.

    python -m benchmarks.multigpu_scaling                 # every k up to the GPUs of this machine
    python -m benchmarks.multigpu_scaling --ks 1,2,4,8    # chosen process counts
    python -m benchmarks.multigpu_scaling --quick         # a smoke test on the CPU (gloo, a small MLP, k = 1)

Each run is the package's command line under ``torchrun --standalone`` with its fastest flags (bf16 autocast,
``torch.compile`` with CUDA graphs, channels-last), the DDPM CIFAR-10 network and 128 images per GPU (global
batch 128 k) of random 3x32x32 data in [-1, 1]. Reported per k: images/s (the median over the run folder's
``loss.csv`` rows after the first, which holds compilation), the scaling efficiency
img/s(k) / (k img/s(1)), and the agreement of the loss curve with one process at the same global batch (the
package draws data, t and noise for the global batch, so the curves must match up to float rounding).

NVLink multicast stays off in every process (``NCCL_NVLS_ENABLE=0``, ``TORCH_SYMM_MEM_DISABLE_MULTICAST=1``,
``NVSHMEM_DISABLE_NVLS=1``). Writes ``multigpu_scaling.json`` (``multigpu_scaling_quick.json`` with
``--quick``) with the card count and type.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from . import common

NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
FAST_FLAGS = ["--device", "cuda", "--bf16", "--compile", "--compile-mode", "reduce-overhead", "--channels-last"]


def read_log(run: Path) -> list[dict]:
    """The run folder's ``loss.csv`` rows as floats."""
    with open(run / "loss.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def one_run(k: int, batch: int, args, data: str, work: Path, log) -> dict:
    """``torchrun --nproc_per_node=k -m ddpm train ...`` with global batch ``batch``; its throughput and losses."""
    run = work / f"k{k}_b{batch}"
    shutil.rmtree(run, ignore_errors=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={k}", "-m", "ddpm", "train",
           "--data", data, "--steps", str(args.steps), "--batch-size", str(batch), "--log-every", str(args.log_every),
           "--checkpoint-every", str(args.steps), "--out", str(run), "--seed", "0", "--no-progress"]
    if args.quick:
        cmd += ["--model", "mlp", "--device", "cpu"]
    else:
        cmd += ["--model", "unet-ddpm-cifar10", "--lr", "2e-4", "--warmup", "100", *FAST_FLAGS]
    env = {**os.environ, **NO_MULTICAST, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    wall = time.perf_counter() - t0
    log.write(f"$ {' '.join(cmd)}\n{r.stdout}\n{r.stderr[-4000:]}\n[{wall:.1f} s, rc {r.returncode}]\n")
    log.flush()
    if r.returncode:
        last = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"torchrun with {k} process(es) failed (rc {r.returncode}): {last}")
    rows = read_log(run)
    rates = [row["images_per_second"] for row in rows[1:]] or [rows[-1]["images_per_second"]]
    return {"processes": k, "global_batch": batch, "per_process_batch": batch // k, "img_per_s": statistics.median(rates),
            "img_per_s_rows": rates, "wall_s": wall, "steps": args.steps, "losses": [row["loss"] for row in rows],
            "loss_steps": [int(row["step"]) for row in rows]}


def agreement(a: list[float], b: list[float]) -> float:
    """Largest relative difference between two loss curves (the per-interval means of loss.csv)."""
    return max(abs(x - y) / abs(y) for x, y in zip(a, b))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ks", default=None, help="process counts, comma-separated (default: 1..the GPUs here; 1 with --quick)")
    ap.add_argument("--per-gpu-batch", type=int, default=128, help="images per process and step (default 128)")
    ap.add_argument("--steps", type=int, default=None, help="steps per run (default 300; 40 with --quick)")
    ap.add_argument("--log-every", type=int, default=None, help="steps per loss.csv row (default 50; 10 with --quick)")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per torchrun before it counts as failed (default 900)")
    ap.add_argument("--quick", action="store_true", help="a smoke test on the CPU: gloo, a small MLP on a 2-D toy")
    args = ap.parse_args(argv)
    gpus = torch.cuda.device_count()
    if not args.quick and gpus == 0:
        print("multigpu_scaling needs CUDA GPUs; use --quick for the CPU smoke test", file=sys.stderr)
        return 2
    try:
        ks = [int(k) for k in args.ks.split(",")] if args.ks else ([1] if args.quick else list(range(1, gpus + 1)))
    except ValueError:
        print(f"--ks must be comma-separated integers, got {args.ks!r}", file=sys.stderr)
        return 2
    if not ks or min(ks) < 1 or (not args.quick and max(ks) > gpus):
        print(f"--ks must be between 1 and the {gpus} GPU(s) of this machine, got {args.ks!r}", file=sys.stderr)
        return 2
    args.steps = args.steps or (40 if args.quick else 300)
    args.log_every = args.log_every or (10 if args.quick else 50)
    if args.steps < 2 * args.log_every:
        print("--steps must be at least twice --log-every (the first loss.csv row holds the warm-up)", file=sys.stderr)
        return 2
    os.environ.update(NO_MULTICAST)
    name = "multigpu_scaling_quick.json" if args.quick else "multigpu_scaling.json"
    rec = common.Record(name, vars(args))
    rec["gpus"] = gpus
    rec["card"] = torch.cuda.get_device_name(0) if gpus else "cpu"
    rec["no_multicast_env"] = NO_MULTICAST
    rec["runs"] = {}
    work = Path(tempfile.mkdtemp(prefix="ddpm-scaling-"))
    if args.quick:
        data = "moons"
    else:
        data = str(work / "random_images.npy")  # random images in [-1, 1], not zeros
        np.save(data, np.random.default_rng(0).uniform(-1, 1, (4096, 3, 32, 32)).astype(np.float32))
    with open(rec.path.with_suffix(".log"), "w") as log:
        for k in ks:
            B = args.per_gpu_batch * k
            with rec.stage(f"k{k}") as ok:
                if ok:
                    rec["runs"][f"k{k}"] = r = one_run(k, B, args, data, work, log)
                    print(f"k={k}: {r['img_per_s']:,.0f} img/s (global batch {B})", flush=True)
            if k > 1 and f"k{k}" in rec["runs"]:
                with rec.stage(f"k1_b{B}") as ok:  # one process at the same global batch: the reference curve
                    if ok:
                        ref = one_run(1, B, args, data, work, log)
                        rec["runs"][f"k{k}"]["loss_rel_diff_vs_one_process"] = agreement(rec["runs"][f"k{k}"]["losses"], ref["losses"])
                        rec["runs"][f"k{k}"]["one_process_same_batch_img_per_s"] = ref["img_per_s"]
    base = rec["runs"].get("k1")
    if base:
        rec["efficiency"] = {kk: r["img_per_s"] / (r["processes"] * base["img_per_s"]) for kk, r in rec["runs"].items()}
        print("efficiency", {kk: round(v, 3) for kk, v in rec["efficiency"].items()}, flush=True)
    shutil.rmtree(work, ignore_errors=True)
    rec.save()
    print(f"wrote {rec.path}; errors: {list(rec['errors'])}", flush=True)
    return 0 if not rec["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
