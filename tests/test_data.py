"""Data loaders: toys, digits, IDX (MNIST / Fashion-MNIST), CIFAR-10 pickles, user files."""

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from ddpm import load_dataset, read_idx, toy_mixture
from ddpm.data import FASHION_MNIST_DIR, TOYS, load_array, load_cifar10, write_idx


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", TOYS)
def test_toys_shape_scale_and_repeatability(name):
    x = load_dataset(name, n=4000, generator=gen(0))
    assert x.shape == (4000, 2) and x.dtype == torch.float32
    assert (x.abs() <= 1).float().mean() > 0.99  # scaled into [-1, 1] (Gaussian tails not clipped)
    assert x.abs().max() < 1.6
    assert x.std(0).min() > 0.15  # spread over the square, not collapsed
    assert torch.equal(x, load_dataset(name, n=4000, generator=gen(0)))
    assert not torch.equal(x, load_dataset(name, n=4000, generator=gen(1)))


def test_checkerboard_points_lie_on_one_colour():
    x = load_dataset("checkerboard", n=5000, generator=gen(0))
    cells = torch.floor(2 * x + 2).long()  # 4x4 board of side 0.5 on [-1, 1]^2
    parity = (cells[:, 0] + cells[:, 1]) % 2
    assert len(parity.unique()) == 1
    counts = torch.bincount(cells[:, 0] * 4 + cells[:, 1], minlength=16)
    assert (counts > 0).sum() == 8 and counts[counts > 0].min() > 500  # 8 squares, evenly filled


def test_moons_has_two_halves():
    x = load_dataset("moons", n=4000, generator=gen(0))
    # The upper moon's centre (0, 0) maps to (-0.3125, -0.15625); its radius 1 to 0.625.
    r_up = (x - torch.tensor([-0.3125, -0.15625])).norm(dim=1)
    r_lo = (x - torch.tensor([0.3125, 0.15625])).norm(dim=1)
    on_up = (r_up - 0.625).abs() < 0.1
    on_lo = (r_lo - 0.625).abs() < 0.1
    assert (on_up | on_lo).float().mean() > 0.97
    assert 0.4 < on_up.float().mean() < 0.65


@pytest.mark.parametrize("name", ["8gaussians", "mixture"])
def test_gaussian_toys_are_the_testbed_mixtures(name):
    mix = toy_mixture(name)
    x = load_dataset(name, n=20000, generator=gen(0)).double()
    torch.testing.assert_close(x.mean(0), mix.mean(), atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), mix.cov(), atol=0.02, rtol=0)


def test_digits():
    x, y = load_dataset("digits", split="all", labels=True)
    assert x.shape == (1797, 1, 8, 8) and x.min() == -1 and x.max() == 1
    tr = load_dataset("digits")
    te = load_dataset("digits", split="test")
    assert tr.shape[0] + te.shape[0] == 1797 and te.shape[0] == 360
    sub = load_dataset("digits", n=100, generator=gen(0))
    assert sub.shape == (100, 1, 8, 8)
    assert set(y.tolist()) == set(range(10))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("gz", [True, False])
def test_idx_roundtrip(tmp_path, dtype, gz):
    rng = np.random.default_rng(0)
    arr = (rng.integers(-100, 100, size=(3, 4, 5)) if dtype != np.uint8 else rng.integers(0, 256, size=(3, 4, 5))).astype(dtype)
    p = tmp_path / ("a.idx.gz" if gz else "a.idx")
    write_idx(p, arr)
    back = read_idx(p)
    np.testing.assert_array_equal(back.numpy(), arr)


def test_idx_known_bytes(tmp_path):
    """The IDX header by hand: magic 0x00000801 (uint8, 1 dim), big-endian size."""
    p = tmp_path / "labels-idx1-ubyte"
    p.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 9]))
    assert read_idx(p).tolist() == [7, 2, 9]


