"""lem_bptt and cornn_bptt against bptt.Recurrent's unrolled loop and a plain autograd loop of
the papers' equations, in float64."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import torch
from torch import Tensor
from torch.func import functional_call

from bptt import Recurrent
from bptt.autograd import cornn_bptt, lem_bptt
from bptt.autograd.oscillators import CHUNK
from bptt.cells import AbstractCell
from bptt.cells.oscillators import CoRNNCell, LEMCell

pytestmark = pytest.mark.filterwarnings("error")  # no resized outputs, no deprecations

T, B, I, H = 5, 3, 3, 4
CELLS = ("lem", "cornn")
LENGTHS = [5, 1, 3]  # variable lengths, one of them a single step
OPTIONS = {"lem": {"dt": 0.4}, "cornn": {"dt": 0.1, "gamma": 2.5, "epsilon": 1.5}}
NAMES = {
    "lem": ("inputs", "y0", "z0", "weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_zh", "bias_zh"),
    "cornn": ("inputs", "y0", "z0", "weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_zh"),
}
Args = tuple[Tensor | None, ...]


def make_args(cell: str, steps: int = T, batch: int = B, bias: bool = True) -> Args:
    """The function's tensor arguments in order (see :data:`NAMES`), float64 leaves requiring grad."""
    gen = torch.Generator().manual_seed(0)
    blocks = {"weight_ih": 4, "weight_hh": 3, "bias_ih": 4, "bias_hh": 3} if cell == "lem" else {}
    args = []
    for name in NAMES[cell]:
        if name.startswith("bias") and not bias:
            args.append(None)
            continue
        rows = blocks.get(name, 1) * H
        shape = {"inputs": (steps, batch, I), "y0": (batch, H), "z0": (batch, H)}.get(name)
        shape = shape or ((rows, I) if name == "weight_ih" else (rows, H) if name.startswith("weight") else (rows,))
        scale = 1.0 if name == "inputs" else 0.5 if name in ("y0", "z0") else 1.5 / H**0.5
        args.append((scale * torch.randn(*shape, generator=gen, dtype=torch.float64)).requires_grad_())
    return tuple(args)


def explicit(cell: str, args: Args, mask: Tensor | None = None, on_profile: Callable | None = None):
    """``(output, [y_n, z_n])`` of lem_bptt / cornn_bptt."""
    function = lem_bptt if cell == "lem" else cornn_bptt
    output, (y_n, z_n) = function(*args, **OPTIONS[cell], mask=mask, on_profile=on_profile)
    return output, [y_n, z_n]


def plain_loop(cell: str, args: Args, mask: Tensor | None = None):
    """The papers' equations in a plain autograd loop: ``(output, finals, y states)``."""
    named = dict(zip(NAMES[cell], args, strict=True))
    x, y, z = named["inputs"], named["y0"], named["z0"]

    def bias(name: str, rows: int) -> Tensor:
        return torch.zeros(rows, dtype=x.dtype) if named.get(name) is None else named[name]

    outputs, states = [], []
    for t in range(x.shape[0]):
        if cell == "lem":
            dt = OPTIONS["lem"]["dt"]
            v1, v2, vz, vy = (x[t] @ named["weight_ih"].T + bias("bias_ih", 4 * H)).chunk(4, -1)
            w1, w2, wz = (y @ named["weight_hh"].T + bias("bias_hh", 3 * H)).chunk(3, -1)
            k1, k2 = dt * torch.sigmoid(v1 + w1), dt * torch.sigmoid(v2 + w2)
            z_new = (1 - k1) * z + k1 * torch.tanh(vz + wz)
            y_new = (1 - k2) * y + k2 * torch.tanh(vy + z_new @ named["weight_zh"].T + bias("bias_zh", H))
        else:
            dt, gamma, epsilon = OPTIONS["cornn"].values()
            drive = x[t] @ named["weight_ih"].T + y @ named["weight_hh"].T + z @ named["weight_zh"].T
            drive = torch.tanh(drive + bias("bias_ih", H) + bias("bias_hh", H))
            z_new = z + dt * (drive - gamma * y - epsilon * z)
            y_new = y + dt * z_new
        valid = torch.ones(x.shape[1], 1, dtype=torch.bool) if mask is None else mask[t, :, None]
        y, z = torch.where(valid, y_new, y), torch.where(valid, z_new, z)
        states.append(y)
        outputs.append(torch.where(valid, y, 0.0))
    return torch.stack(outputs), [y, z], states


