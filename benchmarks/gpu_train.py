"""Training throughput on one GPU: what a user runs (``ddpm.train``) against diffusers' ``UNet2DModel`` in
the loop of its ``train_unconditional`` example, in the same process, on the same card and data.

    python -m benchmarks.gpu_train                    # -> $OUT/train.json (or benchmarks/results/train.json)
    python -m benchmarks.gpu_train --quick            # a tiny CPU run that checks the script

Both sides train the DDPM CIFAR-10 network (35.7M parameters) on random images in [-1, 1] at 3x32x32 with
EMA, gradient clipping at 1 and AdamW, in four recipes (``RECIPES``): fp32 eager, bf16 autocast, bf16 +
``torch.compile``, and bf16 + compile with CUDA graphs + channels-last + fused AdamW. Ours is timed through
``ddpm.train`` itself (its own step, EMA included; warm-up and compilation excluded), diffusers through
``benchmarks.common.PeerTrainer``. Also: both networks' parameters and forward FLOPs, the card's measured
bf16 matrix rate (the MFU denominator), the host syncs in one of our steps, a kernel profile of our fastest
recipe, and a short real-data loss curve of the fastest recipe against fp32.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import torch

import ddpm
from ddpm.nets.unet import UNet

from . import common

RECIPES = {
    # label: bf16 autocast, torch.compile mode (None: eager), channels-last, fused AdamW (the peer; ours always
    # uses fused AdamW on CUDA, as ddpm.train does). Ours: "bf16+compile" is TrainConfig(bf16=True, compile=True)
    # as a user types it (compile_mode "auto": the package's own choice of layout, kernels and graphs);
    # "bf16+compile+cudagraphs" spells out the expert flags (reduce-overhead, channels-last).
    "fp32": dict(bf16=False, compile=None, channels_last=False, fused=False),
    "bf16": dict(bf16=True, compile=None, channels_last=False, fused=False),
    "bf16+compile": dict(bf16=True, compile="default", channels_last=False, fused=False, ours_mode="auto"),
    "bf16+compile+cudagraphs": dict(bf16=True, compile="reduce-overhead", channels_last=True, fused=True),
}
FASTEST = "bf16+compile+cudagraphs"
# Ours only: the package's whole-step CUDA graph (forward, backward, clipping, AdamW, EMA in one graph) around
# the compiled network; diffusers has no such option.
WHOLE_STEP = "bf16+compile+whole-step-graph"
OURS_ONLY = {WHOLE_STEP: dict(bf16=True, compile="default", channels_last=True, fused=True, cuda_graph=True,
                              ours_mode="auto")}
PEER_KEYS = ("bf16", "compile", "channels_last", "fused")


def train_config(batch: int, recipe: str, steps: int, **changes) -> ddpm.TrainConfig:
    """The ``TrainConfig`` of one recipe (DDPM's CIFAR-10 hyper-parameters where they matter for speed)."""
    r = {**RECIPES, **OURS_ONLY}[recipe]
    if r.get("cuda_graph"):
        changes.setdefault("cuda_graph", True)
    return ddpm.TrainConfig(steps=steps, batch_size=batch, lr=2e-4, warmup=100, ema_decay=0.9999, grad_clip=1.0,
                            device="cuda" if torch.cuda.is_available() else "cpu", bf16=r["bf16"],
                            compile=r["compile"] is not None, compile_mode=r.get("ours_mode", r["compile"] or "auto"),
                            channels_last=r["channels_last"], log_every=max(steps, 1), **changes)


def ours(data, batch: int, recipe: str, warmup: int, steps: int, repeats: int) -> dict:
    """img/s of ``ddpm.train`` itself: ``repeats`` calls on the same model in the same process, each
    ``warmup + steps`` steps long; each call's ``images_per_second`` (measured by ``ddpm.train`` after its
    first steps: compilation, CUDA-graph capture, the optimiser's first allocations)."""
    model = UNet.preset("ddpm-cifar10")
    sched = ddpm.Schedule.linear(T=1000)
    n = max(4 * warmup, warmup + steps)  # ddpm.train leaves out min(20, n // 4) steps
    rates, secs = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = ddpm.train(model, sched, data, train_config(batch, recipe, n), progress=False)
        secs.append(time.perf_counter() - t0)
        rates.append(res.images_per_second or batch * n / res.seconds)
    return {"img_per_s": common.median(rates), "img_per_s_repeats": rates, "call_s": secs, "warmup_s": secs[0],
            "steps_per_call": n, "steps_left_out_per_call": res.warmup_steps, "through": "ddpm.train"}


def peer(data, batch: int, recipe: str, warmup: int, steps: int, repeats: int) -> dict:
    r = {k: RECIPES[recipe][k] for k in PEER_KEYS}
    tr = common.PeerTrainer(common.peer_unet(), data, batch, **r)
    t0 = time.perf_counter()
    for _ in range(warmup):
        tr.step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    warm_s = time.perf_counter() - t0

    def k_steps():
        for _ in range(steps):
            tr.step()

    ts = common.cuda_time(k_steps, repeats=repeats, warmup=0)
    rates = [batch * steps / t for t in ts]
    return {"img_per_s": common.median(rates), "img_per_s_repeats": rates, "warmup_s": warm_s,
            "steps_per_repeat": steps, "through": "benchmarks.common.PeerTrainer (train_unconditional's step)"}


def count_syncs(data, batch: int, steps: int = 4) -> dict:
    """Host-device synchronisations in ``steps`` calls of ``ddpm.TrainStep`` (the step ``ddpm.train`` runs;
    eager bf16), counted by CUDA's sync debug mode after one warm-up step."""
    model = UNet.preset("ddpm-cifar10").to(data.device)
    gen = torch.Generator(device=data.device).manual_seed(0)
    step = ddpm.TrainStep(model, ddpm.Schedule.linear(T=1000), train_config(batch, "bf16", steps + 1), generator=gen)
    step(data, 1)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            for k in range(2, steps + 2):
                step(data, k)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    msgs = [str(x.message).splitlines()[0][:160] for x in w if "synchroniz" in str(x.message).lower()]
    return {"steps": steps, "syncs": len(msgs), "syncs_per_step": len(msgs) / steps, "messages": sorted(set(msgs))}


def profile_ours(data, batch: int, recipe: str, steps: int, top: int = 15) -> dict:
    """Kernels of ``steps`` steps of ``ddpm.train`` in ``recipe`` (after a warm-up call): self time per step,
    grouped by kind; the copy operators with the shapes they copied (recipes without CUDA graphs only: in a
    graph replay the operators are not seen)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    model = UNet.preset("ddpm-cifar10")
    sched = ddpm.Schedule.linear(T=1000)
    ddpm.train(model, sched, data, train_config(batch, recipe, 8), progress=False)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
        res = ddpm.train(model, sched, data, train_config(batch, recipe, steps), progress=False)
    kern = [e for e in prof.key_averages() if e.device_type == DeviceType.CUDA and not is_annotation(e.key)]
    rows = sorted(((e.key, e.self_device_time_total / 1e3 / steps, e.count / steps) for e in kern), key=lambda r: -r[1])
    total = sum(r[1] for r in rows)
    buckets, launches = dict.fromkeys(BUCKETS, 0.0), dict.fromkeys(BUCKETS, 0.0)
    for name, ms, n in rows:
        buckets[kernel_bucket(name)] += ms
        launches[kernel_bucket(name)] += n
    copies = [e for e in prof.key_averages(group_by_input_shape=True)
              if e.key in ("aten::copy_", "aten::clone", "aten::contiguous", "aten::_to_copy", "aten::cat")
              and e.device_time_total > 0]
    copies = sorted(copies, key=lambda e: -e.device_time_total)[:top]
    return {
        "recipe": recipe, "batch": batch, "steps": steps, "wall_ms_per_step": res.seconds * 1e3 / steps,
        "kernel_ms_per_step": total, "gpu_busy_share": total / (res.seconds * 1e3 / steps),
        "kernels_per_step": sum(r[2] for r in rows),
        "buckets_ms_per_step": buckets, "buckets_share": {b: v / total for b, v in buckets.items()},
        "buckets_kernels_per_step": launches,
        "top": [{"name": n[:160], "bucket": kernel_bucket(n), "self_ms_per_step": ms, "calls_per_step": c,
                 "share": ms / total} for n, ms, c in rows[:top]],
        "copy_ops": [{"op": e.key, "shapes": str(e.input_shapes)[:200], "device_ms_per_step": e.device_time_total / 1e3 / steps,
                      "calls_per_step": e.count / steps} for e in copies],
    }


BUCKETS = ("convolution", "GEMM/attention", "normalization/elementwise", "Triton GroupNorm (package)", "copy",
           "optimizer/EMA", "other")
# the kernels of ddpm.gpu._gn_triton (they carry their own names, not inductor's triton_ prefix)
PACKAGE_GN_KERNELS = ("_stats_kernel", "_fwd_kernel", "_fwd_combine_kernel", "_fwd_apply_kernel", "_bwd_reduce_kernel",
                      "_bwd_combine_kernel", "_bwd_apply_kernel")


def kernel_bucket(name: str) -> str:
    """Group a CUDA kernel by its name (cuDNN / cuBLAS / Triton / ATen naming)."""
    if name in PACKAGE_GN_KERNELS:
        return "Triton GroupNorm (package)"
    n = name.lower()
    if any(k in n for k in ("multi_tensor_apply", "adam", "foreach", "lpnorm", "lerp")):
        return "optimizer/EMA"  # fused AdamW, clip_grad_norm_'s foreach norm and scale, the EMA lerp
    if any(k in n for k in ("flash", "fmha", "sdpa", "attention", "attn")):
        return "GEMM/attention"
    if "triton_tem" in n:
        return "convolution" if "conv" in n else "GEMM/attention"
    if "triton_" in n:
        return "normalization/elementwise"  # inductor's fused GroupNorm / SiLU / dropout / add / cast kernels
    if any(k in n for k in ("conv", "fprop", "dgrad", "wgrad", "implicit_gemm", "implicit_precomp",
                            "nchwtonhwc", "nhwctonchw", "cudnn", "winograd")):
        return "convolution"
    if any(k in n for k in ("gemm", "nvjet", "cublas", "cutlass", "xmma", "sm90_", "sm80_", "splitk", "bmm")):
        return "GEMM/attention"
    if any(k in n for k in ("direct_copy", "copy_kernel", "nocast", "memcpy")):
        return "copy"
    if any(k in n for k in ("elementwise", "reduce", "norm", "softmax", "silu", "cat", "index", "gather",
                            "scatter", "fill", "dropout", "philox", "unrolled", "vectorized")):
        return "normalization/elementwise"
    return "other"


def is_annotation(name: str) -> bool:
    """GPU-side annotations (``Optimizer.step#AdamW.step``, ``## Call CompiledFxGraph ... ##``) span kernels
    that are listed on their own: counting them would count that time twice."""
    return name.startswith("## ") or ("#" in name and "<" not in name and "(" not in name)


def loss_curves(data, batch: int, steps: int, fast: str) -> dict:
    """Losses of ``ddpm.train`` in fp32 and in ``fast`` from the same initial weights and the same draws."""
    curves = {}
    for recipe in ("fp32", fast):
        torch.manual_seed(0)
        model = UNet.preset("ddpm-cifar10")
        res = ddpm.train(model, ddpm.Schedule.linear(T=1000), data, train_config(batch, recipe, steps, seed=1),
                         progress=False)
        curves[recipe] = [float(v) for v in res.losses]
    w = max(1, steps // 10)
    means = {m: [sum(c[i:i + w]) / w for i in range(0, len(c) - w + 1, w)] for m, c in curves.items()}
    rel = [abs(a - b) / b for a, b in zip(means[fast], means["fp32"])]
    return {"recipes": ["fp32", fast], "batch": batch, "window": w, "window_means": means, "raw": curves,
            "max_rel_diff_window_means": max(rel), "final_window_rel_diff": rel[-1]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=float, default=float("inf"),
                    help="seconds for the whole script: a stage that would not fit is skipped and says so (default: no limit)")
    ap.add_argument("--batches", default="128,256", help="batch sizes, comma-separated (default 128,256)")
    ap.add_argument("--steps", type=int, default=30, help="steps per timed repeat (default 30)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported (default 3)")
    ap.add_argument("--warmup", type=int, default=8, help="untimed warm-up steps (default 8)")
    ap.add_argument("--curve-steps", type=int, default=200, help="steps of the real-data loss curve (default 200)")
    ap.add_argument("--data-dir", default=None, help="folder with Fashion-MNIST's t10k IDX files for the loss curve "
                    "(default: ddpm.data's usual places)")
    ap.add_argument("--name", default="train.json", help="output file name (default train.json)")
    ap.add_argument("--recipes", default=",".join([*RECIPES, WHOLE_STEP]), help="recipes to time (default: all)")
    ap.add_argument("--sides", default="peer,ours", help="peer, ours or both (default peer,ours)")
    ap.add_argument("--stages", default="syncs,profile,curve", help="extra stages (default syncs,profile,curve)")
    ap.add_argument("--quick", action="store_true", help="a tiny CPU run that checks the script")
    args = ap.parse_args(argv)
    known = {*RECIPES, WHOLE_STEP}
    if not {r for r in args.recipes.split(",") if r} <= known or not set(args.sides.split(",")) <= {"peer", "ours"} \
            or not set(args.stages.split(",")) <= {"syncs", "profile", "curve", "copies", ""}:
        print(f"--recipes must be among {sorted(known)}, --sides among peer, ours, --stages among syncs, profile, "
              "curve, copies", file=sys.stderr)
        return 2
    chosen, sides, stages = [r for r in args.recipes.split(",") if r], args.sides.split(","), args.stages.split(",")
    cuda = torch.cuda.is_available()
    if not cuda and not args.quick:
        print("gpu_train needs a CUDA device; use --quick to check the script on the CPU", file=sys.stderr)
        return 2
    try:
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        print(f"--batches must be comma-separated integers, got {args.batches!r}", file=sys.stderr)
        return 2
    if args.quick:
        batches, args.steps, args.repeats, args.warmup, args.curve_steps = [2], 1, 1, 1, 4
    torch.backends.cudnn.benchmark = True
    device = torch.device("cuda" if cuda else "cpu")
    rec = common.Record(args.name, vars(args), budget=args.budget)
    rec["recipes"] = RECIPES
    rec["train"] = {}
    rec["ours_fused_adamw"] = cuda

    with rec.stage("models"):
        x1, t1 = torch.randn(1, 3, 32, 32, device=device), torch.tensor([500], device=device)
        m = {"ours": UNet.preset("ddpm-cifar10"), "peer": common.peer_eps(common.peer_unet())}
        rec["models"] = {k: {"params": common.num_params(v), "fwd_flops": common.forward_flops(v.to(device).eval(), x1, t1)}
                         for k, v in m.items()}
        del m
        if cuda:
            rec["matmul_bf16_flops"] = common.matmul_peak()
        print("models", rec["models"], rec.data.get("matmul_bf16_flops"), flush=True)

    g = torch.Generator(device=device).manual_seed(0)
    pool = torch.randn(4096 if cuda else 8, 3, 32, 32, device=device, generator=g).clamp_(-1, 1)  # not zeros

    def measure(side: str, recipe: str, batch: int, need: float):
        label = f"{side}:{recipe}:b{batch}"
        if recipe not in chosen or side not in sides:
            return
        with rec.stage(label, need=need) as ok:
            if not ok:
                return
            torch._dynamo.reset()  # a fresh compile for every measurement (no shape-generic graphs)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            fn = ours if side == "ours" else peer
            r = fn(pool, batch, recipe, args.warmup, args.steps, args.repeats)
            flops = rec["models"][side]["fwd_flops"] if "models" in rec.data else None
            if flops:
                r["tflops"] = 3 * flops * r["img_per_s"] / 1e12  # forward + backward ~ 3 forwards
                if "matmul_bf16_flops" in rec.data:
                    r["mfu_vs_measured_matmul"] = r["tflops"] * 1e12 / rec["matmul_bf16_flops"]
            if cuda:
                r["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
            rec["train"][label] = r
            print(label, f"{r['img_per_s']:,.0f} img/s", f"t={rec.elapsed():.0f}s", flush=True)

    recipes = list(RECIPES) if cuda else ["fp32"]
    b0 = batches[0]
    for recipe in sorted(recipes, key=lambda r: r != FASTEST):  # the first batch size, the fastest recipe first
        for side in ("peer", "ours"):
            measure(side, recipe, b0, need=60)

    for batch in batches[1:]:  # the other batch sizes (each one recompiles both networks)
        for recipe in (FASTEST, "bf16+compile"):
            if recipe in recipes:
                for side in ("peer", "ours"):
                    measure(side, recipe, batch, need=70)
        if cuda:
            measure("ours", WHOLE_STEP, batch, need=60)

    if cuda and "syncs" in stages:
        with rec.stage("syncs", need=40) as ok:
            if ok:
                rec["syncs"] = count_syncs(pool, b0)
                print("syncs", rec["syncs"], flush=True)

    if cuda:
        measure("ours", WHOLE_STEP, b0, need=60)
    if cuda and "profile" in stages:
        with rec.stage("profile", need=50) as ok:
            if ok:
                rec["profile"] = {FASTEST: profile_ours(pool, b0, FASTEST, steps=10)}
                print("profile", {k: v for k, v in rec["profile"][FASTEST].items() if k not in ("top", "copy_ops")}, flush=True)
    if "curve" in stages:
        with rec.stage("loss_curve", need=45) as ok:
            if ok:
                fm = ddpm.data.load_mnist_like("fashion-mnist", data_dir=args.data_dir, split="test")
                fm = torch.nn.functional.pad(fm, (2, 2, 2, 2), value=-1.0).repeat(1, 3, 1, 1)  # (N, 3, 32, 32)
                rec["loss_curve"] = loss_curves(fm[:64] if args.quick else fm, b0, args.curve_steps, FASTEST if cuda else "fp32")
                print("loss curve", {k: [round(v, 4) for v in vals] for k, vals in rec["loss_curve"]["window_means"].items()}, flush=True)


    if cuda and "copies" in stages:
        with rec.stage("profile_no_graphs", need=50) as ok:
            if ok:
                rec["profile"]["bf16+compile"] = profile_ours(pool, b0, "bf16+compile", steps=10)
                for row in rec["profile"]["bf16+compile"]["copy_ops"][:8]:
                    print("copy", row, flush=True)
    summary = {}
    for batch in batches:
        for recipe in RECIPES:
            o, p = rec["train"].get(f"ours:{recipe}:b{batch}"), rec["train"].get(f"peer:{recipe}:b{batch}")
            if o and p:
                summary[f"{recipe}:b{batch}"] = o["img_per_s"] / p["img_per_s"]
    rec["speedup_same_recipe"] = summary
    fastest = {}
    for batch in batches:  # the package's fastest flags against diffusers' same recipe and its bf16+compile
        mine = {r: rec["train"][f"ours:{r}:b{batch}"]["img_per_s"] for r in (FASTEST, WHOLE_STEP)
                if f"ours:{r}:b{batch}" in rec["train"]}
        if mine:
            best = max(mine, key=mine.get)
            row = {"ours_recipe": best, "ours_img_per_s": mine[best]}
            for r in (FASTEST, "bf16+compile"):
                p = rec["train"].get(f"peer:{r}:b{batch}")
                if p:
                    row[f"over_peer_{r}"] = mine[best] / p["img_per_s"]
            fastest[f"b{batch}"] = row
    rec["fastest"] = fastest
    print("fastest flags:", fastest, flush=True)
    print("ours / diffusers, same recipe:", {k: round(v, 3) for k, v in summary.items()}, flush=True)
    print(f"done in {rec.elapsed():.0f}s; errors: {list(rec['errors'])}", flush=True)
    rec.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