def test_idx_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        read_idx(tmp_path / "nope")
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x12\x34\x56\x78rest")
    with pytest.raises(ValueError, match="not an IDX"):
        read_idx(bad)
    full = tmp_path / "full"
    write_idx(full, np.zeros((10, 28, 28), np.uint8))
    cut = tmp_path / "cut"
    cut.write_bytes(full.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(cut)
    broken_gz = tmp_path / "broken.gz"
    broken_gz.write_bytes(gzip.compress(full.read_bytes())[:50])
    with pytest.raises(ValueError, match=str(broken_gz.name)):
        read_idx(broken_gz)


def _write_mnist(folder: Path, n: int, gz: bool, split="train"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, size=(n, 28, 28)).astype(np.uint8)
    imgs[0] = 0
    imgs[1] = 255
    labels = (np.arange(n) % 10).astype(np.uint8)
    pre = "train" if split == "train" else "t10k"
    ext = ".gz" if gz else ""
    write_idx(folder / f"{pre}-images-idx3-ubyte{ext}", imgs)
    write_idx(folder / f"{pre}-labels-idx1-ubyte{ext}", labels)
    return imgs, labels


@pytest.mark.parametrize("name, gz", [("fashion-mnist", True), ("mnist", False), ("mnist", True)])
def test_mnist_like_from_idx_files(tmp_path, name, gz):
    imgs, labels = _write_mnist(tmp_path / "d", 12, gz)
    x, y = load_dataset(name, data_dir=tmp_path / "d", labels=True)
    assert x.shape == (12, 1, 28, 28) and x.dtype == torch.float32
    assert torch.equal(x[0], -torch.ones(1, 28, 28)) and torch.equal(x[1], torch.ones(1, 28, 28))
    torch.testing.assert_close(x[2, 0], torch.from_numpy(imgs[2]).float() / 127.5 - 1)
    assert y.tolist() == labels.tolist()


def test_mnist_like_test_split_and_subfolder(tmp_path):
    _write_mnist(tmp_path / "mnist", 7, True, split="test")
    x = load_dataset("mnist", data_dir=tmp_path, split="test")
    assert x.shape == (7, 1, 28, 28)


def test_missing_idx_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_dataset("fashion-mnist", data_dir=tmp_path / "empty")
    msg = str(e.value)
    assert str(tmp_path / "empty" / "train-images-idx3-ubyte.gz") in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "--data-dir" in msg
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        load_dataset("mnist", data_dir=tmp_path / "empty")


@pytest.mark.skipif(not Path(FASHION_MNIST_DIR, "t10k-images-idx3-ubyte.gz").is_file(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_from_the_debian_package():
    x, y = load_dataset("fashion-mnist", split="test", labels=True)  # default location, no data_dir
    assert x.shape == (10000, 1, 28, 28) and x.min() == -1 and x.max() == 1
    assert torch.bincount(y).tolist() == [1000] * 10


def _write_cifar(folder: Path, n_per_batch=4, batches=range(1, 6), test=True):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    names = [f"data_batch_{i}" for i in batches] + (["test_batch"] if test else [])
    for k, fn in enumerate(names):
        data = rng.integers(0, 256, size=(n_per_batch, 3072)).astype(np.uint8)
        data[0] = k  # tag each batch
        with open(folder / fn, "wb") as f:
            pickle.dump({b"data": data, b"labels": [k % 10] * n_per_batch, b"batch_label": fn.encode()}, f)


def test_cifar10_from_pickle_batches(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-py")
    x, y = load_cifar10(tmp_path, labels=True)  # the parent folder works too
    assert x.shape == (20, 3, 32, 32) and y.shape == (20,)
    assert torch.allclose(x[4], torch.full((3, 32, 32), 1 / 127.5 - 1))  # batch 2's tag
    xt = load_dataset("cifar10", data_dir=tmp_path / "cifar-10-batches-py", split="test")
    assert xt.shape == (4, 3, 32, 32)
    # The channel layout: the first 1024 bytes are the red plane.
    raw = pickle.load(open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb"))[b"data"][1]
    torch.testing.assert_close(x[1, 0].flatten(), torch.from_numpy(raw[:1024].astype(np.float32)) / 127.5 - 1)


def test_cifar10_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-python.tar.gz"):
        load_cifar10(tmp_path)
    _write_cifar(tmp_path, batches=range(1, 4), test=False)
    with pytest.raises(FileNotFoundError, match="data_batch_4"):
        load_cifar10(tmp_path)
    _write_cifar(tmp_path)
    (tmp_path / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="data_batch_3"):
        load_cifar10(tmp_path)


def test_user_files(tmp_path):
    pts = np.array([[0.0, 0.0], [10.0, 2.0], [4.0, -2.0]])
    np.save(tmp_path / "p.npy", pts)
    x = load_dataset(str(tmp_path / "p.npy"))
    assert x.shape == (3, 2) and x.abs().max() == 1
    # One factor for both axes: the shape is kept.
    d = x.double()
    torch.testing.assert_close((d[1] - d[0]) / (d[2] - d[0]).norm(), torch.from_numpy((pts[1] - pts[0]) / np.linalg.norm(pts[2] - pts[0])))
    np.savetxt(tmp_path / "p.csv", pts * 0.01, delimiter=",")
    torch.testing.assert_close(load_array(tmp_path / "p.csv"), torch.from_numpy(pts * 0.01).float())  # inside [-1, 1]: kept
    imgs = np.full((2, 1, 4, 4), 255, np.uint8)
    np.savez(tmp_path / "i.npz", imgs)
    assert torch.equal(load_array(tmp_path / "i.npz"), torch.ones(2, 1, 4, 4))
    with pytest.raises(FileNotFoundError):
        load_array(tmp_path / "missing.npy")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="unsupported"):
        load_array(tmp_path / "x.json")


def test_bad_names_and_n():
    with pytest.raises(ValueError, match="unknown data set 'nope'.*moons"):
        load_dataset("nope")
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="n must be"):
            load_dataset("moons", n=bad)
    with pytest.raises(ValueError, match="labels"):
        load_dataset("moons", labels=True)


# ---------------------------------------------------------------------------- users' images
def test_image_arrays_in_nchw_nhwc_and_nhw_agree(tmp_path):
    g = np.random.default_rng(1)
    nchw = (g.random((5, 3, 6, 6)) * 255).astype(np.uint8)
    np.save(tmp_path / "a.npy", nchw)
    np.save(tmp_path / "b.npy", nchw.transpose(0, 2, 3, 1))  # NHWC
    np.save(tmp_path / "c.npy", nchw[:, 0])  # (N, H, W): grey-scale
    a, b, c = (load_array(tmp_path / f"{k}.npy") for k in "abc")
    assert a.shape == b.shape == (5, 3, 6, 6) and torch.equal(a, b)
    assert c.shape == (5, 1, 6, 6) and torch.equal(c[:, 0], a[:, 0])
    np.save(tmp_path / "d.npy", np.zeros((5, 2, 6, 7)))
    with pytest.raises(ValueError, match="d.npy.*channels"):
        load_array(tmp_path / "d.npy")


@pytest.mark.parametrize("value", [0.0, 5.0, -300.0])
def test_a_constant_array_stays_finite(tmp_path, value):
    for shape in ((10, 2), (4, 1, 5, 5)):
        np.save(tmp_path / "k.npy", np.full(shape, value))
        x = load_array(tmp_path / "k.npy")
        assert torch.isfinite(x).all() and x.abs().max() <= 1


def test_numpy_errors_name_the_file(tmp_path):
    (tmp_path / "bad.csv").write_text("1,2\n3,oops\n")
    with pytest.raises(ValueError, match="bad.csv: cannot read"):
        load_array(tmp_path / "bad.csv")
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match="bad.npy: cannot read"):
        load_array(tmp_path / "bad.npy")


def test_a_folder_of_png_and_jpeg_images(tmp_path):
    from PIL import Image

    from ddpm.data import load_dataset, load_image_folder

    g = np.random.default_rng(2)
    grey = (g.random((3, 8, 8)) * 255).astype(np.uint8)
    for i, im in enumerate(grey):
        Image.fromarray(im).save(tmp_path / f"{i}.png")
    x = load_dataset(str(tmp_path))
    assert x.shape == (3, 1, 8, 8) and torch.allclose(x[0, 0], torch.from_numpy(grey[0]).float() / 127.5 - 1)
    Image.fromarray((g.random((8, 8, 3)) * 255).astype(np.uint8)).save(tmp_path / "9.jpg")
    assert load_image_folder(tmp_path).shape == (4, 3, 8, 8)  # one colour image: all become RGB
    Image.fromarray(grey[0][:4]).save(tmp_path / "small.png")
    with pytest.raises(ValueError, match="small.png: image of size 8x4"):
        load_image_folder(tmp_path)
    (tmp_path / "small.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="small.png: cannot read the image"):
        load_image_folder(tmp_path)


def test_16_bit_grey_pngs_are_read_at_full_depth(tmp_path):
    from PIL import Image

    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)  # 0..63000: most above 255
    for i in range(2):
        Image.fromarray(ramp).save(tmp_path / f"{i}.png")
    assert Image.open(tmp_path / "0.png").mode.startswith("I")
    x = load_dataset(str(tmp_path))
    assert x.shape == (2, 1, 8, 8)
    want = torch.from_numpy(ramp.astype(np.float64) / 32767.5 - 1).float()
    assert torch.allclose(x[0, 0], want, atol=1e-6)  # not clipped at 255: 64 distinct levels
    assert len(torch.unique(x)) == 64
