"""Speed of the package before and after a change, and against diffusers, in one process on one card: training
(``pkg.train``) and DDIM-50 of 256 images (``pkg.FastEps``), for the DDPM CIFAR-10 U-Net.

    python -m benchmarks.gpu_before_after --before ddpm_before    # -> $OUT/before_after.json
    python -m benchmarks.gpu_before_after --quick                  # a tiny CPU run that checks the script

``--before`` names an importable copy of the earlier package (e.g. ``git archive <commit> ddpm`` unpacked as
``ddpm_before/``, with its ``torch.library`` namespace renamed so that both packages' operators can be registered
in one process). The two packages alternate (before, after, before, after) so that drift of the card's clocks
falls on both. Training recipes (flags as a user types them): ``fp32`` (eager), ``bf16+compile``
(``TrainConfig(bf16=True, compile=True)``, each package's own default compile mode), and
``bf16+compile+cudagraphs+channels-last`` (``compile_mode="reduce-overhead"``, ``channels_last=True``: the
earlier package's fastest flags). The same initial weights and data for both; the DDIM samples of the two packages
are compared (same weights, same x_T): they differ by bf16 rounding alone.

With ``--peer`` (diffusers installed): diffusers' ``UNet2DModel`` in its ``train_unconditional`` step
(``benchmarks.common.PeerTrainer``) in bf16 + ``torch.compile`` and in its fastest mode (reduce-overhead,
channels-last, fused AdamW), and in its DDIM loop compiled with CUDA graphs; the forward FLOPs and the card's
measured bf16 matrix rate (MFU). With ``--curve-steps N`` and Fashion-MNIST's test images: the loss curves of
fp32 eager and ``bf16+compile`` from the same start and draws. Stages run in order of importance and are skipped
(and say so) when ``--budget`` runs out.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

import torch

from . import common

RECIPES = {
    "fp32": dict(bf16=False, compile=False),
    "bf16+compile": dict(bf16=True, compile=True),
    "bf16+compile+cudagraphs+channels-last": dict(bf16=True, compile=True, compile_mode="reduce-overhead",
                                                  channels_last=True),
}


def weights(pkg, seed: int = 0):
    """The DDPM CIFAR-10 U-Net with Ho's zero-initialised layers re-drawn (so eps carries signal): a state dict."""
    torch.manual_seed(seed)
    m = pkg.UNet.preset("ddpm-cifar10")
    for mod in m.modules():
        if isinstance(mod, torch.nn.Conv2d) and not mod.weight.any():
            mod.reset_parameters()
    return {k: v.clone() for k, v in m.state_dict().items()}


def train_rate(pkg, sd, data, recipe: str, steps: int, batch: int, device) -> dict:
    model = pkg.UNet.preset("ddpm-cifar10")
    model.load_state_dict(sd)
    cfg = pkg.TrainConfig(steps=steps, batch_size=batch, lr=2e-4, warmup=100, grad_clip=1.0, log_every=steps,
                          device=device.type, **RECIPES[recipe])
    t0 = time.perf_counter()
    res = pkg.train(model, pkg.Schedule.linear(T=1000), data, cfg, progress=False)
    return {"img_per_s": res.images_per_second or batch * steps / res.seconds, "call_s": time.perf_counter() - t0,
            "steps": steps, "steps_left_out": res.warmup_steps, "final_loss": float(res.losses[-1])}


def ddim_time(pkg, sd, x_T, steps: int, repeats: int, cuda: bool) -> tuple[dict, torch.Tensor]:
    model = pkg.UNet.preset("ddpm-cifar10")
    model.load_state_dict(sd)
    model = model.to(x_T.device).eval()
    t0 = time.perf_counter()
    net = pkg.FastEps(model, bf16=cuda, channels_last=cuda, cudagraphs=cuda, compile=cuda)
    s = pkg.Schedule.linear(T=1000)
    run = lambda: pkg.sample_ddim(net, s, tuple(x_T.shape), steps=steps, x_T=x_T, progress=False)  # noqa: E731
    x0 = run()
    first = time.perf_counter() - t0
    ts = common.cuda_time(run, repeats=repeats, warmup=1)
    return {"median_s": common.median(ts), "repeats_s": ts, "compile_and_first_run_s": first}, x0.float().cpu()


PEER_RECIPES = {"bf16+compile": dict(bf16=True, compile="default", channels_last=False, fused=False),
                "bf16+compile+cudagraphs+channels-last": dict(bf16=True, compile="reduce-overhead", channels_last=True,
                                                              fused=True)}


def peer_train_rate(data, batch: int, recipe: str, warmup: int, steps: int) -> dict:
    tr = common.PeerTrainer(common.peer_unet(), data, batch, **PEER_RECIPES[recipe])
    for _ in range(warmup):
        tr.step()

    def k_steps():
        for _ in range(steps):
            tr.step()

    ts = common.cuda_time(k_steps, repeats=2, warmup=0)
    return {"img_per_s": batch * steps / common.median(ts), "repeats_s": ts, "steps": steps, "warmup_steps": warmup,
            "through": "benchmarks.common.PeerTrainer (train_unconditional's step)"}


