r"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"): gates that read the input only.

Without :math:`h_{t-1}` in the gates, a layer is the linear recurrence
:math:`h_t = a_t \odot h_{t-1} + b_t` with :math:`a_t, b_t` known from the inputs alone, which
:func:`bptt.scan.linear_scan` computes for the whole sequence at once.

**How the rest of bptt sees these cells.** They have no trained recurrent weight. To keep
the step in the form the diagnostics assume, :math:`s_t = \mathrm{pointwise}(W_{ih} x_t + b_{ih},\
W_{hh} h_{t-1},\ s_{t-1})` unit by unit, ``weight_hh`` is a zero ``(G*H, H)`` buffer (not a
parameter, not saved in the state dict) and there is no ``bias_hh``: the recurrent part is
zero and is added to the gates' pre-activations, so the step is exact and the factored Jacobian
:math:`J_t = A_t W_{hh} + C_t` is :math:`C_t = \mathrm{diag}(a_t)` (minGRU :math:`1 - z_t`, minLSTM
:math:`f'_t`), coming from :meth:`pointwise`'s use of the state. ``weight_hh`` is not a
parameter, so :func:`bptt.weights.recurrent_layers` finds no recurrent layer in these cells:
recurrent initialisations, constraints and penalties on ``W_hh`` do not apply to them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar, final

import torch
from torch import Tensor, nn

from bptt.cells.base import AbstractCell
from bptt.scan import linear_scan

__all__ = ["MinGRUCell", "MinLSTMCell", "positive_g"]


def positive_g(x: Tensor) -> Tensor:
    r"""The paper's positive activation of the candidate state,

    .. math::
        g(x) = \begin{cases} x + \tfrac12 & x \ge 0 \\ \sigma(x) & x < 0 \end{cases}

    continuous (:math:`g(0) = \tfrac12`), increasing and positive, with slope 1 for
    :math:`x \ge 0`; the paper uses it so that :math:`\log \tilde h_t` exists in its log-space scan.
    """
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


@final
class MinGRUCell(AbstractCell):
    r"""The minGRU step (Feng et al. 2024), the variant with the positive :func:`positive_g`
    (the version the paper computes in log space and trains with):

    .. math::
        z_t = \sigma(W_z x_t + b_z), \qquad \tilde h_t = g(W_h x_t + b_h), \qquad
        h_t = (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t

    (the paper's plain version takes :math:`\tilde h_t = W_h x_t + b_h`; its log-space
    version takes :math:`g`, so that :math:`\log \tilde h_t` exists). ``weight_ih`` ``(2H, I)`` stacks
    :math:`W_z, W_h` and ``bias_ih`` ``(2H,)`` stacks :math:`b_z, b_h`; ``weight_hh`` is a zero
    buffer and the recurrent part it gives is added to the pre-activations (see
    :mod:`bptt.cells.minimal`). :meth:`reset_parameters` draws every parameter from
    :math:`\mathcal{U}(-1/\sqrt{I}, 1/\sqrt{I})`, :class:`torch.nn.Linear`'s default, which the
    paper's linear maps have. A layer runs as one :func:`bptt.scan.linear_scan` with
    :math:`a_t = 1 - z_t`, :math:`b_t = z_t \odot \tilde h_t` (:meth:`explicit_bptt`).

    Args:
        input_size: number of input features ``I``.
        hidden_size: number of hidden units ``H``.
        bias: if ``False``, no ``bias_ih``.

    Shape:
        - x_t: ``(B, I)``; state ``h``: ``(B, H)``; returns ``(B, H)``.
    """

    num_gates: ClassVar[int] = 2
    """Blocks of ``weight_ih``: the update gate :math:`z` and the candidate :math:`\\tilde h`."""
    gate_activations: ClassVar[dict[str, str]] = {"update": "sigmoid"}
    """The update gate only: :meth:`gates` also gives ``"candidate"``, :math:`g(\\cdot)`, which
    :data:`bptt.activations.ACTIVATIONS` does not know, so no saturation is read from it."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__(input_size, hidden_size, bias)
        _drop_recurrent_weight(self)

    def reset_parameters(self) -> None:
        """Every parameter ~ U(-1/sqrt(I), 1/sqrt(I)), as :class:`torch.nn.Linear`."""
        _linear_init(self)

    def gate_values(self, input_part: Tensor, recurrent_part: Tensor, state: Tensor) -> dict[str, Tensor]:
        """The update gate :math:`z_t` and the candidate :math:`\\tilde h_t`."""
        update, candidate = (input_part + recurrent_part).chunk(2, dim=-1)
        return {"update": torch.sigmoid(update), "candidate": positive_g(candidate)}

    def pointwise(self, input_part: Tensor, recurrent_part: Tensor, state: Tensor) -> Tensor:
        decay, drive = self._coefficients(input_part + recurrent_part)
        return decay * state + drive

    def _coefficients(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`a = 1 - z` and :math:`b = z \odot \tilde h` from the stacked pre-activations."""
        update, candidate = pre.chunk(2, dim=-1)
        update = torch.sigmoid(update)
        return 1 - update, update * positive_g(candidate)

    def explicit_bptt(
        self,
        inputs: Tensor,
        state: Tensor,
        mask: Tensor | None = None,
        on_profile: Callable[[Tensor], None] | None = None,
    ) -> tuple[Tensor, Tensor] | None:
        r"""The whole layer as one :func:`bptt.scan.linear_scan` (see :meth:`AbstractCell.explicit_bptt`).

        Returns ``None`` while a gradient profile is recorded (``on_profile`` given), so that
        :class:`bptt.Recurrent` runs the unrolled loop, which records it.
        """
        if on_profile is not None:
            return None
        decay, drive = self._coefficients(nn.functional.linear(inputs, self.weight_ih, self.bias_ih))
        return _scan_layer(decay, drive, state, mask)


