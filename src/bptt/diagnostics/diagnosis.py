r"""``bptt.diagnose``: where the gradient vanishes or explodes along the time axis, and why.

One diagnostic pass (:func:`bptt.diagnostics.trace.taping`) runs the model with every
recurrent layer unrolled, then one backward pass (:func:`bptt.diagnostics.backward.backward`)
gives, per layer and step, the total derivative :math:`\delta_k = \partial L / \partial h_k`
and the direct part :math:`e_k` (from the loss and the layers above). Each measurement is a
function of the taped tensors, most of them through batched Jacobian-vector products of the
cell's step, and :func:`diagnose` assembles them per layer:

- the gradient profile :math:`\|\delta_k\|`, by distance to the loss for many-to-one losses,
  its horizon and decay rate (:mod:`bptt.diagnostics.profile`);
- the time-distance decomposition of :math:`\partial L / \partial W_{hh}` (:mod:`bptt.diagnostics.shares`);
- :math:`\sigma_{\max}(J_t)` per step, :math:`\sigma_{\max}(J_T \cdots J_{T-d+1})` per span,
  the top Lyapunov exponents (:mod:`bptt.diagnostics.spectra`);
- saturation and gate statistics (:mod:`bptt.diagnostics.activity`);
- a verdict in words (:mod:`bptt.diagnostics.verdict`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, final

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from bptt.cells import AbstractCell, AbstractElmanCell
from bptt.diagnostics.activity import activity
from bptt.diagnostics.anomalies import nonfinite_in_backward, nonfinite_in_forward
from bptt.diagnostics.backward import (
    LayerGradients,
    backward,
    is_many_to_one,
    previous_states,
    sequence_lengths,
    valid_steps,
)
from bptt.diagnostics.depth import DepthDiagnosis, diagnose_depth
from bptt.diagnostics.profile import distance_ladder, effective_horizon, gradient_decay_rate, layer_profile
from bptt.diagnostics.records import Diagnosis, LayerDiagnosis
from bptt.diagnostics.shares import share_scale, shares_by_distance, shares_by_position, step_contributions
from bptt.diagnostics.spectra import SampledSteps, lyapunov, median_step_norm, span_products, step_norms
from bptt.diagnostics.trace import TapedLayer, profiling, taping
from bptt.diagnostics.verdict import Evidence, Verdict, judge_layer, overall_verdict
from bptt.recurrent import Recurrent

__all__ = ["ForwardFunction", "LossFunction", "default_loss", "diagnose", "gradient_profiles"]

LossFunction = Callable[[Any, Tensor], Tensor]
ForwardFunction = Callable[[nn.Module, Tensor, Tensor | None], Any]


def default_loss(output: Any, targets: Tensor) -> Tensor:
    """Mean squared error for floating targets, cross-entropy for integer class targets.

    Integer targets of shape ``(B,)`` expect logits ``(B, C)``; of shape ``(B, T)``,
    logits ``(B, T, C)``.
    """
    if not isinstance(output, Tensor):
        raise TypeError(
            f"the model returned a {type(output).__name__}, not a tensor; pass a loss_fn "
            "that takes the model's output and the targets, e.g. "
            "loss_fn=lambda out, y: mse_loss(out[0][:, -1], y)"
        )
    if targets.is_floating_point():
        if output.shape != targets.shape:
            raise ValueError(
                f"default loss (MSE) needs output and targets of the same shape, got "
                f"{tuple(output.shape)} and {tuple(targets.shape)}; pass loss_fn"
            )
        return nn.functional.mse_loss(output, targets)
    if output.shape[:-1] != targets.shape:
        raise ValueError(
            f"default loss (cross-entropy) needs logits of shape targets.shape + (C,), got "
            f"logits {tuple(output.shape)} and targets {tuple(targets.shape)}; pass loss_fn"
        )
    return nn.functional.cross_entropy(output.flatten(0, -2), targets.flatten())


def diagnose(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    loss_fn: LossFunction | None = None,
    *,
    lengths: Tensor | None = None,
    forward: ForwardFunction | None = None,
    tolerance: float = 1e-3,
    spectra_samples: int = 4,
    power_iterations: int = 20,
    spectral_tolerance: float = 1e-3,
    lyapunov_k: int = 8,
    max_distance: int = 32,
    products: bool = True,
    seed: int = 0,
) -> Diagnosis | DepthDiagnosis:
    r"""Diagnose how the gradient travels back through time in ``model`` on one batch.

    Works on bptt models and on any module containing :class:`torch.nn.RNN` /
    :class:`torch.nn.GRU` / :class:`torch.nn.LSTM` (fused, stacked, ``batch_first``,
    packed or with lengths): those run as an unrolled twin that shares their weights,
    so the outputs are the same and the module is left untouched. Neither the model's
    parameters nor their ``.grad`` change. The pass runs in the model's current mode;
    call ``model.eval()`` first to leave dropout out.

    A feed-forward stack is diagnosed along its depth instead: an :class:`torch.nn.Sequential`
    with no recurrent layer inside is passed to
    :func:`bptt.diagnostics.depth.diagnose_depth` (each child one layer, the layers in the
    role of the steps; ``tolerance``, ``spectra_samples``, ``power_iterations`` and ``seed``
    apply), which returns a :class:`~bptt.diagnostics.depth.DepthDiagnosis`.

    Args:
        model: the model; called as ``model(inputs)`` or ``model(inputs, lengths=lengths)``.
        inputs: a batch of inputs, in whatever layout the model takes.
        targets: the matching targets.
        loss_fn: ``loss_fn(model_output, targets) -> scalar``; default :func:`default_loss`.
        lengths: ``(B,)`` valid lengths, passed on to the model.
        forward: ``forward(model, inputs, lengths) -> output`` for models with another
            call signature.
        tolerance: relative gradient size that counts as "still reaching" (horizon).
        spectra_samples: how many samples of the batch the spectra and Lyapunov
            exponents are computed on (they cost a power iteration per step).
        power_iterations: the most power iterations per spectral norm.
        spectral_tolerance: a power iteration stops once its estimates move by less than
            this relative amount in one iteration.
        lyapunov_k: how many Lyapunov exponents (at most the state size).
        max_distance: for many-to-many losses, the longest dependency length resolved
            in the weight-gradient decomposition (longer ones are lumped together).
        products: compute the spectral norms of Jacobian products over spans 1, 2, 4, ...,
            T-1, the costliest part (a power iteration sweeping up to T steps per span);
            without them a many-to-many verdict rests on the top Lyapunov exponent.
        seed: seeds the random start vectors.

    Returns:
        A :class:`Diagnosis`; a :class:`~bptt.diagnostics.depth.DepthDiagnosis` for a
        feed-forward :class:`torch.nn.Sequential`.
    """
    if isinstance(model, nn.Sequential) and not any(
        isinstance(module, Recurrent | nn.RNNBase) for module in model.modules()
    ):
        return diagnose_depth(
            model, inputs, targets, default_loss if loss_fn is None else loss_fn,
            tolerance=tolerance, spectra_samples=spectra_samples,
            power_iterations=power_iterations, seed=seed,
        )  # fmt: skip
    if not 0 < tolerance < 1:
        raise ValueError(f"tolerance must lie in (0, 1), got {tolerance}")
    for name, value in (
        ("spectra_samples", spectra_samples),
        ("power_iterations", power_iterations),
        ("lyapunov_k", lyapunov_k),
        ("max_distance", max_distance),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    loss_fn = default_loss if loss_fn is None else loss_fn
    forward = _default_forward if forward is None else forward
    # cached(): a parametrised (e.g. orthogonal) W_hh is computed once, one tensor to differentiate
    with torch.enable_grad(), parametrize.cached(), taping(model) as layers:
        output = forward(model, inputs, lengths)
        loss = loss_fn(output, targets)
        recurrent_weights = [layer.tape.cell.weight_hh for layer in layers]
    _check_loss(loss)
    nonfinite = nonfinite_in_forward(layers, loss)
    if nonfinite is None:
        parameters = {name: p for name, p in model.named_parameters() if p.requires_grad}
        gradients, parameter_grads, weight_grads = backward(loss, layers, parameters, recurrent_weights)
        nonfinite = nonfinite_in_backward(layers, [g.delta for g in gradients], parameter_grads)
    if nonfinite is not None:
        return Diagnosis(
            loss=loss.item(),
            many_to_one=False,
            layers=[],
            verdict=Verdict("non-finite", nonfinite.describe()),
            nonfinite=nonfinite,
        )
    many_to_one = is_many_to_one(gradients[-1].direct, layers[-1].tape)
    generator = torch.Generator().manual_seed(seed)
    options = _Options(
        tolerance, spectra_samples, power_iterations, spectral_tolerance, lyapunov_k,
        max_distance, products,
    )
    with torch.no_grad():
        diagnosed = [
            _diagnose_layer(layer, gradient, weight_grad, many_to_one, options, generator)
            for layer, gradient, weight_grad in zip(layers, gradients, weight_grads, strict=True)
        ]
    return Diagnosis(
        loss=loss.item(),
        many_to_one=many_to_one,
        layers=diagnosed,
        verdict=overall_verdict(
            [layer.verdict for layer in diagnosed], [layer.name for layer in diagnosed]
        ),
        meta={"steps": int(layers[-1].tape.inputs.shape[0]), "batch": int(layers[-1].tape.inputs.shape[1])},
    )


def gradient_profiles(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    loss_fn: LossFunction | None = None,
    *,
    lengths: Tensor | None = None,
    forward: ForwardFunction | None = None,
) -> dict[str, Tensor]:
    """Only the gradient profile :math:`\\|\\delta_k\\|` of every recurrent layer: the
    cheap part of :func:`diagnose` (about one training step), same arguments.

    Returns:
        ``"<module path>.l<layer>"`` -> the profile over the batch, shape ``(T,)``.
    """
    loss_fn = default_loss if loss_fn is None else loss_fn
    forward = _default_forward if forward is None else forward
    with torch.enable_grad(), profiling(model) as profiles:
        loss = loss_fn(forward(model, inputs, lengths), targets)
        _check_loss(loss)
        parameters = [p for p in model.parameters() if p.requires_grad]
        torch.autograd.grad(loss, parameters, allow_unused=True)
    return {
        f"{name}.l{layer}": profile.norms(layer)
        for name, profile in profiles.items()
        for layer in sorted(profile.per_sample)
    }


@final
@dataclass(frozen=True)
class _Options:
    tolerance: float
    spectra_samples: int
    power_iterations: int
    spectral_tolerance: float
    lyapunov_k: int
    max_distance: int
    products: bool


def _default_forward(model: nn.Module, inputs: Tensor, lengths: Tensor | None) -> Any:
    return model(inputs) if lengths is None else model(inputs, lengths=lengths)


def _check_loss(loss: Any) -> None:
    if not isinstance(loss, Tensor) or loss.numel() != 1 or not loss.requires_grad:
        raise ValueError(
            "loss_fn must return a scalar tensor that depends on the model's output, got "
            f"{loss!r:.80}"
        )


def _diagnose_layer(
    layer: TapedLayer,
    gradients: LayerGradients,
    weight_grad: Tensor,
    many_to_one: bool,
    options: _Options,
    generator: torch.Generator,
) -> LayerDiagnosis:
    """Every measurement of one layer, and its verdict."""
    tape = layer.tape
    cell = tape.cell
    inputs = tape.inputs.detach()
    previous = previous_states(tape)
    valid = valid_steps(tape)
    lengths = sequence_lengths(tape)

    profile, by_distance = layer_profile(gradients.delta, cell.hidden_size, lengths, many_to_one)
    horizon = None if by_distance is None else effective_horizon(by_distance.flip(0), options.tolerance)

    contributions = step_contributions(gradients.recurrent, previous[..., : cell.hidden_size], weight_grad)
    by_position = shares_by_position(contributions, share_scale(weight_grad))
    by_distance_share, beyond = shares_by_distance(
        cell, inputs, previous, valid, gradients.direct, weight_grad, contributions, lengths,
        many_to_one, options.max_distance,
    )  # fmt: skip

    sampled = SampledSteps.of(cell, inputs, previous, valid, options.spectra_samples)
    norms = step_norms(sampled, options.power_iterations, options.spectral_tolerance, generator)
    sampled = sampled.double()
    spans = distance_ladder(max(inputs.shape[0] - 1, 1)) if options.products else []
    products = span_products(sampled, spans, options.power_iterations, options.spectral_tolerance, generator)
    exponents = lyapunov(sampled, options.lyapunov_k, generator)

    rate = gradient_decay_rate(by_distance, spans, products, exponents)
    recurrent_norm = float(torch.linalg.matrix_norm(cell.recurrent_matrix.detach(), 2))
    statistics = activity(cell, inputs, previous, valid)
    evidence = Evidence(
        steps=inputs.shape[0], profile_by_distance=by_distance, farthest=int(lengths.max()) - 1, horizon=horizon,
        decay_rate=rate, spans=spans, product_norms=products, lyapunov=exponents,
        median_step_norm=median_step_norm(norms), recurrent_norm=recurrent_norm, activity=statistics,
    )  # fmt: skip
    return LayerDiagnosis(
        name=layer.name,
        cell=_describe_cell(cell),
        profile=profile,
        profile_by_distance=by_distance,
        horizon=horizon,
        decay_rate=rate,
        gradient_by_position=by_position,
        gradient_by_distance=by_distance_share,
        gradient_beyond=beyond,
        step_norms=norms,
        spans=spans,
        product_norms=products,
        lyapunov=exponents,
        recurrent_norm=recurrent_norm,
        derivative_norm=statistics.derivative_norm,
        saturation=statistics.saturation,
        dead_units=statistics.dead_units,
        gates=statistics.gates,
        verdict=judge_layer(evidence, options.tolerance),
    )


def _describe_cell(cell: AbstractCell) -> str:
    if isinstance(cell, AbstractElmanCell):
        return f"Elman({cell.nonlinearity})"
    return parametrize.type_before_parametrizations(cell).__name__.removesuffix("Cell")
