"""Data sets by name, all scaled to [-1, 1] (book chapter "Training and sampling"): one entry point,
:func:`load_dataset`, over the 2-D toys (:mod:`ddpm.toys`) and the files (:mod:`ddpm.datafiles`).

- 2-D toys: ``moons``, ``swissroll``, ``8gaussians``, ``checkerboard``, ``mixture``.
- Images: ``digits`` (ships with scikit-learn), ``fashion-mnist``, ``mnist``, ``cifar10``.
- Your own data: a ``.npy``, ``.npz``, ``.csv`` or ``.txt`` file, or a folder of PNG/JPEG images.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from .datafiles import (  # noqa: F401 - the public names of the data layer live here too
    ARRAY_SUFFIXES,
    DATA_ENV,
    FASHION_MNIST_DIR,
    IMAGE_SUFFIXES,
    _HOW_TO_GET,
    load_array,
    load_cifar10,
    load_digits,
    load_image_folder,
    load_mnist_like,
    read_idx,
    rescale,
    write_idx,
)
from .toys import DEFAULT_TOY_N, TOYS, _check_n, make_checkerboard, make_moons, make_swissroll, make_toy, toy_mixture  # noqa: F401

IMAGES = ("digits", "fashion-mnist", "mnist", "cifar10")
DATASETS = TOYS + IMAGES


def is_file_spec(name) -> bool:
    """True if ``name`` names a user's data (an array file or a folder of images), not a built-in set."""
    name = os.fspath(name)
    return name not in DATASETS and (name.endswith(ARRAY_SUFFIXES) or os.sep in name or Path(name).exists())


def data_digest(name) -> str | None:
    """The SHA-256 (hex) of a user's data: the bytes of an array file, or the names and bytes of the
    images of a folder (the files :func:`load_image_folder` reads); ``None`` for a built-in set.
    A run records it, so that resuming notices data changed in place and accepts a file that moved."""
    if not is_file_spec(name):
        return None
    path = Path(os.fspath(name)).expanduser()
    h = hashlib.sha256()
    try:
        if path.is_dir():
            for q in sorted(q for q in path.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file()):
                h.update(q.name.encode() + b"\0")
                h.update(hashlib.sha256(q.read_bytes()).digest())
        else:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    except FileNotFoundError:
        raise FileNotFoundError(2, "data file not found", str(path)) from None
    return h.hexdigest()


def load_dataset(
    name: str,
    n: int | None = None,
    data_dir=None,
    *,
    generator: torch.Generator | None = None,
    split: str = "train",
    labels: bool = False,
):
    """The data set ``name`` as a float32 tensor in [-1, 1] of shape ``(N, 2)`` or ``(N, C, H, W)``.

    ``name``: one of ``DATASETS``, a path to a ``.npy/.npz/.csv/.txt`` file (:func:`load_array`) or a
    folder of PNG/JPEG images (:func:`load_image_folder`).
    ``n``: for a toy, the number of points drawn (default ``DEFAULT_TOY_N``); for images, keep ``n``
    of them (a random subset drawn with ``generator`` if given, else the first ``n``).
    ``data_dir``: where to look for ``mnist``, ``fashion-mnist`` and ``cifar10`` files.
    ``split``: ``"train"`` or ``"test"`` for image sets (digits: a fixed 80/20 split; ``"all"`` too).
    ``labels=True`` returns ``(x, y)`` for image sets.
    """
    n = _check_n(n)
    if not isinstance(name, (str, os.PathLike)):
        raise ValueError(f"name must be a data set name {DATASETS} or a file path, got {type(name).__name__}")
    name = os.fspath(name)
    y = None
    if name in TOYS:
        if labels:
            raise ValueError(f"labels=True needs an image data set {IMAGES}; {name!r} is a 2-D toy")
        return make_toy(name, n or DEFAULT_TOY_N, generator=generator)
    if name == "digits":
        out = load_digits("all" if split == "all" else split, labels=labels)
    elif name in ("mnist", "fashion-mnist"):
        out = load_mnist_like(name, data_dir, split, labels=labels)
    elif name == "cifar10":
        if data_dir is None:
            cands = ([Path(os.environ[DATA_ENV]) / "cifar10"] if os.environ.get(DATA_ENV) else []) + [Path("data/cifar10"), Path.home() / ".cache/ddpm/cifar10"]
            data_dir = next((c for c in cands if (c / "data_batch_1").is_file() or (c / "cifar-10-batches-py/data_batch_1").is_file()), None)
            if data_dir is None:
                raise FileNotFoundError(f"cifar10: data_batch_1 not found; looked in: {', '.join(map(str, cands))}. To get it: {_HOW_TO_GET['cifar10']}")
        out = load_cifar10(data_dir, split, labels=labels)
    elif is_file_spec(name):
        if labels:
            raise ValueError("labels=True is not available for a data file")
        out = load_image_folder(name) if Path(name).is_dir() else load_array(name)
    else:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}, or give a .npy/.npz/.csv/.txt file or a folder of PNG/JPEG images")
    x, y = out if labels else (out, None)
    if n is not None and n < x.shape[0]:
        idx = torch.randperm(x.shape[0], generator=generator)[:n] if generator is not None else torch.arange(n)
        x = x[idx]
        y = y[idx] if y is not None else None
    return (x, y) if labels else x


