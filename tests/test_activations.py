"""bptt.activations: each nonlinearity's function, derivatives and torch mode, against autograd."""

from __future__ import annotations

import pytest
import torch

from bptt.activations import ACTIVATIONS, activation

F64 = torch.float64


@pytest.mark.parametrize("name", ["tanh", "relu", "sigmoid"])
def test_derivatives_match_autograd(name: str) -> None:
    torch.manual_seed(0)
    entry = activation(name)
    z = torch.randn(5, 7, dtype=F64).requires_grad_()
    h = entry.function(z)
    (expected,) = torch.autograd.grad(h.sum(), z)
    torch.testing.assert_close(entry.derivative(z.detach()), expected)
    torch.testing.assert_close(entry.derivative_from_output(h.detach()), expected)
    out = torch.full_like(h, float("nan"))
    assert entry.derivative_from_output(h.detach(), out) is out
    torch.testing.assert_close(out, expected)
    inplace = z.detach().clone()
    assert entry.function_(inplace) is inplace
    torch.testing.assert_close(inplace, h.detach())


@pytest.mark.parametrize(("name", "mode"), [("tanh", "RNN_TANH"), ("relu", "RNN_RELU"), ("sigmoid", None)])
def test_fused_modes_are_torchs(name: str, mode: str | None) -> None:
    assert activation(name).fused_mode == mode
    if mode is not None:
        assert torch.nn.RNN(2, 3, nonlinearity=name).mode == mode


def test_unknown_name_suggests_the_closest() -> None:
    assert sorted(ACTIVATIONS) == ["relu", "sigmoid", "tanh"]
    with pytest.raises(ValueError, match=r"unknown nonlinearity 'tahn'.*relu, sigmoid, tanh.*Did you mean 'tanh'"):
        activation("tahn")
