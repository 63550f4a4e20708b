"""Fast GPU sampling: wrap an eps-model without touching the core sampler loops.

``FastEps(model, bf16=True, channels_last=True, cudagraphs=True)`` is a drop-in ``model(x_t, t) -> eps``:
it compiles the network (``torch.compile``, mode "reduce-overhead" = CUDA graphs, which removes the per-layer
kernel-launch cost that dominates a 35M-parameter U-Net at batch 256 on a host with a slow CPU), runs it in
bf16 autocast if asked, and returns float32 eps in the caller's memory layout, so ``ddpm.sample_ddim`` /
``ddpm.sample_ddpm`` run unchanged around it.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FastEps", "compile_net"]

# Switches for A/B measurements (benchmarks/gpu_probe.py): False leaves the compiler's own layout choice;
# INDUCTOR_OPTIONS adds inductor options (e.g. {"coordinate_descent_tuning": True}) to every compile.
FORCE_LAYOUT_OPT = True
INDUCTOR_OPTIONS: dict = {}


def compile_net(net: nn.Module, mode: str = "default", channels_last: bool = False) -> nn.Module:
    """``torch.compile(net, mode=mode)`` with a fixed batch shape, and for a channels-last network the
    compiler's channels-last layout planning switched on.

    Inductor plans NHWC layouts for a graph's intermediate tensors only when its heuristic expects a gain,
    and that heuristic turns planning off for any graph with a 3x3 convolution whose output has at most half
    its input channels: in the U-Net, every up-path block after a skip concatenation and the output conv. The
    graphs then keep NCHW intermediates between NHWC convolutions, with transposing copies around them.
    """
    kw = {"dynamic": False}
    force = channels_last and FORCE_LAYOUT_OPT
    if force or INDUCTOR_OPTIONS:
        from torch._inductor import list_mode_options

        kw["options"] = {**list_mode_options(mode), **INDUCTOR_OPTIONS}
        if force:
            kw["options"]["force_layout_optimization"] = True
    else:
        kw["mode"] = mode
    return torch.compile(net, **kw)


class FastEps(nn.Module):
    """``model(x_t, t) -> eps`` compiled for speed; ``sample_ddim(FastEps(net), ...)`` as usual.

    ``bf16``: autocast the network to bfloat16 (eps is returned in the caller's dtype);
    ``channels_last``: NHWC activations for cuDNN; ``cudagraphs``: ``torch.compile`` with
    mode "reduce-overhead" (CUDA graphs; set ``compile=False`` for an eager wrapper, e.g. on the CPU).
    The first calls compile (tens of seconds); the measured speed-ups are in the book appendix "Appendix: the
    package on a GPU".
    """

    def __init__(self, model: nn.Module, bf16: bool = True, channels_last: bool = True, cudagraphs: bool = True,
                 compile: bool = True):
        super().__init__()
        self.model = model.eval()
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.bf16, self.cl, self.cudagraphs = bf16, channels_last, cudagraphs and compile
        mode = "reduce-overhead" if self.cudagraphs else "default"
        self.net = compile_net(self.model, mode, channels_last) if compile else self.model

    @torch.no_grad()
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        xin = x.contiguous(memory_format=torch.channels_last) if self.cl else x  # (B, C, H, W)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            eps = self.net(xin, t)  # (B, C, H, W); a CUDA-graph output buffer, reused by the next replay
        return eps.to(dtype=x.dtype, memory_format=torch.contiguous_format, copy=True)  # owned copy
