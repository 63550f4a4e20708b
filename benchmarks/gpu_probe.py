"""A/B probes of the training step's speed knobs, and where its generic copies come from.

    python -m benchmarks.gpu_probe                    # -> $OUT/probe.json
    python -m benchmarks.gpu_probe --quick            # a tiny CPU run that checks the script

Variants (``VARIANTS``) set the package's module-level switches, read when a graph is traced:
``ddpm.fast.FORCE_LAYOUT_OPT`` (inductor's channels-last layout planning forced on),
``ddpm.nets.fused.NHWC_GROUPNORM`` (GroupNorm computed on the NHWC view under compile),
``ddpm.nets.fused.TRITON_GROUPNORM`` (the Triton GroupNorm + shift + SiLU + dropout kernels) and
``ddpm.fast.INDUCTOR_OPTIONS`` (e.g. inductor's coordinate-descent tuning of its kernels). Each is timed
through ``ddpm.train`` in the fastest recipe, after ``torch._dynamo.reset()``. ``copy_sources`` profiles the
step without CUDA graphs (the operators stay visible) and attributes every ATen copy kernel to the chain of
operators that launched it.
"""

from __future__ import annotations

import argparse
import collections
import sys

import torch

import ddpm
import ddpm.fast
import ddpm.nets.fused
from ddpm.nets.unet import UNet

from . import common, gpu_train

# name: (FORCE_LAYOUT_OPT, NHWC_GROUPNORM, TRITON_GROUPNORM, INDUCTOR_OPTIONS)
CDT = {"coordinate_descent_tuning": True}
VARIANTS = {"both": (True, True, False, {}), "layout_opt": (True, False, False, {}), "nhwc_gn": (False, True, False, {}),
            "neither": (False, False, False, {}), "cdt": (True, False, False, CDT),
            "triton_gn": (True, False, True, {}), "triton_gn+cdt": (True, False, True, CDT)}
NO_GRAPHS = "bf16+compile+cl"  # the fastest recipe without CUDA graphs: ATen operators stay visible to the profiler
gpu_train.OURS_ONLY[NO_GRAPHS] = dict(bf16=True, compile="default", channels_last=True, fused=True)


def set_variant(name: str) -> None:
    (ddpm.fast.FORCE_LAYOUT_OPT, ddpm.nets.fused.NHWC_GROUPNORM, ddpm.nets.fused.TRITON_GROUPNORM,
     ddpm.fast.INDUCTOR_OPTIONS) = VARIANTS[name]
    torch._dynamo.reset()


