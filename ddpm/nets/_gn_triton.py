"""Triton kernels for GroupNorm (+ a per-channel shift before it, + SiLU, + dropout after it) on channels-last
(NHWC) tensors, forward and backward (book appendix "Appendix: the package on a GPU").

Imported only where Triton is installed (it comes with PyTorch's CUDA builds): :mod:`ddpm.nets.fused` decides
when to use it. The operator ``ddpm::group_norm_act`` computes, for ``x`` of shape (B, C, H, W) stored NHWC,

    xs = x + shift[:, :, None, None]                     (shift: (B, C) or None)
    z  = GroupNorm(xs) * weight + bias                   (statistics per (batch, group) in float32)
    y  = dropout(SiLU(z))  or  dropout(z)                (dropout mask from Philox(seed, element index))

in two kernels: one reads ``x`` for the group sums (several programs per image, partial sums), one reads it
again and writes ``y``. The backward is two kernels as well: one reads ``x`` and ``dy`` for the per-channel
sums of ``dz``, ``dz * xhat`` and ``xhat``, one reads them again and writes ``dx``; the dropout mask is drawn
again from the same seed, so nothing but ``x`` and the (B, G) statistics is saved. The weight, bias and
shift gradients are small (B, C) reductions left to PyTorch (and to the compiler, under ``torch.compile``).
"""

from __future__ import annotations

import functools
from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["group_norm_act"]

_ELEMS_FWD = 4096  # elements per tile: rows of the NHWC (H*W, C) slab times the padded channels
_ELEMS_BWD = 2048


@triton.jit
def _channels(Cg, G, GP: tl.constexpr, CGP: tl.constexpr):
    g = tl.arange(0, GP)[None, :, None]  # (1, GP, 1)
    j = tl.arange(0, CGP)[None, None, :]  # (1, 1, CGP)
    return g, g * Cg + j, (g < G) & (j < Cg)


@triton.jit
def _stats_kernel(X, SHIFT, PART, HW, C, Cg, G, rows, SPLIT,
                  HAS_SHIFT: tl.constexpr, BLOCK_HW: tl.constexpr, GP: tl.constexpr, CGP: tl.constexpr):
    """Partial sums of xs and xs^2 per group over rows [s*rows, (s+1)*rows) of image b: PART (B, SPLIT, 2, GP)."""
    b = tl.program_id(0)
    s = tl.program_id(1)
    g, c, cmask = _channels(Cg, G, GP, CGP)
    base = b.to(tl.int64) * HW * C
    if HAS_SHIFT:
        sh = tl.load(SHIFT + b * C + c, mask=cmask, other=0.0).to(tl.float32)
    acc = tl.zeros([BLOCK_HW, GP, CGP], dtype=tl.float32)
    acc2 = tl.zeros([BLOCK_HW, GP, CGP], dtype=tl.float32)
    start = s * rows
    end = tl.minimum(start + rows, HW)
    for r0 in range(start, end, BLOCK_HW):
        hw = r0 + tl.arange(0, BLOCK_HW)[:, None, None]
        m = (hw < end) & cmask
        v = tl.load(X + base + hw * C + c, mask=m, other=0.0).to(tl.float32)
        if HAS_SHIFT:
            v = tl.where(m, v + sh, 0.0)
        acc += v
        acc2 += v * v
    gg = tl.arange(0, GP)
    out = PART + (b * SPLIT + s) * 2 * GP
    tl.store(out + gg, tl.sum(tl.sum(acc, 0), 1))
    tl.store(out + GP + gg, tl.sum(tl.sum(acc2, 0), 1))


@triton.jit
def _act(v, mu, rs, w, bb, seed, off, p, scale, SILU: tl.constexpr, DROPOUT: tl.constexpr):
    """xhat, z = xhat * w + bb, the activation a(z), the dropout factor (0 or scale), and sigmoid(z)."""
    xhat = (v - mu) * rs
    z = xhat * w + bb
    if SILU:
        sig = tl.sigmoid(z)
        a = z * sig
    else:
        sig = z
        a = z
    if DROPOUT:
        keep = tl.where(tl.rand(seed, off) >= p, scale, 0.0)
    else:
        keep = 1.0
    return xhat, z, a, keep, sig


