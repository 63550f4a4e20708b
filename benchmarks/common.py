"""Shared pieces of the benchmarks, written once: the record every result carries (card, torch version,
commit), a JSON record that survives a failing stage, timing, and the diffusers peer.

Every script writes its own JSON through :class:`Record`, so that no measured number is ever typed by hand
(the book's GPU appendix, ``summary.json`` and the README read these files).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import time
import traceback
from pathlib import Path

import torch

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


# ---------------------------------------------------------------------------------------------- record
def environment(device: torch.device | str | None = None) -> dict:
    """The one record of where a number was measured, stored beside every measured number by every script: the
    device (``device_name``: the card, or the processor), library versions, CPU count and torch threads, the
    commit (``GIT_COMMIT`` where the copy has no git metadata) and the time. ``device``: the device measured
    (default: CUDA where available)."""
    dev = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    env = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "commit": os.environ.get("GIT_COMMIT") or _git_commit(),
        # True where the tracked files differ from that commit (a device copy's git metadata can be stale:
        # set GIT_COMMIT there); None where git cannot tell
        "git_dirty": None if os.environ.get("GIT_COMMIT") else _git_dirty(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if dev.type == "cuda" and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(dev)
        env.update(device=torch.cuda.get_device_name(dev), device_name=torch.cuda.get_device_name(dev),
                   gpus=torch.cuda.device_count(), sms=p.multi_processor_count, memory_gib=round(p.total_memory / 2**30, 1))
    else:
        env.update(device="cpu", device_name=platform.processor() or platform.machine(), gpus=0)
    try:
        from importlib.metadata import PackageNotFoundError, version

        env["diffusers"] = version("diffusers")
    except (ImportError, PackageNotFoundError):
        env["diffusers"] = None
    return env


def _git_dirty() -> bool | None:
    try:
        out = subprocess.check_output(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE, text=True,
                                      stderr=subprocess.DEVNULL)
    except (OSError, subprocess.CalledProcessError):
        return None
    return bool(out.strip())


def _git_commit() -> str | None:
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=HERE, text=True,
                                       stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def out_dir() -> Path:
    """Where results go: ``$OUT`` when set (a device run), else ``benchmarks/results``."""
    return Path(os.environ.get("OUT") or RESULTS)


def write_json(path, obj) -> None:
    """Write atomically (a kill mid-write leaves the previous file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=float) + "\n")
    tmp.replace(path)


class Record:
    """One JSON result file: ``env`` and ``config`` first, then whatever the stages add.

    ``with rec.stage("label", need=s) as ok:`` then ``if ok:`` runs one measurement; an exception is stored under ``errors[label]`` (the
    run goes on to the next stage) and the file is saved after every stage, so a killed run keeps what it
    measured. ``rec.left()`` is the wall-clock budget left; a stage whose ``need`` exceeds it is skipped and
    says so.
    """

    def __init__(self, name: str, config: dict, budget: float = float("inf"), directory: Path | None = None):
        self.t0 = time.perf_counter()
        self.budget = budget
        self.path = Path(directory or out_dir()) / name
        self.data = {"env": environment(), "config": config, "errors": {}}

    def __getitem__(self, key):
        return self.data[key]

    def __setitem__(self, key, value):
        self.data[key] = value

    def setdefault(self, key, value):
        return self.data.setdefault(key, value)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.budget - self.elapsed()

    def save(self) -> None:
        self.data["elapsed_s"] = self.elapsed()
        write_json(self.path, self.data)

    @contextlib.contextmanager
    def stage(self, label: str, need: float = 0.0):
        """Run the body unless fewer than ``need`` seconds are left; record an exception instead of raising."""
        if self.left() < need:
            self.data["errors"][label] = f"skipped: {self.left():.0f} s left, the stage needs about {need:.0f} s"
            print("SKIP", label, flush=True)
            self.save()
            yield False
            return
        try:
            yield True
        except Exception as e:  # noqa: BLE001 - recorded; the next stage still runs
            self.data["errors"][label] = "".join(traceback.format_exception(type(e), e, e.__traceback__))[-3000:]
            print("ERROR", label, self.data["errors"][label], flush=True)
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.save()


