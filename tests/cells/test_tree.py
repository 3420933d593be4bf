"""The cell tree: abstract bases, final cells, and torch's fused modes <-> cells."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

import bptt.cells
from bptt.cells import (
    TORCH_MODES,
    AbstractCell,
    AbstractElmanCell,
    ElmanCell,
    GRUCell,
    LSTMCell,
    make_cell,
)

CLASSES = [
    value
    for value in vars(bptt.cells).values()
    if inspect.isclass(value) and value.__module__.startswith("bptt.cells")
]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_every_class_is_abstract_or_final(cls: type) -> None:
    assert inspect.isabstract(cls) != getattr(cls, "__final__", False), cls
    for base in cls.__mro__[1:]:
        assert not getattr(base, "__final__", False), f"{cls.__name__} subclasses the final {base.__name__}"


def test_only_cells_that_have_them_provide_explicit_bptt_and_a_fused_mode() -> None:
    with_explicit = {
        name for name in ("rnn-tanh", "irnn", "indrnn", "residual-rnn", "skip-rnn", "gru", "lstm")
        if type(make_cell(name, 2, 3)).explicit_bptt is not AbstractCell.explicit_bptt
    }
    assert with_explicit == {"rnn-tanh", "irnn", "gru", "lstm"}
    for name in ("indrnn", "residual-rnn", "skip-rnn"):
        cell = make_cell(name, 2, 3)
        assert isinstance(cell, AbstractElmanCell) and not isinstance(cell, ElmanCell)
        assert cell.fused_mode is None
        assert cell.explicit_bptt(torch.randn(4, 1, 2), cell.init_state(1)) is None
    with pytest.raises(TypeError, match="abstract"):
        AbstractElmanCell(2, 3, "tanh")


def test_unknown_nonlinearity_suggests_the_closest() -> None:
    for cls in (ElmanCell, *(type(make_cell(name, 2, 3)) for name in ("indrnn", "residual-rnn", "skip-rnn"))):
        with pytest.raises(ValueError, match="unknown nonlinearity 'rleu'.*Did you mean 'relu'"):
            cls(2, 3, nonlinearity="rleu")


@pytest.mark.parametrize("mode", list(TORCH_MODES))
def test_torch_modes_round_trip_with_the_same_weights(mode: str) -> None:
    entry = TORCH_MODES.get(mode)
    module = entry.module(3, 4, num_layers=1, bias=True)
    cell = entry.cell(3, 4, True).double()
    assert module.mode == mode and cell.fused_mode == mode
    module = module.double()
    with torch.no_grad():
        for name, parameter in cell.named_parameters():
            getattr(module, f"{name}_l0").copy_(parameter)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    state = cell.init_state(2, dtype=torch.float64)
    outputs = []
    for x_t in x.unbind(0):
        state = cell.step(x_t, state)
        outputs.append(cell.hidden(state))
    expected, _ = module(x)
    torch.testing.assert_close(torch.stack(outputs), expected)


def test_every_fused_cell_has_its_mode_in_the_table() -> None:
    assert set(TORCH_MODES) == {"RNN_TANH", "RNN_RELU", "GRU", "LSTM"}
    for cell in (ElmanCell(2, 3, "tanh"), ElmanCell(2, 3, "relu"), GRUCell(2, 3), LSTMCell(2, 3)):
        assert TORCH_MODES.get(cell.fused_mode).module(2, 3).mode == cell.fused_mode
    assert ElmanCell(2, 3, "sigmoid").fused_mode is None
    assert isinstance(TORCH_MODES.get("LSTM").module(2, 3), nn.LSTM)
