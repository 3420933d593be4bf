"""Jacobian diagnostics against explicit Jacobians from jacrev and against closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from bptt.diagnostics.jacobian import (
    explicit_jacobians,
    lyapunov_exponents,
    product_spectral_norms,
    step_spectral_norms,
)

T, B, N_IN, H = 7, 3, 2, 3  # steps, samples, input size, hidden size of the LSTM (S = 2H)
F64 = torch.float64


def elman(size: int, gain: float = 1.5, seed: int = 0):
    """z = W s + U x + b, s' = tanh(z), with random weights."""
    g = torch.Generator().manual_seed(seed)
    w = gain * torch.randn(size, size, generator=g, dtype=F64) / math.sqrt(size)
    u = torch.randn(size, N_IN, generator=g, dtype=F64)
    b = 0.1 * torch.randn(size, generator=g, dtype=F64)
    return lambda x, s: torch.tanh(s @ w.T + x @ u.T + b)


def lstm(seed: int = 0):
    """An LSTM step on the flat state s = (h, c) of size 2H."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(4 * H, N_IN + H, generator=g, dtype=F64)
    b = torch.randn(4 * H, generator=g, dtype=F64)

    def step(x: Tensor, s: Tensor) -> Tensor:
        h, c = s[:, :H], s[:, H:]
        i, f, g, o = (torch.cat([x, h], dim=1) @ w.T + b).chunk(4, dim=1)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        return torch.cat([o.sigmoid() * c.tanh(), c], dim=1)

    return step, 2 * H


def trajectory(step, inputs: Tensor, size: int) -> Tensor:
    """The state before every step, starting from a random state."""
    s = torch.randn(inputs.shape[1], size, generator=torch.Generator().manual_seed(1), dtype=F64)
    states = []
    for x in inputs:
        states.append(s)
        s = step(x, s)
    return torch.stack(states)


def inputs_of(steps: int = T, dtype: torch.dtype = F64) -> Tensor:
    return torch.randn(steps, B, N_IN, generator=torch.Generator().manual_seed(2), dtype=dtype)


def padded_mask() -> Tensor:
    """Sample 1 starts late (left padding), sample 2 has a gap in the middle."""
    mask = torch.ones(T, B, dtype=torch.bool)
    mask[:2, 1] = False
    mask[4, 2] = False
    return mask


def cases():
    step, size = lstm()
    return [pytest.param(elman(5), 5, id="elman"), pytest.param(step, size, id="lstm")]


def explicit_product_norms(jacobians: Tensor, spans: list[int], mask: Tensor) -> Tensor:
    """sigma_max(J_T ... J_{T-d+1}) with the identity at padding steps, from explicit matrices."""
    eye = torch.eye(jacobians.shape[-1], dtype=jacobians.dtype)
    jacobians = torch.where(mask[..., None, None], jacobians, eye)
    norms = []
    for d in spans:
        product = eye.expand_as(jacobians[0])
        for t in range(T - d, T):
            product = jacobians[t] @ product
        norms.append(torch.linalg.matrix_norm(product, 2))
    return torch.stack(norms)


@pytest.mark.parametrize(("step", "size"), cases())
def test_step_norms_match_explicit_jacobians(step, size):
    inputs = inputs_of()
    states = trajectory(step, inputs, size)
    expected = torch.linalg.matrix_norm(explicit_jacobians(step, inputs, states), 2)
    assert expected.shape == (T, B)
    norms = step_spectral_norms(step, inputs, states, iterations=3000)
    torch.testing.assert_close(norms, expected, rtol=1e-6, atol=0)
    mask = padded_mask()
    masked = step_spectral_norms(step, inputs, states, mask=mask, iterations=3000)
    assert masked.isnan().equal(~mask)
    torch.testing.assert_close(masked[mask], expected[mask], rtol=1e-6, atol=0)


@pytest.mark.parametrize(("step", "size"), cases())
def test_product_norms_match_explicit_products(step, size):
    inputs = inputs_of()
    states = trajectory(step, inputs, size)
    mask = padded_mask()
    jacobians = explicit_jacobians(step, inputs, states)
    spans = [3, 1, T, 5, 2]
    padded = states.masked_fill(~mask[..., None], torch.nan)  # padding must never leak
    norms = product_spectral_norms(step, inputs, padded, spans, mask=mask, iterations=3000)
    expected = explicit_product_norms(jacobians, spans, mask)
    torch.testing.assert_close(norms, expected, rtol=1e-6, atol=0)
    # the sample with padding differs from its unpadded products
    unpadded = explicit_product_norms(jacobians, spans, torch.ones_like(mask))
    assert not torch.allclose(expected[:, 1], unpadded[:, 1], rtol=1e-3)


@pytest.mark.parametrize("w", [0.9, -1.7])
def test_scalar_product_is_the_closed_form(w):
    """S = 1: ds_T/ds_(T-d) = prod over the last d steps of w f'(z_i), f = tanh."""
    steps, u = 12, 0.8

    def step(x: Tensor, s: Tensor) -> Tensor:
        return torch.tanh(w * s + u * x)

    inputs = inputs_of(steps)[..., :1]
    states = trajectory(step, inputs, 1)
    z = w * states + u * inputs  # (T, B, 1)
    derivative = (1 - z.tanh().square()).squeeze(-1)
    spans = list(range(1, steps + 1))
    expected = torch.stack([abs(w) ** d * derivative[-d:].prod(dim=0) for d in spans])
    norms = product_spectral_norms(step, inputs, states, spans, iterations=3)
    torch.testing.assert_close(norms, expected, rtol=1e-12, atol=0)


