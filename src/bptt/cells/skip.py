"""Elman cells with skip connections in time: residual (h_{t-1}) and skip-k (h_{t-k})."""

from __future__ import annotations

from typing import final

import torch
from torch import Tensor

from bptt.cells.elman import AbstractElmanCell


@final
class ResidualElmanCell(AbstractElmanCell):
    r"""An Elman step added to the previous state (a residual connection in time).

    .. math::
        h_t = h_{t-1} + f(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh})

    The step Jacobian is :math:`J_t = I + \mathrm{diag}(f'(z_t))\, W_{hh}`: where units
    saturate (:math:`f' \to 0`) the gradient passes unchanged instead of vanishing. Neither
    torch's fused kernels nor the explicit Elman BPTT compute this step, so a stack of them
    runs the unrolled loop.

    Args:
        input_size: number of input features ``I``.
        hidden_size: number of hidden units ``H``.
        nonlinearity: ``"tanh"``, ``"relu"`` or ``"sigmoid"``.
        bias: if ``False``, no biases.

    Shape:
        - x_t: ``(B, I)``; state ``h``: ``(B, H)``; returns ``(B, H)``.
    """

    def pointwise(self, input_part: Tensor, recurrent_part: Tensor, state: Tensor) -> Tensor:
        return state + self.activate(input_part, recurrent_part, state)


@final
class SkipElmanCell(AbstractElmanCell):
    r"""An Elman step plus the state ``k`` steps back (a skip connection in time).

    .. math::
        h_t = f(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}) + h_{t-k}

    The state carries the last ``k`` hidden vectors, ``(h_t, h_{t-1}, ..., h_{t-k+1})``, so
    the gradient reaches ``T`` steps back through ``T/k`` identity hops. With ``k = 1`` it is
    :class:`ResidualElmanCell` with a one-element tuple state. A stack of them runs the
    unrolled loop.

    Args:
        input_size: number of input features ``I``.
        hidden_size: number of hidden units ``H``.
        skip: ``k >= 1``.
        nonlinearity: ``"tanh"``, ``"relu"`` or ``"sigmoid"``.
        bias: if ``False``, no biases.

    Shape:
        - x_t: ``(B, I)``; state: a tuple of ``k`` tensors ``(B, H)``, newest first.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        skip: int = 4,
        nonlinearity: str = "tanh",
        bias: bool = True,
    ) -> None:
        if not isinstance(skip, int) or isinstance(skip, bool) or skip < 1:
            raise ValueError(f"skip must be a positive integer (steps back), got {skip!r}")
        super().__init__(input_size, hidden_size, nonlinearity, bias)
        self.skip = skip

    def init_state(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[Tensor, ...]:
        zeros = super().init_state(batch_size, device=device, dtype=dtype)
        return tuple(zeros.clone() for _ in range(self.skip))

    def hidden(self, state: tuple[Tensor, ...]) -> Tensor:
        return state[0]

    def pointwise(
        self, input_part: Tensor, recurrent_part: Tensor, state: tuple[Tensor, ...]
    ) -> tuple[Tensor, ...]:
        new = self.activate(input_part, recurrent_part, state[0]) + state[-1]
        return (new, *state[:-1])

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, skip={self.skip}"
