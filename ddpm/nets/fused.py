"""GroupNorm in the layout the network runs in (book appendix "Appendix: the package on a GPU").

PyTorch's GroupNorm kernel on the GPU reads and writes NCHW: on a channels-last (NHWC) activation it first
copies the tensor to NCHW, and the next convolution copies its output back to NHWC. Under ``torch.compile``
the same happens inside the compiled graphs (transposing copies around every normalisation, forward and
backward). :func:`group_norm_nhwc` computes the same function on the NHWC memory itself: in NHWC a group is
``C / G`` neighbouring channels at every pixel, so ``(B, H*W, G, C/G)`` is a *view* of the tensor, and the
group statistics are a reduction over its dimensions 1 and 3. The compiler turns it into reductions and
element-wise kernels that keep the layout, fused with the SiLU and casts around it.

:class:`GroupNorm` is ``nn.GroupNorm`` (same parameters, same state-dict keys) that takes this path while
being compiled, on a 4-d channels-last input; in eager mode it calls PyTorch's own kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["GroupNorm", "group_norm_nhwc"]

# Off by default: with the compiler's layout planning forced on (ddpm.fast.compile_net) it measured slower
# than PyTorch's own GroupNorm (benchmarks/NOTES.md). A switch for A/B runs, read when a graph is traced.
NHWC_GROUPNORM = False


def group_norm_nhwc(x: Tensor, num_groups: int, weight: Tensor | None = None, bias: Tensor | None = None,
                    eps: float = 1e-5) -> Tensor:
    """``F.group_norm(x, num_groups, weight, bias, eps)`` for a 4-d ``x`` (B, C, H, W), computed on the NHWC
    view of its memory; returns a channels-last tensor when ``x`` is channels-last.

    Statistics in float32 (as PyTorch's kernel); the result is float32 under autocast (autocast runs
    ``group_norm`` in float32) and ``x``'s dtype otherwise.
    """
    if x.dim() != 4:
        raise ValueError(f"group_norm_nhwc needs a 4-d (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    B, C, H, W = x.shape
    if C % num_groups:
        raise ValueError(f"num_groups ({num_groups}) must divide the channels ({C})")
    out_dtype = torch.float32 if torch.is_autocast_enabled(x.device.type) else x.dtype
    xg = x.permute(0, 2, 3, 1).reshape(B, H * W, num_groups, C // num_groups).float()  # (B, HW, G, C/G)
    var, mean = torch.var_mean(xg, dim=(1, 3), keepdim=True, correction=0)  # (B, 1, G, 1) each
    y = ((xg - mean) * torch.rsqrt(var + eps)).reshape(B, H, W, C)  # (B, H, W, C)
    if weight is not None:
        y = y * weight.float()
    if bias is not None:
        y = y + bias.float()
    return y.to(out_dtype).permute(0, 3, 1, 2)  # (B, C, H, W), NHWC in memory


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` that, under ``torch.compile`` and on a channels-last 4-d input, normalises in NHWC
    (:func:`group_norm_nhwc`): the same function, without the layout copies."""

    def forward(self, x: Tensor) -> Tensor:
        if (NHWC_GROUPNORM and torch.compiler.is_compiling() and x.dim() == 4
                and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()):
            return group_norm_nhwc(x, self.num_groups, self.weight, self.bias, self.eps)
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
