"""The digits results of book chapters 6 and 7: train the tiny U-Net, then DDIM's Table 1 for our data.

What it does, in order (every number the chapters show comes from the files it writes):

1. trains ``UNet.preset("digits")`` on scikit-learn's 8x8 digits (train split) with ``ddpm.train``
   (L_simple, DDPM Algorithm 1) and saves the EMA weights as ``book/data/digits_unet.pt``
   (a ``ddpm`` checkpoint whose ``model`` holds the averaged weights; ~2.8 MB);
2. samples with DDIM at S = 5, 10, 20, 50, 100, 1000 steps and eta = 0, 0.5, 1 (trailing spacing),
   and with DDPM's Algorithm 2 at 1000 steps with sigma_t^2 = beta_t ("large"; DDIM's sigma-hat row),
   all from the same x_T, and scores each set by the Frechet distance in the features of the
   digits classifier shipped with ``ddpm`` (``ddpm.distance_report``: n samples against n data
   points, next to the data-vs-data baseline of two disjoint sets of n data points);
3. times every sampler (wall clock, on the device used and, optionally, on the CPU with one thread);
4. writes ``book/data/digits_ddim_table.json`` with the machine (device, CPU count, torch version,
   git commit) and ``book/data/digits_samples.pt`` (a few samples per sampler, for the figures).

Usage::

    python -m benchmarks.book_digits                  # auto device; ~15 min on a 2-core CPU with --fast
    python -m benchmarks.book_digits --device cuda    # the committed run (minutes on one GPU)
    python -m benchmarks.book_digits --fast           # fewer steps and samples, for a CPU

Chapter 7 reads the JSON; chapter 6 loads the checkpoint. Nothing here is typed into the book by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import ddpm

ROOT = Path(__file__).resolve().parents[1]

DATA = ROOT / "book" / "data"
STEPS = (5, 10, 20, 50, 100, 1000)
ETAS = (0.0, 0.5, 1.0)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except Exception:  # noqa: BLE001 - a copy without .git still records the rest
        return os.environ.get("GIT_COMMIT", "unknown")


def machine(device: torch.device) -> dict:
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_sampler(model, s, kind: str, S: int, eta: float, x_T: torch.Tensor, seed: int, device) -> tuple[torch.Tensor, float]:
    """One sampler run from ``x_T``; returns (samples on the CPU, seconds)."""
    g = torch.Generator(device=device).manual_seed(seed)
    sync(device)
    t0 = time.perf_counter()
    if kind == "ddpm":
        x = ddpm.sample_ddpm(model, s, x_T.shape, generator=g, variance="large", x_T=x_T, progress=False)
    else:
        x = ddpm.sample_ddim(model, s, x_T.shape, steps=S, eta=eta, spacing="trailing", generator=g, x_T=x_T, progress=False)
    sync(device)
    return x.float().cpu(), time.perf_counter() - t0


def configs(etas=ETAS, steps=STEPS, with_ddpm=True):
    for eta in etas:
        for S in steps:
            yield {"sampler": "ddim", "eta": eta, "steps": S, "label": f"DDIM eta={eta:g} S={S}"}
    if with_ddpm:
        yield {"sampler": "ddpm", "eta": None, "steps": 1000, "label": "DDPM sigma^2=beta S=1000"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--train-steps", type=int, default=20000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--checkpoint", default=None, help="with --skip-train: the checkpoint to use (default: OUT/digits_unet.pt)")
    p.add_argument("--n", type=int, default=898, help="samples per sampler (the data-vs-data baseline needs 2n data points)")
    p.add_argument("--seeds", type=int, default=5, help="independent x_T draws per sampler (mean and spread)")
    p.add_argument("--cpu-timing-batch", type=int, default=64, help="batch for the one-thread CPU timings (0: skip)")
    p.add_argument("--fast", action="store_true", help="CPU-sized run: 2000 steps, batch 64, n = 300, one seed")
    p.add_argument("--skip-train", action="store_true", help="reuse book/data/digits_unet.pt")
    p.add_argument("--steps", default=",".join(map(str, STEPS)), help="DDIM step counts S")
    p.add_argument("--etas", default=",".join(map(str, ETAS)), help="DDIM eta values")
    p.add_argument("--no-ddpm", action="store_true", help="skip the 1000-step DDPM row (smoke tests)")
    p.add_argument("--out", default=str(DATA))
    args = p.parse_args(argv)
    if args.fast:
        args.train_steps, args.batch_size, args.n, args.seeds = 2000, 64, 300, 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = _resolve(args.device)
    steps_list = tuple(int(v) for v in args.steps.split(","))
    etas = tuple(float(v) for v in args.etas.split(","))
    if device.type == "cpu":
        torch.set_num_threads(1)  # the CPU is shared; one thread keeps the timings steady
    s = ddpm.Schedule.linear(1000)
    ckpt_path = Path(args.checkpoint) if args.checkpoint else out / "digits_unet.pt"

    # ------------------------------------------------------------------ 1. train
    train_info = {}
    if not args.skip_train:
        data = ddpm.load_dataset("digits", split="train")
        cfg = ddpm.TrainConfig(steps=args.train_steps, batch_size=args.batch_size, lr=args.lr, warmup=500,
                               ema_decay=0.9995, seed=0, checkpoint_every=0, device=str(device), log_every=500)
        model = ddpm.UNet.preset("digits")
        res = ddpm.train(model, s, data, cfg, progress=False)
        # keep only the averaged weights (what we sample with): half the file size
        ddpm.save_checkpoint(ckpt_path, res.ema, s, step=res.step, train_config=cfg,
                             losses=[round(v, 5) for v in res.losses], meta={"data": "digits", "weights": "ema"})
        train_info = {"steps": res.step, "seconds": round(res.seconds, 1), "steps_per_sec": round(res.steps_per_sec, 1),
                      "batch_size": cfg.batch_size, "lr": cfg.lr, "ema_decay": cfg.ema_decay,
                      "final_loss_mean_last_500": round(statistics.fmean(res.losses[-500:]), 5),
                      "parameters": sum(q.numel() for q in res.ema.parameters()),
                      "device": machine(device)["device_name"]}
        print("trained:", train_info, flush=True)
    else:  # keep the training record of the run that made the checkpoint
        old = ckpt_path.parent / "digits_ddim_table.json"
        train_info = json.loads(old.read_text())["train"] if old.is_file() else {"reused": ckpt_path.name}
    ck = ddpm.load_checkpoint(ckpt_path, device=str(device))
    model = ck.sampling_model.eval()

    # ------------------------------------------------------------------ 2-3. the table
    data_all = ddpm.load_dataset("digits", split="all")
    rows = []
    keep = {}
    for c in configs(etas, steps_list, not args.no_ddpm):
        dists, secs = [], []
        for seed in range(args.seeds):
            x_T = torch.randn(args.n, 1, 8, 8, generator=torch.Generator().manual_seed(1000 + seed)).to(device)
            x, sec = run_sampler(model, s, c["sampler"], c["steps"], c["eta"] or 0.0, x_T, seed, device)
            # the same reference set (and baseline) for every run: only x_T and the sampler's noise vary
            rep = ddpm.distance_report(x, data_all, "frechet", generator=torch.Generator().manual_seed(0), dataset="digits")
            dists.append(rep["distance"]); secs.append(sec)
            if seed == 0:
                keep[c["label"]] = x[:64].clone()
                baseline, noise = rep["baseline"], rep["noise"]
        row = dict(c, frechet=round(statistics.fmean(dists), 3),
                   frechet_std=round(statistics.stdev(dists), 3) if len(dists) > 1 else None,
                   frechet_runs=[round(d, 3) for d in dists], seconds=round(statistics.median(secs), 4),
                   network_calls=c["steps"], baseline=round(baseline, 3), noise=round(noise, 3))
        rows.append(row)
        print(f'{c["label"]:28s} FD {row["frechet"]:8.3f} (+- {row["frechet_std"]}) {row["seconds"]:8.3f} s', flush=True)

    # one-thread CPU timings of the same sampler calls (the book's machine class)
    cpu_rows = []
    if args.cpu_timing_batch > 0:
        torch.set_num_threads(1)
        cpu_model = ddpm.load_checkpoint(ckpt_path, device="cpu").sampling_model.eval()
        x_T = torch.randn(args.cpu_timing_batch, 1, 8, 8, generator=torch.Generator().manual_seed(7))
        for c in [c for c in configs(etas, steps_list, not args.no_ddpm) if c["eta"] in (0.0, None)]:
            _, sec = run_sampler(cpu_model, s, c["sampler"], c["steps"], 0.0, x_T, 0, torch.device("cpu"))
            cpu_rows.append({"label": c["label"], "sampler": c["sampler"], "steps": c["steps"], "seconds": round(sec, 3)})
            print("cpu", c["label"], round(sec, 3), flush=True)

    result = {
        "what": "DDIM Table 1 for scikit-learn digits (8x8): Frechet distance in the digits classifier's features",
        "script": "benchmarks/book_digits.py",
        "args": vars(args),
        "machine": machine(device),
        "train": train_info,
        "n_samples": args.n,
        "seeds": args.seeds,
        "spacing": "trailing",
        "schedule": "linear, T = 1000, beta 1e-4..0.02",
        "metric": "ddpm.distance_report(metric='frechet', dataset='digits')",
        "rows": rows,
        "cpu_timing": {"batch": args.cpu_timing_batch, "threads": 1, "rows": cpu_rows},
    }
    (out / "digits_ddim_table.json").write_text(json.dumps(result, indent=1) + "\n")
    torch.save({k: v.to(torch.float16) for k, v in keep.items()}, out / "digits_samples.pt")
    print("wrote", out / "digits_ddim_table.json")
    return 0


def _resolve(device: str) -> torch.device:
    from ddpm.train import resolve_device

    return resolve_device(device)


if __name__ == "__main__":
    raise SystemExit(main())
