"""bptt.diagnose against plain-autograd references, in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from bptt import Recurrent, diagnose
from bptt.cells import AbstractCell
from bptt.diagnostics.diagnosis import gradient_profiles
from bptt.diagnostics.spectra import STEP_NORM_QUANTILES
from bptt.diagnostics.trace import unrolled_twin

RECENT_CELLS = ["exprnn", "exprnn-cayley", "lem", "cornn", "mingru", "minlstm"]
CELLS = ["rnn-tanh", "rnn-relu", "rnn-sigmoid", "irnn", "gru", "lstm", *RECENT_CELLS]


def last_step_loss(output: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """A many-to-one loss on (T, B, H) outputs: read each sample at its last valid step."""
    last = output[lengths - 1, torch.arange(output.shape[1])]
    return (last * torch.linspace(-1, 1, last.shape[-1], dtype=last.dtype)).sum()


def reference_profiles(cells, x, lengths, loss_of_top):
    """||dL/dh_k|| per layer by perturbation: h_k + eps_k with eps_k = 0, dL/d eps_k by autograd.

    ``cells[l](x_t, state) -> state`` are plain step functions; padded steps freeze the state.
    """
    steps, batch = x.shape[:2]
    valid = (torch.arange(steps).unsqueeze(1) < lengths).unsqueeze(-1)
    eps = []
    layer_input = x
    for step_fn, init in cells:
        state = init(batch)
        size = state[0].shape[-1] if isinstance(state, tuple) else state.shape[-1]
        layer_eps = torch.zeros(steps, batch, size, dtype=x.dtype, requires_grad=True)
        outputs = []
        for t in range(steps):
            new = step_fn(layer_input[t], state)
            if isinstance(new, tuple):
                new = (torch.where(valid[t], new[0], state[0]) + layer_eps[t], torch.where(valid[t], new[1], state[1]))
                hidden = new[0]
            else:
                new = torch.where(valid[t], new, state) + layer_eps[t]
                hidden = new
            state = new
            outputs.append(torch.where(valid[t], hidden, 0.0))
        layer_input = torch.stack(outputs)
        eps.append(layer_eps)
    grads = torch.autograd.grad(loss_of_top(layer_input), eps)
    return [grad.square().sum((1, 2)).sqrt() for grad in grads]


def bptt_steps(model: Recurrent):
    return [(cell.step, lambda b, cell=cell: cell.init_state(b, dtype=torch.float64)) for cell in model.cells]


@pytest.mark.parametrize("cell", CELLS)
def test_profile_matches_the_perturbation_reference(cell):
    torch.manual_seed(0)
    model = Recurrent.from_name(cell, 3, 5, num_layers=2).double()
    x = torch.randn(12, 4, 3, dtype=torch.float64)
    lengths = torch.tensor([12, 7, 12, 3])
    diagnosis = diagnose(
        model, x, lengths, lambda out, n: last_step_loss(out[0], n), lengths=lengths
    )
    expected = reference_profiles(bptt_steps(model), x, lengths, lambda out: last_step_loss(out, lengths))
    assert diagnosis.many_to_one
    for layer, reference in zip(diagnosis.layers, expected, strict=True):
        torch.testing.assert_close(layer.profile, reference, rtol=1e-8, atol=1e-12)


def test_step_norm_quantiles_describe_the_valid_steps_only():
    torch.manual_seed(0)
    model = Recurrent.from_name("rnn-tanh", 3, 5).double()
    x = torch.randn(12, 4, 3, dtype=torch.float64)
    lengths = torch.tensor([12, 7, 12, 3])
    (layer,) = diagnose(model, x, lengths, lambda out, n: last_step_loss(out[0], n), lengths=lengths).layers
    valid = layer.step_norms[torch.isfinite(layer.step_norms)]
    assert valid.numel() == int(lengths.sum())  # padded steps are nan and left out
    quantiles = torch.tensor(layer.step_norm_quantiles, dtype=torch.float64)
    assert quantiles[0] == valid.min() and quantiles[-1] == valid.max()
    assert torch.all(quantiles.diff() >= 0)
    expected = np.quantile(valid.numpy(), STEP_NORM_QUANTILES)
    torch.testing.assert_close(quantiles, torch.from_numpy(expected))
    assert layer.to_dict()["step_norm_quantiles"] == layer.step_norm_quantiles


@pytest.mark.parametrize("cell", ["skip-rnn:3", "residual-rnn", "indrnn"])
def test_profile_of_skip_residual_and_indrnn_cells_matches_the_perturbation_reference(cell):
    """Regression: diagnose failed on a skip-k state (its initial zeros have no graph) and on
    IndRNN's vector weight."""
    torch.manual_seed(1)
    model = Recurrent.from_name(cell, 3, 5).double()
    x = torch.randn(10, 4, 3, dtype=torch.float64)
    weights = torch.randn(4, 5, dtype=torch.float64)
    (layer,) = diagnose(model, x, None, lambda out, _: (out[0][-1] * weights).sum()).layers
    step = model.cells[0]
    eps = torch.zeros(10, 4, 5, dtype=torch.float64, requires_grad=True)
    state = step.init_state(4, dtype=torch.float64)
    for t in range(10):
        state = step.step(x[t], state)
        state = (state[0] + eps[t], *state[1:]) if isinstance(state, tuple) else state + eps[t]
    hidden = state[0] if isinstance(state, tuple) else state
    (grad,) = torch.autograd.grad((hidden * weights).sum(), eps)
    torch.testing.assert_close(layer.profile, grad.square().sum((1, 2)).sqrt(), rtol=1e-8, atol=1e-12)
    assert float(layer.gradient_by_distance.sum()) == pytest.approx(1.0, abs=1e-8)


