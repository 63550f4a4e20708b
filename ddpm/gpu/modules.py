"""The U-Net's layers in the layout the GPU runs fastest, and :func:`accelerate`, which swaps them in.

Each class here is a subclass of a layer of :mod:`ddpm.nets.unet` with the same parameters and a ``forward`` that
computes the same function (the tests compare values, gradients and state dicts on the CPU):

- every normalisation of the U-Net is the pattern ``dropout(silu(group_norm(x + shift)))``; :func:`norm_act`
  computes it, on a CUDA channels-last tensor, in the Triton kernels of ``ddpm.gpu._gn_triton`` (forward: one pass
  over the NHWC memory for the statistics, one for the output; backward alike), and elsewhere in PyTorch's
  operators in that order. PyTorch's own GroupNorm kernel reads and writes NCHW, so on a channels-last activation
  it copies the tensor to NCHW and the next convolution copies it back;
- the attention and the upsampling keep channels-last memory channels-last (views instead of copies);
- :func:`cat_channels` is the skip concatenation, with a backward that hands the convolutions dense channels-last
  gradients (a slice of channels of NHWC memory is not dense, and each convolution's backward would copy it).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nets import unet
from ..nets.embedding import sinusoidal_embedding
from .config import GpuConfig

__all__ = ["accelerate", "norm_act", "cat_channels", "upsample_nearest2x"]

_TRITON = None  # the imported ddpm.gpu._gn_triton module, False where Triton cannot be imported


def _triton_module():
    global _TRITON  # a cache of an import, not a switch
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


def _channels_last(x: Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def norm_act(norm: nn.GroupNorm, x: Tensor, gpu: GpuConfig, *, shift: Tensor | None = None, silu: bool = True,
             dropout: float = 0.0) -> Tensor:
    """``dropout(silu(norm(x + shift[:, :, None, None])))`` for ``x`` (B, C, H, W) and ``shift`` (B, C) or None;
    ``silu=False`` leaves the SiLU out, ``dropout`` is the drop probability (0 in eval mode).

    With ``gpu.triton_groupnorm`` on a CUDA channels-last ``x``, the Triton kernels: they return ``x``'s dtype
    (bfloat16 under autocast, where ``norm`` alone gives float32: the next convolution casts to bfloat16 anyway)
    and draw the dropout mask from a seed taken from PyTorch's generator. Elsewhere PyTorch's operators.
    """
    if (gpu.triton_groupnorm and _cuda_channels_last(x) and norm.affine and x.numel() < 2**31
            and _triton_module()):
        seed = torch.randint(0, 2**31 - 1, (1,), device=x.device, dtype=torch.int32) if dropout > 0 else None
        return _TRITON.group_norm_act(x, norm.num_groups, norm.weight, norm.bias, norm.eps, shift=shift, silu=silu,
                                      p=float(dropout), seed=seed, tuning=gpu.groupnorm_tuning.as_tuple())
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
    """``torch.cat([a, b], dim=1)`` of two (B, C, H, W) tensors; in training on CUDA channels-last tensors its
    backward makes both gradient slices dense channels-last, once (under ``torch.compile`` the compiler then writes
    them directly from the kernel that sums the gradient)."""
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad) and _cuda_channels_last(a):
        return _CatChannels.apply(a, b)
    return torch.cat([a, b], dim=1)


def upsample_nearest2x(x: Tensor) -> Tensor:
    """``F.interpolate(x, scale_factor=2, mode="nearest")`` for (B, C, H, W), written as a broadcast and a reshape:
    its gradient is a sum over each 2x2 block (a plain reduction, not interpolate's scatter-add), and it keeps
    ``x``'s memory format (channels-last in, channels-last out)."""
    B, C, H, W = x.shape
    if _channels_last(x):
        xp = x.permute(0, 2, 3, 1)  # (B, H, W, C), a view of the NHWC memory
        y = xp[:, :, None, :, None, :].expand(B, H, 2, W, 2, C).reshape(B, 2 * H, 2 * W, C)
        return y.permute(0, 3, 1, 2)  # (B, C, 2H, 2W), NHWC in memory
    return x[:, :, :, None, :, None].expand(B, C, H, 2, W, 2).reshape(B, C, 2 * H, 2 * W)


class ResBlock(unet.ResBlock):
    """:class:`ddpm.nets.unet.ResBlock` with both normalisations through :func:`norm_act`."""

    _gpu: GpuConfig

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(norm_act(self.norm1, x, self._gpu))  # (B, c_out, H, W)
        p = self.dropout.p if self.training else 0.0
        h = self.conv2(norm_act(self.norm2, h, self._gpu, shift=self.temb_proj(temb), dropout=p))
        return self.skip(x) + h


class Attention(unet.Attention):
    """:class:`ddpm.nets.unet.Attention`; on NHWC memory q, k and v reach the attention kernel as views."""

    _gpu: GpuConfig

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        B, C, H, W = x.shape
        nh, d = self.heads, C // self.heads
        qkv = self.qkv(norm_act(self.norm, x, self._gpu, silu=False))  # (B, 3C, H, W)
        if not _channels_last(qkv):
            qkv = qkv.reshape(B, 3, nh, d, H * W).permute(1, 0, 2, 4, 3)  # (3, B, nh, HW, d)
            h = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, nh, HW, d)
            return x + self.proj(h.transpose(-1, -2).reshape(B, C, H, W))
        # NHWC in memory: (B, H*W, 3, nh, d) is a view, so q, k, v reach the attention kernel without a copy
        # (each has a contiguous last dimension) and the result goes back to NHWC as a view too.
        q, k, v = qkv.permute(0, 2, 3, 1).reshape(B, H * W, 3, nh, d).permute(2, 0, 3, 1, 4)  # 3 x (B, nh, HW, d)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, nh, HW, d)
        h = h.transpose(1, 2).reshape(B, H, W, C).permute(0, 3, 1, 2)  # (B, C, H, W), NHWC in memory
        return x + self.proj(h)


