"""torch's fused RNN modes and the bptt cells that compute exactly the same step.

One table, :data:`TORCH_MODES`, keyed by the mode name that :class:`torch.nn.RNNBase` calls
``module.mode`` and that a cell reports as :attr:`~bptt.cells.AbstractCell.fused_mode`
(``"RNN_TANH"``, ``"RNN_RELU"``, ``"GRU"``, ``"LSTM"``). :class:`bptt.Recurrent` builds the
torch module of a mode to run a stack of cells through the fused kernel; the diagnostics
build the cell of a mode to run a torch module unrolled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Final, final

from torch import nn

from bptt._registry import Registry
from bptt.activations import ACTIVATIONS
from bptt.cells.base import AbstractCell
from bptt.cells.elman import ElmanCell
from bptt.cells.gated import GRUCell, LSTMCell

__all__ = ["TORCH_MODES", "TorchMode"]


@final
@dataclass(frozen=True)
class TorchMode:
    """One of torch's fused RNN modes.

    Args:
        name: the mode (``module.mode`` of a torch RNN, ``cell.fused_mode`` of a bptt cell).
        module: ``module(input_size, hidden_size, **kwargs)``: the torch module running it
            (``kwargs`` as :class:`torch.nn.RNNBase` takes them: ``num_layers``, ``bias``, ...).
        cell: ``cell(input_size, hidden_size, bias)``: the bptt cell computing one step of it,
            with the same parameter names and layout.
    """

    name: str
    module: Callable[..., nn.RNNBase]
    cell: Callable[[int, int, bool], AbstractCell]


def _elman(nonlinearity: str, input_size: int, hidden_size: int, bias: bool) -> ElmanCell:
    return ElmanCell(input_size, hidden_size, nonlinearity, bias)


TORCH_MODES: Final[Registry[TorchMode]] = Registry("torch RNN mode")
"""The mode name -> :class:`TorchMode`: one Elman mode per nonlinearity torch fuses, GRU, LSTM."""
for _activation in (ACTIVATIONS.get(name) for name in ACTIVATIONS):
    if _activation.fused_mode is not None:
        TORCH_MODES.register(
            _activation.fused_mode,
            TorchMode(
                _activation.fused_mode,
                partial(nn.RNN, nonlinearity=_activation.name),
                partial(_elman, _activation.name),
            ),
        )
TORCH_MODES.register("GRU", TorchMode("GRU", nn.GRU, GRUCell))
TORCH_MODES.register("LSTM", TorchMode("LSTM", nn.LSTM, LSTMCell))