def make_cell(cell: str, bias: bool = True) -> AbstractCell:
    return (LEMCell if cell == "lem" else CoRNNCell)(I, H, bias, **OPTIONS[cell]).double()


def recurrent_run(
    cell: str, args: Args, lengths: list[int] | None = None, unrolled: bool = True, profile: bool = False
):
    """``(output, finals, profile)`` of bptt.Recurrent run on ``args``: its unrolled loop (a step
    hook forces it) or its default path."""
    named = dict(zip(NAMES[cell], args, strict=True))
    model = Recurrent([make_cell(cell, named["bias_ih"] is not None)])
    if unrolled:
        model.register_step_hook(lambda layer, t, state: None)
    parameters = {f"cells.0.{n}": v for n, v in named.items() if n not in ("inputs", "y0", "z0") and v is not None}
    state = (named["y0"].unsqueeze(0), named["z0"].unsqueeze(0))
    length_tensor = None if lengths is None else torch.tensor(lengths)
    with model.recording_profile() as recorded:
        output, (y_n, z_n) = functional_call(model, parameters, (named["inputs"], state, length_tensor))
    return output, [y_n[0], z_n[0]], recorded.per_sample.get(0) if profile else None


def length_mask(lengths: list[int], steps: int = T) -> Tensor:
    return torch.arange(steps)[:, None] < torch.tensor(lengths)[None, :]


def random_mask(steps: int = T, batch: int = B) -> Tensor:
    """Holes anywhere, including a leading invalid step (the initial state is carried)."""
    mask = torch.rand(steps, batch, generator=torch.Generator().manual_seed(1)) > 0.4
    mask[0, 0] = False
    return mask


def loss_weights(out: Tensor, count: int) -> tuple[Tensor, list[Tensor]]:
    gen = torch.Generator().manual_seed(2)
    on_out = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    return on_out, [torch.randn(out.shape[1:], generator=gen, dtype=torch.float64) for _ in range(count)]


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


@pytest.mark.parametrize("cell, masked, bias", list(itertools.product(CELLS, (False, True), (False, True))))
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


@pytest.mark.parametrize("cell, steps, batch", [(c, *s) for c in CELLS for s in [(1, 3), (4, 1), (1, 1)]])
def test_gradcheck_degenerate_sizes(cell: str, steps: int, batch: int) -> None:
    args = make_args(cell, steps=steps, batch=batch)
    mask = torch.ones(steps, batch, dtype=torch.bool)
    mask[-1, 0] = False
    assert torch.autograd.gradcheck(lambda *a: tuple(explicit(cell, a, mask)[1]), args)
    assert torch.autograd.gradcheck(lambda *a: explicit(cell, a)[0], args)


# -- against bptt.Recurrent and a plain loop -------------------------------------------


@pytest.mark.parametrize("cell, with_lengths, bias", list(itertools.product(CELLS, (False, True), (False, True))))
def test_matches_recurrent_unrolled(cell: str, with_lengths: bool, bias: bool) -> None:
    """Outputs, final states and every gradient (inputs, initial state, each parameter)."""
    args = make_args(cell, bias=bias)
    lengths = LENGTHS if with_lengths else None
    out, finals = explicit(cell, args, mask=length_mask(LENGTHS) if with_lengths else None)
    ref_out, ref_finals, _ = recurrent_run(cell, args, lengths)
    assert_all_close([out, *finals], [ref_out, *ref_finals], atol=1e-12)
    expected = grads(many_to_many(ref_out, ref_finals), args)
    assert_all_close(grads(many_to_many(out, finals), args), expected)


