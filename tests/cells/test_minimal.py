"""minGRU, minLSTM and bptt.scan.linear_scan: the paper's equations, the scan against the step
loop in float64, float32 accuracy against the length, and what the diagnostics see."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch.autograd.functional import jacobian

import bptt.cells.minimal as minimal
from bptt import Recurrent, diagnose
from bptt.cells import AbstractCell
from bptt.cells.minimal import MinGRUCell, MinLSTMCell, positive_g
from bptt.diagnostics.jacobian import CellSteps, cell_steps
from bptt.scan import _chunked_scan, linear_scan
from bptt.weights import recurrent_layers, recurrent_weights

pytestmark = [
    pytest.mark.filterwarnings("error"),
    # torch.func's first use in a process scripts some decompositions (the diagnostics' jvp)
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning"),
]

T, B, I, H = 6, 3, 4, 5
LENGTHS = [6, 1, 4]
CELLS = {"mingru": MinGRUCell, "minlstm": MinLSTMCell}


def loop(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """The recurrence h_t = a_t h_(t-1) + b_t, step by step."""
    states, h = [], h0
    for a_t, b_t in zip(a.unbind(0), b.unbind(0), strict=True):
        h = a_t * h + b_t
        states.append(h)
    return torch.stack(states)


def paper_g(x: Tensor) -> Tensor:
    return torch.where(x >= 0, x + 0.5, 1 / (1 + torch.exp(-x)))


def paper_step(name: str, cell: AbstractCell, x: Tensor, h: Tensor) -> Tensor:
    """Feng et al.'s equations, written out from the stacked weight blocks."""
    blocks = [
        x @ w.T + b
        for w, b in zip(cell.weight_ih.chunk(cell.num_gates), cell.bias_ih.chunk(cell.num_gates), strict=True)
    ]
    if name == "mingru":
        z = 1 / (1 + torch.exp(-blocks[0]))
        return (1 - z) * h + z * paper_g(blocks[1])
    f, i = (1 / (1 + torch.exp(-block)) for block in blocks[:2])
    return f / (f + i) * h + i / (f + i) * paper_g(blocks[2])


def stack(name: str, layers: int = 1, bias: bool = True) -> Recurrent:
    torch.manual_seed(0)
    cells = [CELLS[name](I if layer == 0 else H, H, bias=bias) for layer in range(layers)]
    return Recurrent(cells).double()


