"""Recurrent cells (one step each) and the registry of cells known by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from bptt._registry import Registry
from bptt.cells.base import (
    AbstractCell,
    State,
    flatten_state,
    map_state,
    unflatten_state,
)
from bptt.cells.elman import ElmanCell
from bptt.cells.gated import GRUCell, LSTMCell

__all__ = [
    "CELLS",
    "AbstractCell",
    "CellSpec",
    "ElmanCell",
    "GRUCell",
    "LSTMCell",
    "State",
    "flatten_state",
    "make_cell",
    "map_state",
    "unflatten_state",
]


@dataclass(frozen=True)
class CellSpec:
    """How to build a cell known by name.

    Args:
        factory: ``factory(input_size, hidden_size) -> AbstractCell``.
        init: the initialisation scheme (a name in :data:`bptt.init.INITS`) the cell is
            defined with, used when the user does not choose one.
        description: one line for ``bptt train --help`` and docs.
    """

    factory: Callable[[int, int], AbstractCell]
    init: str
    description: str


CELLS: Registry[CellSpec] = Registry("cell")
CELLS.register(
    "rnn-tanh", CellSpec(partial(ElmanCell, nonlinearity="tanh"), "default", "Elman RNN, tanh")
)
CELLS.register(
    "rnn-relu", CellSpec(partial(ElmanCell, nonlinearity="relu"), "default", "Elman RNN, ReLU")
)
CELLS.register(
    "rnn-sigmoid",
    CellSpec(partial(ElmanCell, nonlinearity="sigmoid"), "default", "Elman RNN, sigmoid"),
)
CELLS.register(
    "irnn",
    CellSpec(
        partial(ElmanCell, nonlinearity="relu"),
        "identity",
        "ReLU RNN with identity recurrent init (Le et al. 2015)",
    ),
)
CELLS.register("gru", CellSpec(GRUCell, "default", "gated recurrent unit (Cho et al. 2014)"))
CELLS.register(
    "lstm", CellSpec(LSTMCell, "default", "long short-term memory (Hochreiter & Schmidhuber 1997)")
)


def make_cell(name: str, input_size: int, hidden_size: int) -> AbstractCell:
    """Build the cell registered as ``name`` (see :data:`CELLS`)."""
    return CELLS.get(name).factory(input_size, hidden_size)