@pytest.mark.parametrize("cell, with_lengths", list(itertools.product(CELLS, (False, True))))
def test_recurrent_runs_the_explicit_bptt_by_default(cell: str, with_lengths: bool) -> None:
    assert type(make_cell(cell)).explicit_bptt is not AbstractCell.explicit_bptt
    args = make_args(cell)
    lengths = LENGTHS if with_lengths else None
    out, finals, _ = recurrent_run(cell, args, lengths, unrolled=False)
    assert out.grad_fn.name().startswith(("LEMBPTTFunction", "CoRNNBPTTFunction"))
    ref_out, ref_finals, _ = recurrent_run(cell, args, lengths)
    assert_all_close([out, *finals], [ref_out, *ref_finals], atol=1e-12)
    assert_all_close(grads(many_to_many(out, finals), args), grads(many_to_many(ref_out, ref_finals), args))


@pytest.mark.parametrize("cell, bias", list(itertools.product(CELLS, (False, True))))
def test_matches_plain_loop_with_holes_in_the_mask(cell: str, bias: bool) -> None:
    args = make_args(cell, steps=8, bias=bias)
    mask = random_mask(steps=8)
    out, finals = explicit(cell, args, mask=mask)
    ref_out, ref_finals, _ = plain_loop(cell, args, mask)
    assert_all_close([out, *finals], [ref_out, *ref_finals], atol=1e-12)
    expected = grads(many_to_many(ref_out, ref_finals), args)
    assert_all_close(grads(many_to_many(out, finals), args), expected)


@pytest.mark.parametrize("cell", CELLS)
def test_long_sequence_with_holes_crosses_the_chunks(cell: str) -> None:
    """LEM's backward computes its local factors CHUNK steps at a time: across the chunk
    boundaries too, everything equals the plain loop (with the profile)."""
    steps = 2 * CHUNK + 5
    args = make_args(cell, steps=steps)
    mask = random_mask(steps=steps)
    profile, gradients = recorded_profile(cell, args, "many-to-many", mask)
    ref_out, ref_finals, states = plain_loop(cell, args, mask)
    expected = grads(many_to_many(ref_out, ref_finals), (*args, *states))
    assert_all_close(gradients, expected[: len(gradients)])
    reference = torch.stack([g.norm(dim=-1) for g in expected[len(gradients) :]])
    torch.testing.assert_close(profile, reference, atol=1e-10, rtol=0)


def test_lem_biases_one_at_a_time() -> None:
    """Each of LEM's three biases may be absent on its own."""
    full = make_args("lem")
    for absent in ("bias_ih", "bias_hh", "bias_zh"):
        args = tuple(None if name == absent else a for name, a in zip(NAMES["lem"], full, strict=True))
        out, finals = explicit("lem", args, mask=random_mask())
        ref_out, ref_finals, _ = plain_loop("lem", args, random_mask())
        assert_all_close([out, *finals], [ref_out, *ref_finals], atol=1e-12)
        expected = grads(many_to_many(ref_out, ref_finals), args)
        assert_all_close(grads(many_to_many(out, finals), args), expected)


@pytest.mark.parametrize(
    "cell, wanted",
    [(c, (name,)) for c in CELLS for name in NAMES[c]] + [(c, NAMES[c][3:]) for c in CELLS],
)
def test_gradients_only_for_what_requires_them(cell: str, wanted: tuple[str, ...]) -> None:
    args = tuple(a if name in wanted else a.detach() for name, a in zip(NAMES[cell], make_args(cell), strict=True))
    leaves = tuple(a for a in args if a.requires_grad)
    mask = length_mask(LENGTHS)
    out, finals = explicit(cell, args, mask=mask)
    ref_out, ref_finals, _ = plain_loop(cell, args, mask)
    assert_all_close(grads(many_to_many(out, finals), leaves), grads(many_to_many(ref_out, ref_finals), leaves))


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


@pytest.mark.parametrize("cell", CELLS)
def test_bias_gradients_are_independent_tensors(cell: str) -> None:
    args = make_args(cell)
    many_to_many(*explicit(cell, args)).backward()
    named = dict(zip(NAMES[cell], args, strict=True))
    pointers = {named[name].grad.data_ptr() for name in NAMES[cell] if name.startswith("bias")}
    assert len(pointers) == sum(name.startswith("bias") for name in NAMES[cell])
    if cell == "cornn":
        torch.testing.assert_close(named["bias_ih"].grad, named["bias_hh"].grad, atol=0, rtol=0)
    else:
        torch.testing.assert_close(named["bias_ih"].grad[: 3 * H], named["bias_hh"].grad, atol=0, rtol=0)
        torch.testing.assert_close(named["bias_ih"].grad[3 * H :], named["bias_zh"].grad, atol=0, rtol=0)


