"""Recurrent against torch.nn.RNN/GRU/LSTM in float64, on every execution path."""

from __future__ import annotations

import contextlib
import itertools

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from bptt import Recurrent
from bptt.cells import ElmanCell, GRUCell

TORCH_MODULES = {
    "rnn-tanh": lambda i, h, n, bf: nn.RNN(i, h, n, nonlinearity="tanh", batch_first=bf),
    "rnn-relu": lambda i, h, n, bf: nn.RNN(i, h, n, nonlinearity="relu", batch_first=bf),
    "gru": lambda i, h, n, bf: nn.GRU(i, h, n, batch_first=bf),
    "lstm": lambda i, h, n, bf: nn.LSTM(i, h, n, batch_first=bf),
}
INPUT, HIDDEN, BATCH, STEPS = 3, 5, 4, 7
LENGTHS = torch.tensor([7, 3, 5, 1])


def make_pair(cell: str, layers: int, batch_first: bool) -> tuple[Recurrent, nn.Module]:
    torch.manual_seed(0)
    ours = Recurrent.from_name(cell, INPUT, HIDDEN, layers, batch_first=batch_first).double()
    theirs = TORCH_MODULES[cell](INPUT, HIDDEN, layers, batch_first).double()
    with torch.no_grad():
        for layer, module in enumerate(ours.cells):
            for name, parameter in module.named_parameters():
                getattr(theirs, f"{name}_l{layer}").copy_(parameter)
    return ours, theirs


@contextlib.contextmanager
def execution_path(model: Recurrent, path: str):
    """Force one of the three ways a Recurrent runs."""
    if path == "unrolled":
        handle = model.register_step_hook(lambda layer, t, state: None)
        yield
        handle.remove()
    elif path == "explicit":
        with model.recording_profile():
            yield
    else:
        yield


def run_torch(module: nn.Module, x, lengths, batch_first: bool):
    if lengths is None:
        return module(x)
    packed = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
    output, final = module(packed)
    output, _ = pad_packed_sequence(output, batch_first=batch_first, total_length=STEPS)
    return output, final


def flat(final) -> list[torch.Tensor]:
    return list(final) if isinstance(final, tuple) else [final]


def loss_of(output, final) -> torch.Tensor:
    weights = torch.linspace(-1, 1, output.shape[-1], dtype=output.dtype)
    return (output * weights).sum() + sum((f**2).sum() for f in flat(final))


PATHS = ["fused", "unrolled", "explicit"]


@pytest.mark.parametrize(
    "cell,layers,batch_first,with_lengths,path",
    [
        (c, n, bf, wl, p)
        for c, n, bf, wl, p in itertools.product(TORCH_MODULES, (1, 2), (False, True), (False, True), PATHS)
    ],
)
def test_matches_torch_outputs_and_gradients(cell, layers, batch_first, with_lengths, path):
    ours, theirs = make_pair(cell, layers, batch_first)
    shape = (BATCH, STEPS, INPUT) if batch_first else (STEPS, BATCH, INPUT)
    x = torch.randn(*shape, dtype=torch.float64)
    lengths = LENGTHS if with_lengths else None
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()

    with execution_path(ours, path):
        output, final = ours(x_ours, lengths=lengths)
        loss_of(output, final).backward()
    expected_output, expected_final = run_torch(theirs, x_theirs, lengths, batch_first)
    loss_of(expected_output, expected_final).backward()

    torch.testing.assert_close(output, expected_output, atol=1e-10, rtol=0)
    for got, want in zip(flat(final), flat(expected_final), strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, atol=1e-10, rtol=0)
    for layer, module in enumerate(ours.cells):
        for name, parameter in module.named_parameters():
            want = getattr(theirs, f"{name}_l{layer}").grad
            torch.testing.assert_close(parameter.grad, want, atol=1e-10, rtol=0, msg=f"{name} l{layer}")


