"""Text tasks: review sentiment (many-to-one) and a character language model (truncated BPTT).

Both read real text from installed packages (:mod:`bptt.data`), or a user's file given as
``data``: a CSV with ``text,label`` columns for :class:`SentimentTask`, a UTF-8 text file for
:class:`CharLMTask`. Tokenisers are built from the training split only.
"""

from __future__ import annotations

import csv
import functools
from collections import Counter
from pathlib import Path
from typing import Literal, final

import torch
from torch import Tensor

from bptt.data import (
    UNK_ID,
    CharTokenizer,
    WordTokenizer,
    deduplicate,
    load_reviews,
    load_shakespeare,
    pad_batch,
    split_indices,
)
from bptt.data.text import clean_review
from bptt.tasks.base import (
    AbstractClassificationTask,
    AbstractDatasetTask,
    AbstractStreamTask,
    Batch,
    check_count,
    majority_share,
)

REVIEW_DATASETS = ("imdb", "rotten-tomatoes")
SENTIMENT_TARGETS = {"imdb": 0.85, "rotten-tomatoes": 0.75}
"""Test accuracy at which sentiment counts as solved: 85 % on IMDB (a plain LSTM's
territory, e.g. Maas et al. 2011 report 88 % for bag-of-words models), 75 % on the short
Rotten Tomatoes sentences."""


@final
class SentimentTask(AbstractClassificationTask, AbstractDatasetTask):
    """Classify a review by its sentiment (many-to-one) from its word tokens.

    The reviews are de-duplicated, then split 80/10/10 into train, validation and test
    with ``split_seed``; the vocabulary comes from the training split only (words seen
    fewer than ``min_freq`` times become ``<unk>``). Reviews longer than ``length`` tokens
    are truncated, keeping the first or the last tokens; shorter ones are padded and their
    lengths passed on, so padding never changes a prediction.

    Baseline: the majority class's share of the test split. Solved: see
    :data:`SENTIMENT_TARGETS` (for a user's CSV, halfway from the baseline to 100 %).

    Args:
        length: the most tokens kept of a review.
        dataset: ``"imdb"`` or ``"rotten-tomatoes"`` (ignored when ``data`` is given).
        data: a user's CSV file with columns ``text`` and ``label`` (any label strings;
            classes are the sorted distinct labels).
        min_freq: the fewest training occurrences for a word to get its own id.
        max_vocab: the largest vocabulary (special tokens included), or ``None``.
        keep: ``"last"`` (the end of a review, nearest the read-out) or ``"first"`` tokens.
        embedding: the default embedding width.
        split_seed: seeds the train/validation/test split.
        limit: use only a seeded random subset of this many examples (quick checks).
    """

    name = "sentiment"
    description = "movie-review sentiment, many-to-one over word tokens (IMDB or Rotten Tomatoes)"

    def __init__(
        self,
        length: int,
        *,
        dataset: str = "imdb",
        data: str | None = None,
        min_freq: int = 2,
        max_vocab: int | None = 30_000,
        keep: Literal["first", "last"] = "last",
        embedding: int = 128,
        split_seed: int = 0,
        limit: int | None = None,
    ) -> None:
        super().__init__(length)
        if data is None and dataset not in REVIEW_DATASETS:
            raise ValueError(f"dataset must be one of {REVIEW_DATASETS}, got {dataset!r}")
        if keep not in ("first", "last"):
            raise ValueError(f"keep must be 'first' or 'last', got {keep!r}")
        self.dataset, self.data, self.keep = dataset, data, keep
        prepared = _prepare_reviews(dataset, data, _file_stamp(data), min_freq, max_vocab, split_seed, limit)
        self.tokenizer, self._ids, self._labels, self.class_names = prepared
        self.vocab_size = len(self.tokenizer)
        self.input_size = check_count("embedding", embedding)
        self.num_outputs = len(self.class_names)
        self.baseline = majority_share(self._labels["test"], self.num_outputs)
        target = SENTIMENT_TARGETS.get(dataset) if data is None else None
        self.solved_threshold = target if target is not None else (1 + self.baseline) / 2

    def split_size(self, split: str) -> int:
        return len(self._ids[self._check_split(split)])

    def examples(self, split: str, indices: Tensor) -> Batch:
        ids = self._ids[self._check_split(split)]
        inputs, lengths = pad_batch([ids[i] for i in indices.tolist()], self.length, self.keep)
        return Batch(inputs, self._labels[split][indices], lengths)

    def __repr__(self) -> str:
        source = f"data={self.data!r}" if self.data else f"dataset={self.dataset!r}"
        return f"SentimentTask(length={self.length}, {source}, vocab={self.vocab_size})"


def _file_stamp(data: str | None) -> tuple[int, int] | None:
    """The modification time and size of a user's file, so that a cache sees it edited."""
    if data is None:
        return None
    try:
        stat = Path(data).stat()
    except OSError:
        return None  # reading it reports the error
    return stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=4)