@pytest.mark.parametrize("cell", CELLS)
def test_float32_matches_the_plain_loop(cell: str) -> None:
    args = tuple(a.detach().float().requires_grad_() for a in make_args(cell))
    out, finals = explicit(cell, args, mask=length_mask(LENGTHS))
    ref_out, ref_finals, _ = plain_loop(cell, args, length_mask(LENGTHS))
    assert out.dtype == torch.float32
    assert_all_close([out, *finals], [ref_out, *ref_finals], atol=1e-6)
    expected = grads(many_to_many(ref_out.double(), [f.double() for f in ref_finals]), args)
    assert_all_close(grads(many_to_many(out.double(), [f.double() for f in finals]), args), expected, atol=1e-5)


# -- the gradient profile -------------------------------------------------------------


def recorded_profile(cell: str, args: Args, loss_name: str, mask: Tensor | None) -> tuple[Tensor, list[Tensor]]:
    """The profile handed to ``on_profile``, and the gradients of ``args``."""
    recorded: list[Tensor] = []
    out, finals = explicit(cell, args, mask=mask, on_profile=recorded.append)
    gradients = grads(LOSSES[loss_name](out, finals), args)
    assert len(recorded) == 1, "on_profile must be called exactly once per backward"
    assert recorded[0].shape == (args[0].shape[0], args[0].shape[1])
    assert not recorded[0].requires_grad
    return recorded[0], gradients


@pytest.mark.parametrize("cell, loss_name, with_lengths", list(itertools.product(CELLS, LOSSES, (False, True))))
def test_profile_equals_recurrent_recording_profile(cell: str, loss_name: str, with_lengths: bool) -> None:
    """Equal to the hooks of ``Recurrent.recording_profile()`` on the unrolled loop."""
    args = make_args(cell, steps=8)
    lengths = [8, 1, 5] if with_lengths else None
    mask = length_mask(lengths, steps=8) if with_lengths else None
    profile, gradients = recorded_profile(cell, args, loss_name, mask)
    ref_out, ref_finals, expected = recurrent_run(cell, args, lengths, profile=True)
    ref_gradients = grads(LOSSES[loss_name](ref_out, ref_finals), args)  # the hooks fill `expected`
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
def test_profile_includes_the_path_through_y_n_and_holds_z_fixed(cell: str) -> None:
    """A loss on y_n: the last step's profile is ||dL/dy_n||. A loss on z_n only: dL/dy_T is
    zero (y_T feeds nothing), dL/dy_{T-1} is not."""
    args = make_args(cell)
    recorded: list[Tensor] = []
    out, (y_n, _) = explicit(cell, args, on_profile=recorded.append)
    on_y_n = loss_weights(out, 1)[1][0]
    (on_y_n * y_n).sum().backward()
    torch.testing.assert_close(recorded[0][-1], on_y_n.norm(dim=-1), atol=1e-12, rtol=0)
    recorded.clear()
    explicit(cell, args, on_profile=recorded.append)[1][1].sum().backward()
    assert torch.equal(recorded[0][-1], torch.zeros(B, dtype=torch.float64))
    assert (recorded[0][:-1] > 0).all()


# -- masks and arguments ---------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_padding_changes_nothing(cell: str) -> None:
    """A padded batch gives each sample the outputs and gradients it gets alone."""
    args = make_args(cell)
    x = args[0].detach().clone()
    x[~length_mask(LENGTHS)] = 1e3  # garbage in the padding must not matter
    args = (x.requires_grad_(), *args[1:])
    out, finals = explicit(cell, args, mask=length_mask(LENGTHS))
    on_out, on_finals = loss_weights(out, len(finals))
    many_to_many(out, finals).backward()
    for b, length in enumerate(LENGTHS):
        alone = tuple(
            a[:length, b : b + 1] if k == 0 else a[b : b + 1] if k in (1, 2) else a for k, a in enumerate(args)
        )
        alone = tuple(a.detach().requires_grad_() for a in alone)
        out_b, finals_b = explicit(cell, alone)
        torch.testing.assert_close(out[:length, b : b + 1], out_b, atol=1e-12, rtol=0)
        assert not out[length:, b].any()
        for final, final_b in zip(finals, finals_b, strict=True):
            torch.testing.assert_close(final[b : b + 1], final_b, atol=1e-12, rtol=0)
        loss_b = (on_out[:length, b : b + 1] * out_b).sum() + sum(
            (w[b : b + 1] * f).sum() for w, f in zip(on_finals, finals_b, strict=True)
        )
        grad_x, grad_y0, grad_z0 = torch.autograd.grad(loss_b, alone[:3])
        torch.testing.assert_close(x.grad[:length, b : b + 1], grad_x, atol=1e-10, rtol=0)
        torch.testing.assert_close(args[1].grad[b : b + 1], grad_y0, atol=1e-10, rtol=0)
        torch.testing.assert_close(args[2].grad[b : b + 1], grad_z0, atol=1e-10, rtol=0)
    assert not x.grad[~length_mask(LENGTHS)].any()


