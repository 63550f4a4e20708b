"""Training the classifier behind the Frechet distance (:mod:`ddpm.classifier`) on a labelled image
set's training split; ``python -m ddpm train-classifier`` calls :func:`train_classifier`."""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import asdict

import torch
from torch import Tensor
import torch.nn.functional as F

from .classifier import CONFIGS, Classifier, check_dataset
from .data import load_dataset

EPOCHS = {"digits": 30, "fashion-mnist": 2, "mnist": 2, "cifar10": 10}  # the shipped weights' epochs


@torch.no_grad()
def accuracy(model: Classifier, x: Tensor, y: Tensor, batch_size: int = 1000) -> float:
    model.eval()
    correct = sum(int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum()) for i in range(0, x.shape[0], batch_size))
    return correct / x.shape[0]


def train_classifier(dataset: str = "digits", epochs: int | None = None, data_dir=None, *, seed: int = 0,
                     batch_size: int = 64, lr: float = 1e-3, progress: bool = True) -> tuple[Classifier, dict]:
    """Train the classifier for ``dataset`` on its training split; return it and a report with the
    test accuracy. Deterministic on a given machine for a given ``seed`` and thread count."""
    check_dataset(dataset)
    epochs = EPOCHS[dataset] if epochs is None else epochs
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
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
        "command": f"python -m ddpm train-classifier --data {dataset} --epochs {epochs} --seed {seed} --threads 1 --out FOLDER",
        "torch_version": torch.__version__,
        "machine": platform.machine(),
    }
    return model.eval(), report
