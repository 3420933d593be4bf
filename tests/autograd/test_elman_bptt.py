"""elman_bptt against plain autograd, torch.nn.RNN and the scalar closed form, in float64."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from bptt.autograd import elman as elman_module
from bptt.autograd import elman_bptt

pytestmark = pytest.mark.filterwarnings("error")  # elman_bptt must not warn (e.g. resized outputs)

T, B, I, H = 5, 3, 3, 4
NONLINEARITIES = ("tanh", "relu", "sigmoid")
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
}


def make_args(
    steps: int = T, batch: int = B, hidden: int = H, inputs: int = I, bias: bool = True
) -> tuple[Tensor, ...]:
    """(inputs, h0, weight_ih, weight_hh, bias_ih, bias_hh), float64 leaves requiring grad."""
    gen = torch.Generator().manual_seed(0)

    def leaf(*shape: int, scale: float = 1.0) -> Tensor:
        return (scale * torch.randn(*shape, generator=gen, dtype=torch.float64)).requires_grad_()

    scale = 1.2 / hidden**0.5
    biases = (leaf(hidden, scale=0.3), leaf(hidden, scale=0.3)) if bias else (None, None)
    return (
        leaf(steps, batch, inputs),
        leaf(batch, hidden, scale=0.5),
        leaf(hidden, inputs, scale=scale),
        leaf(hidden, hidden, scale=scale),
        *biases,
    )


def random_mask(steps: int = T, batch: int = B) -> Tensor:
    """A mask with holes anywhere, including a leading invalid step (h0 is carried through)."""
    gen = torch.Generator().manual_seed(1)
    mask = torch.rand(steps, batch, generator=gen) > 0.4
    mask[0, 0] = False
    return mask


def length_mask(lengths: list[int], steps: int = T) -> Tensor:
    return torch.arange(steps)[:, None] < torch.tensor(lengths)[None, :]


def unrolled(
    x: Tensor,
    h0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    nonlinearity: str = "tanh",
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Plain autograd reference: (output, h_n, states), each state retaining its gradient."""
    f = ACTIVATIONS[nonlinearity]
    h, outputs, states = h0, [], []
    for t in range(x.shape[0]):
        z = x[t] @ w_ih.T + h @ w_hh.T
        z = z + (b_ih if b_ih is not None else 0) + (b_hh if b_hh is not None else 0)
        new = f(z)
        if mask is not None:
            valid = mask[t].unsqueeze(-1)
            new = torch.where(valid, new, h)
        new.retain_grad()
        states.append(new)
        outputs.append(new if mask is None else torch.where(valid, new, 0.0))
        h = new
    return torch.stack(outputs), h, states


def loss_weights(steps: int, batch: int, hidden: int) -> tuple[Tensor, Tensor]:
    """Fixed random weights for the outputs ``(T, B, H)`` and for ``h_n`` ``(B, H)``."""
    gen = torch.Generator().manual_seed(2)
    return (
        torch.randn(steps, batch, hidden, generator=gen, dtype=torch.float64),
        torch.randn(batch, hidden, generator=gen, dtype=torch.float64),
    )


def many_to_many(out: Tensor, h_n: Tensor) -> Tensor:
    on_out, on_h_n = loss_weights(*out.shape)
    return (on_out * out).sum() + (on_h_n * h_n).sum()


def outputs_only(out: Tensor, h_n: Tensor) -> Tensor:
    return (loss_weights(*out.shape)[0] * out).square().sum()


def h_n_only(out: Tensor, h_n: Tensor) -> Tensor:
    return (loss_weights(*out.shape)[1] * h_n).sum()


def last_output(out: Tensor, h_n: Tensor) -> Tensor:
    return (loss_weights(*out.shape)[1] * out[-1]).square().sum()


LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "many-to-many": many_to_many,
    "outputs-only": outputs_only,
    "h_n-only": h_n_only,
    "last-output": last_output,
}


def grads(loss: Tensor, args: tuple[Tensor | None, ...]) -> list[Tensor]:
    leaves = [a for a in args if a is not None]
    return list(torch.autograd.grad(loss, leaves))


def assert_all_close(actual: list[Tensor], expected: list[Tensor], atol: float = 1e-10) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, atol=atol, rtol=0)


ALL_CASES = list(itertools.product(NONLINEARITIES, (False, True), (False, True)))

# -- gradcheck ------------------------------------------------------------------------


