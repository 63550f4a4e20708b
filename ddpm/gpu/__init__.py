"""The package on a GPU (book appendix "The package on a GPU"): everything that makes the teaching network fast
and nothing the chapters need.

- :func:`accelerate` ``(net, GpuConfig(...))``: a copy of a network with the same state dict (sharing its
  parameters) whose U-Net layers run the GPU's fast path: channels-last memory, GroupNorm + shift + SiLU +
  dropout in Triton kernels, optionally ``torch.compile``'d in place;
- :class:`FastEps`: an accelerated, compiled eps-model for the samplers (``ddpm.FastEps``);
- :func:`for_training`: what ``TrainConfig(compile=True, ...)`` runs on CUDA;
- :func:`capture_step`: the whole training step in one CUDA graph (``TrainConfig(cuda_graph=True)``).

Triton is imported only when a kernel first runs on a CUDA channels-last tensor.
"""

from .config import COMPILE_MODES, GpuConfig, GroupNormTuning, for_training, resolve_compile_mode
from .graphs import capture_step
from .modules import accelerate, cat_channels, compile_kwargs, compile_net, norm_act, upsample_nearest2x
from .sampling import FastEps

__all__ = ["GpuConfig", "GroupNormTuning", "COMPILE_MODES", "accelerate", "FastEps", "for_training",
           "resolve_compile_mode", "capture_step", "compile_net", "compile_kwargs", "norm_act", "cat_channels",
           "upsample_nearest2x"]