def test_a_large_float32_gradient_is_diagnosed_not_refused():
    """Regression: squaring per-sample norms above ~1.8e19 overflowed float32 to inf."""
    torch.manual_seed(0)
    model = Recurrent.from_name("rnn-relu", 2, 16)
    with torch.no_grad():
        model.cells[0].weight_hh.copy_(4 * torch.linalg.qr(torch.randn(16, 16))[0])
    x = torch.rand(50, 8, 2)
    diagnosis = diagnose(model, x, None, lambda out, _: out[0][-1].sum())
    assert diagnosis.verdict.kind == "exploding"
    profile = diagnosis.layers[0].profile
    assert profile.dtype == torch.float32 and torch.isfinite(profile).all() and profile.max() > 1e19


def torch_cell_steps(module: nn.RNNBase):
    """Reference steps from torch.nn.RNNCell / GRUCell / LSTMCell with the module's weights."""
    steps = []
    for layer in range(module.num_layers):
        size = module.input_size if layer == 0 else module.hidden_size
        if module.mode == "LSTM":
            cell = nn.LSTMCell(size, module.hidden_size)
        elif module.mode == "GRU":
            cell = nn.GRUCell(size, module.hidden_size)
        else:
            cell = nn.RNNCell(size, module.hidden_size, nonlinearity=module.nonlinearity)
        cell = cell.double()
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(cell, name).copy_(getattr(module, f"{name}_l{layer}"))
        hidden = module.hidden_size

        def init(b, lstm=module.mode == "LSTM", hidden=hidden):
            zeros = torch.zeros(b, hidden, dtype=torch.float64)
            return (zeros, zeros) if lstm else zeros

        steps.append((lambda x, s, cell=cell: cell(x, s), init))
    return steps


class Classifier(nn.Module):
    """A user's model: a fused torch RNN, batch first, packed by lengths, then a linear head."""

    def __init__(self, rnn: nn.RNNBase) -> None:
        super().__init__()
        self.rnn = rnn
        self.head = nn.Linear(rnn.hidden_size, 1)

    def forward(self, x, lengths):
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        output, _ = self.rnn(packed)
        output, _ = pad_packed_sequence(output, batch_first=True, total_length=x.shape[1])
        return self.head(output[torch.arange(x.shape[0]), lengths - 1]).squeeze(-1)


FUSED = {
    "rnn-tanh": lambda: nn.RNN(3, 5, num_layers=2, batch_first=True),
    "rnn-relu": lambda: nn.RNN(3, 5, num_layers=2, batch_first=True, nonlinearity="relu"),
    "gru": lambda: nn.GRU(3, 5, num_layers=2, batch_first=True),
    "lstm": lambda: nn.LSTM(3, 5, num_layers=2, batch_first=True),
}


