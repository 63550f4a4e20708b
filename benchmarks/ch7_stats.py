"""The statistics behind chapter 7's digits sentences, with comparable spreads and paired tests.

Reads the committed digits checkpoint (``book/data/digits_unet.pt``) and writes
``book/data/digits_ch7_stats.json``; chapter 7 reads it. Three studies, every one seeded:

1. **Comparable spreads.** The table's samplers against the data-vs-data baseline with the *same*
   resampling on both sides: for each of 12 splits k the reference is 898 of all 1797 digits (the
   baseline's split k), the data side the other 898 digits, the sampler side 898 samples from a fresh
   draw of x_T (draw k). Per split: sampler minus data (paired by reference), with a sign count and
   a bootstrap interval of the mean.
2. **Leading against trailing spacing**, eta = 0, S = 10, 20, 50: 360 samples per draw against the
   360 test digits, 20 draws of x_T, the same x_T for both spacings; paired differences with a sign
   test and a bootstrap interval.
3. **The held-out copy control.** For 12 random sets A of 360 training digits: each sample's distance
   (pixels) to its nearest neighbour in A and in the 360 test digits B (the same size, never seen by
   the model); the same for 360 *other* training digits C (real digits that neither A nor B holds:
   the control). A model that generalises puts its samples as close to B as to A, like C; one that
   memorised puts them closer to A.

Usage: ``python -m benchmarks.ch7_stats [--device cuda] [--out book/data]``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

import ddpm
from benchmarks.book_digits import DATA, machine
from ddpm.features import features
from ddpm.metrics import frechet_distance_features as fd

N_BIG, SPLITS = 898, 12
TABLE_CFGS = [("ddim", eta, S) for eta in (0.0, 0.5, 1.0) for S in (10, 20, 50, 100)] + [("ddpm", None, 1000)]


def boot_ci(d: list[float], seed: int = 0, n_boot: int = 4000) -> list[float]:
    """95% percentile bootstrap interval of the mean of ``d``."""
    x = torch.tensor(d, dtype=torch.float64)
    idx = torch.randint(0, len(d), (n_boot, len(d)), generator=torch.Generator().manual_seed(seed))
    m = x[idx].mean(1)
    return [round(float(torch.quantile(m, 0.025)), 3), round(float(torch.quantile(m, 0.975)), 3)]


def sign_test(d: list[float]) -> dict:
    """Two-sided exact sign test of median zero (zeros dropped)."""
    pos, neg = sum(v > 0 for v in d), sum(v < 0 for v in d)
    n = pos + neg
    k = min(pos, neg)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
    return {"positive": pos, "negative": neg, "p_two_sided": round(p, 5)}


def paired(d: list[float], seed: int) -> dict:
    return {"values": [round(v, 3) for v in d], "mean": round(statistics.fmean(d), 3),
            "sd": round(statistics.stdev(d), 3), "ci95": boot_ci(d, seed), "sign": sign_test(d)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=str(DATA))
    p.add_argument("--lead-draws", type=int, default=20)
    args = p.parse_args(argv)
    if args.lead_draws < 2:
        p.error(f"--lead-draws must be at least 2 (a spread needs two draws), got {args.lead_draws}")
    from ddpm.train import resolve_device

    dev = resolve_device(args.device)
    torch.manual_seed(0)
    ck = ddpm.load_checkpoint(DATA / "digits_unet.pt", device=dev)
    model, s = ck.sampling_model.eval(), ck.schedule
    train = ddpm.load_dataset("digits", split="train")
    test = ddpm.load_dataset("digits", split="test")
    alld = ddpm.load_dataset("digits", split="all")
    feat = lambda x: features(x.float().cpu())
    f_all, f_test = feat(alld), feat(test)
    t_start = time.perf_counter()

    @torch.no_grad()
    def sample(kind, eta, S, n, seed, spacing="trailing"):
        x_T = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)).to(dev)
        g = torch.Generator(device=dev).manual_seed(seed)
        if kind == "ddpm":
            x = ddpm.sample_ddpm(model, s, x_T.shape, generator=g, variance="large", x_T=x_T, progress=False)
        else:
            x = ddpm.sample_ddim(model, s, x_T.shape, steps=S, eta=eta, spacing=spacing, generator=g, x_T=x_T, progress=False)
        return x.float().cpu().clamp(-1, 1)

    # 1. the table's rows and the data baseline under one resampling
    perms = [torch.randperm(alld.shape[0], generator=torch.Generator().manual_seed(100 + k)) for k in range(SPLITS)]
    data_fd = [fd(f_all[pm[N_BIG:2 * N_BIG]], f_all[pm[:N_BIG]]) for pm in perms]
    table = []
    for kind, eta, S in TABLE_CFGS:
        vals = [fd(feat(sample(kind, eta, S, N_BIG, 5000 + k)), f_all[pm[:N_BIG]]) for k, pm in enumerate(perms)]
        diff = [v - b for v, b in zip(vals, data_fd)]
        table.append({"sampler": kind, "eta": eta, "steps": S, "frechet": [round(v, 3) for v in vals],
                      "mean": round(statistics.fmean(vals), 3), "sd": round(statistics.stdev(vals), 3),
                      "minus_data": paired(diff, 1)})
        print(kind, eta, S, table[-1]["mean"], table[-1]["minus_data"]["ci95"], flush=True)

    # 2. leading against trailing, paired by x_T, against the test digits
    n = test.shape[0]
    lead = []
    for S in (10, 20, 50):
        tr = [fd(feat(sample("ddim", 0.0, S, n, 7000 + k, "trailing")), f_test) for k in range(args.lead_draws)]
        ld = [fd(feat(sample("ddim", 0.0, S, n, 7000 + k, "leading")), f_test) for k in range(args.lead_draws)]
        lead.append({"steps": S, "trailing": [round(v, 3) for v in tr], "leading": [round(v, 3) for v in ld],
                     "trailing_sd": round(statistics.stdev(tr), 3),
                     "leading_minus_trailing": paired([a - b for a, b in zip(ld, tr)], 2)})
        print("lead", S, lead[-1]["leading_minus_trailing"]["mean"], lead[-1]["leading_minus_trailing"]["sign"], flush=True)

    # 3. nearest neighbours: samples and a real-digit control, to A (training) and B (test), equal sizes
    nn = lambda x, ref: torch.cdist(x.flatten(1).double(), ref.flatten(1).double()).min(1).values
    copies = {}
    samplers = {"DDIM eta=0 S=20": ("ddim", 0.0, 20), "DDPM sigma^2=beta S=1000": ("ddpm", None, 1000)}
    smp = {lab: sample(*cfg, n, 9000) for lab, cfg in samplers.items()}
    frac = {lab: [] for lab in [*samplers, "control"]}
    logr = {lab: [] for lab in frac}
    for k in range(SPLITS):
        pm = torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(400 + k))
        A, C = train[pm[:n]], train[pm[n:2 * n]]
        for lab, x in [*smp.items(), ("control", C)]:
            dA, dB = nn(x, A), nn(x, test)
            frac[lab].append(float((dA < dB).double().mean()))
            logr[lab].append(float(torch.log(dA / dB).median()))
    for lab in frac:
        copies[lab] = {"frac_closer_to_training": paired(frac[lab], 3), "median_log_ratio": paired(logr[lab], 4)}
        print("nn", lab, copies[lab]["frac_closer_to_training"]["mean"], copies[lab]["frac_closer_to_training"]["ci95"], flush=True)
    for lab in samplers:
        d = [a - b for a, b in zip(frac[lab], frac["control"])]
        copies[lab]["minus_control"] = paired(d, 5)

    result = {
        "what": "Chapter 7's digits statistics: comparable spreads, paired spacing test, held-out copy control",
        "machine": machine(dev), "seconds": round(time.perf_counter() - t_start, 1),
        "checkpoint_step": ck.step, "n_table": N_BIG, "splits": SPLITS, "n_test": int(n),
        "data_vs_data": {"values": [round(v, 3) for v in data_fd], "mean": round(statistics.fmean(data_fd), 3),
                         "sd": round(statistics.stdev(data_fd), 3)},
        "table": table, "leading": lead, "copies": copies,
    }
    out = Path(args.out)
    (out / "digits_ch7_stats.json").write_text(json.dumps(result, indent=1) + "\n")
    print("wrote", out / "digits_ch7_stats.json", f"in {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
