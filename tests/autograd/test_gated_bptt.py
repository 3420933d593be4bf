"""lstm_bptt and gru_bptt against torch.nn.LSTM / GRU, bptt.Recurrent's unrolled loop and a
plain autograd loop of torch's equations, in float64."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from bptt import Recurrent
from bptt.autograd.gated import gru_bptt, lstm_bptt
from bptt.cells import GRUCell, LSTMCell

pytestmark = pytest.mark.filterwarnings("error")  # no resized outputs, no deprecations

T, B, I, H = 5, 3, 3, 4
CELLS = ("lstm", "gru")
GATES = {"lstm": 4, "gru": 3}
LENGTHS = [5, 1, 3]  # variable lengths, one of them a single step
Args = tuple[Tensor | None, ...]


def make_args(
    cell: str, steps: int = T, batch: int = B, hidden: int = H, inputs: int = I, bias: bool = True
) -> Args:
    """(inputs, h0[, c0], weight_ih, weight_hh, bias_ih, bias_hh), float64 leaves requiring grad."""
    gen = torch.Generator().manual_seed(0)

    def leaf(*shape: int, scale: float = 1.0) -> Tensor:
        return (scale * torch.randn(*shape, generator=gen, dtype=torch.float64)).requires_grad_()

    rows, scale = GATES[cell] * hidden, 1.2 / hidden**0.5
    states = [leaf(batch, hidden, scale=0.5) for _ in range(2 if cell == "lstm" else 1)]
    biases = (leaf(rows, scale=0.3), leaf(rows, scale=0.3)) if bias else (None, None)
    return (
        leaf(steps, batch, inputs),
        *states,
        leaf(rows, inputs, scale=scale),
        leaf(rows, hidden, scale=scale),
        *biases,
    )


def explicit(
    cell: str, args: Args, mask: Tensor | None = None, on_profile: Callable | None = None
) -> tuple[Tensor, list[Tensor]]:
    """``(output, finals)`` of lstm_bptt / gru_bptt; finals is ``[h_n, c_n]`` or ``[h_n]``."""
    if cell == "lstm":
        output, (h_n, c_n) = lstm_bptt(*args, mask=mask, on_profile=on_profile)
        return output, [h_n, c_n]
    output, h_n = gru_bptt(*args, mask=mask, on_profile=on_profile)
    return output, [h_n]


def recurrent_unrolled(
    cell: str, args: Args, lengths: list[int] | None = None, profile: bool = False
) -> tuple[Tensor, list[Tensor], Tensor | None]:
    """``(output, finals, profile)`` of bptt.Recurrent's unrolled loop, run on ``args``."""
    x, *states = args[: 3 if cell == "lstm" else 2]
    weights = dict(zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), args[len(states) + 1 :], strict=True))
    if weights["bias_ih"] is None:
        cell_class = {"lstm": LSTMCell, "gru": GRUCell}[cell]
        model = Recurrent([cell_class(x.shape[-1], states[0].shape[-1], bias=False)])
        weights = {k: v for k, v in weights.items() if v is not None}
    else:
        model = Recurrent.from_name(cell, x.shape[-1], states[0].shape[-1])
    model.register_step_hook(lambda layer, t, state: None)  # forces the unrolled loop
    parameters = {f"cells.0.{name}": value for name, value in weights.items()}
    state = tuple(s.unsqueeze(0) for s in states) if cell == "lstm" else states[0].unsqueeze(0)
    length_tensor = None if lengths is None else torch.tensor(lengths)
    with model.recording_profile() as recorded:
        output, final = functional_call(model.double(), parameters, (x, state, length_tensor))
    finals = [f[0] for f in final] if cell == "lstm" else [final[0]]
    per_sample = recorded.per_sample.get(0) if profile else None
    return output, finals, per_sample