def peer_ddim_time(x_T, steps: int, repeats: int) -> dict:
    from .gpu_sample import PeerSampler

    t0 = time.perf_counter()
    ps = PeerSampler(x_T.device, compile=True, bf16=True)
    ps("ddim", steps, x_T)
    first = time.perf_counter() - t0
    ts = common.cuda_time(lambda: ps("ddim", steps, x_T), repeats=repeats, warmup=1)
    return {"median_s": common.median(ts), "repeats_s": ts, "compile_and_first_run_s": first,
            "what": "diffusers' DDIMScheduler loop, UNet2DModel bf16 + channels-last + torch.compile reduce-overhead"}


def loss_curves(pkg, sd, data, batch: int, steps: int, device) -> dict:
    """``pkg.train``'s losses in fp32 eager and in bf16 + compile (the user's flags), same start and draws."""
    curves = {}
    for recipe in ("fp32", "bf16+compile"):
        torch._dynamo.reset()
        model = pkg.UNet.preset("ddpm-cifar10")
        model.load_state_dict(sd)
        cfg = pkg.TrainConfig(steps=steps, batch_size=batch, lr=2e-4, warmup=100, grad_clip=1.0, log_every=steps,
                              device=device.type, seed=1, **RECIPES[recipe])
        res = pkg.train(model, pkg.Schedule.linear(T=1000), data, cfg, progress=False)
        curves[recipe] = [float(v) for v in res.losses]
    w = max(1, steps // 10)
    means = {m: [sum(c[i:i + w]) / w for i in range(0, len(c) - w + 1, w)] for m, c in curves.items()}
    rel = [abs(a - b) / b for a, b in zip(means["bf16+compile"], means["fp32"])]
    return {"recipes": list(curves), "batch": batch, "steps": steps, "window": w, "window_means": means,
            "raw": curves, "max_rel_diff_window_means": max(rel), "final_window_rel_diff": rel[-1]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", default="ddpm_before", help="importable name of the earlier package (default ddpm_before)")
    ap.add_argument("--budget", type=float, default=float("inf"), help="seconds for the whole script (default: no limit)")
    ap.add_argument("--steps", type=int, default=80, help="training steps per measurement (default 80)")
    ap.add_argument("--rounds", type=int, default=1, help="before/after alternations per measurement (default 1)")
    ap.add_argument("--repeats", type=int, default=5, help="timed DDIM-50 runs (default 5)")
    ap.add_argument("--recipes", default=",".join(RECIPES), help=f"training recipes, in order (default {','.join(RECIPES)})")
    ap.add_argument("--peer", action="store_true", help="also diffusers, the FLOPs and the matrix rate (see above)")
    ap.add_argument("--curve-steps", type=int, default=0, help="steps of the fp32 / bf16+compile loss curves (0: none)")
    ap.add_argument("--data-dir", default=None, help="folder with Fashion-MNIST's t10k IDX files (for the curves)")
    ap.add_argument("--train-first", action="store_true", help="the training stages before DDIM-50 (default: DDIM first)")
    ap.add_argument("--name", default="before_after.json", help="output file name (default before_after.json)")
    ap.add_argument("--quick", action="store_true", help="a tiny CPU run that checks the script")
    args = ap.parse_args(argv)
    recipes = [r for r in args.recipes.split(",") if r]
    if not set(recipes) <= set(RECIPES):
        print(f"--recipes must be among {', '.join(RECIPES)}, got {args.recipes!r}", file=sys.stderr)
        return 2
    cuda = torch.cuda.is_available()
    if not cuda and not args.quick:
        print("gpu_before_after needs a CUDA device; use --quick to check the script on the CPU", file=sys.stderr)
        return 2
    try:
        before = importlib.import_module(args.before)
    except ImportError as e:
        print(f"--before {args.before!r} cannot be imported ({e}); unpack the earlier package under that name",
              file=sys.stderr)
        return 2
    import ddpm as after

    pkgs = {"before": before, "after": after}
    device = torch.device("cuda" if cuda else "cpu")
    torch.backends.cudnn.benchmark = True
    if args.quick:
        recipes, args.steps, args.rounds, args.repeats, args.curve_steps = ["fp32"], 8, 1, 1, min(args.curve_steps, 4)
    batch, n_img, ddim_steps = (4, 4, 3) if args.quick else (128, 256, 50)
    rec = common.Record(args.name, vars(args), budget=args.budget)
    rec["what"] = ("the package before and after (and diffusers with --peer), in one process: ddpm.train img/s at "
                   f"batch {batch} and DDIM-{ddim_steps} seconds for {n_img} images (FastEps, bf16)")
    rec["train"], rec["ddim"] = {}, {}
    sd = weights(after)
    g = torch.Generator(device=device).manual_seed(0)
    pool = torch.randn(4096 if cuda else 16, 3, 32, 32, device=device, generator=g).clamp_(-1, 1)  # not zeros

    if args.peer:
        with rec.stage("models", need=20) as ok:
            if ok:
                x1, t1 = torch.randn(1, 3, 32, 32, device=device), torch.tensor([500], device=device)
                m = {"ours": after.UNet.preset("ddpm-cifar10"), "peer": common.peer_eps(common.peer_unet())}
                rec["models"] = {k: {"params": common.num_params(v),
                                     "fwd_flops": common.forward_flops(v.to(device).eval(), x1, t1)}
                                 for k, v in m.items()}
                if cuda:
                    rec["matmul_bf16_flops"] = common.matmul_peak()
                print("models", rec["models"], rec.data.get("matmul_bf16_flops"), flush=True)

    def ddim_stages():
        x_T = torch.randn(n_img, 3, 32, 32, device=device, generator=torch.Generator(device=device).manual_seed(123))
        samples = {}
        for side in ["after", "before"] + (["peer"] if args.peer and cuda else []):
            with rec.stage(f"{side}:ddim", need=45) as ok:
                if ok:
                    torch._dynamo.reset()
                    if side == "peer":
                        r = peer_ddim_time(x_T, ddim_steps, args.repeats)
                    else:
                        r, samples[side] = ddim_time(pkgs[side], sd, x_T, ddim_steps, args.repeats, cuda)
                    rec["ddim"][side] = r
                    print(side, "ddim", f"{r['median_s']:.3f} s", f"t={rec.elapsed():.0f}s", flush=True)
        if len(samples) == 2:
            a, b = samples["after"], samples["before"]
            rec["ddim"]["after_vs_before_rel_l2"] = float((a - b).norm() / b.norm())
        torch._dynamo.reset()


    def train_stages():
        for recipe in recipes:
            for rnd in range(args.rounds):
                sides = ["before", "after"] + (["peer"] if args.peer and cuda and rnd == 0 and recipe in PEER_RECIPES else [])
                for side in sides:
                    label = f"{side}:{recipe}"
                    with rec.stage(f"{label}:{rnd}", need=45) as ok:
                        if not ok:
                            continue
                        torch._dynamo.reset()
                        if side == "peer":
                            r = peer_train_rate(pool, batch, recipe, 8, max(10, args.steps // 2))
                        else:
                            r = train_rate(pkgs[side], sd, pool, recipe, args.steps, batch, device)
                        if "models" in rec.data:
                            flops = rec["models"]["peer" if side == "peer" else "ours"]["fwd_flops"]
                            r["tflops"] = 3 * flops * r["img_per_s"] / 1e12  # forward + backward ~ 3 forwards
                            if "matmul_bf16_flops" in rec.data:
                                r["mfu_vs_measured_matmul"] = r["tflops"] * 1e12 / rec["matmul_bf16_flops"]
                        rec["train"].setdefault(label, []).append(r)
                        print(label, f"{r['img_per_s']:,.0f} img/s", f"t={rec.elapsed():.0f}s", flush=True)


    for stages in ((train_stages, ddim_stages) if args.train_first else (ddim_stages, train_stages)):
        stages()

    if args.curve_steps:
        with rec.stage("loss_curve", need=90) as ok:
            if ok:
                fm = after.data.load_mnist_like("fashion-mnist", data_dir=args.data_dir, split="test")
                fm = torch.nn.functional.pad(fm, (2, 2, 2, 2), value=-1.0).repeat(1, 3, 1, 1).to(device)  # (N, 3, 32, 32)
                rec["loss_curve"] = loss_curves(after, sd, fm[:64] if args.quick else fm, batch, args.curve_steps, device)
                print("loss curve: largest relative gap of the window means",
                      round(rec["loss_curve"]["max_rel_diff_window_means"], 4), flush=True)

    summary = {}
    for recipe in recipes:
        best = {s: max((r["img_per_s"] for r in rec["train"].get(f"{s}:{recipe}", [])), default=None)
                for s in ("before", "after", "peer")}
        row = {k: v for k, v in best.items() if v}
        if best["before"] and best["after"]:
            row["after_over_before"] = best["after"] / best["before"]
        if best["peer"] and best["after"]:
            row["after_over_peer"] = best["after"] / best["peer"]
        if row:
            summary[f"train:{recipe}"] = row
    peer_best = max((r["img_per_s"] for k, rs in rec["train"].items() if k.startswith("peer:") for r in rs), default=None)
    user = max((r["img_per_s"] for r in rec["train"].get("after:bf16+compile", [])), default=None)
    if peer_best and user:
        summary["train:user_flags_over_peer_fastest"] = {"ratio": user / peer_best}
    d = rec["ddim"]
    row = {s: d[s]["median_s"] for s in ("before", "after", "peer") if s in d}
    if "before" in row and "after" in row:
        row["before_over_after"] = row["before"] / row["after"]
    if "peer" in row and "after" in row:
        row["after_time_over_peer"] = row["after"] / row["peer"]
    if row:
        summary["ddim"] = row
    rec["summary"] = summary
    for k, v in summary.items():
        print(k, {a: round(b, 3) for a, b in v.items()}, flush=True)
    print(f"done in {rec.elapsed():.0f}s; errors: {list(rec['errors'])}", flush=True)
    rec.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
