"""Sentiment and character language-model tasks on a user's files and on the installed data.

User CSVs are built from "digit texts": text ``i`` spells the digits of ``i`` as words
("one two three" for 123), so every review can be read back from its token ids and traced
to its row, while the words are frequent enough to be in any training vocabulary.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from pathlib import Path

import pytest
import torch

from bptt.builders import build_model
from bptt.config import TrainConfig
from bptt.data import UNK_ID, load_shakespeare
from bptt.tasks import (
    TASKS,
    Batch,
    CharLMTask,
    SentimentTask,
    get_task,
    read_labelled_csv,
    read_text_file,
    task_for_file,
)

SPLITS = ("train", "validation", "test")
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def digit_text(i: int) -> str:
    return " ".join(DIGITS[int(c)] for c in f"{i:03d}")


def write_csv(
    tmp_path: Path,
    rows: list[tuple[str, str]],
    name: str = "reviews.csv",
    header: tuple[str, ...] = ("text", "label"),
    encoding: str = "utf-8",
) -> str:
    path = tmp_path / name
    with open(path, "w", newline="", encoding=encoding) as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def digit_rows(n: int = 60, suffix: dict[int, str] | None = None) -> list[tuple[str, str]]:
    suffix = suffix or {}
    return [(f"{digit_text(i)}{suffix.get(i, '')}", "good" if i % 3 else "bad") for i in range(n)]


def whole(task: SentimentTask, split: str) -> Batch:
    return task.examples(split, torch.arange(task.split_size(split)))


def decoded(task: SentimentTask, batch: Batch) -> list[str]:
    return [task.tokenizer.decode(ids[:length]) for ids, length in zip(batch.inputs, batch.lengths, strict=True)]


def texts_by_split(task: SentimentTask) -> dict[str, list[str]]:
    return {split: decoded(task, whole(task, split)) for split in SPLITS}


def row_of(text: str) -> int:
    return int("".join(str(DIGITS.index(word)) for word in text.split()[:3]))


def assert_same(a: Batch, b: Batch) -> None:
    torch.testing.assert_close(a.inputs, b.inputs, rtol=0, atol=0)
    torch.testing.assert_close(a.targets, b.targets, rtol=0, atol=0)
    torch.testing.assert_close(a.lengths, b.lengths, rtol=0, atol=0)


# ----------------------------------------------------------------------------- read_labelled_csv


def test_labels_are_mapped_to_the_sorted_class_names(tmp_path: Path) -> None:
    rows = [("a fine film", "pos"), ("dull", "neg"), ("so so", "neutral"), ("great, \"really\"\nfun", "pos")]
    examples, class_names = read_labelled_csv(write_csv(tmp_path, rows))
    assert class_names == ("neg", "neutral", "pos")
    assert examples == [("a fine film", 2), ("dull", 0), ("so so", 1), ('great, "really" fun', 2)]


def test_extra_columns_are_ignored_and_labels_stripped(tmp_path: Path) -> None:
    rows = [("1", "good one", " 1 "), ("2", "bad one", "0")]
    path = write_csv(tmp_path, rows, header=("id", "text", "label"))
    assert read_labelled_csv(path) == ([("good one", 1), ("bad one", 0)], ("0", "1"))


def test_duplicates_are_dropped_after_cleaning_and_conflicts_removed(tmp_path: Path) -> None:
    rows = [
        ("Nice  film<br />ok", "pos"),
        ("nice film ok", "neg"),  # differs in case: another text
        ("Nice film ok", "pos"),  # the first one again, once cleaned
        ("torn", "pos"),
        ("torn", "neg"),  # labelled both ways: all its copies go
        ("meh", "neg"),
    ]
    examples, class_names = read_labelled_csv(write_csv(tmp_path, rows))
    assert class_names == ("neg", "pos")
    assert examples == [("Nice film ok", 1), ("nice film ok", 0), ("meh", 0)]


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path: Path) -> None:
    """Regression: a CSV saved by Excel starts with a BOM, which hid the 'text' column."""
    path = write_csv(tmp_path, [("good", "1"), ("bad", "0")], encoding="utf-8-sig")
    assert read_labelled_csv(path) == ([("good", 1), ("bad", 0)], ("0", "1"))


@pytest.mark.parametrize(
    ("header", "rows", "message"),
    [
        (("review", "label"), [("a", "1"), ("b", "0")], r"naming the columns 'text' and 'label'.*missing \['text'\]"),
        (("text", "sentiment"), [("a", "1"), ("b", "0")], r"missing \['label'\]"),
        (("text", "label"), [("a", "1"), ("b", "1")], r"at least two distinct labels, got \['1'\]"),
        (("text", "label"), [], r"at least two distinct labels, got \[\]"),
        (("text", "label"), [("a", "1"), ("b", "0"), ("b", "1")], r"at least two distinct labels, got \['1'\]"),
        (("text", "label"), [("a", "1"), ("   ", "0")], "line 3: empty text or label"),
        (("text", "label"), [("a", "1"), ("b", "")], "line 3: empty text or label"),
    ],
)
def test_bad_csv_files_are_refused(tmp_path: Path, header: tuple, rows: list, message: str) -> None:
    path = write_csv(tmp_path, rows, header=header)
    with pytest.raises(ValueError, match=message):
        read_labelled_csv(path)
    with pytest.raises(ValueError, match=message):
        SentimentTask(10, data=path)


def test_a_csv_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\ncaf\u00e9 cr\u00e8me,1\nbad,0\n".encode("latin-1"))
    with pytest.raises(ValueError, match="is not UTF-8 text.*re-encode it as UTF-8"):
        read_labelled_csv(path)


# ----------------------------------------------------------------------------- sentiment on a CSV


def test_splits_are_disjoint_cover_every_review_and_keep_its_label(tmp_path: Path) -> None:
    rows = digit_rows(60) + [(digit_text(5) + "  ", "good"), (digit_text(7), "good")]  # two duplicates
    task = SentimentTask(10, data=write_csv(tmp_path, rows), min_freq=1)
    texts = texts_by_split(task)
    assert [len(texts[split]) for split in SPLITS] == [48, 6, 6]
    every = [text for split in SPLITS for text in texts[split]]
    assert sorted(every) == sorted(text for text, _ in rows[:60])  # each review once, in one split
    assert task.class_names == ("bad", "good") and task.num_outputs == 2
    for split in SPLITS:
        labels = whole(task, split).targets.tolist()
        assert labels == [0 if row_of(text) % 3 == 0 else 1 for text in texts[split]]


def test_splits_are_fixed_by_split_seed(tmp_path: Path) -> None:
    rows = digit_rows(60)
    first = texts_by_split(SentimentTask(10, data=write_csv(tmp_path, rows, "a.csv"), min_freq=1))
    again = texts_by_split(SentimentTask(10, data=write_csv(tmp_path, rows, "b.csv"), min_freq=1))
    other = texts_by_split(SentimentTask(10, data=write_csv(tmp_path, rows, "c.csv"), min_freq=1, split_seed=1))
    assert first == again
    assert set(first["test"]) != set(other["test"])


def test_a_word_seen_only_outside_training_encodes_to_unk(tmp_path: Path) -> None:
    plain = texts_by_split(SentimentTask(10, data=write_csv(tmp_path, digit_rows(), "plain.csv"), min_freq=1))
    split_of = {row_of(text): split for split in SPLITS for text in plain[split]}
    suffix = {row: " zebra" if split != "train" else " yak" for row, split in split_of.items()}
    task = SentimentTask(10, data=write_csv(tmp_path, digit_rows(suffix=suffix), "marked.csv"), min_freq=1)
    assert "zebra" not in task.tokenizer.tokens and "yak" in task.tokenizer.tokens
    yak = task.tokenizer.tokens.index("yak")
    for split in SPLITS:
        batch = whole(task, split)
        last = batch.inputs[torch.arange(len(batch.lengths)), batch.lengths - 1]
        assert (last == (yak if split == "train" else UNK_ID)).all()
        # the split is the same as without the marks: it depends on the count and seed only
        assert sorted(map(row_of, decoded(task, batch))) == sorted(map(row_of, plain[split]))


def test_the_vocabulary_is_the_training_words_seen_min_freq_times(tmp_path: Path) -> None:
    rows = [(f"{digit_text(i)} rare{i} word{i % 4}", "good" if i % 2 else "bad") for i in range(60)]
    task = SentimentTask(10, data=write_csv(tmp_path, rows), min_freq=2, max_vocab=None)
    originals = {row_of(text): rows[row_of(text)][0] for text in decoded(task, whole(task, "train"))}
    counts = Counter(word for text in originals.values() for word in text.split())
    assert set(task.tokenizer.tokens[2:]) == {word for word, count in counts.items() if count >= 2}
    assert not any(token.startswith("rare") for token in task.tokenizer.tokens)
    capped = SentimentTask(10, data=write_csv(tmp_path, rows, "capped.csv"), min_freq=1, max_vocab=5)
    assert len(capped.tokenizer) == capped.vocab_size == 5
    top = sorted(counts, key=lambda word: (-counts[word], word))[:3]
    assert capped.tokenizer.tokens[2:] == top


@pytest.mark.parametrize(
    ("keep", "long_text", "short_text"),
    [("first", "{digits} then", "{digits}"), ("last", "{last} then more words", "{digits}")],
)
def test_truncation_keeps_the_first_or_last_tokens(tmp_path: Path, keep: str, long_text: str, short_text: str) -> None:
    rows = [
        (f"{digit_text(i)}" + ("" if i % 5 == 0 else " then more words"), "good" if i % 2 else "bad")
        for i in range(60)
    ]
    task = SentimentTask(4, data=write_csv(tmp_path, rows), min_freq=1, keep=keep)
    reference = SentimentTask(4, data=write_csv(tmp_path, rows, "first.csv"), min_freq=1, keep="first")
    batch = whole(task, "train")
    assert batch.inputs.shape[1] == 4 and int(batch.lengths.max()) == 4
    reference_rows = decoded(reference, whole(reference, "train"))
    for text, length, row in zip(decoded(task, batch), batch.lengths.tolist(), reference_rows, strict=True):
        i = row_of(row)
        digits = digit_text(i)
        expected = (short_text if i % 5 == 0 else long_text).format(digits=digits, last=digits.split()[-1])
        assert text == expected and length == len(expected.split())


@pytest.mark.parametrize(("cell", "layers"), [("rnn-tanh", 1), ("gru", 2), ("lstm", 1)])
@pytest.mark.parametrize("keep", ["first", "last"])
def test_padding_never_changes_a_prediction(tmp_path: Path, cell: str, layers: int, keep: str) -> None:
    rows = [(f"{digit_text(i)}" + " more" * (i % 9), "good" if i % 2 else "bad") for i in range(60)]
    path = write_csv(tmp_path, rows)
    task = SentimentTask(8, data=path, min_freq=1, keep=keep)
    config = TrainConfig(task="sentiment", data=path, length=8, hidden=5, layers=layers, embedding=3, cell=cell)
    torch.manual_seed(0)
    model = build_model(config, task).double().eval()
    lengths = whole(task, "train").lengths
    short, longest = int(torch.argmin(lengths)), int(torch.argmax(lengths))
    assert lengths[short] < lengths[longest]
    alone = task.examples("train", torch.tensor([short]))
    padded = task.examples("train", torch.tensor([short, longest]))
    assert (padded.inputs[0, lengths[short] :] == 0).all()
    with torch.no_grad():
        expected = model(alone.inputs, alone.lengths)
        actual = model(padded.inputs, padded.lengths)[:1]
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-12)


def test_sampling_validation_and_test_sets(tmp_path: Path) -> None:
    task = SentimentTask(10, data=write_csv(tmp_path, digit_rows(120)), min_freq=1)
    batch = task.sample(200, seeded(1))
    assert_same(batch, task.sample(200, seeded(1)))
    generator = seeded(1)
    task.sample(200, generator)
    assert not torch.equal(task.sample(200, generator).inputs, batch.inputs)
    assert_same(batch, task.examples("train", torch.randint(96, (200,), generator=seeded(1))))
    train = set(decoded(task, whole(task, "train")))
    assert set(decoded(task, batch)) <= train and len(set(decoded(task, batch))) < 200
    validation = task.validation_set(5, seeded(2))
    assert_same(validation, task.validation_set(5, seeded(2)))
    assert set(decoded(task, validation)) <= set(decoded(task, whole(task, "validation")))
    assert len(set(decoded(task, validation))) == 5
    assert_same(task.validation_set(100, seeded(2)), whole(task, "validation"))
    assert_same(task.test_set(), whole(task, "test"))


def test_limit_takes_a_seeded_subset(tmp_path: Path) -> None:
    rows = digit_rows(100)
    small = texts_by_split(SentimentTask(10, data=write_csv(tmp_path, rows, "a.csv"), min_freq=1, limit=40))
    every = [text for split in SPLITS for text in small[split]]
    assert len(every) == len(set(every)) == 40 and [len(small[s]) for s in SPLITS] == [32, 4, 4]
    assert set(every) <= {text for text, _ in rows}
    data = write_csv(tmp_path, rows, "b.csv")
    other = texts_by_split(SentimentTask(10, data=data, min_freq=1, limit=40, split_seed=3))
    assert set(every) != {text for split in SPLITS for text in other[split]}


def test_baseline_and_threshold_of_a_user_csv(tmp_path: Path) -> None:
    task = SentimentTask(10, data=write_csv(tmp_path, digit_rows(200)), min_freq=1)
    test = task.test_set()
    counts = torch.bincount(test.targets, minlength=2)
    assert task.baseline == pytest.approx(counts.max().item() / counts.sum().item())
    assert task.solved_threshold == pytest.approx((1 + task.baseline) / 2)
    majority = torch.zeros(len(test.targets), 2)
    majority[:, counts.argmax()] = 1
    assert task.metrics(majority, test)["accuracy"] == pytest.approx(task.baseline)
    assert not task.is_solved(task.baseline) and task.is_solved(1.0)


def test_sentiment_options_are_checked(tmp_path: Path) -> None:
    path = write_csv(tmp_path, digit_rows())
    with pytest.raises(ValueError, match="keep must be 'first' or 'last'"):
        SentimentTask(10, data=path, keep="middle")
    with pytest.raises(ValueError, match="dataset must be one of"):
        SentimentTask(10, dataset="yelp")
    with pytest.raises(ValueError, match="embedding must be a positive integer"):
        SentimentTask(10, data=path, embedding=0)
    with pytest.raises(ValueError, match="min_freq must be at least 1"):
        SentimentTask(10, data=path, min_freq=0)
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        SentimentTask(10, data=path, limit=0)
    with pytest.raises(ValueError, match="length must be a positive integer"):
        SentimentTask(0, data=path)
    task = SentimentTask(10, data=path, embedding=7)
    assert task.input_size == 7 and task.vocab_size == len(task.tokenizer)
    assert repr(task) == f"SentimentTask(length=10, data={path!r}, vocab={task.vocab_size})"


def test_an_edited_csv_is_read_again(tmp_path: Path) -> None:
    """Regression: the prepared reviews were cached by file name and went stale."""
    path = write_csv(tmp_path, digit_rows())
    assert SentimentTask(10, data=path).class_names == ("bad", "good")
    write_csv(tmp_path, [(text, "pos" if label == "good" else "neg") for text, label in digit_rows()])
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert SentimentTask(10, data=path).class_names == ("neg", "pos")


# ----------------------------------------------------------------------------- installed reviews


@pytest.fixture(scope="module")
def imdb_task() -> SentimentTask:
    return SentimentTask(3000, limit=400)


def test_imdb_task_labels_threshold_and_baseline(imdb_task: SentimentTask) -> None:
    assert imdb_task.class_names == ("negative", "positive") and imdb_task.num_outputs == 2
    assert [imdb_task.split_size(split) for split in SPLITS] == [320, 40, 40]
    assert imdb_task.solved_threshold == 0.85
    test = imdb_task.test_set()
    assert set(test.targets.tolist()) == {0, 1}
    assert imdb_task.baseline == pytest.approx(torch.bincount(test.targets).max().item() / 40)
    assert TASKS.get("sentiment") is SentimentTask


def test_imdb_vocabulary_comes_from_the_training_reviews(imdb_task: SentimentTask) -> None:
    train = whole(imdb_task, "train")
    assert int(train.lengths.max()) < 3000  # nothing truncated
    valid = torch.arange(train.inputs.shape[1]) < train.lengths[:, None]
    counts = torch.bincount(train.inputs[valid], minlength=imdb_task.vocab_size)
    assert counts[0] == 0  # no padding inside a review
    assert (counts[2:] >= 2).all()  # every word was seen at least min_freq = 2 times in training
    assert counts[UNK_ID] > 0


def test_imdb_reviews_are_in_one_split_only(imdb_task: SentimentTask) -> None:
    reviews = {
        split: {tuple(ids[:length].tolist()) for ids, length in zip(b.inputs, b.lengths, strict=True)}
        for split, b in ((split, whole(imdb_task, split)) for split in SPLITS)
    }
    assert sum(map(len, reviews.values())) == 400
    assert not (reviews["train"] & reviews["test"] or reviews["train"] & reviews["validation"])
    assert not reviews["validation"] & reviews["test"]


def test_imdb_keeps_the_last_tokens_by_default(imdb_task: SentimentTask) -> None:
    short = SentimentTask(50, limit=400)  # the same prepared reviews, cut to 50 tokens
    full, cut = whole(imdb_task, "test"), whole(short, "test")
    assert int(cut.lengths.max()) == 50 and int(full.lengths.max()) > 50
    for ids, length, kept, kept_length in zip(full.inputs, full.lengths, cut.inputs, cut.lengths, strict=True):
        assert kept[:kept_length].tolist() == ids[:length].tolist()[-50:]


def test_rotten_tomatoes_task() -> None:
    task = SentimentTask(60, dataset="rotten-tomatoes", limit=500, split_seed=2)
    assert task.solved_threshold == 0.75 and task.class_names == ("negative", "positive")
    lengths = whole(task, "train").lengths
    assert int(lengths.max()) < 60 and 15 < lengths.float().median() < 30  # single sentences
    assert "dataset='rotten-tomatoes'" in repr(task)


# ----------------------------------------------------------------------------- charlm


@pytest.fixture(scope="module")
def shakespeare() -> str:
    return load_shakespeare()


def test_charlm_reads_the_start_of_shakespeare(shakespeare: str) -> None:
    task = CharLMTask(50, limit=20_000)
    assert task.tokenizer.decode(task.streams["train"]) == shakespeare[:18_000]
    assert task.tokenizer.decode(task.streams["test"]).replace("<unk>", "") == "".join(
        char for char in shakespeare[19_000:20_000] if char in task.tokenizer.tokens
    )
    assert task.metric_name == "bpc" and task.solved_threshold == 1.7 and not task.higher_is_better
    assert task.input_size == 64 and task.vocab_size == len(set(shakespeare[:18_000])) + 2
    assert 3 < task.baseline < 5  # unigram entropy of English text in bits
    assert TASKS.get("charlm") is CharLMTask and repr(task) == f"CharLMTask(length=50, vocab={task.vocab_size})"


def test_charlm_options(tmp_path: Path) -> None:
    path = tmp_path / "tiny.txt"
    path.write_text("abcdefghij" * 30, encoding="utf-8")
    task = get_task("charlm", 5, data=str(path), embedding=9, target_bpc=0.5)
    assert task.input_size == 9 and task.solved_threshold == 0.5
    assert task.is_solved(0.4) and not task.is_solved(0.6)
    assert repr(task) == f"CharLMTask(length=5, data={str(path)!r}, vocab=12)"


def test_a_character_seen_only_outside_training_encodes_to_unk(tmp_path: Path) -> None:
    path = tmp_path / "text.txt"
    path.write_text("ab" * 95 + "abz" * 3 + "a", encoding="utf-8")  # 200 characters, z after 90 %
    task = CharLMTask(3, data=str(path))
    assert "z" not in task.tokenizer.tokens
    assert (task.streams["train"] != UNK_ID).all()
    assert (task.streams["test"] == UNK_ID).sum() == 3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "holds no text"),
        (b" \n\t\n", "holds no text"),
        ("caf\u00e9".encode("latin-1") * 50, "is not UTF-8 text.*re-encode it as UTF-8"),
    ],
)
def test_bad_text_files_are_refused(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "text.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        read_text_file(path)
    with pytest.raises(ValueError, match=message):
        CharLMTask(5, data=str(path))


def test_a_text_too_short_for_the_length_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "short.txt"
    path.write_text("x" * 100, encoding="utf-8")  # validation and test hold 5 characters each
    with pytest.raises(ValueError, match=r"validation split holds 5 tokens, fewer than length \+ 1 = 6"):
        CharLMTask(5, data=str(path))
    assert CharLMTask(4, data=str(path)).streams["validation"].numel() == 5


def test_a_text_file_is_read_without_its_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "bom.txt"
    path.write_text("hello\n", encoding="utf-8-sig")
    assert read_text_file(path) == "hello\n"


def test_an_edited_text_file_is_read_again(tmp_path: Path) -> None:
    """Regression: the prepared text was cached by file name and went stale."""
    path = tmp_path / "text.txt"
    path.write_text("ab" * 100, encoding="utf-8")
    assert CharLMTask(3, data=str(path)).vocab_size == 4
    path.write_text("cd" * 100, encoding="utf-8")
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    task = CharLMTask(3, data=str(path))
    assert task.tokenizer.tokens[2:] == ["c", "d"]


# ----------------------------------------------------------------------------- task_for_file


@pytest.mark.parametrize(
    ("name", "task"),
    [("reviews.csv", "sentiment"), ("plays.txt", "charlm"), ("series.npz", "arrays"), ("UPPER.CSV", "sentiment")],
)
def test_task_for_file_goes_by_the_extension(tmp_path: Path, name: str, task: str) -> None:
    path = tmp_path / name
    path.write_text("anything", encoding="utf-8")
    assert task_for_file(str(path)) == task
    assert task in TASKS.names()


def test_task_for_file_refuses_unknown_extensions_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text("{}", encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape("from its extension '.json'") + ".*expected .csv"):
        task_for_file(str(path))
    with pytest.raises(ValueError, match="does not exist"):
        task_for_file(str(tmp_path / "absent.csv"))
    with pytest.raises(ValueError, match="does not exist"):
        task_for_file(str(tmp_path))  # a folder is not a data file


def test_numeric_labels_are_classes_in_numeric_order(tmp_path: Path) -> None:
    rows = [(digit_text(i), str([2, 10, 1][i % 3])) for i in range(30)]
    _, class_names = read_labelled_csv(write_csv(tmp_path, rows))
    assert class_names == ("1", "2", "10")
