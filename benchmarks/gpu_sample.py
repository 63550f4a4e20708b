"""Sampling speed on one GPU: 256 images at 3x32x32, DDIM-50 and DDPM-1000, ours against diffusers.

Peer: diffusers' ``UNet2DModel`` (DDPM CIFAR-10 configuration) in diffusers' own loops (``DDIMScheduler`` /
``DDPMScheduler``, ``set_timesteps`` then ``step``), float32 and bf16 (autocast, and bf16 weights: the
faster counts). Ours: ``UNet.preset("ddpm-cifar10")`` in the core loops ``ddpm.sample_ddim`` /
``ddpm.sample_ddpm``, the network wrapped by ``ddpm.fast.FastEps`` (torch.compile with CUDA
graphs, channels-last; bf16 autocast in the bf16 rows). The diffusers network also runs in our loops with
the same wrapper, so that loop and network effects can be told apart. Warm-up excluded; CUDA events;
medians. Both networks get weights from the default initialisation (ours with its zero-initialised output
layers re-drawn, so that eps is not identically 0). Also: bf16 output against float32 from the same x_T
(relative error), and a training-mode-free training-run check lives in gpu_train.py.

    GIT_COMMIT=$(git rev-parse HEAD) python benchmarks/gpu_sample.py --budget 540   # -> $OUT/sample.json
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from ddpm.fast import FastEps  # noqa: E402

import ddpm  # noqa: E402
from ddpm.nets.unet import UNet  # noqa: E402


def ours_model(device):
    torch.manual_seed(0)
    m = UNet.preset("ddpm-cifar10")
    for mod in m.modules():  # re-draw Ho's zero-initialised layers so that eps carries signal
        if isinstance(mod, torch.nn.Conv2d) and not mod.weight.any():
            mod.reset_parameters()
    return m.to(device).eval()


def peer_model(device):
    torch.manual_seed(0)
    return common.peer_unet().to(device).eval()


@torch.no_grad()
def peer_loop(unet, kind: str, steps: int, x_T: torch.Tensor, gen, bf16: bool):
    """diffusers' documented loop: scheduler.set_timesteps, then unet(...).sample and scheduler.step."""
    from diffusers import DDIMScheduler, DDPMScheduler

    kw = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear", clip_sample=False)
    if kind == "ddim":
        sch = DDIMScheduler(**kw, timestep_spacing="trailing", set_alpha_to_one=True)
    else:
        sch = DDPMScheduler(**kw, variance_type="fixed_small")
    sch.set_timesteps(steps)
    x = x_T
    for t in sch.timesteps:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            eps = unet(x.to(next(unet.parameters()).dtype), t).sample
        if kind == "ddim":
            x = sch.step(eps.float(), t, x, eta=0.0).prev_sample
        else:
            x = sch.step(eps.float(), t, x, generator=gen).prev_sample
    return x


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=540.0)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5, help="timed DDIM-50 runs (DDPM-1000: --ddpm-repeats)")
    ap.add_argument("--ddpm-repeats", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    dl = common.Deadline(args.budget)
    out = common.out_dir()
    path = out / "sample.json"
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    res = {"env": common.environment(), "config": vars(args), "ours": {}, "peer": {}, "peer_in_our_loop": {},
           "errors": {}}

    def save():
        res["elapsed_s"] = dl.elapsed()
        common.write_json(path, res)

    s = ddpm.Schedule.linear(T=1000)
    shape = (args.batch, 3, 32, 32)
    x_T = torch.randn(shape, device=device, generator=torch.Generator(device=device).manual_seed(123))
    ddim_steps = 5 if args.quick else 50
    ddpm_sched = ddpm.Schedule.linear(T=20) if args.quick else s

    def timed(fn, repeats):
        ts = common.cuda_time(fn, repeats=repeats, warmup=1)
        return {"median_s": common.median(ts), "repeats_s": ts}

    outputs = {}
    # ---- ours: core loops, network wrapped
    for prec in ("fp32", "bf16"):
        if dl.left() < 90:
            res["errors"][f"ours:{prec}"] = "skipped: out of time"
            continue
        try:
            t0 = time.perf_counter()
            net = FastEps(ours_model(device), bf16=prec == "bf16")
            g = torch.Generator(device=device)
            ddim = lambda: ddpm.sample_ddim(net, s, shape, steps=ddim_steps, x_T=x_T, progress=False)  # noqa: E731
            outputs[f"ours:{prec}"] = ddim()  # warm-up: compiles and captures the graph
            compile_s = time.perf_counter() - t0
            r = {"ddim50": timed(ddim, args.repeats), "compile_and_first_run_s": compile_s}
            r["ddpm1000"] = timed(lambda: ddpm.sample_ddpm(net, ddpm_sched, shape, generator=g.manual_seed(1), x_T=x_T,
                                                           progress=False), args.ddpm_repeats)
            r["ddpm1000_over_ddim50"] = r["ddpm1000"]["median_s"] / r["ddim50"]["median_s"]
            res["ours"][prec] = r
            print("ours", prec, {k: (v["median_s"] if isinstance(v, dict) else v) for k, v in r.items()},
                  f"t={dl.elapsed():.0f}", flush=True)
            del net
        except Exception as e:  # noqa: BLE001
            res["errors"][f"ours:{prec}"] = "".join(traceback.format_exception(type(e), e, e.__traceback__))[-3000:]
            print("ERROR ours", prec, res["errors"][f"ours:{prec}"], flush=True)
        save()
    if "ours:fp32" in outputs and "ours:bf16" in outputs:
        a, b = outputs["ours:bf16"].float(), outputs["ours:fp32"].float()
        res["ours_bf16_vs_fp32_rel_err_ddim50"] = float((a - b).norm() / b.norm())

    # ---- peer: diffusers loops (eager: that is what the library ships)
    for prec, variant in (("fp32", "fp32"), ("bf16", "autocast"), ("bf16", "bf16-weights")):
        label = f"{prec}:{variant}"
        if dl.left() < 60:
            res["errors"][f"peer:{label}"] = "skipped: out of time"
            continue
        try:
            unet = peer_model(device)
            if variant == "bf16-weights":
                unet = unet.to(torch.bfloat16)
            g = torch.Generator(device=device)
            auto = variant == "autocast"
            ddim = lambda: peer_loop(unet, "ddim", ddim_steps, x_T, None, auto)  # noqa: E731
            outputs[f"peer:{label}"] = ddim()
            r = {"ddim50": timed(ddim, max(2, args.repeats - 2))}
            if dl.left() > 150 or args.quick:
                r["ddpm1000"] = timed(lambda: peer_loop(unet, "ddpm", 20 if args.quick else 1000, x_T, g.manual_seed(1), auto), 1)
                r["ddpm1000_over_ddim50"] = r["ddpm1000"]["median_s"] / r["ddim50"]["median_s"]
            res["peer"][label] = r
            print("peer", label, {k: (v["median_s"] if isinstance(v, dict) else v) for k, v in r.items()},
                  f"t={dl.elapsed():.0f}", flush=True)
            del unet
        except Exception as e:  # noqa: BLE001
            res["errors"][f"peer:{label}"] = "".join(traceback.format_exception(type(e), e, e.__traceback__))[-3000:]
            print("ERROR peer", label, res["errors"][f"peer:{label}"], flush=True)
        save()
    if "peer:fp32:fp32" in outputs and "peer:bf16:autocast" in outputs:
        a, b = outputs["peer:bf16:autocast"].float(), outputs["peer:fp32:fp32"].float()
        res["peer_bf16_vs_fp32_rel_err_ddim50"] = float((a - b).norm() / b.norm())

    # ---- the peer's network in our loops with our wrapper (tells network from loop)
    if dl.left() > 100:
        try:
            net = FastEps(common.PeerEps(peer_model(device)), bf16=True)
            ddim = lambda: ddpm.sample_ddim(net, s, shape, steps=ddim_steps, x_T=x_T, progress=False)  # noqa: E731
            ddim()
            res["peer_in_our_loop"]["bf16"] = {"ddim50": timed(ddim, args.repeats)}
            print("peer net in our loop bf16", res["peer_in_our_loop"]["bf16"]["ddim50"]["median_s"], flush=True)
        except Exception as e:  # noqa: BLE001
            res["errors"]["peer_in_our_loop"] = "".join(traceback.format_exception_only(type(e), e))[-2000:]
        save()

    # ---- summary: speedups in the same precision against the peer's faster variant
    summ = {}
    for prec in ("fp32", "bf16"):
        peer_rows = [v for k, v in res["peer"].items() if k.startswith(prec + ":")]
        if prec in res["ours"] and peer_rows:
            best = min(peer_rows, key=lambda r: r["ddim50"]["median_s"])
            summ[f"ddim50_speedup_{prec}"] = best["ddim50"]["median_s"] / res["ours"][prec]["ddim50"]["median_s"]
            pd = [r for r in peer_rows if "ddpm1000" in r]
            if pd:
                bd = min(pd, key=lambda r: r["ddpm1000"]["median_s"])
                summ[f"ddpm1000_speedup_{prec}"] = bd["ddpm1000"]["median_s"] / res["ours"][prec]["ddpm1000"]["median_s"]
    res["summary"] = summ
    save()
    print("summary", summ, f"done in {dl.elapsed():.0f}s; errors: {list(res['errors'])}", flush=True)


if __name__ == "__main__":
    main()
