"""Independently recurrent cell (IndRNN): a diagonal recurrent weight."""

from __future__ import annotations

import math
from typing import final

import torch
from torch import Tensor, nn

from bptt.cells.elman import AbstractElmanCell


@final
class IndRNNCell(AbstractElmanCell):
    r"""The IndRNN step (Li et al. 2018): each unit recurs only on itself.

    .. math::
        z_t = W_{ih} x_t + b_{ih} + u \odot h_{t-1} + b_{hh}, \qquad h_t = f(z_t)

    The recurrent weight ``weight_hh`` is the vector ``u`` of shape ``(H,)``, so the step
    Jacobian is diagonal, :math:`J_t = \mathrm{diag}(f'(z_t) \odot u)`, and the gradient
    over ``T`` steps is unit by unit :math:`\prod_t f'(z_{t,j})\, u_j`. Bounding
    :math:`|u_j| \le \gamma^{1/T}` (:class:`bptt.remedies.SpectralBound` with a horizon,
    constraint ``"indrnn:γ"``) keeps it from exploding; ReLU keeps it from vanishing on
    active units. Neither torch's fused kernels nor the explicit Elman BPTT compute this
    step, so a stack of them runs the unrolled loop.

    Args:
        input_size: number of input features ``I``.
        hidden_size: number of hidden units ``H``.
        nonlinearity: ``"relu"`` (default, as in the paper), ``"tanh"`` or ``"sigmoid"``.
        bias: if ``False``, no biases.

    Shape:
        - x_t: ``(B, I)``; state ``h``: ``(B, H)``; returns ``(B, H)``.
    """

    def __init__(
        self, input_size: int, hidden_size: int, nonlinearity: str = "relu", bias: bool = True
    ) -> None:
        super().__init__(input_size, hidden_size, nonlinearity, bias)

    def _recurrent_weight_shape(self) -> tuple[int, ...]:
        return (self.hidden_size,)

    @property
    def recurrent_matrix(self) -> Tensor:
        return torch.diag(self.weight_hh)

    def reset_parameters(self) -> None:
        """``W_ih`` ~ U(-1/sqrt(H), 1/sqrt(H)), ``u`` ~ U(0, 1), biases zero (Li et al. 2018)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        nn.init.uniform_(self.weight_ih, -bound, bound)
        nn.init.uniform_(self.weight_hh, 0.0, 1.0)
        if self.bias:
            nn.init.zeros_(self.bias_ih)
            nn.init.zeros_(self.bias_hh)

    def recurrent_projection(self, h: Tensor, weight: Tensor) -> Tensor:
        """``u ⊙ h + b_hh`` for the vector ``u = weight``."""
        recurrent = h * weight
        return recurrent if self.bias_hh is None else recurrent + self.bias_hh

    def pointwise(self, input_part: Tensor, recurrent_part: Tensor, state: Tensor) -> Tensor:
        return self.activate(input_part, recurrent_part, state)
