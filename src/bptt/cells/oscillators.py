r"""Cells discretising ordinary differential equations for long memory: LEM and coRNN.

Both keep a state :math:`(y, z)` and output :math:`y` (the first part, like an LSTM's
:math:`(h, c)`). Both multiply a second matrix inside the step (LEM: :math:`W_{zh} z_t`
after :math:`z_t` is known; coRNN: :math:`\mathcal{W} z_{t-1}`), so the step is not two
projections followed by a unit-wise update (:attr:`~bptt.cells.AbstractCell.unit_wise` is
``False``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar, Final, final

import torch
from torch import Tensor, nn

from bptt.autograd import cornn_bptt, lem_bptt
from bptt.autograd.oscillators import check_option
from bptt.cells.base import AbstractCell

LEM_DT: Final = 0.0242
"""LEM's default :math:`\\Delta t`: the authors' default for the adding problem (hidden
size 128, batch 50, Adam with learning rate 2.6e-3)."""

CORNN_DT: Final = 0.06
"""coRNN's default :math:`\\Delta t`: the authors' default for the adding problem (hidden
size 128, batch 50, Adam with learning rate 2e-2)."""

CORNN_GAMMA: Final = 66.0
"""coRNN's default restoring force :math:`\\gamma`, the authors' default for the adding problem."""

CORNN_EPSILON: Final = 15.0
"""coRNN's default damping :math:`\\epsilon`, the authors' default for the adding problem."""


def _fix(name: str, default: float) -> str:
    return f"pass e.g. {name}={default!r} (the authors' default for the adding problem)"


def _zero_pair(
    cell: AbstractCell, batch_size: int, device: torch.device | str | None, dtype: torch.dtype | None
) -> tuple[Tensor, Tensor]:
    """The zero state ``(y, z)`` of ``cell``, on its weights' device and dtype unless given."""
    y = torch.zeros(
        batch_size,
        cell.hidden_size,
        device=cell.weight_hh.device if device is None else device,
        dtype=cell.weight_hh.dtype if dtype is None else dtype,
    )
    return y, torch.zeros_like(y)


