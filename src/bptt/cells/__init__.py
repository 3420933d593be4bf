"""Recurrent cells (one step each) and the registry of cells known by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import final

from bptt._registry import Registry
from bptt.cells.base import (
    AbstractCell,
    State,
    flatten_state,
    map_state,
    unflatten_state,
)
from bptt.cells.elman import AbstractElmanCell, ElmanCell
from bptt.cells.gated import GRUCell, LSTMCell
from bptt.cells.indrnn import IndRNNCell
from bptt.cells.skip import ResidualElmanCell, SkipElmanCell
from bptt.cells.torch_modes import TORCH_MODES, TorchMode

__all__ = [
    "CELLS",
    "TORCH_MODES",
    "AbstractCell",
    "AbstractElmanCell",
    "CellSpec",
    "ElmanCell",
    "GRUCell",
    "IndRNNCell",
    "LSTMCell",
    "ResidualElmanCell",
    "SkipElmanCell",
    "State",
    "TorchMode",
    "cell_spec",
    "flatten_state",
    "make_cell",
    "map_state",
    "unflatten_state",
]


@final
@dataclass(frozen=True)
class CellSpec:
    """How to build a cell known by name.

    Args:
        factory: ``factory(input_size, hidden_size) -> AbstractCell``, or with ``argument``
            set, ``factory(input_size, hidden_size, value)``.
        init: the initialisation scheme (a name in :data:`bptt.init.INITS`) the cell is
            defined with, used when the user does not choose one.
        description: one line for ``bptt train --help`` and docs.
        constraint: the constraint (a spec for :func:`bptt.remedies.make_constraint`) the
            cell is defined with, attached by :func:`bptt.build_model` unless the
            user chooses one.
        argument: the name of an integer the cell takes after a colon (``"skip-rnn:8"``),
            and its default.
    """

    factory: Callable[..., AbstractCell]
    init: str
    description: str
    constraint: str | None = None
    argument: tuple[str, int] | None = None


CELLS: Registry[CellSpec] = Registry("cell")
for _name, _nonlinearity in (("rnn-tanh", "tanh"), ("rnn-relu", "relu"), ("rnn-sigmoid", "sigmoid")):
    CELLS.register(
        _name,
        CellSpec(partial(ElmanCell, nonlinearity=_nonlinearity), "default", f"Elman RNN, {_nonlinearity}"),
    )
CELLS.register(
    "irnn",
    CellSpec(
        partial(ElmanCell, nonlinearity="relu"),
        "identity",
        "ReLU RNN with identity recurrent init (Le et al. 2015)",
    ),
)
CELLS.register(
    "ortho-rnn",
    CellSpec(
        partial(ElmanCell, nonlinearity="tanh"),
        "orthogonal",
        "tanh RNN whose W_hh stays orthogonal (matrix-exponential parametrisation, expRNN)",
        constraint="orthogonal",
    ),
)
CELLS.register(
    "indrnn",
    CellSpec(
        IndRNNCell,
        "default",
        "independently recurrent ReLU units, |u| <= 2^(1/T) (Li et al. 2018)",
        constraint="indrnn:2",
    ),
)
CELLS.register(
    "residual-rnn",
    CellSpec(ResidualElmanCell, "default", "tanh RNN with a residual path in time, h_t = h_(t-1) + f(z_t)"),
)
CELLS.register(
    "skip-rnn",
    CellSpec(
        lambda input_size, hidden_size, skip: SkipElmanCell(input_size, hidden_size, skip),
        "default",
        "tanh RNN with a skip connection k steps back, h_t = f(z_t) + h_(t-k); 'skip-rnn:K'",
        argument=("skip", 4),
    ),
)
CELLS.register("gru", CellSpec(GRUCell, "default", "gated recurrent unit (Cho et al. 2014)"))
CELLS.register(
    "lstm", CellSpec(LSTMCell, "default", "long short-term memory (Hochreiter & Schmidhuber 1997)")
)


def cell_spec(name: str) -> tuple[CellSpec, int | None]:
    """The :class:`CellSpec` of a cell name and its argument: ``"skip-rnn:8"`` -> (spec, 8).

    Raises:
        ValueError: for an unknown name, an argument given to a cell that takes none, or
            an argument that is not a positive integer.
    """
    base, colon, value = name.partition(":")
    spec = CELLS.get(base)
    if spec.argument is None:
        if colon:
            raise ValueError(f"cell {base!r} takes no argument, received {name!r}; write {base!r}")
        return spec, None
    if not colon:
        return spec, spec.argument[1]
    if not value.isdigit() or int(value) < 1:
        raise ValueError(
            f"expected a positive integer {spec.argument[0]} after '{base}:', received "
            f"{value!r}; write e.g. '{base}:{spec.argument[1]}'"
        )
    return spec, int(value)


def make_cell(name: str, input_size: int, hidden_size: int) -> AbstractCell:
    """Build the cell registered as ``name`` (see :data:`CELLS`; ``"skip-rnn:8"`` passes 8)."""
    spec, argument = cell_spec(name)
    if argument is None:
        return spec.factory(input_size, hidden_size)
    return spec.factory(input_size, hidden_size, argument)