@pytest.mark.parametrize("kind", FUSED)
def test_fused_torch_modules_are_diagnosed_without_being_changed(kind):
    torch.manual_seed(1)
    model = Classifier(FUSED[kind]()).double()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    x = torch.randn(4, 10, 3, dtype=torch.float64)
    lengths = torch.tensor([10, 6, 9, 2])
    targets = torch.randn(4, dtype=torch.float64)
    expected_output = model(x, lengths)

    diagnosis = diagnose(model, x, targets, lengths=lengths)

    head = model.head
    def loss_of_top(top):  # top: (T, B, H), the same MSE as the default loss
        last = top[lengths - 1, torch.arange(4)]
        return nn.functional.mse_loss(head(last).squeeze(-1), targets)

    expected = reference_profiles(torch_cell_steps(model.rnn), x.transpose(0, 1), lengths, loss_of_top)
    for layer, reference in zip(diagnosis.layers, expected, strict=True):
        torch.testing.assert_close(layer.profile, reference, rtol=1e-8, atol=1e-12)
    assert [layer.name for layer in diagnosis.layers] == ["rnn.l0", "rnn.l1"]
    # the user's module is exactly as it was
    assert "forward" not in vars(model.rnn)
    assert not model.rnn._forward_hooks and not model.rnn._forward_pre_hooks
    assert all(p.grad is None for p in model.parameters())
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    torch.testing.assert_close(model(x, lengths), expected_output, rtol=0, atol=0)


