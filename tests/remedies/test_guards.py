"""NonFiniteGuard: no NaN or Inf ever reaches the weights."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bptt.remedies.guards import NonFiniteGuard


def setup(policy="skip", lr=0.1, snapshot_every=1, optimizer=torch.optim.SGD):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    opt = optimizer(model.parameters(), lr=lr)
    return model, opt, NonFiniteGuard(model, opt, policy=policy, snapshot_every=snapshot_every)


def weights(model):
    return [p.detach().clone() for p in model.parameters()]


def backward(model, opt, scale=1.0, poison_grad=False):
    opt.zero_grad()
    loss = model(torch.ones(5, 3)).pow(2).mean() * scale
    loss.backward()
    if poison_grad:
        next(model.parameters()).grad[0, 0] = math.nan
    return loss


def test_skip_drops_a_nan_loss_and_a_nan_gradient():
    model, opt, guard = setup("skip")
    assert guard.step(backward(model, opt))
    before = weights(model)
    assert not guard.step(backward(model, opt, scale=math.nan))
    assert not guard.step(backward(model, opt, poison_grad=True))
    for old, new in zip(before, weights(model), strict=True):
        assert torch.equal(old, new)
    assert guard.counts.to_dict() == {"applied": 1, "skipped": 2, "rolled_back": 0}


def test_rollback_restores_the_last_good_state_and_lowers_the_learning_rate():
    model, opt, guard = setup("rollback", snapshot_every=2)
    guard.step(backward(model, opt))
    guard.step(backward(model, opt))  # snapshot after 2 applied updates
    good = weights(model)
    guard.step(backward(model, opt))  # applied, not snapshotted
    assert not guard.step(backward(model, opt, poison_grad=True))
    for old, new in zip(good, weights(model), strict=True):
        assert torch.equal(old, new)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    assert guard.counts.rolled_back == 1


def test_an_overflowing_update_is_undone_whatever_the_policy():
    model, opt, guard = setup("skip", lr=1e30)
    before = weights(model)
    assert not guard.step(backward(model, opt, scale=1e10))  # finite grads, 1e40 update
    assert all(torch.isfinite(p).all() for p in model.parameters())
    for old, new in zip(before, weights(model), strict=True):
        assert torch.equal(old, new)
    assert guard.counts.rolled_back == 1


@pytest.mark.parametrize("policy", ["skip", "rollback"])
def test_the_guard_never_lets_a_nan_reach_the_weights(policy):
    model, opt, guard = setup(policy, optimizer=torch.optim.Adam, snapshot_every=3)
    generator = torch.Generator().manual_seed(1)
    for _ in range(60):
        poisoned = bool(torch.rand(1, generator=generator) < 0.3)
        guard.step(backward(model, opt, poison_grad=poisoned))
        assert all(torch.isfinite(p).all() for p in model.parameters())
    counts = guard.counts
    assert counts.applied + counts.skipped + counts.rolled_back == 60
    assert counts.skipped + counts.rolled_back > 0


def test_state_dict_round_trip_and_errors():
    model, opt, guard = setup()
    guard.step(backward(model, opt, scale=math.nan))
    other = NonFiniteGuard(model, opt)
    other.load_state_dict(guard.state_dict())
    assert other.counts == guard.counts
    with pytest.raises(ValueError, match="policy"):
        NonFiniteGuard(model, opt, policy="ignore")
    with pytest.raises(ValueError, match="lr_factor"):
        NonFiniteGuard(model, opt, lr_factor=2.0)
