"""The DDPM U-Net (Ho et al. 2020, appendix B; a PixelCNN++ / Wide-ResNet backbone with self-attention).

Book: chapter 6, "Training and sampling". The network maps a noisy image
``x_t`` and its time index ``t`` to a prediction of the noise, ``eps_theta(x_t, t)`` (DDPM eq. 11-14).

Layout (for ``channel_mults = (1, 2, 2, 2)`` at 32x32, the paper's CIFAR-10 network)::

    conv_in                                          32x32, ch
    down:  [ResBlock (+Attn)] x num_res_blocks, Down per level
           (every output kept as a skip)
    mid:   ResBlock, Attn, ResBlock                  4x4
    up:    [ResBlock(cat skip) (+Attn)] x (num_res_blocks + 1), Up
    out:   GroupNorm, SiLU, conv_out                 32x32, in_channels

Each ResBlock: GroupNorm, SiLU, conv3x3, + Linear(SiLU(temb)), GroupNorm, SiLU, dropout, conv3x3, plus a
1x1 shortcut where the channel count changes. Attention: GroupNorm, one 1x1 conv to q, k, v,
``F.scaled_dot_product_attention`` (flash / memory-efficient kernels on the GPU), 1x1 projection, residual.
As in Ho's code, the last conv of each residual branch and the output conv start at zero, so that a fresh
network is the identity on its residual paths and predicts eps = 0.

This file is the network as the paper describes it, in PyTorch's plain layers. The appendix "The package on a
GPU" runs the same network, with the same weights, through faster kernels (``ddpm.gpu.accelerate``).
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._utils import net_times as _net_times
from .embedding import sinusoidal_embedding

__all__ = ["UNetConfig", "UNet", "PRESETS"]


@dataclass(frozen=True)
class UNetConfig:
    """Hyper-parameters of :class:`UNet`. ``UNetConfig.preset(name)`` gives the named ones."""

    image_size: int = 32  # side of the square input; must be divisible by 2 ** (len(channel_mults) - 1)
    in_channels: int = 3  # 3 for RGB, 1 for grey-scale; the output has as many channels (it is eps)
    channels: int = 128  # width of the first level (Ho et al.: 128 for CIFAR-10)
    channel_mults: tuple[int, ...] = (1, 2, 2, 2)  # width multiplier per level; one level per resolution
    num_res_blocks: int = 2  # residual blocks per level on the way down (one more on the way up)
    attn_resolutions: tuple[int, ...] = (16,)  # resolutions that get self-attention (Ho: 16x16 only)
    dropout: float = 0.1  # inside every residual block (Ho: 0.1 on CIFAR-10, 0 on the larger sets)
    groups: int = 32  # GroupNorm groups (Wu & He 2018's default; must divide every width)
    norm_eps: float = 1e-6  # GroupNorm epsilon, as in Ho's TensorFlow code
    time_embed_dim: int | None = None  # None: 4 * channels, as in Ho's code
    heads: int = 1  # attention heads; Ho uses one head over all channels of the level
    mid_attention: bool = True  # the self-attention between the two middle residual blocks

    def __post_init__(self):
        def pos_int(name, v):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")

        for name in ("image_size", "in_channels", "channels", "groups", "heads"):
            pos_int(name, getattr(self, name))
        if self.num_res_blocks is None or isinstance(self.num_res_blocks, bool) or not isinstance(
            self.num_res_blocks, numbers.Integral
        ) or self.num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be an int >= 1, got {self.num_res_blocks!r}")
        mults = tuple(self.channel_mults)
        if len(mults) < 1:
            raise ValueError("channel_mults must have at least one level, got ()")
        for m in mults:
            pos_int("every entry of channel_mults", m)
        object.__setattr__(self, "channel_mults", mults)
        object.__setattr__(self, "attn_resolutions", tuple(int(r) for r in self.attn_resolutions))
        if self.time_embed_dim is not None:
            pos_int("time_embed_dim", self.time_embed_dim)
        if not (isinstance(self.dropout, numbers.Real) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not (isinstance(self.norm_eps, numbers.Real) and self.norm_eps > 0):
            raise ValueError(f"norm_eps must be > 0, got {self.norm_eps!r}")
        factor = 2 ** (len(mults) - 1)
        if self.image_size % factor:
            raise ValueError(
                f"image_size must be divisible by 2 ** (len(channel_mults) - 1) = {factor}, got {self.image_size}"
            )
        for m in mults:
            w = self.channels * m
            if w % self.groups:
                raise ValueError(f"groups must divide every level width (channels * mult = {w}), got {self.groups}")
        resolutions = [self.image_size // 2**i for i in range(len(mults))]
        for r in self.attn_resolutions:
            if r not in resolutions:
                raise ValueError(f"attn_resolutions must be among the level resolutions {resolutions}, got {r}")
        attn_widths = [self.channels * m for m, r in zip(mults, resolutions) if r in self.attn_resolutions]
        if self.mid_attention:
            attn_widths.append(self.channels * mults[-1])
        for w in attn_widths:
            if w % self.heads:
                raise ValueError(f"heads must divide the width of every attention layer ({w}), got {self.heads}")

    @property
    def temb_dim(self) -> int:
        return self.time_embed_dim if self.time_embed_dim is not None else 4 * self.channels

    @classmethod
    def preset(cls, name: str) -> "UNetConfig":
        """The named configuration: one of ``PRESETS`` (ValueError otherwise)."""
        if name not in PRESETS:
            raise ValueError(f"unknown U-Net preset {name!r}; choose one of {sorted(PRESETS)}")
        return PRESETS[name]

    def replace(self, **changes) -> "UNetConfig":
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, UNetConfig] = {
    # scikit-learn's 8x8 digits: 2 levels (8x8, 4x4), attention at 4x4; 0.70M parameters, trains on a
    # 2-core CPU in minutes. Small groups so each GroupNorm group still holds several channels.
    "digits": UNetConfig(
        image_size=8, in_channels=1, channels=32, channel_mults=(1, 2), num_res_blocks=1,
        attn_resolutions=(4,), dropout=0.0, groups=8, heads=1,
    ),
    # Fashion-MNIST 28x28: 3 levels (28, 14, 7), attention at 7x7; 4.44M parameters, 1.51 GFLOP a forward:
    # sized so that it trains to good samples on one H100 in minutes and 10,000 samples x 1,540 network
    # calls (DDPM-1000 plus the DDIM table) fit one 10-minute command. One res block per level buys speed.
    "fashion-mnist": UNetConfig(
        image_size=28, in_channels=1, channels=64, channel_mults=(1, 2, 2), num_res_blocks=1,
        attn_resolutions=(7,), dropout=0.1, groups=32, heads=4,
    ),
    # Ho et al. 2020's CIFAR-10 network (their released code; diffusers' google/ddpm-cifar10-32):
    # ch 128, mults 1,2,2,2, two res blocks, attention at 16x16, dropout 0.1: 35,746,307 parameters.
    "ddpm-cifar10": UNetConfig(
        image_size=32, in_channels=3, channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=2,
        attn_resolutions=(16,), dropout=0.1, groups=32, heads=1,
    ),
}


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GroupNorm, SiLU, conv3x3, + time projection, GroupNorm, SiLU, dropout, conv3x3; shortcut (Ho, app. B)."""

    def __init__(self, c_in: int, c_out: int, temb_dim: int, dropout: float, groups: int, eps: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in, eps=eps)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.temb_proj = nn.Linear(temb_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, c_out, H, W)
        h = h + self.temb_proj(temb)[:, :, None, None]  # + the time projection (temb is already SiLU'd: (B, c_out))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))  # (B, c_out, H, W)
        return self.skip(x) + h


