"""Sample-set distances and the shipped classifier behind the Frechet distance."""

import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from ddpm import distance_report, energy_distance, frechet_distance, load_dataset, sliced_wasserstein
from ddpm.classifier import WEIGHTS_DIR, load_classifier
from ddpm.classifier_training import accuracy
from ddpm.features import confident_fraction, features, predict_proba
from ddpm.metrics import frechet_distance_gaussian


def g(seed):
    return torch.Generator().manual_seed(seed)


def test_sliced_wasserstein_of_a_shift():
    """Shifting a set by c moves every projection u.x by u.c: SW_2^2 = E_u (u.c)^2 = |c|^2 / d."""
    x = torch.randn(500, 2, generator=g(0))
    c = torch.tensor([0.6, -0.8])
    assert sliced_wasserstein(x, x, generator=g(1)) == 0
    sw = sliced_wasserstein(x, x + c, n_projections=2000, generator=g(1))
    assert sw == pytest.approx(1.0 / math.sqrt(2), rel=0.03)
    # Symmetric, and defined for sets of different sizes.
    y = torch.randn(300, 2, generator=g(2))
    assert sliced_wasserstein(x, y, generator=g(3)) == pytest.approx(sliced_wasserstein(y, x, generator=g(3)), rel=1e-9)
    assert sliced_wasserstein(x, y, generator=g(3)) < 0.15


def test_sliced_wasserstein_of_a_scale_in_1d():
    """In 1-D, W_2(N(0,1), N(0,s^2)) = |1 - s|: a check of the sorting/quantile code."""
    x = torch.randn(20000, 1, generator=g(0))
    assert sliced_wasserstein(x, 3 * x, n_projections=1, generator=g(1)) == pytest.approx(2 * x.pow(2).mean().sqrt().item(), rel=1e-6)


def test_energy_distance_matches_its_definition_and_separates():
    x = torch.randn(300, 2, generator=g(0), dtype=torch.float64)
    y = torch.randn(200, 2, generator=g(1), dtype=torch.float64) + 0.5
    dxy = torch.cdist(x, y).mean()
    dxx = torch.cdist(x, x).sum() / (300 * 299)
    dyy = torch.cdist(y, y).sum() / (200 * 199)
    assert energy_distance(x, y) == pytest.approx(float(2 * dxy - dxx - dyy), rel=1e-9)
    same = energy_distance(torch.randn(1000, 2, generator=g(2)), torch.randn(1000, 2, generator=g(3)))
    assert abs(same) < 0.01 < energy_distance(x, y)


def test_frechet_gaussian_formula():
    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    S1, S2 = A @ A.T + 0.1 * np.eye(5), B @ B.T + 0.1 * np.eye(5)
    m1, m2 = rng.normal(size=5), rng.normal(size=5)
    want = np.sum((m1 - m2) ** 2) + np.trace(S1 + S2 - 2 * scipy.linalg.sqrtm(S1 @ S2).real)
    got = frechet_distance_gaussian(*(torch.from_numpy(v) for v in (m1, S1, m2, S2)))
    assert got == pytest.approx(want, rel=1e-6)
    assert frechet_distance_gaussian(torch.from_numpy(m1), torch.from_numpy(S1), torch.from_numpy(m1), torch.from_numpy(S1)) == pytest.approx(0, abs=1e-8)
    # Diagonal covariances: sum (sqrt a - sqrt b)^2.
    a, b = torch.tensor([1.0, 4.0]), torch.tensor([9.0, 1.0])
    assert frechet_distance_gaussian(torch.zeros(2), torch.diag(a), torch.zeros(2), torch.diag(b)) == pytest.approx(4 + 1)


def test_shipped_digits_classifier_is_accurate_and_documented():
    meta = json.loads((WEIGHTS_DIR / "classifier-digits.json").read_text())
    assert meta["test_accuracy"] >= 0.95 and "python -m ddpm train-classifier" in meta["command"]
    x, y = load_dataset("digits", split="test", labels=True)
    acc = accuracy(load_classifier("digits"), x, y)
    assert acc == pytest.approx(meta["test_accuracy"], abs=1e-9)  # the shipped weights are the ones reported
    p = predict_proba(x, "digits")
    assert p.shape == (360, 10) and torch.allclose(p.sum(1), torch.ones(360))
    assert features(x, "digits").shape == (360, 128)
    assert confident_fraction(x, "digits") > 0.9
    assert confident_fraction(torch.rand(200, 1, 8, 8, generator=g(0)) * 2 - 1, "digits") < 0.5


def test_frechet_distance_on_digits_grows_with_corruption():
    x = load_dataset("digits", split="all", generator=g(0))
    perm = torch.randperm(x.shape[0], generator=g(1))
    a, b = x[perm[:800]], x[perm[800:1600]]
    noise = torch.randn(800, 1, 8, 8, generator=g(2)).clamp(-1, 1)
    noisy = [(b + s * torch.randn(b.shape, generator=g(3))).clamp(-1, 1) for s in (0.3, 0.6)]
    d = [frechet_distance(a, v, "digits") for v in (b, *noisy, noise)]
    assert 0 < d[0] < d[1] < d[2] < d[3]
    assert d[3] > 10 * d[0]
    with pytest.raises(ValueError, match="shape"):
        frechet_distance(a, torch.zeros(5, 1, 28, 28), "digits")
    with pytest.raises(FileNotFoundError, match="train-classifier --data cifar10"):
        frechet_distance(a, b, "cifar10")  # no shipped classifier: the message says how to train one


def test_distance_report_puts_samples_between_baseline_and_noise():
    data = load_dataset("moons", n=6000, generator=g(0))
    good = load_dataset("moons", n=1000, generator=g(1))
    bad = good * 0.5
    for metric in ("sliced_wasserstein", "energy"):
        r = distance_report(good, data, metric, generator=g(2))
        assert set(r) == {"metric", "n", "distance", "baseline", "noise"} and r["n"] == 1000
        assert r["distance"] < 3 * abs(r["baseline"]) + 0.02 < r["noise"]
        rb = distance_report(bad, data, metric, generator=g(2))
        assert r["distance"] < rb["distance"] < rb["noise"]
    with pytest.raises(ValueError, match="2 n"):
        distance_report(good, data[:1500])
    with pytest.raises(ValueError, match="metric"):
        distance_report(good, data, "kl")


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="same dimension"):
        energy_distance(torch.zeros(5, 2), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="NaN"):
        sliced_wasserstein(torch.full((5, 2), float("nan")), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="n_projections"):
        sliced_wasserstein(torch.zeros(5, 2), torch.zeros(5, 2), n_projections=0)


@pytest.mark.skipif(not (WEIGHTS_DIR / "classifier-fashion-mnist.safetensors").is_file(), reason="no shipped Fashion-MNIST classifier")
def test_shipped_fashion_mnist_classifier():
    from pathlib import Path

    from ddpm.data import FASHION_MNIST_DIR

    meta = json.loads((WEIGHTS_DIR / "classifier-fashion-mnist.json").read_text())
    assert meta["test_accuracy"] >= 0.85 and meta["n_test"] == 10000
    if not Path(FASHION_MNIST_DIR, "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    x, y = load_dataset("fashion-mnist", split="test", labels=True)
    assert accuracy(load_classifier("fashion-mnist"), x, y) == pytest.approx(meta["test_accuracy"], abs=1e-9)
    a, b = x[:1000], x[1000:2000]
    noise = torch.rand(1000, 1, 28, 28, generator=g(0)) * 2 - 1
    assert frechet_distance(a, b, "fashion-mnist") < 0.2 * frechet_distance(a, noise, "fashion-mnist")