class Upsample(unet.Upsample):
    """:class:`ddpm.nets.unet.Upsample` through :func:`upsample_nearest2x`."""

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        return self.conv(upsample_nearest2x(x))


class UNet(unet.UNet):
    """:class:`ddpm.nets.unet.UNet` with :func:`cat_channels` skips and the output normalisation through
    :func:`norm_act`."""

    _gpu: GpuConfig

    def forward(self, x: Tensor, t) -> Tensor:
        cfg = self.config
        if x.dim() != 4 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"x must have shape (B, {cfg.in_channels}, H, W), got {tuple(x.shape)}")
        f = 2 ** (len(cfg.channel_mults) - 1)
        if x.shape[-1] % f or x.shape[-2] % f:
            raise ValueError(f"x's height and width must be divisible by {f}, got {tuple(x.shape)}")
        t = self._times(t, x.shape[0], x.device)  # (B,)
        temb = F.silu(self.time_embed(sinusoidal_embedding(t, cfg.channels)))  # (B, temb_dim)
        h = self.conv_in(x)
        hs = [h]
        for block in self.down:
            for layer in block:
                h = layer(h, temb)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, temb)
        for block in self.up:
            h = cat_channels(h, hs.pop())
            for layer in block:
                h = layer(h, temb)
        return self.conv_out(norm_act(self.norm_out, h, self._gpu))


_SWAPS = {unet.UNet: UNet, unet.ResBlock: ResBlock, unet.Attention: Attention, unet.Upsample: Upsample}


def compile_kwargs(gpu: GpuConfig) -> dict:
    """``torch.compile``'s arguments for ``gpu``: its mode with a fixed batch shape (a second batch size recompiles
    instead of going shape-generic), and for a channels-last network the compiler's layout planning switched on.

    Inductor plans NHWC layouts for a graph's intermediate tensors only when its heuristic expects a gain, and that
    heuristic turns planning off for any graph with a 3x3 convolution whose output has at most half its input
    channels: in the U-Net, every up-path block after a skip concatenation and the output conv. The graphs then
    keep NCHW intermediates between NHWC convolutions, with transposing copies around them.
    """
    kw: dict = {"dynamic": False}
    force = gpu.channels_last and gpu.force_layout
    if force or gpu.inductor_options:
        from torch._inductor import list_mode_options

        kw["options"] = {**list_mode_options(gpu.compile_mode), **dict(gpu.inductor_options)}
        if force:
            kw["options"]["force_layout_optimization"] = True
    else:
        kw["mode"] = gpu.compile_mode
    return kw


def compile_net(net: nn.Module, gpu: GpuConfig) -> nn.Module:
    """``torch.compile(net, **compile_kwargs(gpu))``: for a wrapper such as ``DistributedDataParallel`` around an
    accelerated copy (:func:`accelerate` compiles its copy itself)."""
    return torch.compile(net, **compile_kwargs(gpu))


def accelerate(net: nn.Module, config: GpuConfig | None = None) -> nn.Module:
    """A copy of ``net`` that runs faster on a GPU: the same function and the same state dict, sharing ``net``'s
    parameters and buffers (training the copy trains ``net``).

    The copy's U-Net layers are swapped for this module's subclasses (same parameters, same keys); with
    ``config.channels_last`` the shared weights are stored channels-last (``net``'s too: the same tensors); with
    ``config.compile`` the copy is compiled in place (``nn.Module.compile``, so its state dict keeps its keys).
    Any other network (the MLP) is copied unchanged and only compiled.
    """
    gpu = config if config is not None else GpuConfig()
    if not isinstance(gpu, GpuConfig):
        raise ValueError(f"config must be a ddpm.gpu.GpuConfig, got {type(gpu).__name__}")
    if not isinstance(net, nn.Module):
        raise ValueError(f"net must be a torch.nn.Module, got {type(net).__name__}")
    shared = {id(t): t for t in (*net.parameters(), *net.buffers())}
    fast = copy.deepcopy(net, memo=shared)
    for m in fast.modules():
        cls = _SWAPS.get(type(m))
        if cls is not None:
            m.__class__ = cls
        if isinstance(m, (ResBlock, Attention, UNet)):
            m._gpu = gpu
    if gpu.channels_last:
        fast.to(memory_format=torch.channels_last)
    if gpu.compile:
        fast.compile(**compile_kwargs(gpu))
    return fast
