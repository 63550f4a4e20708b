"""Training configuration: plain data that the training loop, checkpoints and the command line share
(book chapter "Training and sampling"). Data flows one way: config -> checkpoint -> train -> cli."""

from __future__ import annotations

import numbers
from dataclasses import dataclass


BIG = 10**12  # a bound no run reaches: counts above it are typing errors (and would overflow the RNG's seed arithmetic)
SEED_MAX = 2**32 - 1  # seeds are mixed with the rank and step; this keeps every mix inside torch's 64-bit seed
# The integer fields' allowed ranges (the command line's flags read them too).
INT_RANGES = {"steps": (1, BIG), "batch_size": (1, 2**31 - 1), "warmup": (0, BIG), "seed": (0, SEED_MAX),
              "checkpoint_every": (0, BIG), "keep_checkpoints": (0, BIG), "log_every": (1, BIG), "sample_every": (0, BIG)}
LR_MAX = 1.0  # AdamW's step is about lr per weight: beyond 1 nothing trains
DIST_TIMEOUT_MAX = 7 * 24 * 3600.0


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters. Defaults suit the 2-D toys with the MLP on a CPU."""

    steps: int = 3000  # total optimiser steps (a resumed run continues to this number)
    batch_size: int = 256  # toys: enough for a smooth loss; the DDPM paper used 128 for CIFAR-10
    lr: float = 1e-3  # AdamW learning rate for the small MLP; DDPM used 2e-4 for its U-Net
    warmup: int = 100  # linear learning-rate warm-up steps (DDPM: 5000 for CIFAR-10)
    weight_decay: float = 0.0  # plain Adam behaviour by default, as in DDPM
    ema_decay: float = 0.9999  # DDPM appendix B
    ema_warmup: bool = True  # decay_t = min(decay, (1 + t) / (10 + t)): short runs still get a useful average
    grad_clip: float = 1.0  # max global gradient norm (DDPM); 0 turns clipping off
    seed: int = 0  # seeds batches, t, eps, dropout: a run is repeatable
    checkpoint_every: int = 1000  # steps between checkpoints when out_dir is given; 0: only the final one
    keep_checkpoints: int = 2  # older checkpoints are deleted after a newer one is safely written; 0 keeps all
    device: str = "auto"  # "auto" (CUDA if available), "cpu", "cuda", "cuda:1", ...
    bf16: bool = False  # bf16 autocast for the forward pass (CUDA only)
    compile: bool = False  # torch.compile the model (CUDA only)
    compile_mode: str = "auto"  # "auto": on CUDA the fastest measured path (channels-last, fused GroupNorm kernels, CUDA graphs); or a torch.compile mode: default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs
    channels_last: bool = False  # NHWC activations for image models (CUDA; with bf16 + compile)
    log_every: int = 100  # steps between loss read-backs: the bar's loss, NaN checks and a row of the run folder's loss.csv
    cuda_graph: bool = False  # capture the whole step (forward, backward, clipping, AdamW, EMA) in one CUDA graph (CUDA, one process)
    sample_every: int = 0  # steps between sample grids (samples.png in the run folder, from the EMA weights); 0: off
    dist_timeout: float = 600.0  # seconds a process waits for the others under torchrun before the job ends with an error

    def __post_init__(self):
        for name, (low, high) in INT_RANGES.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not low <= v <= high:
                raise ValueError(f"TrainConfig.{name} must be an int in {low}..{high}, got {v!r}")
        if not (isinstance(self.lr, numbers.Real) and 0 < self.lr <= LR_MAX):
            raise ValueError(f"TrainConfig.lr must be a number in (0, {LR_MAX:g}], got {self.lr!r}")
        if not (isinstance(self.weight_decay, numbers.Real) and self.weight_decay >= 0):
            raise ValueError(f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        if not (isinstance(self.ema_decay, numbers.Real) and 0 <= self.ema_decay < 1):
            raise ValueError(f"TrainConfig.ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if not (isinstance(self.grad_clip, numbers.Real) and self.grad_clip >= 0):
            raise ValueError(f"TrainConfig.grad_clip must be >= 0 (0: off), got {self.grad_clip!r}")
        if self.compile_mode not in ("auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"):
            raise ValueError(f"TrainConfig.compile_mode must be one of auto, default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs; got {self.compile_mode!r}")
        if not (isinstance(self.dist_timeout, numbers.Real) and 0 < self.dist_timeout <= DIST_TIMEOUT_MAX):
            raise ValueError(f"TrainConfig.dist_timeout must be a number of seconds in (0, {DIST_TIMEOUT_MAX:g}] (a week), "
                             f"got {self.dist_timeout!r}")
        for name in ("ema_warmup", "bf16", "compile", "channels_last", "cuda_graph"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"TrainConfig.{name} must be True or False, got {getattr(self, name)!r}")
        if not isinstance(self.device, str):
            raise ValueError(f"TrainConfig.device must be a string such as 'auto', 'cpu' or 'cuda', got {self.device!r}")


# Fields that may change between a checkpoint and the run that resumes it without breaking exactness.
RESUMABLE = {"steps", "checkpoint_every", "keep_checkpoints", "log_every", "device", "compile", "compile_mode",
             "channels_last", "cuda_graph", "sample_every", "dist_timeout"}
