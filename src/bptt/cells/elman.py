"""Elman (vanilla) RNN cells: h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), and the
abstract base of the Elman family (IndRNN, residual and skip cells)."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, final

from torch import Tensor

from bptt.activations import activation
from bptt.autograd import elman_bptt
from bptt.cells.base import AbstractCell, State


class AbstractElmanCell(AbstractCell):
    r"""A cell whose step applies one nonlinearity ``f`` to one pre-activation ``z``.

    .. math::
        z_t = W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}, \qquad h_t = g(f(z_t), \text{state})

    where each concrete cell says how the new state is built from :math:`f(z_t)` (the plain
    Elman cell: :math:`h_t = f(z_t)`) and may change the recurrent projection (IndRNN). The
    nonlinearity comes from :data:`bptt.activations.ACTIVATIONS`; diagnostics read its
    derivative through :meth:`derivative`.

    Args:
        input_size: number of input features ``I``.
        hidden_size: number of hidden units ``H``.
        nonlinearity: ``"tanh"``, ``"relu"`` or ``"sigmoid"``.
        bias: if ``False``, no biases.

    Raises:
        ValueError: for an unknown ``nonlinearity`` (the message suggests the closest name).
    """

    num_gates: ClassVar[int] = 1
    gate_activations: ClassVar[dict[str, str]] = {"z": "none"}

    def __init__(
        self, input_size: int, hidden_size: int, nonlinearity: str = "tanh", bias: bool = True
    ) -> None:
        chosen = activation(nonlinearity)
        super().__init__(input_size, hidden_size, bias)
        self.nonlinearity = nonlinearity
        self.activation = chosen

    def gate_values(self, input_part: Tensor, recurrent_part: Tensor, state: State) -> dict[str, Tensor]:
        return {"z": input_part + recurrent_part}

    def activate(self, input_part: Tensor, recurrent_part: Tensor, state: State) -> Tensor:
        """:math:`f(z_t)`, with :math:`z_t` the ``"z"`` of :meth:`gate_values`."""
        return self.activation.function(self.gate_values(input_part, recurrent_part, state)["z"])

    def derivative(self, z: Tensor) -> Tensor:
        """``f'(z)``, the diagonal of :math:`\\partial f(z_t) / \\partial z_t`."""
        return self.activation.derivative(z)

    def slope(self, gates: dict[str, Tensor]) -> Tensor:
        return self.derivative(gates["z"])

    @property
    def piecewise_linear(self) -> bool:
        return self.nonlinearity == "relu"

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, nonlinearity={self.nonlinearity!r}"


@final
class ElmanCell(AbstractElmanCell):
    r"""The Elman RNN step.

    .. math::
        z_t = W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}, \qquad h_t = f(z_t)

    Its Jacobian :math:`\partial h_t / \partial h_{t-1} = \mathrm{diag}(f'(z_t))\, W_{hh}`
    decides whether gradients vanish or explode through time. A stack of them runs through
    torch's fused kernel (tanh, relu) or the explicit BPTT of :func:`bptt.autograd.elman_bptt`.

    Args:
        input_size: number of input features ``I``.
        hidden_size: number of hidden units ``H``.
        nonlinearity: ``"tanh"``, ``"relu"`` or ``"sigmoid"``.
        bias: if ``False``, no biases.

    Shape:
        - x_t: ``(B, I)``; state ``h``: ``(B, H)``; returns ``(B, H)``.
    """

    def pointwise(self, input_part: Tensor, recurrent_part: Tensor, state: Tensor) -> Tensor:
        return self.activate(input_part, recurrent_part, state)

    def explicit_bptt(
        self,
        inputs: Tensor,
        state: Tensor,
        mask: Tensor | None = None,
        on_profile: Callable[[Tensor], None] | None = None,
    ) -> tuple[Tensor, Tensor]:
        return elman_bptt(
            inputs, state, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh,
            nonlinearity=self.nonlinearity, mask=mask, on_profile=on_profile,
        )

    @property
    def fused_mode(self) -> str | None:
        return self.activation.fused_mode
