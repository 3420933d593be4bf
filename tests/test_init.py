"""bptt.init: per-gate orthogonal and identity initialisers, and the named schemes."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from bptt.cells import GRUCell
from bptt.init import INITS, identity_, init_recurrent_, orthogonal_

H = 8


def gate_blocks(weight: Tensor, num_gates: int) -> list[Tensor]:
    return list(weight.detach().chunk(num_gates, dim=0))


def assert_orthogonal(block: Tensor, gain: float = 1.0) -> None:
    eye = torch.eye(block.shape[0], dtype=block.dtype)
    torch.testing.assert_close(block.T @ block, gain**2 * eye, atol=1e-10, rtol=0)
    torch.testing.assert_close(block @ block.T, gain**2 * eye, atol=1e-10, rtol=0)


def snapshot(module: nn.Module) -> dict[str, Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


# --- orthogonal_ -------------------------------------------------------------------------


@pytest.mark.parametrize("num_gates", [1, 3, 4])
def test_orthogonal_each_gate_block_is_orthogonal(num_gates: int) -> None:
    weight = torch.empty(num_gates * H, H, dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    out = orthogonal_(weight, gain=1.5, num_gates=num_gates, generator=generator)
    assert out is weight
    blocks = gate_blocks(weight, num_gates)
    for block in blocks:
        assert_orthogonal(block, gain=1.5)
    for i in range(num_gates):
        for j in range(i + 1, num_gates):
            # independent draws: different blocks, and not a rotation of one another by a
            # fixed relation such as block_i = ±block_j
            assert (blocks[i] - blocks[j]).abs().max() > 0.1
            assert (blocks[i] + blocks[j]).abs().max() > 0.1


def test_torch_orthogonal_on_stacked_gates_is_not_orthogonal_per_gate() -> None:
    # torch makes the (4H, H) stack semi-orthogonal as a whole: W^T W = I, so each block
    # has block^T block far from I (the four Gram matrices sum to I). Ours: each is I.
    reference = nn.init.orthogonal_(torch.empty(4 * H, H, dtype=torch.float64))
    torch.testing.assert_close(reference.T @ reference, torch.eye(H, dtype=torch.float64))
    ours = orthogonal_(torch.empty(4 * H, H, dtype=torch.float64), num_gates=4)
    eye = torch.eye(H, dtype=torch.float64)
    for theirs_block, our_block in zip(gate_blocks(reference, 4), gate_blocks(ours, 4)):
        assert (theirs_block.T @ theirs_block - eye).abs().max() > 0.3
        assert_orthogonal(our_block)
    # Stacked, our Gram matrix is G * I, not I: ours is not one orthogonal block.
    torch.testing.assert_close(ours.T @ ours, 4 * eye, atol=1e-10, rtol=0)


def test_orthogonal_is_haar_thanks_to_the_sign_correction() -> None:
    # Without Q * sign(diag R), Householder QR gives Q[0, 0] = -|a_11| / ||a_1|| < 0 always
    # (mean about -0.42 for 4x4); for Haar-distributed Q every entry has mean 0, std 1/2.
    samples = 2000
    weight = orthogonal_(
        torch.empty(samples * 4, 4, dtype=torch.float64),
        num_gates=samples,
        generator=torch.Generator().manual_seed(1),
    )
    blocks = weight.view(samples, 4, 4)
    assert blocks[:, 0, 0].mean().abs() < 0.06  # 5 standard errors
    assert blocks.diagonal(dim1=-2, dim2=-1).mean().abs() < 0.03
    assert (blocks[:, 0, 0] > 0).any() and (blocks[:, 0, 0] < 0).any()


def test_orthogonal_generator_is_reproducible() -> None:
    def draw(seed: int) -> Tensor:
        generator = torch.Generator().manual_seed(seed)
        return orthogonal_(torch.empty(3 * H, H), num_gates=3, generator=generator)

    torch.testing.assert_close(draw(0), draw(0), atol=0, rtol=0)
    assert not torch.equal(draw(0), draw(1))


def test_orthogonal_low_precision_and_grad_leaf() -> None:
    weight = nn.Parameter(torch.empty(2 * H, H, dtype=torch.bfloat16))
    orthogonal_(weight, num_gates=2)
    assert weight.requires_grad and weight.dtype == torch.bfloat16
    for block in gate_blocks(weight.float(), 2):
        torch.testing.assert_close(block.T @ block, torch.eye(H), atol=0.05, rtol=0)


# --- identity_ ---------------------------------------------------------------------------


@pytest.mark.parametrize("num_gates", [1, 3, 4])
def test_identity_gives_scaled_identity_per_gate(num_gates: int) -> None:
    weight = torch.randn(num_gates * H, H, dtype=torch.float64)
    assert identity_(weight, scale=0.5, num_gates=num_gates) is weight
    expected = 0.5 * torch.eye(H, dtype=torch.float64)
    for block in gate_blocks(weight, num_gates):
        torch.testing.assert_close(block, expected, atol=0, rtol=0)


# --- validation --------------------------------------------------------------------------


@pytest.mark.parametrize("fill", [orthogonal_, identity_])
@pytest.mark.parametrize(
    ("shape", "num_gates", "message"),
    [
        ((4 * H,), 4, "2-D"),
        ((4 * H, H, 1), 4, "2-D"),
        ((4 * H, H), 3, "divides"),
        ((4 * H, H + 1), 4, "square"),
        ((4 * H, H), 1, "square"),
        ((4 * H, H), 0, "positive integer"),
        ((4 * H, H), 2.0, "positive integer"),
    ],
)
def test_bad_shapes_and_num_gates_raise(fill, shape, num_gates, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        fill(torch.empty(shape), num_gates=num_gates)
    assert fill.__name__ in str(info.value)


# --- init_recurrent_ ---------------------------------------------------------------------


def test_orthogonal_scheme_on_two_layer_lstm_touches_every_layer_per_gate() -> None:
    lstm = nn.LSTM(5, H, num_layers=2).double()
    before = snapshot(lstm)
    assert init_recurrent_(lstm, "orthogonal", gain=0.9) is lstm
    after = snapshot(lstm)
    for name in ("weight_hh_l0", "weight_hh_l1"):
        assert not torch.equal(before[name], after[name])
        for block in gate_blocks(after[name], 4):
            assert_orthogonal(block, gain=0.9)
    for name in after:
        if not name.startswith("weight_hh"):
            torch.testing.assert_close(after[name], before[name], atol=0, rtol=0)


def test_orthogonal_scheme_covers_reverse_directions_and_cells() -> None:
    gru = nn.GRU(3, H, bidirectional=True).double()
    init_recurrent_(gru, "orthogonal")
    for name in ("weight_hh_l0", "weight_hh_l0_reverse"):
        for block in gate_blocks(getattr(gru, name), 3):
            assert_orthogonal(block)
    cells = nn.ModuleList([nn.LSTMCell(3, H), GRUCell(H, H)]).double()
    init_recurrent_(cells, "orthogonal")
    for cell, num_gates in zip(cells, (4, 3)):
        for block in gate_blocks(cell.weight_hh, num_gates):
            assert_orthogonal(block)


def test_identity_scheme_on_relu_rnn_is_irnn() -> None:
    inputs = 64
    rnn = nn.RNN(inputs, H, num_layers=2, nonlinearity="relu").double()
    init_recurrent_(rnn, "identity", input_std=1e-3)
    eye = torch.eye(H, dtype=torch.float64)
    for layer in range(2):
        torch.testing.assert_close(getattr(rnn, f"weight_hh_l{layer}"), eye, atol=0, rtol=0)
        for bias in ("bias_ih", "bias_hh"):
            assert not getattr(rnn, f"{bias}_l{layer}").any()
    weight_ih = rnn.weight_ih_l0.detach()  # 512 draws: std within ~3% (1 standard error)
    assert weight_ih.std().item() == pytest.approx(1e-3, rel=0.15)
    assert weight_ih.mean().abs().item() < 3e-4


def test_identity_scheme_scale_on_gated_cell() -> None:
    lstm = nn.LSTM(3, H).double()
    init_recurrent_(lstm, "identity", scale=0.25, input_std=0.0)
    for block in gate_blocks(lstm.weight_hh_l0, 4):
        torch.testing.assert_close(block, 0.25 * torch.eye(H, dtype=torch.float64), atol=0, rtol=0)
    assert not lstm.weight_ih_l0.any() and not lstm.bias_ih_l0.any() and not lstm.bias_hh_l0.any()


def test_default_scheme_is_a_no_op() -> None:
    lstm = nn.LSTM(3, H, num_layers=2)
    before = snapshot(lstm)
    init_recurrent_(lstm, "default")
    for name, value in snapshot(lstm).items():
        assert torch.equal(value, before[name])


@pytest.mark.parametrize(
    ("scheme", "drawn"), [("orthogonal", "weight_hh"), ("identity", "weight_ih")]
)
def test_generator_makes_the_schemes_reproducible(scheme: str, drawn: str) -> None:
    def build(default_seed: int, seed: int) -> nn.RNN:
        torch.manual_seed(default_seed)  # torch's default draws, overwritten by the scheme
        rnn = nn.RNN(4, H, num_layers=2, nonlinearity="relu")
        return init_recurrent_(rnn, scheme, generator=torch.Generator().manual_seed(seed))

    first, again, other = build(0, 7), build(1, 7), build(0, 8)
    for layer in (0, 1):
        name = f"{drawn}_l{layer}"
        assert torch.equal(getattr(first, name), getattr(again, name)), name
        assert not torch.equal(getattr(first, name), getattr(other, name)), name


def test_initialised_rnn_still_runs_on_fused_path() -> None:
    lstm = nn.LSTM(3, H, num_layers=2)
    init_recurrent_(lstm, "orthogonal")
    output, _ = lstm(torch.randn(5, 2, 3))
    assert torch.isfinite(output).all()
    output.sum().backward()
    assert lstm.weight_hh_l1.grad is not None


def test_registry_names() -> None:
    assert INITS.names() == ["default", "identity", "orthogonal"]


def test_unknown_scheme_suggests_the_closest_name() -> None:
    with pytest.raises(ValueError, match="Did you mean 'orthogonal'"):
        init_recurrent_(nn.RNN(3, H), "orthogonl")


def test_module_without_recurrent_weight_raises() -> None:
    with pytest.raises(ValueError, match="weight_hh") as info:
        init_recurrent_(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)), "orthogonal")
    assert "0.weight" in str(info.value)


def test_lstm_with_projection_raises_instead_of_guessing_gates() -> None:
    lstm = nn.LSTM(3, 4, proj_size=2)  # weight_hh_l0 is (16, 2): rows // cols = 8 is wrong
    init_recurrent_(lstm, "default")
    with pytest.raises(ValueError, match="proj_size"):
        init_recurrent_(lstm, "orthogonal")


def test_negative_input_std_raises() -> None:
    with pytest.raises(ValueError, match="input_std"):
        init_recurrent_(nn.RNN(3, H), "identity", input_std=-1.0)
