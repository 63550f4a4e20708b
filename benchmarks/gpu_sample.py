"""Sampling speed on one GPU: 256 images at 3x32x32 with DDIM-50 and DDPM-1000, ours against diffusers.

    python -m benchmarks.gpu_sample               # -> $OUT/sample.json (or benchmarks/results/sample.json)
    python -m benchmarks.gpu_sample --quick       # a tiny CPU run that checks the script

Ours: ``UNet.preset("ddpm-cifar10")`` in the package's loops ``ddpm.sample_ddim`` / ``ddpm.sample_ddpm``
(``variance="small"``: sigma_t^2 = beta~_t), the network wrapped in ``ddpm.FastEps`` (bf16 autocast,
channels-last, ``torch.compile`` with CUDA graphs). Peer: diffusers' ``UNet2DModel`` in its own
``DDIMScheduler`` / ``DDPMScheduler`` loops (``set_timesteps``, then ``unet(...).sample`` and ``step``), in
bf16 autocast eager and bf16 + channels-last + ``torch.compile`` with CUDA graphs. Both networks get
random weights (ours with its zero-initialised output layers re-drawn, so that eps is not identically 0).
Warm-up and compilation excluded; CUDA events; medians.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

import ddpm
from ddpm.gpu import GpuConfig
from ddpm.nets.unet import UNet

from . import common


def ours_model(device):
    torch.manual_seed(0)
    m = UNet.preset("ddpm-cifar10")
    for mod in m.modules():  # re-draw Ho's zero-initialised layers so that eps carries signal
        if isinstance(mod, torch.nn.Conv2d) and not mod.weight.any():
            mod.reset_parameters()
    return m.to(device).eval()


class PeerSampler:
    """diffusers' documented sampling loop around one (possibly compiled) ``UNet2DModel``."""

    def __init__(self, device, compile: bool, bf16: bool = True):
        torch.manual_seed(0)
        self.unet = common.peer_unet().to(device).eval()
        self.cl = compile
        if compile:
            self.unet = self.unet.to(memory_format=torch.channels_last)
        self.net = torch.compile(self.unet, mode="reduce-overhead", dynamic=False) if compile else self.unet
        self.bf16, self.device = bf16, device

    @torch.no_grad()
    def __call__(self, kind: str, steps: int, x_T, gen=None):
        sch = common.peer_scheduler(kind)
        sch.set_timesteps(steps)
        x = x_T
        for t in sch.timesteps:
            if self.cl:
                torch.compiler.cudagraph_mark_step_begin()
            xin = x.contiguous(memory_format=torch.channels_last) if self.cl else x
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                eps = self.net(xin, t.to(self.device)).sample
            eps = eps.float().contiguous()  # an owned copy: the graph's output buffer is reused
            x = sch.step(eps, t, x, eta=0.0).prev_sample if kind == "ddim" else sch.step(eps, t, x, generator=gen).prev_sample
        return x


