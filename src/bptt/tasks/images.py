"""Images read as sequences: sequential and permuted MNIST, and scikit-learn's 8x8 digits.

An image of ``P`` pixels becomes ``length`` steps of ``P / length`` pixels each, row by
row (or in a fixed random order for pMNIST): ``length=784`` is the classic one pixel per
step (Le et al. 2015), ``length=28`` one row per step, a quick check.
"""

from __future__ import annotations

import functools
from typing import final

import torch
from torch import Tensor

from bptt.data import load_mnist, pixel_permutation, split_indices
from bptt.tasks.base import (
    AbstractClassificationTask,
    AbstractDatasetTask,
    Batch,
    check_count,
    majority_share,
)


class AbstractImageTask(AbstractClassificationTask, AbstractDatasetTask):
    """Classify flat images read ``pixels / length`` pixels per step (many-to-one).

    Baseline: the majority class's share of the test split.

    Args:
        length: steps per image; must divide the number of pixels.
        images: ``{"train": (pixels, labels), "validation": ..., "test": ...}`` with pixels
            ``(N, P)`` float in ``[0, 1]`` and labels ``(N,)`` int64.
        permutation_seed: ``None`` keeps the pixel order; an integer reorders the pixels of
            every image by the fixed :func:`~bptt.data.pixel_permutation` of that seed.
    """

    vocab_size = None
    num_outputs = 10

    def __init__(
        self, length: int, images: dict[str, tuple[Tensor, Tensor]], permutation_seed: int | None = None
    ) -> None:
        super().__init__(length)
        pixels = images["train"][0].shape[1]
        if pixels % self.length:
            divisors = [d for d in range(1, pixels + 1) if pixels % d == 0]
            raise ValueError(
                f"{self.name}: length (steps per image) must divide the {pixels} pixels, got "
                f"{self.length}; pass one of {divisors}"
            )
        self.input_size = pixels // self.length
        self.permutation = None if permutation_seed is None else pixel_permutation(pixels, permutation_seed)
        self.images = images
        self.baseline = majority_share(images["test"][1], self.num_outputs)

    def split_size(self, split: str) -> int:
        return len(self.images[self._check_split(split)][1])

    def examples(self, split: str, indices: Tensor) -> Batch:
        pixels, labels = self.images[self._check_split(split)]
        chosen = pixels[indices]
        if self.permutation is not None:
            chosen = chosen[:, self.permutation]
        return Batch(chosen.view(len(indices), self.length, self.input_size), labels[indices])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(length={self.length})"


@final
class SequentialMNISTTask(AbstractImageTask):
    """Sequential MNIST: 28x28 digits read pixel by pixel, row by row (784 steps).

    Splits: the pickle's 50,000 / 10,000 / 10,000 (the standard test set). Solved at
    97 % test accuracy, IRNN's published result (Le et al. 2015).

    Args:
        length: steps per image, a divisor of 784 (784: one pixel per step).
        limit: use only the first this many images of each split (quick checks).
    """

    name = "smnist"
    description = "MNIST digits read one pixel per step (784 steps), 10 classes"
    solved_threshold = 0.97

    def __init__(self, length: int, *, limit: int | None = None) -> None:
        super().__init__(length, _mnist(limit))


@final
class PermutedMNISTTask(AbstractImageTask):
    """Permuted MNIST: sequential MNIST with the pixels in a fixed random order.

    The permutation scatters neighbouring pixels across the sequence, so the dependencies
    span the whole of it. Solved at 97 % test accuracy.

    Args:
        length: steps per image, a divisor of 784.
        permutation_seed: seeds the fixed permutation.
        limit: use only the first this many images of each split (quick checks).
    """

    name = "pmnist"
    description = "MNIST digits, one pixel per step in a fixed random order, 10 classes"
    solved_threshold = 0.97

    def __init__(self, length: int, *, permutation_seed: int = 0, limit: int | None = None) -> None:
        super().__init__(length, _mnist(limit), permutation_seed)
        self.permutation_seed = permutation_seed

    def __repr__(self) -> str:
        return f"PermutedMNISTTask(length={self.length}, permutation_seed={self.permutation_seed})"


@final
class DigitsTask(AbstractImageTask):
    """scikit-learn's 1,797 handwritten 8x8 digits as 64-step sequences: a fast real check.

    Pixels are scaled from ``0..16`` to ``[0, 1]``; split 80/10/10 with ``split_seed``.
    Solved at 95 % test accuracy.

    Args:
        length: steps per image, a divisor of 64 (64: one pixel per step, 8: one row).
        split_seed: seeds the train/validation/test split.
    """

    name = "digits"
    description = "scikit-learn's 8x8 digits, one pixel per step (64 steps), 10 classes"
    solved_threshold = 0.95

    def __init__(self, length: int, *, split_seed: int = 0) -> None:
        super().__init__(length, _digits(split_seed))


@functools.lru_cache(maxsize=2)
def _mnist(limit: int | None) -> dict[str, tuple[Tensor, Tensor]]:
    splits = load_mnist()
    if limit is None:
        return splits
    limit = check_count("limit", limit)
    return {split: (pixels[:limit], labels[:limit]) for split, (pixels, labels) in splits.items()}


@functools.lru_cache(maxsize=2)
def _digits(split_seed: int) -> dict[str, tuple[Tensor, Tensor]]:
    from sklearn.datasets import (
        load_digits,  # imported here: scikit-learn is slow to import
    )

    digits = load_digits()
    pixels = torch.as_tensor(digits.data, dtype=torch.float32) / 16
    labels = torch.as_tensor(digits.target, dtype=torch.int64)
    parts = split_indices(len(labels), seed=split_seed)
    return {split: (pixels[index], labels[index]) for split, index in parts.items()}

