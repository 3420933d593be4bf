"""Synthetic long-dependency tasks: pure, seeded batch generators and the tasks wrapping them.

Each generator takes the difficulty knob, a batch size and a :class:`torch.Generator`, and
draws every random number from that generator (on its device), so the same generator state
gives the same :class:`~bptt.tasks.Batch`::

    generator = torch.Generator().manual_seed(0)
    batch = adding_problem(100, batch_size=32, generator=generator)
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from typing import ClassVar, final

import torch
import torch.nn.functional as F
from torch import Tensor

from bptt.tasks.base import (
    AbstractClassificationTask,
    AbstractRegressionTask,
    AbstractTask,
    Batch,
    check_count,
    check_generator,
)

# ----------------------------------------------------------------------------- adding


def adding_problem(length: int, batch_size: int, generator: torch.Generator) -> Batch:
    """The adding problem (Hochreiter & Schmidhuber 1997; the version of Le et al. 2015).

    Each step carries a value drawn from U[0, 1] and a marker. Exactly two steps are
    marked, one uniformly in the first half ``[0, T // 2)`` and one in the second half
    ``[T // 2, T)``; the target is the sum of the two marked values.

    Args:
        length: sequence length ``T``, at least 2.
        batch_size: number of sequences ``B``.
        generator: the source of randomness.

    Returns:
        A :class:`Batch` without ``lengths`` (all sequences are full length).

    Shape:
        - inputs: ``(B, T, 2)`` float; channel 0 the values, channel 1 the markers (0 or 1).
        - targets: ``(B, 1)`` float.
    """
    length = check_count("length", length, 2, "one marker in each half")
    batch_size = check_count("batch_size", batch_size)
    device = check_generator(generator).device
    values = torch.rand(batch_size, length, generator=generator, device=device)
    half = length // 2
    first = torch.randint(0, half, (batch_size, 1), generator=generator, device=device)
    second = torch.randint(half, length, (batch_size, 1), generator=generator, device=device)
    positions = torch.cat([first, second], dim=1)
    markers = torch.zeros_like(values).scatter_(1, positions, 1.0)
    targets = values.gather(1, positions).sum(dim=1, keepdim=True)
    return Batch(torch.stack([values, markers], dim=-1), targets)


@final
class AddingTask(AbstractRegressionTask):
    """The adding problem (see :func:`adding_problem`): sum the two marked values.

    ``length`` is the sequence length ``T``. Trained and judged by mean squared error.

    Baseline: ignoring the inputs, the best constant prediction is the mean of the
    target, 1, whose MSE is the variance of a sum of two U[0, 1] values, ``2 / 12 = 1/6``
    (about 0.167). The task counts as solved below an MSE of 0.01, about 6 % of the baseline.
    """

    name = "adding"
    description = "sum of the two marked values among T random ones (regression)"
    min_length = 2
    min_length_reason = "one marker in each half"
    input_size = 2
    num_outputs = 1
    baseline = 1 / 6
    solved_threshold = 0.01

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        return adding_problem(self.length, batch_size, generator)


# ----------------------------------------------------------------------------- copy

COPY_BLANK = 0
"""Token id of the blank in :func:`copy_memory`; data symbols are ``1..alphabet_size``
and the delimiter is ``alphabet_size + 1``."""
_ONE_SYMBOL = "a single symbol leaves nothing to remember"


def copy_memory(
    delay: int,
    batch_size: int,
    generator: torch.Generator,
    *,
    num_symbols: int = 10,
    alphabet_size: int = 8,
) -> Batch:
    """The copy memory task (Hochreiter & Schmidhuber 1997; the version of Arjovsky et al. 2016).

    The input is ``num_symbols`` (``K``) random data symbols, ``delay - 1`` blanks, the
    delimiter, then ``K`` blanks. The target is ``delay + K`` blanks, then the ``K``
    symbols: after the delimiter the model must output the symbols it saw ``delay + K``
    steps earlier. Every sequence has ``delay + 2K`` steps. With blank ``0``, data
    symbols ``1..8`` and delimiter ``9`` (``alphabet_size = 8``)::

        inputs   3 1 ... 8 | 0 0 ... 0 | 9 | 0 0 ... 0
        targets  0 0 ... 0 | 0 0 ... 0 | 0 | 3 1 ... 8
                   K steps   delay - 1    1    K steps

    Args:
        delay: ``T``, the number of steps between the last symbol and the delimiter,
            plus one; at least 1.
        batch_size: number of sequences ``B``.
        generator: the source of randomness.
        num_symbols: ``K``, the number of symbols to remember.
        alphabet_size: the number of distinct data symbols.

    Returns:
        A :class:`Batch` of token ids, without ``lengths``.

    Shape:
        - inputs: ``(B, T + 2K)`` int64 in ``[0, alphabet_size + 2)``.
        - targets: ``(B, T + 2K)`` int64 in ``[0, alphabet_size]``.
    """
    delay = check_count("delay", delay)
    batch_size = check_count("batch_size", batch_size)
    num_symbols = check_count("num_symbols", num_symbols)
    alphabet_size = check_count("alphabet_size", alphabet_size, 2, _ONE_SYMBOL)
    device = check_generator(generator).device
    symbols = torch.randint(
        1, alphabet_size + 1, (batch_size, num_symbols), generator=generator, device=device
    )
    steps = delay + 2 * num_symbols
    inputs = torch.full((batch_size, steps), COPY_BLANK, dtype=torch.long, device=device)
    inputs[:, :num_symbols] = symbols
    inputs[:, num_symbols + delay - 1] = alphabet_size + 1
    targets = torch.full_like(inputs, COPY_BLANK)
    targets[:, delay + num_symbols :] = symbols
    return Batch(inputs, targets)


@final
class CopyTask(AbstractTask):
    """The copy memory task (see :func:`copy_memory`): recall symbols after a delay.

    ``length`` is the delay ``T``; sequences have ``T + 2K`` steps. Many-to-many: the loss
    is the cross-entropy averaged over all steps, and :meth:`metrics` also reports the
    accuracy on the ``K`` recalled symbols.

    Baseline: predicting blanks until the delimiter, then the uniform distribution over
    the data symbols, costs ``log(alphabet_size)`` on each of the ``K`` recall steps and
    nothing elsewhere: a mean cross-entropy of ``K log(alphabet_size) / (T + 2K)``
    (``10 log 8 / (T + 20)`` by default). This is the best a model without memory of the
    symbols can do. The task counts as solved below 10 % of the baseline.

    Args:
        length: the delay ``T``.
        num_symbols: ``K``, the number of symbols to remember.
        alphabet_size: the number of distinct data symbols.
    """

    name = "copy"
    description = "recall 10 symbols after a delay of T blanks (Arjovsky et al. 2016)"
    metric_name = "cross_entropy"
    higher_is_better = False
    many_to_many = True

    def __init__(self, length: int, *, num_symbols: int = 10, alphabet_size: int = 8) -> None:
        super().__init__(length)
        self.num_symbols = check_count("num_symbols", num_symbols)
        self.alphabet_size = check_count("alphabet_size", alphabet_size, 2, _ONE_SYMBOL)
        self.vocab_size = self.input_size = self.num_outputs = self.alphabet_size + 2
        steps = self.length + 2 * self.num_symbols
        self.baseline = self.num_symbols * math.log(self.alphabet_size) / steps
        self.solved_threshold = 0.1 * self.baseline

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        return copy_memory(
            self.length,
            batch_size,
            generator,
            num_symbols=self.num_symbols,
            alphabet_size=self.alphabet_size,
        )

    def loss(self, prediction: Tensor, batch: Batch) -> Tensor:
        self.check_prediction(prediction, batch)
        return F.cross_entropy(prediction.flatten(0, 1), batch.targets.flatten())

    def probe_loss(self, prediction: Tensor, batch: Batch) -> Tensor:
        """The loss of the ``K`` recall steps alone: how far back from them the gradient reaches.

        The blank steps' own losses would make every step's gradient large and hide the reach.
        """
        self.check_prediction(prediction, batch)
        recalled = slice(-self.num_symbols, None)
        return F.cross_entropy(prediction[:, recalled].flatten(0, 1), batch.targets[:, recalled].flatten())

    @torch.no_grad()
    def metrics(self, prediction: Tensor, batch: Batch) -> dict[str, float]:
        cross_entropy = self.loss(prediction, batch)  # checks the shape first
        recalled = slice(-self.num_symbols, None)
        correct = prediction[:, recalled].argmax(-1) == batch.targets[:, recalled]
        return {"cross_entropy": cross_entropy.item(), "accuracy": correct.float().mean().item()}

    def __repr__(self) -> str:
        return (
            f"CopyTask(length={self.length}, num_symbols={self.num_symbols}, "
            f"alphabet_size={self.alphabet_size})"
        )


# ----------------------------------------------------------------------------- temporal order

TEMPORAL_ORDER_SYMBOLS = ("a", "b", "c", "d", "X", "Y", "B", "E")
"""The token of each id in :func:`temporal_order`: distractors ``a..d`` (0-3), the relevant
symbols ``X`` (4) and ``Y`` (5), the start ``B`` (6) and the end ``E`` (7)."""
_X, _START, _END = 4, 6, 7


def temporal_order(length: int, batch_size: int, generator: torch.Generator) -> Batch:
    """The temporal order problem (Hochreiter & Schmidhuber 1997, experiment 6a).

    A sequence of ``T`` symbols starts with ``B`` and ends with ``E``; every other step is
    a random distractor ``a``, ``b``, ``c`` or ``d``, except two relevant steps, each ``X``
    or ``Y``: one at ``t1`` uniform in ``[T // 10, T // 5]`` and one at ``t2`` uniform in
    ``[T // 2, 3T // 5]`` (10-20 % and 50-60 % of the sequence). The class is the order of
    the relevant symbols: ``XX = 0``, ``XY = 1``, ``YX = 2``, ``YY = 3``. Token ids are
    listed in :data:`TEMPORAL_ORDER_SYMBOLS`.

    Args:
        length: sequence length ``T``, at least 10 so that the relevant positions lie
            strictly between ``B`` and ``E``.
        batch_size: number of sequences ``B``.
        generator: the source of randomness.

    Returns:
        A :class:`Batch` of token ids, without ``lengths``.

    Shape:
        - inputs: ``(B, T)`` int64 in ``[0, 8)``.
        - targets: ``(B,)`` int64 in ``[0, 4)``.
    """
    length = check_count("length", length, 10, "room for B, E and the relevant positions")
    batch_size = check_count("batch_size", batch_size)
    device = check_generator(generator).device
    shape = (batch_size, 1)
    inputs = torch.randint(0, 4, (batch_size, length), generator=generator, device=device)
    inputs[:, 0] = _START
    inputs[:, -1] = _END
    t1 = torch.randint(length // 10, length // 5 + 1, shape, generator=generator, device=device)
    t2 = torch.randint(length // 2, 3 * length // 5 + 1, shape, generator=generator, device=device)
    is_y = torch.randint(0, 2, (batch_size, 2), generator=generator, device=device)
    inputs.scatter_(1, torch.cat([t1, t2], dim=1), _X + is_y)
    return Batch(inputs, 2 * is_y[:, 0] + is_y[:, 1])


@final
class TemporalOrderTask(AbstractClassificationTask):
    """The temporal order problem (see :func:`temporal_order`): classify the order of X and Y.

    ``length`` is the sequence length ``T``. Many-to-one, 4 classes, judged by accuracy.

    Baseline: the four classes are equally likely and independent of the distractors,
    so any predictor that does not remember both relevant symbols until the end is right
    a quarter of the time: accuracy 0.25. Solved at an accuracy of 0.95.
    """

    name = "temporal-order"
    description = "order of two X/Y symbols among distractors, 4 classes (Hochreiter 1997)"
    min_length = 10
    min_length_reason = "room for B, E and the relevant positions"
    input_size = vocab_size = len(TEMPORAL_ORDER_SYMBOLS)
    num_outputs = 4
    baseline = 0.25
    solved_threshold = 0.95

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        return temporal_order(self.length, batch_size, generator)


# ----------------------------------------------------------------------------- agreement

_SINGULAR = ("cat", "dog", "bird", "child", "teacher", "tree", "house", "car")
_PLURAL = ("cats", "dogs", "birds", "children", "teachers", "trees", "houses", "cars")
_ADJECTIVES = ("old", "small", "quiet", "green")
_PREPOSITIONS = ("near", "behind", "beside", "under")
_VERBS = ("saw", "liked", "chased", "followed")  # past tense: the same for both numbers

AGREEMENT_PAD = 0
"""Token id of the padding after each sentence in :func:`agreement`."""
AGREEMENT_VOCABULARY = (
    "<pad>", "the", "that", *_ADJECTIVES, *_PREPOSITIONS, *_VERBS, *_SINGULAR, *_PLURAL
)  # fmt: skip
"""The word of each token id in :func:`agreement`."""
AGREEMENT_VERBS = ("was", "were")
"""The verb of each class in :func:`agreement`: 0 singular, 1 plural."""
_INDEX = {word: index for index, word in enumerate(AGREEMENT_VOCABULARY)}
_SHORTEST_CLAUSE = 3


def agreement(
    length: int, batch_size: int, generator: torch.Generator, *, vary_length: bool = True
) -> Batch:
    """Subject-verb number agreement across a distractor clause, in a toy language.

    Each sentence is ``the <subject>`` followed by a clause of exactly ``n`` words, built
    from phrases until ``n`` words are used::

        prepositional:  <preposition> the [<adjective> ...] <noun>        near the old dogs
        relative:       that the [<adjective> ...] <noun> <verb>          that the cat saw

    Every noun, subject and attractors alike, is singular or plural with probability 1/2,
    independently. The target is the number of the subject, i.e. the verb that would
    continue the sentence (:data:`AGREEMENT_VERBS`): ``the cat near the trees that the
    dogs saw`` -> ``was`` (0). The attractors make "copy the number of the last noun"
    no better than chance; the model must carry the subject's number across the clause.
    Token ids are listed in :data:`AGREEMENT_VOCABULARY`.

    The words are drawn by a :class:`random.Random` seeded from ``generator``, so the
    batch still depends only on the generator's state.

    Args:
        length: the longest clause, in words; at least 3 (one phrase).
        batch_size: number of sentences ``B``.
        generator: the source of randomness.
        vary_length: if ``True``, each clause length ``n`` is uniform in
            ``[max(3, length // 2), length]`` and sentences are padded with
            :data:`AGREEMENT_PAD`; if ``False``, ``n = length``.

    Returns:
        A :class:`Batch` of token ids; ``lengths`` holds ``n + 2`` per sentence when
        ``vary_length`` is set, else ``None``.

    Shape:
        - inputs: ``(B, length + 2)`` int64 in ``[0, len(AGREEMENT_VOCABULARY))``.
        - targets: ``(B,)`` int64 in ``{0, 1}``.
        - lengths: ``(B,)`` int64 on the CPU, or ``None``.
    """
    length = check_count("length", length, _SHORTEST_CLAUSE, "one phrase of the clause")
    batch_size = check_count("batch_size", batch_size)
    device = check_generator(generator).device
    seed = torch.randint(0, 2**62, (), generator=generator, device=device).item()
    rng = random.Random(seed)
    shortest = max(_SHORTEST_CLAUSE, length // 2) if vary_length else length
    sentences, labels = [], []
    for _ in range(batch_size):
        plural = rng.random() < 0.5
        words = ["the", _noun(rng, plural), *_clause(rng, rng.randint(shortest, length))]
        sentences.append([_INDEX[word] for word in words])
        labels.append(int(plural))
    steps = length + 2
    inputs = [ids + [AGREEMENT_PAD] * (steps - len(ids)) for ids in sentences]
    lengths = torch.tensor([len(ids) for ids in sentences]) if vary_length else None
    return Batch(torch.tensor(inputs, device=device), torch.tensor(labels, device=device), lengths)


def _noun(rng: random.Random, plural: bool) -> str:
    return rng.choice(_PLURAL if plural else _SINGULAR)


def _clause(rng: random.Random, size: int) -> list[str]:
    """Exactly ``size >= 3`` words of phrases; leftover words (< 3) become adjectives."""
    words: list[str] = []
    while size > 0:
        relative = size >= 4 and rng.random() < 0.5
        phrase_size = 4 if relative else 3
        adjectives = size - phrase_size if size - phrase_size < _SHORTEST_CLAUSE else 0
        attractor = _noun(rng, plural=rng.random() < 0.5)
        noun_phrase = ["the", *rng.sample(_ADJECTIVES, adjectives), attractor]
        if relative:
            words += ["that", *noun_phrase, rng.choice(_VERBS)]
        else:
            words += [rng.choice(_PREPOSITIONS), *noun_phrase]
        size -= phrase_size + adjectives
    return words


@final
class AgreementTask(AbstractClassificationTask):
    """Subject-verb number agreement (see :func:`agreement`): ``was`` or ``were``?

    ``length`` is the (longest) number of distractor words between the subject and the
    verb. Many-to-one, 2 classes, judged by accuracy. ``decode`` turns token ids back into
    text::

        task = AgreementTask(8)
        batch = task.sample(1, torch.Generator().manual_seed(0))
        task.decode(batch.inputs[0]), task.labels[batch.targets[0]]

    Baseline: both numbers are equally likely and independent of every attractor noun,
    so a constant guess, or the number of the last noun, is right half of the time:
    accuracy 0.5. Solved at an accuracy of 0.95.

    Args:
        length: the longest clause, in words.
        vary_length: draw each clause length in ``[max(3, length // 2), length]`` and pad
            (``True``), or use ``length`` for every sentence (``False``).
    """

    name = "agreement"
    description = "subject-verb number agreement across a clause with attractor nouns"
    min_length = _SHORTEST_CLAUSE
    min_length_reason = "one phrase of the clause"
    vocabulary: ClassVar[tuple[str, ...]] = AGREEMENT_VOCABULARY
    labels: ClassVar[tuple[str, ...]] = AGREEMENT_VERBS
    input_size = vocab_size = len(AGREEMENT_VOCABULARY)
    num_outputs = 2
    baseline = 0.5
    solved_threshold = 0.95

    def __init__(self, length: int, *, vary_length: bool = True) -> None:
        super().__init__(length)
        self.vary_length = vary_length

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        return agreement(self.length, batch_size, generator, vary_length=self.vary_length)

    def decode(self, ids: Tensor | Iterable[int]) -> str:
        """The sentence of token ``ids``, without padding."""
        ids = ids.tolist() if isinstance(ids, Tensor) else ids
        return " ".join(self.vocabulary[i] for i in ids if i != AGREEMENT_PAD)

    def __repr__(self) -> str:
        return f"AgreementTask(length={self.length}, vary_length={self.vary_length})"