@pytest.mark.parametrize("nonlinearity, masked, bias", ALL_CASES)
def test_gradcheck(nonlinearity: str, masked: bool, bias: bool) -> None:
    args = make_args(bias=bias)
    mask = random_mask() if masked else None
    leaves = tuple(a for a in args if a is not None)

    def run(x: Tensor, h0: Tensor, *weights: Tensor) -> tuple[Tensor, Tensor]:
        w_ih, w_hh, b_ih, b_hh = weights if bias else (*weights, None, None)
        return elman_bptt(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity, mask=mask)

    assert torch.autograd.gradcheck(run, leaves)


@pytest.mark.parametrize("steps, batch", [(1, 3), (4, 1), (1, 1)])
def test_gradcheck_degenerate_sizes(steps: int, batch: int) -> None:
    args = make_args(steps=steps, batch=batch)
    mask = torch.ones(steps, batch, dtype=torch.bool)
    mask[-1, 0] = False
    assert torch.autograd.gradcheck(lambda *a: elman_bptt(*a, "tanh", mask=mask), args)
    assert torch.autograd.gradcheck(lambda *a: elman_bptt(*a, "tanh"), args)


# -- against plain autograd and torch.nn.RNN ------------------------------------------


@pytest.mark.parametrize("nonlinearity, masked, bias", ALL_CASES)
def test_matches_unrolled_loop(nonlinearity: str, masked: bool, bias: bool) -> None:
    args = make_args(bias=bias)
    mask = random_mask() if masked else None
    out, h_n = elman_bptt(*args, nonlinearity, mask=mask)
    ref_out, ref_h_n, _ = unrolled(*args, nonlinearity, mask=mask)
    assert_all_close([out, h_n], [ref_out, ref_h_n])
    expected = grads(many_to_many(ref_out, ref_h_n), args)
    assert_all_close(grads(many_to_many(out, h_n), args), expected)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_matches_torch_rnn(nonlinearity: str) -> None:
    args = make_args()
    x, h0 = args[:2]
    rnn = nn.RNN(I, H, nonlinearity=nonlinearity, dtype=torch.float64)
    torch_params = [rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0]
    with torch.no_grad():
        for param, value in zip(torch_params, args[2:], strict=True):
            param.copy_(value)
    out, h_n = elman_bptt(*args, nonlinearity)
    ref_out, ref_h_n = rnn(x, h0.unsqueeze(0))
    assert_all_close([out, h_n], [ref_out, ref_h_n[0]])

    expected = torch.autograd.grad(many_to_many(ref_out, ref_h_n[0]), [x, h0, *torch_params])
    assert_all_close(grads(many_to_many(out, h_n), args), list(expected))


def test_gradients_only_for_what_requires_them() -> None:
    args = make_args()
    x, h0 = args[0].detach(), args[1].detach()
    out, h_n = elman_bptt(x, h0, *args[2:])
    ref_out, ref_h_n, _ = unrolled(x, h0, *args[2:])
    params = args[2:]
    assert_all_close(
        grads(many_to_many(out, h_n), params), grads(many_to_many(ref_out, ref_h_n), params)
    )


def test_broadcast_upstream_gradients() -> None:
    """``sum()`` hands backward stride-0 (expanded) gradients; they must be read correctly."""
    args = make_args()
    mask = random_mask()
    out, h_n = elman_bptt(*args, mask=mask)
    ref_out, ref_h_n, _ = unrolled(*args, mask=mask)
    assert_all_close(
        grads(out.sum() + h_n.sum(), args), grads(ref_out.sum() + ref_h_n.sum(), args)
    )


def test_bias_gradients_are_independent_tensors() -> None:
    """Both biases get the same gradient value, never the same storage."""
    args = make_args()
    out, h_n = elman_bptt(*args)
    many_to_many(out, h_n).backward()
    b_ih, b_hh = args[4], args[5]
    torch.testing.assert_close(b_ih.grad, b_hh.grad, atol=0, rtol=0)
    b_ih.grad.zero_()
    assert b_hh.grad.abs().sum() > 0


# -- the gradient profile -------------------------------------------------------------


def recorded_profile(args: tuple[Tensor | None, ...], loss_name: str, **kwargs: object) -> Tensor:
    recorded: list[Tensor] = []
    out, h_n = elman_bptt(*args, **kwargs, on_profile=recorded.append)
    LOSSES[loss_name](out, h_n).backward()
    assert len(recorded) == 1, "on_profile must be called exactly once per backward"
    return recorded[0]


def reference_profile(args: tuple[Tensor | None, ...], loss_name: str, **kwargs: object) -> Tensor:
    out, h_n, states = unrolled(*args, **kwargs)
    LOSSES[loss_name](out, h_n).backward()
    return torch.stack([h.grad.norm(dim=-1) for h in states])


