"""Speed of the package before and after a change, in one process on one card: training (``pkg.train``) and
DDIM-50 of 256 images (``pkg.FastEps``), for the DDPM CIFAR-10 U-Net.

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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", default="ddpm_before", help="importable name of the earlier package (default ddpm_before)")
    ap.add_argument("--budget", type=float, default=float("inf"), help="seconds for the whole script (default: no limit)")
    ap.add_argument("--steps", type=int, default=80, help="training steps per measurement (default 80)")
    ap.add_argument("--rounds", type=int, default=2, help="before/after alternations per measurement (default 2)")
    ap.add_argument("--repeats", type=int, default=5, help="timed DDIM-50 runs (default 5)")
    ap.add_argument("--recipes", default=",".join(RECIPES), help=f"training recipes (default: all of {', '.join(RECIPES)})")
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
        recipes, args.steps, args.rounds, args.repeats = ["fp32"], 8, 1, 1
    batch, n_img, ddim_steps = (4, 4, 3) if args.quick else (128, 256, 50)
    rec = common.Record(args.name, vars(args), budget=args.budget)
    rec["what"] = ("the package before and after, alternating in one process: ddpm.train img/s at batch "
                   f"{batch} and DDIM-{ddim_steps} seconds for {n_img} images (FastEps, bf16)")
    rec["train"], rec["ddim"] = {}, {}
    sd = weights(after)
    g = torch.Generator(device=device).manual_seed(0)
    pool = torch.randn(4096 if cuda else 16, 3, 32, 32, device=device, generator=g).clamp_(-1, 1)

    x_T = torch.randn(n_img, 3, 32, 32, device=device, generator=torch.Generator(device=device).manual_seed(123))
    samples = {}
    for side, pkg in pkgs.items():
        with rec.stage(f"{side}:ddim", need=45) as ok:
            if ok:
                torch._dynamo.reset()
                r, samples[side] = ddim_time(pkg, sd, x_T, ddim_steps, args.repeats, cuda)
                rec["ddim"][side] = r
                print(side, "ddim", f"{r['median_s']:.3f} s", flush=True)
    if len(samples) == 2:
        a, b = samples["after"], samples["before"]
        rec["ddim"]["after_vs_before_rel_l2"] = float((a - b).norm() / b.norm())
    torch._dynamo.reset()

    for recipe in recipes:
        for rnd in range(args.rounds):
            for side, pkg in pkgs.items():
                label = f"{side}:{recipe}"
                with rec.stage(f"{label}:{rnd}", need=45) as ok:
                    if ok:
                        torch._dynamo.reset()
                        r = train_rate(pkg, sd, pool, recipe, args.steps, batch, device)
                        rec["train"].setdefault(label, []).append(r)
                        print(label, f"{r['img_per_s']:,.0f} img/s", f"t={rec.elapsed():.0f}s", flush=True)

    summary = {}
    for recipe in recipes:
        vals = {s: [r["img_per_s"] for r in rec["train"].get(f"{s}:{recipe}", [])] for s in pkgs}
        if all(vals.values()):
            summary[f"train:{recipe}"] = {s: max(v) for s, v in vals.items()}
            summary[f"train:{recipe}"]["after_over_before"] = max(vals["after"]) / max(vals["before"])
    if "before" in rec["ddim"] and "after" in rec["ddim"]:
        summary["ddim"] = {s: rec["ddim"][s]["median_s"] for s in pkgs}
        summary["ddim"]["before_over_after"] = rec["ddim"]["before"]["median_s"] / rec["ddim"]["after"]["median_s"]
    rec["summary"] = summary
    for k, v in summary.items():
        print(k, {a: round(b, 3) for a, b in v.items()}, flush=True)
    print(f"done in {rec.elapsed():.0f}s; errors: {list(rec['errors'])}", flush=True)
    rec.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