@triton.jit
def _fwd_kernel(X, SHIFT, PART, W, Bb, SEED, Y, MEAN, RSTD, HW, C, Cg, G, SPLIT, n_per_group, eps, p, scale,
                HAS_SHIFT: tl.constexpr, SILU: tl.constexpr, DROPOUT: tl.constexpr,
                BLOCK_HW: tl.constexpr, GP: tl.constexpr, CGP: tl.constexpr, SP: tl.constexpr):
    b = tl.program_id(0)
    t = tl.program_id(1)
    g, c, cmask = _channels(Cg, G, GP, CGP)
    # the group statistics from the partial sums of image b
    sp = tl.arange(0, SP)[:, None]
    gg = tl.arange(0, GP)[None, :]
    pm = sp < SPLIT
    part = PART + (b * SPLIT + sp) * 2 * GP + gg
    s1 = tl.sum(tl.load(part, mask=pm, other=0.0), 0)  # (GP,)
    s2 = tl.sum(tl.load(part + GP, mask=pm, other=0.0), 0)
    mean = s1 / n_per_group
    var = tl.maximum(s2 / n_per_group - mean * mean, 0.0)
    rstd = 1.0 / tl.sqrt(var + eps)
    if t == 0:
        g1 = tl.arange(0, GP)
        tl.store(MEAN + b * G + g1, mean, mask=g1 < G)
        tl.store(RSTD + b * G + g1, rstd, mask=g1 < G)
    mu = tl.reshape(mean, (1, GP, 1))
    rs = tl.reshape(rstd, (1, GP, 1))
    w = tl.load(W + c, mask=cmask, other=0.0).to(tl.float32)
    bb = tl.load(Bb + c, mask=cmask, other=0.0).to(tl.float32)
    hw = t * BLOCK_HW + tl.arange(0, BLOCK_HW)[:, None, None]
    m = (hw < HW) & cmask
    off = b * HW * C + hw * C + c  # int32: the caller checks numel < 2**31
    v = tl.load(X + off, mask=m, other=0.0).to(tl.float32)
    if HAS_SHIFT:
        v += tl.load(SHIFT + b * C + c, mask=cmask, other=0.0).to(tl.float32)
    seed = 0
    if DROPOUT:
        seed = tl.load(SEED)
    xhat, z, a, keep, sig = _act(v, mu, rs, w, bb, seed, off, p, scale, SILU, DROPOUT)
    tl.store(Y + off, (a * keep).to(Y.dtype.element_ty), mask=m)


@triton.jit
def _dz(dy, z, keep, sig, SILU: tl.constexpr):
    d = dy * keep
    if SILU:
        d = d * sig * (1.0 + z * (1.0 - sig))
    return d


