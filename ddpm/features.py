"""The classifier's feature API (book chapters "Training and sampling" and "DDIM"): penultimate-layer
features for the Frechet distance, class probabilities and the confidently-classified fraction.
``classifier`` is anything :func:`ddpm.classifier.load_classifier` takes (a data set name with shipped
weights, a weight file or folder, or a :class:`~ddpm.classifier.Classifier`)."""

from __future__ import annotations

import torch
from torch import Tensor

from .classifier import Classifier, load_classifier


def _check_images(x: Tensor, model: Classifier) -> Tensor:
    shape = model.item_shape
    if not isinstance(x, Tensor) or tuple(x.shape[1:]) != shape or x.shape[0] < 1:
        raise ValueError(f"images for this classifier must have shape (N, {', '.join(map(str, shape))}), got {tuple(getattr(x, 'shape', ()))}")
    x = x.detach().float().cpu()
    if not torch.isfinite(x).all():
        raise ValueError("images contain NaN or inf")
    return x.clamp(-1, 1)


@torch.no_grad()
def features(x: Tensor, classifier="digits", batch_size: int = 500) -> Tensor:
    """Penultimate-layer features (N, 128) of images ``x`` in [-1, 1] (clamped to it first)."""
    model = load_classifier(classifier)
    x = _check_images(x, model)
    return torch.cat([model.features(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])


@torch.no_grad()
def predict_proba(x: Tensor, classifier="digits", batch_size: int = 500) -> Tensor:
    """Class probabilities (N, 10) of images ``x`` in [-1, 1]."""
    model = load_classifier(classifier)
    x = _check_images(x, model)
    return torch.cat([model(x[i : i + batch_size]).softmax(1) for i in range(0, x.shape[0], batch_size)])


def confident_fraction(x: Tensor, classifier="digits", threshold: float = 0.9) -> float:
    """Fraction of images the classifier assigns to one class with probability > ``threshold``.
    Read it only beside the same fraction for Gaussian noise: a small classifier is confident about
    much noise too."""
    return float((predict_proba(x, classifier).max(1).values > threshold).float().mean())
