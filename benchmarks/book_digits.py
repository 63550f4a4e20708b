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
import sys
import json
import statistics
import time
from pathlib import Path

import torch

import ddpm
if __package__ in (None, ""):  # run as a file (python benchmarks/x.py): the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import environment  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

DATA = ROOT / "book" / "data"
STEPS = (5, 10, 20, 50, 100, 1000)
ETAS = (0.0, 0.5, 1.0)


def machine(device: torch.device) -> dict:
    """The shared environment record (``benchmarks.common.environment``)."""
    return environment(device)


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
    p.add_argument("--quality", action="store_true", help="only the CPU quality study (digits_quality.json); needs the checkpoint")
    p.add_argument("--splits", type=int, default=12, help="--quality: random splits per baseline")
    p.add_argument("--quality-seeds", type=int, default=3, help="--quality: x_T draws per DDIM sampler")
    args = p.parse_args(argv)
    if args.quality:
        return quality(args)
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
            rep = ddpm.distance_report(x, data_all, "frechet", generator=torch.Generator().manual_seed(0), classifier="digits")
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
        "metric": "ddpm.distance_report(metric='frechet', classifier='digits')",
        "rows": rows,
        "cpu_timing": {"batch": args.cpu_timing_batch, "threads": 1, "rows": cpu_rows},
    }
    (out / "digits_ddim_table.json").write_text(json.dumps(result, indent=1) + "\n")
    torch.save({k: v.to(torch.float16) for k, v in keep.items()}, out / "digits_samples.pt")
    print("wrote", out / "digits_ddim_table.json")
    return 0


# ---------------------------------------------------------------------- the CPU quality study
QUALITY_STEPS = (10, 20, 50)


