"""LEM and coRNN cells against their equations written out here, in float64."""

from __future__ import annotations

import contextlib
import inspect
import math

import pytest
import torch
from torch import Tensor

from bptt import Recurrent
from bptt.cells import AbstractCell
from bptt.cells.oscillators import CORNN_DT, CORNN_EPSILON, CORNN_GAMMA, LEM_DT, CoRNNCell, LEMCell

F64 = torch.float64
I, H, B, T = 3, 4, 3, 7
LENGTHS = torch.tensor([7, 1, 4])
Pair = tuple[Tensor, Tensor]


def make(name: str, bias: bool = True) -> AbstractCell:
    """A float64 cell with non-default options, so that the options reach the step."""
    torch.manual_seed(0)
    if name == "lem":
        cell = LEMCell(I, H, bias, dt=0.3)
    else:
        cell = CoRNNCell(I, H, bias, dt=0.1, gamma=2.5, epsilon=1.5)
    cell = cell.double()
    with torch.no_grad():  # larger weights than the default init, so every term matters
        for parameter in cell.parameters():
            parameter.copy_(torch.randn_like(parameter))
    return cell


def lem_equations(cell: LEMCell, x: Tensor, state: Pair) -> Pair:
    """The LEM step as the paper writes it, block by block."""
    y, z = state
    v1, v2, vz, vy = cell.weight_ih.chunk(4)
    w1, w2, wz = cell.weight_hh.chunk(3)
    if cell.bias:
        b1, b2, bz = (cell.bias_ih[: 3 * H] + cell.bias_hh).chunk(3)
        by = cell.bias_ih[3 * H :] + cell.bias_zh
    else:
        b1 = b2 = bz = by = torch.zeros(H, dtype=F64)
    dt1 = cell.dt * torch.sigmoid(y @ w1.T + x @ v1.T + b1)
    dt2 = cell.dt * torch.sigmoid(y @ w2.T + x @ v2.T + b2)
    z = (1 - dt1) * z + dt1 * torch.tanh(y @ wz.T + x @ vz.T + bz)
    y = (1 - dt2) * y + dt2 * torch.tanh(z @ cell.weight_zh.T + x @ vy.T + by)
    return y, z


def cornn_equations(cell: CoRNNCell, x: Tensor, state: Pair) -> Pair:
    """The coRNN step as the paper writes it (implicit-explicit Euler)."""
    y, z = state
    b = cell.bias_ih + cell.bias_hh if cell.bias else 0.0
    force = torch.tanh(y @ cell.weight_hh.T + z @ cell.weight_zh.T + x @ cell.weight_ih.T + b)
    z = z + cell.dt * (force - cell.gamma * y - cell.epsilon * z)
    return y + cell.dt * z, z


EQUATIONS = {"lem": lem_equations, "cornn": cornn_equations}
NAMES = list(EQUATIONS)


def random_state(batch: int = B) -> Pair:
    return torch.randn(batch, H, dtype=F64), torch.randn(batch, H, dtype=F64)


def hand_loop(name: str, cell: AbstractCell, x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Pair]:
    """Outputs (zero after each length) and the state at each sample's last valid step."""
    state = cell.init_state(x.shape[1], dtype=F64)
    outputs = []
    for t in range(x.shape[0]):
        new = EQUATIONS[name](cell, x[t], state)
        valid = torch.ones(x.shape[1], 1, dtype=torch.bool) if lengths is None else (t < lengths)[:, None]
        state = tuple(torch.where(valid, n, s) for n, s in zip(new, state, strict=True))
        outputs.append(torch.where(valid, state[0], 0.0))
    return torch.stack(outputs), state


@contextlib.contextmanager
def execution_path(model: Recurrent, path: str):
    """The default path (the cell's explicit BPTT if it has one), the unrolled loop, or the tape."""
    if path == "unrolled":
        handle = model.register_step_hook(lambda layer, t, state: None)
        yield
        handle.remove()
    elif path == "tape":
        with model.recording_tape():
            yield
    else:
        yield