@pytest.mark.parametrize(
    "loss_name, nonlinearity, masked",
    list(itertools.product(LOSSES, NONLINEARITIES, (False, True))),
)
def test_profile_equals_autograd_total_derivative(
    loss_name: str, nonlinearity: str, masked: bool
) -> None:
    args = make_args(steps=8)
    kwargs = {"nonlinearity": nonlinearity, "mask": random_mask(steps=8) if masked else None}
    profile = recorded_profile(args, loss_name, **kwargs)
    assert profile.shape == (8, B)
    assert not profile.requires_grad
    expected = reference_profile(args, loss_name, **kwargs)
    torch.testing.assert_close(profile, expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("chunk, masked", list(itertools.product((1, 3, 8, 32), (False, True))))
def test_profile_when_the_delta_ring_wraps(
    monkeypatch: pytest.MonkeyPatch, chunk: int, masked: bool
) -> None:
    """Backward keeps ``PROFILE_CHUNK`` deltas at a time; every chunk boundary must be exact."""
    monkeypatch.setattr(elman_module, "PROFILE_CHUNK", chunk)
    steps = 8 if chunk < 32 else 75  # 8 = 3 + 3 + 2 = 8 * 1; 75 = 32 + 32 + 11
    args = make_args(steps=steps)
    mask = random_mask(steps=steps) if masked else None
    recorded: list[Tensor] = []
    out, h_n = elman_bptt(*args, mask=mask, on_profile=recorded.append)
    actual = grads(many_to_many(out, h_n), args)
    ref_out, ref_h_n, states = unrolled(*args, mask=mask)
    expected = grads(many_to_many(ref_out, ref_h_n), (*args, *states))
    assert_all_close(actual, expected[: len(actual)])
    reference = torch.stack([g.norm(dim=-1) for g in expected[len(actual) :]])
    torch.testing.assert_close(recorded[0], reference, atol=1e-10, rtol=0)


def test_profile_includes_the_path_through_h_n() -> None:
    """With a loss on h_n only, the last step's profile is ||dL/dh_n||, not zero."""
    args = make_args()
    profile = recorded_profile(args, "h_n-only")
    expected = loss_weights(T, B, H)[1].norm(dim=-1)
    torch.testing.assert_close(profile[-1], expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
def test_profile_scalar_case_matches_closed_form(nonlinearity: str) -> None:
    """H = 1, L = h_T: ||dL/dh_k|| = |w|^(T-k) * prod_{i=k+1..T} |f'(z_i)|."""
    steps = 12
    x, h0, w_ih, w_hh, b_ih, b_hh = make_args(steps=steps, batch=2, hidden=1, inputs=2)
    recorded: list[Tensor] = []
    out, h_n = elman_bptt(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity, on_profile=recorded.append)
    h_n.sum().backward()

    with torch.no_grad():
        z = x @ w_ih.T + b_ih + b_hh + torch.cat([h0[None], out[:-1]]) @ w_hh.T
    z.requires_grad_()
    (slope,) = torch.autograd.grad(ACTIVATIONS[nonlinearity](z).sum(), z)  # f'(z_i)
    factors = (w_hh.detach().abs() * slope.abs())[..., 0]  # |w f'(z_i)|, shape (T, B)
    products = factors[1:].flip(0).cumprod(0).flip(0)  # row k: prod over i = k+1..T
    expected = torch.cat([products, torch.ones(1, 2, dtype=torch.float64)])
    torch.testing.assert_close(recorded[0], expected, atol=1e-12, rtol=1e-10)


# -- masks ------------------------------------------------------------------------------


@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
def test_padding_changes_nothing(nonlinearity: str) -> None:
    """A padded batch gives each sample the outputs and gradients it gets alone."""
    lengths = [5, 2, 3]
    args = make_args()
    x = args[0].detach().clone()
    x[length_mask(lengths).logical_not()] = 1e3  # garbage in the padding must not matter
    x.requires_grad_()
    params = args[2:]
    out, h_n = elman_bptt(x, args[1], *params, nonlinearity, mask=length_mask(lengths))
    target, target_n = loss_weights(T, B, H)
    loss = (target * out).sum() + (target_n * h_n).sum()
    grad_x, grad_h0, *grad_params = torch.autograd.grad(loss, [x, args[1], *params])

    expected_params = [torch.zeros_like(p) for p in params]
    for b, length in enumerate(lengths):
        alone = (x[:length, b : b + 1], args[1][b : b + 1], *params)
        alone_out, alone_n = elman_bptt(*alone, nonlinearity)
        torch.testing.assert_close(out[:length, b], alone_out[:, 0], atol=1e-10, rtol=0)
        assert torch.equal(out[length:, b], torch.zeros_like(out[length:, b]))
        torch.testing.assert_close(h_n[b], alone_n[0], atol=1e-10, rtol=0)

        alone_loss = (target[:length, b] * alone_out[:, 0]).sum() + (target_n[b] * alone_n[0]).sum()
        alone_x, alone_h0, *alone_params = torch.autograd.grad(alone_loss, [x, args[1], *params])
        torch.testing.assert_close(grad_x[:, b], alone_x[:, b], atol=1e-10, rtol=0)
        assert torch.equal(grad_x[length:, b], torch.zeros_like(grad_x[length:, b]))
        torch.testing.assert_close(grad_h0[b], alone_h0[b], atol=1e-10, rtol=0)
        expected_params = [e + a for e, a in zip(expected_params, alone_params, strict=True)]
    assert_all_close(grad_params, expected_params)


def test_all_true_mask_equals_no_mask() -> None:
    args = make_args()
    full = elman_bptt(*args, mask=torch.ones(T, B, dtype=torch.bool))
    plain = elman_bptt(*args)
    assert_all_close(list(full), list(plain), atol=0)
    assert_all_close(grads(many_to_many(*full), args), grads(many_to_many(*plain), args))


def test_padded_steps_carry_state_and_output_zero() -> None:
    """Valid steps 0 and 3 of 5: h_n is the state after running just those two steps."""
    mask = torch.tensor([[True], [False], [False], [True], [False]])
    x, *rest = make_args(batch=1)
    out, h_n = elman_bptt(x, *rest, mask=mask)
    assert torch.equal(out[[1, 2, 4]], torch.zeros(3, 1, H, dtype=torch.float64))
    valid_out, valid_h_n = elman_bptt(x[[0, 3]], *rest)
    torch.testing.assert_close(out[[0, 3]], valid_out, atol=1e-12, rtol=0)
    torch.testing.assert_close(h_n, valid_h_n, atol=1e-12, rtol=0)


# -- argument errors --------------------------------------------------------------------


def _replace(index: int, value: object) -> tuple[object, ...]:
    args: list[object] = list(make_args())
    args[index] = value
    return tuple(args)


def _f64(*shape: int) -> Tensor:
    return torch.randn(*shape, dtype=torch.float64)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        pytest.param(
            _replace(0, _f64(T, I)), {},
            r"inputs of shape \(T, B, I\).*got shape \(5, 3\).*unsqueeze",
            id="inputs-rank",
        ),
        pytest.param(_replace(0, _f64(0, B, I)), {}, r"T >= 1", id="no-steps"),
        pytest.param(
            _replace(1, _f64(1, B, H)), {}, r"h0 of shape \(3, 4\), got \(1, 3, 4\).*h0\[0\]",
            id="h0-shape",
        ),
        pytest.param(
            _replace(2, _f64(H, I + 1)), {}, r"weight_ih of shape \(4, 3\), got \(4, 4\)",
            id="weight-ih-shape",
        ),
        pytest.param(
            _replace(3, _f64(H, H + 1)), {}, r"weight_hh of shape \(H, H\).*got \(4, 5\)",
            id="weight-hh-not-square",
        ),
        pytest.param(
            _replace(4, _f64(H + 1)), {}, r"bias_ih of shape \(4,\), got \(5,\)", id="bias-shape"
        ),
        pytest.param(
            _replace(5, torch.randn(H)), {},
            r"bias_hh with dtype torch.float64.*got torch.float32.*\.to\(",
            id="dtype",
        ),
        pytest.param(
            make_args(), {"nonlinearity": "tahn"},
            r"unknown nonlinearity 'tahn'.*Did you mean 'tanh'",
            id="nonlinearity",
        ),
        pytest.param(
            make_args(), {"mask": torch.ones(B, T, dtype=torch.bool)},
            r"mask of shape \(T, B\) = \(5, 3\), got \(3, 5\).*transpose",
            id="mask-shape",
        ),
        pytest.param(
            make_args(), {"mask": torch.ones(T, B)}, r"mask of dtype torch.bool.*got torch.float32",
            id="mask-dtype",
        ),
    ],
)
def test_bad_arguments_raise_helpful_errors(
    args: tuple[object, ...], kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        elman_bptt(*args, **kwargs)
