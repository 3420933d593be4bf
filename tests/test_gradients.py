"""The global gradient norm, against torch's clip_grad_norm_."""

from __future__ import annotations

import math

import torch

from bptt.gradients import global_grad_norm


def test_global_grad_norm_is_what_clip_grad_norm_measures():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    frozen = torch.nn.Parameter(torch.ones(5))  # no gradient: left out
    model(torch.randn(8, 3)).square().sum().backward()
    parameters = [*model.parameters(), frozen]
    norm = global_grad_norm(parameters)
    assert norm.ndim == 0
    expected = torch.nn.utils.clip_grad_norm_(model.parameters(), math.inf)
    assert torch.equal(norm, expected)


def test_no_gradient_is_a_zero_norm_and_nan_propagates():
    assert float(global_grad_norm([torch.nn.Parameter(torch.ones(2))])) == 0.0
    parameter = torch.nn.Parameter(torch.ones(2))
    parameter.grad = torch.tensor([1.0, math.nan])
    assert math.isnan(float(global_grad_norm([parameter])))