def plain_loop(
    cell: str, args: Args, mask: Tensor | None = None
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """torch's equations in a plain autograd loop: ``(output, finals, hidden states)``."""
    if cell == "lstm":
        x, h, c, w_ih, w_hh, b_ih, b_hh = args
    else:
        (x, h, w_ih, w_hh, b_ih, b_hh), c = args, None
    outputs, states = [], []
    for t in range(x.shape[0]):
        from_x = x[t] @ w_ih.T + (0.0 if b_ih is None else b_ih)
        from_h = h @ w_hh.T + (0.0 if b_hh is None else b_hh)
        if cell == "lstm":
            i, f, g, o = (from_x + from_h).chunk(4, dim=-1)
            c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h_new = torch.sigmoid(o) * torch.tanh(c_new)
        else:
            (x_r, x_z, x_n), (h_r, h_z, h_n) = from_x.chunk(3, -1), from_h.chunk(3, -1)
            r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
            h_new = (1 - z) * torch.tanh(x_n + r * h_n) + z * h
        valid = torch.ones(x.shape[1], 1, dtype=torch.bool) if mask is None else mask[t, :, None]
        h = torch.where(valid, h_new, h)
        c = torch.where(valid, c_new, c) if cell == "lstm" else None
        states.append(h)
        outputs.append(torch.where(valid, h, 0.0))
    return torch.stack(outputs), [h, c] if cell == "lstm" else [h], states


def torch_module(
    cell: str, args: Args, lengths: list[int] | None = None
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """``(output, finals, parameters)`` of torch.nn.LSTM / GRU with the weights of ``args``."""
    x, *states = args[: 3 if cell == "lstm" else 2]
    module = {"lstm": nn.LSTM, "gru": nn.GRU}[cell](x.shape[-1], H, dtype=x.dtype)
    params = [module.weight_ih_l0, module.weight_hh_l0, module.bias_ih_l0, module.bias_hh_l0]
    with torch.no_grad():
        for param, value in zip(params, args[len(states) + 1 :], strict=True):
            param.copy_(value)
    hx = tuple(s.unsqueeze(0) for s in states) if cell == "lstm" else states[0].unsqueeze(0)
    sequence = (
        x
        if lengths is None
        else pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
    )
    output, final = module(sequence, hx)
    if lengths is not None:
        output, _ = pad_packed_sequence(output, total_length=x.shape[0])
    return output, [f[0] for f in final] if cell == "lstm" else [final[0]], params


def length_mask(lengths: list[int], steps: int = T) -> Tensor:
    return torch.arange(steps)[:, None] < torch.tensor(lengths)[None, :]


def random_mask(steps: int = T, batch: int = B) -> Tensor:
    """Holes anywhere, including a leading invalid step (the initial state is carried)."""
    mask = torch.rand(steps, batch, generator=torch.Generator().manual_seed(1)) > 0.4
    mask[0, 0] = False
    return mask


def loss_weights(out: Tensor, count: int) -> tuple[Tensor, list[Tensor]]:
    """Fixed random weights for the outputs ``(T, B, H)`` and for each final state ``(B, H)``."""
    gen = torch.Generator().manual_seed(2)
    on_out = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    return on_out, [
        torch.randn(out.shape[1:], generator=gen, dtype=torch.float64) for _ in range(count)
    ]


def many_to_many(out: Tensor, finals: list[Tensor]) -> Tensor:
    on_out, on_finals = loss_weights(out, len(finals))
    return (on_out * out).sum() + sum((w * f).sum() for w, f in zip(on_finals, finals, strict=True))


LOSSES: dict[str, Callable[[Tensor, list[Tensor]], Tensor]] = {
    "many-to-many": many_to_many,
    "outputs-only": lambda out, finals: (loss_weights(out, 0)[0] * out).square().sum(),
    "last-output": lambda out, finals: (loss_weights(out, 1)[1][0] * out[-1]).square().sum(),
    "final-states-only": lambda out, finals: many_to_many(out.detach(), finals),
}


def grads(loss: Tensor, tensors: Args) -> list[Tensor]:
    return list(torch.autograd.grad(loss, [a for a in tensors if a is not None]))


def assert_all_close(actual: list[Tensor], expected: list[Tensor], atol: float = 1e-10) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, atol=atol, rtol=0)


# -- gradcheck ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cell, masked, bias", list(itertools.product(CELLS, (False, True), (False, True)))
)
def test_gradcheck(cell: str, masked: bool, bias: bool) -> None:
    args = make_args(cell, bias=bias)
    mask = random_mask() if masked else None
    slots = [k for k, a in enumerate(args) if a is not None]

    def run(*leaves: Tensor) -> tuple[Tensor, ...]:
        full: list[Tensor | None] = [None] * len(args)
        for k, leaf in zip(slots, leaves, strict=True):
            full[k] = leaf
        out, finals = explicit(cell, tuple(full), mask=mask, on_profile=lambda norms: None)
        return out, *finals

    assert torch.autograd.gradcheck(run, tuple(args[k] for k in slots))


