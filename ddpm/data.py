"""Data sets, all scaled to [-1, 1] (book chapter 6, "Training and sampling").

- 2-D toys, drawn fresh with a ``generator``: ``moons``, ``swissroll``, ``8gaussians``,
  ``checkerboard``, ``mixture`` (the last two Gaussian ones are :class:`ddpm.GaussianMixture`
  objects, so their exact ``E[eps | x_t]`` is known: see :func:`toy_mixture`).
- ``digits``: scikit-learn's 8x8 digits (1797 images, ships with scikit-learn), ``(N, 1, 8, 8)``.
- ``fashion-mnist`` and ``mnist`` from IDX files, gzipped or not (:func:`read_idx`), ``(N, 1, 28, 28)``;
  Fashion-MNIST is looked for first where Debian's ``dataset-fashion-mnist`` package puts it.
- ``cifar10`` from its python pickle batches in a folder (:func:`load_cifar10`), ``(N, 3, 32, 32)``.
- Your own files: :func:`load_array` (``.npy``, ``.npz``, ``.csv``, ``.txt``), also reachable as
  ``load_dataset("path/to/file.npy")``.

Images map 0..255 to [-1, 1] as in DDPM section 3.3 (``x / 127.5 - 1``). The Gaussian toys
have tails: they are scaled so that almost all of their mass lies in [-1, 1], never clipped
(clipping would change the distribution whose exact score the testbed knows).
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import struct
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from .testbed import GaussianMixture

TOYS = ("moons", "swissroll", "8gaussians", "checkerboard", "mixture")
IMAGES = ("digits", "fashion-mnist", "mnist", "cifar10")
DATASETS = TOYS + IMAGES
DEFAULT_TOY_N = 10_000  # points drawn for a toy when n is not given: plenty for a 2-D MLP

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist package
DATA_ENV = "DDPM_DATA"  # environment variable: a folder holding <name>/ sub-folders


def _check_n(n) -> int | None:
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an int >= 1 or None, got {n!r}")
    return int(n)


def _rand(shape, generator) -> Tensor:
    return torch.rand(shape, generator=generator, dtype=torch.float64)


def _randn(shape, generator) -> Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float64)


# ---------------------------------------------------------------------------- 2-D toys
def make_moons(n: int, noise: float = 0.05, generator: torch.Generator | None = None) -> Tensor:
    """Two interleaved half circles (scikit-learn's ``make_moons`` shape), scaled into [-1, 1]^2.

    The noiseless moons span x in [-1, 2], y in [-0.5, 1]; they are centred and divided by 1.6
    (same factor on both axes, so the shape is kept). ``noise`` is the Gaussian std before scaling.
    """
    n = _check_n(n)
    half = n // 2
    a = math.pi * _rand(n, generator)  # (n,)
    upper = torch.arange(n) < half
    x = torch.where(upper, a.cos(), 1 - a.cos())
    y = torch.where(upper, a.sin(), 0.5 - a.sin())
    pts = torch.stack([x, y], 1) + noise * _randn((n, 2), generator)  # (n, 2)
    pts = (pts - torch.tensor([0.5, 0.25], dtype=torch.float64)) / 1.6
    return pts[torch.randperm(n, generator=generator)].float()


def make_swissroll(n: int, noise: float = 0.3, generator: torch.Generator | None = None) -> Tensor:
    """The 2-D swiss roll ``r (cos r, sin r)``, ``r ~ U[1.5 pi, 4.5 pi]``, divided by 15 (so in ~[-0.95, 0.95]^2).

    ``noise`` is the Gaussian std before scaling (0.3 -> 0.02 after).
    """
    n = _check_n(n)
    r = 1.5 * math.pi * (1 + 2 * _rand(n, generator))  # (n,)
    pts = torch.stack([r * r.cos(), r * r.sin()], 1) + noise * _randn((n, 2), generator)
    return (pts / 15.0).float()


def make_checkerboard(n: int, generator: torch.Generator | None = None) -> Tensor:
    """Uniform on the 8 dark squares of a 4x4 board covering [-1, 1]^2 (the FFJORD toy, halved)."""
    n = _check_n(n)
    x1 = 4 * _rand(n, generator) - 2  # (n,) in [-2, 2)
    x2 = _rand(n, generator) - 2 * torch.randint(0, 2, (n,), generator=generator).double()
    x2 = x2 + torch.floor(x1).remainder(2)
    return (torch.stack([x1, x2], 1) / 2).float()


def toy_mixture(name: str = "mixture") -> GaussianMixture:
    """The :class:`GaussianMixture` behind a Gaussian toy, for its exact score.

    ``"8gaussians"``: ``GaussianMixture.ring(8, radius=0.7, std=0.1)``. ``"mixture"``: three
    unequal, anisotropic components (weights 0.5, 0.3, 0.2), the exact-score testbed's 2-D example.
    """
    if name == "8gaussians":
        return GaussianMixture.ring(k=8, radius=0.7, std=0.1)
    if name == "mixture":
        means = [[-0.45, -0.35], [0.45, 0.45], [0.5, -0.5]]
        covs = [
            [[0.04, 0.015], [0.015, 0.02]],
            [[0.015, 0.0], [0.0, 0.03]],
            [[0.01, -0.005], [-0.005, 0.01]],
        ]
        return GaussianMixture(means, covs, [0.5, 0.3, 0.2])
    raise ValueError(f"toy_mixture name must be '8gaussians' or 'mixture', got {name!r}")


def make_toy(name: str, n: int = DEFAULT_TOY_N, generator: torch.Generator | None = None) -> Tensor:
    """``n`` points of the 2-D toy ``name`` (one of ``TOYS``), float32 ``(n, 2)``."""
    n = _check_n(n)
    if name == "moons":
        return make_moons(n, generator=generator)
    if name == "swissroll":
        return make_swissroll(n, generator=generator)
    if name == "checkerboard":
        return make_checkerboard(n, generator=generator)
    if name in ("8gaussians", "mixture"):
        return toy_mixture(name).sample(n, generator=generator)
    raise ValueError(f"toy name must be one of {TOYS}, got {name!r}")


# ---------------------------------------------------------------------------- file formats
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> Tensor:
    """Read an IDX file (the MNIST / Fashion-MNIST format), gzipped (``.gz``, detected by its
    magic bytes) or not. Returns a tensor of the stored type and shape (uint8 ``(N, 28, 28)`` for images).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file for a
    corrupted or truncated one.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: corrupted gzip file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    need = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    body = raw[4 + 4 * ndim :]
    if len(body) != need:
        raise ValueError(f"{path}: IDX body has {len(body)} bytes, the header {dims} needs {need} (truncated or corrupted)")
    arr = np.frombuffer(body, dtype=dtype).reshape(dims)
    return torch.from_numpy(arr.astype(dtype.newbyteorder("=")).copy())


def write_idx(path, array) -> None:
    """Write ``array`` (uint8/int8/int16/int32/float32/float64) as an IDX file; gzipped if ``path`` ends in ``.gz``."""
    arr = np.asarray(array)
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
             np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}
    if arr.dtype not in codes:
        raise ValueError(f"array dtype must be one of {[str(d) for d in codes]}, got {arr.dtype}")
    big = arr.astype(arr.dtype.newbyteorder(">"))
    data = bytes([0, 0, codes[arr.dtype], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + big.tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def _to_unit(x: Tensor) -> Tensor:
    """uint8 0..255 -> float32 [-1, 1] (DDPM section 3.3)."""
    return x.float() / 127.5 - 1.0


def _candidates(name: str, data_dir) -> list[Path]:
    dirs: list[Path] = []
    if data_dir is not None:
        d = Path(data_dir)
        dirs += [d, d / name, d / name.replace("-", "_"), d / ("FashionMNIST" if name == "fashion-mnist" else "MNIST") / "raw"]
        return dirs
    if name == "fashion-mnist":
        dirs.append(Path(FASHION_MNIST_DIR))
    if os.environ.get(DATA_ENV):
        dirs.append(Path(os.environ[DATA_ENV]) / name)
    dirs += [Path("data") / name, Path.home() / ".cache" / "ddpm" / name]
    return dirs


_HOW_TO_GET = {
    "fashion-mnist": "install Debian's package (apt-get install dataset-fashion-mnist) or download the four "
    "*-idx?-ubyte.gz files from github.com/zalandoresearch/fashion-mnist into a folder and pass --data-dir FOLDER",
    "mnist": "download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
    "t10k-labels-idx1-ubyte.gz (Yann LeCun's MNIST page or any mirror) into a folder and pass --data-dir FOLDER",
    "cifar10": "download and unpack cifar-10-python.tar.gz (www.cs.toronto.edu/~kriz/cifar.html) and pass "
    "--data-dir pointing at the cifar-10-batches-py folder (or the folder holding it)",
}


def load_mnist_like(name: str, data_dir=None, split: str = "train", labels: bool = False):
    """Read ``mnist`` or ``fashion-mnist`` from IDX files (``.gz`` or raw) in ``data_dir``, or,
    without it, in the default places (Fashion-MNIST: ``/usr/share/datasets/fashion-mnist``;
    both: ``$DDPM_DATA/<name>``, ``./data/<name>``, ``~/.cache/ddpm/<name>``).

    Returns float32 ``(N, 1, 28, 28)`` in [-1, 1] (and int64 labels ``(N,)`` with ``labels=True``).
    A missing file raises ``FileNotFoundError`` listing every path tried and how to get the data.
    """
    if name not in ("mnist", "fashion-mnist"):
        raise ValueError(f"name must be 'mnist' or 'fashion-mnist', got {name!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    prefix = "train" if split == "train" else "t10k"
    tried: list[str] = []

    def find(stem: str) -> Path:
        for d in _candidates(name, data_dir):
            for fn in (stem + ".gz", stem):
                p = d / fn
                tried.append(str(p))
                if p.is_file():
                    return p
        raise FileNotFoundError(
            f"{name}: {stem}[.gz] not found; looked in: {', '.join(tried)}. To get it: {_HOW_TO_GET[name]}"
        )

    images = read_idx(find(f"{prefix}-images-idx3-ubyte"))
    if images.dim() != 3 or images.dtype != torch.uint8:
        raise ValueError(f"{name}: expected uint8 images of shape (N, H, W), got {images.dtype} {tuple(images.shape)}")
    x = _to_unit(images[:, None])  # (N, 1, 28, 28)
    if not labels:
        return x
    y = read_idx(find(f"{prefix}-labels-idx1-ubyte")).long()
    if y.shape != (x.shape[0],):
        raise ValueError(f"{name}: {x.shape[0]} images but labels of shape {tuple(y.shape)}")
    return x, y


def load_cifar10(folder, split: str = "train", labels: bool = False):
    """CIFAR-10 from its python pickle batches (``data_batch_1..5``, ``test_batch``) in ``folder``
    (or in ``folder/cifar-10-batches-py``). Returns float32 ``(N, 3, 32, 32)`` in [-1, 1]
    (and int64 labels with ``labels=True``).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    folder = Path(folder)
    tried = []
    for d in (folder, folder / "cifar-10-batches-py"):
        tried.append(str(d / names[0]))
        if (d / names[0]).is_file():
            break
    else:
        raise FileNotFoundError(f"cifar10: {names[0]} not found; looked in: {', '.join(tried)}. To get it: {_HOW_TO_GET['cifar10']}")
    xs, ys = [], []
    for fn in names:
        p = d / fn
        if not p.is_file():
            raise FileNotFoundError(f"cifar10: {p} not found (the folder has {names[0]}, so a batch is missing). To get it: {_HOW_TO_GET['cifar10']}")
        try:
            with open(p, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            data = np.asarray(batch[b"data"] if b"data" in batch else batch["data"], dtype=np.uint8)
            lab = batch.get(b"labels", batch.get("labels"))
        except Exception as e:  # noqa: BLE001 - any unpickling failure is a corrupted batch
            raise ValueError(f"cifar10: {p} is not a CIFAR-10 python batch ({type(e).__name__}: {e})") from None
        if data.ndim != 2 or data.shape[1] != 3072 or lab is None or len(lab) != data.shape[0]:
            raise ValueError(f"cifar10: {p} has data of shape {data.shape}; expected (N, 3072) and N labels")
        xs.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        ys.append(torch.as_tensor(lab, dtype=torch.long))
    x = _to_unit(torch.cat(xs))
    return (x, torch.cat(ys)) if labels else x


def load_digits(split: str = "all", labels: bool = False):
    """scikit-learn's 8x8 digits (values 0..16) as float32 ``(N, 1, 8, 8)`` in [-1, 1].

    ``split``: ``"all"`` (1797 images), or ``"train"`` / ``"test"``: a fixed 80/20 split
    (the test part is every fifth image), used by the shipped classifier.
    """
    from sklearn.datasets import load_digits as _sk

    d = _sk()
    x = torch.from_numpy(d.images.astype(np.float32))[:, None] / 8.0 - 1.0  # (1797, 1, 8, 8)
    y = torch.from_numpy(d.target.astype(np.int64))
    if split != "all":
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'all', 'train' or 'test', got {split!r}")
        test = torch.arange(x.shape[0]) % 5 == 0
        keep = test if split == "test" else ~test
        x, y = x[keep], y[keep]
    return (x, y) if labels else x


def load_array(path) -> Tensor:
    """Your own data from a ``.npy``, ``.npz`` (first array), ``.csv`` or ``.txt`` file of shape
    ``(N, d)`` or ``(N, C, H, W)``, as float32 in [-1, 1].

    uint8 data are mapped ``x / 127.5 - 1``; float data already inside [-1, 1] are kept; anything
    else is centred (points: each axis on its mid-range; images: one shift) and divided by its
    largest absolute value (one factor for all axes, so shapes are kept).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    try:
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                arr = z[z.files[0]]
        elif path.suffix in (".csv", ".txt"):
            arr = np.loadtxt(path, delimiter="," if path.suffix == ".csv" else None, ndmin=2)
        else:
            raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use .npy, .npz, .csv or .txt")
    except ValueError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{path}: cannot read ({type(e).__name__}: {e})") from None
    if arr.ndim not in (2, 4) or arr.shape[0] < 1:
        raise ValueError(f"{path}: data must have shape (N, d) or (N, C, H, W), got {arr.shape}")
    if arr.dtype == np.uint8:
        return _to_unit(torch.from_numpy(arr.copy()))
    x = torch.from_numpy(np.asarray(arr, dtype=np.float64))
    if not torch.isfinite(x).all():
        raise ValueError(f"{path}: data contain NaN or inf")
    if x.abs().max() > 1:
        if x.dim() == 2:  # points: centre each axis on its mid-range
            x = x - (x.amax(0) + x.amin(0)) / 2
        else:  # images: one shift for all pixels
            x = x - (x.max() + x.min()) / 2
        x = x / x.abs().max()
    return x.float()


# ---------------------------------------------------------------------------- one entry point
def load_dataset(
    name: str,
    n: int | None = None,
    data_dir=None,
    generator: torch.Generator | None = None,
    *,
    split: str = "train",
    labels: bool = False,
):
    """The data set ``name`` as a float32 tensor in [-1, 1] of shape ``(N, 2)`` or ``(N, C, H, W)``.

    ``name``: one of ``DATASETS`` or a path to a ``.npy/.npz/.csv/.txt`` file (:func:`load_array`).
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
        return make_toy(name, n or DEFAULT_TOY_N, generator)
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
    elif name.endswith((".npy", ".npz", ".csv", ".txt")) or os.sep in name:
        if labels:
            raise ValueError("labels=True is not available for a data file")
        out = load_array(name)
    else:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)} or give a .npy/.npz/.csv/.txt file")
    x, y = out if labels else (out, None)
    if n is not None and n < x.shape[0]:
        idx = torch.randperm(x.shape[0], generator=generator)[:n] if generator is not None else torch.arange(n)
        x = x[idx]
        y = y[idx] if y is not None else None
    return (x, y) if labels else x


def is_toy(name: str) -> bool:
    """True if ``name`` is one of the 2-D toy data sets (``TOYS``)."""
    return name in TOYS