# ---------------------------------------------------------------------------------------------- timing
def cuda_time(fn, repeats: int = 5, warmup: int = 1) -> list[float]:
    """Seconds per call of ``fn``: CUDA events around each call after ``warmup`` untimed calls (host clock
    on the CPU)."""
    cuda = torch.cuda.is_available()
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize()
    out = []
    for _ in range(repeats):
        if cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            out.append(a.elapsed_time(b) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return out


def median(xs) -> float:
    return statistics.median(xs)


def matmul_peak(n: int = 8192, dtype=torch.bfloat16, reps: int = 10) -> float:
    """This card's measured dense matrix-product rate (FLOP/s) on random data: the denominator of MFU."""
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    return 2 * n**3 / median(cuda_time(lambda: a @ b, repeats=reps, warmup=3))


def forward_flops(model, x, t) -> int:
    """FLOPs of one forward pass (``torch.utils.flop_counter``; a multiply-add counts 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x, t)
    return int(fc.get_total_flops())


def num_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------- the peer
def peer_unet(**changes):
    """diffusers' ``UNet2DModel`` in the DDPM CIFAR-10 configuration (35,746,307 parameters), built from its
    config (no download)."""
    from diffusers import UNet2DModel

    return UNet2DModel(**{**DIFFUSERS_DDPM_CIFAR10, **changes})


def peer_eps(unet):
    """``model(x_t, t) -> eps`` for a diffusers ``UNet2DModel`` (the package's adapter: t 1..T -> 0..T-1)."""
    import ddpm

    return ddpm.from_diffusers(unet)


def peer_scheduler(kind: str = "ddpm", T: int = 1000):
    """diffusers' scheduler with the DDPM linear schedule (beta 1e-4 .. 0.02, no clipping)."""
    from diffusers import DDIMScheduler, DDPMScheduler

    kw = dict(num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, beta_schedule="linear", clip_sample=False)
    if kind == "ddim":
        return DDIMScheduler(**kw, timestep_spacing="trailing", set_alpha_to_one=True)
    return DDPMScheduler(**kw, variance_type="fixed_small")


class PeerTrainer:
    """The training step of diffusers' ``examples/unconditional_image_generation/train_unconditional.py``
    without ``accelerate`` and without its per-step ``loss.item()`` logging (a host sync we leave out in the
    peer's favour): draw noise and timesteps, ``scheduler.add_noise``, forward, ``F.mse_loss`` in float32,
    backward, gradient clipping at 1, AdamW, ``EMAModel.step`` (foreach).

    ``bf16``: autocast; ``compile``: ``None``, ``"default"`` or ``"reduce-overhead"`` (CUDA graphs);
    ``channels_last``; ``fused``: fused AdamW (else the default foreach AdamW of the script).
    """

    def __init__(self, unet, data, batch: int, *, bf16=False, compile=None, channels_last=False, fused=False,
                 lr=2e-4, seed=0, ema_decay=0.9999):
        from diffusers.training_utils import EMAModel

        self.device = data.device
        self.unet = unet.to(self.device).train()
        if channels_last:
            self.unet = self.unet.to(memory_format=torch.channels_last)
        self.net = torch.compile(self.unet, mode=compile, dynamic=False) if compile else self.unet
        self.cudagraphs = compile == "reduce-overhead"
        self.opt = torch.optim.AdamW(self.unet.parameters(), lr=lr, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8,
                                     **({"fused": True} if fused else {}))
        self.ema = EMAModel(self.unet.parameters(), decay=ema_decay, use_ema_warmup=True, foreach=True)
        self.ema.to(self.device)
        self.sched = peer_scheduler("ddpm")
        self.sched.alphas_cumprod = self.sched.alphas_cumprod.to(self.device)  # add_noise moves it per call otherwise
        self.data, self.B, self.bf16, self.cl = data, batch, bf16, channels_last
        self.gen = torch.Generator(device=self.device).manual_seed(seed)

    def step(self):
        import torch.nn.functional as F

        if self.cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        idx = torch.randint(0, self.data.shape[0], (self.B,), generator=self.gen, device=self.device)
        clean = self.data[idx]
        if self.cl:
            clean = clean.contiguous(memory_format=torch.channels_last)
        noise = torch.randn(clean.shape, generator=self.gen, device=self.device)
        t = torch.randint(0, self.sched.config.num_train_timesteps, (self.B,), generator=self.gen, device=self.device)
        noisy = self.sched.add_noise(clean, noise, t)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.net(noisy, t).sample
        loss = F.mse_loss(out.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.unet.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.ema.step(self.unet.parameters())
        return loss.detach()