@triton.jit
def _bwd_reduce_kernel(DY, X, SHIFT, W, Bb, SEED, MEAN, RSTD, PART, HW, C, Cg, G, rows, SPLIT, p, scale,
                       HAS_SHIFT: tl.constexpr, SILU: tl.constexpr, DROPOUT: tl.constexpr,
                       BLOCK_HW: tl.constexpr, GP: tl.constexpr, CGP: tl.constexpr):
    """Partial per-channel sums of dz, dz * xhat and xhat: PART (B, SPLIT, 3, C)."""
    b = tl.program_id(0)
    s = tl.program_id(1)
    g, c, cmask = _channels(Cg, G, GP, CGP)
    gm = g < G
    mu = tl.load(MEAN + b * G + g, mask=gm, other=0.0)
    rs = tl.load(RSTD + b * G + g, mask=gm, other=0.0)
    w = tl.load(W + c, mask=cmask, other=0.0).to(tl.float32)
    bb = tl.load(Bb + c, mask=cmask, other=0.0).to(tl.float32)
    if HAS_SHIFT:
        sh = tl.load(SHIFT + b * C + c, mask=cmask, other=0.0).to(tl.float32)
    seed = 0
    if DROPOUT:
        seed = tl.load(SEED)
    a_acc = tl.zeros([BLOCK_HW, GP, CGP], dtype=tl.float32)
    b_acc = tl.zeros([BLOCK_HW, GP, CGP], dtype=tl.float32)
    r_acc = tl.zeros([BLOCK_HW, GP, CGP], dtype=tl.float32)
    start = s * rows
    end = tl.minimum(start + rows, HW)
    for r0 in range(start, end, BLOCK_HW):
        hw = r0 + tl.arange(0, BLOCK_HW)[:, None, None]
        m = (hw < end) & cmask
        off = b * HW * C + hw * C + c
        v = tl.load(X + off, mask=m, other=0.0).to(tl.float32)
        if HAS_SHIFT:
            v += sh
        dy = tl.load(DY + off, mask=m, other=0.0).to(tl.float32)
        xhat, z, a, keep, sig = _act(v, mu, rs, w, bb, seed, off, p, scale, SILU, DROPOUT)
        dz = _dz(dy, z, keep, sig, SILU)
        xhat = tl.where(m, xhat, 0.0)
        a_acc += dz
        b_acc += dz * xhat
        r_acc += xhat
    out = PART + (b * SPLIT + s) * 3 * C + c
    tl.store(out, tl.reshape(tl.sum(a_acc, 0), (1, GP, CGP)), mask=cmask)
    tl.store(out + C, tl.reshape(tl.sum(b_acc, 0), (1, GP, CGP)), mask=cmask)
    tl.store(out + 2 * C, tl.reshape(tl.sum(r_acc, 0), (1, GP, CGP)), mask=cmask)


@triton.jit
def _bwd_apply_kernel(DY, X, SHIFT, W, Bb, SEED, MEAN, RSTD, PART, DX, HW, C, Cg, G, SPLIT, n_per_group, p, scale,
                      HAS_SHIFT: tl.constexpr, SILU: tl.constexpr, DROPOUT: tl.constexpr,
                      BLOCK_HW: tl.constexpr, GP: tl.constexpr, CGP: tl.constexpr, SP: tl.constexpr):
    """dx = rstd * (dxhat - (S1 + xhat * S2) / n), S1 = sum over the group of dxhat, S2 of dxhat * xhat."""
    b = tl.program_id(0)
    t = tl.program_id(1)
    g, c, cmask = _channels(Cg, G, GP, CGP)
    gm = g < G
    w = tl.load(W + c, mask=cmask, other=0.0).to(tl.float32)
    bb = tl.load(Bb + c, mask=cmask, other=0.0).to(tl.float32)
    # S1, S2 of image b: the partial per-channel sums over the splits, weighted by w, summed over the group
    sp = tl.arange(0, SP)[:, None, None]
    pm = (sp < SPLIT) & cmask
    part = PART + (b * SPLIT + sp) * 3 * C + c
    a_c = tl.sum(tl.load(part, mask=pm, other=0.0), 0)  # (GP, CGP)
    b_c = tl.sum(tl.load(part + C, mask=pm, other=0.0), 0)
    w2 = tl.reshape(w, (GP, CGP))
    s1 = tl.reshape(tl.sum(a_c * w2, 1), (1, GP, 1))
    s2 = tl.reshape(tl.sum(b_c * w2, 1), (1, GP, 1))
    mu = tl.load(MEAN + b * G + g, mask=gm, other=0.0)
    rs = tl.load(RSTD + b * G + g, mask=gm, other=0.0)
    seed = 0
    if DROPOUT:
        seed = tl.load(SEED)
    hw = t * BLOCK_HW + tl.arange(0, BLOCK_HW)[:, None, None]
    m = (hw < HW) & cmask
    off = b * HW * C + hw * C + c
    v = tl.load(X + off, mask=m, other=0.0).to(tl.float32)
    if HAS_SHIFT:
        v += tl.load(SHIFT + b * C + c, mask=cmask, other=0.0).to(tl.float32)
    dy = tl.load(DY + off, mask=m, other=0.0).to(tl.float32)
    xhat, z, a, keep, sig = _act(v, mu, rs, w, bb, seed, off, p, scale, SILU, DROPOUT)
    dz = _dz(dy, z, keep, sig, SILU)
    dx = rs * (dz * w - (s1 + xhat * s2) / n_per_group)
    tl.store(DX + off, dx.to(DX.dtype.element_ty), mask=m)


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