def quality(args) -> int:
    """What the Frechet distances can and cannot tell apart, on the CPU (one thread, seeded).

    1. The baselines of the GPU table (898 samples against 898 of all 1797 digits) over 12
       re-splits: data vs data, and 898 *training* digits against the same reference (what a
       model that copied its training set would score).
    2. A reference disjoint from training: the 360 test digits of ``load_dataset(split="test")``.
       Baseline: 12 random sets of 360 training digits against it (mean, sd, range).
    3. DDIM eta = 0 at S = 10, 20, 50 with "trailing" and "leading" spacing, and DDPM (1000
       steps, sigma^2 = beta), 360 samples each, several x_T draws, scored against the test digits.
    4. A nearest-neighbour copy check: each sample's distance (pixels in [-1, 1]) to its nearest
       training digit, next to the same distance for the test digits.
    Writes ``digits_quality.json`` next to the table.
    """
    from ddpm.features import features
    from ddpm.metrics import frechet_distance_features as fd

    torch.set_num_threads(1)
    out = Path(args.out)
    ck = ddpm.load_checkpoint(Path(args.checkpoint) if args.checkpoint else out / "digits_unet.pt", device="cpu")
    model, s = ck.sampling_model.eval(), ck.schedule
    train = ddpm.load_dataset("digits", split="train")
    test = ddpm.load_dataset("digits", split="test")
    alld = ddpm.load_dataset("digits", split="all")
    is_test = torch.arange(alld.shape[0]) % 5 == 0          # load_digits' split: every fifth image is test
    f_all, f_train, f_test = features(alld), features(train), features(test)
    splits = args.splits

    def summary(v):
        return {"mean": round(statistics.fmean(v), 3), "sd": round(statistics.stdev(v), 3),
                "min": round(min(v), 3), "max": round(max(v), 3), "values": [round(x, 3) for x in v]}

    # 1. the GPU table's kind of baseline, re-split
    n_big = 898
    dd, tr_ref, overlap = [], [], []
    for k in range(splits):
        perm = torch.randperm(alld.shape[0], generator=torch.Generator().manual_seed(100 + k))
        ref, other = perm[:n_big], perm[n_big:2 * n_big]
        dd.append(fd(f_all[other], f_all[ref]))
        overlap.append(int((~is_test[ref]).sum()))
        pick = torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(200 + k))[:n_big]
        tr_ref.append(fd(f_train[pick], f_all[ref]))
    table_baselines = {"n": n_big, "splits": splits, "data_vs_data": summary(dd),
                       "training_digits_vs_reference": summary(tr_ref),
                       "reference_training_digits": summary([float(o) for o in overlap])}
    print("GPU-table baselines:", table_baselines["data_vs_data"]["mean"], table_baselines["training_digits_vs_reference"]["mean"], flush=True)

    # 2. a reference disjoint from training
    n = test.shape[0]
    base = []
    for k in range(splits):
        pick = torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(300 + k))[:n]
        base.append(fd(f_train[pick], f_test))
    noise = fd(features(torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))), f_test)

    # 4. nearest neighbours in pixel space
    flat_train = train.flatten(1)

    def nn_dist(x):
        return torch.cdist(x.flatten(1).clamp(-1, 1).double(), flat_train.double()).min(1).values

    d_test = nn_dist(test)
    q = lambda d, p: float(torch.quantile(d, p))
    copy_radius = q(d_test, 0.01)                         # 1% of test digits are this close to a training digit

    def nn_summary(d):
        return {"median": round(q(d, 0.5), 3), "p05": round(q(d, 0.05), 3), "min": round(float(d.min()), 3),
                "frac_below_test_p01": round(float((d < copy_radius).double().mean()), 4)}

    # 3. samplers
    rows = []
    cfgs = [("ddim", S, sp_) for sp_ in ("trailing", "leading") for S in QUALITY_STEPS] + [("ddpm", 1000, "all")]
    for kind, S, spacing in cfgs:
        seeds = args.quality_seeds if kind == "ddim" else 1
        dists, nns, secs = [], [], []
        for seed in range(seeds):
            x_T = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(2000 + seed))
            g = torch.Generator().manual_seed(seed)
            t0 = time.perf_counter()
            with torch.no_grad():
                if kind == "ddpm":
                    x = ddpm.sample_ddpm(model, s, x_T.shape, generator=g, variance="large", x_T=x_T, progress=False)
                else:
                    x = ddpm.sample_ddim(model, s, x_T.shape, steps=S, eta=0.0, spacing=spacing, x_T=x_T, progress=False)
            secs.append(time.perf_counter() - t0)
            dists.append(fd(features(x.float()), f_test))
            nns.append(nn_dist(x))
        row = {"sampler": kind, "steps": S, "spacing": spacing, "eta": 0.0 if kind == "ddim" else None,
               "label": f"DDIM eta=0 S={S} {spacing}" if kind == "ddim" else "DDPM sigma^2=beta S=1000",
               "runs": seeds, "frechet": summary(dists) if seeds > 1 else {"mean": round(dists[0], 3), "values": [round(dists[0], 3)]},
               "nn": nn_summary(torch.cat(nns)), "seconds": round(statistics.median(secs), 2)}
        rows.append(row)
        print(row["label"], row["frechet"]["mean"], row["nn"]["median"], row["seconds"], flush=True)

    result = {
        "what": "Digits Frechet distances against a reference disjoint from training, and a nearest-neighbour copy check",
        "script": "benchmarks/book_digits.py --quality",
        "args": {k: v for k, v in vars(args).items()},
        "machine": machine(torch.device("cpu")),
        "checkpoint_step": ck.step,
        "train_digits": int(train.shape[0]), "test_digits": int(n), "all_digits": int(alld.shape[0]),
        "table_baselines": table_baselines,
        "disjoint": {"n": n, "splits": splits, "training_digits_vs_test": summary(base), "noise_vs_test": round(noise, 3),
                     "nn_test_digits": nn_summary(d_test), "copy_radius_test_p01": round(copy_radius, 3)},
        "rows": rows,
    }
    (out / "digits_quality.json").write_text(json.dumps(result, indent=1) + "\n")
    print("wrote", out / "digits_quality.json")
    return 0


def _resolve(device: str) -> torch.device:
    from ddpm.train import resolve_device

    return resolve_device(device)


if __name__ == "__main__":
    raise SystemExit(main())
