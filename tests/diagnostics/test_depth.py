"""diagnose_depth against plain autograd and jacrev Jacobians, in float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bptt
from bptt.diagnostics import DepthDiagnosis, diagnose_depth

F64 = torch.float64


def stack(
    depth: int, width: int = 5, gain: float = 1.0, activation: type[nn.Module] = nn.Tanh
) -> nn.Sequential:
    torch.manual_seed(0)
    layers = []
    for _ in range(depth):
        linear = nn.Linear(width, width).to(F64)
        with torch.no_grad():
            linear.weight.mul_(gain)
        layers.append(nn.Sequential(linear, activation()))
    return nn.Sequential(*layers, nn.Linear(width, 1).to(F64))


def batch(width: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(6, width, generator=g, dtype=F64), torch.randn(
        6, 1, generator=g, dtype=F64
    )


def test_profile_and_parameter_gradients_equal_autograd() -> None:
    model, (x, y) = stack(8), batch()
    diagnosis = diagnose_depth(model, x, y)
    outputs, current = [], x
    for layer in model:
        current = layer(current)
        current.retain_grad()
        outputs.append(current)
    nn.functional.mse_loss(current, y).backward()
    expected = torch.stack([output.grad.norm() for output in outputs])
    torch.testing.assert_close(diagnosis.profile, expected, rtol=1e-12, atol=0)
    grads = [
        torch.cat([p.grad.flatten() for p in layer.parameters()]).norm()
        for layer in model
    ]
    torch.testing.assert_close(
        diagnosis.parameter_grad_norms, torch.stack(grads), rtol=1e-12, atol=0
    )
    assert diagnosis.names == [str(i) for i in range(9)]


def test_leaves_grad_untouched() -> None:
    model, (x, y) = stack(3), batch()
    diagnose_depth(model, x, y)
    assert all(p.grad is None for p in model.parameters())


def test_step_norms_equal_jacrev() -> None:
    model, (x, y) = stack(4, gain=2.0), batch()
    diagnosis = diagnose_depth(model, x, y, spectra_samples=3, power_iterations=200)
    current = x[:3]
    for index, layer in enumerate(model):
        for sample in range(3):
            jacobian = torch.func.jacrev(layer)(current[sample])
            expected = torch.linalg.matrix_norm(
                jacobian.reshape(jacobian.shape[0], -1), 2
            )
            torch.testing.assert_close(
                diagnosis.step_norms[index, sample], expected, rtol=1e-6, atol=0
            )
        current = layer(current).detach()


def test_horizon_decay_and_verdict_follow_the_profile() -> None:
    # a linear stack with W = a I: delta shrinks by exactly a per layer
    layers = []
    for _ in range(30):
        linear = nn.Linear(4, 4, bias=False).to(F64)
        nn.init.eye_(linear.weight)
        linear.weight.data.mul_(0.5)
        layers.append(linear)
    model = nn.Sequential(*layers)
    x, y = torch.ones(2, 4, dtype=F64), torch.zeros(2, 4, dtype=F64)
    diagnosis = diagnose_depth(model, x, y, loss_fn=lambda out, t: out.sum())
    assert diagnosis.decay_rate == pytest.approx(0.5, rel=1e-9)
    assert diagnosis.horizon == 9  # 0.5**9 >= 1e-3 > 0.5**10
    assert diagnosis.verdict.kind == "vanishing"
    torch.testing.assert_close(
        diagnosis.step_norms, torch.full((30, 2), 0.5, dtype=F64)
    )
    healthy = diagnose_depth(stack(6), *batch())
    assert healthy.verdict.kind in ("healthy", "vanishing")
    assert isinstance(healthy, DepthDiagnosis) and "verdict" in healthy.summary()


def test_bad_inputs_raise() -> None:
    x, y = batch()
    with pytest.raises(TypeError, match="nn.Sequential"):
        diagnose_depth(nn.Linear(5, 1).to(F64), x, y)
    with pytest.raises(ValueError, match="at least 2 layers"):
        diagnose_depth(nn.Sequential(nn.Linear(5, 1).to(F64)), x, y)


def test_bptt_diagnose_takes_a_feed_forward_stack() -> None:
    model, (x, y) = stack(5), batch()
    diagnosis = bptt.diagnose(model, x, y)
    assert isinstance(diagnosis, DepthDiagnosis)
    torch.testing.assert_close(diagnosis.profile, diagnose_depth(model, x, y).profile)
