"""The task interface: a batch of sequences, its loss, its metrics and when it counts as solved."""

from __future__ import annotations

import abc
import dataclasses
import math
import numbers
from typing import ClassVar, final

import torch
import torch.nn.functional as F
from torch import Tensor


@final
@dataclasses.dataclass(frozen=True)
class Batch:
    """A batch of sequences, batch first.

    Args:
        inputs: float features, or token ids for tasks with a ``vocab_size``.
        targets: one target per sequence (many-to-one) or per step (many-to-many).
        lengths: the valid length of each sequence, or ``None`` when all are full length.
            Steps at and after ``lengths[i]`` are padding.

    Shape:
        - inputs: ``(B, T, F)`` float, or ``(B, T)`` int64 token ids.
        - targets: ``(B,)`` int64 class ids or ``(B, num_outputs)`` float (many-to-one);
          ``(B, T)`` int64 class ids (many-to-many).
        - lengths: ``(B,)`` int64 on the CPU, or ``None``.
    """

    inputs: Tensor
    targets: Tensor
    lengths: Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        """Move ``inputs`` and ``targets`` to ``device``.

        ``lengths`` stays on the CPU, where :func:`torch.nn.utils.rnn.pack_padded_sequence`
        wants it.
        """
        return dataclasses.replace(
            self, inputs=self.inputs.to(device), targets=self.targets.to(device)
        )