@pytest.mark.parametrize(
    "cell, steps, batch", [(c, *s) for c in CELLS for s in [(1, 3), (4, 1), (1, 1)]]
)
def test_gradcheck_degenerate_sizes(cell: str, steps: int, batch: int) -> None:
    args = make_args(cell, steps=steps, batch=batch)
    mask = torch.ones(steps, batch, dtype=torch.bool)
    mask[-1, 0] = False
    assert torch.autograd.gradcheck(lambda *a: tuple(explicit(cell, a, mask)[1]), args)
    assert torch.autograd.gradcheck(lambda *a: explicit(cell, a)[0], args)


# -- against torch.nn, bptt.Recurrent and a plain loop ----------------------------------


@pytest.mark.parametrize("cell, with_lengths", list(itertools.product(CELLS, (False, True))))
def test_matches_torch_module(cell: str, with_lengths: bool) -> None:
    args = make_args(cell)
    lengths = LENGTHS if with_lengths else None
    out, finals = explicit(cell, args, mask=length_mask(LENGTHS) if with_lengths else None)
    ref_out, ref_finals, params = torch_module(cell, args, lengths)
    assert_all_close([out, *finals], [ref_out, *ref_finals], atol=1e-12)
    states = args[: 1 + len(finals)]
    expected = grads(many_to_many(ref_out, ref_finals), (*states, *params))
    assert_all_close(grads(many_to_many(out, finals), args), expected)


@pytest.mark.parametrize(
    "cell, with_lengths, bias", list(itertools.product(CELLS, (False, True), (False, True)))
)
def test_matches_recurrent_unrolled(cell: str, with_lengths: bool, bias: bool) -> None:
    """Outputs, final states and every gradient, for a loss on outputs and final states."""
    args = make_args(cell, bias=bias)
    lengths = LENGTHS if with_lengths else None
    out, finals = explicit(cell, args, mask=length_mask(LENGTHS) if with_lengths else None)
    ref_out, ref_finals, _ = recurrent_unrolled(cell, args, lengths)
    assert_all_close([out, *finals], [ref_out, *ref_finals], atol=1e-12)
    expected = grads(many_to_many(ref_out, ref_finals), args)
    assert_all_close(grads(many_to_many(out, finals), args), expected)


@pytest.mark.parametrize(
    "cell, biases", list(itertools.product(CELLS, ("both", "none", "ih-only", "hh-only")))
)
def test_matches_plain_loop_with_holes_in_the_mask(cell: str, biases: str) -> None:
    args = make_args(cell, steps=8, bias=biases != "none")
    if biases.endswith("-only"):
        keep = {"ih-only": (args[-2], None), "hh-only": (None, args[-1])}[biases]
        args = (*args[:-2], *keep)
    mask = random_mask(steps=8)
    out, finals = explicit(cell, args, mask=mask)
    ref_out, ref_finals, _ = plain_loop(cell, args, mask)
    assert_all_close([out, *finals], [ref_out, *ref_finals], atol=1e-12)
    expected = grads(many_to_many(ref_out, ref_finals), args)
    assert_all_close(grads(many_to_many(out, finals), args), expected)


NAMES = {
    "lstm": ("inputs", "h0", "c0", "weight_ih", "weight_hh", "bias_ih", "bias_hh"),
    "gru": ("inputs", "h0", "weight_ih", "weight_hh", "bias_ih", "bias_hh"),
}


