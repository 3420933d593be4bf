"""Truncated-BPTT streams: consecutive chunks, restarts, windows, bits per token, baseline.

:class:`PositionStream` holds streams of position ids (token ``i`` is ``i``), so a chunk
shows where in the stream it was cut from; :class:`~bptt.tasks.CharLMTask` on tiny text
files checks the same against real text.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bptt.builders import build_model
from bptt.config import TrainConfig
from bptt.data import UNK_ID
from bptt.tasks import AbstractStreamTask, Batch, CharLMTask

TRAIN, VALIDATION, TEST = 103, 31, 17
VOCAB = 200


class PositionStream(AbstractStreamTask):
    """Token ``i`` of each split is ``offset + i``: ids are positions."""

    name = "positions"
    description = "position ids, for tests"
    solved_threshold = 0.1

    def __init__(self, length: int, sizes: tuple[int, int, int] = (TRAIN, VALIDATION, TEST)) -> None:
        offsets = (0, 100, 150)
        streams = {
            split: (offset + torch.arange(size)) % VOCAB
            for split, offset, size in zip(("train", "validation", "test"), offsets, sizes, strict=True)
        }
        super().__init__(length, streams, VOCAB, embedding=4)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def write_text(tmp_path: Path, text: str, name: str = "text.txt") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


SAMPLE_TEXT = "".join(f"Line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(12))


# ----------------------------------------------------------------------------- training chunks


@pytest.mark.parametrize(("length", "batch_size"), [(5, 4), (7, 1), (3, 10)])
def test_chunks_per_epoch_counts_whole_chunks_of_each_part(length: int, batch_size: int) -> None:
    task = PositionStream(length)
    part = (TRAIN - 1) // batch_size
    assert task.chunks_per_epoch(batch_size) == part // length


@pytest.mark.parametrize(("length", "batch_size"), [(5, 4), (4, 3), (10, 1)])
def test_consecutive_chunks_continue_each_part_of_the_stream(length: int, batch_size: int) -> None:
    task = PositionStream(length)
    chunks = task.chunks_per_epoch(batch_size)
    part = (TRAIN - 1) // batch_size
    previous = None
    for step in range(chunks):
        batch, _ = task.stream_batch(step, batch_size)
        assert batch.inputs.shape == batch.targets.shape == (batch_size, length)
        assert batch.lengths is None
        starts = torch.arange(batch_size) * part + step * length
        torch.testing.assert_close(batch.inputs, starts[:, None] + torch.arange(length))
        torch.testing.assert_close(batch.targets, batch.inputs + 1)  # the next token
        if previous is not None:  # part b of chunk s + 1 starts where part b of chunk s ended
            torch.testing.assert_close(batch.inputs[:, 0], previous.targets[:, -1])
        previous = batch


def test_restart_is_true_exactly_at_multiples_of_chunks_per_epoch() -> None:
    task = PositionStream(5)
    chunks = task.chunks_per_epoch(4)
    assert chunks > 2
    for step in range(3 * chunks + 1):
        batch, restart = task.stream_batch(step, 4)
        assert restart is (step % chunks == 0)
        first, _ = task.stream_batch(step % chunks, 4)
        torch.testing.assert_close(batch.inputs, first.inputs, rtol=0, atol=0)


def test_stream_batch_is_a_pure_function_of_the_step() -> None:
    task = PositionStream(5)
    before = task.stream_batch(3, 4)[0]
    task.stream_batch(0, 4), task.stream_batch(7, 2), task.sample(8, seeded())
    torch.testing.assert_close(task.stream_batch(3, 4)[0].inputs, before.inputs, rtol=0, atol=0)


def test_too_large_a_batch_or_length_for_the_stream_is_refused() -> None:
    task = PositionStream(9)
    with pytest.raises(ValueError, match="fewer than length = 9 per part"):
        task.chunks_per_epoch(20)
    with pytest.raises(ValueError, match="fewer than length = 9 per part"):
        task.stream_batch(0, 20)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        task.stream_batch(0, 0)


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_a_split_shorter_than_length_plus_one_is_refused(split: str) -> None:
    sizes = dict(zip(("train", "validation", "test"), (TRAIN, VALIDATION, TEST), strict=True))
    sizes[split] = 6
    with pytest.raises(ValueError, match=f"the {split} split holds 6 tokens, fewer than length \\+ 1 = 7"):
        PositionStream(6, tuple(sizes.values()))
    PositionStream(5, tuple(sizes.values()))


# ----------------------------------------------------------------------------- scoring chunks


@pytest.mark.parametrize("split", ["train", "validation", "test"])
@pytest.mark.parametrize(("length", "batch_size"), [(4, 1), (4, 3), (7, 2)])
def test_concatenated_chunks_reproduce_the_split(split: str, length: int, batch_size: int) -> None:
    task = PositionStream(length)
    stream = task.streams[split]
    chunks = task.chunks(split, batch_size)
    part = (stream.numel() - 1) // batch_size
    assert [chunk.inputs.shape[1] for chunk in chunks[:-1]] == [length] * (len(chunks) - 1)
    assert 1 <= chunks[-1].inputs.shape[1] <= length  # the last chunk may be shorter
    inputs = torch.cat([chunk.inputs for chunk in chunks], dim=1)
    targets = torch.cat([chunk.targets for chunk in chunks], dim=1)
    assert inputs.shape == (batch_size, part)
    torch.testing.assert_close(inputs.flatten(), stream[: batch_size * part])
    torch.testing.assert_close(targets.flatten(), stream[1 : batch_size * part + 1])


def test_chunks_keep_only_the_first_max_tokens() -> None:
    task = PositionStream(4)
    chunks = task.chunks("train", 2, max_tokens=21)
    inputs = torch.cat([chunk.inputs for chunk in chunks], dim=1)
    targets = torch.cat([chunk.targets for chunk in chunks], dim=1)
    torch.testing.assert_close(inputs.flatten(), torch.arange(20))
    assert int(targets.max()) == 20  # never past the first 21 tokens


def test_a_batch_larger_than_a_small_split_is_reduced_to_parts_of_a_whole_chunk() -> None:
    task = PositionStream(3)
    chunks = task.chunks("test", 100)
    assert chunks[0].inputs.shape == ((TEST - 1) // 3, 3)


def test_training_never_shrinks_the_batch_silently() -> None:
    task = PositionStream(1)
    with pytest.raises(ValueError, match="per part"):
        task.stream_batch(0, TRAIN + 5)
    assert task.stream_batch(0, 50)[0].inputs.shape == (50, 1)


# ----------------------------------------------------------------------------- windows


def test_sample_draws_windows_of_the_training_stream_with_the_callers_generator() -> None:
    task = PositionStream(6)
    batch = task.sample(256, seeded(1))
    assert batch.inputs.shape == batch.targets.shape == (256, 6)
    starts = batch.inputs[:, :1]
    torch.testing.assert_close(batch.inputs, starts + torch.arange(6))
    torch.testing.assert_close(batch.targets, batch.inputs + 1)
    assert int(starts.min()) == 0 and int(batch.targets.max()) == TRAIN - 1  # every start reachable
    same = task.sample(256, seeded(1))
    torch.testing.assert_close(same.inputs, batch.inputs, rtol=0, atol=0)
    assert not torch.equal(task.sample(256, seeded(2)).inputs, batch.inputs)


def test_validation_set_draws_windows_of_the_validation_stream() -> None:
    task = PositionStream(6)
    batch = task.validation_set(64, seeded(1))
    offset = 100
    assert batch.inputs.shape == (64, 6)
    torch.testing.assert_close(batch.inputs, batch.inputs[:, :1] + torch.arange(6))
    torch.testing.assert_close(batch.targets, batch.inputs + 1)
    assert offset <= int(batch.inputs.min()) and int(batch.targets.max()) <= offset + VALIDATION - 1
    torch.testing.assert_close(task.validation_set(64, seeded(1)).inputs, batch.inputs, rtol=0, atol=0)


@pytest.mark.parametrize("method", ["sample", "validation_set"])
def test_windows_need_a_generator_and_a_positive_size(method: str) -> None:
    draw = getattr(PositionStream(6), method)
    with pytest.raises(TypeError, match="torch.Generator"):
        draw(4, 0)
    with pytest.raises(ValueError, match="must be a positive integer"):
        draw(0, seeded())


# ----------------------------------------------------------------------------- loss and metrics


def test_bits_per_token_is_cross_entropy_over_ln_2() -> None:
    task = PositionStream(5)
    batch = task.sample(8, seeded())
    logits = torch.randn(8, 5, VOCAB, generator=seeded(3))
    expected = F.cross_entropy(logits.reshape(-1, VOCAB), batch.targets.reshape(-1))
    torch.testing.assert_close(task.loss(logits, batch), expected)
    metrics = task.metrics(logits, batch)
    assert metrics["bits_per_token"] == pytest.approx(expected.item() / math.log(2))
    assert metrics["cross_entropy"] == pytest.approx(expected.item())
    correct = (logits.argmax(-1) == batch.targets).float().mean().item()
    assert metrics["accuracy"] == pytest.approx(correct)
    # a uniform guess costs log2(vocabulary) bits; a sure right one nothing
    assert task.metrics(torch.zeros(8, 5, VOCAB), batch)["bits_per_token"] == pytest.approx(math.log2(VOCAB))
    sure = 100.0 * F.one_hot(batch.targets, VOCAB).float()
    assert task.metrics(sure, batch)["bits_per_token"] == pytest.approx(0.0, abs=1e-6)
    assert task.is_solved(0.0) and not task.is_solved(task.baseline)


def test_prediction_must_have_a_step_axis() -> None:
    task = PositionStream(5)
    batch = task.sample(2, seeded())
    with pytest.raises(ValueError, match=r"must have shape \(2, 5, 200\)"):
        task.loss(torch.zeros(2, VOCAB), batch)


def test_baseline_is_the_unigram_entropy_of_the_training_text_in_bits(tmp_path: Path) -> None:
    # 90 training characters: a 45 times, b 30, c 15; validation and test: d (unseen)
    text = "a" * 45 + "b" * 30 + "c" * 15 + "d" * 10
    task = CharLMTask(4, data=write_text(tmp_path, text))
    entropy = 0.5 * math.log2(2) + (1 / 3) * math.log2(3) + (1 / 6) * math.log2(6)
    assert task.baseline == pytest.approx(entropy)
    assert task.vocab_size == task.num_outputs == 5  # <pad>, <unk>, a, b, c
    assert (task.streams["validation"] == UNK_ID).all() and (task.streams["test"] == UNK_ID).all()
    # the memoryless predictor (the training unigram distribution) scores about the baseline
    counts = torch.bincount(task.streams["train"], minlength=task.vocab_size).double()
    logits = (counts / counts.sum()).clamp_min(1e-12).log().float()
    chunk = task.chunks("train", 1)
    targets = torch.cat([batch.targets for batch in chunk], dim=1)
    metrics = task.metrics(logits.expand(*targets.shape, -1), Batch(targets, targets))
    assert metrics["bpc"] == pytest.approx(task.baseline, abs=0.02)


# ----------------------------------------------------------------------------- charlm streams


def test_charlm_splits_the_text_90_5_5_in_order(tmp_path: Path) -> None:
    task = CharLMTask(8, data=write_text(tmp_path, SAMPLE_TEXT))
    n = len(SAMPLE_TEXT)
    cuts = int(0.9 * n), int(0.95 * n)
    expected = {
        "train": SAMPLE_TEXT[: cuts[0]],
        "validation": SAMPLE_TEXT[cuts[0] : cuts[1]],
        "test": SAMPLE_TEXT[cuts[1] :],
    }
    for split, text in expected.items():
        assert task.tokenizer.decode(task.streams[split]) == text
    assert task.tokenizer.tokens[2:] == sorted(set(expected["train"]))


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_charlm_chunks_of_one_part_spell_out_the_split(tmp_path: Path, split: str) -> None:
    task = CharLMTask(8, data=write_text(tmp_path, SAMPLE_TEXT))
    chunks = task.chunks(split, 1)
    text = "".join(task.tokenizer.decode(chunk.inputs[0]) for chunk in chunks)
    text += task.tokenizer.decode(chunks[-1].targets[0, -1:])
    assert text == task.tokenizer.decode(task.streams[split])
    assert "<unk>" not in text  # every character of this text is seen in training


def test_charlm_training_chunks_read_the_text_part_by_part(tmp_path: Path) -> None:
    task = CharLMTask(6, data=write_text(tmp_path, SAMPLE_TEXT))
    train = SAMPLE_TEXT[: int(0.9 * len(SAMPLE_TEXT))]
    batch_size, chunks = 3, task.chunks_per_epoch(3)
    part = (len(train) - 1) // batch_size
    rows = ["", "", ""]
    for step in range(chunks):
        batch, restart = task.stream_batch(step, batch_size)
        assert restart == (step == 0)
        for b in range(batch_size):
            rows[b] += task.tokenizer.decode(batch.inputs[b])
    for b, row in enumerate(rows):
        assert row == train[b * part : b * part + chunks * 6]


def test_carrying_the_state_over_chunks_equals_one_pass_over_the_stream(tmp_path: Path) -> None:
    """What truncated BPTT relies on: the chunks of a part are one sequence, cut."""
    path = write_text(tmp_path, SAMPLE_TEXT)
    task = CharLMTask(8, data=path)
    config = TrainConfig(task="charlm", data=path, length=8, hidden=6, embedding=4, cell="lstm")
    torch.manual_seed(0)
    model = build_model(config, task).double().eval()
    chunks = task.chunks("train", 3)
    with torch.no_grad():
        state, pieces = None, []
        for chunk in chunks:
            logits, state = model.forward_with_state(chunk.inputs, state)
            pieces.append(logits)
        carried = torch.cat(pieces, dim=1)
        whole = model(torch.cat([chunk.inputs for chunk in chunks], dim=1))
    torch.testing.assert_close(carried, whole, rtol=0, atol=1e-12)
    targets = torch.cat([chunk.targets for chunk in chunks], dim=1)
    scored = sum(task.loss(p, c) * c.targets.numel() for p, c in zip(pieces, chunks, strict=True)) / targets.numel()
    torch.testing.assert_close(scored, F.cross_entropy(whole.flatten(0, 1), targets.flatten()))
