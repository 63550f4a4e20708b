"""Quality on real images: train the ``fashion-mnist`` U-Net on one GPU, then the DDIM speed/quality table.

1. Train ``UNet.preset("fashion-mnist")`` on the 60,000 Fashion-MNIST training images for a fixed wall-clock
   with ``ddpm.train`` and the package's fastest flags (bf16 autocast, ``torch.compile`` with CUDA graphs,
   channels-last; EMA included) for ``--steps`` steps. The EMA weights go to
   ``fashion_unet_ema_{a,b}.safetensors`` (two files of under 16 MB; ``--weights`` loads them to re-sample).
2. Sample 10,000 images with DDIM for S in 10, 20, 50, 100 and eta in 0, 0.5, 1 (``ddpm.sample_ddim``,
   trailing spacing) and with DDPM-1000 (``ddpm.sample_ddpm``), from the same x_T for every setting.
3. ``ddpm.frechet_distance(samples, test images, classifier="fashion-mnist")`` for each, the data-vs-data
   baseline (10,000 training images against the 10,000 test images), and bits/dim
   (``ddpm.bits_per_dim``, float32) on a test subset.

    python -m benchmarks.gpu_fashion --data-dir /usr/share/datasets/fashion-mnist   # -> fashion.json
"""

from __future__ import annotations

import argparse
import hashlib
import math
import subprocess
import sys
import time
from pathlib import Path

import torch

import ddpm
from ddpm.data import load_mnist_like
from ddpm.nets.unet import UNet

from . import common

SETTINGS = [("ddim", S, eta) for S in (10, 20, 50, 100) for eta in (0.0, 0.5, 1.0)] + [("ddpm", 1000, None)]
# The headline comparisons first, so that a run cut short by its deadline still answers them.
FIRST = [("ddim", 50, 0.0), ("ddpm", 1000, None), ("ddim", 10, 0.0), ("ddim", 10, 1.0)]
SETTINGS = FIRST + [x for x in SETTINGS if x not in FIRST]

CLASSIFIER_JOB = """
import sys, torch
torch.set_num_threads(12)
from ddpm import classifier as C
m, rep = C.train_classifier("fashion-mnist", data_dir=sys.argv[1] or None, progress=False)
C.save_classifier(m, rep, "fashion-mnist")
print("classifier test accuracy", rep["test_accuracy"], "seconds", rep["train_seconds"], flush=True)
"""


