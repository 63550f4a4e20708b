"""Shared pieces of the GPU benchmarks: environment record, timing, the diffusers peer, JSON output.

Run on a CUDA machine; every script writes its JSON (with card, torch version and git commit) itself, so
that no measured number is ever typed by hand (the book appendix and summary.json read these files).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

from ddpm.adapters import DiffusersEps

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

# Ho et al. 2020's CIFAR-10 network in diffusers' terms: the config of google/ddpm-cifar10-32's UNet2DModel.
DIFFUSERS_DDPM_CIFAR10 = dict(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    block_out_channels=(128, 256, 256, 256),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    layers_per_block=2,
    norm_num_groups=32,
    norm_eps=1e-6,
    attention_head_dim=None,
    downsample_padding=0,
    flip_sin_to_cos=False,
    freq_shift=1,
    dropout=0.1,
)

H100_BF16_DENSE_PEAK = 989e12  # NVIDIA H100 SXM datasheet, dense bf16 tensor-core FLOP/s


def peer_unet():
    """diffusers' UNet2DModel in the DDPM CIFAR-10 configuration (35,746,307 parameters)."""
    from diffusers import UNet2DModel

    return UNet2DModel(**DIFFUSERS_DDPM_CIFAR10)


# ``model(x_t, t) -> eps`` for a diffusers UNet2DModel (t is 0-based there): the package's adapter.
PeerEps = DiffusersEps


def environment(commit: str | None = None) -> dict:
    env = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "commit": commit or os.environ.get("GIT_COMMIT") or _git_commit(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(device=torch.cuda.get_device_name(0), sms=p.multi_processor_count,
                   memory_gib=round(p.total_memory / 2**30, 1))
    else:
        env["device"] = "cpu"
    try:
        import diffusers

        env["diffusers"] = diffusers.__version__
    except Exception:  # noqa: BLE001 - the record says it is missing
        env["diffusers"] = None
    return env


def _git_commit() -> str | None:
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=HERE, text=True).strip()
    except Exception:  # noqa: BLE001
        return None


def forward_flops(model, x, t) -> int:
    """FLOPs of one forward pass (``torch.utils.flop_counter``; a multiply-add counts 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x, t)
    return int(fc.get_total_flops())


def num_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def cuda_time(fn, repeats: int = 5, warmup: int = 1) -> list[float]:
    """Seconds per call of ``fn`` (CUDA events around each call, after ``warmup`` untimed calls)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b) / 1e3)
    return out


def median(xs):
    return statistics.median(xs)


def matmul_peak(n: int = 8192, dtype=torch.bfloat16, reps: int = 10) -> float:
    """Measured dense matrix-product rate (FLOP/s) of this card on random data: the MFU denominator."""
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    ts = cuda_time(lambda: a @ b, repeats=reps, warmup=3)
    return 2 * n**3 / median(ts)


class Deadline:
    """A wall-clock budget for one device command: stages ask ``left()`` before starting."""

    def __init__(self, seconds: float):
        self.t0 = time.perf_counter()
        self.seconds = seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.seconds - self.elapsed()


def write_json(path, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=float))
    tmp.replace(path)


def out_dir() -> Path:
    """Where a device run writes: ``$OUT`` on the device machine, else ``benchmarks/results``."""
    return Path(os.environ.get("OUT") or RESULTS)