@pytest.mark.parametrize(
    "cell, wanted",
    [(c, (name,)) for c in CELLS for name in NAMES[c]]
    + [(c, ("weight_ih", "weight_hh", "bias_ih", "bias_hh")) for c in CELLS],
)
def test_gradients_only_for_what_requires_them(cell: str, wanted: tuple[str, ...]) -> None:
    args = tuple(
        a if name in wanted else a.detach() for name, a in zip(NAMES[cell], make_args(cell), strict=True)
    )
    leaves = tuple(a for a in args if a.requires_grad)
    mask = length_mask(LENGTHS)
    out, finals = explicit(cell, args, mask=mask)
    ref_out, ref_finals, _ = plain_loop(cell, args, mask)
    expected = grads(many_to_many(ref_out, ref_finals), leaves)
    assert_all_close(grads(many_to_many(out, finals), leaves), expected)


@pytest.mark.parametrize("cell", CELLS)
def test_broadcast_upstream_gradients(cell: str) -> None:
    """``sum()`` hands backward stride-0 (expanded) gradients; they must be read correctly."""
    args = make_args(cell)
    mask = random_mask()
    out, finals = explicit(cell, args, mask=mask)
    ref_out, ref_finals, _ = plain_loop(cell, args, mask)
    actual = grads(out.sum() + sum(f.sum() for f in finals), args)
    assert_all_close(actual, grads(ref_out.sum() + sum(f.sum() for f in ref_finals), args))


@pytest.mark.parametrize("cell", CELLS)
def test_backward_twice_with_retain_graph(cell: str) -> None:
    """Backward leaves the saved tensors intact: a second pass gives the same gradients."""
    args = make_args(cell)
    loss = many_to_many(*explicit(cell, args, mask=random_mask()))
    first = list(torch.autograd.grad(loss, args, retain_graph=True))
    assert_all_close(grads(loss, args), first, atol=0)


def test_lstm_bias_gradients_are_independent_tensors() -> None:
    """Both LSTM biases get the same gradient value, never the same storage."""
    args = make_args("lstm")
    many_to_many(*explicit("lstm", args)).backward()
    b_ih, b_hh = args[-2], args[-1]
    torch.testing.assert_close(b_ih.grad, b_hh.grad, atol=0, rtol=0)
    b_ih.grad.zero_()
    assert b_hh.grad.abs().sum() > 0


@pytest.mark.parametrize("cell", CELLS)
def test_float32_matches_torch_module(cell: str) -> None:
    args = tuple(a.detach().float().requires_grad_() for a in make_args(cell))
    out, finals = explicit(cell, args, mask=length_mask(LENGTHS))
    ref_out, ref_finals, params = torch_module(cell, args, LENGTHS)
    assert out.dtype == torch.float32
    assert_all_close([out, *finals], [ref_out, *ref_finals], atol=1e-6)
    expected = grads(
        many_to_many(ref_out.double(), [f.double() for f in ref_finals]),
        (*args[: 1 + len(finals)], *params),
    )
    assert_all_close(
        grads(many_to_many(out.double(), [f.double() for f in finals]), args), expected, atol=1e-5
    )


# -- the gradient profile -------------------------------------------------------------


def recorded_profile(
    cell: str, args: Args, loss_name: str, mask: Tensor | None
) -> tuple[Tensor, list[Tensor]]:
    """The profile handed to ``on_profile``, and the gradients of ``args``."""
    recorded: list[Tensor] = []
    out, finals = explicit(cell, args, mask=mask, on_profile=recorded.append)
    gradients = grads(LOSSES[loss_name](out, finals), args)
    assert len(recorded) == 1, "on_profile must be called exactly once per backward"
    assert recorded[0].shape == (args[0].shape[0], args[0].shape[1])
    assert not recorded[0].requires_grad
    return recorded[0], gradients


@pytest.mark.parametrize(
    "cell, loss_name, with_lengths", list(itertools.product(CELLS, LOSSES, (False, True)))
)
def test_profile_equals_recurrent_recording_profile(
    cell: str, loss_name: str, with_lengths: bool
) -> None:
    """Equal to the hooks of ``Recurrent.recording_profile()`` on the unrolled loop."""
    args = make_args(cell, steps=8)
    lengths = [8, 1, 5] if with_lengths else None
    mask = length_mask(lengths, steps=8) if with_lengths else None
    profile, gradients = recorded_profile(cell, args, loss_name, mask)
    ref_out, ref_finals, expected = recurrent_unrolled(cell, args, lengths, profile=True)
    ref_gradients = grads(LOSSES[loss_name](ref_out, ref_finals), args)
    torch.testing.assert_close(profile, expected, atol=1e-10, rtol=0)
    assert_all_close(gradients, ref_gradients)  # keeping every delta changes no gradient