@pytest.mark.parametrize("kind", FUSED)
def test_unrolled_twin_gives_the_fused_outputs(kind):
    torch.manual_seed(2)
    module = FUSED[kind]().double()
    x = torch.randn(4, 9, 3, dtype=torch.float64)
    output, final = module(x)
    twin_output, twin_final = unrolled_twin(module)(x)
    torch.testing.assert_close(twin_output, output, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(twin_final, final, rtol=1e-12, atol=1e-12)
    assert twin_final is not None and unrolled_twin(module).cells[0].weight_hh is module.weight_hh_l0


def test_scalar_profile_is_the_closed_form():
    """H = 1: ||dL/dh_k|| = |w|^(T-1-k) * prod_{i>k} |f'(z_i)| times |dL/dh_T|."""
    torch.manual_seed(3)
    model = Recurrent.from_name("rnn-tanh", 1, 1).double()
    with torch.no_grad():
        model.cells[0].weight_hh.fill_(-0.9)
    x = torch.randn(40, 1, 1, dtype=torch.float64)
    diagnosis = diagnose(model, x, None, lambda out, _: out[0][-1].sum())
    h = model(x)[0].detach().flatten()
    derivative = 1 - h.square()
    steps = 40
    expected = torch.stack([0.9 ** (steps - 1 - k) * derivative[k + 1 :].prod() for k in range(steps)])
    torch.testing.assert_close(diagnosis.layers[0].profile, expected, rtol=1e-10, atol=1e-300)
    torch.testing.assert_close(diagnosis.layers[0].profile_by_distance, expected.flip(0), rtol=1e-10, atol=1e-300)


def per_use_contributions(cell: AbstractCell, x: torch.Tensor, per_step_loss):
    """dl_t/dW_k for a copy W_k of W_hh used only at step k: returns (T, T) inner products with G."""
    steps, batch = x.shape[:2]
    copies = [cell.weight_hh.detach().clone().requires_grad_() for _ in range(steps)]
    state = cell.init_state(batch, dtype=torch.float64)
    hiddens = []
    for t in range(steps):
        input_part, _ = cell.gate_input(x[t], cell.hidden(state))  # W_hh enters through the projection only
        state = cell.pointwise(input_part, cell.recurrent_projection(cell.hidden(state), copies[t]), state)
        hiddens.append(cell.hidden(state))
    losses = per_step_loss(torch.stack(hiddens))
    grads = [
        torch.autograd.grad(loss, copies, retain_graph=True, allow_unused=True, materialize_grads=True)
        for loss in losses
    ]
    total = sum(sum(g) for g in grads)
    inner = torch.tensor([[float((g * total).sum()) for g in row] for row in grads], dtype=torch.float64)
    return inner / total.square().sum()


@pytest.mark.parametrize("cell", ["rnn-tanh", "gru", "lstm", "indrnn", "exprnn", "lem", "cornn"])
def test_weight_gradient_by_distance_many_to_many(cell):
    torch.manual_seed(4)
    model = Recurrent.from_name(cell, 2, 4).double()
    x = torch.randn(8, 3, 2, dtype=torch.float64)
    weights = torch.randn(8, 3, 4, dtype=torch.float64)

    def per_step(out):  # (T, B, H) -> T losses
        return (out * weights).sum((1, 2))

    diagnosis = diagnose(model, x, None, lambda out, _: per_step(out[0]).sum(), max_distance=7)
    inner = per_use_contributions(model.cells[0], x, per_step)  # [t, k]
    expected = torch.stack([inner.diagonal(-d).sum() for d in range(8)])
    layer = diagnosis.layers[0]
    assert not diagnosis.many_to_one
    torch.testing.assert_close(layer.gradient_by_distance, expected.double(), rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(layer.gradient_by_position, inner.sum(0).double(), rtol=1e-8, atol=1e-10)
    assert layer.gradient_beyond == pytest.approx(0.0, abs=1e-10)

    short = diagnose(model, x, None, lambda out, _: per_step(out[0]).sum(), max_distance=3).layers[0]
    torch.testing.assert_close(short.gradient_by_distance, expected[:4].double(), rtol=1e-8, atol=1e-10)
    assert short.gradient_beyond == pytest.approx(float(expected[4:].sum()), abs=1e-10)


@pytest.mark.parametrize("cell", ["lstm", "indrnn"])  # indrnn: a diagonal weight stored as a vector
def test_weight_gradient_by_distance_many_to_one(cell):
    torch.manual_seed(5)
    model = Recurrent.from_name(cell, 2, 4).double()
    x = torch.randn(9, 3, 2, dtype=torch.float64)
    weights = torch.randn(3, 4, dtype=torch.float64)
    per_step = lambda out: torch.stack([(out[-1] * weights).sum() if t == 8 else out[t].sum() * 0 for t in range(9)])
    diagnosis = diagnose(model, x, None, lambda out, _: (out[0][-1] * weights).sum())
    inner = per_use_contributions(model.cells[0], x, per_step)
    assert diagnosis.many_to_one
    torch.testing.assert_close(
        diagnosis.layers[0].gradient_by_distance, inner[8].flip(0).double(), rtol=1e-8, atol=1e-10
    )
    assert float(diagnosis.layers[0].gradient_by_distance.sum()) == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("cell", ["rnn-tanh", "lstm", "gru", *RECENT_CELLS])
def test_step_norms_of_the_layer_equal_explicit_jacobians(cell):
    torch.manual_seed(6)
    model = Recurrent.from_name(cell, 2, 3).double()
    x = torch.randn(6, 2, 2, dtype=torch.float64)
    diagnosis = diagnose(
        model, x, None, lambda out, _: out[0][-1].sum(), power_iterations=500, spectral_tolerance=1e-13
    )
    layer_cell = model.cells[0]
    state = layer_cell.init_state(2, dtype=torch.float64)
    flat = lambda s: torch.cat(s, -1) if isinstance(s, tuple) else s
    unflat = lambda v: tuple(v.split(3, -1)) if isinstance(state, tuple) else v
    expected = []
    for t in range(6):
        rows = []
        for b in range(2):
            s_b = flat(state)[b]
            x_tb = x[t, b : b + 1]

            def step(s, x_tb=x_tb):
                return flat(layer_cell.step(x_tb, unflat(s.unsqueeze(0)))).squeeze(0)

            jacobian = torch.func.jacrev(step)(s_b)
            rows.append(torch.linalg.matrix_norm(jacobian, 2))
        expected.append(torch.stack(rows))
        state = layer_cell.step(x[t], state)
    torch.testing.assert_close(diagnosis.layers[0].step_norms, torch.stack(expected).detach(), rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("kind", FUSED)
def test_gradient_profiles_alone_equal_the_diagnosis(kind):
    torch.manual_seed(7)
    model = Classifier(FUSED[kind]()).double()
    x = torch.randn(3, 8, 3, dtype=torch.float64)
    lengths = torch.tensor([8, 5, 8])
    targets = torch.randn(3, dtype=torch.float64)
    profiles = gradient_profiles(model, x, targets, lengths=lengths)
    diagnosis = diagnose(model, x, targets, lengths=lengths)
    assert list(profiles) == ["rnn.l0", "rnn.l1"]
    for layer in diagnosis.layers:
        torch.testing.assert_close(profiles[layer.name], layer.profile, rtol=1e-10, atol=1e-14)
    assert "forward" not in vars(model.rnn) and all(p.grad is None for p in model.parameters())