@pytest.mark.parametrize("cell", ["rnn-tanh", "gru", "lstm"])
def test_initial_state_is_used_like_torch(cell):
    ours, theirs = make_pair(cell, 2, False)
    x = torch.randn(STEPS, BATCH, INPUT, dtype=torch.float64)
    h0 = torch.randn(2, BATCH, HIDDEN, dtype=torch.float64)
    state = (h0, torch.randn_like(h0)) if cell == "lstm" else h0
    for path in PATHS[:2]:
        with execution_path(ours, path):
            output, _ = ours(x, state)
        torch.testing.assert_close(output, theirs(x, state)[0], atol=1e-10, rtol=0)


def test_unbatched_input_like_torch():
    ours, theirs = make_pair("gru", 1, False)
    x = torch.randn(STEPS, INPUT, dtype=torch.float64)
    output, final = ours(x)
    expected_output, expected_final = theirs(x)
    assert output.shape == (STEPS, HIDDEN) and final.shape == (1, HIDDEN)
    torch.testing.assert_close(output, expected_output, atol=1e-10, rtol=0)
    torch.testing.assert_close(final, expected_final, atol=1e-10, rtol=0)


@pytest.mark.parametrize("cell", ["rnn-tanh", "rnn-sigmoid", "lstm"])
@pytest.mark.parametrize("path", PATHS)
def test_padded_steps_change_nothing(cell, path):
    """Garbage in padded steps changes neither outputs, nor the loss, nor any gradient,
    and each sample gives what it gives when run alone at its own length."""
    torch.manual_seed(1)
    model = Recurrent.from_name(cell, INPUT, HIDDEN, 2, batch_first=True).double()
    x = torch.randn(BATCH, STEPS, INPUT, dtype=torch.float64)
    noisy = x.clone()
    for b, length in enumerate(LENGTHS):
        noisy[b, length:] = 1e3 * torch.randn(STEPS - length, INPUT, dtype=torch.float64)

    def run(inputs, lengths):
        inputs = inputs.clone().requires_grad_()
        model.zero_grad()
        with execution_path(model, path):
            output, final = model(inputs, lengths=lengths)
            loss = loss_of(output, final)
            loss.backward()
        grads = [p.grad.clone() for p in model.parameters()]
        return output.detach(), [f.detach() for f in flat(final)], loss.detach(), grads, inputs.grad

    clean, dirty = run(x, LENGTHS), run(noisy, LENGTHS)
    for a, b in zip(clean[:3], dirty[:3], strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    for a, b in zip(clean[3], dirty[3], strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    for b, length in enumerate(LENGTHS):
        assert torch.all(dirty[4][b, length:] == 0)
        assert torch.all(dirty[0][b, length:] == 0)
        with torch.no_grad(), execution_path(model, path):
            alone, alone_final = model(x[b : b + 1, :length])
        torch.testing.assert_close(dirty[0][b, :length], alone[0], atol=1e-10, rtol=0)
        for got, want in zip(dirty[1], flat(alone_final), strict=True):
            torch.testing.assert_close(got[:, b], want[:, 0], atol=1e-10, rtol=0)


@pytest.mark.parametrize("cell", ["rnn-tanh", "lstm"])
def test_packed_sequence_like_torch(cell):
    ours, theirs = make_pair(cell, 2, True)
    x = torch.randn(BATCH, STEPS, INPUT, dtype=torch.float64)
    packed = pack_padded_sequence(x, LENGTHS, batch_first=True, enforce_sorted=False)
    for path in PATHS[:2]:
        with execution_path(ours, path):
            output, final = ours(packed)
        expected_output, expected_final = theirs(packed)
        torch.testing.assert_close(output.data, expected_output.data, atol=1e-10, rtol=0)
        for got, want in zip(flat(final), flat(expected_final), strict=True):
            torch.testing.assert_close(got, want, atol=1e-10, rtol=0)


def test_sigmoid_elman_paths_agree_with_a_plain_loop():
    torch.manual_seed(2)
    model = Recurrent.from_name("rnn-sigmoid", INPUT, HIDDEN, 1).double()
    cell = model.cells[0]
    x = torch.randn(STEPS, BATCH, INPUT, dtype=torch.float64)
    h = torch.zeros(BATCH, HIDDEN, dtype=torch.float64)
    expected = []
    for t in range(STEPS):
        h = torch.sigmoid(x[t] @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh)
        expected.append(h)
    for path in PATHS:
        with execution_path(model, path):
            output, _ = model(x)
        torch.testing.assert_close(output, torch.stack(expected), atol=1e-12, rtol=0)


@pytest.mark.parametrize("cell", ["rnn-tanh", "rnn-relu", "gru", "lstm"])
def test_fused_path_is_taken_without_taps(cell, monkeypatch):
    model = Recurrent.from_name(cell, INPUT, HIDDEN, 2)
    calls = []
    monkeypatch.setattr(type(model), "_unroll", lambda *a: calls.append(a) or pytest.fail("unrolled"))
    model(torch.randn(STEPS, BATCH, INPUT))
    assert not calls


@pytest.mark.parametrize("cell", ["rnn-tanh", "gru", "lstm"])
def test_recorded_profile_matches_retain_grad_reference(cell):
    """The profile equals ||dL/dh_k|| from autograd with retain_grad on every state."""
    torch.manual_seed(3)
    model = Recurrent.from_name(cell, INPUT, HIDDEN, 2).double()
    x = torch.randn(STEPS, BATCH, INPUT, dtype=torch.float64)
    states = {}

    def keep(layer, t, state):
        hidden = state[0] if isinstance(state, tuple) else state
        hidden.retain_grad()
        states[layer, t] = hidden

    handle = model.register_step_hook(keep)
    output, _ = model(x, lengths=LENGTHS)
    (output[-1] ** 2).sum().backward()  # loss only at the last step: many-to-one
    handle.remove()
    model.zero_grad()
    with model.recording_profile() as profile:
        output, _ = model(x, lengths=LENGTHS)
        (output[-1] ** 2).sum().backward()
    for layer in range(2):
        expected = torch.stack([states[layer, t].grad.norm(dim=-1) for t in range(STEPS)])
        torch.testing.assert_close(profile.per_sample[layer], expected, atol=1e-8, rtol=0)
    assert profile.norms().shape == (STEPS,)


# -- bad input ------------------------------------------------------------------------


@pytest.fixture
def model() -> Recurrent:
    return Recurrent.from_name("lstm", INPUT, HIDDEN, 2)


def test_wrong_rank_is_explained(model):
    with pytest.raises(ValueError, match=r"expected input of shape \(T, B, 3\).*got 4-D"):
        model(torch.randn(2, 3, 4, INPUT))


def test_wrong_feature_size_is_explained(model):
    with pytest.raises(ValueError, match="expected 3 input features.*got 5"):
        model(torch.randn(STEPS, BATCH, 5))


def test_integer_input_points_to_embedding(model):
    with pytest.raises(TypeError, match="embedding"):
        model(torch.ones(STEPS, BATCH, INPUT, dtype=torch.long))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_is_refused(model, bad):
    x = torch.randn(STEPS, BATCH, INPUT)
    x[2, 1, 0] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        model(x)


@pytest.mark.parametrize(
    "lengths,match",
    [
        (torch.tensor([7, 3, 5, 0]), r"\[1, T=7\].*from 0 to 7"),
        (torch.tensor([8, 3, 5, 1]), r"\[1, T=7\].*from 1 to 8"),
        (torch.tensor([7, 3, 5]), "expected 4 lengths"),
        (torch.tensor([7.0, 3, 5, 1]), "integer tensor"),
    ],
)
def test_bad_lengths_are_explained(model, lengths, match):
    with pytest.raises(ValueError, match=match):
        model(torch.randn(STEPS, BATCH, INPUT), lengths=lengths)


def test_bad_initial_state_is_explained(model):
    h0 = torch.zeros(2, BATCH, HIDDEN)
    with pytest.raises(ValueError, match=r"tuple \(h, c\)"):
        model(torch.randn(STEPS, BATCH, INPUT), h0)
    with pytest.raises(ValueError, match=r"\(2, 4, 5\), got \(1, 4, 5\)"):
        model(torch.randn(STEPS, BATCH, INPUT), (h0[:1], h0[:1]))


def test_mismatched_stack_is_refused():
    with pytest.raises(ValueError, match="same cell type"):
        Recurrent([ElmanCell(3, 4), GRUCell(4, 4)])
    with pytest.raises(ValueError, match="layer 1 expects input size 5"):
        Recurrent([ElmanCell(3, 4), ElmanCell(5, 4)])


def test_unknown_cell_suggests_the_closest():
    with pytest.raises(ValueError, match="Did you mean 'lstm'"):
        Recurrent.from_name("lstn", INPUT, HIDDEN)


@pytest.mark.parametrize("name", ["lstm", "rnn-tanh", "skip-rnn:2"])
def test_residual_layers_add_each_layers_input(name):
    torch.manual_seed(4)
    stack = Recurrent.from_name(name, 3, 5, num_layers=3, residual=True)
    x = torch.randn(6, 2, 3)
    output, _ = stack(x)
    expected = x
    for layer, cell in enumerate(stack.cells):
        single = Recurrent([cell])
        out, _ = single(expected)
        expected = out + expected if layer > 0 else out
    torch.testing.assert_close(output, expected)
    # the same with variable lengths, through the fused and the unrolled paths
    lengths = torch.tensor([6, 3])
    fused, _ = stack(x, lengths=lengths)
    handle = stack.register_step_hook(lambda *args: None)
    unrolled, _ = stack(x, lengths=lengths)
    handle.remove()
    torch.testing.assert_close(fused, unrolled)
    assert fused[3:, 1].abs().max() == 0  # padding stays zero


def backward_nodes(tensor: torch.Tensor) -> dict[str, int]:
    """How many distinct nodes of each kind the autograd graph of ``tensor`` holds."""
    counts: dict[str, int] = {}
    seen, stack = set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        counts[type(node).__name__] = counts.get(type(node).__name__, 0) + 1
        stack.extend(next_node for next_node, _ in node.next_functions)
    return counts


@pytest.mark.parametrize("cell", ["rnn-tanh", "lstm", "indrnn"])
@pytest.mark.parametrize("tap", ["hook", "tape", "hook-lengths"])
def test_unrolled_loop_takes_every_step_input_from_one_unbind(cell, tap):
    """Regression (bug 3, a quadratic backward): the unrolled loop took x[t] from the layer's
    (T, B, I) input, one select node per step, whose backward each adds into a zero tensor of
    the whole input's size (O(T^2) when the input requires grad, as every layer above the first
    does). One unbind node per layer hands all steps their gradients at once."""
    steps, layers = 9, 2
    model = Recurrent.from_name(cell, INPUT, HIDDEN, layers, batch_first=True)
    x = torch.randn(BATCH, steps, INPUT, requires_grad=True)
    lengths = torch.tensor([9, 4, 7, 1]) if tap == "hook-lengths" else None
    with contextlib.ExitStack() as stack:
        if tap.startswith("hook"):
            model.register_step_hook(lambda layer, t, state: None)
        elif tap == "tape":
            stack.enter_context(model.recording_tape())
        output, _ = model(x, lengths=lengths)
    counts = backward_nodes(output)
    assert counts.get("SelectBackward0", 0) == 0, counts
    assert counts.get("UnbindBackward0", 0) == layers, counts
    output.sum().backward()  # and the gradient still reaches the input
    assert x.grad is not None and x.grad.abs().sum() > 0