class Attention(nn.Module):
    """Self-attention over the H*W positions, through ``F.scaled_dot_product_attention`` (Ho, app. B)."""

    def __init__(self, c: int, heads: int, groups: int, eps: float):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, c, eps=eps)
        self.qkv = nn.Conv2d(c, 3 * c, 1)  # q, k, v in one 1x1 conv (Ho's three NIN layers)
        self.proj = _zero(nn.Conv2d(c, c, 1))

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        B, C, H, W = x.shape
        nh, d = self.heads, C // self.heads
        qkv = self.qkv(self.norm(x))  # (B, 3C, H, W)
        qkv = qkv.reshape(B, 3, nh, d, H * W).permute(1, 0, 2, 4, 3)  # (3, B, nh, HW, d)
        h = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, nh, HW, d): softmax(q k^T / sqrt(d)) v
        h = h.transpose(-1, -2).reshape(B, C, H, W)  # (B, C, H, W)
        return x + self.proj(h)


class Downsample(nn.Module):
    """3x3 convolution with stride 2 (Ho's ``resamp_with_conv``)."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=1)

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        return self.conv(x)  # (B, C, H/2, W/2)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 convolution."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))  # (B, C, 2H, 2W)


class UNet(nn.Module):
    """eps-prediction U-Net: ``UNet(config)(x (B, C, H, W), t (B,)) -> eps_hat (B, C, H, W)``.

    ``t`` is the time index of the equations: an int, or an integer tensor of shape ``()`` or ``(B,)``,
    ``>= 0`` (``1..T`` in DDPM use; the network does not know ``T``), checked by ``ddpm._utils.check_t``. ``UNet.preset(name)`` builds a named configuration (``PRESETS``).
    """

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        cfg = config if config is not None else UNetConfig()
        if not isinstance(cfg, UNetConfig):
            raise ValueError(f"config must be a UNetConfig, got {type(cfg).__name__}")
        self.config = cfg
        ch, td, g, e = cfg.channels, cfg.temb_dim, cfg.groups, cfg.norm_eps
        self.time_embed = nn.Sequential(nn.Linear(ch, td), nn.SiLU(), nn.Linear(td, td))
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)

        # Down path: every module's output is a skip for the up path.
        self.down = nn.ModuleList()
        skips = [ch]
        cur, res = ch, cfg.image_size
        n_levels = len(cfg.channel_mults)
        for level, mult in enumerate(cfg.channel_mults):
            out = ch * mult
            for _ in range(cfg.num_res_blocks):
                block = nn.ModuleList([ResBlock(cur, out, td, cfg.dropout, g, e)])
                if res in cfg.attn_resolutions:
                    block.append(Attention(out, cfg.heads, g, e))
                self.down.append(block)
                cur = out
                skips.append(cur)
            if level != n_levels - 1:
                self.down.append(nn.ModuleList([Downsample(cur)]))
                res //= 2
                skips.append(cur)

        self.mid = nn.ModuleList([ResBlock(cur, cur, td, cfg.dropout, g, e)])
        if cfg.mid_attention:
            self.mid.append(Attention(cur, cfg.heads, g, e))
        self.mid.append(ResBlock(cur, cur, td, cfg.dropout, g, e))

        # Up path: num_res_blocks + 1 blocks per level, each eating one skip.
        self.up = nn.ModuleList()
        for level in reversed(range(n_levels)):
            out = ch * cfg.channel_mults[level]
            for i in range(cfg.num_res_blocks + 1):
                block = nn.ModuleList([ResBlock(cur + skips.pop(), out, td, cfg.dropout, g, e)])
                cur = out
                if res in cfg.attn_resolutions:
                    block.append(Attention(cur, cfg.heads, g, e))
                if level != 0 and i == cfg.num_res_blocks:
                    block.append(Upsample(cur))
                    res *= 2
                self.up.append(block)
        assert not skips

        self.norm_out = nn.GroupNorm(g, cur, eps=e)
        self.conv_out = _zero(nn.Conv2d(cur, cfg.in_channels, 3, padding=1))

    @classmethod
    def preset(cls, name: str) -> "UNet":
        """``UNet(UNetConfig.preset(name))``; ``name`` in ``PRESETS`` (ValueError lists them)."""
        return cls(UNetConfig.preset(name))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _times(self, t, B: int, device) -> Tensor:
        return _net_times(t, B, device)

    def forward(self, x: Tensor, t) -> Tensor:
        cfg = self.config
        if x.dim() != 4 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"x must have shape (B, {cfg.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[-1] % 2 ** (len(cfg.channel_mults) - 1) or x.shape[-2] % 2 ** (len(cfg.channel_mults) - 1):
            raise ValueError(
                f"x's height and width must be divisible by {2 ** (len(cfg.channel_mults) - 1)}, got {tuple(x.shape)}"
            )
        t = self._times(t, x.shape[0], x.device)  # (B,)
        temb = self.time_embed(sinusoidal_embedding(t, cfg.channels))  # (B, temb_dim)
        temb = F.silu(temb)  # every ResBlock projects SiLU(temb) (Ho's dense(nonlinearity(temb)))

        h = self.conv_in(x)  # (B, ch, H, W)
        hs = [h]
        for block in self.down:
            for layer in block:
                h = layer(h, temb)
            hs.append(h)  # one skip per down module
        for layer in self.mid:
            h = layer(h, temb)  # (B, ch * mults[-1], H / 2^(L-1), W / 2^(L-1))
        for block in self.up:
            h = torch.cat([h, hs.pop()], dim=1)  # (B, c + c_skip, h, w)
            for layer in block:
                h = layer(h, temb)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, C, H, W)
