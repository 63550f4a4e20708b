"""The package's Triton GroupNorm kernels alone (``ddpm.gpu._gn_triton``), forward and backward, on every
normalisation shape of the DDPM CIFAR-10 U-Net, for a grid of launch parameters (``ddpm.gpu.GroupNormTuning``), against
the compiler's own kernels for the same function.

    python -m benchmarks.gpu_gn_tune                 # -> $OUT/gn_tune.json (or benchmarks/results/gn_tune.json)
    TRITON_INTERPRET=1 python -m benchmarks.gpu_gn_tune --quick   # a tiny CPU run in Triton's interpreter

The shapes are recorded from one forward pass of the U-Net (every ``norm_act`` call: channels, resolution, groups,
whether a shift, a SiLU and dropout come with it, and how many calls per forward). Each is timed at the training
batch as forward + backward of ``group_norm_act`` in bf16 on channels-last memory, replayed in a CUDA graph
(``triton.testing.do_bench_cudagraph``, so host launch costs are left out); the compiler's version is
``torch.compile`` of ``x + shift -> group_norm -> silu -> dropout -> bf16``, timed the same way. The report gives,
weighted by calls per step: the package's defaults, the best single setting of ``GroupNormTuning``, the best setting per
shape, and the compiler.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import itertools
import os
import sys
import time

import torch
import torch.nn.functional as F

from ddpm.gpu import GroupNormTuning

from . import common

GRID = {"elems": (2048, 4096), "reduce_warps": (4, 8), "apply_warps": (4,), "combine_warps": (8,),
        "programs_per_sm": (1, 2)}
EXTRA = ({"apply_warps": 8}, {"elems": 8192})  # each on the defaults


def unet_shapes() -> list[dict]:
    """Every norm_act call of one training-mode forward pass of the accelerated DDPM CIFAR-10 U-Net, with its
    count (on the CPU, where norm_act runs PyTorch's operators)."""
    import ddpm
    from ddpm.gpu import GpuConfig, accelerate
    from ddpm.gpu import modules as gpu_modules

    seen = collections.Counter()
    real = gpu_modules.norm_act

    def record(norm, x, gpu, *, shift=None, silu=True, dropout=0.0):
        seen[(x.shape[1], x.shape[2], x.shape[3], norm.num_groups, norm.eps, shift is not None, silu, float(dropout))] += 1
        return real(norm, x, gpu, shift=shift, silu=silu, dropout=dropout)

    gpu_modules.norm_act = record
    try:
        net = accelerate(ddpm.UNet.preset("ddpm-cifar10"), GpuConfig(channels_last=False)).train()
        with torch.no_grad():
            net(torch.randn(1, 3, 32, 32), torch.tensor([500]))
    finally:
        gpu_modules.norm_act = real
    keys = ("C", "H", "W", "groups", "eps", "shift", "silu", "p")
    return [dict(zip(keys, k), calls_per_forward=n) for k, n in seen.items()]


def bench(fn, cuda: bool) -> float:
    """Milliseconds per call of ``fn``: CUDA-graph replays on a GPU, one timed call in the interpreter."""
    if cuda:
        import triton.testing

        return float(triton.testing.do_bench_cudagraph(fn, rep=40))
    fn()
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def case(shape: dict, batch: int, device):
    """Inputs of one shape, and the two forward + backward functions (ours, the compiler's)."""
    from ddpm.gpu import _gn_triton

    g = torch.Generator(device=device).manual_seed(0)
    C, G, p = shape["C"], shape["groups"], shape["p"]
    x = torch.randn(batch, C, shape["H"], shape["W"], device=device, generator=g).to(torch.bfloat16)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    w = (1 + 0.1 * torch.randn(C, device=device, generator=g)).requires_grad_()
    b = (0.1 * torch.randn(C, device=device, generator=g)).requires_grad_()
    shift = torch.randn(batch, C, device=device, generator=g).to(torch.bfloat16).requires_grad_() if shape["shift"] else None
    leaves = [x, w, b] + ([shift] if shift is not None else [])
    seed = torch.tensor([7], dtype=torch.int32, device=device)
    dy = torch.randn(x.shape, device=device, generator=g).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)

    def ours(tuning=GroupNormTuning()):
        y = _gn_triton.group_norm_act(x, G, w, b, shape["eps"], shift=shift, silu=shape["silu"], p=p, seed=seed,
                                      tuning=tuning.as_tuple())
        torch.autograd.grad(y, leaves, dy)

    def reference(x, shift, w, b):  # what the compiler sees in the training graph under bf16 autocast
        h = x.float() + (shift.float()[:, :, None, None] if shift is not None else 0.0)
        h = F.group_norm(h, G, w, b, shape["eps"])
        h = F.silu(h) if shape["silu"] else h
        return F.dropout(h, p, training=True).to(torch.bfloat16) if p > 0 else h.to(torch.bfloat16)

    torch._dynamo.reset()  # a fresh compile per shape (the recompile limit would fall back to eager)
    compiled = torch.compile(reference, dynamic=False)

    def theirs():
        torch.autograd.grad(compiled(x, shift, w, b), leaves, dy)

    def ours_fwd():
        with torch.no_grad():
            _gn_triton.group_norm_act(x, G, w, b, shape["eps"], shift=shift, silu=shape["silu"], p=p, seed=seed)

    def theirs_fwd():
        with torch.no_grad():
            compiled(x, shift, w, b)

    return ours, theirs, ours_fwd, theirs_fwd


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=128, help="training batch (default 128)")
    ap.add_argument("--budget", type=float, default=float("inf"), help="seconds for the whole script")
    ap.add_argument("--name", default="gn_tune.json")
    ap.add_argument("--quick", action="store_true", help="two shapes, two settings, batch 2")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    interp = os.environ.get("TRITON_INTERPRET") == "1"
    try:
        import triton  # noqa: F401
    except ImportError:
        triton = None
    if triton is None or not (cuda or (interp and args.quick)):
        print("gpu_gn_tune needs Triton and a CUDA device (or, with --quick, TRITON_INTERPRET=1 on the CPU)",
              file=sys.stderr)
        return 2
    device = torch.device("cuda" if cuda else "cpu")
    batch = 2 if args.quick else args.batch
    rec = common.Record(args.name, vars(args), budget=args.budget)
    shapes = unet_shapes()
    shapes.sort(key=lambda s: -s["calls_per_forward"] * s["C"] * s["H"] * s["W"])  # the most traffic first
    grid = [dict(zip(GRID, v)) for v in itertools.product(*GRID.values())]
    default = dataclasses.asdict(GroupNormTuning())
    grid += [dict(default, **e) for e in EXTRA if dict(default, **e) not in grid]
    if args.quick:
        shapes, grid = shapes[:2], grid[:2]
    if default not in grid:
        grid.append(default)
    rec["grid"], rec["default"], rec["batch"] = grid, default, batch
    rows = []
    for sh in shapes:
        label = f"C{sh['C']}x{sh['H']}x{sh['W']}{'+shift' if sh['shift'] else ''}{'+silu' if sh['silu'] else ''}" \
                f"{'+drop' if sh['p'] else ''}"
        with rec.stage(label, need=20) as ok:
            if not ok:
                continue
            ours, theirs, ours_fwd, theirs_fwd = case(sh, batch, device)
            times = []
            for cfg in grid:
                tuning = GroupNormTuning(**cfg)
                times.append(bench(lambda: ours(tuning), cuda))
            row = dict(sh, label=label, ms=times, compiler_ms=bench(theirs, cuda), fwd_ms=bench(ours_fwd, cuda),
                       compiler_fwd_ms=bench(theirs_fwd, cuda),
                       # the least traffic: forward reads x, writes y; backward reads x and dy, writes dx (bf16)
                       min_bytes=5 * 2 * batch * sh["C"] * sh["H"] * sh["W"])
            row["best"] = min(range(len(grid)), key=times.__getitem__)
            rows.append(row)
            rec["shapes"] = rows
            print(label, f"x{sh['calls_per_forward']}", f"default {times[grid.index(default)]:.3f} ms",
                  f"best {times[row['best']]:.3f} ms {grid[row['best']]}", f"compiler {row['compiler_ms']:.3f} ms",
                  f"fwd {row['fwd_ms']:.3f} vs {row['compiler_fwd_ms']:.3f} ms", f"{row['min_bytes'] / 1e6:.0f} MB",
                  flush=True)
    if rows:
        n = [r["calls_per_forward"] for r in rows]
        total = lambda i: sum(k * r["ms"][i] for k, r in zip(n, rows))  # noqa: E731
        single = min(range(len(grid)), key=total)
        rec["per_step_ms"] = {  # forward + backward of every normalisation of one training step
            "default": total(grid.index(default)),
            "best_single_setting": total(single),
            "best_per_shape": sum(k * min(r["ms"]) for k, r in zip(n, rows)),
            "compiler": sum(k * r["compiler_ms"] for k, r in zip(n, rows)),
            "default_forward": sum(k * r["fwd_ms"] for k, r in zip(n, rows)),
            "compiler_forward": sum(k * r["compiler_fwd_ms"] for k, r in zip(n, rows)),
        }
        rec["min_bytes_per_step"] = sum(k * r["min_bytes"] for k, r in zip(n, rows))
        rec["best_single_setting"] = grid[single]
        rec["shapes_timed"] = len(rows)
        print("per step (ms):", {k: round(v, 3) for k, v in rec["per_step_ms"].items()}, "best single:", grid[single],
              flush=True)
    rec.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
