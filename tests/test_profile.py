"""Effective horizon and decay rate of a gradient profile, against analytic profiles."""

from __future__ import annotations

import math

import pytest
import torch

from bptt import GradientProfile, Recurrent, decay_rate, effective_horizon


def geometric(rate: float, steps: int) -> torch.Tensor:
    """||delta_k|| = rate^(T-k): the profile of a scalar linear RNN with weight `rate`."""
    return rate ** torch.arange(steps - 1, -1, -1, dtype=torch.float64)


@pytest.mark.parametrize("rate", [0.5, 0.9, 0.99])
def test_horizon_of_a_geometric_profile(rate):
    # rate^d >= 1e-3  <=>  d <= log(1e-3) / log(rate)
    expected = min(99, math.floor(math.log(1e-3) / math.log(rate)))
    assert effective_horizon(geometric(rate, 100)) == expected


@pytest.mark.parametrize("rate", [0.5, 0.9, 1.1])
def test_decay_rate_recovers_the_factor(rate):
    assert decay_rate(geometric(rate, 50)) == pytest.approx(rate, rel=1e-9)


def test_horizon_edge_cases():
    assert effective_horizon(torch.tensor([0.0, 0.0, 0.0])) == 0
    assert effective_horizon(torch.tensor([5.0, 1.0])) == 1
    with pytest.raises(ValueError, match="non-finite"):
        effective_horizon(torch.tensor([float("nan"), 1.0]))
    with pytest.raises(ValueError, match="1-D"):
        effective_horizon(torch.ones(2, 2))
    assert math.isnan(decay_rate(torch.tensor([0.0, 1.0])))


def test_scalar_rnn_profile_is_the_closed_form():
    """H = 1: ||dh_T/dh_k|| = |w|^(T-k) * prod_{i>k} |f'(z_i)|, through Recurrent's recording."""
    torch.manual_seed(0)
    model = Recurrent.from_name("rnn-tanh", 1, 1).double()
    cell = model.cells[0]
    with torch.no_grad():
        cell.weight_hh.fill_(0.8)
    x = torch.randn(30, 1, 1, dtype=torch.float64)
    with model.recording_profile() as profile:
        output, _ = model(x)
        output[-1].sum().backward()
    derivative = (1 - output.detach().squeeze() ** 2)  # f'(z_i) for tanh
    steps = x.shape[0]
    expected = torch.stack(
        [0.8 ** (steps - 1 - k) * derivative[k + 1 :].prod() for k in range(steps)]
    )
    torch.testing.assert_close(profile.norms(), expected, atol=1e-12, rtol=1e-10)


def test_empty_profile_says_how_to_fill_it():
    with pytest.raises(RuntimeError, match="recording_profile"):
        GradientProfile().norms()


def test_nested_recording_is_refused():
    model = Recurrent.from_name("rnn-tanh", 1, 1)
    with model.recording_profile(), pytest.raises(RuntimeError, match="already"), model.recording_profile():
        pass


def test_the_profile_by_distance_aligns_each_sample_at_its_last_step():
    per_sample = torch.tensor([[1.0, 5.0], [2.0, 6.0], [3.0, 0.0]], dtype=torch.float64)  # (T=3, B=2)
    profile = GradientProfile({0: per_sample})
    lengths = torch.tensor([3, 2])  # sample 1's loss is at step 1; its step 2 is padding
    expected = torch.tensor([  # distance 2, 1, 0 (the loss step last)
        1.0,
        (2.0**2 + 5.0**2) ** 0.5,
        (3.0**2 + 6.0**2) ** 0.5,
    ], dtype=torch.float64)
    torch.testing.assert_close(profile.norms_by_distance(lengths), expected)
    full = torch.tensor([3, 3])
    torch.testing.assert_close(profile.norms_by_distance(full), profile.norms())
