r"""The same diagnosis along the depth of a feed-forward stack: layers instead of steps.

A deep feed-forward network :math:`a_l = F_l(a_{l-1})`, l = 1..L, is a recurrence in which
every step has weights of its own and no input of its own. Backpropagation runs the same
recursion as BPTT,

.. math::
    \delta_{l-1} = J_l^\top \delta_l, \qquad J_l = \partial a_l / \partial a_{l-1},

so the gradient reaching layer l from the loss at the top is a product of L − l Jacobians,
and it vanishes or explodes for the same reasons (Bengio et al. 1994 for time, Glorot &
Bengio 2010 for depth). :func:`diagnose_depth` measures what :func:`bptt.diagnose`
measures along time: the profile :math:`\|\delta_l\|`, how far down it reaches (the
horizon, in layers), the fitted per-layer factor, :math:`\sigma_{\max}(J_l)` per layer, and
the gradient norm of each layer's parameters.

The model is an :class:`torch.nn.Sequential` whose children are the layers: group a linear
map and its activation into one child (``nn.Sequential(nn.Linear(n, n), nn.Tanh())``) to get
one entry per layer. Children without parameters (``nn.Flatten``, an activation, ``nn.Identity``,
``nn.Dropout`` in eval mode) are layers like any other, first, in the middle or last: the input
itself is the bottom of the recursion, so :math:`\delta_l` is defined whatever lies below layer l.
Layers must treat the rows of the batch independently (no batch normalisation in training mode)
for the per-sample Jacobians to be what they say.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, final

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vjp

from bptt.diagnostics.jacobian import _batched, _power_iteration
from bptt.diagnostics.profile import decay_rate, effective_horizon
from bptt.diagnostics.verdict import Verdict

__all__ = ["DepthDiagnosis", "diagnose_depth"]

LossFunction = Callable[[Tensor, Tensor], Tensor]


@final
@dataclass
class DepthDiagnosis:
    r"""The result of :func:`diagnose_depth`: the gradient along the layers of a stack.

    Index ``l`` (0-based) is the l-th child of the :class:`~torch.nn.Sequential`, its output
    :math:`a_{l+1}`; the last entry is the top layer, next to the loss, as the last step is
    in a recurrent profile.

    Attributes:
        loss: the loss on the diagnosed batch.
        names: the children's names, e.g. ``["0", "1", ...]``.
        profile: :math:`\|\delta_l\| = \|\partial L / \partial a_l\|` over the batch at the
            output of every layer, shape ``(L,)``.
        horizon: how many layers down from the top the gradient still reaches: the largest
            d with ``profile[L-1-d] >= tolerance * profile[L-1]``.
        decay_rate: the fitted per-layer factor by which :math:`\|\delta_l\|` shrinks (< 1)
            or grows (> 1) going down.
        step_norms: :math:`\sigma_{\max}(J_l)` of each layer's input-output Jacobian, per
            diagnosed sample, shape ``(L, n)`` (power iteration).
        parameter_grad_norms: the norm of the gradient of each layer's trainable parameters
            (0 for a layer without any, e.g. a Flatten or a frozen layer), shape ``(L,)``.
        verdict: vanishing / exploding / healthy, from the gradient at the bottom layer
            relative to the top one.
    """

    loss: float
    names: list[str]
    profile: Tensor
    horizon: int
    decay_rate: float
    step_norms: Tensor
    parameter_grad_norms: Tensor
    verdict: Verdict

    @property
    def median_step_norm(self) -> float:
        """Median :math:`\\sigma_{\\max}(J_l)` over layers and diagnosed samples."""
        return float(self.step_norms.median())

    def summary(self) -> str:
        """One line of numbers, then the verdict."""
        ratio = (
            float(self.profile[0] / self.profile[-1])
            if self.profile[-1] > 0
            else math.nan
        )
        return (
            f"layers {len(self.names)}  horizon {self.horizon}  rate/layer {self.decay_rate:.3g}  "
            f"med σ(J) {self.median_step_norm:.3g}  ‖δ_1‖/‖δ_L‖ {ratio:.3g}\n"
            f"verdict: {self.verdict.kind}: {self.verdict.explanation}"
        )

    def to_dict(self) -> dict[str, Any]:
        values = {key: getattr(self, key) for key in self.__dataclass_fields__}
        values["verdict"] = self.verdict.to_dict()
        return {
            key: value.tolist() if isinstance(value, Tensor) else value
            for key, value in values.items()
        } | {"median_step_norm": self.median_step_norm}


def diagnose_depth(
    model: nn.Sequential,
    inputs: Tensor,
    targets: Tensor,
    loss_fn: LossFunction | None = None,
    *,
    tolerance: float = 1e-3,
    spectra_samples: int = 4,
    power_iterations: int = 30,
    seed: int = 0,
) -> DepthDiagnosis:
    r"""Diagnose how the gradient travels down the layers of a feed-forward stack.

    One forward pass through the children of ``model`` keeps every layer's output, one
    :func:`torch.autograd.grad` call gives :math:`\delta_l` and the parameter gradients
    (``.grad`` is left untouched), and a power iteration with Jacobian-vector products
    per layer gives :math:`\sigma_{\max}(J_l)`.

    Args:
        model: an :class:`torch.nn.Sequential`; each child is one layer.
        inputs: a batch ``(B, ...)``.
        targets: the matching targets.
        loss_fn: ``loss_fn(output, targets) -> scalar``; default mean squared error.
        tolerance: relative gradient size that counts as "still reaching" (horizon).
        spectra_samples: samples of the batch whose Jacobian spectral norms are computed.
        power_iterations: power iterations per spectral norm.
        seed: seeds the power iteration's start vectors.

    Returns:
        A :class:`DepthDiagnosis`.

    Raises:
        TypeError: if ``model`` is not an :class:`torch.nn.Sequential`.
        ValueError: if it has fewer than two layers, the inputs are not floating point, a
            layer's output does not depend differentiably on its input, or the loss is not a
            scalar.
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(
            f"diagnose_depth takes an nn.Sequential whose children are the layers, got "
            f"{type(model).__name__}; wrap your layers as nn.Sequential(*layers)"
        )
    names = [name for name, _ in model.named_children()]
    if len(names) < 2:
        raise ValueError(f"expected a stack of at least 2 layers, got {len(names)}")
    if not 0 < tolerance < 1:
        raise ValueError(f"tolerance must lie in (0, 1), got {tolerance}")
    if not inputs.is_floating_point():
        raise ValueError(
            f"diagnose_depth differentiates every layer with respect to its input, so it needs "
            f"floating-point inputs, got {inputs.dtype}; diagnose the layers above the first one on "
            "its output, e.g. for an nn.Embedding first: diagnose_depth(model[1:], model[0](inputs), targets)"
        )
    loss_fn = nn.functional.mse_loss if loss_fn is None else loss_fn
    layers = list(model.children())
    with torch.enable_grad():
        # a_0 is a leaf of its own, so that every a_l lies on the graph even when nothing
        # below it has a parameter to differentiate (a Flatten first, a frozen first layer)
        outputs, current = [], inputs.detach().requires_grad_()
        for name, layer in zip(names, layers, strict=True):
            current = layer(current)
            _check_output(name, layer, current)
            outputs.append(current)
        loss = loss_fn(current, targets)
        if not isinstance(loss, Tensor) or loss.numel() != 1 or not loss.requires_grad:
            raise ValueError(
                f"loss_fn must return a scalar tensor that depends on the output, got {loss!r:.80}"
            )
        owned = [[p for p in layer.parameters() if p.requires_grad] for layer in layers]
        flat = [p for params in owned for p in params]
        grads = torch.autograd.grad(
            loss, outputs + flat, allow_unused=True, materialize_grads=True
        )
    deltas, parameter_grads = grads[: len(outputs)], grads[len(outputs) :]
    profile = torch.stack([delta.detach().norm() for delta in deltas])
    norms, cursor = [], 0
    for params in owned:
        part = parameter_grads[cursor : cursor + len(params)]
        cursor += len(params)
        norms.append(
            torch.stack([g.norm() for g in part]).norm()
            if part
            else profile.new_zeros(())
        )
    generator = torch.Generator().manual_seed(seed)
    n = min(spectra_samples, inputs.shape[0])
    layer_inputs = [
        inputs[:n].detach(),
        *(output[:n].detach() for output in outputs[:-1]),
    ]
    step_norms = torch.stack(
        [
            _spectral_norm(layer, x, power_iterations, generator)
            for layer, x in zip(layers, layer_inputs, strict=True)
        ]
    )
    finite = bool(torch.isfinite(profile).all())
    horizon = effective_horizon(profile, tolerance) if finite else 0
    return DepthDiagnosis(
        loss=loss.item(),
        names=names,
        profile=profile,
        horizon=horizon,
        decay_rate=decay_rate(profile) if finite else math.nan,
        step_norms=step_norms,
        parameter_grad_norms=torch.stack(norms).detach(),
        verdict=_verdict(profile, tolerance, horizon),
    )