# -- the scan ----------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 2, 7, 16, 17])
@pytest.mark.parametrize("chunk", [None, 1, 3, 16, 40])
def test_linear_scan_equals_the_loop(steps: int, chunk: int | None) -> None:
    gen = torch.Generator().manual_seed(steps)
    a, b = (torch.randn(steps, B, H, generator=gen, dtype=torch.float64) for _ in range(2))
    a[0, 0, 0] = 0.0  # zero and negative decays are allowed
    h0 = torch.randn(B, H, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(linear_scan(a, b, h0, chunk=chunk), loop(a, b, h0), rtol=0, atol=1e-12)


@pytest.mark.parametrize("steps", [1, 7, 16])
@pytest.mark.parametrize("chunk", [1, 3, 16, 40])
def test_reverse_scan_equals_the_reversed_loop(steps: int, chunk: int) -> None:
    """The backward pass's scan, h_t = a_t h_(t+1) + b_t from h_T = h0."""
    gen = torch.Generator().manual_seed(steps)
    a, b = (torch.randn(steps, B, H, generator=gen, dtype=torch.float64) for _ in range(2))
    h0 = torch.randn(B, H, generator=gen, dtype=torch.float64)
    expected = loop(a.flip(0), b.flip(0), h0).flip(0)
    torch.testing.assert_close(_chunked_scan(a, b, h0, chunk, reverse=True), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("chunk", [None, 2, 5])
def test_linear_scan_gradients(chunk: int | None) -> None:
    gen = torch.Generator().manual_seed(1)
    args = tuple(
        torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_()
        for shape in ((7, 2, 3), (7, 2, 3), (2, 3))
    )
    assert torch.autograd.gradcheck(lambda *x: linear_scan(*x, chunk=chunk), args)
    assert torch.autograd.gradgradcheck(lambda *x: linear_scan(*x, chunk=chunk), args)
    weights = torch.randn(7, 2, 3, generator=gen, dtype=torch.float64)
    fast = torch.autograd.grad((linear_scan(*args, chunk=chunk) * weights).sum(), args)
    slow = torch.autograd.grad((loop(*args) * weights).sum(), args)
    for got, want in zip(fast, slow, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("steps", [1000, 5000])
def test_linear_scan_float32_error_against_length(steps: int) -> None:
    """minGRU-like coefficients; the error against a float64 loop is reported (-s) and stays at
    the step loop's own float32 error (no logarithms or divisions that grow with T)."""
    gen = torch.Generator().manual_seed(0)
    z = torch.sigmoid(2 * torch.randn(steps, 4, 16, generator=gen, dtype=torch.float64))
    a, b = 1 - z, z * positive_g(torch.randn(steps, 4, 16, generator=gen, dtype=torch.float64))
    h0 = torch.randn(4, 16, generator=gen, dtype=torch.float64)
    exact = loop(a, b, h0)
    scan_error = (linear_scan(a.float(), b.float(), h0.float()).double() - exact).abs().max().item()
    loop_error = (loop(a.float(), b.float(), h0.float()).double() - exact).abs().max().item()
    print(f"T={steps}: float32 max |error| scan {scan_error:.2e}, step loop {loop_error:.2e}")
    assert scan_error < 10 * max(loop_error, 1e-7)


@pytest.mark.parametrize(
    ("a", "b", "h0", "chunk", "match"),
    [
        ((5, 2, 3), (5, 2, 3), (2, 4), None, "h0 of shape"),
        ((5, 2, 3), (5, 3, 3), (2, 3), None, "b of a's shape"),
        ((5, 6), (5, 6), (6,), None, r"shape \(T, B, H\)"),
        ((0, 2, 3), (0, 2, 3), (2, 3), None, "T >= 1"),
        ((5, 2, 3), (5, 2, 3), (2, 3), 0, "chunk to be a positive integer"),
    ],
)
def test_linear_scan_refuses_bad_shapes(a: tuple, b: tuple, h0: tuple, chunk: int | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        linear_scan(torch.randn(a), torch.randn(b), torch.randn(h0), chunk=chunk)


def test_linear_scan_refuses_mixed_or_integer_dtypes() -> None:
    a = torch.randn(5, 2, 3)
    with pytest.raises(ValueError, match="one dtype"):
        linear_scan(a, a.double(), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="a to be a floating-point tensor, received a torch.int64"):
        linear_scan(a.long(), a, torch.zeros(2, 3))


# -- the cells ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", CELLS)
def test_step_is_the_papers_equations(name: str) -> None:
    cell = stack(name).cells[0]
    gen = torch.Generator().manual_seed(2)
    x = 3 * torch.randn(B, I, generator=gen, dtype=torch.float64)  # both branches of g
    h = torch.randn(B, H, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(cell.step(x, h), paper_step(name, cell, x, h), rtol=0, atol=1e-14)
    gates = cell.gates(x, h)
    assert set(cell.gate_activations) < set(gates) and "candidate" in gates
    assert all(value.shape == (B, H) for value in gates.values())


def test_positive_g() -> None:
    x = torch.tensor([-30.0, -1.0, 0.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(positive_g(x), paper_g(x))
    assert float(positive_g(torch.tensor(0.0))) == 0.5 and bool((positive_g(x) > 0).all())


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("lengths", [None, LENGTHS])
@pytest.mark.parametrize(("layers", "bias"), [(1, True), (2, True), (1, False)])
def test_scan_path_equals_the_step_loop(
    name: str, lengths: list[int] | None, layers: int, bias: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outputs, final state and every gradient, scan against the unrolled loop, float64."""
    model = stack(name, layers, bias)
    gen = torch.Generator().manual_seed(3)
    x = (2 * torch.randn(T, B, I, generator=gen, dtype=torch.float64)).requires_grad_()
    h0 = torch.randn(layers, B, H, generator=gen, dtype=torch.float64).requires_grad_()
    weights = torch.randn(T, B, H, generator=gen, dtype=torch.float64)
    length_tensor = None if lengths is None else torch.tensor(lengths)
    scans = []
    monkeypatch.setattr(minimal, "linear_scan", lambda *args: scans.append(1) or linear_scan(*args))

    def run() -> tuple[Tensor, ...]:
        output, final = model(x, h0, lengths=length_tensor)
        loss = (output * weights).sum() + final.square().sum()
        return output, final, *torch.autograd.grad(loss, [x, h0, *model.parameters()])

    fast = run()
    assert len(scans) == layers
    handle = model.register_step_hook(lambda layer, t, state: None)
    slow = run()
    handle.remove()
    assert len(scans) == layers
    for got, want in zip(fast, slow, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    if lengths is not None:
        assert bool((fast[0][1:, 1] == 0).all())  # padded steps output zero


@pytest.mark.parametrize("name", CELLS)
def test_a_recorded_profile_runs_the_loop(name: str) -> None:
    model = stack(name)
    x = torch.randn(T, B, I, dtype=torch.float64)
    assert model.cells[0].explicit_bptt(x, torch.zeros(B, H, dtype=torch.float64), None, lambda norms: None) is None
    with model.recording_profile() as profile:
        output, _ = model(x)
        output[-1].sum().backward()
    norms = profile.norms()
    assert norms.shape == (T,) and bool((norms > 0).all())


# -- what the diagnostics see ------------------------------------------------------------


@pytest.mark.parametrize("name", CELLS)
def test_no_trained_recurrent_weight(name: str) -> None:
    cell = stack(name).cells[0]
    assert [n for n, _ in cell.named_parameters()] == ["weight_ih", "bias_ih"]
    assert list(cell.state_dict()) == ["weight_ih", "bias_ih"]
    assert cell.bias_hh is None and not cell.weight_hh.requires_grad
    assert cell.recurrent_matrix.shape == (cell.num_gates * H, H) and bool((cell.recurrent_matrix == 0).all())
    assert cell.recurrent_matrix.dtype == torch.float64  # follows .double()
    assert recurrent_layers(cell) == [] and recurrent_weights(cell) == []
    assert cell.init_state(2).dtype == torch.float64


@pytest.mark.parametrize("name", CELLS)
def test_factored_jacobian_is_exact(name: str) -> None:
    """J = A W_hh + C of the diagnostics equals the step's Jacobian, and is diag(a_t)."""
    cell = stack(name).cells[0]
    gen = torch.Generator().manual_seed(4)
    inputs = torch.randn(2, B, I, generator=gen, dtype=torch.float64)
    states = torch.randn(2, B, H, generator=gen, dtype=torch.float64)
    steps = cell_steps(cell, inputs, states)
    assert isinstance(steps, CellSteps)
    forward, _ = steps.maps((1, 0))
    eye = torch.eye(H, dtype=torch.float64)
    factored = forward(eye).T  # columns J e_j
    exact = jacobian(lambda h: cell.step(inputs[1, 0], h), states[1, 0])
    torch.testing.assert_close(factored, exact, rtol=0, atol=1e-14)
    torch.testing.assert_close(exact, torch.diag(exact.diagonal()), rtol=0, atol=0)


@pytest.mark.parametrize("name", CELLS)
def test_diagnose_runs(name: str) -> None:
    model = stack(name, layers=2)
    x = torch.randn(T, B, I, dtype=torch.float64)
    diagnosis = diagnose(
        model, x, torch.randn(T, B, H, dtype=torch.float64), lambda out, y: (out[0] - y).square().mean()
    )
    assert len(diagnosis.layers) == 2 and diagnosis.layers[0].recurrent_norm == 0.0
    assert set(diagnosis.layers[0].gates) == set(model.cells[0].gate_activations)


@pytest.mark.parametrize("name", CELLS)
def test_bad_sizes_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
        CELLS[name](3, 0)