def grid_png(x: torch.Tensor, path: Path, nrow: int = 10) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = ((x[: nrow * nrow].float().clamp(-1, 1) + 1) / 2).cpu()  # (n, 1, 28, 28) in [0, 1]
    n, _, h, w = x.shape
    rows = x.reshape(nrow, nrow, h, w).permute(0, 2, 1, 3).reshape(nrow * h, nrow * w)
    plt.imsave(path, rows.numpy(), cmap="gray", vmin=0, vmax=1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=float, default=float("inf"),
                    help="seconds for the whole script: a stage that would not fit is skipped and says so (default: no limit)")
    ap.add_argument("--steps", type=int, default=9800, help="training steps (default 9800, about 42 epochs)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--ema", type=float, default=0.9995)
    ap.add_argument("--n", type=int, default=10_000, help="samples per sampler setting")
    ap.add_argument("--sample-batch", type=int, default=5000)
    ap.add_argument("--bpd-n", type=int, default=500)
    ap.add_argument("--data-dir", default=None, help="Fashion-MNIST's IDX files (default: ddpm.data's usual places)")
    ap.add_argument("--weights", default=None, help="skip training: load EMA weights from these safetensors files (comma-separated)")
    ap.add_argument("--settings", default="all", help="'all', or e.g. 'ddim:50:0,ddpm:1000:' ")
    ap.add_argument("--name", default="fashion.json")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_fashion needs a CUDA device", file=sys.stderr)
        return 2
    rec = common.Record(args.name, vars(args), budget=args.budget)
    out = rec.path.parent
    res = rec.data
    res.update(train={}, fd={})
    save = rec.save
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    xtr = load_mnist_like("fashion-mnist", data_dir=args.data_dir, split="train")  # (60000, 1, 28, 28)
    xte = load_mnist_like("fashion-mnist", data_dir=args.data_dir, split="test")  # (10000, 1, 28, 28)
    schedule = ddpm.Schedule.linear(T=1000)

    # The package's Fashion-MNIST classifier (for the Frechet distance): trained on this machine's CPU,
    # in parallel with the GPU training, if its weights are not shipped yet.
    from ddpm import classifier as C

    wp = C.weights_path("fashion-mnist")
    cls_job = None
    if not wp.is_file():
        cls_job = subprocess.Popen([sys.executable, "-c", CLASSIFIER_JOB, str(args.data_dir or "")])

    # ---- 1. train (or load)
    torch.manual_seed(0)
    model = UNet.preset("fashion-mnist")
    if args.weights:
        from safetensors.torch import load_file

        sd = {}
        for f in args.weights.split(","):
            sd.update(load_file(f))
        emod = UNet.preset("fashion-mnist")
        emod.load_state_dict(sd)
        res["train"]["weights_from"] = args.weights
    else:
        cfg = ddpm.TrainConfig(steps=args.steps, batch_size=args.batch, lr=args.lr, warmup=args.warmup, ema_decay=args.ema,
                               device="cuda", bf16=True, compile=True, compile_mode="reduce-overhead", channels_last=True,
                               log_every=200)
        t0 = time.perf_counter()
        r = ddpm.train(model, schedule, xtr, cfg, progress=False)
        secs = time.perf_counter() - t0
        losses = r.losses
        res["train"] = {"config": {k: getattr(cfg, k) for k in ("steps", "batch_size", "lr", "warmup", "ema_decay",
                                                              "bf16", "compile", "compile_mode", "channels_last")},
                        "steps": r.step, "batch": args.batch, "seconds_incl_compile": secs,
                        "images_seen": r.step * args.batch, "epochs": r.step * args.batch / xtr.shape[0],
                        "img_per_s_after_warmup": r.images_per_second, "lr": args.lr, "ema": args.ema,
                        "loss_first_200_mean": sum(losses[:200]) / 200, "loss_last_200_mean": sum(losses[-200:]) / 200,
                        "losses_every_50": losses[::50]}
        print("trained", {k: v for k, v in res["train"].items() if k != "losses_every_50"}, flush=True)
        from safetensors.torch import save_file

        emod = r.ema
        sd = {k: v.detach().float().contiguous().cpu() for k, v in emod.state_dict().items()}
        keys = sorted(sd)  # two files of < 16 MB each (the device tool's limit per file)
        for part, ks in (("a", keys[::2]), ("b", keys[1::2])):
            save_file({k: sd[k] for k in ks}, str(out / f"fashion_unet_ema_{part}.safetensors"))
        save()

    emod = emod.to(device).float().eval()

    # ---- 2. classifier for the Frechet distance (the package's; trained on this machine if not shipped)
    if cls_job is not None:
        t0 = time.perf_counter()
        cls_job.wait()
        import json
        import shutil

        shutil.copy(wp, out / wp.name)
        rep = json.loads(wp.with_suffix(".json").read_text())
        res["classifier_trained_here"] = {"waited_s": time.perf_counter() - t0, "test_accuracy": rep["test_accuracy"],
                                          "train_seconds": rep["train_seconds"]}
        C.load_classifier.cache_clear()
    res["classifier_sha256"] = hashlib.sha256(wp.read_bytes()).hexdigest()
    torch.set_num_threads(16)
    from ddpm.features import features
    from ddpm.metrics import frechet_distance_features

    f_test = features(xte, "fashion-mnist")
    f_train = features(xtr[torch.randperm(xtr.shape[0], generator=torch.Generator().manual_seed(0))[: args.n]],
                       "fashion-mnist")
    res["fd"]["data_vs_data"] = frechet_distance_features(f_train, f_test)
    print("FD data vs data", res["fd"]["data_vs_data"], flush=True)
    save()

    # ---- 3. sampling table
    net = ddpm.FastEps(emod, bf16=True)
    settings = SETTINGS
    if args.settings != "all":
        settings = [(k, int(S), float(e) if e else None) for k, S, e in (x.split(":") for x in args.settings.split(","))]
    gx = torch.Generator(device=device).manual_seed(2024)
    x_T_all = torch.randn(args.n, 1, 28, 28, device=device, generator=gx)  # shared by every setting
    res["sample_seconds"] = {}
    first = {}
    for kind, S, eta in settings:
        label = f"ddpm{S}" if kind == "ddpm" else f"ddim{S}_eta{eta:g}"
        if label in res["fd"]:
            continue
        with rec.stage(label, need=45) as ok:
            if not ok:
                continue
            t0 = time.perf_counter()
            g = torch.Generator(device=device).manual_seed(7)
            outs = []
            for i in range(0, args.n, args.sample_batch):
                xT = x_T_all[i: i + args.sample_batch]
                if kind == "ddpm":
                    outs.append(ddpm.sample_ddpm(net, schedule, xT.shape, generator=g, x_T=xT, progress=False))
                else:
                    outs.append(ddpm.sample_ddim(net, schedule, xT.shape, steps=S, eta=eta, generator=g, x_T=xT,
                                                 progress=False))
            x = torch.cat(outs).clamp(-1, 1)
            torch.cuda.synchronize()
            res["sample_seconds"][label] = time.perf_counter() - t0
            res["fd"][label] = frechet_distance_features(features(x.cpu(), "fashion-mnist"), f_test)
            first[label] = x[:100].cpu()
            print(label, f"FD {res['fd'][label]:.3f}", f"{res['sample_seconds'][label]:.1f}s", f"t={rec.elapsed():.0f}",
                  flush=True)
    if first:
        for label in ("ddpm1000", "ddim50_eta0", "ddim10_eta0", "ddim10_eta1"):
            if label in first:
                grid_png(first[label], out / f"fashion_{label}.png")
    fd = res["fd"]
    if "ddim50_eta0" in fd and "ddpm1000" in fd:
        res["fd_ddim50_over_ddpm1000"] = fd["ddim50_eta0"] / fd["ddpm1000"]
    save()

    # ---- 4. bf16 sampler against float32 (same x_T, DDIM-50, eta 0) and bits/dim
    with rec.stage("bf16_vs_fp32", need=60) as ok:
        if ok:
            xT = x_T_all[:1000]
            a = ddpm.sample_ddim(net, schedule, xT.shape, steps=50, x_T=xT, progress=False)
            b = ddpm.sample_ddim(emod, schedule, xT.shape, steps=50, x_T=xT, progress=False)
            res["bf16_vs_fp32_rel_err_ddim50"] = float((a - b).norm() / b.norm())
    with rec.stage("bits_per_dim", need=60) as ok:
        if ok:
            t0 = time.perf_counter()
            x0 = xte[: args.bpd_n].to(device)
            bpd = ddpm.bits_per_dim(emod, schedule.to(device, torch.float32), x0, generator=torch.Generator(device=device).manual_seed(3))
            res["bits_per_dim"] = {"mean": float(bpd.mean()), "sem": float(bpd.std() / math.sqrt(bpd.numel())),
                                   "n": int(bpd.numel()), "seconds": time.perf_counter() - t0, "precision": "fp32"}
            print("bits/dim", res["bits_per_dim"], flush=True)
    print(f"done in {rec.elapsed():.0f}s; errors: {list(res['errors'])}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