def linear(matrix: Tensor):
    """s -> A s + x (inputs of size S); its Jacobian is A at every step."""
    return lambda x, s: s @ matrix.T + x


def linear_trajectory(matrix: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    size = matrix.shape[0]
    inputs = torch.randn(steps, B, size, generator=torch.Generator().manual_seed(3), dtype=F64)
    return inputs, torch.zeros(steps, B, size, dtype=F64)  # the Jacobian ignores the state


def test_lyapunov_of_a_diagonal_map():
    """The exponents are log|a_i| up to c_i / T, where c_i depends only on the random Q_0."""
    a = torch.tensor([0.3, -1.2, 2.0, 0.7], dtype=F64)
    expected = a.abs().log().sort(descending=True).values
    offsets = []
    for steps in (100, 300):
        inputs, states = linear_trajectory(torch.diag(a), steps)
        exponents = lyapunov_exponents(linear(torch.diag(a)), inputs, states, k=3)
        assert exponents.shape == (B, 3)
        assert (exponents - expected[:3]).abs().max() < 5 / steps
        offsets.append(steps * (exponents - expected[:3]))
    # the error is exactly c_i / T: (a_(i+1) / a_i)^(2T) is below 1e-40 here
    torch.testing.assert_close(offsets[0], offsets[1], rtol=0, atol=1e-8)
    # with k = S, the sum of the exponents is the volume growth rate log|det A|, exactly
    inputs, states = linear_trajectory(torch.diag(a), 50)
    exponents = lyapunov_exponents(linear(torch.diag(a)), inputs, states, k=4)
    torch.testing.assert_close(exponents.sum(dim=1), expected.sum().expand(B), rtol=1e-12, atol=0)


def test_lyapunov_of_an_orthogonal_map_is_zero():
    q = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(4), dtype=F64)).Q
    inputs, states = linear_trajectory(q, 40)
    exponents = lyapunov_exponents(linear(q), inputs, states, k=6)
    torch.testing.assert_close(exponents, torch.zeros(B, 6, dtype=F64), rtol=0, atol=1e-8)


def test_lyapunov_of_a_symmetric_matrix():
    """For a constant symmetric M the exponents are (1/T) log sigma_i(M^T) = log |mu_i|.

    The singular values of M^T itself are too spread to compute in float64 for T = 400.
    """
    g = torch.Generator().manual_seed(5)
    m = torch.randn(8, 8, generator=g, dtype=F64)
    m = (m + m.T) / 4
    steps = 400
    inputs, states = linear_trajectory(m, steps)
    exponents = lyapunov_exponents(linear(m), inputs, states, k=5)
    eigen = torch.linalg.eigvalsh(m).abs().log().sort(descending=True).values
    torch.testing.assert_close(exponents, eigen[:5].expand(B, 5), rtol=0, atol=1e-2)


def test_lyapunov_skips_padding():
    a = torch.tensor([1.5, -0.4, 0.9], dtype=F64)
    inputs, states = linear_trajectory(torch.diag(a), 30)
    mask = torch.ones(30, B, dtype=torch.bool)
    mask[:10, 1] = False
    states[:10, 1] = torch.nan
    padded = lyapunov_exponents(linear(torch.diag(a)), inputs, states, k=2, mask=mask)
    # the same Q_0 acting on 20 real steps, so only c_i / T changes with the number of steps
    short = lyapunov_exponents(linear(torch.diag(a)), inputs[10:], states[10:], k=2)
    torch.testing.assert_close(padded[1], short[1], rtol=1e-12, atol=0)
    assert padded.isfinite().all()