def check_count(name: str, value: object, minimum: int = 1, why: str = "") -> int:
    """Return ``value`` as an ``int`` if it is an integer ``>= minimum``, else raise.

    Args:
        name: the argument's name, for the message.
        value: the value received.
        minimum: the smallest allowed value.
        why: the reason for a ``minimum`` above 1, for the message.

    Raises:
        ValueError: stating the expected and received values.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if value < minimum:
        raise ValueError(
            f"{name} must be at least {minimum} ({why}), got {value}; "
            f"pass {name}={minimum} or more"
        )
    return int(value)


def check_generator(generator: object) -> torch.Generator:
    """Return ``generator`` if it is a :class:`torch.Generator`, else raise ``TypeError``."""
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator, got {type(generator).__name__}; "
            "create one with torch.Generator().manual_seed(seed)"
        )
    return generator


class AbstractTask(abc.ABC):
    """A synthetic task: seeded batches, the loss to train on and the metric to judge by.

    A task is a pure batch generator: the same generator state gives the same batch.
    Every concrete task documents its baseline, the metric of the trivial predictor,
    which a model must beat to show it learnt the long dependency.

    Args:
        length: the difficulty knob (a delay or a sequence length, see each task).

    Raises:
        ValueError: if ``length`` is not an integer or below :attr:`min_length`.
    """

    name: ClassVar[str]
    """The name the task is registered under (see :data:`bptt.tasks.TASKS`)."""
    description: ClassVar[str]
    """One line for ``bptt tasks`` and the docs."""
    metric_name: ClassVar[str]
    """The key of :meth:`metrics` that :meth:`is_solved` judges."""
    higher_is_better: ClassVar[bool]
    many_to_many: ClassVar[bool]
    """``True``: an output per step; ``False``: one output, from each sequence's last valid step."""
    min_length: ClassVar[int] = 1
    min_length_reason: ClassVar[str] = ""

    input_size: int
    """Number of input features; with :attr:`vocab_size` set, the default embedding width."""
    vocab_size: int | None
    """If set, inputs are token ids in ``[0, vocab_size)`` for an embedding."""
    num_outputs: int
    """Regression dimensions or number of classes."""
    baseline: float
    """The metric of the trivial predictor."""
    solved_threshold: float
    """The metric at which the task counts as solved (see :meth:`is_solved`)."""

    def __init__(self, length: int) -> None:
        self.length = check_count("length", length, self.min_length, self.min_length_reason)

    @abc.abstractmethod
    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        """Draw a batch of ``batch_size`` sequences using (only) ``generator``."""

    @abc.abstractmethod
    def loss(self, prediction: Tensor, batch: Batch) -> Tensor:
        """The scalar, differentiable training loss of ``prediction`` on ``batch``.

        Shape:
            - prediction: ``(B, num_outputs)`` (many-to-one) or ``(B, T, num_outputs)``
              (many-to-many).
        """

    @abc.abstractmethod
    def metrics(self, prediction: Tensor, batch: Batch) -> dict[str, float]:
        """Batch means of the metric named :attr:`metric_name` and of any extras.

        ``prediction`` has the shape :meth:`loss` takes.
        """

    def probe_loss(self, prediction: Tensor, batch: Batch) -> Tensor:
        """The loss whose gradient profile shows how far back the model learns from.

        Diagnosis (``bptt diagnose``, the horizon at the end of training) differentiates
        this loss. It is :meth:`loss`, except where a loss at every step would hide the
        reach: a language model's probe is the loss of the last next-token prediction alone.
        """
        return self.loss(prediction, batch)

    def is_solved(self, metric: float) -> bool:
        """Whether ``metric``, a value of :attr:`metric_name`, reaches :attr:`solved_threshold`."""
        if self.higher_is_better:
            return metric >= self.solved_threshold
        return metric < self.solved_threshold

    def check_prediction(self, prediction: Tensor, batch: Batch) -> None:
        """Raise ``ValueError`` unless ``prediction`` is a float tensor of the expected shape."""
        batch_size = batch.targets.shape[0]
        if self.many_to_many:
            expected = (batch_size, batch.targets.shape[1], self.num_outputs)
            layout = (
                "(batch, steps, num_outputs): this task is many-to-many, return every step's output"
            )
        else:
            expected = (batch_size, self.num_outputs)
            layout = (
                "(batch, num_outputs): this task is many-to-one, return the output of each "
                "sequence's last valid step (index batch.lengths - 1 when lengths are set)"
            )
        if tuple(prediction.shape) != expected:
            raise ValueError(
                f"{self.name}: prediction must have shape {expected} {layout}; "
                f"got {tuple(prediction.shape)}"
            )
        if not prediction.is_floating_point():
            raise ValueError(
                f"{self.name}: prediction must be a float tensor, got {prediction.dtype}"
            )

    def validation_set(self, size: int, generator: torch.Generator) -> Batch:
        """The fixed validation batch of ``size`` sequences, drawn with ``generator``.

        Generated tasks draw fresh sequences; data-set tasks take (a seeded subset of) their
        validation split.
        """
        return self.sample(size, generator)

    def test_set(self) -> Batch | None:
        """The held-out test split, or ``None`` for generated tasks (every batch is new)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(length={self.length})"


class AbstractRegressionTask(AbstractTask):
    """Many-to-one regression: mean squared error is both the loss and the metric."""

    metric_name = "mse"
    higher_is_better = False
    many_to_many = False
    vocab_size = None

    def loss(self, prediction: Tensor, batch: Batch) -> Tensor:
        self.check_prediction(prediction, batch)
        return F.mse_loss(prediction, batch.targets)

    @torch.no_grad()
    def metrics(self, prediction: Tensor, batch: Batch) -> dict[str, float]:
        return {"mse": self.loss(prediction, batch).item()}


class AbstractClassificationTask(AbstractTask):
    """Many-to-one classification: trained on cross-entropy, judged by accuracy.

    ``prediction`` holds unnormalised logits, one row per sequence.
    """

    metric_name = "accuracy"
    higher_is_better = True
    many_to_many = False

    def loss(self, prediction: Tensor, batch: Batch) -> Tensor:
        self.check_prediction(prediction, batch)
        return F.cross_entropy(prediction, batch.targets)

    @torch.no_grad()
    def metrics(self, prediction: Tensor, batch: Batch) -> dict[str, float]:
        cross_entropy = self.loss(prediction, batch)  # checks the shape first
        correct = prediction.argmax(-1) == batch.targets
        return {"accuracy": correct.float().mean().item(), "cross_entropy": cross_entropy.item()}


SPLITS = ("train", "validation", "test")


def majority_share(labels: Tensor, num_classes: int) -> float:
    """The accuracy of always predicting the most frequent class in ``labels`` (int64)."""
    counts = torch.bincount(labels, minlength=num_classes)
    return float(counts.max() / counts.sum())


class AbstractDatasetTask(AbstractTask):
    """A fixed data set, split once into train, validation and test.

    Training batches are drawn uniformly with replacement from the training split using
    the caller's generator, so a run is reproducible and resumes exactly from the
    generator's state. The validation batch is a seeded subset of the validation split;
    :meth:`test_set` is the whole test split, evaluated once at the end of training.
    """

    @abc.abstractmethod
    def split_size(self, split: str) -> int:
        """Number of examples in ``split`` (one of :data:`SPLITS`)."""

    @abc.abstractmethod
    def examples(self, split: str, indices: Tensor) -> Batch:
        """The examples at ``indices`` (int64, ``(B,)``) of ``split``, as one batch."""

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        batch_size = check_count("batch_size", batch_size)
        check_generator(generator)
        indices = torch.randint(self.split_size("train"), (batch_size,), generator=generator)
        return self.examples("train", indices)

    def validation_set(self, size: int, generator: torch.Generator) -> Batch:
        """A seeded subset of at most ``size`` examples of the validation split (all if fewer)."""
        size = check_count("size", size)
        order = torch.randperm(self.split_size("validation"), generator=check_generator(generator))
        return self.examples("validation", order[:size].sort().values)

    def test_set(self) -> Batch:
        return self.examples("test", torch.arange(self.split_size("test")))

    def _check_split(self, split: str) -> str:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return split


class AbstractStreamTask(AbstractTask):
    """Next-token prediction over one long token stream, trained with truncated BPTT.

    Each split is a 1-D stream of token ids. For training, the stream is cut into
    ``batch_size`` contiguous parts laid side by side; step ``s`` reads chunk
    ``s mod chunks`` of ``length`` tokens from every part. The hidden state is carried from
    one chunk to the next and detached between them (so the gradient reaches at most
    ``length`` steps back, while the state remembers further), and reset when the parts
    start over. :meth:`stream_batch` is a pure function of the step, so a run resumes
    exactly. :meth:`sample` draws independent windows (for diagnosis).

    Metric: bits per token (cross-entropy in base 2); the baseline is the entropy of the
    training stream's unigram distribution, what a model without memory achieves.

    Args:
        length: the truncation length of BPTT, in tokens.
        streams: ``{"train": ids, "validation": ids, "test": ids}``, each ``(N,)`` int64.
        vocab_size: number of distinct tokens.
        embedding: the default embedding width.
    """

    metric_name = "bits_per_token"
    higher_is_better = False
    many_to_many = True

    def __init__(self, length: int, streams: dict[str, Tensor], vocab_size: int, embedding: int) -> None:
        super().__init__(length)
        for split in SPLITS:
            if streams[split].numel() < self.length + 1:
                raise ValueError(
                    f"{type(self).__name__}: the {split} split holds {streams[split].numel()} "
                    f"tokens, fewer than length + 1 = {self.length + 1}; pass a shorter length "
                    "or more text"
                )
        self.streams = streams
        self.vocab_size = vocab_size
        self.num_outputs = vocab_size
        self.input_size = check_count("embedding", embedding)
        counts = torch.bincount(streams["train"], minlength=vocab_size).double()
        probabilities = counts[counts > 0] / counts.sum()
        self.baseline = float(-(probabilities * probabilities.log2()).sum())

    def chunks_per_epoch(self, batch_size: int) -> int:
        """Training steps before the ``batch_size`` parts of the stream start over."""
        return self._chunks_per_epoch(self._parts("train", batch_size)[0])

    def _chunks_per_epoch(self, inputs: Tensor) -> int:
        chunks = inputs.shape[1] // self.length
        if chunks < 1:
            raise ValueError(
                f"{type(self).__name__}: {self.streams['train'].numel()} training tokens cut into "
                f"{inputs.shape[0]} parts leave fewer than length = {self.length} per part; "
                "pass a smaller batch or length"
            )
        return chunks

    def stream_batch(self, step: int, batch_size: int) -> tuple[Batch, bool]:
        """Chunk ``step`` (0-based) of the training stream, and whether it starts the parts over.

        Returns:
            ``(batch, restart)``: ``batch.inputs`` ``(B, length)`` ids, ``batch.targets`` the
            same shifted by one token; ``restart`` is ``True`` when the carried state must
            be reset (the first chunk of each pass).
        """
        inputs, targets = self._parts("train", batch_size)
        chunk = step % self._chunks_per_epoch(inputs)
        window = slice(chunk * self.length, (chunk + 1) * self.length)
        return Batch(inputs[:, window], targets[:, window]), chunk == 0

    def chunks(self, split: str, batch_size: int, max_tokens: int | None = None) -> list[Batch]:
        """``split`` (its first ``max_tokens``) as consecutive chunks of parallel parts.

        Run them in order carrying the state to score the split; the last chunk may be
        shorter than ``length``. A split too short for ``batch_size`` parts of at least
        ``length`` tokens is cut into fewer parts.
        """
        tokens = self.streams[split][:max_tokens].numel()
        batch_size = max(1, min(check_count("batch_size", batch_size), (tokens - 1) // self.length))
        inputs, targets = self._parts(split, batch_size, max_tokens)
        return [
            Batch(inputs[:, start : start + self.length], targets[:, start : start + self.length])
            for start in range(0, inputs.shape[1], self.length)
        ]

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        return self._windows("train", check_count("batch_size", batch_size), generator)

    def validation_set(self, size: int, generator: torch.Generator) -> Batch:
        """Independent windows of the validation stream (for one-batch diagnostics)."""
        return self._windows("validation", check_count("size", size), generator)

    def _windows(self, split: str, count: int, generator: torch.Generator) -> Batch:
        """``count`` windows of ``length`` tokens at random places of ``split``, with their targets."""
        stream = self.streams[split]
        starts = torch.randint(stream.numel() - self.length, (count, 1), generator=check_generator(generator))
        positions = starts + torch.arange(self.length)
        return Batch(stream[positions], stream[positions + 1])

    def loss(self, prediction: Tensor, batch: Batch) -> Tensor:
        self.check_prediction(prediction, batch)
        return F.cross_entropy(prediction.flatten(0, 1), batch.targets.flatten())

    def probe_loss(self, prediction: Tensor, batch: Batch) -> Tensor:
        """The loss of the last next-token prediction: its profile shows how far back it reaches."""
        self.check_prediction(prediction, batch)
        return F.cross_entropy(prediction[:, -1], batch.targets[:, -1])

    @torch.no_grad()
    def metrics(self, prediction: Tensor, batch: Batch) -> dict[str, float]:
        cross_entropy = self.loss(prediction, batch)
        correct = prediction.argmax(-1) == batch.targets
        return {
            self.metric_name: cross_entropy.item() / math.log(2),
            "cross_entropy": cross_entropy.item(),
            "accuracy": correct.float().mean().item(),
        }

    def _parts(self, split: str, batch_size: int, max_tokens: int | None = None) -> tuple[Tensor, Tensor]:
        """``split`` cut into ``batch_size`` contiguous parts: inputs and next-token targets."""
        stream = self.streams[split][:max_tokens]
        batch_size = check_count("batch_size", batch_size)
        part = (stream.numel() - 1) // batch_size
        inputs = stream[: batch_size * part].view(batch_size, part)
        return inputs, stream[1 : batch_size * part + 1].view(batch_size, part)
