"""Three measurements of book chapter 6 ("Training and sampling") too slow for the chapter itself.

1. **Comparable spreads** for the two 1000-step DDPM samplers of the digits table
   (sigma_t^2 = beta_t and beta~_t): over the same 12 re-splits as the data-vs-data baseline
   (reference = 898 of all 1797 digits, seeds 100 + k), each split gets a *fresh* set of 898
   samples (fresh x_T and sampler noise) scored against that split's reference. The sampler's
   spread and the baseline's then come from the same resampling of both sides.
2. **Uniform start noise with the trained network**: DDPM (1000 steps, sigma_t^2 = beta~_t) and
   DDIM (eta = 0, 50 steps) from x_T = ``torch.rand`` against ``torch.randn``, 898 samples, the
   first ``--rand-splits`` references of part 1.
3. **Training stability on moons**: the chapter's MLP and settings (3000 steps, batch 512,
   AdamW with warm-up, EMA 0.99), for 5 seeds at each of 3 learning rates (0.5e-3, 2e-3, 8e-3),
   on the CPU with one thread per run (runs in parallel processes); records the loss curve
   (means over 50-step blocks), NaNs, and the sliced Wasserstein distance of 2000 DDIM-100
   samples of the EMA model to 2000 data points.

Writes ``book/data/ch6_checks.json`` with the machine of each part. Usage::

    python -m benchmarks.book_ch6_checks --device cuda     # parts 1-2 on the GPU, part 3 on the CPU
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
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
N_BIG = 898
LRS = (5e-4, 2e-3, 8e-3)
SEEDS = (0, 1, 2, 3, 4)


def machine(device: torch.device) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "unknown"
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine()),
        "cpu_count": os.cpu_count(),
        "torch_version": torch.__version__,
        "git_commit": commit or "unknown",
    }


def summary(v):
    return {"mean": round(statistics.fmean(v), 3), "sd": round(statistics.stdev(v), 3),
            "min": round(min(v), 3), "max": round(max(v), 3), "values": [round(x, 3) for x in v]}


def digits_parts(device: torch.device, splits: int, rand_splits: int) -> dict:
    from ddpm.features import features
    from ddpm.metrics import frechet_distance_features as fd

    ck = ddpm.load_checkpoint(DATA / "digits_unet.pt", device=str(device))
    model, s = ck.sampling_model.eval(), ck.schedule
    alld = ddpm.load_dataset("digits", split="all")
    f_all = features(alld)

    def sample(kind: str, x_T: torch.Tensor, seed: int) -> torch.Tensor:
        g = torch.Generator(device=device).manual_seed(seed)
        x_T = x_T.to(device)
        with torch.no_grad():
            if kind in ("large", "small"):
                x = ddpm.sample_ddpm(model, s, x_T.shape, variance=kind, generator=g, x_T=x_T, progress=False)
            else:  # "ddim50"
                x = ddpm.sample_ddim(model, s, x_T.shape, steps=50, eta=0.0, spacing="trailing", generator=g, x_T=x_T, progress=False)
        return x.float().cpu()

    dd, rows = [], {"large": [], "small": []}
    refs = []
    t0 = time.perf_counter()
    for k in range(splits):
        perm = torch.randperm(alld.shape[0], generator=torch.Generator().manual_seed(100 + k))
        ref, other = perm[:N_BIG], perm[N_BIG:2 * N_BIG]
        refs.append(ref)
        dd.append(fd(f_all[other], f_all[ref]))
        for kind in rows:
            x_T = torch.randn(N_BIG, 1, 8, 8, generator=torch.Generator().manual_seed(5000 + k))
            rows[kind].append(fd(features(sample(kind, x_T, 6000 + k)), f_all[ref]))
        print(f"split {k}: dd {dd[-1]:.3f}, large {rows['large'][-1]:.3f}, small {rows['small'][-1]:.3f}", flush=True)
    part1 = {"n": N_BIG, "splits": splits, "data_vs_data": summary(dd),
             "ddpm_large": summary(rows["large"]), "ddpm_small": summary(rows["small"]),
             "seconds": round(time.perf_counter() - t0, 1)}

    starts = {"randn": torch.randn, "rand": torch.rand}
    part2 = {"n": N_BIG, "splits": rand_splits}
    for kind in ("small", "ddim50"):
        for name, draw in starts.items():
            v = []
            for k in range(rand_splits):
                x_T = draw(N_BIG, 1, 8, 8, generator=torch.Generator().manual_seed(7000 + k))
                v.append(fd(features(sample(kind, x_T, 8000 + k)), f_all[refs[k]]))
            part2[f"{kind}_{name}"] = summary(v)
            print(kind, name, part2[f"{kind}_{name}"]["mean"], flush=True)
    return {"machine": machine(device), "comparable_spreads": part1, "rand_start": part2}


def _moons_run(args):
    lr, seed = args
    torch.set_num_threads(1)
    s = ddpm.Schedule.linear(1000)
    moons = ddpm.load_dataset("moons", n=10_000, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(seed)
    mlp = ddpm.MLP(ddpm.MLPConfig(dim=2, hidden=128, layers=3))
    cfg = ddpm.TrainConfig(steps=3000, batch_size=512, lr=lr, warmup=100, ema_decay=0.99, seed=seed, device="cpu", log_every=500)
    t0 = time.perf_counter()
    res = ddpm.train(mlp, s, moons, cfg, progress=False)
    secs = time.perf_counter() - t0
    losses = torch.tensor(res.losses, dtype=torch.float64)
    blocks = losses.reshape(-1, 50).mean(1)
    x = ddpm.sample_ddim(res.ema, s, (2000, 2), steps=100, eta=0.0, generator=torch.Generator().manual_seed(6), progress=False)
    data = ddpm.load_dataset("moons", n=2000, generator=torch.Generator().manual_seed(7))
    sw = ddpm.sliced_wasserstein(x, data, n_projections=128, generator=torch.Generator().manual_seed(0))
    return {"lr": lr, "seed": seed, "nan": int(torch.isnan(losses).sum()), "block_means": [round(float(b), 4) for b in blocks],
            "final_loss": round(float(losses[-500:].mean()), 4), "max_loss_after_warmup": round(float(losses[100:].max()), 4),
            "sw": round(float(sw), 4), "seconds": round(secs, 1)}


def moons_part(workers: int) -> dict:
    jobs = [(lr, seed) for lr in LRS for seed in SEEDS]
    with mp.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
        runs = pool.map(_moons_run, jobs)
    data_a = ddpm.load_dataset("moons", n=2000, generator=torch.Generator().manual_seed(7))
    data_b = ddpm.load_dataset("moons", n=2000, generator=torch.Generator().manual_seed(8))
    floor = float(ddpm.sliced_wasserstein(data_b, data_a, n_projections=128, generator=torch.Generator().manual_seed(0)))
    return {"machine": machine(torch.device("cpu")) | {"threads_per_run": 1}, "lrs": list(LRS), "seeds": list(SEEDS),
            "block": 50, "runs": runs, "sw_data_vs_data": round(floor, 4)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="device for the digits parts (cuda or cpu)")
    p.add_argument("--splits", type=int, default=12, help="re-splits for part 1 (>= 2)")
    p.add_argument("--rand-splits", type=int, default=3, help="references for part 2 (>= 2)")
    p.add_argument("--workers", type=int, default=15, help="parallel CPU processes for part 3")
    p.add_argument("--out", default=str(DATA / "ch6_checks.json"), help="the JSON to write")
    a = p.parse_args(argv)
    if a.splits < 2 or a.rand_splits < 2 or a.rand_splits > a.splits or a.workers < 1:
        print("error: need --splits >= 2, 2 <= --rand-splits <= --splits, --workers >= 1", file=sys.stderr)
        return 2
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is available", file=sys.stderr)
        return 2
    out = {"what": __doc__.splitlines()[0], "script": "benchmarks/book_ch6_checks.py"}
    out["moons_stability"] = moons_part(a.workers)
    print("moons done", flush=True)
    out["digits"] = digits_parts(torch.device(a.device), a.splits, a.rand_splits)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print("wrote", a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
