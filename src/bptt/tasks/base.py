"""The task interface: a batch of sequences, its loss, its metrics and when it counts as solved."""

from __future__ import annotations

import abc
import dataclasses
import numbers
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor


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
    """Number of input features, or the vocabulary size when :attr:`vocab_size` is set."""
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
        """Batch means of the metric named :attr:`metric_name` and of any extras."""

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