@final
class MinLSTMCell(AbstractCell):
    r"""The minLSTM step (Feng et al. 2024) with normalised gates, the variant with the positive
    :func:`positive_g` (the paper's log-space version, which it trains with):

    .. math::
        f_t = \sigma(W_f x_t + b_f), \quad i_t = \sigma(W_i x_t + b_i), \quad
        f'_t = \frac{f_t}{f_t + i_t}, \quad i'_t = \frac{i_t}{f_t + i_t} \\
        \tilde h_t = g(W_h x_t + b_h), \qquad h_t = f'_t \odot h_{t-1} + i'_t \odot \tilde h_t

    The state is :math:`h` alone (no cell state). :math:`f'_t` is computed as
    :math:`\sigma(\log f_t - \log i_t)` with :math:`\log \sigma(x) = -\mathrm{softplus}(-x)`, equal to
    :math:`f_t / (f_t + i_t)` and finite even where both gates underflow, and :math:`i'_t` as
    :math:`1 - f'_t`. ``weight_ih``
    ``(3H, I)`` stacks :math:`W_f, W_i, W_h` and ``bias_ih`` ``(3H,)`` their biases;
    ``weight_hh`` is a zero buffer (see :mod:`bptt.cells.minimal`). Initialised as
    :class:`MinGRUCell`. A layer runs as one :func:`bptt.scan.linear_scan` with
    :math:`a_t = f'_t`, :math:`b_t = i'_t \odot \tilde h_t` (:meth:`explicit_bptt`).

    Args:
        input_size: number of input features ``I``.
        hidden_size: number of hidden units ``H``.
        bias: if ``False``, no ``bias_ih``.

    Shape:
        - x_t: ``(B, I)``; state ``h``: ``(B, H)``; returns ``(B, H)``.
    """

    num_gates: ClassVar[int] = 3
    """Blocks of ``weight_ih``: forget :math:`f`, input :math:`i`, candidate :math:`\\tilde h`."""
    gate_activations: ClassVar[dict[str, str]] = {"forget": "sigmoid", "input": "sigmoid"}
    """The two sigmoid gates, before normalisation; :meth:`gates` also gives ``"candidate"``
    (see :attr:`MinGRUCell.gate_activations`)."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__(input_size, hidden_size, bias)
        _drop_recurrent_weight(self)

    def reset_parameters(self) -> None:
        """Every parameter ~ U(-1/sqrt(I), 1/sqrt(I)), as :class:`torch.nn.Linear`."""
        _linear_init(self)

    def gate_values(self, input_part: Tensor, recurrent_part: Tensor, state: Tensor) -> dict[str, Tensor]:
        """The forget and input gates :math:`f_t, i_t` and the candidate :math:`\\tilde h_t`."""
        forget, input_gate, candidate = (input_part + recurrent_part).chunk(3, dim=-1)
        return {
            "forget": torch.sigmoid(forget),
            "input": torch.sigmoid(input_gate),
            "candidate": positive_g(candidate),
        }

    def pointwise(self, input_part: Tensor, recurrent_part: Tensor, state: Tensor) -> Tensor:
        decay, drive = self._coefficients(input_part + recurrent_part)
        return decay * state + drive

    def _coefficients(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`a = f'` and :math:`b = i' \odot \tilde h` from the stacked pre-activations."""
        forget, input_gate, candidate = pre.chunk(3, dim=-1)
        # log f - log i, with log sigma(x) = -softplus(-x)
        decay = torch.sigmoid(nn.functional.softplus(-input_gate) - nn.functional.softplus(-forget))
        return decay, (1 - decay) * positive_g(candidate)

    def explicit_bptt(
        self,
        inputs: Tensor,
        state: Tensor,
        mask: Tensor | None = None,
        on_profile: Callable[[Tensor], None] | None = None,
    ) -> tuple[Tensor, Tensor] | None:
        r"""The whole layer as one :func:`bptt.scan.linear_scan` (see :meth:`AbstractCell.explicit_bptt`).

        Returns ``None`` while a gradient profile is recorded (``on_profile`` given), so that
        :class:`bptt.Recurrent` runs the unrolled loop, which records it.
        """
        if on_profile is not None:
            return None
        decay, drive = self._coefficients(nn.functional.linear(inputs, self.weight_ih, self.bias_ih))
        return _scan_layer(decay, drive, state, mask)


def _drop_recurrent_weight(cell: AbstractCell) -> None:
    """Replace ``weight_hh`` by a zero buffer and remove ``bias_hh`` (see :mod:`bptt.cells.minimal`)."""
    zeros = torch.zeros_like(cell.weight_hh, requires_grad=False)
    del cell.weight_hh
    cell.register_buffer("weight_hh", zeros, persistent=False)
    if cell.bias:
        del cell.bias_hh
    cell.register_parameter("bias_hh", None)


def _linear_init(cell: AbstractCell) -> None:
    bound = 1.0 / math.sqrt(cell.input_size)
    for parameter in cell.parameters():
        nn.init.uniform_(parameter, -bound, bound)


def _scan_layer(decay: Tensor, drive: Tensor, state: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """``(outputs, final state)`` of :math:`h_t = a_t h_{t-1} + b_t`; a padded step keeps the
    state (:math:`a = 1, b = 0`) and outputs zero, as :class:`bptt.Recurrent`'s loop does."""
    if mask is not None:
        valid = mask.unsqueeze(-1)
        decay = torch.where(valid, decay, 1.0)
        drive = torch.where(valid, drive, 0.0)
    states = linear_scan(decay, drive, state)
    outputs = states if mask is None else torch.where(mask.unsqueeze(-1), states, 0.0)
    return outputs, states[-1]
