"""Images as sequences: pixel order, pMNIST's permutation, the digits split, lengths, baselines.

MNIST is read once per module (about 4 s in all); its tasks use ``limit=LIMIT``.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
import torch
from torch import Tensor

from bptt.data import load_mnist, pixel_permutation
from bptt.tasks import (
    TASKS,
    AbstractDatasetTask,
    Batch,
    DigitsTask,
    PermutedMNISTTask,
    SequentialMNISTTask,
    get_task,
)

LIMIT = 64
SPLITS = ("train", "validation", "test")
MNIST_DIVISORS = [1, 2, 4, 7, 8, 14, 16, 28, 49, 56, 98, 112, 196, 392, 784]


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def whole(task: AbstractDatasetTask, split: str) -> Batch:
    return task.examples(split, torch.arange(task.split_size(split)))


def assert_same(a: Batch, b: Batch) -> None:
    torch.testing.assert_close(a.inputs, b.inputs, rtol=0, atol=0)
    torch.testing.assert_close(a.targets, b.targets, rtol=0, atol=0)


@pytest.fixture(scope="module")
def mnist() -> dict[str, tuple[Tensor, Tensor]]:
    """The first ``LIMIT`` images of each split, read directly from the pickle."""
    return {split: (images[:LIMIT], labels[:LIMIT]) for split, (images, labels) in load_mnist().items()}


@pytest.fixture(scope="module")
def sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.data, digits.target


# ----------------------------------------------------------------------------- sequential MNIST


@pytest.mark.parametrize("split", SPLITS)
def test_one_pixel_per_step_reads_the_flat_image_in_order(mnist, split: str) -> None:
    task = SequentialMNISTTask(784, limit=LIMIT)
    images, labels = mnist[split]
    batch = whole(task, split)
    assert task.split_size(split) == LIMIT and task.input_size == 1
    assert batch.inputs.shape == (LIMIT, 784, 1) and batch.lengths is None
    torch.testing.assert_close(batch.inputs[:, :, 0], images, rtol=0, atol=0)
    torch.testing.assert_close(batch.targets, labels, rtol=0, atol=0)


def test_twenty_eight_steps_read_one_row_each(mnist) -> None:
    task = SequentialMNISTTask(28, limit=LIMIT)
    images = mnist["test"][0]
    batch = task.test_set()
    assert task.input_size == 28 and batch.inputs.shape == (LIMIT, 28, 28)
    torch.testing.assert_close(batch.inputs, images.view(LIMIT, 28, 28), rtol=0, atol=0)
    # the second row of the first image is pixels 28..55
    torch.testing.assert_close(batch.inputs[0, 1], images[0, 28:56], rtol=0, atol=0)


@pytest.mark.parametrize("length", [7, 112, 392])
def test_every_divisor_reads_consecutive_pixels_per_step(mnist, length: int) -> None:
    task = SequentialMNISTTask(length, limit=LIMIT)
    batch = task.test_set()
    assert batch.inputs.shape == (LIMIT, length, 784 // length)
    torch.testing.assert_close(batch.inputs.flatten(1), mnist["test"][0], rtol=0, atol=0)


@pytest.mark.parametrize("name", ["smnist", "pmnist"])
def test_a_length_that_does_not_divide_784_lists_the_valid_ones(name: str) -> None:
    message = re.escape(f"must divide the 784 pixels, got 100; pass one of {MNIST_DIVISORS}")
    with pytest.raises(ValueError, match=message):
        get_task(name, 100, limit=LIMIT)


def test_mnist_baseline_is_the_majority_share_of_the_test_split(mnist) -> None:
    task = SequentialMNISTTask(28, limit=LIMIT)
    counts = torch.bincount(mnist["test"][1], minlength=10)
    assert task.baseline == pytest.approx(counts.max().item() / LIMIT)
    assert task.num_outputs == 10 and task.vocab_size is None
    assert task.solved_threshold == 0.97 and not task.is_solved(task.baseline)


# ----------------------------------------------------------------------------- permuted MNIST


def test_pmnist_reads_the_pixels_in_the_order_of_its_seeds_permutation(mnist) -> None:
    images, labels = mnist["train"]
    for seed in (0, 3):
        task = PermutedMNISTTask(784, permutation_seed=seed, limit=LIMIT)
        batch = whole(task, "train")
        permutation = pixel_permutation(784, seed)
        torch.testing.assert_close(batch.inputs[:, :, 0], images[:, permutation], rtol=0, atol=0)
        torch.testing.assert_close(batch.targets, labels, rtol=0, atol=0)
        torch.testing.assert_close(task.permutation, permutation, rtol=0, atol=0)


def test_pmnist_permutes_the_same_pixels_of_each_image(mnist) -> None:
    sequential = SequentialMNISTTask(784, limit=LIMIT).test_set()
    permuted = PermutedMNISTTask(784, limit=LIMIT).test_set()
    assert not torch.equal(permuted.inputs, sequential.inputs)
    torch.testing.assert_close(
        permuted.inputs.sort(dim=1).values, sequential.inputs.sort(dim=1).values, rtol=0, atol=0
    )
    permutation = PermutedMNISTTask(784, limit=LIMIT).permutation
    assert sorted(permutation.tolist()) == list(range(784))
    assert (permutation != torch.arange(784)).float().mean() > 0.99  # scatters almost every pixel


def test_pmnist_permutation_is_fixed_by_its_seed() -> None:
    first = PermutedMNISTTask(28, permutation_seed=5, limit=LIMIT)
    again = PermutedMNISTTask(28, permutation_seed=5, limit=LIMIT)
    other = PermutedMNISTTask(28, permutation_seed=6, limit=LIMIT)
    torch.manual_seed(123)  # the global random state does not matter
    assert_same(first.test_set(), again.test_set())
    assert not torch.equal(first.test_set().inputs, other.test_set().inputs)


def test_pmnist_with_rows_groups_consecutive_permuted_pixels(mnist) -> None:
    task = PermutedMNISTTask(28, permutation_seed=1, limit=LIMIT)
    images = mnist["validation"][0]
    expected = images[:, pixel_permutation(784, 1)].view(LIMIT, 28, 28)
    torch.testing.assert_close(whole(task, "validation").inputs, expected, rtol=0, atol=0)


def test_mnist_sampling_is_seeded_and_draws_from_training(mnist) -> None:
    task = SequentialMNISTTask(28, limit=LIMIT)
    batch = task.sample(32, seeded(4))
    assert_same(batch, task.sample(32, seeded(4)))
    indices = torch.randint(LIMIT, (32,), generator=seeded(4))
    torch.testing.assert_close(batch.inputs.flatten(1), mnist["train"][0][indices], rtol=0, atol=0)
    torch.testing.assert_close(batch.targets, mnist["train"][1][indices], rtol=0, atol=0)


# ----------------------------------------------------------------------------- digits


def rows(pixels: Tensor | np.ndarray, labels: Tensor | np.ndarray) -> Counter:
    return Counter(
        (tuple(np.asarray(p).round(6).tolist()), int(label)) for p, label in zip(pixels, labels, strict=True)
    )


def test_digits_are_scaled_to_the_unit_interval_and_split_80_10_10(sklearn_digits) -> None:
    data, target = sklearn_digits
    task = DigitsTask(64)
    sizes = [task.split_size(split) for split in SPLITS]
    assert sizes == [1439, 179, 179] and sum(sizes) == len(target) == 1797
    batches = {split: whole(task, split) for split in SPLITS}
    pixels = torch.cat([batch.inputs.flatten(1) for batch in batches.values()])
    assert pixels.min() == 0 and pixels.max() == 1
    torch.testing.assert_close(pixels * 16, (pixels * 16).round(), rtol=0, atol=1e-6)  # 0..16 / 16
    # the three splits together are exactly sklearn's images, each once
    labels = torch.cat([batch.targets for batch in batches.values()])
    assert rows(pixels * 16, labels) == rows(data, target)


def all_rows(task: DigitsTask) -> Counter:
    batches = [whole(task, split) for split in SPLITS]
    return rows(torch.cat([b.inputs.flatten(1) for b in batches]), torch.cat([b.targets for b in batches]))


def test_digits_split_is_fixed_by_split_seed() -> None:
    assert_same(DigitsTask(8).test_set(), DigitsTask(8, split_seed=0).test_set())
    default, other = DigitsTask(64), DigitsTask(64, split_seed=1)
    assert not torch.equal(other.test_set().inputs, default.test_set().inputs)
    assert all_rows(other) == all_rows(default)  # another split of the same images


def test_digits_rows_and_bad_lengths() -> None:
    pixels = DigitsTask(64).test_set().inputs.flatten(1)
    by_row = DigitsTask(8).test_set()
    assert by_row.inputs.shape == (179, 8, 8)
    torch.testing.assert_close(by_row.inputs, pixels.view(179, 8, 8), rtol=0, atol=0)
    message = "must divide the 64 pixels, got 5; pass one of [1, 2, 4, 8, 16, 32, 64]"
    with pytest.raises(ValueError, match=re.escape(message)):
        DigitsTask(5)
    with pytest.raises(ValueError, match="length must be a positive integer"):
        DigitsTask(0)


def test_digits_baseline_metrics_and_solved_threshold() -> None:
    task = DigitsTask(8)
    test = task.test_set()
    counts = torch.bincount(test.targets, minlength=10)
    assert task.baseline == pytest.approx(counts.max().item() / 179)
    assert task.solved_threshold == 0.95
    perfect = 50.0 * torch.nn.functional.one_hot(test.targets, 10).float()
    metrics = task.metrics(perfect, test)
    assert metrics["accuracy"] == 1.0 and metrics["cross_entropy"] == pytest.approx(0, abs=1e-6)
    majority = torch.zeros(179, 10)
    majority[:, counts.argmax()] = 1.0
    assert task.metrics(majority, test)["accuracy"] == pytest.approx(task.baseline)
    assert task.is_solved(1.0) and not task.is_solved(task.baseline)


def test_digits_sampling_validation_and_test_sets() -> None:
    task = DigitsTask(8)
    batch = task.sample(300, seeded(1))
    assert_same(batch, task.sample(300, seeded(1)))
    assert not torch.equal(batch.inputs, task.sample(300, seeded(2)).inputs)
    expected = task.examples("train", torch.randint(1439, (300,), generator=seeded(1)))
    assert_same(batch, expected)
    validation = task.validation_set(20, seeded(3))
    assert_same(validation, task.validation_set(20, seeded(3)))
    order = torch.randperm(179, generator=seeded(3))[:20].sort().values
    assert_same(validation, task.examples("validation", order))
    assert_same(task.validation_set(10_000, seeded(3)), whole(task, "validation"))
    with pytest.raises(ValueError, match="split must be one of"):
        task.examples("dev", torch.arange(2))


def test_image_tasks_are_registered_by_name() -> None:
    for name, cls in (("smnist", SequentialMNISTTask), ("pmnist", PermutedMNISTTask), ("digits", DigitsTask)):
        assert TASKS.get(name) is cls and cls.name == name
    assert isinstance(get_task("digits", 16), DigitsTask)
