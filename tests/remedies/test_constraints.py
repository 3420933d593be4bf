"""Constraints: orthogonality that survives training (also on torch's fused modules), and
the spectral / IndRNN bound as a projection."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from bptt import diagnose
from bptt.cells import IndRNNCell
from bptt.recurrent import Recurrent
from bptt.remedies.constraints import (
    CayleyConstraint,
    OrthogonalBlocks,
    OrthogonalConstraint,
    SpectralBound,
    make_constraint,
)
from bptt.weights import recurrent_weights

F64 = torch.float64


def gate_blocks(weight: torch.Tensor) -> torch.Tensor:
    size = weight.shape[1]
    return weight.detach().reshape(-1, size, size)


def orthogonality_error(weight: torch.Tensor) -> float:
    """Largest ||W_g^T W_g - I||_2 over gate blocks."""
    blocks = gate_blocks(weight).double()
    eye = torch.eye(blocks.shape[-1], dtype=F64)
    return torch.linalg.matrix_norm(blocks.mT @ blocks - eye, ord=2).max().item()


MODULES = {
    "torch-rnn": lambda: nn.RNN(3, 8, num_layers=2),
    "torch-gru": lambda: nn.GRU(3, 8),
    "torch-lstm": lambda: nn.LSTM(3, 8, num_layers=2, batch_first=True),
    "bptt-lstm": lambda: Recurrent.from_name("lstm", 3, 8, 2),
    "bptt-tanh": lambda: Recurrent.from_name("rnn-tanh", 3, 8),
}


@pytest.mark.parametrize("orthogonal_map", ["matrix_exp", "cayley"])
@pytest.mark.parametrize("kind", sorted(MODULES))
def test_orthogonal_constraint_trains_and_stays_orthogonal(kind, orthogonal_map):
    """The known pitfall: a parametrisation that silently freezes the weights of a fused RNN
    (stale flat weights). The effective weights must move, and stay orthogonal."""
    torch.manual_seed(0)
    module = MODULES[kind]()
    OrthogonalConstraint(orthogonal_map).attach(module)
    weights = recurrent_weights(module)
    assert weights and all(parametrize.is_parametrized(owner, name) for owner, name in weights)
    before = [getattr(owner, name).detach().clone() for owner, name in weights]
    optimizer = torch.optim.Adam(module.parameters(), lr=0.05)
    x = torch.randn(4, 7, 3)
    for _ in range(20):
        output, _ = module(x)
        loss = (output - 0.5).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for (owner, name), old in zip(weights, before, strict=True):
        new = getattr(owner, name).detach()
        assert (new - old).norm() > 0.1, f"{name} did not move: the parametrisation froze it"
        assert orthogonality_error(new) < 1e-5


def test_the_module_computes_with_the_constrained_weight():
    """A fused torch module and its explicit loop agree with the parametrised weights."""
    torch.manual_seed(1)
    rnn = nn.RNN(2, 4)
    OrthogonalConstraint().attach(rnn)
    with torch.no_grad():  # move the raw parameter: the effective weight changes
        rnn.parametrizations.weight_hh_l0.original.normal_()
    x = torch.randn(5, 3, 2)
    h = torch.zeros(3, 4)
    for t in range(5):
        h = torch.tanh(
            x[t] @ rnn.weight_ih_l0.T + rnn.bias_ih_l0 + h @ rnn.weight_hh_l0.T + rnn.bias_hh_l0
        )
    torch.testing.assert_close(rnn(x)[0][-1], h)
    assert orthogonality_error(rnn.weight_hh_l0) < 1e-5


def test_registering_keeps_an_orthogonal_weight_and_projects_others():
    weight = torch.linalg.qr(torch.randn(2, 5, 5, dtype=F64))[0].reshape(10, 5)
    blocks = OrthogonalBlocks(2, 5).double()
    raw = blocks.right_inverse(weight)
    assert raw.abs().max() == 0  # starts at A = 0
    torch.testing.assert_close(blocks(raw), weight)
    other = torch.randn(10, 5, dtype=F64)
    projected = blocks(blocks.right_inverse(other))
    assert orthogonality_error(projected) < 1e-12
    # the polar factor is the nearest orthogonal matrix: closer than the first one
    assert (projected - other).norm() < (weight - other).norm()


@pytest.mark.parametrize("orthogonal_map", ["matrix_exp", "cayley"])
def test_parametrisation_gradient_matches_finite_differences(orthogonal_map):
    blocks = OrthogonalBlocks(2, 3, orthogonal_map).double()
    blocks.right_inverse(torch.randn(6, 3, dtype=F64))
    target = torch.randn(6, 3, dtype=F64)
    raw = torch.randn(6, 3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: (blocks(a) * target).sum(), (raw,))


def test_constraint_state_survives_a_state_dict_round_trip():
    torch.manual_seed(2)
    a = Recurrent.from_name("gru", 3, 4)
    OrthogonalConstraint().attach(a)
    with torch.no_grad():
        a.cells[0].parametrizations.weight_hh.original.normal_()
    b = Recurrent.from_name("gru", 3, 4)
    OrthogonalConstraint().attach(b)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.cells[0].weight_hh, a.cells[0].weight_hh)


def test_diagnose_sees_the_constrained_weight():
    torch.manual_seed(3)
    model = nn.LSTM(2, 6)
    OrthogonalConstraint().attach(model)
    x, y = torch.randn(12, 3, 2), torch.randn(3, 6)
    diagnosis = diagnose(model, x, y, forward=lambda m, i, lengths: m(i)[0][-1])
    layer = diagnosis.layers[0]
    assert layer.recurrent_norm == pytest.approx(2.0, rel=1e-5)  # four orthogonal blocks
    assert layer.gradient_by_position.sum().item() == pytest.approx(1.0, abs=1e-4)


def test_spectral_bound_projects_every_gate_block():
    torch.manual_seed(4)
    lstm = nn.LSTM(3, 5)
    with torch.no_grad():
        lstm.weight_hh_l0.mul_(10)
    untouched = lstm.weight_ih_l0.detach().clone()
    SpectralBound(0.9).attach(lstm)
    norms = torch.linalg.matrix_norm(gate_blocks(lstm.weight_hh_l0), ord=2)
    torch.testing.assert_close(norms, torch.full((4,), 0.9), atol=1e-5, rtol=0)
    assert torch.equal(lstm.weight_ih_l0, untouched)
    small = Recurrent.from_name("rnn-tanh", 3, 5)
    with torch.no_grad():
        small.cells[0].weight_hh.mul_(0.01)
    before = small.cells[0].weight_hh.detach().clone()
    SpectralBound(0.9).project_(small)  # inside the set: unchanged
    assert torch.equal(small.cells[0].weight_hh, before)


def test_indrnn_bound_clamps_the_recurrent_vector_to_gamma_power_one_over_t():
    cell = IndRNNCell(2, 6)
    with torch.no_grad():
        cell.weight_hh.copy_(torch.tensor([-3.0, -1.0, 0.5, 1.0, 1.2, 4.0]))
    constraint = make_constraint("indrnn:2", length=100)
    constraint.attach(cell)
    bound = 2 ** (1 / 100)
    assert constraint.per_step == pytest.approx(bound)
    expected = torch.tensor([-bound, -1.0, 0.5, 1.0, bound, bound])
    torch.testing.assert_close(cell.weight_hh.detach(), expected)


def test_specs_and_errors():
    assert isinstance(make_constraint("orthogonal"), OrthogonalConstraint)
    assert make_constraint("cayley").orthogonal_map == "cayley"
    assert make_constraint("spectral:0.5").per_step == 0.5
    assert make_constraint("none") is None
    with pytest.raises(ValueError, match="Did you mean 'orthogonal'"):
        make_constraint("orthogonl")
    with pytest.raises(ValueError, match="needs the sequence length"):
        make_constraint("indrnn:2")
    with pytest.raises(ValueError, match="expected a number"):
        make_constraint("spectral:big")
    with pytest.raises(ValueError, match="takes no value"):
        make_constraint("orthogonal:2")
    with pytest.raises(ValueError, match="positive"):
        SpectralBound(0.0)
    with pytest.raises(ValueError, match="recurrent weights named"):
        OrthogonalConstraint().attach(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="square"):
        OrthogonalConstraint().attach(IndRNNCell(2, 3))
    rnn = nn.RNN(2, 3)
    OrthogonalConstraint().attach(rnn)
    with pytest.raises(ValueError, match="already computed by OrthogonalBlocks; attach a constraint once"):
        OrthogonalConstraint().attach(rnn)
    with pytest.raises(ValueError, match="would be undone"):
        SpectralBound(1.0).project_(rnn)


def test_cayley_constraint_registers_the_cayley_map():
    module = nn.LSTM(2, 3)
    constraint = make_constraint("cayley")
    assert isinstance(constraint, CayleyConstraint) and repr(constraint) == "CayleyConstraint()"
    constraint.attach(module)
    (blocks,) = module.parametrizations.weight_hh_l0
    assert isinstance(blocks, OrthogonalBlocks) and blocks.orthogonal_map == "cayley"
    assert orthogonality_error(module.weight_hh_l0.detach()) < 1e-5
    constraint.project_(module)  # a no-op for a parametrisation
    with pytest.raises(ValueError, match="already computed by OrthogonalBlocks; attach a constraint once"):
        CayleyConstraint().attach(module)
