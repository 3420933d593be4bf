"""Gated cells: GRU (Cho et al. 2014) and LSTM (Hochreiter & Schmidhuber 1997).

Gate order and equations are torch's, so weights are interchangeable with
:class:`torch.nn.GRU` / :class:`torch.nn.LSTM`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, final

import torch
from torch import Tensor

from bptt.autograd import gru_bptt, lstm_bptt
from bptt.cells.base import AbstractCell


@final
class GRUCell(AbstractCell):
    r"""The gated recurrent unit step (gates stacked as ``r, z, n``).

    .. math::
        r_t &= \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}) \\
        z_t &= \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz}) \\
        n_t &= \tanh(W_{in} x_t + b_{in} + r_t \odot (W_{hn} h_{t-1} + b_{hn})) \\
        h_t &= (1 - z_t) \odot n_t + z_t \odot h_{t-1}

    The update gate gives the gradient an additive path ``z_t ⊙ h_{t-1}`` through time.

    Shape:
        - x_t: ``(B, I)``; state ``h``: ``(B, H)``; returns ``(B, H)``.
    """

    num_gates: ClassVar[int] = 3
    gate_activations: ClassVar[dict[str, str]] = {
        "reset": "sigmoid",
        "update": "sigmoid",
        "candidate": "tanh",
    }

    def gate_values(self, input_part: Tensor, recurrent_part: Tensor, state: Tensor) -> dict[str, Tensor]:
        i_r, i_z, i_n = input_part.chunk(3, dim=-1)
        h_r, h_z, h_n = recurrent_part.chunk(3, dim=-1)
        reset = torch.sigmoid(i_r + h_r)
        return {
            "reset": reset,
            "update": torch.sigmoid(i_z + h_z),
            "candidate": torch.tanh(i_n + reset * h_n),
        }

    def pointwise(self, input_part: Tensor, recurrent_part: Tensor, state: Tensor) -> Tensor:
        gates = self.gate_values(input_part, recurrent_part, state)
        candidate = gates["candidate"]
        return candidate + gates["update"] * (state - candidate)

    def explicit_bptt(
        self,
        inputs: Tensor,
        state: Tensor,
        mask: Tensor | None = None,
        on_profile: Callable[[Tensor], None] | None = None,
    ) -> tuple[Tensor, Tensor]:
        return gru_bptt(
            inputs, state, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh,
            mask=mask, on_profile=on_profile,
        )

    @property
    def fused_mode(self) -> str:
        return "GRU"


@final
class LSTMCell(AbstractCell):
    r"""The long short-term memory step (gates stacked as ``i, f, g, o``); state ``(h, c)``.

    .. math::
        i_t &= \sigma(W_{ii} x_t + b_{ii} + W_{hi} h_{t-1} + b_{hi}) \\
        f_t &= \sigma(W_{if} x_t + b_{if} + W_{hf} h_{t-1} + b_{hf}) \\
        g_t &= \tanh(W_{ig} x_t + b_{ig} + W_{hg} h_{t-1} + b_{hg}) \\
        o_t &= \sigma(W_{io} x_t + b_{io} + W_{ho} h_{t-1} + b_{ho}) \\
        c_t &= f_t \odot c_{t-1} + i_t \odot g_t, \qquad h_t = o_t \odot \tanh(c_t)

    The cell state's Jacobian ``∂c_t/∂c_{t-1} = diag(f_t)`` lets gradients flow far back
    while the forget gate stays open.

    Shape:
        - x_t: ``(B, I)``; state ``(h, c)``: two ``(B, H)`` tensors; returns the same.
    """

    num_gates: ClassVar[int] = 4
    gate_activations: ClassVar[dict[str, str]] = {
        "input": "sigmoid",
        "forget": "sigmoid",
        "cell": "tanh",
        "output": "sigmoid",
    }

    def init_state(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[Tensor, Tensor]:
        h = super().init_state(batch_size, device=device, dtype=dtype)
        return h, torch.zeros_like(h)

    def gate_values(
        self, input_part: Tensor, recurrent_part: Tensor, state: tuple[Tensor, Tensor]
    ) -> dict[str, Tensor]:
        i, f, g, o = (input_part + recurrent_part).chunk(4, dim=-1)
        return {
            "input": torch.sigmoid(i),
            "forget": torch.sigmoid(f),
            "cell": torch.tanh(g),
            "output": torch.sigmoid(o),
        }

    def pointwise(
        self, input_part: Tensor, recurrent_part: Tensor, state: tuple[Tensor, Tensor]
    ) -> tuple[Tensor, Tensor]:
        gates = self.gate_values(input_part, recurrent_part, state)
        c = gates["forget"] * state[1] + gates["input"] * gates["cell"]
        h = gates["output"] * torch.tanh(c)
        return h, c

    def explicit_bptt(
        self,
        inputs: Tensor,
        state: tuple[Tensor, Tensor],
        mask: Tensor | None = None,
        on_profile: Callable[[Tensor], None] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        return lstm_bptt(
            inputs, *state, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh,
            mask=mask, on_profile=on_profile,
        )

    def hidden(self, state: tuple[Tensor, Tensor]) -> Tensor:
        return state[0]

    @property
    def fused_mode(self) -> str:
        return "LSTM"
