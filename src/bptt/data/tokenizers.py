"""From text to token ids and padded batches.

Both tokenisers reserve id 0 for padding (``<pad>``) and id 1 for anything outside the
vocabulary (``<unk>``), and save to plain lists so a run can store its vocabulary::

    tokenizer = WordTokenizer.from_texts(train_texts, min_freq=2)   # training texts only
    ids, lengths = pad_batch([tokenizer.encode(t) for t in texts], max_length=400)
    WordTokenizer.from_state_dict(tokenizer.state_dict())           # the same tokeniser
"""

from __future__ import annotations

import abc
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Literal, Self, final

import torch
from torch import Tensor

PAD_ID = 0
UNK_ID = 1
SPECIAL_TOKENS = ("<pad>", "<unk>")
"""The first two tokens of every vocabulary, with ids :data:`PAD_ID` and :data:`UNK_ID`."""

_WORD = re.compile(r"\w+(?:'\w+)*|[^\w\s]")


class AbstractTokenizer(abc.ABC):
    """A vocabulary of tokens, ``tokens[i]`` having id ``i``; subclasses split and join text.

    Args:
        tokens: the vocabulary, starting with :data:`SPECIAL_TOKENS`, without repeats.
    """

    kind: ClassVar[str]
    """Names the class in :meth:`state_dict`."""

    def __init__(self, tokens: Sequence[str]) -> None:
        tokens = list(tokens)
        if tuple(tokens[:2]) != SPECIAL_TOKENS:
            raise ValueError(
                f"a vocabulary must start with {list(SPECIAL_TOKENS)}, got {tokens[:2]}; "
                f"build it with {type(self).__name__}.from_text(s)"
            )
        repeated = sorted(token for token, count in Counter(tokens).items() if count > 1)
        if repeated:
            raise ValueError(f"a vocabulary lists each token once, got repeats: {repeated[:10]}")
        self.tokens = tokens
        self._ids = {token: index for index, token in enumerate(tokens)}

    @abc.abstractmethod
    def split(self, text: str) -> list[str]:
        """The tokens of ``text``, in order."""

    @abc.abstractmethod
    def join(self, tokens: list[str]) -> str:
        """Text made of ``tokens``, the inverse of :meth:`split` where possible."""

    def __len__(self) -> int:
        """The vocabulary size, special tokens included (an embedding's ``num_embeddings``)."""
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        """The ids of the tokens of ``text``; tokens outside the vocabulary get :data:`UNK_ID`."""
        return [self._ids.get(token, UNK_ID) for token in self.split(text)]

    def decode(self, ids: Iterable[int] | Tensor) -> str:
        """The text of ``ids``, skipping padding; unknown tokens read ``<unk>``."""
        ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        return self.join([self.tokens[index] for index in ids if index != PAD_ID])

    def state_dict(self) -> dict[str, Any]:
        """The tokeniser as plain lists and strings, e.g. for ``json.dump``."""
        return {"kind": self.kind, "tokens": list(self.tokens)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Self:
        """Rebuild a tokeniser saved by :meth:`state_dict`."""
        if state.get("kind") != cls.kind:
            raise ValueError(
                f"expected the state of a {cls.kind!r} tokenizer, got kind {state.get('kind')!r}; "
                "load it with the class that saved it"
            )
        return cls(state["tokens"])


@final
class CharTokenizer(AbstractTokenizer):
    """One token per character, e.g. for character-level language models.

    Build it with :meth:`from_text`: the vocabulary is the sorted characters of a text.
    """

    kind = "char"

    def __init__(self, tokens: Sequence[str]) -> None:
        super().__init__(tokens)
        longer = [token for token in self.tokens[2:] if len(token) != 1]
        if longer:
            raise ValueError(f"a character vocabulary holds single characters, got {longer[:5]}")

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The tokeniser whose vocabulary is every character of ``text``, sorted."""
        return cls([*SPECIAL_TOKENS, *sorted(set(text))])

    def split(self, text: str) -> list[str]:
        return list(text)

    def join(self, tokens: list[str]) -> str:
        return "".join(tokens)


@final
class WordTokenizer(AbstractTokenizer):
    """Lower-cased words and punctuation marks, e.g. for review sentiment.

    A token is a run of letters and digits, with inner apostrophes (``don't``), or one
    punctuation mark: ``"It's GREAT!"`` gives ``["it's", "great", "!"]``. Build it with
    :meth:`from_texts` from the training texts only, so that words seen only in validation
    or test become ``<unk>``, as they would for new data.
    """

    kind = "word"

    @classmethod
    def from_texts(
        cls, texts: Iterable[str], min_freq: int = 1, max_size: int | None = None
    ) -> WordTokenizer:
        """The tokeniser of the words in ``texts``, most frequent first (ties alphabetical).

        Args:
            texts: the training texts.
            min_freq: keep words occurring at least this many times in ``texts``.
            max_size: the largest vocabulary, the two special tokens included: the
                ``max_size - 2`` most frequent words are kept. ``None`` for no limit.
        """
        if min_freq < 1:
            raise ValueError(f"min_freq must be at least 1, got {min_freq}")
        if max_size is not None and max_size < 3:
            raise ValueError(
                f"max_size must be at least 3 (<pad>, <unk> and one word), got {max_size}; "
                "pass None for no limit"
            )
        counts = Counter(token for text in texts for token in _WORD.findall(text.lower()))
        frequent = [word for word, count in counts.items() if count >= min_freq]
        words = sorted(frequent, key=lambda word: (-counts[word], word))
        return cls([*SPECIAL_TOKENS, *words[: None if max_size is None else max_size - 2]])

    def split(self, text: str) -> list[str]:
        return _WORD.findall(text.lower())

    def join(self, tokens: list[str]) -> str:
        return " ".join(tokens)


def pad_batch(
    sequences: Sequence[Sequence[int]],
    max_length: int | None = None,
    keep: Literal["first", "last"] = "first",
) -> tuple[Tensor, Tensor]:
    """Stack token-id sequences into one right-padded batch, truncating long ones.

    Args:
        sequences: ``B`` non-empty sequences of ids. An empty one is an error: a recurrent
            model has no last state to read for it, and
            :func:`torch.nn.utils.rnn.pack_padded_sequence` rejects zero lengths.
        max_length: keep at most this many tokens of each sequence; ``None`` keeps all.
        keep: ``"first"`` keeps the first ``max_length`` tokens, ``"last"`` the last ones
            (for sentiment the end of a review, where verdicts often are, is closest to
            a last-step readout).

    Returns:
        ``(ids, lengths)``: ``ids[i, :lengths[i]]`` holds sequence ``i`` (truncated), the
        rest is :data:`PAD_ID`.

    Shape:
        - ids: ``(B, T)`` int64, ``T`` the longest length after truncation.
        - lengths: ``(B,)`` int64, each in ``[1, T]``.
    """
    if keep not in ("first", "last"):
        raise ValueError(f"keep must be 'first' or 'last', got {keep!r}")
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be a positive integer or None, got {max_length}")
    if not sequences:
        raise ValueError("pad_batch needs at least one sequence, got none")
    empty = [index for index, sequence in enumerate(sequences) if len(sequence) == 0]
    if empty:
        raise ValueError(
            f"sequences {empty[:10]} are empty; drop them or give each at least one token "
            "(e.g. <unk>) before padding"
        )
    if max_length is not None:
        sequences = [s[:max_length] if keep == "first" else s[-max_length:] for s in sequences]
    lengths = torch.tensor([len(sequence) for sequence in sequences], dtype=torch.int64)
    ids = torch.full((len(sequences), int(lengths.max())), PAD_ID, dtype=torch.int64)
    for row, sequence in zip(ids, sequences, strict=True):
        row[: len(sequence)] = torch.as_tensor(sequence, dtype=torch.int64)
    return ids, lengths