@functools.lru_cache(maxsize=None)
def _sms(device_index: int) -> int:
    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(device_index).multi_processor_count
    return 4  # the Triton interpreter on the CPU


def _plan(B: int, HW: int, C: int, G: int, elems: int, device: torch.device):
    Cg = C // G
    GP, CGP = _pow2(G), _pow2(Cg)
    block_hw = max(1, min(_pow2(HW), elems // (GP * CGP)))
    tiles = triton.cdiv(HW, block_hw)
    split = 1
    while split < 16 and split * 2 <= tiles and B * split < 4 * _sms(device.index or 0):
        split *= 2
    rows = triton.cdiv(triton.cdiv(HW, split), block_hw) * block_hw
    split = triton.cdiv(HW, rows)
    return Cg, GP, CGP, block_hw, split, rows


def _nhwc(x: Tensor) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last)


@torch.library.custom_op("ddpm::group_norm_act_fwd", mutates_args=())
def _fwd(x: Tensor, shift: Optional[Tensor], weight: Tensor, bias: Tensor, seed: Optional[Tensor], groups: int,
         eps: float, silu: bool, p: float) -> tuple[Tensor, Tensor, Tensor]:
    B, C, H, W = x.shape
    HW = H * W
    x = _nhwc(x)
    Cg, GP, CGP, block_hw, split, rows = _plan(B, HW, C, groups, _ELEMS_FWD, x.device)
    part = torch.empty((B, split, 2, GP), device=x.device, dtype=torch.float32)
    sh = shift.contiguous() if shift is not None else x
    _stats_kernel[(B, split)](x, sh, part, HW, C, Cg, groups, rows, split, HAS_SHIFT=shift is not None,
                              BLOCK_HW=block_hw, GP=GP, CGP=CGP, num_warps=4)
    y = torch.empty_like(x)
    mean = torch.empty((B, groups), device=x.device, dtype=torch.float32)
    rstd = torch.empty_like(mean)
    drop = p > 0.0
    _fwd_kernel[(B, triton.cdiv(HW, block_hw))](
        x, sh, part, weight, bias, seed if drop else part, y, mean, rstd, HW, C, Cg, groups, split, float(HW * Cg),
        eps, p, 1.0 / (1.0 - p), HAS_SHIFT=shift is not None, SILU=silu, DROPOUT=drop, BLOCK_HW=block_hw, GP=GP,
        CGP=CGP, SP=_pow2(split), num_warps=4)
    return y, mean, rstd


@_fwd.register_fake
def _(x, shift, weight, bias, seed, groups, eps, silu, p):
    B = x.shape[0]
    return (torch.empty_like(x, memory_format=torch.channels_last),
            x.new_empty((B, groups), dtype=torch.float32), x.new_empty((B, groups), dtype=torch.float32))


@torch.library.custom_op("ddpm::group_norm_act_bwd", mutates_args=())
def _bwd(dy: Tensor, x: Tensor, shift: Optional[Tensor], weight: Tensor, bias: Tensor, seed: Optional[Tensor],
         mean: Tensor, rstd: Tensor, groups: int, silu: bool, p: float) -> tuple[Tensor, Tensor]:
    B, C, H, W = x.shape
    HW = H * W
    x, dy = _nhwc(x), _nhwc(dy)
    Cg, GP, CGP, block_hw, split, rows = _plan(B, HW, C, groups, _ELEMS_BWD, x.device)
    part = torch.empty((B, split, 3, C), device=x.device, dtype=torch.float32)
    sh = shift.contiguous() if shift is not None else x
    drop = p > 0.0
    sd = seed if drop else mean
    flags = dict(HAS_SHIFT=shift is not None, SILU=silu, DROPOUT=drop, BLOCK_HW=block_hw, GP=GP, CGP=CGP)
    _bwd_reduce_kernel[(B, split)](dy, x, sh, weight, bias, sd, mean, rstd, part, HW, C, Cg, groups, rows, split, p,
                                   1.0 / (1.0 - p), **flags, num_warps=4)
    dx = torch.empty_like(x)
    _bwd_apply_kernel[(B, triton.cdiv(HW, block_hw))](
        dy, x, sh, weight, bias, sd, mean, rstd, part, dx, HW, C, Cg, groups, split, float(HW * Cg), p,
        1.0 / (1.0 - p), **flags, SP=_pow2(split), num_warps=4)
    return dx, part.sum(1)  # (B, C, H, W) NHWC, (B, 3, C): sums over the image of dz, dz * xhat, xhat


@_bwd.register_fake
def _(dy, x, shift, weight, bias, seed, mean, rstd, groups, silu, p):
    return torch.empty_like(x, memory_format=torch.channels_last), x.new_empty((x.shape[0], 3, x.shape[1]),
                                                                                dtype=torch.float32)


def _setup(ctx, inputs, output):
    x, shift, weight, bias, seed, groups, eps, silu, p = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, shift, weight, bias, seed, mean, rstd)
    ctx.cfg = (groups, silu, p)