def _prepare_reviews(
    dataset: str,
    data: str | None,
    stamp: tuple[int, int] | None,
    min_freq: int,
    max_vocab: int | None,
    split_seed: int,
    limit: int | None,
) -> tuple[WordTokenizer, dict[str, list[list[int]]], dict[str, Tensor], tuple[str, ...]]:
    """Load, split and tokenise once per process (tasks are rebuilt by doctor, replay ...).

    ``stamp`` (:func:`_file_stamp` of ``data``) makes an edited file be read again.
    """
    if data is None:
        examples, class_names = load_reviews(dataset), ("negative", "positive")
    else:
        examples, class_names = read_labelled_csv(data)
    if limit is not None:
        keep = torch.randperm(len(examples), generator=torch.Generator().manual_seed(split_seed))
        examples = [examples[i] for i in keep[: check_count("limit", limit)].sort().values.tolist()]
    parts = split_indices(len(examples), seed=split_seed)
    texts = {split: [examples[i][0] for i in index.tolist()] for split, index in parts.items()}
    labels = {split: torch.tensor([examples[i][1] for i in index.tolist()]) for split, index in parts.items()}
    tokenizer = WordTokenizer.from_texts(texts["train"], min_freq=min_freq, max_size=max_vocab)
    ids = {split: [tokenizer.encode(text) or [UNK_ID] for text in part] for split, part in texts.items()}
    return tokenizer, ids, labels, class_names


def read_labelled_csv(path: str | Path) -> tuple[list[tuple[str, int]], tuple[str, ...]]:
    """Read a user's CSV of labelled texts for :class:`SentimentTask`.

    Args:
        path: a UTF-8 CSV file with a header naming (at least) the columns ``text`` and
            ``label``. Labels are any strings; classes are the sorted distinct labels.

    Returns:
        ``([(text, class_id), ...], class_names)``, de-duplicated by
        :func:`~bptt.data.deduplicate`: the first copy of a text is kept, and a text given
        two different labels is dropped (all its copies), as for the built-in reviews.

    Raises:
        ValueError: a missing column, a file that is not UTF-8, an empty text or label,
            or fewer than two classes (after dropping conflicting texts).
    """
    path = Path(path)
    csv.field_size_limit(2**31 - 1)
    rows: list[tuple[str, str]] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:  # -sig: skip a BOM (Excel)
            reader = csv.DictReader(file)
            missing = {"text", "label"} - set(reader.fieldnames or ())
            if missing:
                raise ValueError(
                    f"{path}: expected a CSV with a header row naming the columns 'text' and "
                    f"'label', got columns {reader.fieldnames}; missing {sorted(missing)}"
                )
            for line, row in enumerate(reader, start=2):
                text, label = clean_review(row["text"] or ""), (row["label"] or "").strip()
                if not text or not label:
                    raise ValueError(f"{path}, line {line}: empty text or label; every row needs both")
                rows.append((text, label))
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text ({error}); re-encode it as UTF-8") from None
    rows = deduplicate(rows)  # type: ignore[arg-type]  # labels are still strings here
    class_names = tuple(sorted(Counter(label for _, label in rows), key=_label_order))
    if len(class_names) < 2:
        raise ValueError(
            f"{path}: a classifier needs at least two distinct labels, got {list(class_names)} "
            "(texts given two different labels are dropped)"
        )
    index = {name: i for i, name in enumerate(class_names)}
    return [(text, index[label]) for text, label in rows], class_names


def _label_order(label: str) -> tuple[int, float, str]:
    """Numbers in numeric order ("2" before "10"), then other labels alphabetically."""
    try:
        return 0, float(label), label
    except ValueError:
        return 1, 0.0, label


@final
class CharLMTask(AbstractStreamTask):
    """Next-character language model on Shakespeare's plays (or a user's text file).

    The text is split into contiguous train, validation and test parts (90/5/5 %); the
    character vocabulary comes from the training part (unseen characters become
    ``<unk>``). Training uses truncated BPTT over the stream (see
    :class:`~bptt.tasks.base.AbstractStreamTask`), ``length`` characters per chunk.
    Metric: bits per character on the validation text, scored carrying the state.

    Args:
        length: the truncation length of BPTT, in characters.
        data: a UTF-8 text file to model instead of Shakespeare.
        embedding: the default embedding width.
        target_bpc: bits per character at which the task counts as solved.
        limit: use only the first this many characters (quick checks).
    """

    name = "charlm"
    description = "next-character language model on Shakespeare, truncated BPTT, bits per character"
    metric_name = "bpc"

    def __init__(
        self,
        length: int,
        *,
        data: str | None = None,
        embedding: int = 64,
        target_bpc: float = 1.7,
        limit: int | None = None,
    ) -> None:
        self.data = data
        self.tokenizer, streams = _prepare_text(data, _file_stamp(data), limit)
        super().__init__(length, streams, len(self.tokenizer), embedding)
        self.solved_threshold = float(target_bpc)

    def __repr__(self) -> str:
        source = f", data={self.data!r}" if self.data else ""
        return f"CharLMTask(length={self.length}{source}, vocab={self.vocab_size})"


@functools.lru_cache(maxsize=2)
def _prepare_text(
    data: str | None, stamp: tuple[int, int] | None, limit: int | None
) -> tuple[CharTokenizer, dict[str, Tensor]]:
    text = load_shakespeare() if data is None else read_text_file(data)
    if limit is not None:
        text = text[: check_count("limit", limit)]
    cut_validation, cut_test = int(0.9 * len(text)), int(0.95 * len(text))
    parts = {"train": text[:cut_validation], "validation": text[cut_validation:cut_test], "test": text[cut_test:]}
    tokenizer = CharTokenizer.from_text(parts["train"])
    return tokenizer, {split: torch.tensor(tokenizer.encode(part)) for split, part in parts.items()}


def read_text_file(path: str | Path) -> str:
    """The text of a user's UTF-8 file, for :class:`CharLMTask`.

    Raises:
        ValueError: if the file is not UTF-8 or holds no text.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: skip a byte-order mark
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text ({error}); re-encode it as UTF-8") from None
    if not text.strip():
        raise ValueError(f"{path} holds no text; a language model needs some to learn from")
    return text
