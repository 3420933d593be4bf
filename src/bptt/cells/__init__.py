"""Recurrent cells (one step each) and the registry of cells known by name."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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
from bptt.cells.exprnn import ExpRNNCell
from bptt.cells.gated import GRUCell, LSTMCell
from bptt.cells.indrnn import IndRNNCell
from bptt.cells.minimal import MinGRUCell, MinLSTMCell
from bptt.cells.oscillators import CORNN_DT, CORNN_EPSILON, CORNN_GAMMA, LEM_DT, CoRNNCell, LEMCell
from bptt.cells.skip import ResidualElmanCell, SkipElmanCell
from bptt.cells.torch_modes import TORCH_MODES, TorchMode

__all__ = [
    "CELLS",
    "TORCH_MODES",
    "AbstractCell",
    "AbstractElmanCell",
    "CellSpec",
    "CoRNNCell",
    "ElmanCell",
    "ExpRNNCell",
    "GRUCell",
    "IndRNNCell",
    "LEMCell",
    "LSTMCell",
    "MinGRUCell",
    "MinLSTMCell",
    "OptionValue",
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


OptionValue = float | int | str
"""The value of a cell option: its type is the type of the option's default."""


@final
@dataclass(frozen=True)
class CellSpec:
    """How to build a cell known by name.

    A name may carry options, each after a colon, ``"lem:dt=0.05"``,
    ``"cornn:dt=0.042:gamma=2.7:epsilon=4.7"`` (colons, so that a name stays one item of a
    comma-separated list of configurations); a cell with one main option also takes its
    value bare, ``"skip-rnn:8"``.

    Args:
        factory: ``factory(input_size, hidden_size, **options) -> AbstractCell``.
        init: the initialisation scheme (a name in :data:`bptt.init.INITS`) the cell is
            defined with, used when the user does not choose one.
        description: one line for ``bptt train --help`` and docs.
        constraint: the constraint (a spec for :func:`bptt.remedies.make_constraint`) the
            cell is defined with, attached by :func:`bptt.build_model` unless the
            user chooses one.
        options: the keyword options the factory takes, with their defaults (the first one
            is the option a bare value sets).
        long_memory: the cell is one of the long-memory cures (unitary, oscillator,
            multiscale) that keep gradients alive over thousands of steps.
    """

    factory: Callable[..., AbstractCell]
    init: str
    description: str
    constraint: str | None = None
    options: Mapping[str, OptionValue] = field(default_factory=dict)
    long_memory: bool = False


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
        "indrnn",
        "independently recurrent ReLU units, |u| <= 2^(1/T), initialised as published (Li et al. 2018); "
        "stack two with --layers 2",
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
        SkipElmanCell,
        "default",
        "tanh RNN with a skip connection k steps back, h_t = f(z_t) + h_(t-k); 'skip-rnn:K'",
        options={"skip": 4},
    ),
)
CELLS.register("gru", CellSpec(GRUCell, "default", "gated recurrent unit (Cho et al. 2014)"))
CELLS.register(
    "lstm", CellSpec(LSTMCell, "default", "long short-term memory (Hochreiter & Schmidhuber 1997)")
)
for _name, _map in (("exprnn", "matrix_exp"), ("exprnn-cayley", "cayley")):
    CELLS.register(
        _name,
        CellSpec(
            partial(ExpRNNCell, orthogonal_map=_map),
            "default",
            f"orthogonal W_hh ({_map.replace('_', ' ')} of a skew matrix) with modReLU "
            f"(Lezcano-Casado & Martinez-Rubio 2019); '{_name}:init=cayley'",
            options={"init": "henaff"},
            long_memory=True,
        ),
    )
CELLS.register(
    "lem",
    CellSpec(
        LEMCell,
        "default",
        "long expressive memory: multiscale ODE with learned time steps (Rusch et al. 2022); 'lem:dt=0.0242'",
        options={"dt": LEM_DT},
        long_memory=True,
    ),
)
CELLS.register(
    "cornn",
    CellSpec(
        CoRNNCell,
        "default",
        "coupled oscillators, bounded gradients (Rusch & Mishra 2021); 'cornn:dt=0.042:gamma=2.7:epsilon=4.7'",
        options={"dt": CORNN_DT, "gamma": CORNN_GAMMA, "epsilon": CORNN_EPSILON},
        long_memory=True,
    ),
)


CELLS.register(
    "mingru",
    CellSpec(MinGRUCell, "default", "minimal GRU: gates from x_t only, a layer is one linear scan (Feng et al. 2024)"),
)
CELLS.register(
    "minlstm",
    CellSpec(
        MinLSTMCell,
        "default",
        "minimal LSTM: normalised forget/input gates from x_t only, a layer is one linear scan (Feng et al. 2024)",
    ),
)

def _parse_option(base: str, name: str, text: str, default: OptionValue) -> OptionValue:
    """The value of option ``name`` written as ``text``, of the type of its default."""
    kind = type(default)
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(
            f"expected a{'n integer' if kind is int else ' number' if kind is float else ' string'} for "
            f"option {name!r} of cell {base!r}, received {text!r}; write e.g. '{base}:{name}={default}'"
        ) from None
    if kind is float and not math.isfinite(value):
        raise ValueError(f"expected a finite number for option {name!r} of cell {base!r}, received {text!r}")
    return value


def cell_spec(name: str) -> tuple[CellSpec, dict[str, OptionValue]]:
    """The :class:`CellSpec` of a cell name and the options it sets: ``"skip-rnn:8"`` ->
    (spec, {"skip": 8}), ``"lem:dt=0.05"`` -> (spec, {"dt": 0.05}); options left out take
    the factory's defaults.

    Raises:
        ValueError: for an unknown name, an option the cell does not take, or a value of
            the wrong type.
    """
    base, colon, text = name.partition(":")
    spec = CELLS.get(base)
    if not colon:
        return spec, {}
    if not spec.options:
        raise ValueError(f"cell {base!r} takes no options, received {name!r}; write {base!r}")
    options: dict[str, OptionValue] = {}
    for item in text.split(":"):
        key, equals, value = item.partition("=")
        if not equals:  # a bare value sets the main option
            key, value = next(iter(spec.options)), item
        key = key.strip()
        if key not in spec.options:
            raise ValueError(
                f"cell {base!r} has no option {key!r}; its options are "
                f"{', '.join(f'{k}={v}' for k, v in spec.options.items())}"
            )
        options[key] = _parse_option(base, key, value.strip(), spec.options[key])
    return spec, options


def make_cell(name: str, input_size: int, hidden_size: int) -> AbstractCell:
    """Build the cell registered as ``name`` with the options the name sets (see :func:`cell_spec`)."""
    spec, options = cell_spec(name)
    try:
        return spec.factory(input_size, hidden_size, **options)
    except ValueError as error:
        raise ValueError(f"cell {name!r}: {error}") from None
