"""GroupNorm in the layout the network runs in (book appendix "Appendix: the package on a GPU").

:func:`norm_act` is ``dropout(silu(norm(x + shift)))``, the pattern of every normalisation in the U-Net. On a
CUDA channels-last tensor with Triton installed, in training and in sampling, it runs the Triton kernels of
``ddpm.nets._gn_triton``: forward, one pass over the NHWC memory for the statistics and one for the output;
backward, the same two passes; the shift, the SiLU and the dropout happen inside them. Everywhere else (the
CPU, NCHW tensors) it runs PyTorch's operators in that order. :func:`cat_channels` is the U-Net's skip
concatenation, with a backward that hands the convolutions dense channels-last gradients.

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

__all__ = ["GroupNorm", "cat_channels", "group_norm_nhwc", "norm_act"]

# Off by default: with the compiler's layout planning forced on (ddpm.fast.compile_net) it measured slower
# than PyTorch's own GroupNorm (benchmarks/NOTES.md). A switch for A/B runs, read when a graph is traced.
NHWC_GROUPNORM = False
# The Triton GroupNorm (+ shift + SiLU + dropout) kernels on CUDA channels-last tensors (training: measured
# faster than the compiler's own kernels, benchmarks/NOTES.md); False: PyTorch's ops.
TRITON_GROUPNORM = True
# ... with gradients off too (sampling: DDIM-50 measured faster than with the compiler's kernels); False there
# leaves sampling to PyTorch's ops, which the compiler fuses with their neighbours.
TRITON_GROUPNORM_NO_GRAD = True
_TRITON = None  # the imported ddpm.nets._gn_triton module, False where Triton cannot be imported


def _triton_module():
    global _TRITON
    if _TRITON is None:
        try:
            from . import _gn_triton

            _TRITON = _gn_triton
        except ImportError:  # no Triton (PyTorch's CPU builds)
            _TRITON = False
    return _TRITON


def _cuda_channels_last(x: Tensor) -> bool:
    """A 4-d CUDA tensor stored channels-last (NHWC) and not also NCHW-contiguous."""
    return (x.is_cuda and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
            and not x.is_contiguous())


def _use_triton(norm: nn.GroupNorm, x: Tensor) -> bool:
    return (TRITON_GROUPNORM and (TRITON_GROUPNORM_NO_GRAD or torch.is_grad_enabled()) and _cuda_channels_last(x)
            and norm.affine and x.numel() < 2**31 and bool(_triton_module()))


def norm_act(norm: nn.GroupNorm, x: Tensor, *, shift: Tensor | None = None, silu: bool = True,
             dropout: float = 0.0) -> Tensor:
    """``dropout(silu(norm(x + shift[:, :, None, None])))`` for ``x`` (B, C, H, W) and ``shift`` (B, C) or
    None; ``silu=False`` leaves the SiLU out, ``dropout`` is the drop probability (0 in eval mode).

    The fused Triton path returns ``x``'s dtype (bfloat16 under autocast, where ``norm`` alone would give
    float32: the next convolution casts to bfloat16 anyway) and draws its dropout mask from a seed taken from
    PyTorch's generator; PyTorch's path is the same function in PyTorch's ops.
    """
    if _use_triton(norm, x):
        seed = torch.randint(0, 2**31 - 1, (1,), device=x.device, dtype=torch.int32) if dropout > 0 else None
        return _TRITON.group_norm_act(x, norm.num_groups, norm.weight, norm.bias, norm.eps, shift=shift, silu=silu,
                                      p=float(dropout), seed=seed)
    h = x if shift is None else x + shift[:, :, None, None]
    h = norm(h)
    if silu:
        h = F.silu(h)
    return F.dropout(h, dropout, training=True) if dropout > 0 else h


class _CatChannels(torch.autograd.Function):
    """``torch.cat([a, b], 1)`` whose backward hands each input a dense channels-last gradient."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor) -> Tensor:
        ctx.split = a.shape[1]
        return torch.cat([a, b], 1)

    @staticmethod
    def backward(ctx, g: Tensor):
        cl = torch.channels_last
        return g[:, :ctx.split].contiguous(memory_format=cl), g[:, ctx.split:].contiguous(memory_format=cl)


def cat_channels(a: Tensor, b: Tensor) -> Tensor:
    """``torch.cat([a, b], dim=1)`` of two (B, C, H, W) tensors (the U-Net's skip connections).

    Its backward slices the gradient along the channels; on channels-last memory a slice of channels is not a
    dense tensor, and a convolution's backward given one copies it first (each convolution its own copy). In
    training on CUDA channels-last tensors the slices are made dense channels-last here instead, once: under
    ``torch.compile`` the compiler then writes them directly from the kernel that sums the gradient. Elsewhere
    this is ``torch.cat``.
    """
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad) and _cuda_channels_last(a):
        return _CatChannels.apply(a, b)
    return torch.cat([a, b], dim=1)


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