@pytest.mark.parametrize("cell, loss_name", list(itertools.product(CELLS, LOSSES)))
def test_profile_with_holes_equals_autograd_total_derivative(cell: str, loss_name: str) -> None:
    args = make_args(cell, steps=8)
    mask = random_mask(steps=8)
    profile, gradients = recorded_profile(cell, args, loss_name, mask)
    ref_out, ref_finals, states = plain_loop(cell, args, mask)
    expected = grads(LOSSES[loss_name](ref_out, ref_finals), (*args, *states))
    assert_all_close(gradients, expected[: len(gradients)])
    reference = torch.stack([g.norm(dim=-1) for g in expected[len(gradients) :]])
    torch.testing.assert_close(profile, reference, atol=1e-10, rtol=0)


@pytest.mark.parametrize("cell", CELLS)
def test_profile_includes_the_path_through_h_n(cell: str) -> None:
    """With a loss on h_n only, the last step's profile is ||dL/dh_n||, not zero."""
    args = make_args(cell)
    recorded: list[Tensor] = []
    out, finals = explicit(cell, args, on_profile=recorded.append)
    on_h_n = loss_weights(out, 1)[1][0]
    (on_h_n * finals[0]).sum().backward()
    torch.testing.assert_close(recorded[0][-1], on_h_n.norm(dim=-1), atol=1e-12, rtol=0)


def test_lstm_profile_holds_the_cell_state_fixed() -> None:
    """With a loss on c_n only, dL/dh_T is zero (h_T feeds nothing), dL/dh_{T-1} is not."""
    args = make_args("lstm")
    recorded: list[Tensor] = []
    c_n = lstm_bptt(*args, on_profile=recorded.append)[1][1]
    c_n.sum().backward()
    assert torch.equal(recorded[0][-1], torch.zeros(B, dtype=torch.float64))
    assert (recorded[0][:-1] > 0).all()


# -- masks ------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_padding_changes_nothing(cell: str) -> None:
    """A padded batch gives each sample the outputs and gradients it gets alone."""
    args = make_args(cell)
    x = args[0].detach().clone()
    x[~length_mask(LENGTHS)] = 1e3  # garbage in the padding must not matter
    x.requires_grad_()
    args = (x, *args[1:])
    out, finals = explicit(cell, args, mask=length_mask(LENGTHS))
    on_out, on_finals = loss_weights(out, len(finals))
    loss = (on_out * out).sum() + sum((w * f).sum() for w, f in zip(on_finals, finals, strict=True))
    grad_x, *grad_rest = grads(loss, args)
    count = len(finals)
    expected_params = [torch.zeros_like(p) for p in args[1 + count :]]
    for b, length in enumerate(LENGTHS):
        alone = (
            x[:length, b : b + 1],
            *(s[b : b + 1] for s in args[1 : 1 + count]),
            *args[1 + count :],
        )
        alone_out, alone_finals = explicit(cell, alone)
        torch.testing.assert_close(out[:length, b], alone_out[:, 0], atol=1e-12, rtol=0)
        assert torch.equal(out[length:, b], torch.zeros_like(out[length:, b]))
        assert_all_close([f[b] for f in finals], [f[0] for f in alone_finals], atol=1e-12)

        alone_loss = (on_out[:length, b] * alone_out[:, 0]).sum()
        alone_loss = alone_loss + sum((w[b] * f[0]).sum() for w, f in zip(on_finals, alone_finals, strict=True))
        alone_x, *alone_rest = grads(alone_loss, args)
        torch.testing.assert_close(grad_x[:, b], alone_x[:, b], atol=1e-10, rtol=0)
        assert torch.equal(grad_x[length:, b], torch.zeros_like(grad_x[length:, b]))
        assert_all_close([g[b] for g in grad_rest[:count]], [g[b] for g in alone_rest[:count]])
        expected_params = [e + a for e, a in zip(expected_params, alone_rest[count:], strict=True)]
    assert_all_close(grad_rest[count:], expected_params)


