"""Architectural cures as cells: IndRNN, residual and skip-k connections in time, and the
orthogonal RNN (residual connections between stacked layers: tests/test_recurrent.py)."""

from __future__ import annotations

import pytest
import torch

from bptt.builders import build_model
from bptt.cells import (
    CELLS,
    IndRNNCell,
    ResidualElmanCell,
    SkipElmanCell,
    cell_spec,
    make_cell,
)
from bptt.config import TrainConfig
from bptt.tasks import get_task

F64 = torch.float64


def step_jacobian(cell, x_t, state):
    """dh_t/dh_{t-1} of one sample by plain autograd, on the flat state."""
    from bptt.cells import flatten_state, unflatten_state

    flat = flatten_state(state)

    def step(s):
        return flatten_state(cell.step(x_t, unflatten_state(s, cell.hidden_size)))

    return torch.autograd.functional.jacobian(step, flat)[0, :, 0, :]


def test_indrnn_step_and_diagonal_jacobian():
    torch.manual_seed(0)
    cell = IndRNNCell(2, 4, nonlinearity="tanh").double()
    x, h = torch.randn(1, 2, dtype=F64), torch.randn(1, 4, dtype=F64)
    u = cell.weight_hh
    expected = torch.tanh(x @ cell.weight_ih.T + cell.bias_ih + u * h + cell.bias_hh)
    torch.testing.assert_close(cell.step(x, h), expected)
    z = x @ cell.weight_ih.T + cell.bias_ih + u * h + cell.bias_hh
    torch.testing.assert_close(step_jacobian(cell, x, h), torch.diag((1 - torch.tanh(z[0]) ** 2) * u))
    assert cell.weight_hh.shape == (4,)
    torch.testing.assert_close(cell.recurrent_matrix, torch.diag(u))


def test_indrnn_paper_initialisation():
    cell = IndRNNCell(3, 500)
    assert cell.weight_hh.min() >= 0 and cell.weight_hh.max() <= 1
    assert cell.bias_ih.abs().max() == 0 and cell.bias_hh.abs().max() == 0


def test_residual_cell_adds_the_previous_state():
    torch.manual_seed(1)
    cell = ResidualElmanCell(2, 3).double()
    x, h = torch.randn(1, 2, dtype=F64), torch.randn(1, 3, dtype=F64)
    z = x @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh
    torch.testing.assert_close(cell.step(x, h), h + torch.tanh(z))
    expected = torch.eye(3, dtype=F64) + torch.diag(1 - torch.tanh(z[0]) ** 2) @ cell.weight_hh
    torch.testing.assert_close(step_jacobian(cell, x, h), expected)


def test_skip_cell_reaches_k_steps_back_through_identity_hops():
    torch.manual_seed(2)
    k, steps = 3, 9
    cell = SkipElmanCell(2, 4, skip=k).double()
    with torch.no_grad():
        cell.weight_hh.mul_(1e-3)  # nearly no recurrence: only the skip path carries h
    xs = torch.randn(steps, 1, 2, dtype=F64)
    hidden = [torch.zeros(1, 4, dtype=F64) for _ in range(k)]  # h_{-1}, h_{-2}, ...
    state = cell.init_state(1, dtype=F64)
    for t in range(steps):
        z = xs[t] @ cell.weight_ih.T + cell.bias_ih + hidden[-1] @ cell.weight_hh.T + cell.bias_hh
        hidden.append(torch.tanh(z) + hidden[-k])
        state = cell.step(xs[t], state)
    torch.testing.assert_close(cell.hidden(state), hidden[-1])
    assert len(state) == k
    # k steps after h_{-1}, the skip path hands it on unchanged: dh_{k-1}/dh_{-1} ~ I

    def run(h_before: torch.Tensor) -> torch.Tensor:
        state = (h_before, *cell.init_state(1, dtype=F64)[1:])
        for t in range(k):
            state = cell.step(xs[t], state)
        return cell.hidden(state)[0]

    jacobian = torch.autograd.functional.jacobian(run, torch.randn(1, 4, dtype=F64))[:, 0]
    torch.testing.assert_close(jacobian, torch.eye(4, dtype=F64), atol=0.01, rtol=0)


def test_cell_names_and_arguments():
    assert isinstance(make_cell("skip-rnn:7", 2, 3), SkipElmanCell)
    assert make_cell("skip-rnn:7", 2, 3).skip == 7
    assert make_cell("skip-rnn", 2, 3).skip == CELLS.get("skip-rnn").options["skip"]
    assert cell_spec("ortho-rnn")[0].constraint == "orthogonal"
    with pytest.raises(ValueError, match="skip must be a positive integer"):
        make_cell("skip-rnn:0", 2, 3)
    with pytest.raises(ValueError, match="takes no options"):
        make_cell("lstm:2", 2, 3)
    with pytest.raises(ValueError, match="skip must be a positive integer"):
        SkipElmanCell(2, 3, skip=0)
    cornn = make_cell("cornn:dt=0.042:gamma=2.7:epsilon=4.7", 2, 3)  # colons: one item of a comma list
    assert (cornn.dt, cornn.gamma, cornn.epsilon) == (0.042, 2.7, 4.7)
    assert make_cell("cornn:gamma=3", 2, 3).dt == CELLS.get("cornn").options["dt"]
    assert cell_spec("exprnn:init=cayley")[1] == {"init": "cayley"}
    with pytest.raises(ValueError, match="has no option 'beta'; its options are dt="):
        make_cell("lem:beta=2", 2, 3)
    with pytest.raises(ValueError, match="expected a finite number"):
        make_cell("lem:dt=nan", 2, 3)


@pytest.mark.parametrize("name", ["ortho-rnn", "indrnn"])
def test_build_model_attaches_the_cells_own_constraint(name):
    config = TrainConfig(task="adding", length=20, cell=name, hidden=8)
    model = build_model(config, get_task("adding", 20))
    weight = model.recurrent.cells[0].weight_hh
    if name == "ortho-rnn":
        torch.testing.assert_close(weight.T @ weight, torch.eye(8), atol=1e-5, rtol=0)
    else:
        assert weight.abs().max() <= 2 ** (1 / 20) + 1e-7
    unconstrained = build_model(
        TrainConfig(task="adding", length=20, cell=name, hidden=8, constraint="none"), get_task("adding", 20)
    )
    assert not hasattr(unconstrained.recurrent.cells[0], "parametrizations")