# -- the step --------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bias", [True, False])
def test_step_equals_the_equations(name: str, bias: bool) -> None:
    cell = make(name, bias)
    x, state = torch.randn(B, I, dtype=F64), random_state()
    expected = EQUATIONS[name](cell, x, state)
    actual = cell.step(x, state)
    assert isinstance(actual, tuple) and len(actual) == 2
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, atol=1e-12, rtol=0)
    torch.testing.assert_close(cell.hidden(actual), expected[0], atol=1e-12, rtol=0)


def test_lem_gates_are_the_sigmoids_and_the_candidates() -> None:
    cell = make("lem")
    x, (y, z) = torch.randn(B, I, dtype=F64), random_state()
    gates = cell.gates(x, (y, z))
    assert list(gates) == list(cell.gate_activations)
    y_new, z_new = cell.step(x, (y, z))
    # each update is a convex combination of the old state and its candidate
    torch.testing.assert_close(z_new, z + cell.dt * gates["dt_z"] * (gates["candidate_z"] - z))
    torch.testing.assert_close(y_new, y + cell.dt * gates["dt_y"] * (gates["candidate_y"] - y))
    for name, kind in cell.gate_activations.items():
        low = 0.0 if kind == "sigmoid" else -1.0
        assert gates[name].shape == (B, H) and ((gates[name] > low) & (gates[name] < 1)).all(), name


def test_cornn_gate_is_the_driving_force() -> None:
    cell = make("cornn")
    x, (y, z) = torch.randn(B, I, dtype=F64), random_state()
    drive = cell.gates(x, (y, z))["drive"]
    assert list(cell.gate_activations) == ["drive"] and drive.shape == (B, H)
    y_new, z_new = cell.step(x, (y, z))
    torch.testing.assert_close(z_new, z + cell.dt * (drive - cell.gamma * y - cell.epsilon * z))
    torch.testing.assert_close(y_new, y + cell.dt * z_new)


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_one_step(name: str) -> None:
    cell = make(name)
    x, (y, z) = torch.randn(2, I, dtype=F64), random_state(2)
    names = [n for n, _ in cell.named_parameters()]

    def step(x: Tensor, y: Tensor, z: Tensor, *parameters: Tensor) -> Pair:
        return torch.func.functional_call(cell, dict(zip(names, parameters, strict=True)), (x, (y, z)))

    leaves = (x, y, z, *(p.detach() for p in cell.parameters()))
    assert torch.autograd.gradcheck(step, tuple(leaf.clone().requires_grad_() for leaf in leaves))


