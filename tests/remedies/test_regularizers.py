"""Each regularizer checked in float64 against a plain, explicit-Jacobian reference."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from bptt.cells import flatten_state, make_cell, unflatten_state
from bptt.diagnostics.jacobian import CellSteps, lyapunov_exponents
from bptt.models import LastStepHead, SequenceModel
from bptt.recurrent import Recurrent
from bptt.remedies.regularizers import (
    REGULARIZERS,
    L2Regularizer,
    LyapunovRegularizer,
    PascanuRegularizer,
    lyapunov_spectrum,
    make_regularizer,
)

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny batched QRs are much slower with several threads on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def taped_run(recurrent, x, lengths=None):
    """A nonlinear loss of the outputs and the final state, and the tapes of the forward pass.

    Through the final state, dL/ds_t is not zero at padded steps either (where the state
    is frozen), so the regularizers must leave those steps out by the mask.
    """
    with recurrent.recording_tape() as tapes:
        output, final = recurrent(x, lengths=lengths)
    final_h = final[0] if isinstance(final, tuple) else final
    loss = output.tanh().square().sum() + output[-1].sum() + final_h.sin().sum()
    return loss, tapes


def states_before(tape):
    """Flat state before each step, (T, B, S), as the diagnostics take them."""
    return torch.stack(
        [flatten_state(s) for s in [tape.initial, *tape.states[:-1]]]
    ).detach()


def flat_step(cell, x, parameters=None):
    """s -> flat next state of one sample, optionally with replaced parameters."""

    def step(s):
        state = unflatten_state(s[None], cell.hidden_size)
        new = functional_call(cell, parameters or {}, (x[None], state))
        return flatten_state(new)[0]

    return step


def pascanu_reference(tapes, deltas, parameters=None):
    """Pascanu et al. eq. 9 with explicit Jacobians, step by step and sample by sample."""
    layers = []
    for tape, delta in zip(tapes, deltas, strict=True):
        before, terms = states_before(tape), []
        largest = delta.norm(dim=-1).max()
        for t in range(delta.shape[0]):
            for b in range(delta.shape[1]):
                norm = delta[t, b].norm()
                if norm <= 1e-12 * largest or (
                    tape.mask is not None and not tape.mask[t, b]
                ):
                    continue
                step = flat_step(tape.cell, tape.inputs[t, b].detach(), parameters)
                jacobian = torch.autograd.functional.jacobian(step, before[t, b])
                terms.append((jacobian.T @ delta[t, b]).norm() / norm - 1)
        layers.append(torch.stack(terms).square().mean())
    return torch.stack(layers).mean()


def total_derivatives(loss, tapes):
    """dL/ds_t, flat, (T, B, S) per tape, from plain autograd."""
    deltas = []
    for tape in tapes:
        parts = [s if isinstance(s, tuple) else (s,) for s in tape.states]
        flat = [p for ps in parts for p in ps]  # an LSTM's last c is unused: dL/dc = 0
        grads = torch.autograd.grad(
            loss, flat, retain_graph=True, allow_unused=True, materialize_grads=True
        )
        size = len(parts[0])
        per_state = [
            torch.cat(grads[i : i + size], -1) for i in range(0, len(grads), size)
        ]
        deltas.append(torch.stack(per_state))
    return deltas


# L2


def test_l2_is_the_sum_of_squares_of_the_recurrent_weights_only():
    torch.manual_seed(0)
    model = SequenceModel(
        Recurrent.from_name("gru", 2, 3, num_layers=2), LastStepHead(3, 2)
    )
    model = model.double()
    penalty = L2Regularizer(0.5).penalty(model, torch.zeros(()), None)
    cells = model.recurrent.cells
    expected = 0.5 * sum((cell.weight_hh.detach() ** 2).sum() for cell in cells)
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-12)
    penalty.backward()
    for cell in cells:
        torch.testing.assert_close(
            cell.weight_hh.grad, 2 * 0.5 * cell.weight_hh.detach()
        )
        assert cell.weight_ih.grad is None
    assert model.head.linear.weight.grad is None


def test_l2_finds_the_weights_of_torch_fused_modules_and_says_when_there_are_none():
    rnn = nn.RNN(2, 3, num_layers=2).double()
    expected = 2.0 * (rnn.weight_hh_l0.square().sum() + rnn.weight_hh_l1.square().sum())
    torch.testing.assert_close(
        L2Regularizer(2.0).penalty(rnn, torch.zeros(()), None), expected
    )
    with pytest.raises(ValueError, match="weight_hh.*weight decay"):
        L2Regularizer().penalty(nn.Linear(2, 3), torch.zeros(()), None)


# Pascanu


@pytest.mark.parametrize(
    ("cell", "layers", "lengths"),
    [
        ("rnn-tanh", 1, None),
        ("rnn-tanh", 1, [6, 3, 1]),
        ("lstm", 1, [6, 4, 2]),
        ("gru", 2, None),
        ("rnn-tanh", 2, [5, 6, 2]),
    ],
)
def test_pascanu_equals_the_explicit_jacobian_reference(cell, layers, lengths):
    torch.manual_seed(1)
    recurrent = Recurrent.from_name(cell, 2, 4, num_layers=layers).double()
    x = torch.randn(6, 3, 2, dtype=F64)
    lengths = None if lengths is None else torch.tensor(lengths)
    loss, tapes = taped_run(recurrent, x, lengths)
    penalty = PascanuRegularizer(2.0).penalty(recurrent, loss, tapes)
    expected = 2.0 * pascanu_reference(tapes, total_derivatives(loss, tapes))
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-10)
    assert expected.item() > 0
    (penalty + loss).backward()  # the loss's graph survives the penalty
    assert all(torch.isfinite(p.grad).all() for p in recurrent.parameters())


def test_pascanu_gradient_matches_finite_differences_with_deltas_and_states_fixed():
    torch.manual_seed(2)
    recurrent = Recurrent.from_name("rnn-tanh", 2, 3).double()
    cell = recurrent.cells[0]
    loss, tapes = taped_run(recurrent, torch.randn(6, 2, 2, dtype=F64))
    deltas = total_derivatives(loss, tapes)
    PascanuRegularizer(1.0).penalty(recurrent, loss, tapes).backward()

    def reference(weight_hh):
        return pascanu_reference(tapes, deltas, {"weight_hh": weight_hh}).item()

    weight, eps = cell.weight_hh.detach(), 1e-6
    numeric = torch.zeros_like(weight)
    for index in range(weight.numel()):
        bump = torch.zeros_like(weight).view(-1).index_fill(0, torch.tensor(index), eps)
        bump = bump.view_as(weight)
        numeric.view(-1)[index] = (
            reference(weight + bump) - reference(weight - bump)
        ) / (2 * eps)
    torch.testing.assert_close(cell.weight_hh.grad, numeric, rtol=1e-6, atol=1e-9)


def test_pascanu_is_zero_when_the_step_preserves_every_gradient_norm():
    """tanh at z = 0 with an orthogonal W_hh: J = W_hh, so ||J^T delta|| = ||delta||."""
    recurrent = Recurrent.from_name("rnn-tanh", 2, 4).double()
    cell = recurrent.cells[0]
    with torch.no_grad():
        cell.weight_hh.copy_(torch.linalg.qr(torch.randn(4, 4, dtype=F64)).Q)
        for parameter in (cell.weight_ih, cell.bias_ih, cell.bias_hh):
            parameter.zero_()  # the state stays 0, where tanh' = 1
    loss, tapes = taped_run(recurrent, torch.randn(5, 2, 2, dtype=F64))
    penalty = PascanuRegularizer().penalty(recurrent, loss, tapes)
    assert penalty.item() == pytest.approx(0.0, abs=1e-20)


# Lyapunov


@pytest.mark.parametrize("cell", ["rnn-tanh", "lstm", "gru"])
def test_lyapunov_spectrum_equals_the_diagnostics_reference(cell):
    torch.manual_seed(3)
    recurrent = Recurrent.from_name(cell, 2, 5).double()
    x = torch.randn(12, 3, 2, dtype=F64)
    with recurrent.recording_tape() as tapes:
        recurrent(x, lengths=torch.tensor([12, 7, 3]))
    tape, step = tapes[0], recurrent.cells[0]
    before = states_before(tape)
    reference = lyapunov_exponents(
        CellSteps(step, x, before), x, before, 3, mask=tape.mask
    )
    spectrum = lyapunov_spectrum(step, x, None, 3, mask=tape.mask)
    torch.testing.assert_close(spectrum, reference.mean(0), rtol=1e-10, atol=1e-12)
    assert spectrum.requires_grad


class _Spectrum(nn.Module):
    """lyapunov_spectrum as a module, so functional_call can swap in weight_hh."""

    def __init__(self, cell, k):
        super().__init__()
        self.cell, self.k = cell, k

    def forward(self, x, states):
        return lyapunov_spectrum(self.cell, x, None, self.k, states=states)


@pytest.mark.parametrize(("cell", "hidden"), [("rnn-tanh", 3), ("lstm", 2)])
def test_lyapunov_spectrum_gradient_passes_gradcheck(cell, hidden):
    """The trajectory is fixed (its states are constants): only J_t depends on W_hh."""
    torch.manual_seed(4)
    module = _Spectrum(make_cell(cell, 2, hidden).double(), k=2)
    recurrent = Recurrent([module.cell])
    x = torch.randn(5, 2, 2, dtype=F64)
    with recurrent.recording_tape() as tapes:
        recurrent(x)
    before = states_before(tapes[0])
    weight = module.cell.weight_hh.detach().clone().requires_grad_()

    def spectrum(weight_hh):
        return functional_call(module, {"cell.weight_hh": weight_hh}, (x, before))

    assert torch.autograd.gradcheck(spectrum, (weight,))


def test_lyapunov_spectrum_from_given_states_equals_the_rerun_trajectory():
    torch.manual_seed(8)
    cell = make_cell("gru", 2, 3).double()
    x, h0 = torch.randn(6, 2, 2, dtype=F64), torch.randn(2, 3, dtype=F64)
    recurrent = Recurrent([cell])
    with recurrent.recording_tape() as tapes:
        recurrent(x, h0[None])
    rerun = lyapunov_spectrum(cell, x, h0, 2)
    torch.testing.assert_close(
        lyapunov_spectrum(cell, x, None, 2, states=states_before(tapes[0])), rerun
    )
    with pytest.raises(ValueError, match="pass initial_state=None"):
        lyapunov_spectrum(cell, x, h0, 2, states=states_before(tapes[0]))


@pytest.mark.parametrize(("gain", "sign"), [(0.4, -1), (3.0, 1)])
def test_flossing_alone_moves_the_top_exponent_towards_zero(gain, sign):
    torch.manual_seed(5)
    recurrent = Recurrent.from_name("rnn-tanh", 3, 16).double()
    cell = recurrent.cells[0]
    with torch.no_grad():
        cell.weight_hh.copy_(gain * torch.linalg.qr(torch.randn(16, 16, dtype=F64)).Q)
    x = torch.randn(20, 4, 3, dtype=F64)

    def top_exponent():
        before = states_before(taped_run(recurrent, x)[1][0])
        return (
            lyapunov_exponents(CellSteps(cell, x, before), x, before, 1).mean().item()
        )

    start = top_exponent()
    assert sign * start > 0.2  # clearly vanishing (gain 0.4) or exploding (gain 3)
    regularizer = make_regularizer("flossing:1")
    optimizer = torch.optim.Adam(recurrent.parameters(), lr=0.03)
    for _ in range(25):
        loss, tapes = taped_run(recurrent, x)
        optimizer.zero_grad()
        regularizer.penalty(recurrent, loss, tapes).backward()
        optimizer.step()
    assert abs(top_exponent()) < 0.5 * abs(start)


def test_lyapunov_penalty_is_the_squared_spectrum_of_the_first_samples_averaged_over_layers():
    torch.manual_seed(6)
    recurrent = Recurrent.from_name("lstm", 2, 3, num_layers=2).double()
    x = torch.randn(7, 5, 2, dtype=F64)
    loss, tapes = taped_run(recurrent, x)
    penalty = LyapunovRegularizer(0.5, k=2, samples=3).penalty(recurrent, loss, tapes)
    expected = (
        0.5
        * torch.stack(
            [
                lyapunov_spectrum(tape.cell, tape.inputs[:, :3], None, 2).square().sum()
                for tape in tapes
            ]
        ).mean()
    )
    torch.testing.assert_close(penalty, expected)


# every regularizer, and the specs


@pytest.mark.parametrize("name", ["l2", "pascanu", "lyapunov"])
def test_every_penalty_is_a_finite_scalar_that_requires_grad(name):
    torch.manual_seed(7)
    model = SequenceModel(Recurrent.from_name("gru", 2, 4), LastStepHead(4, 1)).double()
    regularizer = make_regularizer(name)
    with model.recurrent.recording_tape() as tapes:
        loss = model(torch.randn(3, 5, 2, dtype=F64)).square().mean()
    penalty = regularizer.penalty(
        model, loss, tapes if regularizer.needs_tape else None
    )
    assert penalty.ndim == 0 and math.isfinite(penalty.item()) and penalty.requires_grad
    penalty.backward()
    assert model.recurrent.cells[0].weight_hh.grad.abs().sum() > 0


def test_needs_tape_and_the_error_without_one():
    assert not L2Regularizer.needs_tape
    assert PascanuRegularizer.needs_tape and LyapunovRegularizer.needs_tape
    recurrent = Recurrent.from_name("rnn-tanh", 2, 3)
    for regularizer in (PascanuRegularizer(), LyapunovRegularizer()):
        with pytest.raises(ValueError, match="recording_tape"):
            regularizer.penalty(recurrent, torch.zeros((), requires_grad=True), None)


def test_make_regularizer_parses_name_and_weight():
    assert isinstance(make_regularizer("pascanu:2"), PascanuRegularizer)
    assert make_regularizer("pascanu:2").weight == 2.0
    assert make_regularizer(" l2:1e-3 ").weight == 1e-3
    assert isinstance(make_regularizer("lyapunov"), LyapunovRegularizer)
    assert isinstance(make_regularizer("flossing:0.1"), LyapunovRegularizer)
    assert make_regularizer("l2").weight == L2Regularizer().weight
    assert make_regularizer("none") is None
    assert {"l2", "pascanu", "lyapunov", "flossing"} <= set(REGULARIZERS)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("pascanau:1", "unknown regularizer 'pascanau'.*Did you mean 'pascanu'"),
        ("l2:abc", "expected a number.*'abc'.*'l2:1'"),
        ("l2:", "expected a number"),
        ("l2:0", "positive finite.*received 0.0"),
        ("pascanu:-1", "positive finite.*received -1.0"),
        ("lyapunov:nan", "positive finite"),
        ("lyapunov:inf", "positive finite"),
    ],
)
def test_make_regularizer_rejects_bad_specs_with_helpful_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        make_regularizer(spec)


def test_bad_lyapunov_arguments_are_rejected():
    with pytest.raises(ValueError, match="k must be a positive int"):
        LyapunovRegularizer(k=0)
    with pytest.raises(ValueError, match="samples must be a positive int"):
        LyapunovRegularizer(samples=2.5)
    with pytest.raises(ValueError, match=r"k in \[1, S\] = \[1, 3\]"):
        lyapunov_spectrum(make_cell("rnn-tanh", 2, 3), torch.randn(4, 1, 2), None, 4)
