"""Triton kernels for GroupNorm (+ a per-channel shift before it, + SiLU, + dropout after it) on channels-last
(NHWC) tensors, forward and backward (book appendix "Appendix: the package on a GPU").

Imported only where Triton is installed (it comes with PyTorch's CUDA builds), by :mod:`ddpm.gpu.modules`, which
decides when to use it. The operators ``ddpm::group_norm_act_fwd`` and ``ddpm::group_norm_act_bwd`` (its backward)
compute, for ``x`` of shape (B, C, H, W) stored NHWC,

    xs = x + shift[:, :, None, None]                     (shift: (B, C) or None)
    z  = GroupNorm(xs) * weight + bias                   (statistics per (batch, group) in float32)
    y  = dropout(SiLU(z))  or  dropout(z)                (dropout mask from Philox(seed, counter))

in three kernels: one reads ``x`` for per-channel sums (several programs per image, partial sums), one per
image turns them into the group statistics and a per-channel ``z = x * a + d``, one reads ``x`` again and
writes ``y``. The backward is three kernels as well: per-channel sums of ``dz``, ``dz * xhat`` and ``xhat``
(reading ``x`` and ``dy``), a per-image kernel that turns them into ``dx = dz * u + xhat * v + w`` per channel
and the shift gradient, and one that reads ``x`` and ``dy`` again and writes ``dx``. Every tile is rows of the
NHWC slab by all the channels, so loads are contiguous. The passes that draw the dropout mask (the two output
passes and the backward's reduction) take a tile's rows as four interleaved sets, so that one Philox call (four
32-bit outputs) draws the dropout uniforms of four elements: the mask of element (b, row, c) depends on the seed,
b, row // 4, c and row % 4 alone, whatever the tile sizes, and the backward draws it again from the same seed:
nothing but ``x`` and the (B, G) statistics is saved. The weight and bias gradients are sums over the batch
left to PyTorch (and to the compiler, under ``torch.compile``).
"""

from __future__ import annotations

import functools
from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["group_norm_act"]

# The launch parameters are ddpm.gpu.config.GroupNormTuning, passed to the operators as the list
# [elems, reduce_warps, apply_warps, combine_warps, programs_per_sm].


