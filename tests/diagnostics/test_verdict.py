"""Verdicts on set-ups whose outcome the theory predicts, and non-finite localisation."""

from __future__ import annotations

import math
from typing import final

import pytest
import torch

from bptt import Recurrent, diagnose
from bptt.cells import AbstractElmanCell, ElmanCell
from bptt.init import init_recurrent_, orthogonal_
from bptt.tasks import get_task


def adding_batch(length=100, batch=16, dtype=torch.float64):
    task = get_task("adding", length)
    data = task.sample(batch, torch.Generator().manual_seed(0))
    return data.inputs.to(dtype), data.targets.to(dtype)


def last_step(output, targets):
    return torch.nn.functional.mse_loss(output[0][-1].sum(-1), targets.squeeze(-1))


def elman(nonlinearity: str, scale: float, hidden: int = 32) -> Recurrent:
    torch.manual_seed(0)
    model = Recurrent([ElmanCell(2, hidden, nonlinearity)]).double()
    with torch.no_grad():
        orthogonal_(model.cells[0].weight_hh, gain=scale)
    return model


def run(model):
    inputs, targets = adding_batch()
    return diagnose(model, inputs.transpose(0, 1), targets, last_step)


def test_tanh_with_small_recurrent_weights_vanishes():
    diagnosis = run(elman("tanh", 0.5))
    assert diagnosis.verdict.kind == "vanishing"
    layer = diagnosis.layers[0]
    assert layer.recurrent_norm == pytest.approx(0.5, rel=1e-6)
    assert layer.median_step_norm < 0.5 + 1e-6  # diag f' <= 1 only shrinks it further
    assert layer.horizon < 20 and layer.lyapunov[0] < 0
    assert "99 steps back" in diagnosis.verdict.explanation
    assert "‖W_h‖₂ = 0.5" in diagnosis.verdict.explanation


def test_relu_with_large_recurrent_weights_explodes():
    diagnosis = run(elman("relu", 3.0))
    assert diagnosis.verdict.kind == "exploding"
    layer = diagnosis.layers[0]
    assert layer.lyapunov[0] > 0 and layer.decay_rate > 1
    assert "times the loss step's" in diagnosis.verdict.explanation


@pytest.mark.parametrize(("cell", "scheme"), [("relu", "identity"), ("tanh", "orthogonal")])
def test_irnn_and_orthogonal_initialisation_are_healthy(cell, scheme):
    torch.manual_seed(0)
    model = Recurrent([ElmanCell(2, 64, cell)]).double()
    init_recurrent_(model, scheme)
    diagnosis = run(model)
    assert diagnosis.verdict.kind == "healthy", diagnosis.verdict.explanation
    assert diagnosis.layers[0].horizon == 99
    assert abs(float(diagnosis.layers[0].lyapunov[0])) < 0.1


@final
class NaNAtStep(AbstractElmanCell):
    """A tanh Elman cell whose pre-activation turns NaN for sample 2 at one step of the unroll (when armed)."""

    armed_step: int | None = None

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size, "tanh")
        self.calls = 0

    def pointwise(self, input_part, recurrent_part, state):
        self.calls += 1
        return self.activate(input_part, recurrent_part, state)

    def gate_values(self, input_part, recurrent_part, state):
        gates = super().gate_values(input_part, recurrent_part, state)
        if self.armed_step is not None and self.calls - 1 == self.armed_step and input_part.shape[0] > 2:
            z = gates["z"].clone()
            z[2, 5] = float("nan")
            gates = {"z": z}
        return gates


def test_a_nan_injected_at_step_37_of_layer_2_is_localised_there():
    torch.manual_seed(0)
    cells = [NaNAtStep(2, 8), NaNAtStep(8, 8), NaNAtStep(8, 8)]
    cells[2].armed_step = 37
    model = Recurrent(cells).double()
    inputs, targets = adding_batch(length=60, batch=4)
    diagnosis = diagnose(model, inputs.transpose(0, 1), targets, last_step)
    assert diagnosis.verdict.kind == "non-finite"
    report = diagnosis.nonfinite
    assert (report.tensor, report.layer, report.step, report.sample) == ("activation", "model.l2", 37, 2)
    assert report.value == "nan"
    assert "layer model.l2, step 37" in diagnosis.verdict.explanation


