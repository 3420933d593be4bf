"""Review and Shakespeare loaders, their cleaning and checks, and seeded splits."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import torch

from bptt.data import (
    DATASETS,
    UNK_ID,
    WordTokenizer,
    clean_review,
    deduplicate,
    load_reviews,
    load_shakespeare,
    split_indices,
    strip_markdown,
)


def write_reviews(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["text", "label", "source"])
        writer.writerows(rows)
    return path


def assert_clean(examples: list[tuple[str, int]]) -> None:
    texts = [text for text, _ in examples]
    assert len(set(texts)) == len(texts)
    assert not any("<br" in text or "  " in text or text != text.strip() for text in texts)
    assert {label for _, label in examples} == {0, 1}


def test_imdb_is_deduplicated_and_balanced(imdb: list[tuple[str, int]]) -> None:
    assert len(imdb) == 25_000 - 98 == DATASETS.get("imdb").known_size
    assert sum(label for _, label in imdb) == 12_471  # 12,431 negative
    assert_clean(imdb)


def test_rotten_tomatoes_has_no_duplicates(rotten_tomatoes: list[tuple[str, int]]) -> None:
    assert len(rotten_tomatoes) == 8_530 == DATASETS.get("rotten-tomatoes").known_size
    assert sum(label for _, label in rotten_tomatoes) == 4_265
    assert_clean(rotten_tomatoes)


def test_clean_review_removes_html_breaks_and_collapses_whitespace() -> None:
    text = " Great.<br /><br />Really <i>great</i>\n\t<grin> <BR>end "
    assert clean_review(text) == "Great. Really great <grin> end"


def test_deduplicate_keeps_first_and_drops_conflicting_labels() -> None:
    examples = [("a", 1), ("b", 0), ("a", 1), ("c", 0), ("b", 0), ("c", 1)]
    assert deduplicate(examples) == [("a", 1), ("b", 0)]


def test_load_reviews_cleans_before_deduplicating(tmp_path: Path) -> None:
    path = write_reviews(
        tmp_path / "reviews.csv",
        [
            ("Fine film.<br /><br />", "1", "imdb"),
            ("Fine  film.", "1", "imdb"),  # the same text once cleaned
            ("dull .", "0", "rotten_tomatoes"),
            ("Dull.", "0", "imdb"),
        ],
    )
    assert load_reviews("imdb", path) == [("Fine film.", 1), ("Dull.", 0)]
    assert load_reviews("rotten-tomatoes", path) == [("dull .", 0)]


def test_load_reviews_rejects_bad_labels_and_sources(tmp_path: Path) -> None:
    rows = [("ok", "1", "imdb"), ("meh", "neutral", "imdb")]
    path = write_reviews(tmp_path / "reviews.csv", rows)
    with pytest.raises(ValueError, match="line 3: expected a label 0 or 1, got 'neutral'"):
        load_reviews("imdb", path)
    with pytest.raises(ValueError, match="source must be one of"):
        load_reviews("rotten_tomatoes", path)  # type: ignore[arg-type]


def test_word_vocabulary_comes_from_training_reviews_only(imdb: list[tuple[str, int]]) -> None:
    subset = imdb[:2000]
    splits = split_indices(len(subset), seed=0)
    train = [subset[i][0] for i in splits["train"].tolist()]
    tokenizer = WordTokenizer.from_texts(train, min_freq=2)
    seen = {token for text in train for token in tokenizer.split(text)}
    validation = [subset[i][0] for i in splits["validation"].tolist()]
    unseen = sorted({t for text in validation for t in tokenizer.split(text)} - seen)
    assert unseen, "2,000 reviews should leave some validation words unseen"
    assert tokenizer.encode(" ".join(unseen[:20])) == [UNK_ID] * 20
    assert set(tokenizer.tokens[2:]) < seen


def test_shakespeare_is_plain_text_of_38_plays(shakespeare: str) -> None:
    assert len(shakespeare) == DATASETS.get("shakespeare").known_size
    assert not re.search(r"[*_#\\]", shakespeare)  # no Markdown left
    assert shakespeare.startswith("A Midsummer Night's Dream\n\nACT I\n\nSCENE I.")
    assert "HAMLET\nTo be, or not to be: that is the question:\n" in shakespeare
    assert "\n\n\n" not in shakespeare and " \n" not in shakespeare


def test_strip_markdown() -> None:
    markdown = (
        "# Hamlet\n\n## ACT I\n\n_Enter Ghost_\n\n"
        "**HAMLET**  \nO, that this too too solid flesh\\--  \n__\\[Aside]_  \n*Exit.*\n\n\n\n"
    )
    assert strip_markdown(markdown) == (
        "Hamlet\n\nACT I\n\nEnter Ghost\n\n"
        "HAMLET\nO, that this too too solid flesh--\n[Aside]\nExit.\n"
    )


def test_shakespeare_folder_must_hold_38_plays(tmp_path: Path) -> None:
    (tmp_path / "tragedies").mkdir()
    (tmp_path / "tragedies" / "hamlet.md").write_text("# Hamlet\n")
    with pytest.raises(ValueError, match="expected 38 plays .* found 1; reinstall"):
        load_shakespeare(tmp_path)


def test_split_indices_are_disjoint_covering_and_sized() -> None:
    splits = split_indices(1001, seed=3)
    assert {name: len(part) for name, part in splits.items()} == {
        "train": 801,
        "validation": 100,
        "test": 100,
    }
    assert torch.equal(torch.cat(list(splits.values())).sort().values, torch.arange(1001))
    assert all(part.dtype == torch.int64 for part in splits.values())


def test_split_indices_are_fixed_per_seed() -> None:
    torch.manual_seed(1)
    first = split_indices(500, (0.6, 0.2, 0.2), seed=0)
    torch.manual_seed(2)  # the global generator plays no part
    again = split_indices(500, (0.6, 0.2, 0.2), seed=0)
    other = split_indices(500, (0.6, 0.2, 0.2), seed=1)
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not torch.equal(first["test"], other["test"])


@pytest.mark.parametrize(
    ("n", "fractions", "message"),
    [
        (100, (0.8, 0.2), "three positive numbers"),
        (100, (0.8, 0.3, 0.1), "summing to 1"),
        (5, (0.8, 0.1, 0.1), "leaves a split empty"),
    ],
)
def test_split_indices_rejects_bad_arguments(n: int, fractions: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_indices(n, fractions, seed=0)
