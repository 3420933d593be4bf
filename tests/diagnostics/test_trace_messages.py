"""Messages about a refused torch module name it by its path, or as the model itself."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bptt
from bptt.diagnostics.trace import module_label, unrolled_twin


class Encoder(nn.Module):
    def __init__(self, rnn: nn.RNNBase) -> None:
        super().__init__()
        self.lstm = rnn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[0]


class Model(nn.Module):
    def __init__(self, rnn: nn.RNNBase) -> None:
        super().__init__()
        self.encoder = Encoder(rnn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


REFUSED = {
    "bidirectional": (lambda: nn.LSTM(2, 3, bidirectional=True), "is bidirectional; bptt diagnoses unidirectional"),
    "proj_size": (lambda: nn.LSTM(2, 3, proj_size=2), "has proj_size=2; LSTMs with projections"),
}


def last_output(output: object, _: object) -> torch.Tensor:
    return (output[0] if isinstance(output, tuple) else output).sum()


@pytest.mark.parametrize("kind", list(REFUSED))
def test_the_model_itself_is_named_by_its_class(kind: str) -> None:
    build, reason = REFUSED[kind]
    with pytest.raises(ValueError, match=rf"^the model \(LSTM\) {reason}"):
        bptt.diagnose(build(), torch.zeros(4, 1, 2), None, last_output)


@pytest.mark.parametrize("kind", list(REFUSED))
def test_a_nested_module_is_named_by_its_path(kind: str) -> None:
    build, reason = REFUSED[kind]
    with pytest.raises(ValueError, match=rf"^encoder\.lstm {reason}"):
        bptt.diagnose(Model(build()), torch.zeros(4, 1, 2), None, last_output)


@pytest.mark.parametrize("kind", list(REFUSED))
def test_unrolled_twin_names_the_module_it_was_given(kind: str) -> None:
    build, reason = REFUSED[kind]
    with pytest.raises(ValueError, match=rf"^the model \(LSTM\) {reason}"):
        unrolled_twin(build())


def test_module_label() -> None:
    gru = nn.GRU(2, 3)
    assert module_label("", gru) == "the model (GRU)"
    assert module_label("encoder.0", gru) == "encoder.0"
