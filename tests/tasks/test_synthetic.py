"""Synthetic tasks: determinism, structure, empirical baselines, losses and errors."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from bptt.tasks import (
    AGREEMENT_PAD,
    AGREEMENT_VOCABULARY,
    TASKS,
    TEMPORAL_ORDER_SYMBOLS,
    AbstractTask,
    AddingTask,
    AgreementTask,
    Batch,
    CopyTask,
    TemporalOrderTask,
    adding_problem,
    agreement,
    copy_memory,
    get_task,
    temporal_order,
)

NAMES = ["adding", "copy", "temporal-order", "agreement"]
BIG = 20_000


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_same(a: Batch, b: Batch) -> None:
    torch.testing.assert_close(a.inputs, b.inputs, rtol=0, atol=0)
    torch.testing.assert_close(a.targets, b.targets, rtol=0, atol=0)
    if a.lengths is None:
        assert b.lengths is None
    else:
        torch.testing.assert_close(a.lengths, b.lengths, rtol=0, atol=0)


def perfect_prediction(task: AbstractTask, batch: Batch) -> torch.Tensor:
    """The targets themselves (regression) or confident one-hot logits (classification)."""
    if task.metric_name == "mse":
        return batch.targets.clone()
    return 50.0 * torch.nn.functional.one_hot(batch.targets, task.num_outputs).float()


def constant_logits(batch_size: int, probabilities: list[float]) -> torch.Tensor:
    return torch.tensor(probabilities).log().expand(batch_size, -1)


# ----------------------------------------------------------------------------- all tasks


@pytest.mark.parametrize("name", NAMES)
def test_same_generator_state_gives_the_same_batch(name):
    task = get_task(name, 20)
    assert_same(task.sample(16, seeded(3)), task.sample(16, seeded(3)))
    generator = seeded(3)
    first, second = task.sample(16, generator), task.sample(16, generator)
    assert not torch.equal(first.inputs, second.inputs)
    assert not torch.equal(task.sample(16, seeded(4)).inputs, task.sample(16, seeded(3)).inputs)


@pytest.mark.parametrize("name", NAMES)
def test_batch_agrees_with_the_declared_sizes(name):
    task = get_task(name, 20)
    batch = task.sample(8, seeded())
    if task.vocab_size is None:
        assert batch.inputs.shape[::2] == (8, task.input_size)
        assert batch.inputs.dtype == torch.float32
    else:
        assert task.input_size == task.vocab_size
        assert batch.inputs.dtype == torch.long
        assert batch.inputs.min() >= 0 and batch.inputs.max() < task.vocab_size
    steps = batch.inputs.shape[1]
    if task.many_to_many:
        assert batch.targets.shape == (8, steps)
    if task.metric_name != "mse":
        assert batch.targets.min() >= 0 and batch.targets.max() < task.num_outputs


@pytest.mark.parametrize("name", NAMES)
def test_perfect_prediction_has_near_zero_loss_and_solves_the_task(name):
    task = get_task(name, 20)
    batch = task.sample(64, seeded())
    prediction = perfect_prediction(task, batch)
    if task.many_to_many:
        assert prediction.shape == (*batch.targets.shape, task.num_outputs)
    assert task.loss(prediction, batch).item() == pytest.approx(0.0, abs=1e-6)
    metrics = task.metrics(prediction, batch)
    assert task.metric_name in metrics
    assert task.is_solved(metrics[task.metric_name])
    assert not task.is_solved(task.baseline)


@pytest.mark.parametrize("name", NAMES)
def test_loss_is_differentiable(name):
    task = get_task(name, 20)
    batch = task.sample(8, seeded())
    shape = (8, task.num_outputs)
    if task.many_to_many:
        shape = (8, batch.targets.shape[1], task.num_outputs)
    prediction = torch.randn(shape, generator=seeded(1), requires_grad=True)
    task.loss(prediction, batch).backward()
    assert prediction.grad is not None and prediction.grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_wrong_prediction_shape_is_refused_with_the_expected_shape(name):
    task = get_task(name, 20)
    batch = task.sample(4, seeded())
    steps = batch.inputs.shape[1]
    per_step, per_sequence = (4, steps, task.num_outputs), (4, task.num_outputs)
    expected, wrong = (per_step, per_sequence) if task.many_to_many else (per_sequence, per_step)
    for method in (task.loss, task.metrics):
        with pytest.raises(ValueError, match=re.escape(f"must have shape {expected}")):
            method(torch.zeros(wrong), batch)
    with pytest.raises(ValueError, match="float"):
        task.loss(torch.zeros(expected, dtype=torch.long), batch)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("length", [0, -3, 2.5, True, "10"])
def test_invalid_length_is_refused(name, length):
    with pytest.raises(ValueError, match="length must be a positive integer"):
        get_task(name, length)


@pytest.mark.parametrize(
    ("name", "too_short", "minimum"),
    [("adding", 1, 2), ("temporal-order", 9, 10), ("agreement", 2, 3)],
)
def test_length_too_short_for_the_task_is_refused(name, too_short, minimum):
    with pytest.raises(ValueError, match=f"at least {minimum} .*got {too_short}"):
        get_task(name, too_short)
    get_task(name, minimum)


@pytest.mark.parametrize("name", NAMES)
def test_invalid_batch_size_and_generator_are_refused(name):
    task = get_task(name, 20)
    for batch_size in (0, -1, 1.0):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            task.sample(batch_size, seeded())
    with pytest.raises(TypeError, match="torch.Generator"):
        task.sample(4, 0)


def test_numpy_integer_length_is_accepted():
    assert get_task("adding", np.int64(12)).length == 12


def test_is_solved_respects_the_direction_of_the_metric():
    adding, order = AddingTask(10), TemporalOrderTask(10)
    assert adding.is_solved(0.009) and not adding.is_solved(0.011)
    assert order.is_solved(0.95) and not order.is_solved(0.94)


def test_batch_to_moves_data_and_keeps_lengths_on_the_cpu():
    batch = agreement(10, 4, seeded())
    moved = batch.to("meta")
    assert moved.inputs.device.type == "meta" and moved.targets.device.type == "meta"
    assert moved.lengths is batch.lengths
    with pytest.raises(AttributeError):
        batch.inputs = batch.targets


# ----------------------------------------------------------------------------- registry


def test_registry_knows_every_task_by_name():
    real_data = ["arrays", "charlm", "digits", "pmnist", "sentiment", "smnist"]
    assert TASKS.names() == sorted(NAMES + real_data)
    for name, cls in zip(NAMES, (AddingTask, CopyTask, TemporalOrderTask, AgreementTask), strict=True):
        task = get_task(name, 30)
        assert type(task) is cls and task.name == name and task.length == 30


def test_registry_suggests_the_closest_name_on_a_typo():
    message = "unknown task 'temporal_order'.*Did you mean 'temporal-order'"
    with pytest.raises(ValueError, match=message):
        get_task("temporal_order", 30)


def test_get_task_passes_options():
    task = get_task("agreement", 12, vary_length=False)
    assert task.sample(4, seeded()).lengths is None
    assert get_task("copy", 5, num_symbols=3).sample(2, seeded()).inputs.shape == (2, 11)


# ----------------------------------------------------------------------------- adding


def test_adding_marks_one_value_in_each_half_and_targets_their_sum():
    length = 31
    batch = adding_problem(length, 512, seeded())
    values, markers = batch.inputs.unbind(-1)
    assert ((values >= 0) & (values < 1)).all()
    assert set(markers.unique().tolist()) == {0.0, 1.0}
    half = length // 2
    assert (markers[:, :half].sum(1) == 1).all() and (markers[:, half:].sum(1) == 1).all()
    torch.testing.assert_close(batch.targets, (values * markers).sum(1, keepdim=True))
    # every position of each half gets marked somewhere in the batch
    assert (markers.sum(0) > 0).all()


def test_adding_constant_prediction_scores_the_baseline():
    task = AddingTask(50)
    batch = task.sample(BIG, seeded())
    mse = task.metrics(torch.ones(BIG, 1), batch)["mse"]
    assert mse == pytest.approx(task.baseline, abs=0.01)
    assert task.baseline == pytest.approx(1 / 6)


# ----------------------------------------------------------------------------- copy


def test_copy_targets_are_the_first_symbols_shifted_by_delay_plus_ten():
    delay = 15
    batch = copy_memory(delay, 64, seeded())
    inputs, targets = batch.inputs, batch.targets
    assert inputs.shape == targets.shape == (64, delay + 20)
    symbols = inputs[:, :10]
    assert ((symbols >= 1) & (symbols <= 8)).all()
    torch.testing.assert_close(targets[:, delay + 10 :], symbols)
    assert (targets[:, : delay + 10] == 0).all()
    assert (inputs[:, delay + 9] == 9).all()
    rest = torch.cat([inputs[:, 10 : delay + 9], inputs[:, delay + 10 :]], dim=1)
    assert (rest == 0).all()


def test_copy_blank_then_uniform_predictor_scores_the_baseline():
    delay = 30
    task = CopyTask(delay)
    batch = task.sample(BIG // 10, seeded())
    blank = [1.0] + [1e-12] * 9
    uniform = [1e-12] + [1 / 8] * 8 + [1e-12]
    logits = torch.cat(
        [
            constant_logits(delay + 10, blank),
            constant_logits(10, uniform),
        ]
    ).expand(batch.targets.shape[0], -1, -1)
    metrics = task.metrics(logits, batch)
    assert task.baseline == pytest.approx(10 * math.log(8) / (delay + 20))
    assert metrics["cross_entropy"] == pytest.approx(task.baseline, rel=1e-4)
    assert metrics["accuracy"] == pytest.approx(1 / 8, abs=0.02)
    assert not task.is_solved(metrics["cross_entropy"])


def test_copy_accuracy_counts_only_the_recalled_symbols():
    task = CopyTask(5)
    batch = task.sample(32, seeded())
    prediction = perfect_prediction(task, batch)
    prediction[:, :15] = prediction[:, -1:].roll(1, dims=-1)  # wrong before the recall
    assert task.metrics(prediction, batch)["accuracy"] == 1.0
    prediction[:, -1] = prediction[:, -1].roll(1, dims=-1)
    assert task.metrics(prediction, batch)["accuracy"] == pytest.approx(0.9)


# ----------------------------------------------------------------------------- temporal order


def test_temporal_order_label_matches_the_relevant_symbols():
    length = 100
    batch = temporal_order(length, 1024, seeded())
    symbols = np.array(TEMPORAL_ORDER_SYMBOLS)[batch.inputs.numpy()]
    assert (symbols[:, 0] == "B").all() and (symbols[:, -1] == "E").all()
    assert np.isin(symbols[:, 1:-1], ["a", "b", "c", "d", "X", "Y"]).all()
    classes = ["XX", "XY", "YX", "YY"]
    t1_seen, t2_seen = set(), set()
    for row, label in zip(symbols, batch.targets.tolist(), strict=True):
        (positions,) = np.nonzero(np.isin(row, ["X", "Y"]))
        assert len(positions) == 2
        t1, t2 = positions.tolist()
        assert 10 <= t1 <= 20 and 50 <= t2 <= 60
        t1_seen.add(t1), t2_seen.add(t2)
        assert row[t1] + row[t2] == classes[label]
    assert t1_seen == set(range(10, 21)) and t2_seen == set(range(50, 61))


def test_temporal_order_constant_prediction_scores_the_baseline():
    task = TemporalOrderTask(20)
    batch = task.sample(BIG, seeded())
    counts = torch.bincount(batch.targets, minlength=4) / BIG
    torch.testing.assert_close(counts, torch.full((4,), 0.25), atol=0.015, rtol=0)
    accuracy = task.metrics(constant_logits(BIG, [0.4, 0.2, 0.2, 0.2]), batch)["accuracy"]
    assert accuracy == pytest.approx(task.baseline, abs=0.015)


# ----------------------------------------------------------------------------- agreement

CATEGORY = {"the": "D", "that": "T"} | {
    word: category
    for category, words in {
        "A": ("old", "small", "quiet", "green"),
        "P": ("near", "behind", "beside", "under"),
        "V": ("saw", "liked", "chased", "followed"),
    }.items()
    for word in words
}
GRAMMAR = re.compile(r"DN(?:PDA*N|TDA*NV)+")


def nouns(words: list[str]) -> list[bool]:
    """Whether each noun in ``words`` is plural."""
    return [word.endswith("s") or word == "children" for word in words if word not in CATEGORY]


def test_agreement_label_is_the_subjects_number_and_attractors_vary():
    length = 12
    task = AgreementTask(length)
    batch = task.sample(2000, seeded())
    assert batch.lengths.dtype == torch.int64 and batch.lengths.device.type == "cpu"
    last_noun_right, attractor_numbers = 0, set()
    for ids, label, size in zip(batch.inputs, batch.targets.tolist(), batch.lengths.tolist(), strict=True):
        assert length // 2 + 2 <= size <= length + 2
        assert (ids[size:] == AGREEMENT_PAD).all() and (ids[:size] != AGREEMENT_PAD).all()
        words = task.decode(ids).split()
        assert len(words) == size
        assert GRAMMAR.fullmatch("".join(CATEGORY.get(word, "N") for word in words)), words
        subject, *attractors = nouns(words)
        assert label == int(subject) and task.labels[label] == ("were" if subject else "was")
        attractor_numbers.update(attractors)
        last_noun_right += attractors[-1] == subject
    assert attractor_numbers == {False, True}
    assert last_noun_right / 2000 == pytest.approx(0.5, abs=0.05)
    assert set(batch.lengths.tolist()) == set(range(length // 2 + 2, length + 3))


def test_agreement_constant_prediction_scores_the_baseline():
    task = AgreementTask(20)
    batch = task.sample(BIG // 4, seeded())
    accuracy = task.metrics(constant_logits(BIG // 4, [0.6, 0.4]), batch)["accuracy"]
    assert accuracy == pytest.approx(task.baseline, abs=0.02)


def test_agreement_fixed_length_fills_every_step():
    batch = agreement(7, 64, seeded(), vary_length=False)
    assert batch.lengths is None
    assert batch.inputs.shape == (64, 9) and (batch.inputs != AGREEMENT_PAD).all()


def test_agreement_vocabulary_decodes_token_ids():
    task = AgreementTask(3)
    assert task.vocabulary == AGREEMENT_VOCABULARY and task.vocabulary[AGREEMENT_PAD] == "<pad>"
    assert task.decode([1, 2, 0, 0]) == "the that"
    assert task.decode(torch.tensor([1, 2])) == "the that"


def test_copy_probe_is_the_loss_of_the_recall_steps_alone():
    task = CopyTask(20)
    batch = task.sample(4, torch.Generator().manual_seed(0))
    prediction = torch.randn(4, batch.targets.shape[1], task.num_outputs)
    recalled = slice(-task.num_symbols, None)
    expected = torch.nn.functional.cross_entropy(
        prediction[:, recalled].flatten(0, 1), batch.targets[:, recalled].flatten()
    )
    torch.testing.assert_close(task.probe_loss(prediction, batch), expected)
    prediction[:, : -task.num_symbols] = 1e6  # the blank steps do not count
    torch.testing.assert_close(task.probe_loss(prediction, batch), expected)
