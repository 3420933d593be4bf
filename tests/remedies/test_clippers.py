"""Each clipper's defining property, in float64."""

from __future__ import annotations

import pytest
import torch

from bptt.remedies.clipping import (
    CLIPPERS,
    AGCClipper,
    AutoClipper,
    NormClipper,
    PerParameterNormClipper,
    ValueClipper,
    ZScoreClipper,
    make_clipper,
)


def params(*pairs):
    """Parameters with given (weight, grad) values."""
    out = []
    for weight, grad in pairs:
        p = torch.nn.Parameter(torch.as_tensor(weight, dtype=torch.float64).clone())
        p.grad = torch.as_tensor(grad, dtype=torch.float64).clone()
        out.append(p)
    return out


def flat_grad(ps):
    return torch.cat([p.grad.flatten() for p in ps])


def test_norm_clipping_keeps_the_direction_and_bounds_the_norm():
    ps = params(([0.0, 0.0], [3.0, 0.0]), ([0.0], [4.0]))
    before = flat_grad(ps)
    event = NormClipper(1.0)(ps)
    after = flat_grad(ps)
    assert event.norm == pytest.approx(5.0) and event.post_norm == pytest.approx(1.0, abs=1e-5)
    assert torch.nn.functional.cosine_similarity(before, after, dim=0) == pytest.approx(1.0)


def test_value_clipping_bounds_entries_and_changes_the_direction():
    ps = params(([0.0, 0.0], [3.0, 0.5]))
    event = ValueClipper(1.0)(ps)
    torch.testing.assert_close(ps[0].grad, torch.tensor([1.0, 0.5], dtype=torch.float64))
    assert event.clipped
    cosine = torch.nn.functional.cosine_similarity(ps[0].grad, torch.tensor([3.0, 0.5], dtype=torch.float64), dim=0)
    assert cosine < 0.99


def test_per_parameter_clipping_bounds_each_parameter():
    ps = params(([0.0, 0.0], [3.0, 4.0]), ([0.0], [0.5]))
    PerParameterNormClipper(1.0)(ps)
    assert ps[0].grad.norm() == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(ps[1].grad, torch.tensor([0.5], dtype=torch.float64))


def test_autoclip_threshold_is_the_percentile_of_the_history_and_resumes():
    generator = torch.Generator().manual_seed(0)
    clipper, history = AutoClipper(percentile=25), []
    for _ in range(20):
        grad = torch.randn(5, generator=generator, dtype=torch.float64) * 3
        ps = params((torch.zeros(5), grad))
        history.append(float(grad.norm()))
        event = clipper(ps)
        expected = float(torch.quantile(torch.tensor(history, dtype=torch.float64), 0.25))
        assert event.threshold == pytest.approx(expected)
        assert ps[0].grad.norm() <= expected + 1e-5
    resumed = AutoClipper(percentile=25)
    resumed.load_state_dict(clipper.state_dict())
    grad = torch.randn(5, generator=generator, dtype=torch.float64)
    assert resumed(params((torch.zeros(5), grad))) == clipper(params((torch.zeros(5), grad)))


def test_agc_clips_exactly_the_units_whose_ratio_is_too_large():
    weight = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    grad = torch.tensor([[0.5, 0.0], [0.01, 0.0], [0.0, 1.0]], dtype=torch.float64)
    ps = params((weight, grad))
    event = AGCClipper(clipping=0.1, eps=1e-3)(ps)
    # row 0: ratio 0.5 > 0.1 -> norm 0.1; row 1: 0.01/2 = 0.005 -> untouched;
    # row 2: zero weight -> limit 0.1 * eps = 1e-4
    torch.testing.assert_close(ps[0].grad[0], torch.tensor([0.1, 0.0], dtype=torch.float64))
    torch.testing.assert_close(ps[0].grad[1], grad[1])
    assert ps[0].grad[2].norm() == pytest.approx(1e-4)
    assert event.clipped


def test_zscore_clips_a_spike_after_warmup_but_not_ordinary_norms():
    generator = torch.Generator().manual_seed(1)
    clipper = ZScoreClipper(z=2.5, alpha=0.9, warmup=10)
    for _ in range(40):
        grad = torch.full((4,), 1.0, dtype=torch.float64) + 0.05 * torch.randn(4, generator=generator, dtype=torch.float64)
        event = clipper(params((torch.zeros(4), grad)))
        assert not event.clipped
    state = clipper.state_dict()
    spike = clipper(params((torch.zeros(4), torch.full((4,), 50.0, dtype=torch.float64))))
    assert spike.clipped and spike.post_norm == pytest.approx(spike.threshold, rel=1e-5)
    resumed = ZScoreClipper(z=2.5, alpha=0.9, warmup=10)
    resumed.load_state_dict(state)
    again = resumed(params((torch.zeros(4), torch.full((4,), 50.0, dtype=torch.float64))))
    assert again == spike


def test_make_clipper_parses_specs_and_explains_mistakes():
    assert isinstance(make_clipper("norm:1"), NormClipper) and make_clipper("norm:1").max_norm == 1.0
    assert isinstance(make_clipper("agc"), AGCClipper)
    assert make_clipper("none") is None
    assert set(CLIPPERS.names()) == {"norm", "per-parameter", "value", "autoclip", "agc", "zscore"}
    with pytest.raises(ValueError, match="clipper"):
        make_clipper("nrom:1")
    with pytest.raises(ValueError, match="expected a number"):
        make_clipper("norm:one")
    with pytest.raises(ValueError, match="positive"):
        make_clipper("value:-1")
