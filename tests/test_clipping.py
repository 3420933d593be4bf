"""Clipping by norm keeps the direction; by value bounds entries; both report the pre-clip norm."""

from __future__ import annotations

import pytest
import torch

from bptt.remedies import clip_gradients_


def parameters_with_grads(*grads):
    params = []
    for grad in grads:
        p = torch.nn.Parameter(torch.zeros_like(grad))
        p.grad = grad.clone()
        params.append(p)
    return params


def test_clip_by_norm_keeps_the_direction_and_reports_the_norm():
    params = parameters_with_grads(torch.tensor([3.0, 0.0], dtype=torch.float64), torch.tensor([4.0], dtype=torch.float64))
    event = clip_gradients_(params, max_norm=1.0)
    assert event.norm == pytest.approx(5.0) and event.clipped and event.threshold == 1.0
    clipped = torch.cat([p.grad for p in params])
    torch.testing.assert_close(clipped, torch.tensor([0.6, 0.0, 0.8], dtype=torch.float64), atol=1e-6, rtol=0)


def test_clip_by_value_bounds_entries_and_changes_the_direction():
    params = parameters_with_grads(torch.tensor([3.0, 0.5], dtype=torch.float64))
    event = clip_gradients_(params, max_value=1.0)
    assert event.norm == pytest.approx((9.25) ** 0.5) and event.clipped
    clipped = params[0].grad
    torch.testing.assert_close(clipped, torch.tensor([1.0, 0.5], dtype=torch.float64))
    cosine = torch.nn.functional.cosine_similarity(clipped, torch.tensor([3.0, 0.5], dtype=torch.float64), dim=0)
    assert cosine < 0.99


def test_small_gradients_are_left_alone():
    params = parameters_with_grads(torch.tensor([0.3, 0.4]))
    event = clip_gradients_(params, max_norm=1.0)
    assert not event.clipped and event.norm == pytest.approx(0.5)
    torch.testing.assert_close(params[0].grad, torch.tensor([0.3, 0.4]))


def test_both_thresholds_is_an_error():
    with pytest.raises(ValueError, match="not both"):
        clip_gradients_([], max_norm=1.0, max_value=1.0)
