"""Training throughput on one GPU: our ``ddpm-cifar10`` U-Net against diffusers' ``UNet2DModel``.

Both networks run in the SAME training step (``ddpm.loss_simple`` with the core's own draws of t and eps,
backward, gradient clipping at 1, AdamW step), batch 128 at 3x32x32, in each precision / compilation mode.
Warm-up steps (compilation included) are excluded; each repeat of K steps is timed with CUDA events and the
median over repeats is reported. Also: parameter counts and forward FLOPs of both networks, the card's
measured bf16 matrix rate (the MFU denominator), a short real-data loss curve of the fast mode against
float32, a profile of the fastest mode, and a probe of the ``fashion-mnist`` preset's speeds.

    GIT_COMMIT=$(git rev-parse HEAD) python benchmarks/gpu_train.py --budget 540

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
                    "when the throughput stage is skipped")
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
    for which, mode in order:
        label = f"{which}:{mode}"
        if dl.left() < 60:
            res["errors"][label] = "skipped: out of time"
            continue
        try:
            torch.cuda.reset_peak_memory_stats() if device.type == "cuda" else None
            tr = Trainer(build(which, device), schedule, pool, args.batch, mode)
            if device.type == "cuda":
                r = throughput(tr, args.warmup, args.steps, args.repeats)
            else:
                t0 = time.perf_counter()
                tr.step()
                r = {"img_per_s": args.batch / (time.perf_counter() - t0)}
            flops = res["models"][which]["fwd_flops"]
            r["tflops"] = 3 * flops * r["img_per_s"] / 1e12  # forward + backward = 3 forwards
            if "matmul_bf16_flops" in res:
                r["mfu_vs_measured_matmul"] = r["tflops"] * 1e12 / res["matmul_bf16_flops"]
                r["mfu_vs_datasheet"] = r["tflops"] * 1e12 / common.H100_BF16_DENSE_PEAK
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
