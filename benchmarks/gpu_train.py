"""Training throughput on one GPU: our ``ddpm-cifar10`` U-Net against diffusers' ``UNet2DModel``.

Both networks run in the SAME training step (``ddpm.loss_simple`` with the core's own draws of t and eps,
backward, gradient clipping at 1, AdamW step), batch 128 at 3x32x32, in each precision / compilation mode.
Warm-up steps (compilation included) are excluded; each repeat of K steps is timed with CUDA events and the
median over repeats is reported. Also: parameter counts and forward FLOPs of both networks, the card's
measured bf16 matrix rate (the MFU denominator), a short real-data loss curve of the fast mode against
float32, a profile of the fastest mode, and a probe of the ``fashion-mnist`` preset's speeds.

    GIT_COMMIT=$(git rev-parse HEAD) python benchmarks/gpu_train.py --budget 540

The ``fair`` stage (``--stages fair --name train_fair.json``) answers the fairness question: diffusers'
network trained with exactly our fastest recipe (bf16 + compile with CUDA graphs + channels-last + fused
AdamW), our network re-measured in the same process as the baseline, and a ``torch.profiler`` summary of
both (top CUDA kernels by self CUDA time, grouped into convolution / GEMM+attention / normalization+
elementwise / optimizer / other):

    GIT_COMMIT=$(git rev-parse HEAD) python benchmarks/gpu_train.py --stages fair --name train_fair.json --budget 440

writes ``$OUT/train.json`` (or ``benchmarks/results/train.json``). ``--quick`` runs tiny sizes on the CPU
to check the script itself.
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

import ddpm  # noqa: E402
from ddpm.nets.unet import UNet  # noqa: E402

MODES = {
    # label: (bf16 autocast, torch.compile mode or None, channels_last, fused AdamW)
    "fp32": (False, None, False, False),
    "bf16": (True, None, False, False),
    "bf16+compile": (True, "default", False, False),
    "bf16+compile+cl+fused": (True, "default", True, True),
    "bf16+compile+cl+fused+cudagraphs": (True, "reduce-overhead", True, True),
}


def build(which: str, device):
    if which == "ours":
        return UNet.preset("ddpm-cifar10").to(device)
    return common.PeerEps(common.peer_unet()).to(device)


class Trainer:
    """One training step shared by every model and mode: loss_simple + backward + clip + AdamW."""

    def __init__(self, model, schedule, data, batch, mode, lr=2e-4, seed=0):
        bf16, compile_mode, cl, fused = MODES[mode]
        self.device = data.device
        self.model = model.train()
        if cl:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.net = torch.compile(self.model, mode=compile_mode) if compile_mode else self.model
        self.cudagraphs = compile_mode == "reduce-overhead"
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        kw = dict(fused=True) if fused else {}
        self.opt = torch.optim.AdamW(self.params, lr=lr, weight_decay=0.0, **kw)
        self.sched, self.data, self.B, self.bf16, self.cl = schedule, data, batch, bf16, cl
        self.gen = torch.Generator(device=self.device).manual_seed(seed)

    def step(self):
        if self.cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        idx = torch.randint(0, self.data.shape[0], (self.B,), generator=self.gen, device=self.device)
        x0 = self.data[idx]  # (B, C, H, W)
        if self.cl:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = ddpm.loss_simple(self.net, self.sched, x0, generator=self.gen)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        return loss.detach()


def throughput(tr: Trainer, warmup: int, steps: int, repeats: int) -> dict:
    t0 = time.perf_counter()
    for _ in range(warmup):
        tr.step()
    torch.cuda.synchronize()
    warm_s = time.perf_counter() - t0

    def k_steps():
        for _ in range(steps):
            tr.step()

    ts = common.cuda_time(k_steps, repeats=repeats, warmup=0)
    return {"img_per_s": tr.B * steps / common.median(ts), "img_per_s_repeats": [tr.B * steps / t for t in ts],
            "warmup_s": warm_s, "steps_per_repeat": steps, "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30}


def loss_curve(model, schedule, data, batch, mode, steps, seed=1):
    tr = Trainer(model, schedule, data, batch, mode, seed=seed)
    out = torch.stack([tr.step() for _ in range(steps)])
    return out.float().cpu().tolist()


def profile_table(tr: Trainer, steps: int = 5) -> str:
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        tr.step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            tr.step()
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=70)


BUCKETS = ("convolution", "GEMM/attention", "normalization/elementwise", "optimizer", "other")


def kernel_bucket(name: str) -> str:
    """Group a CUDA kernel by its name (cuDNN/cuBLAS/CUTLASS/Triton/ATen naming)."""
    n = name.lower()
    if any(k in n for k in ("multi_tensor_apply", "adam", "foreach", "lpnorm")):
        return "optimizer"  # fused AdamW and clip_grad_norm_'s foreach norm / scale
    if any(k in n for k in ("flash", "fmha", "sdpa", "attention", "attn")):
        return "GEMM/attention"
    if "triton_tem" in n:
        return "convolution" if "conv" in n else "GEMM/attention"
    if "triton_" in n:
        return "normalization/elementwise"  # inductor's fused GroupNorm/SiLU/add/cast kernels
    if any(k in n for k in ("conv", "fprop", "dgrad", "wgrad", "implicit_gemm", "implicit_precomp",
                            "nchwtonhwc", "nhwctonchw", "cudnn", "winograd")):
        return "convolution"
    if any(k in n for k in ("gemm", "nvjet", "cublas", "cutlass", "xmma", "sm90_", "sm80_", "ampere_",
                            "hopper", "splitk", "bmm", "mm_")):
        return "GEMM/attention"
    if any(k in n for k in ("elementwise", "reduce", "norm", "softmax", "silu", "copy", "cat", "index",
                            "gather", "scatter", "fill", "dropout", "philox", "unrolled", "vectorized")):
        return "normalization/elementwise"
    return "other"


def is_annotation(name: str) -> bool:
    """GPU-side user annotations (``Optimizer.step#AdamW.step``, ``## Call CompiledFxGraph ... ##``) span kernels
    that are also listed on their own: counting them would count that time twice."""
    return name.startswith("## ") or ("#" in name and "<" not in name and "(" not in name)


def drop_annotations(ks: dict) -> dict:
    """Add ``*_excl_annotations`` keys to a kernel summary, from its ``top`` rows (annotations ranked below the
    top rows cannot be removed this way; ``kernel_summary`` now filters them at the source)."""
    ann = [r for r in ks["top"] if is_annotation(r["name"])]
    total = ks["kernel_ms_per_step"] - sum(r["self_ms_per_step"] for r in ann)
    b = dict(ks["buckets_ms_per_step"])
    for r in ann:
        b[r["bucket"]] -= r["self_ms_per_step"]
    ks.update(annotations_excluded=[r["name"] for r in ann], kernel_ms_per_step_excl_annotations=total,
              gpu_busy_share_excl_annotations=total / ks["wall_ms_per_step"], buckets_ms_per_step_excl_annotations=b,
              buckets_share_excl_annotations={k: v / total for k, v in b.items()},
              top_excl_annotations=[dict(r, share=r["self_ms_per_step"] / total) for r in ks["top"]
                                    if not is_annotation(r["name"])])
    return ks


def kernel_summary(tr: Trainer, steps: int = 10, warm: int = 3, top: int = 15) -> dict:
    """Profile ``steps`` training steps; per step: top kernels by self CUDA time, buckets, GPU-busy share.

    On a CPU-only machine (the --quick check) the CPU operators stand in for the kernels."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = tr.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(warm):
        tr.step()
    sync()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            tr.step()
        sync()
        wall = time.perf_counter() - t0
    avg = prof.key_averages()
    if cuda:
        evs = [e for e in avg if e.device_type == DeviceType.CUDA and not is_annotation(e.key)]
        self_us = lambda e: getattr(e, "self_device_time_total", None) or e.self_cuda_time_total  # noqa: E731
    else:
        evs = [e for e in avg if e.key.startswith("aten::")]
        self_us = lambda e: e.self_cpu_time_total  # noqa: E731
    rows = sorted(((e.key, self_us(e) / 1e3 / steps, e.count / steps) for e in evs), key=lambda r: -r[1])
    total = sum(r[1] for r in rows)
    buckets = {b: 0.0 for b in BUCKETS}
    launches = {b: 0.0 for b in BUCKETS}
    for name, ms, n in rows:
        buckets[kernel_bucket(name)] += ms
        launches[kernel_bucket(name)] += n
    return drop_annotations({
        "steps": steps, "activity": "cuda kernels" if cuda else "cpu aten ops (quick check)",
        "wall_ms_per_step": wall * 1e3 / steps, "kernel_ms_per_step": total,
        "gpu_busy_share": total / (wall * 1e3 / steps), "kernels_per_step": sum(r[2] for r in rows),
        "distinct_kernels": len(rows),
        "buckets_ms_per_step": buckets,
        "buckets_share": {b: (v / total if total else 0.0) for b, v in buckets.items()},
        "buckets_kernels_per_step": launches,
        "top": [{"name": name[:160], "bucket": kernel_bucket(name), "self_ms_per_step": ms, "calls_per_step": n,
                 "share": ms / total if total else 0.0} for name, ms, n in rows[:top]],
        "table": prof.key_averages().table(sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total",
                                           row_limit=40, max_name_column_width=90),
    })


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=540.0, help="seconds for the whole script")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20, help="steps per timed repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--curve-steps", type=int, default=300)
    ap.add_argument("--data", default=".carry/fashion-mnist")
    ap.add_argument("--quick", action="store_true", help="tiny CPU run to test the script")
    ap.add_argument("--stages", default="throughput,curve,profile,probe", help="comma-separated subset")
    ap.add_argument("--name", default="train.json", help="output file name under $OUT")
    ap.add_argument("--fast-mode", default="bf16+compile+cl+fused+cudagraphs", help="mode of the curve/profile "
                    "when the throughput stage is skipped, and the recipe of the fair stage")
    ap.add_argument("--profile-steps", type=int, default=10, help="profiled steps of the fair stage")
    args = ap.parse_args(argv)
    dl = common.Deadline(args.budget)
    out = common.out_dir()
    path = out / args.name
    stages = set(args.stages.split(","))
    torch.backends.cudnn.benchmark = True
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    res = {"env": common.environment(), "config": vars(args), "models": {}, "train": {}, "errors": {}}

    def save():
        res["elapsed_s"] = dl.elapsed()
        common.write_json(path, res)

    # -- the two networks: parameters and forward FLOPs (batch 1, 3x32x32)
    x1 = torch.randn(1, 3, 32, 32, device=device)
    t1 = torch.tensor([500], device=device)
    for which in ("ours", "peer"):
        m = build(which, device).eval()
        res["models"][which] = {"params": common.num_params(m), "fwd_flops": common.forward_flops(m, x1, t1)}
        del m
    a, b = res["models"]["ours"], res["models"]["peer"]
    res["models"]["params_rel_diff"] = abs(a["params"] - b["params"]) / b["params"]
    res["models"]["flops_rel_diff"] = abs(a["fwd_flops"] - b["fwd_flops"]) / b["fwd_flops"]
    if device.type == "cuda":
        res["matmul_bf16_flops"] = common.matmul_peak()
    save()
    print("models", res["models"], flush=True)

    schedule = ddpm.Schedule.linear(T=1000).to(device, torch.float32)
    g = torch.Generator(device=device).manual_seed(0)
    pool = torch.randn(4096, 3, 32, 32, device=device, generator=g).clamp_(-1, 1)  # random images (not zeros)

    modes = list(MODES) if device.type == "cuda" else ["fp32"]
    order = [("peer", m) for m in ("fp32", "bf16", "bf16+compile")] + [("ours", m) for m in modes]
    if args.quick:
        order = [("peer", "fp32"), ("ours", "fp32")]
    if "throughput" not in stages:
        order = []
    def measure(which: str, mode: str):
        """One model in one mode through the shared Trainer: img/s (median of repeats), TFLOP/s, MFU."""
        tr = Trainer(build(which, device), schedule, pool, args.batch, mode)
        if device.type == "cuda":
            r = throughput(tr, args.warmup, args.steps, args.repeats)
        else:
            t0 = time.perf_counter()
            tr.step()
            r = {"img_per_s": args.batch / (time.perf_counter() - t0)}
        r["tflops"] = 3 * res["models"][which]["fwd_flops"] * r["img_per_s"] / 1e12  # forward + backward = 3 forwards
        if "matmul_bf16_flops" in res:
            r["mfu_vs_measured_matmul"] = r["tflops"] * 1e12 / res["matmul_bf16_flops"]
            r["mfu_vs_datasheet"] = r["tflops"] * 1e12 / common.H100_BF16_DENSE_PEAK
        return tr, r

    for which, mode in order:
        label = f"{which}:{mode}"
        if dl.left() < 60:
            res["errors"][label] = "skipped: out of time"
            continue
        try:
            torch.cuda.reset_peak_memory_stats() if device.type == "cuda" else None
            tr, r = measure(which, mode)
            res["train"][label] = r
            print(label, {k: round(v, 3) for k, v in r.items() if isinstance(v, float)}, f"t={dl.elapsed():.0f}s", flush=True)
            del tr
        except Exception as e:  # noqa: BLE001 - record and go on to the next mode
            res["errors"][label] = "".join(traceback.format_exception_only(type(e), e))[-2000:]
            print("ERROR", label, res["errors"][label], flush=True)
        torch.cuda.empty_cache() if device.type == "cuda" else None
        save()

    peer = {k.split(":", 1)[1]: v["img_per_s"] for k, v in res["train"].items() if k.startswith("peer:")}
    ours = {k.split(":", 1)[1]: v["img_per_s"] for k, v in res["train"].items() if k.startswith("ours:")}
    if peer and ours:
        pb, ob = max(peer, key=peer.get), max(ours, key=ours.get)
        res["best"] = {"peer_mode": pb, "peer_img_per_s": peer[pb], "ours_mode": ob, "ours_img_per_s": ours[ob],
                       "speedup": ours[ob] / peer[pb],
                       "same_mode_speedups": {m: ours[m] / peer[m] for m in peer if m in ours}}
        print("best", res["best"], flush=True)
    save()

    # -- fairness: diffusers' network with exactly our fastest recipe, ours re-measured beside it, profiles
    if "fair" in stages:
        fair_mode = "fp32" if args.quick or device.type != "cuda" else args.fast_mode
        fair = res.setdefault("fair", {"mode": fair_mode, "train": {}, "profile": {}})
        keep = {}
        for which in ("peer", "ours"):  # the unknown first
            label = f"{which}:{fair_mode}"
            if dl.left() < 100 and not args.quick:
                res["errors"][f"fair:{label}"] = "skipped: out of time"
                continue
            try:
                torch.cuda.reset_peak_memory_stats() if device.type == "cuda" else None
                tr, r = measure(which, fair_mode)
                fair["train"][which] = r
                keep[which] = tr
                print("fair", label, {k: round(v, 3) for k, v in r.items() if isinstance(v, float)},
                      f"t={dl.elapsed():.0f}s", flush=True)
            except Exception as e:  # noqa: BLE001
                res["errors"][f"fair:{label}"] = "".join(traceback.format_exception_only(type(e), e))[-2000:]
                print("ERROR fair", label, res["errors"][f"fair:{label}"], flush=True)
            save()
        if "peer" in fair["train"] and "ours" in fair["train"]:
            fair["speedup_same_recipe"] = fair["train"]["ours"]["img_per_s"] / fair["train"]["peer"]["img_per_s"]
            print("fair speedup", fair["speedup_same_recipe"], flush=True)
        for which in ("ours", "peer"):  # ours is the profile asked for; the peer's if time is left
            if which not in keep or (dl.left() < 40 and not args.quick):
                continue
            try:
                ks = kernel_summary(keep[which], steps=2 if args.quick else args.profile_steps)
                (out / f"train_fair_profile_{which}.txt").write_text(ks.pop("table"))
                fair["profile"][which] = ks
                print("profile", which, {k: v for k, v in ks.items() if k not in ("top",)}, flush=True)
                for row in ks["top"]:
                    print(f"  {row['self_ms_per_step']:8.3f} ms {row['calls_per_step']:6.1f}x {row['bucket']:26s} "
                          f"{row['name'][:100]}", flush=True)
            except Exception as e:  # noqa: BLE001
                res["errors"][f"fair:profile:{which}"] = "".join(traceback.format_exception_only(type(e), e))[-2000:]
                print("ERROR profile", which, res["errors"][f"fair:profile:{which}"], flush=True)
            save()
        keep.clear()
        # insurance: if the profiler saw no kernels inside the CUDA-graph replays, profile the same inductor
        # kernels without graphs (one more compile)
        po = fair["profile"].get("ours")
        if device.type == "cuda" and po is not None and po["kernels_per_step"] < 50 and dl.left() > 150:
            try:
                tr = Trainer(build("ours", device), schedule, pool, args.batch, "bf16+compile+cl+fused")
                ks = kernel_summary(tr, steps=args.profile_steps, warm=args.warmup)
                (out / "train_fair_profile_ours_nographs.txt").write_text(ks.pop("table"))
                fair["profile"]["ours_nographs"] = ks
                print("profile ours_nographs", ks["buckets_ms_per_step"], flush=True)
                del tr
            except Exception as e:  # noqa: BLE001
                res["errors"]["fair:profile:ours_nographs"] = "".join(
                    traceback.format_exception_only(type(e), e))[-2000:]
        save()

    # -- numerics: a short real run (Fashion-MNIST padded to 32x32, 3 channels) fast mode vs float32
    fast = res.get("best", {}).get("ours_mode", args.fast_mode)
    if device.type == "cuda" and dl.left() > 150 and "curve" in stages:
        try:
            fm = ddpm.data.load_mnist_like("fashion-mnist", data_dir=args.data, split="train")[:20000]
            fm = torch.nn.functional.pad(fm, (2, 2, 2, 2), value=-1.0).repeat(1, 3, 1, 1).to(device)
            curves = {}
            for mode in ("fp32", fast):
                torch.manual_seed(0)  # same initial weights for both runs
                curves[mode] = loss_curve(UNet.preset("ddpm-cifar10").to(device), schedule, fm, args.batch, mode,
                                          args.curve_steps)
            w = 25
            means = {m: [sum(c[i:i + w]) / w for i in range(0, len(c) - w + 1, w)] for m, c in curves.items()}
            rel = [abs(x - y) / y for x, y in zip(means[fast], means["fp32"])]
            res["loss_curve"] = {"modes": ["fp32", fast], "window": w, "window_means": means, "raw": curves,
                                 "max_rel_diff_window_means": max(rel), "final_window_rel_diff": rel[-1]}
            print("loss curve", {m: [round(v, 4) for v in means[m]] for m in means}, flush=True)
        except Exception as e:  # noqa: BLE001
            res["errors"]["loss_curve"] = "".join(traceback.format_exception_only(type(e), e))[-2000:]
            print("ERROR loss_curve", res["errors"]["loss_curve"], flush=True)
        save()

    # -- where the time goes in our fastest mode
    if device.type == "cuda" and dl.left() > 90 and "profile" in stages:
        try:
            tr = Trainer(build("ours", device), schedule, pool, args.batch, fast)
            (out / "train_profile.txt").write_text(profile_table(tr))
            del tr
        except Exception as e:  # noqa: BLE001
            res["errors"]["profile"] = "".join(traceback.format_exception_only(type(e), e))[-2000:]
        save()

    # -- the fashion-mnist preset: training img/s and forward img/s (plans the quality run)
    if device.type == "cuda" and dl.left() > 90 and "probe" in stages:
        try:
            fmp = torch.randn(8192, 1, 28, 28, device=device).clamp_(-1, 1)
            probe = {}
            for mode in ("bf16", "bf16+compile+cl+fused"):
                tr = Trainer(UNet.preset("fashion-mnist").to(device), schedule, fmp, 256, mode)
                probe[f"train:{mode}:b256"] = throughput(tr, 8, 20, 3)["img_per_s"]
            m = UNet.preset("fashion-mnist").to(device).eval().to(memory_format=torch.channels_last)
            cm = torch.compile(m)
            for B in (1000, 2500):
                x = torch.randn(B, 1, 28, 28, device=device).contiguous(memory_format=torch.channels_last)
                tt = torch.full((B,), 500, device=device)
                with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                    ts = common.cuda_time(lambda: cm(x, tt), repeats=10, warmup=3)
                probe[f"fwd:bf16+compile+cl:b{B}_img_per_s"] = B / common.median(ts)
            res["fashion_probe"] = probe
            print("fashion probe", probe, flush=True)
        except Exception as e:  # noqa: BLE001
            res["errors"]["fashion_probe"] = "".join(traceback.format_exception_only(type(e), e))[-2000:]
        save()
    print(f"done in {dl.elapsed():.0f}s; errors: {list(res['errors'])}", flush=True)


if __name__ == "__main__":
    main()