def copy_sources(data, batch: int, steps: int, top: int = 12, kernels: int = 120) -> dict:
    """Every CUDA kernel whose name says copy, grouped by the chain of CPU operators that launched it; and the
    ``kernels`` kernels with the most time per step, by name."""
    from torch.profiler import ProfilerActivity, profile

    model = UNet.preset("ddpm-cifar10")
    sched = ddpm.Schedule.linear(T=1000)
    ddpm.train(model, sched, data, gpu_train.train_config(batch, NO_GRAPHS, 8), progress=False)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
        res = ddpm.train(model, sched, data, gpu_train.train_config(batch, NO_GRAPHS, steps), progress=False)
    n_ms, n_k = collections.Counter(), collections.Counter()
    all_ms, k_ms, k_n = collections.Counter(), collections.Counter(), collections.Counter()
    for ev in prof.events():
        for k in getattr(ev, "kernels", []):
            bucket = gpu_train.kernel_bucket(k.name)
            all_ms[bucket] += k.duration / 1e3 / steps
            k_ms[k.name[:200]] += k.duration / 1e3 / steps
            k_n[k.name[:200]] += 1 / steps
            if bucket != "copy":
                continue
            chain, p = [], ev
            while p is not None and len(chain) < 7:
                shapes = [list(s) for s in (p.input_shapes or [])[:2] if s]
                extra = ""
                if p.name in ("aten::to", "aten::_to_copy", "aten::contiguous", "aten::clone", "aten::copy_"):
                    # the dtypes and the scalar arguments (dtype, memory format) say what the copy converts
                    dt = getattr(p, "input_dtypes", None)
                    ci = [c for c in (getattr(p, "concrete_inputs", None) or []) if c not in ("", None, [])]
                    extra = f"{{{dt or ''}{' ' + str(ci) if ci else ''}}}" if dt or ci else ""
                chain.append(f"{p.name}{shapes if shapes else ''}{extra}")
                p = p.cpu_parent
            key = " <- ".join(chain)
            n_ms[key] += k.duration / 1e3 / steps
            n_k[key] += 1 / steps
    rows = [{"chain": c[:600], "ms_per_step": ms, "kernels_per_step": n_k[c]} for c, ms in n_ms.most_common(top)]
    return {"steps": steps, "wall_ms_per_step": res.seconds * 1e3 / steps,
            "copy_ms_per_step": sum(n_ms.values()), "copy_kernels_per_step": sum(n_k.values()),
            "buckets_ms_per_step": dict(all_ms), "sources": rows,
            "kernels": [{"name": n, "ms_per_step": ms, "calls_per_step": k_n[n], "bucket": gpu_train.kernel_bucket(n)}
                        for n, ms in k_ms.most_common(kernels)]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=float, default=float("inf"), help="seconds for the whole script")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"among {list(VARIANTS)}")
    ap.add_argument("--sources", default="neither,both", help="variants whose copy sources are profiled")
    ap.add_argument("--peer", action="store_true", help="also time diffusers in the fastest recipe")
    ap.add_argument("--peer-forced", action="store_true", help="and diffusers with inductor's layout planning forced on")
    ap.add_argument("--name", default="probe.json")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    chosen = [v for v in args.variants.split(",") if v]
    sources = [v for v in args.sources.split(",") if v]
    if not set(chosen + sources) <= set(VARIANTS):
        print(f"--variants and --sources must be among {list(VARIANTS)}", file=sys.stderr)
        return 2
    cuda = torch.cuda.is_available()
    if not cuda and not args.quick:
        print("gpu_probe needs a CUDA device; use --quick to check the script on the CPU", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    device = torch.device("cuda" if cuda else "cpu")
    rec = common.Record(args.name, vars(args), budget=args.budget)
    rec["variants"] = {k: {"force_layout_opt": a, "nhwc_groupnorm": b, "triton_groupnorm": c, "inductor_options": o}
                       for k, (a, b, c, o) in VARIANTS.items()}
    rec["train"], rec["copy_sources"] = {}, {}
    g = torch.Generator(device=device).manual_seed(0)
    pool = torch.randn(4096 if cuda else 8, 3, 32, 32, device=device, generator=g).clamp_(-1, 1)
    batch, steps, warm, reps = (args.batch, 30, 8, 2) if not args.quick else (2, 1, 1, 1)
    recipe = gpu_train.FASTEST if cuda else "fp32"
    flops = 3 * 12.44e9  # replaced by the counted value below
    x1, t1 = torch.randn(1, 3, 32, 32, device=device), torch.tensor([500], device=device)
    flops = 3 * common.forward_flops(UNet.preset("ddpm-cifar10").to(device).eval(), x1, t1)
    for v in chosen:
        with rec.stage(f"ours:{v}", need=70) as ok:
            if ok:
                set_variant(v)
                r = gpu_train.ours(pool, batch, recipe, warm, steps, reps)
                r["tflops"] = flops * r["img_per_s"] / 1e12
                rec["train"][v] = r
                print(v, f"{r['img_per_s']:,.0f} img/s", f"compile+first call {r['warmup_s']:.0f}s t={rec.elapsed():.0f}s", flush=True)
    if cuda:
        for v in sources:
            with rec.stage(f"copy_sources:{v}", need=80) as ok:
                if ok:
                    set_variant(v)
                    rec["copy_sources"][v] = cs = copy_sources(pool, batch, steps=5)
                    print("copies", v, f"{cs['copy_ms_per_step']:.2f} ms/step", f"{cs['copy_kernels_per_step']:.0f} kernels/step",
                          {k: round(x, 2) for k, x in cs["buckets_ms_per_step"].items()}, flush=True)
                    for row in cs["sources"][:6]:
                        print("   ", f"{row['ms_per_step']:.3f} ms x{row['kernels_per_step']:.0f}", row["chain"][:300], flush=True)
                    for row in cs["kernels"][:40]:
                        print("    k", f"{row['ms_per_step']:.3f} ms x{row['calls_per_step']:.0f}", row["name"][:150], flush=True)
    if args.peer or args.peer_forced:
        for force in [f for f, on in ((False, args.peer), (True, args.peer_forced)) if on]:
            with rec.stage(f"peer:force_layout_opt={force}", need=90) as ok:
                if ok:
                    torch._dynamo.reset()
                    with torch._inductor.config.patch(force_layout_optimization=force):
                        r = gpu_train.peer(pool, batch, recipe, warm, steps, reps)
                    rec["train"][f"peer:force_layout_opt={force}"] = r
                    print("peer force_layout_opt", force, f"{r['img_per_s']:,.0f} img/s", f"t={rec.elapsed():.0f}s", flush=True)
    set_variant("layout_opt")  # the package's defaults
    print("img/s:", {k: round(v["img_per_s"]) for k, v in rec["train"].items()}, f"done in {rec.elapsed():.0f}s",
          "errors:", list(rec["errors"]), flush=True)
    rec.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
