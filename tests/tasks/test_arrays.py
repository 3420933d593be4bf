"""The arrays task on a user's .npz: target layouts, padding, masked losses, baselines, errors.

Every file is tiny and written to ``tmp_path``. Each sequence carries its row number in
``x[:, 0, 0]`` so that a batch can be traced back to the rows of the file it came from.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bptt.builders import build_model
from bptt.config import TrainConfig
from bptt.tasks import TASKS, ArrayTask, Batch, get_task, load_arrays

N, T, FEATURES = 40, 6, 3


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def save(tmp_path: Path, name: str = "data.npz", **arrays: object) -> str:
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


def marked_x(n: int = N, steps: int = T, features: int = FEATURES, seed: int = 0) -> np.ndarray:
    """Random features, with the row number in ``x[:, 0, 0]``."""
    x = np.random.default_rng(seed).normal(size=(n, steps, features))
    x[:, 0, 0] = np.arange(n)
    return x


def rows_of(batch: Batch) -> np.ndarray:
    return batch.inputs[:, 0, 0].round().long().numpy()


def ragged_lengths(n: int = N, steps: int = T) -> np.ndarray:
    lengths = 1 + np.arange(n) % steps
    lengths[0] = steps  # one full-length sequence
    return lengths


def nan_padded(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    padded = x.copy()
    padded[np.arange(x.shape[1])[None, :] >= lengths[:, None]] = np.nan
    return padded


def whole(task: ArrayTask, split: str) -> Batch:
    return task.examples(split, torch.arange(task.split_size(split)))


def assert_same(a: Batch, b: Batch) -> None:
    torch.testing.assert_close(a.inputs, b.inputs, rtol=0, atol=0)
    torch.testing.assert_close(a.targets, b.targets, rtol=0, atol=0)
    torch.testing.assert_close(a.lengths, b.lengths, rtol=0, atol=0)


def random_prediction(task: ArrayTask, batch: Batch, seed: int = 1) -> torch.Tensor:
    shape = (*batch.targets.shape[:2], task.num_outputs) if task.many_to_many else (
        batch.targets.shape[0], task.num_outputs
    )
    return torch.randn(shape, generator=seeded(seed))


# ----------------------------------------------------------------------------- target layouts

rng = np.random.default_rng(7)
LAYOUTS = {
    # name: (y, many_to_many, classification, num_outputs)
    "int (N,)": (rng.integers(0, 3, N), False, True, 3),
    "float (N,)": (rng.normal(size=N), False, False, 1),
    "float (N, D)": (rng.normal(size=(N, 2)), False, False, 2),
    "int (N, T)": (rng.integers(0, 4, (N, T)), True, True, 4),
    "float (N, T)": (rng.normal(size=(N, T)), True, False, 1),
    "float (N, T, D)": (rng.normal(size=(N, T, 2)), True, False, 2),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_shape_and_dtype_of_y_choose_the_task(tmp_path: Path, layout: str) -> None:
    y, many_to_many, classification, num_outputs = LAYOUTS[layout]
    x = marked_x()
    task = ArrayTask(1, data=save(tmp_path, x=x, y=y))
    assert task.many_to_many is many_to_many
    assert task.num_outputs == num_outputs and task.input_size == FEATURES
    assert task.metric_name == ("accuracy" if classification else "mse")
    assert task.higher_is_better is classification
    batch = task.sample(16, seeded())
    rows = rows_of(batch)
    torch.testing.assert_close(batch.inputs, torch.as_tensor(x[rows], dtype=torch.float32))
    expected = torch.as_tensor(y[rows])
    if classification:
        assert batch.targets.dtype == torch.int64
    else:
        assert batch.targets.dtype == torch.float32
        expected = expected.float()
        if expected.ndim == (2 if many_to_many else 1):
            expected = expected.unsqueeze(-1)  # one regression output per sequence or step
    torch.testing.assert_close(batch.targets, expected, rtol=0, atol=0)
    # the prediction layout the task asks for is the one its loss accepts
    prediction = random_prediction(task, batch)
    assert torch.isfinite(task.loss(prediction, batch))
    wrong = prediction[:, 0] if many_to_many else prediction.unsqueeze(1).expand(-1, T, -1)
    with pytest.raises(ValueError, match="must have shape"):
        task.loss(wrong, batch)


def test_two_dimensional_x_is_one_feature_per_step(tmp_path: Path) -> None:
    x = marked_x(features=1)[:, :, 0]
    task = ArrayTask(1, data=save(tmp_path, x=x, y=np.arange(N) % 2))
    assert task.input_size == 1
    batch = task.sample(8, seeded())
    torch.testing.assert_close(batch.inputs[:, :, 0], torch.as_tensor(x[rows_of(batch)], dtype=torch.float32))


def test_float_targets_of_integer_values_are_regression(tmp_path: Path) -> None:
    task = ArrayTask(1, data=save(tmp_path, x=marked_x(), y=(np.arange(N) % 2).astype(np.float32)))
    assert task.metric_name == "mse" and task.num_outputs == 1


def test_per_sequence_float_targets_with_t_columns_are_read_per_step(tmp_path: Path) -> None:
    """The documented rule: y is per step whenever its second axis has T entries."""
    per_step = ArrayTask(1, data=save(tmp_path, "a.npz", x=marked_x(), y=np.ones((N, T))))
    per_sequence = ArrayTask(1, data=save(tmp_path, "b.npz", x=marked_x(), y=np.ones((N, T + 1))))
    assert per_step.many_to_many and per_step.num_outputs == 1
    assert not per_sequence.many_to_many and per_sequence.num_outputs == T + 1


# ----------------------------------------------------------------------------- splits, sampling


def test_splits_partition_the_rows_80_10_10_and_are_fixed_by_split_seed(tmp_path: Path) -> None:
    path = save(tmp_path, x=marked_x(), y=np.arange(N) % 2)
    task = ArrayTask(1, data=path)
    rows = {split: rows_of(whole(task, split)) for split in ("train", "validation", "test")}
    assert [len(rows[split]) for split in rows] == [32, 4, 4]
    assert sorted(np.concatenate(list(rows.values())).tolist()) == list(range(N))
    again = ArrayTask(1, data=path)
    other = ArrayTask(1, data=path, split_seed=1)
    assert np.array_equal(rows_of(whole(again, "test")), rows["test"])
    assert not np.array_equal(rows_of(whole(other, "test")), rows["test"])


def test_sampling_draws_training_rows_with_replacement_from_the_callers_generator(tmp_path: Path) -> None:
    task = ArrayTask(1, data=save(tmp_path, x=marked_x(), y=np.arange(N) % 2))
    assert_same(task.sample(64, seeded(3)), task.sample(64, seeded(3)))
    generator = seeded(3)
    first, second = task.sample(64, generator), task.sample(64, generator)
    assert not torch.equal(first.inputs, second.inputs)
    train = set(rows_of(whole(task, "train")).tolist())
    rows = rows_of(first)
    assert set(rows.tolist()) <= train
    assert len(set(rows.tolist())) < len(rows)  # 64 draws from 32 rows repeat some
    # exactly the documented draw: uniform indices into the training split
    expected = task.examples("train", torch.randint(task.split_size("train"), (64,), generator=seeded(3)))
    assert_same(first, expected)


def test_validation_set_is_a_seeded_subset_and_test_set_the_whole_split(tmp_path: Path) -> None:
    task = ArrayTask(1, data=save(tmp_path, x=marked_x(n=200), y=np.arange(200) % 2))
    validation = set(rows_of(whole(task, "validation")).tolist())
    subset = task.validation_set(5, seeded(2))
    assert len(subset.targets) == 5 and set(rows_of(subset).tolist()) <= validation
    assert_same(subset, task.validation_set(5, seeded(2)))
    assert not torch.equal(subset.inputs, task.validation_set(5, seeded(9)).inputs)
    assert sorted(rows_of(task.validation_set(1000, seeded(2))).tolist()) == sorted(validation)
    assert_same(task.test_set(), whole(task, "test"))


def test_registered_under_arrays_and_needs_a_data_file(tmp_path: Path) -> None:
    path = save(tmp_path, x=marked_x(), y=np.arange(N) % 2)
    assert TASKS.get("arrays") is ArrayTask
    assert isinstance(get_task("arrays", 1, data=path), ArrayTask)
    with pytest.raises(ValueError, match="pass data=PATH"):
        ArrayTask(1)


# ----------------------------------------------------------------------------- padding


def test_lengths_array_and_nan_padding_give_identical_batches(tmp_path: Path) -> None:
    x, lengths = marked_x(), ragged_lengths()
    y = np.random.default_rng(1).integers(0, 3, (N, T))
    garbage = x.copy()
    garbage[np.arange(T)[None, :] >= lengths[:, None]] = np.inf  # anything, beyond lengths
    with_lengths = ArrayTask(1, data=save(tmp_path, "lengths.npz", x=garbage, y=y, lengths=lengths))
    with_nan = ArrayTask(1, data=save(tmp_path, "nan.npz", x=nan_padded(x, lengths), y=y))
    for split in ("train", "validation", "test"):
        assert_same(whole(with_lengths, split), whole(with_nan, split))
    assert_same(with_lengths.sample(32, seeded()), with_nan.sample(32, seeded()))
    batch = whole(with_nan, "train")
    torch.testing.assert_close(batch.lengths, torch.as_tensor(lengths[rows_of(batch)]))
    padding = torch.arange(batch.inputs.shape[1]) >= batch.lengths[:, None]
    assert (batch.inputs[padding] == 0).all() and torch.isfinite(batch.inputs).all()
    assert (batch.targets[padding] == 0).all()


def test_a_batch_is_trimmed_to_its_longest_sequence(tmp_path: Path) -> None:
    lengths = ragged_lengths()
    task = ArrayTask(1, data=save(tmp_path, x=marked_x(), y=np.arange(N) % 2, lengths=lengths))
    short = np.flatnonzero(lengths == 2)
    train_rows = rows_of(whole(task, "train")).tolist()
    indices = torch.tensor([train_rows.index(row) for row in short if row in train_rows])
    batch = task.examples("train", indices)
    assert batch.inputs.shape[1] == 2 and (batch.lengths == 2).all()


def test_nan_in_padded_per_step_targets_is_allowed_and_ignored(tmp_path: Path) -> None:
    x, lengths = marked_x(), ragged_lengths()
    y = np.random.default_rng(2).normal(size=(N, T))
    y[np.arange(T)[None, :] >= lengths[:, None]] = np.nan
    task = ArrayTask(1, data=save(tmp_path, x=x, y=y, lengths=lengths))
    batch = whole(task, "train")
    assert torch.isfinite(batch.targets).all()
    assert torch.isfinite(task.loss(random_prediction(task, batch), batch))


@pytest.mark.parametrize("integer", [True, False], ids=["classes", "regression"])
def test_per_step_loss_ignores_padded_steps(tmp_path: Path, integer: bool) -> None:
    x, lengths = marked_x(), ragged_lengths()
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, (N, T)) if integer else rng.normal(size=(N, T))
    changed = y.copy()
    beyond = np.arange(T)[None, :] >= lengths[:, None]
    changed[beyond] = (changed[beyond] + 1) * 2  # other (still valid) targets beyond each length
    task = ArrayTask(1, data=save(tmp_path, "a.npz", x=x, y=y, lengths=lengths))
    other = ArrayTask(1, data=save(tmp_path, "b.npz", x=x, y=changed, lengths=lengths))
    batch, other_batch = whole(task, "train"), whole(other, "train")
    prediction = random_prediction(task, batch)
    assert task.loss(prediction, batch) == other.loss(prediction, other_batch)
    assert task.metrics(prediction, batch) == other.metrics(prediction, other_batch)
    # the loss is the plain loss over the valid steps only
    valid = torch.arange(batch.targets.shape[1]) < batch.lengths[:, None]
    if integer:
        expected = F.cross_entropy(prediction[valid], batch.targets[valid])
        accuracy = (prediction[valid].argmax(-1) == batch.targets[valid]).float().mean()
        assert task.metrics(prediction, batch)["accuracy"] == pytest.approx(accuracy.item())
    else:
        expected = F.mse_loss(prediction[valid], batch.targets[valid])
    torch.testing.assert_close(task.loss(prediction, batch), expected)
    # predictions at padded steps do not count; at valid steps they do
    noisy = prediction.clone()
    noisy[~valid] = 1e3
    torch.testing.assert_close(task.loss(noisy, batch), task.loss(prediction, batch))
    sequence, step = valid.nonzero()[0].tolist()
    noisy[sequence, step, 0] += 5.0
    assert task.loss(noisy, batch) != task.loss(prediction, batch)


def test_padding_never_changes_a_models_prediction(tmp_path: Path) -> None:
    lengths = ragged_lengths()
    task = ArrayTask(1, data=save(tmp_path, x=marked_x(), y=np.arange(N) % 2, lengths=lengths))
    config = TrainConfig(task="arrays", length=T, hidden=5, cell="gru")
    torch.manual_seed(0)
    model = build_model(config, task).double().eval()
    train_lengths = whole(task, "train").lengths
    short = int(torch.nonzero(train_lengths < T)[0])
    longest = int(torch.argmax(train_lengths))
    alone = task.examples("train", torch.tensor([short]))
    padded = task.examples("train", torch.tensor([short, longest]))
    assert padded.inputs.shape[1] > alone.inputs.shape[1]
    with torch.no_grad():
        logits_alone = model(alone.inputs.double(), alone.lengths)
        logits_padded = model(padded.inputs.double(), padded.lengths)
    torch.testing.assert_close(logits_padded[:1], logits_alone, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- baselines


def test_classification_baseline_is_the_test_majority_share(tmp_path: Path) -> None:
    y = np.where(np.arange(200) % 4 == 0, 1, 0)  # mostly class 0
    y[::7] = 2
    task = ArrayTask(1, data=save(tmp_path, x=marked_x(n=200), y=y))
    test = whole(task, "test")
    counts = np.bincount(y[rows_of(test)], minlength=3)
    assert task.baseline == pytest.approx(counts.max() / counts.sum())
    assert task.solved_threshold == pytest.approx((1 + task.baseline) / 2)
    # always predicting the majority class scores the baseline
    logits = torch.zeros(len(test.targets), 3)
    logits[:, counts.argmax()] = 1.0
    assert task.metrics(logits, test)["accuracy"] == pytest.approx(task.baseline)
    assert 0.5 < task.baseline < 1
    assert not task.is_solved(task.baseline) and task.is_solved(1.0)


def test_per_step_classification_baseline_counts_valid_steps_only(tmp_path: Path) -> None:
    lengths = ragged_lengths()
    beyond = np.arange(T)[None, :] >= lengths[:, None]
    y = np.random.default_rng(6).integers(0, 3, (N, T))
    y[beyond] = 2  # would change the counts if padding were counted
    task = ArrayTask(1, data=save(tmp_path, x=marked_x(), y=y, lengths=lengths))
    test = rows_of(whole(task, "test"))
    counts = np.bincount(y[test][~beyond[test]], minlength=3)
    assert task.baseline == pytest.approx(counts.max() / counts.sum())
    assert counts.sum() == lengths[test].sum() < len(test) * T


def test_regression_baseline_is_the_mse_of_the_training_mean(tmp_path: Path) -> None:
    y = np.random.default_rng(4).normal(loc=[3.0, -1.0], scale=[1.0, 2.0], size=(N, 2))
    task = ArrayTask(1, data=save(tmp_path, x=marked_x(), y=y))
    train, test = whole(task, "train"), whole(task, "test")
    mean = y[rows_of(train)].mean(0)
    expected = ((y[rows_of(test)] - mean) ** 2).mean()
    assert task.baseline == pytest.approx(expected, rel=1e-5)
    assert task.solved_threshold == pytest.approx(0.1 * task.baseline)
    constant = torch.as_tensor(mean, dtype=torch.float32).expand(len(test.targets), -1)
    assert task.metrics(constant, test)["mse"] == pytest.approx(task.baseline, rel=1e-5)
    assert not task.is_solved(task.baseline) and task.is_solved(0.0)


def test_per_step_regression_baseline_uses_valid_steps_only(tmp_path: Path) -> None:
    lengths = ragged_lengths()
    beyond = np.arange(T)[None, :] >= lengths[:, None]
    y = np.random.default_rng(5).normal(size=(N, T))
    y[beyond] = 1e6  # would dominate both the mean and the error if counted
    task = ArrayTask(1, data=save(tmp_path, x=marked_x(), y=y, lengths=lengths))
    train, test = rows_of(whole(task, "train")), rows_of(whole(task, "test"))
    mean = y[train][~beyond[train]].mean()
    expected = ((y[test][~beyond[test]] - mean) ** 2).mean()
    assert task.baseline == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------- errors


def bad_files() -> dict[str, tuple[dict[str, object], str]]:
    x, lengths = marked_x(), ragged_lengths()
    nan_inside = x.copy()
    nan_inside[2, 1, 0] = np.nan  # one feature of a valid step
    inf_inside = x.copy()
    inf_inside[7, 0, 2] = -np.inf
    inner_padding = x.copy()
    inner_padding[3, 2] = np.nan  # a whole step, followed by valid ones
    all_padding = x.copy()
    all_padding[4] = np.nan
    ragged = np.empty(N, dtype=object)
    ragged[:] = [np.zeros(1 + i % 3) for i in range(N)]
    inf_y = np.arange(N, dtype=float)
    inf_y[5] = np.inf
    nan_y = np.zeros((N, T))
    nan_y[6, 0] = np.nan
    labels = np.arange(N) % 2
    return {
        "missing x": ({"y": labels}, r"expected arrays 'x' and 'y'.*got \['y'\]"),
        "missing y": ({"x": x}, r"expected arrays 'x' and 'y'.*got \['x'\]"),
        "ragged x": ({"x": ragged, "y": labels}, r"array 'x' is a ragged \(object\) array"),
        "text x": ({"x": np.array(["a"] * N), "y": labels}, "x must be numeric"),
        "1-D x": ({"x": np.zeros(N), "y": labels}, r"x must be numeric of shape \(N, T, F\)"),
        "empty x": ({"x": np.zeros((0, T, 1)), "y": np.zeros(0)}, "x is empty"),
        "no steps": ({"x": np.zeros((N, 0)), "y": labels}, "x is empty"),
        "empty y": ({"x": x, "y": np.zeros((N, 0))}, "y is empty"),
        "mismatched N": ({"x": x, "y": labels[:-1]}, rf"one row per sequence \({N}\).*shape \({N - 1},\)"),
        "text y": ({"x": x, "y": np.array(["a"] * N)}, "y must be numeric"),
        "NaN in a valid step": ({"x": nan_inside, "y": labels}, "NaN or Inf.*sequence 2, step 1, feature 0"),
        "inner all-NaN step": ({"x": inner_padding, "y": labels}, "sequence 3 has an all-NaN step 2 followed by valid"),
        "all padding": ({"x": all_padding, "y": labels}, "sequence 4 is all padding"),
        "NaN in valid steps with lengths": (
            {"x": nan_inside, "y": labels, "lengths": np.full(N, T)},
            "NaN or Inf values inside the valid steps",
        ),
        "Inf in a valid step": ({"x": inf_inside, "y": labels}, "NaN or Inf.*sequence 7, step 0, feature 2"),
        "lengths zero": ({"x": x, "y": labels, "lengths": lengths - 1}, rf"lengths must lie in 1..{T}.*got 0"),
        "lengths too long": ({"x": x, "y": labels, "lengths": lengths + 1}, rf"lengths must lie in 1..{T}.*{T + 1}"),
        "float lengths": ({"x": x, "y": labels, "lengths": lengths.astype(float)}, r"lengths must be \(40,\) integers"),
        "short lengths": ({"x": x, "y": labels, "lengths": lengths[:3]}, r"lengths must be \(40,\) integers"),
        "negative labels": ({"x": x, "y": labels - 1}, "class labels must be 0, 1, .*minimum of -1"),
        "one class": ({"x": x, "y": np.zeros(N, dtype=int)}, r"at least two distinct class labels.*\[0\]"),
        "2-D integer y": ({"x": x, "y": np.zeros((N, T + 2), dtype=int)}, r"integer \(class\) targets must be"),
        "Inf in y": ({"x": x, "y": inf_y}, "y holds NaN or Inf"),
        "NaN in valid per-step y": ({"x": x, "y": nan_y}, "y holds NaN or Inf"),
    }


@pytest.mark.parametrize("case", bad_files())
def test_bad_arrays_are_refused_with_a_message_naming_the_problem(tmp_path: Path, case: str) -> None:
    arrays, message = bad_files()[case]
    path = save(tmp_path, **arrays)
    with pytest.raises(ValueError, match=message) as error:
        load_arrays(path)
    assert path in str(error.value)  # the message names the file
    with pytest.raises(ValueError, match=message):
        ArrayTask(1, data=path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"x,y\n1,2\n", r"cannot be read as an \.npz archive"),
        (b"PK\x03\x04 not really a zip", r"cannot be read as an \.npz archive"),
        (b"", r"cannot be read as an \.npz archive"),
    ],
)
def test_a_file_that_is_not_an_npz_is_refused(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "data.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_arrays(path)


def test_a_single_npy_array_named_npz_is_refused(tmp_path: Path) -> None:
    """Regression: numpy.load returns an ndarray for a .npy file, which used to give a TypeError."""
    np.save(tmp_path / "data.npy", marked_x())
    path = (tmp_path / "data.npy").rename(tmp_path / "data.npz")
    with pytest.raises(ValueError, match=r"holds a single array, not an \.npz archive.*numpy\.savez"):
        load_arrays(path)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="No such file"):
        load_arrays(tmp_path / "absent.npz")


def test_too_few_sequences_to_split_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="leaves a split empty"):
        ArrayTask(1, data=save(tmp_path, x=marked_x(n=5), y=np.arange(5) % 2))


def test_an_edited_file_is_read_again(tmp_path: Path) -> None:
    """Regression: load_arrays was cached by path alone and returned the old arrays."""
    path = save(tmp_path, x=marked_x(), y=np.arange(N) % 2)
    first = ArrayTask(1, data=path)
    np.savez(path, x=marked_x(), y=np.arange(N) % 3)  # same size as before
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = ArrayTask(1, data=path)
    assert first.num_outputs == 2 and second.num_outputs == 3
    x, y, lengths, classification = load_arrays(path)
    assert y.dtype == torch.int64 and classification
    assert torch.equal(y, torch.arange(N) % 3) and (lengths == T).all() and x.shape == (N, T, FEATURES)


def test_boolean_labels_are_binary_classes(tmp_path: Path) -> None:
    x = marked_x()
    task = ArrayTask(T, data=save(tmp_path, x=x, y=x[:, 1, 0] > 0))
    assert task.metric_name == "accuracy" and task.num_outputs == 2
    batch = whole(task, "train")
    np.testing.assert_array_equal(batch.targets.numpy(), (x[rows_of(batch), 1, 0] > 0).astype(np.int64))


def test_complex_values_are_refused(tmp_path: Path) -> None:
    x = marked_x().astype(np.complex64)
    with pytest.raises(ValueError, match="must be real numbers"):
        load_arrays(save(tmp_path, x=x, y=np.zeros(N, dtype=np.int64)))