@triton.jit
def _stats_kernel(X, SHIFT, PART, HW, C, rows, SPLIT,
                  HAS_SHIFT: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
    """Per-channel partial sums of xs and xs^2 over rows [s*rows, (s+1)*rows) of image b: PART (B, SPLIT, 2, C)."""
    b = tl.program_id(0)
    s = tl.program_id(1)
    c = tl.arange(0, BLOCK_C)[None, :]
    cm = c < C
    base = b.to(tl.int64) * HW * C
    if HAS_SHIFT:
        sh = tl.load(SHIFT + b * C + c, mask=cm, other=0.0).to(tl.float32)
    acc = tl.zeros([BLOCK_HW, BLOCK_C], dtype=tl.float32)
    acc2 = tl.zeros([BLOCK_HW, BLOCK_C], dtype=tl.float32)
    start = s * rows
    end = tl.minimum(start + rows, HW)
    for r0 in range(start, end, BLOCK_HW):
        hw = r0 + tl.arange(0, BLOCK_HW)[:, None]
        m = (hw < end) & cm
        v = tl.load(X + base + hw * C + c, mask=m, other=0.0).to(tl.float32)
        if HAS_SHIFT:
            v = tl.where(m, v + sh, 0.0)
        acc += v
        acc2 += v * v
    c1 = tl.arange(0, BLOCK_C)
    out = PART + (b * SPLIT + s) * 2 * C + c1
    tl.store(out, tl.sum(acc, 0), mask=c1 < C)
    tl.store(out + C, tl.sum(acc2, 0), mask=c1 < C)


@triton.jit
def _split_sum(PART, b, k, K, C, SPLIT, BLOCK_C: tl.constexpr, SP: tl.constexpr):
    """Sum over the splits of row k of PART (B, SPLIT, K, C) for image b: (BLOCK_C,)."""
    sp = tl.arange(0, SP)[:, None]
    c = tl.arange(0, BLOCK_C)[None, :]
    v = tl.load(PART + ((b * SPLIT + sp) * K + k) * C + c, mask=(sp < SPLIT) & (c < C), other=0.0)
    return tl.sum(v, 0)


@triton.jit
def _membership(C, Cg, BLOCK_C: tl.constexpr, GP: tl.constexpr):
    """(GP, BLOCK_C): True where channel c belongs to group g."""
    gi = tl.arange(0, GP)[:, None]
    cc = tl.arange(0, BLOCK_C)[None, :]
    return ((cc // Cg) == gi) & (cc < C)


@triton.jit
def _fwd_combine_kernel(PART, SHIFT, W, Bb, MEAN, RSTD, COEF, C, Cg, G, SPLIT, n_per_group, eps,
                        HAS_SHIFT: tl.constexpr, BLOCK_C: tl.constexpr, GP: tl.constexpr, SP: tl.constexpr):
    """Group statistics of image b, and the per-channel a, d of z = x * a + d: COEF (B, 2, C)."""
    b = tl.program_id(0)
    s1 = _split_sum(PART, b, 0, 2, C, SPLIT, BLOCK_C, SP)  # (BLOCK_C,)
    s2 = _split_sum(PART, b, 1, 2, C, SPLIT, BLOCK_C, SP)
    member = _membership(C, Cg, BLOCK_C, GP)
    mean = tl.sum(tl.where(member, s1[None, :], 0.0), 1) / n_per_group  # (GP,)
    var = tl.maximum(tl.sum(tl.where(member, s2[None, :], 0.0), 1) / n_per_group - mean * mean, 0.0)
    rstd = 1.0 / tl.sqrt(var + eps)
    g1 = tl.arange(0, GP)
    tl.store(MEAN + b * G + g1, mean, mask=g1 < G)
    tl.store(RSTD + b * G + g1, rstd, mask=g1 < G)
    mean_c = tl.sum(tl.where(member, mean[:, None], 0.0), 0)  # (BLOCK_C,)
    rstd_c = tl.sum(tl.where(member, rstd[:, None], 0.0), 0)
    c1 = tl.arange(0, BLOCK_C)
    cm = c1 < C
    w = tl.load(W + c1, mask=cm, other=0.0).to(tl.float32)
    bb = tl.load(Bb + c1, mask=cm, other=0.0).to(tl.float32)
    sh = 0.0
    if HAS_SHIFT:
        sh = tl.load(SHIFT + b * C + c1, mask=cm, other=0.0).to(tl.float32)
    a = rstd_c * w
    tl.store(COEF + b * 2 * C + c1, a, mask=cm)
    tl.store(COEF + b * 2 * C + C + c1, bb + (sh - mean_c) * a, mask=cm)


@triton.jit
def _activate(z, rnd, p, scale, SILU: tl.constexpr, DROPOUT: tl.constexpr):
    """The activation a(z), the dropout factor (0 or scale, from the uniform ``rnd``) and sigmoid(z) (z itself
    without SiLU)."""
    if SILU:
        sig = tl.sigmoid(z)
        a = z * sig
    else:
        sig = z
        a = z
    if DROPOUT:
        keep = tl.where(rnd >= p, scale, 0.0)
    else:
        keep = 1.0
    return a, keep, sig


@triton.jit
def _uniforms(SEED, b, gi, c, HWq, C, DROPOUT: tl.constexpr):
    """Four uniforms for a (BLOCK_Q, BLOCK_C) tile of row groups gi: the k-th is for row 4 * gi + k. One Philox
    call (counter: image, row group, channel) serves four elements, so the mask costs a quarter of one call per
    element; the forward and both backward passes draw it alike."""
    if DROPOUT:
        r0, r1, r2, r3 = tl.rand4x(tl.load(SEED), b * HWq * C + gi * C + c)
    else:
        r0 = 0.0
        r1 = 0.0
        r2 = 0.0
        r3 = 0.0
    return r0, r1, r2, r3


@triton.jit
def _fwd_rows(X, Y, base, hw, HW, c, cm, C, a, d, rnd, p, scale, SILU: tl.constexpr, DROPOUT: tl.constexpr):
    """y for rows hw (BLOCK_Q, 1) of the image at offset base."""
    m = (hw < HW) & cm
    off = base + hw * C + c
    z = tl.load(X + off, mask=m, other=0.0).to(tl.float32) * a + d
    act, keep, sig = _activate(z, rnd, p, scale, SILU, DROPOUT)
    tl.store(Y + off, (act * keep).to(Y.dtype.element_ty), mask=m)


@triton.jit
def _fwd_apply_kernel(X, COEF, SEED, Y, HW, HWq, C, p, scale, SILU: tl.constexpr, DROPOUT: tl.constexpr,
                      BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr):
    """y for rows [4 * BLOCK_Q * t, 4 * BLOCK_Q * (t + 1)) of image b, as four interleaved row sets."""
    b = tl.program_id(0)
    t = tl.program_id(1)
    c = tl.arange(0, BLOCK_C)[None, :]
    cm = c < C
    a = tl.load(COEF + b * 2 * C + c, mask=cm, other=0.0)
    d = tl.load(COEF + b * 2 * C + C + c, mask=cm, other=0.0)
    gi = t * BLOCK_Q + tl.arange(0, BLOCK_Q)[:, None]
    r0, r1, r2, r3 = _uniforms(SEED, b, gi, c, HWq, C, DROPOUT)
    base = b * HW * C  # int32: the caller checks numel < 2**31
    _fwd_rows(X, Y, base, 4 * gi, HW, c, cm, C, a, d, r0, p, scale, SILU, DROPOUT)
    _fwd_rows(X, Y, base, 4 * gi + 1, HW, c, cm, C, a, d, r1, p, scale, SILU, DROPOUT)
    _fwd_rows(X, Y, base, 4 * gi + 2, HW, c, cm, C, a, d, r2, p, scale, SILU, DROPOUT)
    _fwd_rows(X, Y, base, 4 * gi + 3, HW, c, cm, C, a, d, r3, p, scale, SILU, DROPOUT)


@triton.jit
def _xhat_coef(SHIFT, MEAN, RSTD, W, Bb, b, C, Cg, G, HAS_SHIFT: tl.constexpr, BLOCK_C: tl.constexpr):
    """Per-channel P, Q, w, beta of xhat = x * P + Q and z = xhat * w + beta for image b: (1, BLOCK_C) each."""
    c = tl.arange(0, BLOCK_C)[None, :]
    cm = c < C
    gidx = tl.minimum(c // Cg, G - 1)
    mu = tl.load(MEAN + b * G + gidx, mask=cm, other=0.0)
    rs = tl.load(RSTD + b * G + gidx, mask=cm, other=0.0)
    sh = 0.0
    if HAS_SHIFT:
        sh = tl.load(SHIFT + b * C + c, mask=cm, other=0.0).to(tl.float32)
    w = tl.load(W + c, mask=cm, other=0.0).to(tl.float32)
    bb = tl.load(Bb + c, mask=cm, other=0.0).to(tl.float32)
    return rs, (sh - mu) * rs, w, bb


@triton.jit
def _grad_rows(X, DY, base, hw, lim, c, cm, C, P, Q, w, bb, rnd, p, scale, SILU: tl.constexpr,
               DROPOUT: tl.constexpr):
    """Offsets, mask, xhat and dz (the gradient at z) of rows hw (BLOCK_Q, 1) below lim; 0 where masked."""
    m = (hw < lim) & cm
    off = base + hw * C + c
    xhat = tl.where(m, tl.load(X + off, mask=m, other=0.0).to(tl.float32) * P + Q, 0.0)
    dy = tl.load(DY + off, mask=m, other=0.0).to(tl.float32)
    z = xhat * w + bb
    act, keep, sig = _activate(z, rnd, p, scale, SILU, DROPOUT)
    dz = dy * keep
    if SILU:
        dz = dz * sig * (1.0 + z * (1.0 - sig))
    return off, m, xhat, dz


@triton.jit
def _grad_sums(a_acc, b_acc, r_acc, X, DY, base, hw, lim, c, cm, C, P, Q, w, bb, rnd, p, scale, SILU: tl.constexpr,
               DROPOUT: tl.constexpr):
    """The running sums of dz, dz * xhat and xhat with rows hw (BLOCK_Q, 1) added."""
    _, _, xhat, dz = _grad_rows(X, DY, base, hw, lim, c, cm, C, P, Q, w, bb, rnd, p, scale, SILU, DROPOUT)
    return a_acc + dz, b_acc + dz * xhat, r_acc + xhat


@triton.jit
def _bwd_reduce_kernel(DY, X, SHIFT, W, Bb, SEED, MEAN, RSTD, PART, HW, HWq, C, Cg, G, rows, SPLIT, p, scale,
                       HAS_SHIFT: tl.constexpr, SILU: tl.constexpr, DROPOUT: tl.constexpr,
                       BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr):
    """Per-channel partial sums of dz, dz * xhat and xhat over rows [s*rows, (s+1)*rows) (a whole number of
    tiles of 4 * BLOCK_Q rows): PART (B, SPLIT, 3, C)."""
    b = tl.program_id(0)
    s = tl.program_id(1)
    c = tl.arange(0, BLOCK_C)[None, :]
    cm = c < C
    P, Q, w, bb = _xhat_coef(SHIFT, MEAN, RSTD, W, Bb, b, C, Cg, G, HAS_SHIFT, BLOCK_C)
    a_acc = tl.zeros([BLOCK_Q, BLOCK_C], dtype=tl.float32)
    b_acc = tl.zeros([BLOCK_Q, BLOCK_C], dtype=tl.float32)
    r_acc = tl.zeros([BLOCK_Q, BLOCK_C], dtype=tl.float32)
    start = s * rows
    end = tl.minimum(start + rows, HW)
    base = b * HW * C
    for g0 in range(start // 4, (end + 3) // 4, BLOCK_Q):
        gi = g0 + tl.arange(0, BLOCK_Q)[:, None]
        r0, r1, r2, r3 = _uniforms(SEED, b, gi, c, HWq, C, DROPOUT)
        a_acc, b_acc, r_acc = _grad_sums(a_acc, b_acc, r_acc, X, DY, base, 4 * gi, end, c, cm, C, P, Q, w, bb, r0,
                                         p, scale, SILU, DROPOUT)
        a_acc, b_acc, r_acc = _grad_sums(a_acc, b_acc, r_acc, X, DY, base, 4 * gi + 1, end, c, cm, C, P, Q, w, bb,
                                         r1, p, scale, SILU, DROPOUT)
        a_acc, b_acc, r_acc = _grad_sums(a_acc, b_acc, r_acc, X, DY, base, 4 * gi + 2, end, c, cm, C, P, Q, w, bb,
                                         r2, p, scale, SILU, DROPOUT)
        a_acc, b_acc, r_acc = _grad_sums(a_acc, b_acc, r_acc, X, DY, base, 4 * gi + 3, end, c, cm, C, P, Q, w, bb,
                                         r3, p, scale, SILU, DROPOUT)
    c1 = tl.arange(0, BLOCK_C)
    out = PART + (b * SPLIT + s) * 3 * C + c1
    tl.store(out, tl.sum(a_acc, 0), mask=c1 < C)
    tl.store(out + C, tl.sum(b_acc, 0), mask=c1 < C)
    tl.store(out + 2 * C, tl.sum(r_acc, 0), mask=c1 < C)


@triton.jit
def _bwd_combine_kernel(PART, RSTD, W, COEF, SUMS, HW, C, Cg, G, SPLIT, n_per_group,
                        BLOCK_C: tl.constexpr, GP: tl.constexpr, SP: tl.constexpr):
    """For image b: dx = dz * U + xhat * V + Wc per channel (COEF (B, 3, C)), with U = rstd * w,
    V = -rstd * S2 / n, Wc = -rstd * S1 / n (S1, S2: the group sums of dz * w and dz * w * xhat); and SUMS
    (B, 3, C): the image's sums of dz (bias gradient), dz * xhat (weight gradient) and dx (shift gradient)."""
    b = tl.program_id(0)
    a_c = _split_sum(PART, b, 0, 3, C, SPLIT, BLOCK_C, SP)  # (BLOCK_C,)
    b_c = _split_sum(PART, b, 1, 3, C, SPLIT, BLOCK_C, SP)
    r_c = _split_sum(PART, b, 2, 3, C, SPLIT, BLOCK_C, SP)
    c1 = tl.arange(0, BLOCK_C)
    cm = c1 < C
    w = tl.load(W + c1, mask=cm, other=0.0).to(tl.float32)
    member = _membership(C, Cg, BLOCK_C, GP)
    s1 = tl.sum(tl.where(member, (a_c * w)[None, :], 0.0), 1)  # (GP,)
    s2 = tl.sum(tl.where(member, (b_c * w)[None, :], 0.0), 1)
    s1_c = tl.sum(tl.where(member, s1[:, None], 0.0), 0)  # (BLOCK_C,)
    s2_c = tl.sum(tl.where(member, s2[:, None], 0.0), 0)
    rs_c = tl.load(RSTD + b * G + tl.minimum(c1 // Cg, G - 1), mask=cm, other=0.0)
    u = rs_c * w
    v = -rs_c * s2_c / n_per_group
    wc = -rs_c * s1_c / n_per_group
    tl.store(COEF + b * 3 * C + c1, u, mask=cm)
    tl.store(COEF + b * 3 * C + C + c1, v, mask=cm)
    tl.store(COEF + b * 3 * C + 2 * C + c1, wc, mask=cm)
    tl.store(SUMS + b * 3 * C + c1, a_c, mask=cm)
    tl.store(SUMS + b * 3 * C + C + c1, b_c, mask=cm)
    tl.store(SUMS + b * 3 * C + 2 * C + c1, u * a_c + v * r_c + wc * HW, mask=cm)


@triton.jit
def _dx_rows(DY, X, DX, base, hw, HW, c, cm, C, P, Q, w, bb, u, v, wc, rnd, p, scale, SILU: tl.constexpr,
             DROPOUT: tl.constexpr):
    """dx for rows hw (BLOCK_Q, 1) of the image at offset base."""
    off, m, xhat, dz = _grad_rows(X, DY, base, hw, HW, c, cm, C, P, Q, w, bb, rnd, p, scale, SILU, DROPOUT)
    tl.store(DX + off, (dz * u + xhat * v + wc).to(DX.dtype.element_ty), mask=m)


@triton.jit
def _bwd_apply_kernel(DY, X, SHIFT, W, Bb, SEED, MEAN, RSTD, COEF, DX, HW, HWq, C, Cg, G, p, scale,
                      HAS_SHIFT: tl.constexpr, SILU: tl.constexpr, DROPOUT: tl.constexpr,
                      BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr):
    """dx for rows [4 * BLOCK_Q * t, 4 * BLOCK_Q * (t + 1)) of image b, as four interleaved row sets."""
    b = tl.program_id(0)
    t = tl.program_id(1)
    c = tl.arange(0, BLOCK_C)[None, :]
    cm = c < C
    P, Q, w, bb = _xhat_coef(SHIFT, MEAN, RSTD, W, Bb, b, C, Cg, G, HAS_SHIFT, BLOCK_C)
    u = tl.load(COEF + b * 3 * C + c, mask=cm, other=0.0)
    v = tl.load(COEF + b * 3 * C + C + c, mask=cm, other=0.0)
    wc = tl.load(COEF + b * 3 * C + 2 * C + c, mask=cm, other=0.0)
    gi = t * BLOCK_Q + tl.arange(0, BLOCK_Q)[:, None]
    r0, r1, r2, r3 = _uniforms(SEED, b, gi, c, HWq, C, DROPOUT)
    base = b * HW * C
    _dx_rows(DY, X, DX, base, 4 * gi, HW, c, cm, C, P, Q, w, bb, u, v, wc, r0, p, scale, SILU, DROPOUT)
    _dx_rows(DY, X, DX, base, 4 * gi + 1, HW, c, cm, C, P, Q, w, bb, u, v, wc, r1, p, scale, SILU, DROPOUT)
    _dx_rows(DY, X, DX, base, 4 * gi + 2, HW, c, cm, C, P, Q, w, bb, u, v, wc, r2, p, scale, SILU, DROPOUT)
    _dx_rows(DY, X, DX, base, 4 * gi + 3, HW, c, cm, C, P, Q, w, bb, u, v, wc, r3, p, scale, SILU, DROPOUT)


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


@functools.lru_cache(maxsize=None)
def _sms(device_index: int) -> int:
    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(device_index).multi_processor_count
    return 4  # the Triton interpreter on the CPU


def _plan(B: int, HW: int, C: int, device: torch.device, elems: int, programs_per_sm: int):
    """Tile rows, channel block, number of splits per image and rows per split of the reduction kernels."""
    block_c = _pow2(C)
    block_hw = max(4, min(_pow2(HW), elems // block_c))  # the output passes take rows in fours
    tiles = triton.cdiv(HW, block_hw)
    split = 1
    while split < 16 and split * 2 <= tiles and B * split < programs_per_sm * _sms(device.index or 0):
        split *= 2
    rows = triton.cdiv(triton.cdiv(HW, split), block_hw) * block_hw
    split = triton.cdiv(HW, rows)
    return block_c, block_hw, split, rows


def _nhwc(x: Tensor) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last)


@torch.library.custom_op("ddpm::group_norm_act_fwd", mutates_args=())
def _fwd(x: Tensor, shift: Optional[Tensor], weight: Tensor, bias: Tensor, seed: Optional[Tensor], groups: int,
         eps: float, silu: bool, p: float, tuning: list[int]) -> tuple[Tensor, Tensor, Tensor]:
    B, C, H, W = x.shape
    HW, Cg = H * W, C // groups
    x = _nhwc(x)
    elems, reduce_warps, apply_warps, combine_warps, per_sm = tuning
    block_c, block_hw, split, rows = _plan(B, HW, C, x.device, elems, per_sm)
    f32 = dict(device=x.device, dtype=torch.float32)
    part = torch.empty((B, split, 2, C), **f32)
    sh = shift.contiguous() if shift is not None else x
    _stats_kernel[(B, split)](x, sh, part, HW, C, rows, split, HAS_SHIFT=shift is not None, BLOCK_HW=block_hw,
                              BLOCK_C=block_c, num_warps=reduce_warps)
    mean, rstd = torch.empty((B, groups), **f32), torch.empty((B, groups), **f32)
    coef = torch.empty((B, 2, C), **f32)
    _fwd_combine_kernel[(B,)](part, sh, weight, bias, mean, rstd, coef, C, Cg, groups, split, float(HW * Cg), eps,
                              HAS_SHIFT=shift is not None, BLOCK_C=block_c, GP=_pow2(groups), SP=_pow2(split),
                              num_warps=combine_warps)
    y = torch.empty_like(x)
    drop = p > 0.0
    _fwd_apply_kernel[(B, triton.cdiv(HW, block_hw))](x, coef, seed if drop else coef, y, HW, triton.cdiv(HW, 4), C, p,
                                                      1.0 / (1.0 - p), SILU=silu, DROPOUT=drop,
                                                      BLOCK_Q=block_hw // 4, BLOCK_C=block_c,
                                                      num_warps=apply_warps)
    return y, mean, rstd


@_fwd.register_fake
def _(x, shift, weight, bias, seed, groups, eps, silu, p, tuning):
    B = x.shape[0]
    return (torch.empty_like(x, memory_format=torch.channels_last),
            x.new_empty((B, groups), dtype=torch.float32), x.new_empty((B, groups), dtype=torch.float32))


@torch.library.custom_op("ddpm::group_norm_act_bwd", mutates_args=())
def _bwd(dy: Tensor, x: Tensor, shift: Optional[Tensor], weight: Tensor, bias: Tensor, seed: Optional[Tensor],
         mean: Tensor, rstd: Tensor, groups: int, silu: bool, p: float, tuning: list[int]) -> tuple[Tensor, Tensor]:
    B, C, H, W = x.shape
    HW, Cg = H * W, C // groups
    x, dy = _nhwc(x), _nhwc(dy)
    elems, reduce_warps, apply_warps, combine_warps, per_sm = tuning
    block_c, block_hw, split, rows = _plan(B, HW, C, x.device, elems, per_sm)
    f32 = dict(device=x.device, dtype=torch.float32)
    part = torch.empty((B, split, 3, C), **f32)
    sh = shift.contiguous() if shift is not None else x
    drop = p > 0.0
    sd = seed if drop else mean
    flags = dict(HAS_SHIFT=shift is not None, SILU=silu, DROPOUT=drop, BLOCK_Q=block_hw // 4, BLOCK_C=block_c)
    HWq = triton.cdiv(HW, 4)
    _bwd_reduce_kernel[(B, split)](dy, x, sh, weight, bias, sd, mean, rstd, part, HW, HWq, C, Cg, groups, rows, split,
                                   p, 1.0 / (1.0 - p), **flags, num_warps=reduce_warps)
    coef, sums = torch.empty((B, 3, C), **f32), torch.empty((B, 3, C), **f32)
    _bwd_combine_kernel[(B,)](part, rstd, weight, coef, sums, HW, C, Cg, groups, split, float(HW * Cg),
                              BLOCK_C=block_c, GP=_pow2(groups), SP=_pow2(split),
                              num_warps=combine_warps)
    dx = torch.empty_like(x)
    _bwd_apply_kernel[(B, triton.cdiv(HW, block_hw))](dy, x, sh, weight, bias, sd, mean, rstd, coef, dx, HW, HWq, C,
                                                      Cg, groups, p, 1.0 / (1.0 - p), **flags,
                                                      num_warps=apply_warps)
    return dx, sums  # (B, C, H, W) NHWC; (B, 3, C): per image, the sums of dz, dz * xhat and dx


@_bwd.register_fake
def _(dy, x, shift, weight, bias, seed, mean, rstd, groups, silu, p, tuning):
    return torch.empty_like(x, memory_format=torch.channels_last), x.new_empty((x.shape[0], 3, x.shape[1]),
                                                                                dtype=torch.float32)


def _setup(ctx, inputs, output):
    x, shift, weight, bias, seed, groups, eps, silu, p, tuning = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, shift, weight, bias, seed, mean, rstd)
    ctx.cfg = (groups, silu, p, tuning)


def _backward(ctx, dy, _dmean, _drstd):
    x, shift, weight, bias, seed, mean, rstd = ctx.saved_tensors
    groups, silu, p, tuning = ctx.cfg
    dx, sums = _bwd(dy, x, shift, weight, bias, seed, mean, rstd, groups, silu, p, tuning)
    dbias, dweight = sums[:, 0].sum(0).to(bias.dtype), sums[:, 1].sum(0).to(weight.dtype)
    dshift = sums[:, 2].to(shift.dtype) if shift is not None else None
    return dx, dshift, dweight, dbias, None, None, None, None, None, None


_fwd.register_autograd(_backward, setup_context=_setup)


def group_norm_act(x: Tensor, groups: int, weight: Tensor, bias: Tensor, eps: float, *, shift: Tensor | None = None,
                   silu: bool = True, p: float = 0.0, seed: Tensor | None = None,
                   tuning: tuple[int, int, int, int, int] = (4096, 8, 4, 8, 2)) -> Tensor:
    """``dropout(act(group_norm(x + shift[:, :, None, None])))`` on an NHWC 4-d ``x`` in its own dtype, with
    ``act`` SiLU or the identity and the dropout drawn from ``seed`` (a one-element int tensor on ``x``'s
    device) when ``p > 0``. ``tuning``: the launch parameters (``GroupNormTuning.as_tuple()``). Returns an
    NHWC tensor of ``x``'s dtype."""
    if p > 0.0 and seed is None:
        raise ValueError("group_norm_act needs a seed tensor when p > 0")
    y, _, _ = _fwd(x, shift, weight, bias, seed, int(groups), float(eps), bool(silu), float(p), [int(v) for v in tuning])
    return y
