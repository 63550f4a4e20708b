"""A small CNN classifier per image data set, whose penultimate features define the Frechet
distance of :func:`ddpm.frechet_distance` (Inception weights cannot be downloaded here; a
classifier trained on the data set itself is the usual substitute for MNIST-like data).

Weights ship as ``ddpm/weights/classifier-<data>.safetensors`` with a JSON beside them holding
the test accuracy and the command that reproduces them::

    python -m ddpm.classifier --data digits
    python -m ddpm.classifier --data fashion-mnist --epochs 2
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor, nn
import torch.nn.functional as F

WEIGHTS_DIR = Path(__file__).parent / "weights"
SHAPES = {"digits": (1, 8, 8), "fashion-mnist": (1, 28, 28)}


@dataclass(frozen=True)
class ClassifierConfig:
    in_channels: int = 1  # grey-scale digits and Fashion-MNIST
    image_size: int = 8  # 8 for digits, 28 for Fashion-MNIST
    widths: tuple = (32, 64)  # conv widths: conv-conv-pool, conv-pool
    feature_dim: int = 128  # the penultimate layer: the Frechet distance's feature space
    n_classes: int = 10


CONFIGS = {
    "digits": ClassifierConfig(image_size=8, widths=(32, 64), feature_dim=128),
    "fashion-mnist": ClassifierConfig(image_size=28, widths=(16, 32), feature_dim=128),
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

    def features(self, x: Tensor) -> Tensor:
        return F.relu(self.fc(self.conv(x).flatten(1)))  # (B, feature_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # (B, n_classes) logits


def _check_dataset(dataset: str) -> None:
    if dataset not in SHAPES:
        raise ValueError(f"dataset must be one of {sorted(SHAPES)} (the data sets with a shipped classifier), got {dataset!r}")


def weights_path(dataset: str) -> Path:
    _check_dataset(dataset)
    return WEIGHTS_DIR / f"classifier-{dataset}.safetensors"


@lru_cache(maxsize=4)
def load_classifier(dataset: str = "digits") -> Classifier:
    """The shipped classifier for ``dataset`` (eval mode, CPU). ``FileNotFoundError`` says how to train it."""
    from safetensors.torch import load_file

    path = weights_path(dataset)
    if not path.is_file():
        raise FileNotFoundError(f"no classifier weights at {path}; train them with: python -m ddpm.classifier --data {dataset}")
    model = Classifier(CONFIGS[dataset])
    try:
        model.load_state_dict(load_file(str(path)))
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{path}: cannot load classifier weights ({type(e).__name__}: {e})") from None
    return model.eval().requires_grad_(False)


def _check_images(x: Tensor, dataset: str) -> Tensor:
    _check_dataset(dataset)
    if not isinstance(x, Tensor) or tuple(x.shape[1:]) != SHAPES[dataset] or x.shape[0] < 1:
        raise ValueError(f"images for the {dataset} classifier must have shape (N, {', '.join(map(str, SHAPES[dataset]))}), got {tuple(getattr(x, 'shape', ()))}")
    return x.detach().float().cpu()


@torch.no_grad()
def features(x: Tensor, dataset: str = "digits", batch_size: int = 500) -> Tensor:
    """Penultimate-layer features (N, 128) of images ``x`` in [-1, 1] (clamped to it first)."""
    x = _check_images(x, dataset).clamp(-1, 1)
    model = load_classifier(dataset)
    return torch.cat([model.features(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])


@torch.no_grad()
def predict_proba(x: Tensor, dataset: str = "digits", batch_size: int = 500) -> Tensor:
    """Class probabilities (N, 10) of images ``x`` in [-1, 1]."""
    x = _check_images(x, dataset).clamp(-1, 1)
    model = load_classifier(dataset)
    return torch.cat([model(x[i : i + batch_size]).softmax(1) for i in range(0, x.shape[0], batch_size)])


def confident_fraction(x: Tensor, dataset: str = "digits", threshold: float = 0.9) -> float:
    """Fraction of images the classifier assigns to one class with probability > ``threshold``."""
    return float((predict_proba(x, dataset).max(1).values > threshold).float().mean())


@torch.no_grad()
def accuracy(model: Classifier, x: Tensor, y: Tensor, batch_size: int = 1000) -> float:
    model.eval()
    correct = sum(int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum()) for i in range(0, x.shape[0], batch_size))
    return correct / x.shape[0]


def train_classifier(dataset: str = "digits", epochs: int | None = None, seed: int = 0, data_dir=None,
                     batch_size: int = 64, lr: float = 1e-3, progress: bool = True) -> tuple[Classifier, dict]:
    """Train the classifier for ``dataset`` on its training split; return it and a report with the
    test accuracy. Deterministic on a given machine for a given ``seed`` and thread count."""
    from .data import load_dataset

    _check_dataset(dataset)
    epochs = epochs if epochs is not None else {"digits": 30, "fashion-mnist": 2}[dataset]
    xtr, ytr = load_dataset(dataset, data_dir=data_dir, split="train", labels=True)
    xte, yte = load_dataset(dataset, data_dir=data_dir, split="test", labels=True)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Classifier(CONFIGS[dataset])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((xtr.shape[0] + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr * 3, total_steps=steps)
    t0 = time.perf_counter()
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(xtr.shape[0], generator=gen)
        for i in range(0, xtr.shape[0], batch_size):
            idx = perm[i : i + batch_size]
            xb = xtr[idx]
            # Light augmentation: shift by up to one pixel (digits are not centred identically).
            if dataset == "digits":
                sx, sy = torch.randint(-1, 2, (2,), generator=gen).tolist()
                xb = torch.roll(xb, shifts=(sx, sy), dims=(2, 3))
            loss = F.cross_entropy(model(xb), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if progress:
            print(f"epoch {ep + 1}/{epochs}: loss {loss.item():.4f}, test accuracy {accuracy(model, xte, yte):.4f}", file=sys.stderr)
    seconds = time.perf_counter() - t0
    report = {
        "dataset": dataset,
        "test_accuracy": accuracy(model, xte, yte),
        "train_accuracy": accuracy(model, xtr, ytr),
        "n_train": int(xtr.shape[0]),
        "n_test": int(xte.shape[0]),
        "epochs": epochs,
        "seed": seed,
        "train_seconds": round(seconds, 1),
        "torch_threads": torch.get_num_threads(),
        "config": asdict(CONFIGS[dataset]),
        "command": f"python -m ddpm.classifier --data {dataset} --epochs {epochs} --seed {seed}",
        "torch_version": torch.__version__,
        "machine": platform.machine(),
    }
    return model.eval(), report


def save_classifier(model: Classifier, report: dict, dataset: str, folder=None) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder) if folder is not None else WEIGHTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"classifier-{dataset}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    (folder / f"classifier-{dataset}.json").write_text(json.dumps(report, indent=2) + "\n")
    load_classifier.cache_clear()
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ddpm.classifier", description="Train the classifier behind ddpm.frechet_distance.")
    p.add_argument("--data", default="digits", choices=sorted(SHAPES))
    p.add_argument("--epochs", type=int, default=None, help="default: 30 for digits, 2 for fashion-mnist")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: reproducible bit for bit)")
    p.add_argument("--out", default=None, help=f"folder for the weights (default: {WEIGHTS_DIR})")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    try:
        model, report = train_classifier(a.data, a.epochs, a.seed, a.data_dir)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    path = save_classifier(model, report, a.data, a.out)
    print(f"test accuracy {report['test_accuracy']:.4f}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
