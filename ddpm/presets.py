"""The package's models by name: the one registry that checkpoints and the command line rebuild
models from (a checkpoint names a class of this registry, never a module to import).

- :data:`MODEL_CLASSES`: class name -> (network class, config dataclass).
- :data:`MODELS`: the command line's ``--model`` choices: ``mlp``, ``unet`` (configured from the
  command line for any square image size) and the named U-Net presets.
- :data:`DEFAULTS`: per data set training defaults (model, batch size, learning rate, warm-up).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from .nets import MLP, MLPConfig, UNet, UNetConfig

MODEL_CLASSES: dict[str, tuple[type, type]] = {"MLP": (MLP, MLPConfig), "UNet": (UNet, UNetConfig)}

# --model choices -> U-Net preset name; "mlp" and "unet" (built from the flags) have none.
MODELS = {
    "mlp": None,
    "unet": None,
    "unet-digits": "digits",
    "unet-fashion-mnist": "fashion-mnist",
    "unet-ddpm-cifar10": "ddpm-cifar10",
}

# Per data set defaults. Toys: the small MLP at lr 1e-3; images: the matching U-Net preset (DDPM used
# lr 2e-4 and batch 128 for CIFAR-10; the small digits U-Net trains faster at 1e-3 on a CPU).
# Data without an entry (a user's file) gets "toy" for points and "image" for images.
DEFAULTS = {
    "toy": dict(model="mlp", batch_size=256, lr=1e-3, warmup=100),
    "image": dict(model="unet", batch_size=128, lr=2e-4, warmup=1000),
    "digits": dict(model="unet-digits", batch_size=128, lr=1e-3, warmup=200),
    "fashion-mnist": dict(model="unet-fashion-mnist", batch_size=128, lr=2e-4, warmup=1000),
    "mnist": dict(model="unet-fashion-mnist", batch_size=128, lr=2e-4, warmup=1000),
    "cifar10": dict(model="unet-ddpm-cifar10", batch_size=128, lr=2e-4, warmup=5000),
}

# Model config fields that may be set from the command line, with their flags.
UNET_FLAGS = {"channels": "--channels", "channel_mults": "--channel-mult", "num_res_blocks": "--res-blocks",
              "attn_resolutions": "--attention-resolutions", "dropout": "--dropout", "groups": "--groups", "heads": "--heads"}
MLP_FLAGS = {"hidden": "--hidden", "layers": "--layers"}


def defaults_for(data_name: str, item_shape: tuple) -> dict:
    """The training defaults for a data set name (or a user file whose items have ``item_shape``)."""
    if data_name in DEFAULTS:
        return DEFAULTS[data_name]
    return DEFAULTS["toy"] if len(item_shape) == 1 else DEFAULTS["image"]


def class_name(model: nn.Module) -> str:
    """The registry name of ``model``'s class (a subclass is saved as its registry base: the
    checkpoint holds that network's weights); ``ValueError`` for any other class."""
    for name, (cls, _) in MODEL_CLASSES.items():
        if isinstance(model, cls):
            return name
    raise ValueError(f"{type(model).__name__} is not one of the package's models ({', '.join(MODEL_CLASSES)}); "
                     "a checkpoint can only rebuild those")


def model_from_config(name: str, config: dict[str, Any]) -> nn.Module:
    """An untrained model of registry class ``name`` built from a plain config dict."""
    if name not in MODEL_CLASSES:
        raise ValueError(f"model class {name!r} is not one of the package's models ({', '.join(MODEL_CLASSES)})")
    cls, cfg_cls = MODEL_CLASSES[name]
    if not isinstance(config, dict):
        raise ValueError(f"the {name} config must be a dict, got {type(config).__name__}")
    known = {f.name for f in dataclasses.fields(cfg_cls)}
    unknown = set(config) - known
    if unknown:
        raise ValueError(f"the {cfg_cls.__name__} has fields {sorted(unknown)} that this version does not know")
    try:
        return cls(cfg_cls(**config))
    except TypeError as e:
        raise ValueError(f"bad {cfg_cls.__name__}: {e}") from None


def _default_unet(image_size: int, in_channels: int) -> UNetConfig:
    """A small U-Net for square images of any size: levels halve the side while it stays even and
    at least 4 (at most 4 levels), 32 channels, attention at the smallest level."""
    mults = [1]
    side = image_size
    while len(mults) < 4 and side % 2 == 0 and side // 2 >= 4:
        side //= 2
        mults.append(2)
    return UNetConfig(image_size=image_size, in_channels=in_channels, channels=32, channel_mults=tuple(mults),
                      num_res_blocks=1, attn_resolutions=(side,), dropout=0.0, groups=8, heads=1)


def build_preset(name: str, item_shape: tuple, *, seed: int, **arch) -> nn.Module:
    """The ``--model`` ``name`` for data items of ``item_shape``, initialised from ``seed``.

    ``arch``: MLP fields (``hidden``, ``layers``) for ``mlp``; U-Net fields (:data:`UNET_FLAGS`)
    for the U-Nets, applied over the preset (``unet``: a small default sized from the data).
    A field that does not apply to the model is a ``ValueError``.
    """
    if name not in MODELS:
        raise ValueError(f"unknown --model {name!r}; choose one of {', '.join(MODELS)}")
    item = tuple(item_shape)
    arch = {k: v for k, v in arch.items() if v is not None}
    allowed = MLP_FLAGS if name == "mlp" else UNET_FLAGS
    wrong = sorted(set(arch) - set(allowed))
    if wrong:
        flags = {**UNET_FLAGS, **MLP_FLAGS}
        raise ValueError(f"{', '.join(flags.get(w, w) for w in wrong)} not for --model {name}; it takes {', '.join(allowed.values())}")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if name == "mlp":
            if len(item) != 1:
                raise ValueError(f"--model mlp is for flat (N, d) data; this data has items of shape {item}: use a U-Net")
            return MLP(MLPConfig(dim=item[0], **arch))
        if len(item) != 3 or item[1] != item[2]:
            raise ValueError(f"--model {name} takes square images (N, C, H, H); this data has items of shape {item}")
        if name == "unet":
            cfg = _default_unet(item[1], item[0])
        else:
            cfg = UNetConfig.preset(MODELS[name])
            want = (cfg.in_channels, cfg.image_size, cfg.image_size)
            if item != want:
                raise ValueError(f"--model {name} takes images of shape {want}; this data has {item}: use --model unet")
        if "channel_mults" in arch and "attn_resolutions" not in arch:  # attention at the new smallest level
            arch["attn_resolutions"] = (cfg.image_size // 2 ** (len(tuple(arch["channel_mults"])) - 1),)
        return UNet(dataclasses.replace(cfg, **arch))