def _check_output(name: str, layer: nn.Module, output: object) -> None:
    """Refuse a layer whose output is not a tensor on the graph of its input."""
    if not isinstance(output, Tensor):
        received = f"a {type(output).__name__}"
    elif not output.requires_grad:
        received = "a tensor that does not depend differentiably on its input (detached or not floating point)"
    else:
        return
    raise ValueError(
        f"diagnose_depth needs every layer to return a tensor differentiable in its input, but layer "
        f"{name} ({type(layer).__name__}) returned {received}; make it one child with the layer that "
        "consumes its output, or diagnose the layers above it on its output"
    )


def _spectral_norm(
    layer: nn.Module, x: Tensor, iterations: int, generator: torch.Generator
) -> Tensor:
    """:math:`\\sigma_{\\max}` of the Jacobian of ``layer`` at every row of ``x``, shape ``(n,)``:
    the diagnostics' power iteration, run until it no longer moves (or ``iterations``)."""
    params = {name: p.detach() for name, p in layer.named_parameters()}
    buffers = dict(layer.named_buffers())
    rows = x.flatten(1)

    def apply(a: Tensor) -> Tensor:  # (n, inputs) -> (n, outputs), whatever the layer's shapes
        return functional_call(layer, (params, buffers), (a.reshape(x.shape),)).flatten(1)

    _, pullback = vjp(apply, rows)
    forward = _batched(lambda v: jvp(apply, (rows,), (v,))[1])
    backward = _batched(lambda u: pullback(u)[0])
    start = torch.randn((1, *rows.shape), generator=generator, dtype=rows.dtype).to(rows.device)
    return _power_iteration(forward, backward, start, iterations, tolerance=0.0)


def _verdict(profile: Tensor, tolerance: float, horizon: int) -> Verdict:
    if not bool(torch.isfinite(profile).all()):
        bad = int((~torch.isfinite(profile)).nonzero()[-1])
        return Verdict(
            "non-finite", f"the gradient at the output of layer {bad} is NaN or Inf"
        )
    depth = profile.numel() - 1
    reference = float(profile[-1])
    ratio = float(profile[0]) / reference if reference > 0 else 0.0
    measured = (
        f"the gradient {depth} layers below the top is {ratio:.2g} times the top layer's "
        f"(it reaches {horizon} layers down at tolerance {tolerance:g})"
    )
    if ratio < tolerance:
        return Verdict("vanishing", measured)
    if ratio > 1 / tolerance:
        return Verdict("exploding", measured)
    return Verdict("healthy", measured)