@pytest.mark.parametrize("cell", CELLS)
def test_all_true_mask_equals_no_mask(cell: str) -> None:
    args = make_args(cell)
    full = explicit(cell, args, mask=torch.ones(T, B, dtype=torch.bool))
    plain = explicit(cell, args)
    assert_all_close([full[0], *full[1]], [plain[0], *plain[1]], atol=0)
    assert_all_close(grads(many_to_many(*full), args), grads(many_to_many(*plain), args))


@pytest.mark.parametrize("cell", CELLS)
def test_padded_steps_carry_state_and_output_zero(cell: str) -> None:
    """Valid steps 0 and 3 of 5: the final state is the state after just those two steps."""
    mask = torch.tensor([[True], [False], [False], [True], [False]])
    x, *rest = make_args(cell, batch=1)
    out, finals = explicit(cell, (x, *rest), mask=mask)
    assert torch.equal(out[[1, 2, 4]], torch.zeros(3, 1, H, dtype=torch.float64))
    valid_out, valid_finals = explicit(cell, (x[[0, 3]], *rest))
    assert_all_close([out[[0, 3]], *finals], [valid_out, *valid_finals], atol=1e-12)


# -- argument errors --------------------------------------------------------------------


def bad_arguments(cell: str) -> list:
    """``pytest.param(cell, args, kwargs, match)``: wrong shapes, dtypes and masks for ``cell``."""
    rows, gates = GATES[cell] * H, GATES[cell]

    def replace(name: str, value: Tensor) -> tuple[object, ...]:
        args: list[object] = list(make_args(cell))
        args[NAMES[cell].index(name)] = value
        return tuple(args)

    def f64(*shape: int) -> Tensor:
        return torch.randn(*shape, dtype=torch.float64)

    as_long = torch.ones(T, B, I, dtype=torch.long)
    cases = {
        "inputs-rank": (replace("inputs", f64(T, I)), {}, r"\(T, B, I\).*\(5, 3\).*unsqueeze"),
        "no-steps": (replace("inputs", f64(0, B, I)), {}, r"T >= 1"),
        "inputs-dtype": (replace("inputs", as_long), {}, r"floating-point.*torch.int64"),
        "h0-shape": (replace("h0", f64(1, B, H)), {}, r"h0 of shape \(3, 4\).*\(1, 3, 4\).*h0\["),
        "weight-ih-shape": (
            replace("weight_ih", f64(rows, I + 1)), {},
            rf"weight_ih of shape \({rows}, 3\).*\({rows}, 4\)",
        ),
        "weight-hh-shape": (
            replace("weight_hh", f64(H, H)), {},
            rf"weight_hh of shape \({gates}H, H\).*got \(4, 4\).*torch.nn.{cell.upper()}",
        ),
        "bias-shape": (replace("bias_ih", f64(H)), {}, rf"bias_ih of shape \({rows},\).*\(4,\)"),
        "dtype": (
            replace("bias_hh", torch.randn(rows)), {},
            r"bias_hh with dtype torch.float64.*got torch.float32.*\.to\(",
        ),
        "mask-shape": (
            make_args(cell), {"mask": torch.ones(B, T, dtype=torch.bool)},
            r"mask of shape \(T, B\) = \(5, 3\), got \(3, 5\).*transpose",
        ),
        "mask-dtype": (
            make_args(cell), {"mask": torch.ones(T, B)}, r"mask of dtype torch.bool.*torch.float32"
        ),
    }  # fmt: skip
    if cell == "lstm":
        cases["c0-shape"] = (replace("c0", f64(B, H + 1)), {}, r"c0 of shape \(3, 4\).*\(3, 5\)")
    return [pytest.param(cell, *case, id=f"{cell}-{name}") for name, case in cases.items()]


@pytest.mark.parametrize("cell, args, kwargs, match", bad_arguments("lstm") + bad_arguments("gru"))
def test_bad_arguments_raise_helpful_errors(
    cell: str, args: tuple[object, ...], kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        (lstm_bptt if cell == "lstm" else gru_bptt)(*args, **kwargs)
