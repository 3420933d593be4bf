"""Sequence models: an optional embedding, a :class:`~bptt.Recurrent` stack and a head."""

from __future__ import annotations

import abc
from typing import final

import torch
from torch import Tensor, nn

from bptt.cells.base import State
from bptt.recurrent import Recurrent


class AbstractHead(nn.Module, abc.ABC):
    """Maps the recurrent outputs ``(B, T, H)`` to predictions."""

    def __init__(self, hidden_size: int, num_outputs: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, num_outputs)

    @abc.abstractmethod
    def forward(self, outputs: Tensor, lengths: Tensor | None) -> Tensor:
        """Args: outputs ``(B, T, H)``; lengths ``(B,)`` or ``None`` (all full length)."""


@final
class LastStepHead(AbstractHead):
    """Many-to-one: a linear read-out of each sequence's last valid hidden state.

    Shape:
        - outputs: ``(B, T, H)``; returns ``(B, num_outputs)`` (class logits or regression).
    """

    def forward(self, outputs: Tensor, lengths: Tensor | None) -> Tensor:
        if lengths is None:
            last = outputs[:, -1]
        else:
            index = (lengths.to(outputs.device) - 1).view(-1, 1, 1).expand(-1, 1, outputs.shape[-1])
            last = outputs.gather(1, index).squeeze(1)
        return self.linear(last)


@final
class PerStepHead(AbstractHead):
    """Many-to-many: a linear read-out at every step (e.g. next-token logits).

    Shape:
        - outputs: ``(B, T, H)``; returns ``(B, T, num_outputs)``. Padded steps give the
          read-out of a zero state; losses must ignore them (see :class:`bptt.tasks.Batch`).
    """

    def forward(self, outputs: Tensor, lengths: Tensor | None) -> Tensor:
        return self.linear(outputs)


@final
class SequenceModel(nn.Module):
    """Embedding (for token ids) -> recurrent stack -> head. Batch first throughout.

    Args:
        recurrent: the recurrent stack; it is switched to ``batch_first=True``.
        head: :class:`LastStepHead` (many-to-one) or :class:`PerStepHead` (many-to-many).
        vocab_size: if given, inputs are token ids embedded into ``recurrent.input_size``
            features.

    Shape:
        - inputs: ``(B, T, I)`` floats, or ``(B, T)`` integer token ids with ``vocab_size``.
        - lengths: ``(B,)`` valid lengths, or ``None``.
        - returns: the head's output.
    """

    def __init__(self, recurrent: Recurrent, head: AbstractHead, vocab_size: int | None = None) -> None:
        super().__init__()
        recurrent.batch_first = True
        self.embedding = None if vocab_size is None else nn.Embedding(vocab_size, recurrent.input_size)
        self.recurrent = recurrent
        self.head = head

    def forward(self, inputs: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.forward_with_state(inputs, None, lengths)[0]

    def forward_with_state(
        self, inputs: Tensor, state: State | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, State]:
        """Like :meth:`forward`, starting from ``state`` and returning the final state too.

        This is how a stream is processed in chunks (truncated BPTT, generation): pass each
        chunk the state the previous one returned, detached to truncate the gradient.

        Returns:
            ``(prediction, final_state)``, the state as :class:`~bptt.Recurrent` returns it.
        """
        if self.embedding is not None:
            inputs = self._embed(inputs)
        outputs, final = self.recurrent(inputs, state, lengths=lengths)
        return self.head(outputs, lengths), final

    def _embed(self, tokens: Tensor) -> Tensor:
        vocab = self.embedding.num_embeddings
        if tokens.ndim != 2 or tokens.dtype not in (torch.int32, torch.int64):
            raise ValueError(
                f"expected token ids as an integer tensor of shape (B, T), got a {tokens.dtype} "
                f"tensor of shape {tuple(tokens.shape)}"
            )
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab):
            raise ValueError(
                f"token ids must lie in [0, {vocab}), got values from {int(tokens.min())} to "
                f"{int(tokens.max())}; the vocabulary of the data and the model differ"
            )
        return self.embedding(tokens)