def test_a_nan_gradient_is_localised_in_the_backward_pass():
    """sqrt at 0 has an infinite derivative: the forward is finite, the backward is not."""
    model = Recurrent.from_name("rnn-tanh", 2, 4).double()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    inputs, _ = adding_batch(length=10, batch=3)
    diagnosis = diagnose(model, inputs.transpose(0, 1), None, lambda out, _: out[0][-1].sqrt().sum())
    report = diagnosis.nonfinite
    assert report.tensor == "hidden-state gradient"
    assert (report.layer, report.step, report.sample) == ("model.l0", 9, 0)


def test_an_inf_loss_is_reported_as_the_loss():
    model = Recurrent.from_name("gru", 2, 4).double()
    inputs, _ = adding_batch(length=10, batch=3)
    diagnosis = diagnose(model, inputs.transpose(0, 1), None, lambda out, _: out[0].sum() / 0.0)
    assert diagnosis.nonfinite.tensor == "loss"
    assert diagnosis.verdict.kind == "non-finite"


def test_useful_errors():
    with pytest.raises(ValueError, match="found no recurrent layer"):
        diagnose(torch.nn.Linear(2, 2), torch.zeros(3, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="bidirectional"):
        diagnose(torch.nn.GRU(2, 3, bidirectional=True), torch.zeros(4, 1, 2), None, lambda o, _: o[0].sum())
    model = Recurrent.from_name("lstm", 2, 3)
    with pytest.raises(TypeError, match="pass a loss_fn"):
        diagnose(model, torch.zeros(4, 1, 2), torch.zeros(1))
    with pytest.raises(ValueError, match="scalar tensor"):
        diagnose(model, torch.zeros(4, 1, 2), None, lambda o, _: o[0])


def test_many_to_many_verdict_rests_on_products_or_on_lyapunov():
    model = elman("tanh", 0.5)
    inputs, _ = adding_batch(length=100, batch=4)
    loss = lambda out, _: out[0].sum()
    with_products = diagnose(model, inputs.transpose(0, 1), None, loss)
    without = diagnose(model, inputs.transpose(0, 1), None, loss, products=False)
    assert not with_products.many_to_one
    assert with_products.verdict.kind == without.verdict.kind == "vanishing"
    assert "largest gain over 99 steps" in with_products.verdict.explanation
    assert "compounds to" in without.verdict.explanation and without.layers[0].spans == []
    # the per-step factor comes from the products' fit, or from the top Lyapunov exponent
    assert with_products.layers[0].decay_rate < 0.6
    assert without.layers[0].decay_rate == pytest.approx(math.exp(float(without.layers[0].lyapunov[0])))
    # the products are bounded by the per-step norms: sigma(J_T...J_1) <= prod sigma(J_t)
    layer = with_products.layers[0]
    assert float(layer.product_norms[-1]) <= float(layer.step_norms[1:, 0].prod()) * (1 + 1e-6)


def test_a_relu_network_with_every_unit_dead_vanishes():
    """Regression: a gradient of exactly 0 beyond the loss step read as 'healthy'."""
    model = elman("relu", 1.0)
    with torch.no_grad():
        model.cells[0].bias_ih.fill_(-100.0)  # z < 0 at every step: every unit dead
    diagnosis = run(model)
    layer = diagnosis.layers[0]
    assert layer.dead_units == 1.0 and layer.horizon == 0
    assert diagnosis.verdict.kind == "vanishing"
    assert "from 99 steps back is exactly 0 times" in diagnosis.verdict.explanation
    assert "100 % of ReLU units are dead" in diagnosis.verdict.explanation
