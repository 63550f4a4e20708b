"""Data sets read from files, as float32 in [-1, 1] (book chapter "Training and sampling").

- ``fashion-mnist`` and ``mnist`` from IDX files, gzipped or not (:func:`read_idx`), ``(N, 1, 28, 28)``;
  Fashion-MNIST is looked for first where Debian's ``dataset-fashion-mnist`` package puts it.
- ``cifar10`` from its python pickle batches in a folder (:func:`load_cifar10`), ``(N, 3, 32, 32)``.
- ``digits``: scikit-learn's 8x8 digits (1797 images, ships with scikit-learn), ``(N, 1, 8, 8)``.
- Users' files: arrays (:func:`load_array`: ``.npy``, ``.npz``, ``.csv``, ``.txt``; points ``(N, d)``
  or images ``(N, C, H, W)``, ``(N, H, W, C)`` or ``(N, H, W)``) and folders of PNG/JPEG images
  (:func:`load_image_folder`, read with Pillow).

Images map 0..255 to [-1, 1] as in DDPM section 3.3 (``x / 127.5 - 1``); other ranges are mapped by
:func:`rescale`.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist package
DATA_ENV = "DDPM_DATA"  # environment variable: a folder holding <name>/ sub-folders
ARRAY_SUFFIXES = (".npy", ".npz", ".csv", ".txt")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


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
def rescale(x: Tensor, where: str = "data") -> Tensor:
    """Float data into [-1, 1]: data already inside it are kept; anything else is centred (points
    ``(N, d)``: each axis on its mid-range; images: one shift) and divided by its largest absolute
    value (one factor for all axes, so shapes are kept). A constant array becomes zeros, never NaN.
    ``ValueError`` naming ``where`` for NaN or inf."""
    x = x.to(torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError(f"{where}: data contain NaN or inf")
    if x.numel() and x.abs().max() > 1:
        if x.dim() == 2:  # points: centre each axis on its mid-range
            x = x - (x.amax(0) + x.amin(0)) / 2
        else:  # images: one shift for all pixels
            x = x - (x.max() + x.min()) / 2
        top = x.abs().max()
        if top > 0:  # a constant array is all zeros after centring: nothing to divide
            x = x / top
    return x.float()


def to_nchw(arr: np.ndarray, where: str = "data") -> np.ndarray:
    """Images ``(N, C, H, W)``, ``(N, H, W, C)`` (C = 1, 3 or 4 last) or ``(N, H, W)`` as ``(N, C, H, W)``;
    points ``(N, d)`` unchanged. ``ValueError`` naming ``where`` for any other shape."""
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3:
        return arr[:, None]
    if arr.ndim == 4:
        if arr.shape[1] in (1, 3, 4):
            return arr
        if arr.shape[3] in (1, 3, 4):
            return np.ascontiguousarray(arr.transpose(0, 3, 1, 2))
        raise ValueError(f"{where}: 4-D images must have 1, 3 or 4 channels first (N, C, H, W) or last (N, H, W, C), got {arr.shape}")
    raise ValueError(f"{where}: data must have shape (N, d), (N, H, W), (N, C, H, W) or (N, H, W, C), got {arr.shape}")


def load_array(path) -> Tensor:
    """Your own data from a ``.npy``, ``.npz`` (first array), ``.csv`` or ``.txt`` file, as float32 in
    [-1, 1]: points ``(N, d)``, or images ``(N, C, H, W)``, ``(N, H, W, C)`` or ``(N, H, W)``
    (returned as ``(N, C, H, W)``, :func:`to_nchw`).

    uint8 data are mapped ``x / 127.5 - 1``; other data by :func:`rescale`. Every error names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    if path.suffix not in ARRAY_SUFFIXES:
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use {', '.join(ARRAY_SUFFIXES)} or a folder of images")
    try:
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if not z.files:
                    raise ValueError("the archive holds no array")
                arr = z[z.files[0]]
        else:
            arr = np.loadtxt(path, delimiter="," if path.suffix == ".csv" else None, ndmin=2)
    except PermissionError:
        raise
    except Exception as e:  # noqa: BLE001 - numpy's errors do not name the file
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"{path}: cannot read ({type(e).__name__}: {first})") from None
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{path}: data must be numbers, got dtype {arr.dtype}")
    if arr.ndim < 2 or arr.shape[0] < 1 or 0 in arr.shape:
        raise ValueError(f"{path}: data must have shape (N, d) or images (N, C, H, W), (N, H, W, C), (N, H, W) with N >= 1, got {arr.shape}")
    arr = to_nchw(arr, str(path))
    if arr.dtype == np.uint8:
        return _to_unit(torch.from_numpy(arr.copy()))
    return rescale(torch.from_numpy(np.asarray(arr, dtype=np.float64)), str(path))


def load_image_folder(folder) -> Tensor:
    """Every PNG/JPEG image in ``folder`` (sorted by name; read with Pillow) as float32 ``(N, C, H, W)``
    in [-1, 1]: ``C = 1`` if every image is grey-scale, else 3 (RGB). All images must have one size.
    16-bit grey PNGs are read at their full depth (0..65535 onto [-1, 1]). Every error names the file."""
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"{folder}: no {', '.join(IMAGE_SUFFIXES)} images in this folder")
    images, size, deep = [], None, False
    for p in files:
        try:
            with Image.open(p) as im:
                im.load()
                if im.mode.startswith("I"):  # 16-bit grey ("I;16", "I;16B", or "I" holding 0..65535)
                    arr = np.asarray(im).astype(np.int64)
                    deep = True
                    if arr.min() < 0 or arr.max() > 65535:
                        raise ValueError(f"{p}: grey values outside 0..65535 ({im.mode} image); save it as 8 or 16-bit")
                elif im.mode == "F":
                    raise ValueError(f"{p}: a floating-point image; save it as an 8 or 16-bit PNG")
                else:
                    grey = im.mode in ("1", "L", "LA")
                    arr = np.asarray(im.convert("L" if grey else "RGB")).astype(np.int64) * 257  # 0..255 -> 0..65535
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"{p}: cannot read the image ({type(e).__name__}: {e})") from None
        if size is None:
            size = arr.shape[:2]
        elif arr.shape[:2] != size:
            raise ValueError(f"{p}: image of size {arr.shape[1]}x{arr.shape[0]}, but {files[0].name} is {size[1]}x{size[0]}; all must have one size")
        images.append(arr)
    channels = 3 if any(a.ndim == 3 for a in images) else 1
    stack = np.stack([np.repeat(a[..., None], 3, 2) if (channels == 3 and a.ndim == 2) else (a if a.ndim == 3 else a[..., None])
                      for a in images])  # (N, H, W, C), 0..65535 (8-bit images times 257: the same scale)
    x = torch.from_numpy(np.ascontiguousarray(stack.transpose(0, 3, 1, 2)))
    if not deep:
        return _to_unit((x // 257).to(torch.uint8))  # all 8-bit: exactly the uint8 mapping
    return (x.double() / 32767.5 - 1.0).float()  # 16-bit grey read at full depth, never clipped at 255
