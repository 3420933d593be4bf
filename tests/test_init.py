"""bptt.init: per-gate orthogonal, identity, Henaff and Cayley initialisers, chrono and
forget-gate biases, and the named schemes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from bptt import Recurrent
from bptt.cells import ElmanCell, GRUCell, LSTMCell
from bptt.init import (
    INDRNN_MAGNITUDE,
    INITS,
    cayley_,
    chrono_,
    forget_bias_,
    henaff_,
    identity_,
    init_recurrent_,
    orthogonal_,
)

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
    for theirs_block, our_block in zip(gate_blocks(reference, 4), gate_blocks(ours, 4), strict=True):
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


# --- henaff_ ----------------------------------------------------------------------------


def henaff_angles(block: Tensor) -> Tensor:
    """The angles s_k of a Henaff block, read off its 2x2 rotations [[cos, sin], [-sin, cos]]."""
    even = torch.arange(0, block.shape[0] - 1, 2)
    return torch.atan2(block[even, even + 1], block[even, even])


def skew_from_angles(angles: Tensor, size: int) -> Tensor:
    skew = torch.zeros(size, size, dtype=angles.dtype)
    even = torch.arange(0, 2 * angles.numel(), 2)
    skew[even, even + 1] = angles
    skew[even + 1, even] = -angles
    return skew


@pytest.mark.parametrize(("size", "num_gates"), [(8, 1), (8, 4), (7, 3)])
def test_henaff_is_the_exponential_of_a_block_skew_matrix(size: int, num_gates: int) -> None:
    weight = torch.empty(num_gates * size, size, dtype=torch.float64)
    out = henaff_(weight, num_gates=num_gates, generator=torch.Generator().manual_seed(0))
    assert out is weight
    blocks = list(weight.chunk(num_gates, dim=0))
    for block in blocks:
        assert_orthogonal(block)
        assert torch.linalg.det(block).item() == pytest.approx(1.0, abs=1e-12)
        angles = henaff_angles(block)
        assert angles.numel() == size // 2 and (angles.abs() < math.pi).all()
        # W = expm(A) with A = blockdiag([[0, s], [-s, 0]]); odd H: a trailing 1
        expected = torch.linalg.matrix_exp(skew_from_angles(angles, size))
        torch.testing.assert_close(block, expected, atol=1e-12, rtol=0)
        if size % 2:
            assert block[-1, -1].item() == 1.0
            assert not block[-1, :-1].any() and not block[:-1, -1].any()
        # eigenvalues e^{±i s_k}: on the unit circle, phases the drawn angles
        eigenvalues = torch.linalg.eigvals(block)
        torch.testing.assert_close(
            eigenvalues.abs(), torch.ones(size, dtype=torch.float64), atol=1e-12, rtol=0
        )
        phases = eigenvalues.angle().sort().values
        expected_phases = torch.cat([angles, -angles] + ([angles.new_zeros(1)] if size % 2 else []))
        torch.testing.assert_close(phases, expected_phases.sort().values, atol=1e-10, rtol=0)
    assert (blocks[0] - blocks[-1]).abs().max() > 0.1 or num_gates == 1


def test_henaff_phases_are_uniform_on_minus_pi_pi() -> None:
    samples = 4000
    weight = henaff_(
        torch.empty(samples * 2, 2, dtype=torch.float64),
        num_gates=samples,
        generator=torch.Generator().manual_seed(3),
    )
    angles = torch.stack([henaff_angles(block) for block in weight.view(samples, 2, 2)])
    # U(-pi, pi): mean 0, std pi / sqrt(3) ~ 1.81; standard error of the mean ~ 0.03
    assert angles.mean().abs() < 0.15
    assert angles.std().item() == pytest.approx(math.pi / math.sqrt(3), rel=0.05)
    assert angles.min() < -3.0 and angles.max() > 3.0


# --- cayley_ -----------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "num_gates"), [(8, 1), (8, 4), (5, 3)])
def test_cayley_is_orthogonal_and_inverts_to_a_bounded_skew_matrix(
    size: int, num_gates: int
) -> None:
    weight = torch.empty(num_gates * size, size, dtype=torch.float64)
    out = cayley_(weight, num_gates=num_gates, generator=torch.Generator().manual_seed(0))
    assert out is weight
    eye = torch.eye(size, dtype=torch.float64)
    blocks = list(weight.chunk(num_gates, dim=0))
    for block in blocks:
        assert_orthogonal(block)
        assert torch.linalg.det(block).item() == pytest.approx(1.0, abs=1e-10)
        # the Cayley transform is an involution: A = (I + W)^{-1} (I - W), skew-symmetric
        # with the drawn upper triangle in (-pi, pi)
        skew = torch.linalg.solve(eye + block, eye - block)
        torch.testing.assert_close(skew, -skew.T, atol=1e-10, rtol=0)
        assert skew.diagonal().abs().max() < 1e-10
        upper = skew[torch.triu_indices(size, size, offset=1).unbind()]
        assert (upper.abs() < math.pi).all() and upper.abs().max() > 1.0
        torch.testing.assert_close(
            torch.linalg.solve(eye + skew, eye - skew), block, atol=1e-10, rtol=0
        )
    assert (blocks[0] - blocks[-1]).abs().max() > 0.1 or num_gates == 1


@pytest.mark.parametrize("fill", [henaff_, cayley_])
def test_henaff_and_cayley_generators_are_reproducible(fill) -> None:
    def draw(seed: int) -> Tensor:
        generator = torch.Generator().manual_seed(seed)
        return fill(torch.empty(4 * H, H, dtype=torch.float64), num_gates=4, generator=generator)

    torch.testing.assert_close(draw(0), draw(0), atol=0, rtol=0)
    assert not torch.equal(draw(0), draw(1))


@pytest.mark.parametrize("fill", [henaff_, cayley_])
def test_henaff_and_cayley_low_precision_parameter(fill) -> None:
    weight = nn.Parameter(torch.empty(2 * H, H, dtype=torch.bfloat16))
    fill(weight, num_gates=2)
    assert weight.requires_grad and weight.dtype == torch.bfloat16
    for block in gate_blocks(weight.float(), 2):
        torch.testing.assert_close(block.T @ block, torch.eye(H), atol=0.05, rtol=0)


@pytest.mark.parametrize("scheme", ["henaff", "cayley"])
def test_henaff_and_cayley_schemes_touch_only_recurrent_weights(scheme: str) -> None:
    gru = nn.GRU(3, H, num_layers=2, bidirectional=True).double()
    before = snapshot(gru)
    init_recurrent_(gru, scheme, generator=torch.Generator().manual_seed(0))
    after = snapshot(gru)
    for name in after:
        if name.startswith("weight_hh"):
            assert not torch.equal(before[name], after[name])
            for block in gate_blocks(after[name], 3):
                assert_orthogonal(block)
        else:
            assert torch.equal(before[name], after[name]), name


# --- chrono_ and forget_bias_ ------------------------------------------------------------


def bias_blocks(module: nn.Module, suffix: str, num_gates: int) -> tuple[Tensor, Tensor]:
    """(bias_ih, bias_hh) of one layer, each viewed as (num_gates, H)."""
    return tuple(
        getattr(module, f"{kind}{suffix}").detach().view(num_gates, -1)
        for kind in ("bias_ih", "bias_hh")
    )


def assert_chrono_lstm(module: nn.Module, suffix: str, max_length: int) -> None:
    ih, hh = bias_blocks(module, suffix, 4)
    assert not ih.any()  # the whole value sits in bias_hh
    total = ih + hh
    forget = total[1]
    assert (forget >= 0).all() and (forget <= math.log(max_length - 1) + 1e-12).all()
    torch.testing.assert_close(total[0], -forget, atol=0, rtol=0)  # b_i = -b_f
    assert not total[2].any() and not total[3].any()  # b_g = b_o = 0
    # the memory times 1 + e^{b_f} are spread over [2, T_max]: not all equal
    assert forget.std() > 0.1


def test_chrono_on_bptt_lstm_cell() -> None:
    cell = LSTMCell(3, 64).double()
    weights = {name: p.detach().clone() for name, p in cell.named_parameters() if "weight" in name}
    assert chrono_(cell, max_length=100) is cell
    assert_chrono_lstm(cell, "", 100)
    for name, value in weights.items():
        assert torch.equal(getattr(cell, name), value)  # weights are left as they are


def test_chrono_forget_biases_are_log_uniform_on_1_to_tmax_minus_1() -> None:
    max_length, cells = 50, 200  # 200 cells of H = 100 units: 20000 draws
    module = nn.ModuleList([LSTMCell(1, 100) for _ in range(cells)]).double()
    chrono_(module, max_length, generator=torch.Generator().manual_seed(0))
    # e^{b_f} ~ U(1, T_max - 1)
    memory = torch.cat([cell.bias_hh.detach().view(4, 100)[1] for cell in module]).exp()
    assert memory.min() >= 1 - 1e-12 and memory.max() <= max_length - 1 + 1e-12
    # U(1, 49): mean 25, std 48 / sqrt(12) ~ 13.9; standard error of the mean ~ 0.1
    assert memory.mean().item() == pytest.approx(25.0, abs=0.5)
    assert memory.std().item() == pytest.approx(48 / math.sqrt(12), rel=0.03)


def test_chrono_on_torch_lstm_every_layer_and_direction() -> None:
    lstm = nn.LSTM(3, H, num_layers=2, bidirectional=True).double()
    chrono_(lstm, max_length=30)
    suffixes = [f"_l{k}{d}" for k in range(2) for d in ("", "_reverse")]
    for suffix in suffixes:
        assert_chrono_lstm(lstm, suffix, 30)
    forgets = [bias_blocks(lstm, suffix, 4)[1][1] for suffix in suffixes]
    assert not torch.equal(forgets[0], forgets[1])  # a new draw per layer and direction


def test_chrono_on_lstm_with_projection() -> None:
    lstm = nn.LSTM(3, H, proj_size=2).double()
    chrono_(lstm, max_length=10)
    assert_chrono_lstm(lstm, "_l0", 10)


@pytest.mark.parametrize("module", [GRUCell(3, H), nn.GRU(3, H, num_layers=2), nn.GRUCell(3, H)])
def test_chrono_on_gru_sets_the_update_gate_bias_positive(module: nn.Module) -> None:
    module = module.double()
    max_length = 40
    chrono_(module, max_length=max_length)
    suffixes = ["_l0", "_l1"] if isinstance(module, nn.GRU) else [""]
    for suffix in suffixes:
        ih, hh = bias_blocks(module, suffix, 3)
        assert not ih.any()
        update = (ih + hh)[1]
        assert (update >= 0).all() and (update <= math.log(max_length - 1) + 1e-12).all()
        assert update.std() > 0.1
        assert not hh[0].any() and not hh[2].any()  # reset and candidate biases 0


def test_chrono_gru_keeps_memory_with_the_update_gate() -> None:
    # h' = (1 - z) n + z h: with zero weights, z = sigma(b_z) = tau / (1 + tau), and the
    # state decays geometrically by z per step from h to n = tanh(0) = 0.
    cell = GRUCell(1, H).double()
    chrono_(cell, max_length=1000, generator=torch.Generator().manual_seed(0))
    nn.init.zeros_(cell.weight_ih)
    nn.init.zeros_(cell.weight_hh)
    state = torch.ones(1, H, dtype=torch.float64)
    update = torch.sigmoid(cell.bias_hh.detach().view(3, H)[1])
    assert (update >= 0.5).all()  # z >= sigma(log 1) = 1/2: memory kept at least half
    after = cell.step(torch.zeros(1, 1, dtype=torch.float64), state)
    torch.testing.assert_close(after[0], update, atol=1e-12, rtol=0)


def test_chrono_generator_is_reproducible() -> None:
    def draw(seed: int) -> Tensor:
        lstm = nn.LSTM(3, H, num_layers=2)
        return chrono_(lstm, 20, generator=torch.Generator().manual_seed(seed)).bias_hh_l1

    assert torch.equal(draw(0), draw(0))
    assert not torch.equal(draw(0), draw(1))


def test_chrono_scheme_matches_chrono_and_needs_max_length() -> None:
    ours = init_recurrent_(
        nn.LSTM(3, H), "chrono", max_length=25, generator=torch.Generator().manual_seed(4)
    )
    reference = chrono_(nn.LSTM(3, H), 25, generator=torch.Generator().manual_seed(4))
    assert torch.equal(ours.bias_hh_l0, reference.bias_hh_l0)
    assert not ours.bias_ih_l0.any()
    with pytest.raises(ValueError, match="max_length"):
        init_recurrent_(nn.LSTM(3, H), "chrono")


@pytest.mark.parametrize("max_length", [1, 0, -5, math.inf, math.nan, True, "100"])
def test_chrono_bad_max_length_raises(max_length) -> None:
    with pytest.raises(ValueError, match="max_length"):
        chrono_(nn.LSTM(3, H), max_length)


def test_chrono_max_length_two_gives_zero_forget_bias() -> None:
    lstm = chrono_(nn.LSTM(3, H).double(), 2)  # U(1, 1) = 1: b_f = log 1 = 0
    assert not lstm.bias_ih_l0.any() and not lstm.bias_hh_l0.any()


@pytest.mark.parametrize("module", [LSTMCell(3, H), nn.LSTM(3, H, num_layers=2)])
def test_forget_bias_sets_exactly_the_forget_block(module: nn.Module) -> None:
    module = module.double()
    before = snapshot(module)
    assert forget_bias_(module, 2.5) is module
    suffixes = ["_l0", "_l1"] if isinstance(module, nn.LSTM) else [""]
    for suffix in suffixes:
        ih, hh = bias_blocks(module, suffix, 4)
        old_ih = before[f"bias_ih{suffix}"].view(4, H)
        old_hh = before[f"bias_hh{suffix}"].view(4, H)
        assert not ih[1].any()
        assert torch.equal(hh[1], torch.full((H,), 2.5, dtype=torch.float64))
        for gate in (0, 2, 3):  # i, g, o untouched
            assert torch.equal(ih[gate], old_ih[gate]) and torch.equal(hh[gate], old_hh[gate])
    for name, value in snapshot(module).items():
        if "weight" in name:
            assert torch.equal(value, before[name])


def test_forget_bias_default_and_scheme() -> None:
    lstm = forget_bias_(nn.LSTM(3, H).double())
    torch.testing.assert_close(
        (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach().view(4, H)[1],
        torch.ones(H, dtype=torch.float64), atol=0, rtol=0,
    )
    init_recurrent_(lstm, "forget-bias", forget_bias=0.5)
    assert torch.equal(lstm.bias_hh_l0.detach().view(4, H)[1], torch.full((H,), 0.5).double())


@pytest.mark.parametrize(
    ("call", "module", "message"),
    [
        (lambda m: chrono_(m, 10), ElmanCell(3, H), "Elman"),
        (lambda m: chrono_(m, 10), nn.RNN(3, H), "Elman"),
        (lambda m: chrono_(m, 10), nn.LSTM(3, H, bias=False), "bias=False"),
        (lambda m: chrono_(m, 10), GRUCell(3, H, bias=False), "bias=False"),
        (lambda m: chrono_(m, 10), nn.Linear(3, H), "weight_hh"),
        (forget_bias_, ElmanCell(3, H), "Elman"),
        (forget_bias_, GRUCell(3, H), "GRU"),
        (forget_bias_, nn.GRU(3, H), "chrono_"),
        (forget_bias_, LSTMCell(3, H, bias=False), "bias=False"),
        (lambda m: init_recurrent_(m, "chrono", max_length=10), nn.RNN(3, H), "Elman"),
        (lambda m: init_recurrent_(m, "forget-bias"), nn.GRU(3, H), "LSTM"),
    ],
)
def test_gate_bias_initialisers_reject_wrong_cells(call, module: nn.Module, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(module)


def test_gate_bias_initialisers_change_nothing_when_one_layer_is_wrong() -> None:
    cells = nn.ModuleList([LSTMCell(3, H), ElmanCell(3, H)])
    before = snapshot(cells)
    for call in (lambda m: chrono_(m, 10), forget_bias_):
        with pytest.raises(ValueError, match="Elman"):
            call(cells)
        for name, value in snapshot(cells).items():
            assert torch.equal(value, before[name]), name


# --- validation --------------------------------------------------------------------------


@pytest.mark.parametrize("fill", [orthogonal_, identity_, henaff_, cayley_])
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
    for cell, num_gates in zip(cells, (4, 3), strict=True):
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
    assert INITS.names() == [
        "cayley", "chrono", "default", "forget-bias", "henaff", "identity", "indrnn", "orthogonal"
    ]


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


def test_the_indrnn_scheme_is_the_published_initialisation():
    torch.manual_seed(0)
    model = Recurrent.from_name("indrnn", 2, 400, num_layers=3)
    init_recurrent_(model, "indrnn", max_length=100)
    bound = INDRNN_MAGNITUDE ** (1 / 100)
    lower, middle, top = (cell.weight_hh.detach() for cell in model.cells)
    for u in (lower, middle):  # U(0, 2^(1/T)): a spread of time scales
        assert 0 <= float(u.min()) < 0.05 and 0.95 < float(u.max()) <= bound
    assert 1 / bound <= float(top.min()) and float(top.max()) <= bound  # every top unit integrates
    for cell in model.cells:
        assert float(cell.weight_ih.detach().std()) == pytest.approx(1e-3, rel=0.1)
        assert float(cell.bias_ih.detach().abs().max()) == float(cell.bias_hh.detach().abs().max()) == 0.0
    with pytest.raises(ValueError, match="expected max_length"):
        init_recurrent_(model, "indrnn")
    with pytest.raises(ValueError, match="expected a vector recurrent weight"):
        init_recurrent_(torch.nn.RNN(2, 3), "indrnn", max_length=100)


@pytest.mark.parametrize("scheme", ["chrono", "forget-bias"])
def test_gate_bias_schemes_refuse_a_cell_with_its_own_gate_layout(scheme):
    lem = Recurrent.from_name("lem", 2, 4)  # weight_ih (4H, I) but weight_hh (3H, H): not a GRU
    before = [p.detach().clone() for p in lem.parameters()]
    with pytest.raises(ValueError, match="expected torch's gate layout"):
        init_recurrent_(lem, scheme, max_length=100)
    assert all(torch.equal(a, b) for a, b in zip(before, lem.parameters(), strict=True))