# -- unrolled by Recurrent -------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("path", ["default", "unrolled", "tape"])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_recurrent_equals_a_hand_loop(name: str, path: str, with_lengths: bool) -> None:
    cell = make(name)
    model = Recurrent([cell])
    x = torch.randn(T, B, I, dtype=F64)
    lengths = LENGTHS if with_lengths else None
    with execution_path(model, path):
        output, (y_n, z_n) = model(x, lengths=lengths)
    expected_output, (y_e, z_e) = hand_loop(name, cell, x, lengths)
    torch.testing.assert_close(output, expected_output, atol=1e-12, rtol=0)
    torch.testing.assert_close(y_n, y_e.unsqueeze(0), atol=1e-12, rtol=0)
    torch.testing.assert_close(z_n, z_e.unsqueeze(0), atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_recurrent_takes_an_initial_state_pair(name: str) -> None:
    cell = make(name)
    x, (y0, z0) = torch.randn(T, B, I, dtype=F64), random_state()
    _, (y_n, z_n) = Recurrent([cell])(x, (y0.unsqueeze(0), z0.unsqueeze(0)))
    state = (y0, z0)
    for t in range(T):
        state = EQUATIONS[name](cell, x[t], state)
    torch.testing.assert_close(y_n[0], state[0], atol=1e-12, rtol=0)
    torch.testing.assert_close(z_n[0], state[1], atol=1e-12, rtol=0)


def test_lem_state_stays_in_the_unit_box() -> None:
    """With dt <= 1 both updates are convex combinations with a tanh: |y|, |z| <= 1."""
    cell = make("lem")
    cell.dt = 1.0
    with torch.no_grad():
        output, (_, z_n) = Recurrent([cell])(10 * torch.randn(200, B, I, dtype=F64))
    assert output.abs().max() <= 1 and z_n.abs().max() <= 1


# -- structure and options -------------------------------------------------------------


@pytest.mark.parametrize("cls", [LEMCell, CoRNNCell])
def test_final_not_unit_wise_with_a_zero_state_pair(cls: type[AbstractCell]) -> None:
    assert getattr(cls, "__final__", False) and not inspect.isabstract(cls)
    assert issubclass(cls, AbstractCell) and cls.unit_wise is False
    cell = cls(I, H)
    y, z = cell.init_state(B, dtype=F64)
    assert y.shape == z.shape == (B, H) and y.dtype == F64
    assert not y.any() and not z.any() and y.data_ptr() != z.data_ptr()
    assert cell.recurrent_matrix is cell.weight_hh


def test_lem_parameters_and_initialisation() -> None:
    cell = LEMCell(I, 64)
    shapes = {name: tuple(p.shape) for name, p in cell.named_parameters()}
    assert shapes == {
        "weight_ih": (4 * 64, I), "weight_hh": (3 * 64, 64), "bias_ih": (4 * 64,),
        "bias_hh": (3 * 64,), "weight_zh": (64, 64), "bias_zh": (64,),
    }  # fmt: skip
    bound = 1 / math.sqrt(64)
    for name, parameter in cell.named_parameters():  # every one U(-1/sqrt(H), 1/sqrt(H))
        assert parameter.abs().max() <= bound and parameter.abs().max() > 0.9 * bound, name
    assert cell.dt == LEM_DT
    assert {n for n, _ in LEMCell(I, H, bias=False).named_parameters()} == {"weight_ih", "weight_hh", "weight_zh"}


def test_cornn_parameters_and_initialisation() -> None:
    cell = CoRNNCell(I, 64)
    shapes = {name: tuple(p.shape) for name, p in cell.named_parameters()}
    assert shapes == {
        "weight_ih": (64, I), "weight_hh": (64, 64), "bias_ih": (64,), "bias_hh": (64,), "weight_zh": (64, 64),
    }  # fmt: skip
    bound = 1 / math.sqrt(I + 2 * 64)  # one nn.Linear of I + 2H inputs in the authors' code
    for name, parameter in cell.named_parameters():
        if name == "bias_hh":
            assert not parameter.any()
        else:
            assert parameter.abs().max() <= bound and parameter.abs().max() > 0.9 * bound, name
    assert (cell.dt, cell.gamma, cell.epsilon) == (CORNN_DT, CORNN_GAMMA, CORNN_EPSILON)
    assert {n for n, _ in CoRNNCell(I, H, bias=False).named_parameters()} == {"weight_ih", "weight_hh", "weight_zh"}


BAD_OPTIONS = [
    (LEMCell, {"dt": 0.0}, "dt .* in \\(0, 1\\], received 0.0"),
    (LEMCell, {"dt": -0.1}, "dt"),
    (LEMCell, {"dt": 1.5}, "dt .* in \\(0, 1\\], received 1.5"),
    (LEMCell, {"dt": math.nan}, "finite"),
    (LEMCell, {"dt": "0.1"}, "received '0.1'"),
    (CoRNNCell, {"dt": 0}, "dt .* > 0, received 0"),
    (CoRNNCell, {"dt": math.inf}, "finite"),
    (CoRNNCell, {"gamma": -1.0}, "gamma .* >= 0, received -1.0"),
    (CoRNNCell, {"gamma": math.inf}, "gamma"),
    (CoRNNCell, {"epsilon": -0.5}, "epsilon .* >= 0, received -0.5"),
    (CoRNNCell, {"epsilon": math.nan}, "epsilon"),
    (CoRNNCell, {"epsilon": True}, "received True"),
]


@pytest.mark.parametrize("cls, options, match", BAD_OPTIONS)
def test_bad_options_say_expected_received_and_fix(cls: type[AbstractCell], options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match) as error:
        cls(I, H, **options)
    assert "expected" in str(error.value) and "pass e.g." in str(error.value)


def test_good_options_are_kept_and_shown() -> None:
    assert LEMCell(I, H, dt=1).dt == 1.0
    cell = CoRNNCell(I, H, dt=0.042, gamma=0, epsilon=4.7)
    assert (cell.dt, cell.gamma, cell.epsilon) == (0.042, 0.0, 4.7)
    assert "gamma=0" in repr(cell) and "dt=0.042" in repr(cell) and "dt=0.0242" in repr(LEMCell(I, H))
