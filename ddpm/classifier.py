"""A small CNN classifier per image data set, whose penultimate features define the Frechet
distance of :func:`ddpm.frechet_distance` (Inception weights cannot be downloaded here; a
classifier trained on the data set itself is the usual substitute for MNIST-like data).

This module is the network and its weight files; :mod:`ddpm.features` uses it, and
:mod:`ddpm.classifier_training` trains it. Weights for ``digits`` and ``fashion-mnist`` ship as
``ddpm/weights/classifier-<data>.safetensors`` with a JSON beside them holding the config, the
test accuracy and the command that reproduces them; for other image sets train your own::

    python -m ddpm train-classifier --data mnist --out classifiers
    python -m ddpm evaluate --checkpoint runs/mnist --classifier classifiers
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from torch import Tensor, nn
import torch.nn.functional as F

from ._io import atomic_write_bytes

WEIGHTS_DIR = Path(__file__).parent / "weights"  # the shipped weights; nothing writes here at run time
SHIPPED = ("digits", "fashion-mnist")


@dataclass(frozen=True)
class ClassifierConfig:
    in_channels: int = 1  # grey-scale digits and (Fashion-)MNIST; 3 for CIFAR-10
    image_size: int = 8  # square side: 8 for digits, 28 for (Fashion-)MNIST, 32 for CIFAR-10; divisible by 4
    widths: tuple = (32, 64)  # conv widths: conv-conv-pool, conv-pool
    feature_dim: int = 128  # the penultimate layer: the Frechet distance's feature space
    n_classes: int = 10


# The classifier of each labelled image set (the ones ``python -m ddpm train-classifier`` trains).
CONFIGS = {
    "digits": ClassifierConfig(image_size=8, widths=(32, 64), feature_dim=128),
    "fashion-mnist": ClassifierConfig(image_size=28, widths=(16, 32), feature_dim=128),
    "mnist": ClassifierConfig(image_size=28, widths=(16, 32), feature_dim=128),
    "cifar10": ClassifierConfig(in_channels=3, image_size=32, widths=(32, 64), feature_dim=128),
}


class Classifier(nn.Module):
    """conv3x3-ReLU, conv3x3-ReLU, maxpool2, conv3x3-ReLU, maxpool2, Linear-ReLU (features), Linear (logits)."""

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        a, b = config.widths
        self.conv = nn.Sequential(
            nn.Conv2d(config.in_channels, a, 3, padding=1), nn.ReLU(),
            nn.Conv2d(a, a, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(a, b, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        side = config.image_size // 4
        self.fc = nn.Linear(b * side * side, config.feature_dim)
        self.head = nn.Linear(config.feature_dim, config.n_classes)
        self.source: Path | None = None  # the weight file it was loaded from
        self.sha256: str = ""  # that file's SHA-256 (hex)

    @property
    def item_shape(self) -> tuple:
        return (self.config.in_channels, self.config.image_size, self.config.image_size)

    def features(self, x: Tensor) -> Tensor:
        return F.relu(self.fc(self.conv(x).flatten(1)))  # (B, feature_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # (B, n_classes) logits


def check_dataset(dataset: str) -> None:
    if dataset not in CONFIGS:
        raise ValueError(f"there is a classifier only for the labelled image sets {sorted(CONFIGS)}, not {dataset!r}")


def weights_file(spec) -> Path:
    """The weight file for ``spec``: a data set name (the shipped weights), a ``.safetensors`` file,
    or a folder holding exactly one ``classifier-*.safetensors``."""
    if isinstance(spec, str) and spec in CONFIGS and os.sep not in spec:
        return WEIGHTS_DIR / f"classifier-{spec}.safetensors"
    p = Path(spec)
    if p.is_dir():
        found = sorted(p.glob("classifier-*.safetensors"))
        if len(found) != 1:
            raise FileNotFoundError(f"{p}: expected one classifier-<data>.safetensors in this folder, found {len(found)}")
        return found[0]
    return p


def train_command(dataset: str) -> str:
    """The command that trains a classifier for ``dataset`` into a folder of the user's."""
    return f"python -m ddpm train-classifier --data {dataset} --out classifiers"


@lru_cache(maxsize=8)
def _load(path: str, mtime: float) -> Classifier:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    meta_path = p.with_suffix(".json")
    try:
        meta = json.loads(meta_path.read_text())
        cfg = meta["config"]
        config = ClassifierConfig(**{**cfg, "widths": tuple(cfg["widths"])})
    except FileNotFoundError:
        raise FileNotFoundError(f"{meta_path} not found: a classifier's JSON (its config) must lie beside its weights") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{meta_path}: not a classifier description ({type(e).__name__}: {e})") from None
    raw = p.read_bytes()
    model = Classifier(config)
    try:
        model.load_state_dict(load_file(str(p)))
    except (SafetensorError, RuntimeError, OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"{p}: cannot load classifier weights ({type(e).__name__}: {first})") from None
    model.source, model.sha256 = p, hashlib.sha256(raw).hexdigest()
    return model.eval().requires_grad_(False)


def load_classifier(spec="digits") -> Classifier:
    """The classifier ``spec`` names (eval mode, CPU): a data set with shipped weights
    (:data:`SHIPPED`), a ``.safetensors`` file (its ``.json`` beside it), or a folder holding one.
    ``FileNotFoundError`` says how to train one. ``.source`` and ``.sha256`` identify the file."""
    if isinstance(spec, Classifier):
        return spec
    if isinstance(spec, str) and spec in CONFIGS and spec not in SHIPPED:
        raise FileNotFoundError(f"no classifier ships for {spec}; train one with `{train_command(spec)}` "
                                "and pass its folder (--classifier classifiers)")
    p = weights_file(spec)
    if not p.is_file():
        raise FileNotFoundError(f"no classifier weights at {p}; train them with `{train_command(p.stem.removeprefix('classifier-'))}`")
    return _load(str(p.resolve()), p.stat().st_mtime)


def save_classifier(model: Classifier, report: dict, dataset: str, folder) -> Path:
    """Write ``classifier-<dataset>.safetensors`` and its JSON into ``folder`` (created), atomically.
    ``folder`` is required: nothing is written into the installed package."""
    from safetensors.torch import save


    if folder is None:
        raise ValueError("save_classifier needs a folder (the shipped weights are never overwritten)")
    folder = Path(folder)
    if folder.resolve() == WEIGHTS_DIR.resolve():
        raise ValueError(f"{folder} holds the package's shipped classifiers; choose another folder")
    path = folder / f"classifier-{dataset}.safetensors"
    blob = save({k: v.contiguous() for k, v in model.state_dict().items()})
    atomic_write_bytes(folder / f"classifier-{dataset}.json", (json.dumps(report, indent=2) + "\n").encode())
    atomic_write_bytes(path, blob)
    return path
