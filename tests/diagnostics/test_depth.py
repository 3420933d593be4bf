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


def reference(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, loss_fn) -> tuple[torch.Tensor, torch.Tensor]:
    """‖∂L/∂a_l‖ per layer and each layer's trainable-parameter gradient norm, by torch.func.grad.

    ``∂L/∂a_l`` is the gradient of the loss as a function of a_l alone (the layers above
    a_l applied to it), so nothing upstream of a_l has to require grad.
    """
    layers, activations, current = list(model), [], x
    for layer in layers:
        current = layer(current)
        activations.append(current.detach())

    def loss_from(index: int):
        def above(a: torch.Tensor) -> torch.Tensor:
            for layer in layers[index + 1 :]:
                a = layer(a)
            return loss_fn(a, y)

        return above

    profile = torch.stack(
        [torch.func.grad(loss_from(index))(a).norm() for index, a in enumerate(activations)]
    )
    params = {name: p.detach() for name, p in model.named_parameters()}
    grads = torch.func.grad(
        lambda p: loss_fn(torch.func.functional_call(model, p, (x,)), y)
    )(params)
    norms = []
    for index in range(len(layers)):
        own = [
            g.flatten()
            for name, g in grads.items()
            if name.split(".")[0] == str(index) and model.get_parameter(name).requires_grad
        ]
        norms.append(torch.cat(own).norm() if own else torch.zeros((), dtype=F64))
    return profile, torch.stack(norms)


def parameter_free_stacks() -> dict[str, tuple[nn.Sequential, torch.Tensor, torch.Tensor]]:
    """Stacks with parameter-free children first, in the middle and last, with a batch each."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(2)
    images, vectors = torch.randn(6, 4, 4, generator=g, dtype=F64), torch.randn(6, 5, generator=g, dtype=F64)
    flatten_first = nn.Sequential(
        nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3)
    ).to(F64)
    with torch.no_grad():  # pre-activations spread out: a Tanh's top two singular values far enough
        flatten_first[3].weight.mul_(4)  # apart for the power iteration to separate in 200 iterations
    return {
        "flatten first": (
            flatten_first,
            3 * images,
            torch.randn(6, 3, generator=g, dtype=F64),
        ),
        "identity first, dropout and identity in the middle, tanh last": (
            nn.Sequential(
                nn.Identity(), nn.Linear(5, 5), nn.Dropout(0.5), nn.Identity(), nn.Linear(5, 4), nn.Tanh()
            ).to(F64).eval(),
            vectors,
            torch.randn(6, 4, generator=g, dtype=F64),
        ),
        "frozen first layer": (
            nn.Sequential(nn.Linear(5, 5).requires_grad_(False), nn.Tanh(), nn.Linear(5, 2)).to(F64),
            vectors,
            torch.randn(6, 2, generator=g, dtype=F64),
        ),
    }


@pytest.mark.parametrize("case", list(parameter_free_stacks()))
def test_parameter_free_children_equal_the_reference(case: str) -> None:
    model, x, y = parameter_free_stacks()[case]
    diagnosis = bptt.diagnose(model, x, y, spectra_samples=3, power_iterations=200)
    assert isinstance(diagnosis, DepthDiagnosis)
    profile, parameter_norms = reference(model, x, y, nn.functional.mse_loss)
    torch.testing.assert_close(diagnosis.profile, profile, rtol=1e-12, atol=0)
    torch.testing.assert_close(diagnosis.parameter_grad_norms, parameter_norms, rtol=1e-12, atol=0)
    current = x[:3]
    for index, layer in enumerate(model):
        for sample in range(3):
            jacobian = torch.func.jacrev(lambda a, layer=layer: layer(a[None])[0])(current[sample])
            rows = jacobian.reshape(layer(current[:1]).numel(), -1)
            torch.testing.assert_close(
                diagnosis.step_norms[index, sample], torch.linalg.matrix_norm(rows, 2), rtol=1e-6, atol=0
            )
        current = layer(current)


def test_the_issue_stack_with_class_targets() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 10)
    ).to(F64)
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(8, 8, 8, generator=g, dtype=F64), torch.randint(10, (8,), generator=g)
    diagnosis = bptt.diagnose(model, x, y)
    profile, parameter_norms = reference(model, x, y, nn.functional.cross_entropy)
    torch.testing.assert_close(diagnosis.profile, profile, rtol=1e-12, atol=0)
    torch.testing.assert_close(diagnosis.parameter_grad_norms, parameter_norms, rtol=1e-12, atol=0)
    assert diagnosis.names == [str(i) for i in range(6)] and diagnosis.parameter_grad_norms[0] == 0


@pytest.mark.parametrize("case", list(parameter_free_stacks()))
def test_the_model_is_left_as_it_was(case: str) -> None:
    model, x, y = parameter_free_stacks()[case]
    parameters = {name: (p.detach().clone(), p.requires_grad) for name, p in model.named_parameters()}
    modes = {name: module.training for name, module in model.named_modules()}
    bptt.diagnose(model, x, y)
    for name, module in model.named_modules():
        for hooks in (
            module._forward_hooks, module._forward_pre_hooks, module._backward_hooks,
            module._backward_pre_hooks, module._state_dict_hooks, module._load_state_dict_pre_hooks,
        ):  # fmt: skip
            assert not hooks, f"{name or 'model'} kept a hook"
        assert module.training == modes[name], name
    for name, p in model.named_parameters():
        assert p.grad is None and not p._backward_hooks, name
        assert torch.equal(p, parameters[name][0]) and p.requires_grad == parameters[name][1], name
    assert x.grad is None and not x.requires_grad


def test_integer_inputs_are_refused_with_a_way_out() -> None:
    model = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(8, 3)).to(F64)
    x, y = torch.randint(10, (4, 2)), torch.randn(4, 3, dtype=F64)
    with pytest.raises(ValueError, match=r"floating-point inputs, got torch.int64.*model\[1:\]"):
        diagnose_depth(model, x, y)


class Detaching(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach()


class Pairing(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x


@pytest.mark.parametrize(
    ("layer", "received"),
    [(Detaching(), "a tensor that does not depend differentiably"), (Pairing(), "a tuple")],
)
def test_a_layer_off_the_graph_is_named(layer: nn.Module, received: str) -> None:
    model = nn.Sequential(nn.Linear(5, 5), layer, nn.Linear(5, 1)).to(F64)
    with pytest.raises(ValueError, match=rf"layer 1 \({type(layer).__name__}\) returned {received}"):
        diagnose_depth(model, *batch())