def _backward(ctx, dy, _dmean, _drstd):
    x, shift, weight, bias, seed, mean, rstd = ctx.saved_tensors
    groups, silu, p = ctx.cfg
    dx, sums = _bwd(dy, x, shift, weight, bias, seed, mean, rstd, groups, silu, p)
    B, C, H, W = x.shape
    a, bx, r = sums.unbind(1)  # (B, C) each
    dweight, dbias = bx.sum(0).to(weight.dtype), a.sum(0).to(bias.dtype)
    dshift = None
    if shift is not None:
        n = H * W * (C // groups)
        wa = (a * weight).view(B, groups, -1)  # (B, G, C/G): per-channel sums of dxhat
        s1 = wa.sum(-1, keepdim=True)
        s2 = (bx * weight).view(B, groups, -1).sum(-1, keepdim=True)
        dshift = (rstd[:, :, None] * (wa - (H * W * s1 + r.view(B, groups, -1) * s2) / n)).reshape(B, C)
        dshift = dshift.to(shift.dtype)
    return dx, dshift, dweight, dbias, None, None, None, None, None


_fwd.register_autograd(_backward, setup_context=_setup)


def group_norm_act(x: Tensor, groups: int, weight: Tensor, bias: Tensor, eps: float, *, shift: Tensor | None = None,
                   silu: bool = True, p: float = 0.0, seed: Tensor | None = None) -> Tensor:
    """``dropout(act(group_norm(x + shift[:, :, None, None])))`` on an NHWC 4-d ``x`` in its own dtype, with
    ``act`` SiLU or the identity and the dropout drawn from ``seed`` (a one-element int tensor on ``x``'s
    device) when ``p > 0``. Returns an NHWC tensor of ``x``'s dtype."""
    if p > 0.0 and seed is None:
        raise ValueError("group_norm_act needs a seed tensor when p > 0")
    y, _, _ = _fwd(x, shift, weight, bias, seed, int(groups), float(eps), bool(silu), float(p))
    return y
