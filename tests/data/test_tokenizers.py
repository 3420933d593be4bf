"""Character and word tokenisers, their saved state, and padded batches."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from bptt.data import PAD_ID, UNK_ID, CharTokenizer, WordTokenizer, pad_batch

TRAIN = ["The film was great, great fun!", "A dull film.", "Great acting; the plot didn't work."]


def test_char_tokenizer_round_trips_and_sorts_its_vocabulary() -> None:
    tokenizer = CharTokenizer.from_text("hello, world\n")
    assert tokenizer.tokens == ["<pad>", "<unk>", "\n", " ", ",", "d", "e", "h", "l", "o", "r", "w"]
    ids = tokenizer.encode("hold\nher")
    assert ids == [7, 9, 8, 5, 2, 7, 6, 10]
    assert tokenizer.decode(ids) == "hold\nher"
    assert tokenizer.decode(torch.tensor([PAD_ID, *ids, PAD_ID])) == "hold\nher"


def test_char_tokenizer_maps_unknown_characters_to_unk() -> None:
    tokenizer = CharTokenizer.from_text("abc")
    assert tokenizer.encode("aXb!") == [2, UNK_ID, 3, UNK_ID]
    assert tokenizer.decode(tokenizer.encode("aXb")) == "a<unk>b"


def test_word_tokenizer_splits_lowercased_words_and_punctuation() -> None:
    tokenizer = WordTokenizer.from_texts(TRAIN)
    assert tokenizer.split("It's GREAT! Didn't it?") == ["it's", "great", "!", "didn't", "it", "?"]


def test_word_vocabulary_orders_by_frequency_and_respects_min_freq() -> None:
    tokenizer = WordTokenizer.from_texts(TRAIN, min_freq=2)
    # great x3; film, the x2; "." x2 (one in each of the last two texts).
    assert tokenizer.tokens == ["<pad>", "<unk>", "great", ".", "film", "the"]
    assert len(WordTokenizer.from_texts(TRAIN, min_freq=1)) == 2 + 15
    assert WordTokenizer.from_texts(TRAIN, min_freq=4).tokens == ["<pad>", "<unk>"]


def test_word_vocabulary_respects_max_size() -> None:
    tokenizer = WordTokenizer.from_texts(TRAIN, max_size=4)
    assert tokenizer.tokens == ["<pad>", "<unk>", "great", "."]
    with pytest.raises(ValueError, match="max_size must be at least 3"):
        WordTokenizer.from_texts(TRAIN, max_size=2)


def test_word_tokenizer_uses_only_training_words() -> None:
    tokenizer = WordTokenizer.from_texts(TRAIN)
    ids = tokenizer.encode("The acting was SUPERB!")
    assert ids[1] != UNK_ID and ids[3] == UNK_ID  # "acting" was in training, "superb" not
    assert tokenizer.decode(ids) == "the acting was <unk> !"


def test_word_tokenizer_round_trips_known_text() -> None:
    tokenizer = WordTokenizer.from_texts(TRAIN)
    text = "the plot didn't work; great fun."
    ids = tokenizer.encode(text)
    assert UNK_ID not in ids
    assert tokenizer.decode(ids) == "the plot didn't work ; great fun ."
    assert tokenizer.encode(tokenizer.decode(ids)) == ids


@pytest.mark.parametrize("cls", [CharTokenizer, WordTokenizer])
def test_state_dict_round_trips_through_json(cls: type) -> None:
    if cls is CharTokenizer:
        tokenizer = CharTokenizer.from_text(" ".join(TRAIN))
    else:
        tokenizer = WordTokenizer.from_texts(TRAIN)
    restored = cls.from_state_dict(json.loads(json.dumps(tokenizer.state_dict())))
    assert type(restored) is cls and restored.tokens == tokenizer.tokens
    text = "Great film, unseen words!"
    assert restored.encode(text) == tokenizer.encode(text)


def test_state_dict_checks_the_kind_and_the_vocabulary() -> None:
    state = WordTokenizer.from_texts(TRAIN).state_dict()
    with pytest.raises(ValueError, match="state of a 'char' tokenizer, got kind 'word'"):
        CharTokenizer.from_state_dict(state)
    with pytest.raises(ValueError, match="must start with"):
        WordTokenizer(["great", "<pad>", "<unk>"])
    with pytest.raises(ValueError, match=r"repeats: \['a'\]"):
        CharTokenizer(["<pad>", "<unk>", "a", "a"])
    with pytest.raises(ValueError, match="single characters"):
        CharTokenizer(["<pad>", "<unk>", "ab"])


def test_pad_batch_pads_with_zero_and_reports_lengths() -> None:
    ids, lengths = pad_batch([[5, 6, 7], [8], [9, 10]])
    assert ids.dtype == lengths.dtype == torch.int64
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]]
    assert lengths.tolist() == [3, 1, 2]


@pytest.mark.parametrize(
    ("keep", "expected"), [("first", [[1, 2, 3], [7, 8, 0]]), ("last", [[4, 5, 6], [7, 8, 0]])]
)
def test_pad_batch_truncates_keeping_first_or_last(keep: str, expected: list[list[int]]) -> None:
    ids, lengths = pad_batch([[1, 2, 3, 4, 5, 6], [7, 8]], max_length=3, keep=keep)
    assert ids.tolist() == expected
    assert lengths.tolist() == [3, 2]


def test_pad_batch_output_packs() -> None:
    ids, lengths = pad_batch([[3, 4], [5, 6, 7, 8]], max_length=10)
    packed = pack_padded_sequence(ids, lengths, batch_first=True, enforce_sorted=False)
    assert packed.data.sort().values.tolist() == [3, 4, 5, 6, 7, 8]


@pytest.mark.parametrize(
    ("sequences", "options", "message"),
    [
        ([[1], [], [2], []], {}, r"sequences \[1, 3\] are empty"),
        ([], {}, "at least one sequence"),
        ([[1]], {"keep": "middle"}, "keep must be 'first' or 'last'"),
        ([[1]], {"max_length": 0}, "max_length must be a positive integer"),
    ],
)
def test_pad_batch_rejects_bad_input(sequences: list, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pad_batch(sequences, **options)