def test_float32_matches_float64():
    """A long vanishing product stays accurate in float32 (regression: its squares underflowed)."""
    step64 = elman(4, gain=0.4)
    steps = 80
    inputs = inputs_of(steps)
    states = trajectory(step64, inputs, 4)
    spans = [1, 10, 40, 80]
    reference = product_spectral_norms(step64, inputs, states, spans, iterations=200)
    assert reference[-1].max() < 1e-30  # the squares underflow in float32

    def step32(x: Tensor, s: Tensor) -> Tensor:
        return step64(x.double(), s.double()).float()

    norms = product_spectral_norms(step32, inputs.float(), states.float(), spans, iterations=200)
    assert norms.dtype == torch.float32
    torch.testing.assert_close(norms.double(), reference, rtol=1e-3, atol=0)
    single = step_spectral_norms(step32, inputs.float(), states.float(), iterations=200)
    expected = step_spectral_norms(step64, inputs, states, iterations=200)
    torch.testing.assert_close(single.double(), expected, rtol=1e-4, atol=0)
    # a Jacobian whose entries are too small to be squared in float32
    tiny = step_spectral_norms(
        lambda x, s: 1e-25 * step32(x, s), inputs.float(), states.float(), iterations=200
    )
    torch.testing.assert_close(tiny.double(), 1e-25 * expected, rtol=1e-4, atol=0)


def test_results_are_detached_and_deterministic():
    w = torch.randn(4, 4, dtype=F64, requires_grad=True)

    def step(x: Tensor, s: Tensor) -> Tensor:
        return torch.tanh(s @ w.T + x.sum(dim=1, keepdim=True))

    inputs = inputs_of()
    states = torch.randn(T, B, 4, dtype=F64, requires_grad=True)
    first = step_spectral_norms(step, inputs, states, iterations=3)
    assert not first.requires_grad
    assert first.equal(step_spectral_norms(step, inputs, states, iterations=3))
    assert not product_spectral_norms(step, inputs, states, [2], iterations=3).requires_grad
    assert not lyapunov_exponents(step, inputs, states, 2).requires_grad


def test_errors_say_what_was_expected():
    step = elman(5)
    inputs = inputs_of()
    states = trajectory(step, inputs, 5)
    with pytest.raises(ValueError, match=r"inputs of shape \(T, B, I\), got shape \(7, 2\)"):
        step_spectral_norms(step, inputs[:, 0], states)
    with pytest.raises(ValueError, match=r"states of shape \(T, B, S\) = \(7, 3, S\)"):
        step_spectral_norms(step, inputs, states[1:])
    with pytest.raises(ValueError, match=r"bool mask of shape \(T, B\) = \(7, 3\)"):
        step_spectral_norms(step, inputs, states, mask=torch.ones(T, B))
    with pytest.raises(ValueError, match=r"bool mask of shape \(T, B\) = \(7, 3\)"):
        lyapunov_exponents(step, inputs, states, 2, mask=torch.ones(T, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="iterations >= 1, got 0"):
        product_spectral_norms(step, inputs, states, [1], iterations=0)
    for spans in ([0, 2], [T + 1], []):
        with pytest.raises(ValueError, match=r"spans in \[1, T\] = \[1, 7\]"):
            product_spectral_norms(step, inputs, states, spans)
    for k in (0, 6):
        with pytest.raises(ValueError, match=rf"k in \[1, S\] = \[1, 5\], got k={k}"):
            lyapunov_exponents(step, inputs, states, k)
    with pytest.raises(ValueError, match=r"same shape, got \(21, 5\) -> \(21, 4\)"):
        step_spectral_norms(lambda x, s: s[:, :4], inputs, states)


@pytest.mark.parametrize(
    "cell",
    ["rnn-tanh", "rnn-relu", "rnn-sigmoid", "gru", "lstm", "indrnn", "residual-rnn", "skip-rnn:3"],
)
def test_factored_cell_jacobians_equal_autograd(cell):
    """CellSteps' J v and J^T u (A W_hh + C form) equal the autograd maps of the cell's step."""
    from bptt.cells import flatten_state, make_cell, unflatten_state
    from bptt.diagnostics.jacobian import CellSteps, StepFunctionSteps

    torch.manual_seed(0)
    module = make_cell(cell, 3, 4).double()
    initial = module.init_state(1)
    parts = len(initial) if isinstance(initial, tuple) else 1
    inputs = torch.randn(5, 3, 3, dtype=torch.float64)
    states = torch.randn(5, 3, 4 * parts, dtype=torch.float64)

    def step(x, s):
        return flatten_state(module.step(x, unflatten_state(s, 4)))

    factored, reference = CellSteps(module, inputs, states), StepFunctionSteps(step, inputs, states)
    v = torch.randn(2, 3, 4 * parts, dtype=torch.float64)
    for t in range(5):
        for ours, theirs in zip(factored.maps(t), reference.maps(t), strict=True):
            torch.testing.assert_close(ours(v), theirs(v), rtol=1e-12, atol=1e-12)
    mask = torch.rand(5, 3) > 0.3
    for ours, theirs in zip(factored.maps(mask), reference.maps(mask), strict=True):
        w = torch.randn(int(mask.sum()), 4 * parts, dtype=torch.float64)
        torch.testing.assert_close(ours(w), theirs(w), rtol=1e-12, atol=1e-12)