@final
class LEMCell(AbstractCell):
    r"""The Long Expressive Memory step (Rusch, Mishra, Erichson & Mahoney 2022); state ``(y, z)``.

    .. math::
        \Delta t_1 &= \Delta t\, \sigma(W_1 y_{t-1} + V_1 x_t + b_1), \qquad
        \Delta t_2 = \Delta t\, \sigma(W_2 y_{t-1} + V_2 x_t + b_2) \\
        z_t &= (1 - \Delta t_1) \odot z_{t-1} + \Delta t_1 \odot \tanh(W_z y_{t-1} + V_z x_t + b_z) \\
        y_t &= (1 - \Delta t_2) \odot y_{t-1} + \Delta t_2 \odot \tanh(W_y z_t + V_y x_t + b_y)

    as the paper writes it (its :math:`\Delta t_n` is :math:`\Delta t_1` here, the step of
    :math:`z`; its :math:`\overline{\Delta t}_n` is :math:`\Delta t_2`, the step of :math:`y`).
    Both updates are convex combinations, so with :math:`0 < \Delta t \le 1` the state stays in
    :math:`[-1, 1]` when it starts there, and each unit moves on its own learned time scale.

    Parameters (torch's names where they fit): ``weight_ih`` ``(4H, I)`` stacks
    :math:`V_1, V_2, V_z, V_y`; ``weight_hh`` ``(3H, H)`` stacks :math:`W_1, W_2, W_z`, the
    weights acting on :math:`y_{t-1}` (:attr:`recurrent_matrix`); ``weight_zh`` ``(H, H)`` is
    :math:`W_y`, acting on :math:`z_t`; ``bias_ih`` ``(4H,)``, ``bias_hh`` ``(3H,)`` and
    ``bias_zh`` ``(H,)`` are the biases of those three products (their sums are the
    :math:`b`'s). The authors' code has the same parameters with the blocks stacked as
    :math:`(\Delta t_2, \Delta t_1, y, z)` and :math:`(\Delta t_2, \Delta t_1, z)`, and draws
    every one from :math:`\mathcal{U}(-1/\sqrt{H}, 1/\sqrt{H})`, as :meth:`reset_parameters`
    does. A layer of them runs through the explicit BPTT of :func:`bptt.autograd.lem_bptt`.

    Args:
        input_size: number of input features ``I``.
        hidden_size: number of hidden units ``H``.
        bias: if ``False``, no biases.
        dt: the largest time step :math:`\Delta t`, in :math:`(0, 1]`; the default
            :data:`LEM_DT` = 0.0242 is the authors' default for the adding problem.

    Raises:
        ValueError: if ``dt`` is not a finite number in :math:`(0, 1]`.

    Shape:
        - x_t: ``(B, I)``; state ``(y, z)``: two ``(B, H)`` tensors; returns the same.
    """

    num_gates: ClassVar[int] = 4
    """Blocks of ``weight_ih`` (:math:`\\Delta t_1, \\Delta t_2, z, y`); ``weight_hh`` has the first three."""
    unit_wise: ClassVar[bool] = False
    gate_activations: ClassVar[dict[str, str]] = {
        "dt_z": "sigmoid",
        "dt_y": "sigmoid",
        "candidate_z": "tanh",
        "candidate_y": "tanh",
    }

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, dt: float = LEM_DT) -> None:
        step = check_option("LEMCell", "dt", dt, "the largest time step", _fix("dt", LEM_DT), positive=True, at_most=1)
        self.dt = step
        super().__init__(input_size, hidden_size, bias)
        if not bias:
            self.register_parameter("bias_zh", None)

    def _recurrent_weight_shape(self) -> tuple[int, ...]:
        """``(3H, H)``: the two time steps' and the z candidate's blocks (``bias_hh`` alike)."""
        return (3 * self.hidden_size, self.hidden_size)

    def extra_parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """:math:`W_y` (``weight_zh``, acting on :math:`z_t`) and its bias ``bias_zh``."""
        shapes = {"weight_zh": (self.hidden_size, self.hidden_size)}
        return {**shapes, "bias_zh": (self.hidden_size,)} if self.bias else shapes

    def init_state(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[Tensor, Tensor]:
        return _zero_pair(self, batch_size, device, dtype)

    def hidden(self, state: tuple[Tensor, Tensor]) -> Tensor:
        return state[0]

    def gate_values(
        self, input_part: Tensor, recurrent_part: Tensor, state: tuple[Tensor, Tensor]
    ) -> dict[str, Tensor]:
        """The sigmoids of the two time steps (:math:`\\Delta t_k / \\Delta t`) and the two
        tanh candidates; the ``"candidate_y"`` one reads the new :math:`z_t`."""
        return self._update(input_part, recurrent_part, state)[0]

    def pointwise(
        self, input_part: Tensor, recurrent_part: Tensor, state: tuple[Tensor, Tensor]
    ) -> tuple[Tensor, Tensor]:
        _, y, z = self._update(input_part, recurrent_part, state)
        return y, z

    def _update(
        self, input_part: Tensor, recurrent_part: Tensor, state: tuple[Tensor, Tensor]
    ) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """The gates and the new ``(y, z)``."""
        y, z = state
        from_x = input_part.chunk(4, dim=-1)
        from_y = recurrent_part.chunk(3, dim=-1)
        dt_z = torch.sigmoid(from_x[0] + from_y[0])
        dt_y = torch.sigmoid(from_x[1] + from_y[1])
        candidate_z = torch.tanh(from_x[2] + from_y[2])
        z_new = torch.lerp(z, candidate_z, self.dt * dt_z)
        candidate_y = torch.tanh(from_x[3] + nn.functional.linear(z_new, self.weight_zh, self.bias_zh))
        y_new = torch.lerp(y, candidate_y, self.dt * dt_y)
        gates = {"dt_z": dt_z, "dt_y": dt_y, "candidate_z": candidate_z, "candidate_y": candidate_y}
        return gates, y_new, z_new

    def explicit_bptt(
        self,
        inputs: Tensor,
        state: tuple[Tensor, Tensor],
        mask: Tensor | None = None,
        on_profile: Callable[[Tensor], None] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        return lem_bptt(
            inputs, *state, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self.weight_zh,
            self.bias_zh, self.dt, mask=mask, on_profile=on_profile,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dt={self.dt:g}"


@final
class CoRNNCell(AbstractCell):
    r"""The coupled oscillatory RNN step (Rusch & Mishra 2021); state ``(y, z)`` with :math:`z = y'`.

    The second-order ODE :math:`y'' = \tanh(W y + \mathcal{W} y' + V x + b) - \gamma y - \epsilon y'`
    discretised implicit-explicit with step :math:`\Delta t`:

    .. math::
        z_t &= z_{t-1} + \Delta t \big(\tanh(W y_{t-1} + \mathcal{W} z_{t-1} + V x_t + b)
               - \gamma\, y_{t-1} - \epsilon\, z_{t-1}\big) \\
        y_t &= y_{t-1} + \Delta t\, z_t

    (the authors' order: :math:`z` first, then :math:`y` from the new :math:`z`). Each unit
    is a damped oscillator (frequency :math:`\sqrt{\gamma}`, damping :math:`\epsilon`) driven by
    the others through the tanh; the paper bounds the hidden states and the gradients of
    this discretisation independently of the sequence length.

    Parameters: ``weight_ih`` ``(H, I)`` is :math:`V`; ``weight_hh`` ``(H, H)`` is :math:`W`,
    acting on :math:`y_{t-1}` (:attr:`recurrent_matrix`); ``weight_zh`` ``(H, H)`` is
    :math:`\mathcal{W}`, acting on :math:`z_{t-1}`; ``bias_ih + bias_hh`` is :math:`b`. The
    authors' code holds :math:`V, \mathcal{W}, W, b` in one :class:`torch.nn.Linear` of
    ``I + 2H`` inputs, so :meth:`reset_parameters` draws every weight and ``bias_ih`` from
    :math:`\mathcal{U}(-1/\sqrt{I + 2H}, 1/\sqrt{I + 2H})` and sets ``bias_hh`` to zero
    (their one bias has that distribution). A layer of them runs through the explicit BPTT
    of :func:`bptt.autograd.cornn_bptt`.


    Args:
        input_size: number of input features ``I``.
        hidden_size: number of hidden units ``H``.
        bias: if ``False``, no biases.
        dt: the time step :math:`\Delta t > 0`.
        gamma: the restoring force :math:`\gamma \ge 0`.
        epsilon: the damping :math:`\epsilon \ge 0`.

    The defaults (:math:`\Delta t = 0.06, \gamma = 66, \epsilon = 15`) are the authors' defaults
    for the adding problem; for sequential MNIST they use :math:`\Delta t = 0.042,
    \gamma = 2.7, \epsilon = 4.7`.

    Raises:
        ValueError: if ``dt`` is not a finite number > 0, or ``gamma`` or ``epsilon`` not a
            finite number >= 0.

    Shape:
        - x_t: ``(B, I)``; state ``(y, z)``: two ``(B, H)`` tensors; returns the same.
    """

    num_gates: ClassVar[int] = 1
    unit_wise: ClassVar[bool] = False
    gate_activations: ClassVar[dict[str, str]] = {"drive": "tanh"}

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        dt: float = CORNN_DT,
        gamma: float = CORNN_GAMMA,
        epsilon: float = CORNN_EPSILON,
    ) -> None:
        step = check_option("CoRNNCell", "dt", dt, "the time step", _fix("dt", CORNN_DT), positive=True)
        restoring = check_option(
            "CoRNNCell", "gamma", gamma, "the restoring force", _fix("gamma", CORNN_GAMMA), positive=False
        )
        damping = check_option(
            "CoRNNCell", "epsilon", epsilon, "the damping", _fix("epsilon", CORNN_EPSILON), positive=False
        )
        self.dt, self.gamma, self.epsilon = step, restoring, damping
        super().__init__(input_size, hidden_size, bias)

    def extra_parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        r""":math:`\mathcal{W}` (``weight_zh``, acting on :math:`z_{t-1}`)."""
        return {"weight_zh": (self.hidden_size, self.hidden_size)}

    def reset_parameters(self) -> None:
        """The authors' initialisation (see the class docstring)."""
        bound = 1.0 / math.sqrt(self.input_size + 2 * self.hidden_size)
        for name, parameter in self.named_parameters():
            if name == "bias_hh":
                nn.init.zeros_(parameter)
            else:
                nn.init.uniform_(parameter, -bound, bound)

    def init_state(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[Tensor, Tensor]:
        return _zero_pair(self, batch_size, device, dtype)

    def hidden(self, state: tuple[Tensor, Tensor]) -> Tensor:
        return state[0]

    def gate_values(
        self, input_part: Tensor, recurrent_part: Tensor, state: tuple[Tensor, Tensor]
    ) -> dict[str, Tensor]:
        """The driving force :math:`\\tanh(W y_{t-1} + \\mathcal{W} z_{t-1} + V x_t + b)`."""
        drive = input_part + recurrent_part + nn.functional.linear(state[1], self.weight_zh)
        return {"drive": torch.tanh(drive)}

    def pointwise(
        self, input_part: Tensor, recurrent_part: Tensor, state: tuple[Tensor, Tensor]
    ) -> tuple[Tensor, Tensor]:
        y, z = state
        drive = self.gate_values(input_part, recurrent_part, state)["drive"]
        z_new = z + self.dt * (drive - self.gamma * y - self.epsilon * z)
        return y + self.dt * z_new, z_new

    def explicit_bptt(
        self,
        inputs: Tensor,
        state: tuple[Tensor, Tensor],
        mask: Tensor | None = None,
        on_profile: Callable[[Tensor], None] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        return cornn_bptt(
            inputs, *state, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self.weight_zh,
            self.dt, self.gamma, self.epsilon, mask=mask, on_profile=on_profile,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dt={self.dt:g}, gamma={self.gamma:g}, epsilon={self.epsilon:g}"
