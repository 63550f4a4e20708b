"""One GPU, two ways: ``ddpm.train`` in a plain process vs the same training under
``torchrun --nproc_per_node=1`` (NCCL, ``DistributedDataParallel``). Both time ``ddpm.train``'s own
post-warm-up throughput (``TrainResult.images_per_second``, EMA included) on the DDPM CIFAR-10
U-Net at batch 128 with random data in [-1, 1]; the runs alternate, each in a fresh process.

    python -m benchmarks.gpu_ddp                 # on a CUDA machine -> results/ddp_one_gpu.json
    python -m benchmarks.gpu_ddp --quick         # anywhere: a tiny MLP on the CPU with gloo (a smoke test)

Writes ``ddp_one_gpu.json`` (``ddp_one_gpu_quick.json`` with ``--quick``) under ``$OUT`` or
``benchmarks/results`` with the card, torch version and commit.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import environment, out_dir, write_json

ROOT = Path(__file__).resolve().parent.parent
FLAGS = ("bf16", "compile", "channels_last")  # the package's fast recipe for the U-Net on one GPU


def _worker(args) -> None:
    """Train once (plain process or one torchrun process) and write the result as JSON (rank 0)."""
    from ddpm import MLP, MLPConfig, Schedule, TrainConfig, UNet, train

    torch.manual_seed(0)
    if args.quick:
        model = MLP(MLPConfig(hidden=64, layers=2))
        data = torch.rand(1024, 2) * 2 - 1
        flags = {}
        device = "cpu"
    else:
        model = UNet.preset("ddpm-cifar10")
        data = torch.rand(2048, 3, 32, 32) * 2 - 1  # (N, 3, 32, 32) in [-1, 1]
        flags = {f: True for f in args.flags.split(",") if f}
        if args.compile_mode:
            flags["compile_mode"] = args.compile_mode
        device = "cuda"
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch, lr=2e-4, warmup=0, log_every=args.steps, device=device,
                      checkpoint_every=0, **flags)
    r = train(model, Schedule.linear(1000), data, cfg, progress=False)
    if r.rank == 0:
        res = {"images_per_second": r.images_per_second, "warmup_steps": r.warmup_steps, "steps": r.step,
               "world_size": r.world_size, "under_torchrun": "TORCHELASTIC_RUN_ID" in os.environ,
               "backend": ("nccl" if device == "cuda" else "gloo") if "TORCHELASTIC_RUN_ID" in os.environ else None,
               "final_loss": r.losses[-1], "config": {k: v for k, v in vars(cfg).items()}}
        Path(args.result).write_text(json.dumps(res))


def _run(kind: str, args, result: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "NCCL_NVLS_ENABLE": "0"}
    if args.quick:
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    worker = ["-m", "benchmarks.gpu_ddp", "--worker", "--result", str(result), "--steps", str(args.steps),
              "--batch", str(args.batch), "--flags", args.flags] + (["--quick"] if args.quick else []) + \
             (["--compile-mode", args.compile_mode] if args.compile_mode else [])
    if kind == "single":
        for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "TORCHELASTIC_RUN_ID"):
            env.pop(k, None)
        cmd = [sys.executable, *worker]
    else:  # torchrun picks a free port (--standalone)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", *worker]
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout} s", "images_per_second": None}
    if p.returncode != 0 or not result.is_file():
        return {"error": f"exit {p.returncode}: " + (p.stdout + p.stderr)[-3000:], "images_per_second": None}
    return json.loads(result.read_text())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a tiny MLP on the CPU with gloo: a smoke test, not a measurement")
    ap.add_argument("--steps", type=int, default=None, help="steps per run (default 300; 60 with --quick)")
    ap.add_argument("--batch", type=int, default=128, help="global batch (default 128)")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each kind, alternating (default 2)")
    ap.add_argument("--flags", default=",".join(FLAGS), help=f"TrainConfig switches for the GPU runs (default {','.join(FLAGS)})")
    ap.add_argument("--compile-mode", default="reduce-overhead",
                    help="TrainConfig.compile_mode for the GPU runs (default reduce-overhead: CUDA graphs per process)")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per run before it counts as failed")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.steps is None:
        args.steps = 60 if args.quick else 300
    if args.steps < 8 or args.batch < 1 or args.repeats < 1:
        ap.error("--steps must be >= 8, --batch and --repeats >= 1")
    if args.worker:
        _worker(args)
        return 0
    if not args.quick and not torch.cuda.is_available():
        ap.error("no CUDA device here: run with --quick for the CPU smoke test")
    runs = {"single": [], "torchrun": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for kind in ("single", "torchrun"):
                runs[kind].append(_run(kind, args, Path(tmp) / f"{kind}{i}.json"))
                got = runs[kind][-1]
                print(f"{kind:8s} run {i + 1}: " + (f"{got['images_per_second']:.1f} img/s" if got.get("error") is None
                                                   else f"FAILED {got['error'][-500:]}"), flush=True)
    ips = {k: [r["images_per_second"] for r in v if r.get("error") is None] for k, v in runs.items()}
    med = {k: statistics.median(v) if v else 0.0 for k, v in ips.items()}
    rec = {
        "what": "ddpm.train in one process vs under torchrun --nproc_per_node=1 (DistributedDataParallel)",
        "environment": environment(),
        "quick": args.quick,
        "model": "MLP(hidden=64, layers=2)" if args.quick else 'UNet.preset("ddpm-cifar10")',
        "batch_size": args.batch,
        "steps": args.steps,
        "backend": "gloo" if args.quick else "nccl",
        "runs": runs,
        "images_per_second": ips,
        "median_images_per_second": med,
        "torchrun_over_single": med["torchrun"] / med["single"] if med["single"] > 0 else None,
        # Spread of the single-process runs: the noise the ratio is compared with.
        "single_spread": (max(ips["single"]) - min(ips["single"])) / med["single"] if med["single"] > 0 else None,
        # One process either way: the same draws, so the same losses (to float tolerance on a GPU).
        "final_losses": {k: [r.get("final_loss") for r in v] for k, v in runs.items()},
        "failures": sum(1 for v in runs.values() for r in v if r.get("error") is not None),
    }
    path = out_dir() / ("ddp_one_gpu_quick.json" if args.quick else "ddp_one_gpu.json")
    write_json(path, rec)
    if rec["failures"]:
        print(f"error: {rec['failures']} run(s) failed; their messages are in {path}", file=sys.stderr)
        return 1
    print(f"torchrun/single = {rec['torchrun_over_single']:.3f} (single-process spread {rec['single_spread']:.3f}); wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
