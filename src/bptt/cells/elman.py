"""Elman (vanilla) RNN cell: h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Final

import torch
from torch import Tensor

from bptt._registry import unknown_name_message
from bptt.autograd import elman_bptt
from bptt.cells.base import AbstractCell

ACTIVATIONS: Final = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid}


class ElmanCell(AbstractCell):
    r"""The Elman RNN step.

    .. math::
        z_t = W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}, \qquad h_t = f(z_t)

    Its Jacobian :math:`\partial h_t / \partial h_{t-1} = \mathrm{diag}(f'(z_t))\, W_{hh}`
    decides whether gradients vanish or explode through time.

    Args:
        input_size: number of input features ``I``.
        hidden_size: number of hidden units ``H``.
        nonlinearity: ``"tanh"``, ``"relu"`` or ``"sigmoid"``.
        bias: if ``False``, no biases.

    Shape:
        - x_t: ``(B, I)``; state ``h``: ``(B, H)``; returns ``(B, H)``.
    """

    num_gates: ClassVar[int] = 1
    gate_activations: ClassVar[dict[str, str]] = {"z": "none"}

    def __init__(
        self, input_size: int, hidden_size: int, nonlinearity: str = "tanh", bias: bool = True
    ) -> None:
        if nonlinearity not in ACTIVATIONS:
            raise ValueError(unknown_name_message("nonlinearity", nonlinearity, list(ACTIVATIONS)))
        super().__init__(input_size, hidden_size, bias)
        self.nonlinearity = nonlinearity
        self._activation = ACTIVATIONS[nonlinearity]

    def gate_values(self, input_part: Tensor, recurrent_part: Tensor, state: Tensor) -> dict[str, Tensor]:
        return {"z": input_part + recurrent_part}

    def pointwise(self, input_part: Tensor, recurrent_part: Tensor, state: Tensor) -> Tensor:
        return self._activation(self.gate_values(input_part, recurrent_part, state)["z"])

    def derivative(self, z: Tensor) -> Tensor:
        """``f'(z)``, the diagonal of :math:`\\partial h_t / \\partial z_t`."""
        if self.nonlinearity == "tanh":
            return 1 - torch.tanh(z).square()
        if self.nonlinearity == "sigmoid":
            sigma = torch.sigmoid(z)
            return sigma * (1 - sigma)
        return (z > 0).to(z.dtype)

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
        return {"tanh": "RNN_TANH", "relu": "RNN_RELU"}.get(self.nonlinearity)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, nonlinearity={self.nonlinearity!r}"