def timed(fn, repeats):
    ts = common.cuda_time(fn, repeats=repeats, warmup=1)
    return {"median_s": common.median(ts), "repeats_s": ts}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=float, default=float("inf"),
                    help="seconds for the whole script: a stage that would not fit is skipped and says so (default: no limit)")
    ap.add_argument("--batch", type=int, default=256, help="images per run (default 256)")
    ap.add_argument("--repeats", type=int, default=5, help="timed DDIM-50 runs (default 5)")
    ap.add_argument("--ddpm-repeats", type=int, default=1, help="timed DDPM-1000 runs (default 1)")
    ap.add_argument("--name", default="sample.json", help="output file name (default sample.json)")
    ap.add_argument("--stages", default="ab,peer_eager", help="optional stages: ab (ours with the compiler's GroupNorm "
                    "and layout heuristic), peer_eager (diffusers without compile); default both")
    ap.add_argument("--quick", action="store_true", help="a tiny CPU run that checks the script")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not args.quick:
        print("gpu_sample needs a CUDA device; use --quick to check the script on the CPU", file=sys.stderr)
        return 2
    device = torch.device("cuda" if cuda else "cpu")
    torch.backends.cudnn.benchmark = True
    rec = common.Record(args.name, vars(args), budget=args.budget)
    rec["ours"], rec["peer"] = {}, {}
    rec["ddpm_variance"] = "small"
    s = ddpm.Schedule.linear(T=1000)
    batch = 2 if args.quick else args.batch
    ddim_steps, ddpm_steps = (3, 6) if args.quick else (50, 1000)
    s_ddpm = ddpm.Schedule.linear(T=ddpm_steps)
    shape = (batch, 3, 32, 32)
    x_T = torch.randn(shape, device=device, generator=torch.Generator(device=device).manual_seed(123))
    outs = {}

    def ours(label: str, force_layout: bool, triton_no_grad: bool = True):
        """One of ours: ``force_layout``: ``GpuConfig.force_layout`` (the package's default: True),
        ``triton_no_grad``: ``GpuConfig.triton_groupnorm`` (the Triton GroupNorm kernels, default True; False:
        the compiler's own kernels)."""
        with rec.stage(f"ours:{label}", need=60) as ok:
            if not ok:
                return
            torch._dynamo.reset()
            t0 = time.perf_counter()
            cfg = GpuConfig(channels_last=cuda, compile=cuda, compile_mode="reduce-overhead" if cuda else "default",
                            force_layout=force_layout, triton_groupnorm=triton_no_grad)
            net = ddpm.FastEps(ours_model(device), bf16=cuda, config=cfg)
            ddim = lambda: ddpm.sample_ddim(net, s, shape, steps=ddim_steps, x_T=x_T, progress=False)  # noqa: E731
            outs[label] = ddim()
            r = {"force_layout_opt": force_layout, "triton_groupnorm_no_grad": triton_no_grad,
                 "compile_and_first_run_s": time.perf_counter() - t0,
                 "ddim50": timed(ddim, args.repeats)}
            g = torch.Generator(device=device)
            r["ddpm1000"] = timed(lambda: ddpm.sample_ddpm(net, s_ddpm, shape, generator=g.manual_seed(1), x_T=x_T,
                                                           variance="small", progress=False), args.ddpm_repeats)
            r["ddpm1000_over_ddim50"] = r["ddpm1000"]["median_s"] / r["ddim50"]["median_s"]
            rec["ours"][label] = r
            print("ours", label, {k: (v["median_s"] if isinstance(v, dict) else v) for k, v in r.items()}, flush=True)
            del net

    ours("bf16", True)  # the package's FastEps as a user gets it
    if "ab" in args.stages:
        ours("bf16:compiler_groupnorm", True, triton_no_grad=False)  # A/B: the compiler's GroupNorm kernels

    for variant, comp in (("bf16+compile+cudagraphs", True), ("bf16", False)):
        if variant == "bf16" and "ab" in args.stages:
            ours("bf16:inductor_layout_heuristic", False)  # A/B: the compiler's own layout choice
        if variant == "bf16" and "peer_eager" not in args.stages:
            continue
        with rec.stage(f"peer:{variant}", need=60) as ok:
            if ok:
                ps = PeerSampler(device, compile=comp and cuda, bf16=cuda)
                ddim = lambda: ps("ddim", ddim_steps, x_T)  # noqa: E731
                outs[f"peer:{variant}"] = ddim()
                r = {"ddim50": timed(ddim, max(2, args.repeats - 2))}
                if comp:
                    g = torch.Generator(device=device)
                    r["ddpm1000"] = timed(lambda: ps("ddpm", ddpm_steps, x_T, g.manual_seed(1)), args.ddpm_repeats)
                rec["peer"][variant] = r
                print("peer", variant, {k: v["median_s"] for k, v in r.items()}, flush=True)
                del ps
    torch._dynamo.reset()

    o, p = rec["ours"].get("bf16"), rec["peer"].get("bf16+compile+cudagraphs")
    if o and p:
        rec["summary"] = {"ddim50_time_over_peer_graphs": o["ddim50"]["median_s"] / p["ddim50"]["median_s"],
                          "ddim50_speedup_vs_peer_graphs": p["ddim50"]["median_s"] / o["ddim50"]["median_s"],
                          "ddpm1000_over_ddim50": o["ddpm1000_over_ddim50"]}
        c = rec["ours"].get("bf16:compiler_groupnorm")
        if c:
            rec["summary"]["ddim50_triton_groupnorm_gain"] = c["ddim50"]["median_s"] / o["ddim50"]["median_s"]
        if "ddpm1000" in p:
            rec["summary"]["ddpm1000_speedup_vs_peer_graphs"] = p["ddpm1000"]["median_s"] / o["ddpm1000"]["median_s"]
        print("summary", rec["summary"], flush=True)
    print(f"done in {rec.elapsed():.0f}s; errors: {list(rec['errors'])}", flush=True)
    rec.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