@pytest.mark.parametrize("cell", CELLS)
def test_all_true_mask_equals_no_mask(cell: str) -> None:
    args = make_args(cell)
    out, finals = explicit(cell, args)
    masked_out, masked_finals = explicit(cell, args, mask=torch.ones(T, B, dtype=torch.bool))
    assert_all_close([masked_out, *masked_finals], [out, *finals], atol=1e-15)
    assert_all_close(grads(many_to_many(masked_out, masked_finals), args), grads(many_to_many(out, finals), args))


def replace(cell: str, name: str, value: object) -> Args:
    return tuple(value if n == name else a for n, a in zip(NAMES[cell], make_args(cell), strict=True))


BAD_ARGUMENTS = [
    ("lem", "inputs", torch.randn(T, I, dtype=torch.float64), "inputs of shape \\(T, B, I\\)"),
    ("lem", "weight_hh", torch.randn(4 * H, H, dtype=torch.float64), "weight_hh of shape \\(3H, H\\)"),
    ("lem", "weight_ih", torch.randn(3 * H, I, dtype=torch.float64), "weight_ih of shape \\(16, 3\\)"),
    ("lem", "bias_zh", torch.randn(3 * H, dtype=torch.float64), "bias_zh of shape \\(4,\\)"),
    ("lem", "z0", torch.randn(1, B, H, dtype=torch.float64), "z0 of shape \\(3, 4\\).*z0\\[0\\]"),
    ("cornn", "weight_zh", torch.randn(H, H + 1, dtype=torch.float64), "weight_zh of shape \\(4, 4\\)"),
    ("cornn", "y0", torch.randn(B, H), "y0 with dtype torch.float64"),
    ("cornn", "bias_hh", torch.randn(2 * H, dtype=torch.float64), "bias_hh of shape \\(4,\\)"),
]


@pytest.mark.parametrize("cell, name, value, match", BAD_ARGUMENTS)
def test_bad_arguments_raise_helpful_errors(cell: str, name: str, value: Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        explicit(cell, replace(cell, name, value))


@pytest.mark.parametrize(
    "cell, options, match",
    [
        ("lem", {"dt": 0.0}, "lem_bptt expected dt .* in \\(0, 1\\], received 0.0"),
        ("lem", {"dt": 2.0}, "received 2.0"),
        ("cornn", {"dt": 0.1, "gamma": -1.0, "epsilon": 1.0}, "cornn_bptt expected gamma .* >= 0, received -1.0"),
        ("cornn", {"dt": 0.1, "gamma": 1.0, "epsilon": float("nan")}, "epsilon"),
        ("cornn", {"dt": -0.1, "gamma": 1.0, "epsilon": 1.0}, "dt"),
    ],
)
def test_bad_options_raise(cell: str, options: dict, match: str) -> None:
    function = lem_bptt if cell == "lem" else cornn_bptt
    with pytest.raises(ValueError, match=match):
        function(*make_args(cell), **options)


@pytest.mark.parametrize("cell", CELLS)
def test_bad_mask_raises(cell: str) -> None:
    with pytest.raises(ValueError, match="mask of shape \\(T, B\\)"):
        explicit(cell, make_args(cell), mask=torch.ones(B, T, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask of dtype torch.bool"):
        explicit(cell, make_args(cell), mask=torch.ones(T, B))
