"""The expRNN cell: modReLU, an orthogonal W_hh that stays orthogonal, its slow parameter."""

from __future__ import annotations

import math

import pytest
import torch

from bptt import Recurrent, TrainConfig, train
from bptt.cells import ExpRNNCell, make_cell
from bptt.cells.exprnn import modrelu, modrelu_derivative
from bptt.orthogonal import rotation_skew
from bptt.training import make_optimizer, parameter_groups


def test_modrelu_is_the_formula_and_its_derivative_is_autograds():
    z = torch.randn(50, 6, dtype=torch.float64, requires_grad=True)
    bias = torch.linspace(-0.8, 0.3, 6, dtype=torch.float64)
    expected = torch.where(z.abs() + bias > 0, z / z.abs() * (z.abs() + bias), torch.zeros_like(z))
    torch.testing.assert_close(modrelu(z, bias), expected)
    (grad,) = torch.autograd.grad(modrelu(z, bias).sum(), z)
    torch.testing.assert_close(modrelu_derivative(z.detach(), bias), grad)
    assert torch.autograd.gradcheck(modrelu, (z, bias.clone().requires_grad_()))


@pytest.mark.parametrize("init", ["henaff", "cayley"])
def test_the_skew_initialisation_is_block_diagonal_rotations(init):
    skew = rotation_skew(7, init, torch.Generator().manual_seed(0))
    torch.testing.assert_close(skew, -skew.T)
    off_block = skew.clone()
    for i in range(0, 6, 2):
        off_block[i, i + 1] = off_block[i + 1, i] = 0
    assert off_block.abs().max() == 0  # only the 2 x 2 blocks, the odd unit alone
    angles = skew[[0, 2, 4], [1, 3, 5]]
    if init == "henaff":
        assert angles.abs().max() < math.pi
    else:  # -tan(s / 2), s in (0, pi / 2)
        assert (angles <= 0).all() and (angles > -1).all()
    with pytest.raises(ValueError, match="skew initialisation"):
        rotation_skew(4, "glorot")


@pytest.mark.parametrize("name", ["exprnn", "exprnn-cayley"])
def test_the_recurrent_matrix_starts_and_stays_orthogonal(name, tmp_path):
    cell = make_cell(name, 3, 9)
    assert cell.orthogonality_error() < 1e-5  # float32 rounding alone: about 1e-6
    eigenvalues = torch.linalg.eigvals(cell.weight_hh.detach().double())
    torch.testing.assert_close(eigenvalues.abs(), torch.ones(9, dtype=torch.float64), atol=1e-6, rtol=0)
    config = TrainConfig(task="copy", length=10, cell=name, hidden=16, steps=60, batch=8, lr=0.05,
                         optimizer="rmsprop", eval_every=60, eval_size=8, checkpoint_every=60, diagnose_every=0)
    train(config, tmp_path, progress=False)
    trained = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model"]
    skew = trained["recurrent.cells.0.parametrizations.weight_hh.original"]
    assert skew.abs().max() > 0.01  # it moved
    model = Recurrent.from_name(name, 10, 16)
    model.load_state_dict({k.removeprefix("recurrent."): v for k, v in trained.items() if k.startswith("recurrent.")})
    assert model.cells[0].orthogonality_error() < 1e-5


def test_the_step_jacobian_has_singular_values_one_on_active_units():
    torch.manual_seed(0)
    cell = ExpRNNCell(2, 6).double()
    with torch.no_grad():
        cell.modrelu_bias.copy_(torch.tensor([-5.0, -5.0, 0.0, 0.0, 0.0, 0.0]))  # units 0, 1 always off
    x, h = torch.randn(1, 2, dtype=torch.float64), torch.randn(1, 6, dtype=torch.float64) * 3
    jacobian = torch.func.jacrev(lambda s: cell.step(x, s))(h).squeeze()
    singular = torch.linalg.svdvals(jacobian)
    active = int(modrelu_derivative(cell.gates(x, h)["z"], cell.modrelu_bias).sum())
    torch.testing.assert_close(singular[:active], torch.ones(active, dtype=torch.float64))
    torch.testing.assert_close(singular[active:], torch.zeros(6 - active, dtype=torch.float64))


def test_the_skew_parameter_trains_at_a_tenth_of_the_learning_rate():
    model = Recurrent.from_name("exprnn", 3, 5, num_layers=2)
    groups = parameter_groups(model, 2e-4)
    assert [group["lr"] for group in groups] == [2e-4, pytest.approx(2e-5)]
    skews = {id(cell.parametrizations.weight_hh.original) for cell in model.cells}
    assert {id(p) for p in groups[1]["params"]} == skews
    assert sum(len(group["params"]) for group in groups) == len(list(model.parameters()))
    assert [group["lr"] for group in parameter_groups(model, 1e-3, slow_lr_factor=0.5)] == [1e-3, 5e-4]
    lstm = Recurrent.from_name("lstm", 3, 5)
    assert len(parameter_groups(lstm, 1e-3)) == 1
    config = TrainConfig(cell="exprnn", optimizer="rmsprop", lr=2e-4)
    assert [group["lr"] for group in make_optimizer(config, model).param_groups] == [2e-4, pytest.approx(2e-5)]


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"slow_lr_factor": 0.0}, "slow_lr_factor to be a positive finite number"),
        ({"slow_lr_factor": math.inf}, "slow_lr_factor to be a positive finite number"),
        ({"cell": "exprnn:angle=3"}, "has no option 'angle'"),
        ({"cell": "exprnn:init=glorot"}, "expected init in"),
        ({"cell": "lem:dt=-0.1"}, "dt"),
        ({"cell": "cornn:dt=0"}, "dt"),
        ({"cell": "lem:dt=fast"}, "expected a number"),
        ({"cell": "exprnn", "constraint": "orthogonal"}, "ExpRNNCell.weight_hh, already computed by OrthogonalBlocks"),
        ({"cell": "indrnn", "constraint": "cayley"}, "needs square blocks"),
    ],
)
def test_bad_cell_options_and_factors_fail_before_any_run_directory(changes, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        train(TrainConfig(**changes), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_an_initialisation_scheme_on_a_parametrised_weight_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match="computed by a parametrisation"):
        train(TrainConfig(cell="exprnn", init="orthogonal", steps=1), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
