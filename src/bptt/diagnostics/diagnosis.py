r"""``bptt.diagnose``: where the gradient vanishes or explodes along the time axis, and why.

One diagnostic pass (:func:`bptt.diagnostics.trace.taping`) runs the model with every
recurrent layer unrolled, then one backward pass gives, per layer and step, the total
derivative :math:`\delta_k = \partial L / \partial h_k` and the direct part
:math:`e_k` (from the loss and the layers above). Everything else is computed from the
taped tensors with batched Jacobian-vector products of the cell's step:

- the gradient profile :math:`\|\delta_k\|`, by distance to the loss for many-to-one losses;
- the time-distance decomposition of :math:`\partial L / \partial W_{hh}`;
- :math:`\sigma_{\max}(J_t)` per step, :math:`\sigma_{\max}(J_T \cdots J_{T-d+1})` per span,
  the top Lyapunov exponents;
- saturation and gate statistics; a verdict in words (:mod:`bptt.diagnostics.verdict`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp
from torch.nn.utils import parametrize

from bptt.cells import AbstractCell, ElmanCell, State, flatten_state, unflatten_state
from bptt.diagnostics.anomalies import (
    NonFiniteReport,
    nonfinite_in_backward,
    nonfinite_in_forward,
)
from bptt.diagnostics.depth import DepthDiagnosis, diagnose_depth
from bptt.diagnostics.jacobian import (
    CellSteps,
    lyapunov_exponents,
    product_spectral_norms,
    step_spectral_norms,
)
from bptt.diagnostics.profile import decay_rate, effective_horizon
from bptt.diagnostics.trace import TapedLayer, profiling, taping
from bptt.diagnostics.verdict import Verdict, judge_layer, overall_verdict
from bptt.recurrent import LayerTape, Recurrent
from bptt.gradient_profile import sum_by_distance
from bptt.jsonio import write_json

__all__ = [
    "STEP_NORM_QUANTILES", "Diagnosis", "LayerDiagnosis", "default_loss", "diagnose", "gradient_profiles",
]  # fmt: skip

STEP_NORM_QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
"""The quantiles of the per-step spectral norms kept by :attr:`LayerDiagnosis.step_norm_quantiles`."""

LossFunction = Callable[[Any, Tensor], Tensor]
ForwardFunction = Callable[[nn.Module, Tensor, Tensor | None], Any]


@dataclass
class LayerDiagnosis:
    r"""Everything measured on one recurrent layer. ``T`` steps, ``B`` samples.

    Attributes:
        name: ``"<module path>.l<layer>"``.
        cell: the cell, e.g. ``"ElmanCell(tanh)"``, ``"LSTMCell"``.
        profile: :math:`\|\delta_k\|` over the batch for k = 0..T-1, shape ``(T,)``.
        profile_by_distance: for many-to-one losses, the profile against the distance
            ``d`` from each sample's loss step (its last valid step), shape ``(T,)``;
            ``None`` for many-to-many losses.
        horizon: the effective horizon of ``profile_by_distance`` (DESIGN.md section 4),
            ``None`` for many-to-many losses.
        decay_rate: fitted per-step factor by which the gradient shrinks (< 1) or grows
            going back: from the profile by distance (many-to-one), else from the Jacobian
            products against their span, else :math:`e^{\\lambda_1}`.
        gradient_by_position: share of :math:`\partial L / \partial W_{hh}` contributed
            by the use of :math:`W_{hh}` at step k, shape ``(T,)``; sums to 1.
        gradient_by_distance: share contributed by dependencies exactly ``d`` steps long,
            for d = 0..D, shape ``(D + 1,)``.
        gradient_beyond: share from dependencies longer than D (0 when D = T - 1).
        step_norms: :math:`\sigma_{\max}(J_t)` per step and diagnosed sample, ``(T, n)``,
            ``nan`` at padded steps.
        spans: span lengths d of the Jacobian products.
        product_norms: median over samples of :math:`\sigma_{\max}(J_T \cdots J_{T-d+1})`,
            one per span.
        lyapunov: the top Lyapunov exponents (per step, natural log), batch mean.
        recurrent_norm: :math:`\|W_{hh}\|_2` (all gate blocks stacked).
        derivative_norm: Elman cells: median of :math:`\|\mathrm{diag} f'(z_t)\|_2`.
        saturation: Elman tanh/sigmoid: fraction of units with :math:`f' < 0.1`; ReLU:
            fraction of inactive units (:math:`z \le 0`).
        dead_units: ReLU: fraction of units inactive at every step of every sample.
        gates: gated cells: per gate, its ``mean`` and ``saturated`` fraction (f' < 0.1).
        verdict: the layer's verdict.
    """

    name: str
    cell: str
    profile: Tensor
    profile_by_distance: Tensor | None
    horizon: int | None
    decay_rate: float
    gradient_by_position: Tensor
    gradient_by_distance: Tensor
    gradient_beyond: float
    step_norms: Tensor
    spans: list[int]
    product_norms: Tensor
    lyapunov: Tensor
    recurrent_norm: float
    derivative_norm: float | None
    saturation: float | None
    dead_units: float | None
    gates: dict[str, dict[str, float]]
    verdict: Verdict

    @property
    def median_step_norm(self) -> float:
        """Median :math:`\\sigma_{\\max}(J_t)` over valid steps and diagnosed samples."""
        values = self.step_norms[torch.isfinite(self.step_norms)]
        return float(values.median()) if values.numel() else math.nan

    @property
    def step_norm_quantiles(self) -> list[float]:
        """Quantiles :data:`STEP_NORM_QUANTILES` of :math:`\\sigma_{\\max}(J_t)` over valid
        steps and diagnosed samples: the distribution behind :attr:`median_step_norm`."""
        values = self.step_norms[torch.isfinite(self.step_norms)].double()
        if not values.numel():
            return [math.nan] * len(STEP_NORM_QUANTILES)
        return torch.quantile(values, torch.tensor(STEP_NORM_QUANTILES, dtype=values.dtype)).tolist()

    def to_dict(self) -> dict[str, Any]:
        return {key: _jsonable(value) for key, value in self.__dict__.items()} | {
            "median_step_norm": self.median_step_norm,
            "step_norm_quantiles": self.step_norm_quantiles,
        }


@dataclass
class Diagnosis:
    """The result of :func:`diagnose`.

    Attributes:
        loss: the loss on the diagnosed batch.
        many_to_one: whether the loss reads each sequence at its last valid step only.
        layers: one :class:`LayerDiagnosis` per recurrent layer, in the order they run;
            empty when the pass was not finite.
        verdict: ``"vanishing"``, ``"exploding"``, ``"healthy"`` or ``"non-finite"``,
            with the explanation in words.
        nonfinite: where the first non-finite value appeared, when there is one.
        meta: ``steps`` and ``batch`` of the diagnosed pass.
    """

    loss: float
    many_to_one: bool
    layers: list[LayerDiagnosis]
    verdict: Verdict
    nonfinite: NonFiniteReport | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "loss": _jsonable(self.loss),
            "many_to_one": self.many_to_one,
            "verdict": self.verdict.to_dict(),
            "nonfinite": None if self.nonfinite is None else self.nonfinite.to_dict(),
            "layers": [layer.to_dict() for layer in self.layers],
            "meta": self.meta,
        }

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_dict` as JSON to ``path`` (atomically)."""
        write_json(Path(path), self.to_dict())

    def summary(self) -> str:
        """A table of the main numbers per layer, then the verdict."""
        header = (
            f"{'layer':<16}{'cell':<16}{'horizon':>8}{'rate/step':>10}{'med σ(J)':>10}"
            f"{'‖Wh‖₂':>8}{'λ₁':>9}{'saturated':>10}{'verdict':>12}"
        )
        lines = [header, "-" * len(header)]
        for layer in self.layers:
            horizon = "-" if layer.horizon is None else str(layer.horizon)
            saturation = layer.saturation
            if saturation is None and layer.gates:
                saturation = max(gate["saturated"] for gate in layer.gates.values())
            lyapunov = layer.lyapunov[0].item() if layer.lyapunov.numel() else math.nan
            lines.append(
                f"{layer.name:<16}{layer.cell:<16}{horizon:>8}{layer.decay_rate:>10.3g}"
                f"{layer.median_step_norm:>10.3g}{layer.recurrent_norm:>8.3g}"
                f"{lyapunov:>9.3g}{_percent(saturation):>10}{layer.verdict.kind:>12}"
            )
        if not self.layers:
            lines.append("(no layer statistics: the pass was not finite)")
        lines.append("")
        lines.append(f"verdict: {self.verdict.kind}: {self.verdict.explanation}")
        return "\n".join(lines)


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
        gradients, parameter_grads, weight_grads = _backward(loss, layers, parameters, recurrent_weights)
        nonfinite = nonfinite_in_backward(layers, [g.delta for g in gradients], parameter_grads)
    if nonfinite is not None:
        return Diagnosis(
            loss=loss.item(),
            many_to_one=False,
            layers=[],
            verdict=Verdict("non-finite", nonfinite.describe()),
            nonfinite=nonfinite,
        )
    many_to_one = _is_many_to_one(gradients[-1].direct, layers[-1].tape)
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


# -- the backward pass ------------------------------------------------------------------


@dataclass
class _Gradients:
    """What one backward pass gives per layer (on the flat state ``S``)."""

    delta: Tensor  # (T, B, S): total derivatives
    direct: Tensor  # (T, B, S): the parts from the loss and the layers above
    recurrent: Tensor  # (T, B, G*H): dL/d(W_hh h_{t-1} + b_hh)


def _backward(
    loss: Tensor, layers: list[TapedLayer], parameters: dict[str, Tensor], weights: list[Tensor]
) -> tuple[list[_Gradients], dict[str, Tensor], list[Tensor]]:
    """One backward pass: per layer the total and the direct derivative on the flat state and
    the gradient of each step's recurrent projection, every parameter's gradient, and the
    gradient of each layer's recurrent weight as the cells used it (``.grad`` is left
    untouched)."""
    state_parts = [[_parts(state) for state in layer.tape.states] for layer in layers]
    final_parts = [_parts(layer.tape.final) for layer in layers]
    wanted: list[Tensor] = []
    for layer, states, finals in zip(layers, state_parts, final_parts, strict=True):
        wanted += [part for parts in states for part in parts]
        wanted += list(layer.tape.outputs) + list(finals) + list(layer.tape.recurrent_parts)
    wanted += list(parameters.values()) + weights
    # parts of a state that no parameter reached (e.g. the zeros a skip-k cell's state
    # starts with) have no graph: their gradient is zero
    reached = [tensor for tensor in wanted if tensor.requires_grad]
    found = iter(torch.autograd.grad(loss, reached, allow_unused=True, materialize_grads=True))
    grads = [next(found).detach() if tensor.requires_grad else torch.zeros_like(tensor) for tensor in wanted]
    per_layer, cursor = [], 0
    for layer, states, finals in zip(layers, state_parts, final_parts, strict=True):
        count, steps = len(finals), len(states)
        flat = grads[cursor : cursor + steps * count]
        cursor += steps * count
        delta = torch.stack([torch.cat(flat[t * count : (t + 1) * count], -1) for t in range(steps)])
        outputs = torch.stack(grads[cursor : cursor + steps])
        cursor += steps
        final = torch.cat(grads[cursor : cursor + count], -1)
        cursor += count
        recurrent = torch.stack(grads[cursor : cursor + steps])
        cursor += steps
        direct = torch.zeros_like(delta)
        mask = layer.tape.mask
        direct[..., : outputs.shape[-1]] = outputs if mask is None else outputs * mask.unsqueeze(-1)
        direct[-1] += final
        per_layer.append(_Gradients(delta, direct, recurrent))
    parameter_grads = dict(zip(parameters, grads[cursor : cursor + len(parameters)], strict=True))
    return per_layer, parameter_grads, grads[cursor + len(parameters) :]


def _is_many_to_one(direct: Tensor, tape: LayerTape) -> bool:
    """Whether the loss reaches the layer only at each sample's last valid step."""
    last = _lengths(tape) - 1
    steps = torch.arange(direct.shape[0], device=direct.device).unsqueeze(1)
    before = direct.abs().sum(-1)[steps < last.unsqueeze(0)]
    return bool((before == 0).all()) and bool(direct.abs().sum() > 0)


# -- one layer --------------------------------------------------------------------------


def _diagnose_layer(
    layer: TapedLayer,
    gradients: _Gradients,
    weight_grad: Tensor,
    many_to_one: bool,
    options: _Options,
    generator: torch.Generator,
) -> LayerDiagnosis:
    tape = layer.tape
    cell = tape.cell
    delta = gradients.delta
    inputs = tape.inputs.detach()
    previous = torch.stack([flatten_state(s) for s in [tape.initial, *tape.states[:-1]]])
    steps, batch = inputs.shape[:2]
    lengths = _lengths(tape)
    valid = tape.mask
    if valid is None:
        valid = torch.ones(steps, batch, dtype=torch.bool, device=inputs.device)
    step = _flat_step(cell)

    hidden = cell.hidden_size
    per_sample = delta[..., :hidden].double().norm(dim=-1)  # float64: squares of big float32 norms overflow
    profile = per_sample.square().sum(1).sqrt().to(delta.dtype)
    by_distance = sum_by_distance(per_sample.square(), lengths).sqrt().to(delta.dtype) if many_to_one else None
    horizon = None
    if by_distance is not None:
        horizon = effective_horizon(by_distance.flip(0), options.tolerance)

    # Step k's term of dL/dW_hh is g_k^T h_(k-1), g_k = dL/d(W_hh h_(k-1) + b_hh): its
    # projection on G = dL/dW_hh is <g_k, G h_(k-1)>, and these sum to ||G||^2.
    hidden_before = previous[..., : cell.hidden_size]
    # G h_(k-1) for a weight matrix; G ⊙ h_(k-1) for a diagonal one stored as a vector (IndRNN)
    moved = hidden_before * weight_grad if weight_grad.ndim == 1 else hidden_before @ weight_grad.T
    contributions = (gradients.recurrent * moved).sum(-1)
    total = weight_grad.square().sum()
    scale = 1 / total if total > 0 else torch.zeros_like(total)
    by_position = contributions.sum(1) * scale
    if many_to_one:
        by_distance_share = sum_by_distance(contributions, lengths) * scale
        beyond = 0.0
    else:
        tangents = _weight_tangents(cell, inputs, previous, valid, weight_grad)
        by_distance_share = _propagated_shares(
            step, inputs, previous, valid, gradients.direct, tangents, options.max_distance
        ) * scale
        beyond = float(1 - by_distance_share.sum()) if total > 0 else 0.0

    n = min(batch, options.spectra_samples)
    sample_inputs, sample_previous = inputs[:, :n], previous[:, :n]
    sample_mask = valid[:, :n]
    jacobians = CellSteps(cell, sample_inputs, sample_previous)
    step_norms = step_spectral_norms(
        jacobians, sample_inputs, sample_previous,
        mask=sample_mask, iterations=options.power_iterations,
        tolerance=options.spectral_tolerance, generator=generator,
    )
    # float64 maps: products over long spans fall far below float32's 1e-38.
    jacobians = jacobians.to(torch.float64)
    sample_previous = sample_previous.double()
    spans = _span_ladder(steps) if options.products else []
    product_norms = torch.empty(0, dtype=torch.float64)
    if spans:
        product_norms = product_spectral_norms(
            jacobians, sample_inputs, sample_previous, spans, mask=sample_mask,
            iterations=options.power_iterations, tolerance=options.spectral_tolerance,
            generator=generator,
        ).median(dim=1).values
    k = min(options.lyapunov_k, previous.shape[-1])
    lyapunov = lyapunov_exponents(
        jacobians, sample_inputs, sample_previous, k, mask=sample_mask, generator=generator
    ).mean(0)

    activity = _activity(cell, inputs, previous, valid)
    diagnosis = LayerDiagnosis(
        name=layer.name,
        cell=_describe_cell(cell),
        profile=profile,
        profile_by_distance=by_distance,
        horizon=horizon,
        decay_rate=_decay_rate(by_distance, spans, product_norms, lyapunov),
        gradient_by_position=by_position,
        gradient_by_distance=by_distance_share,
        gradient_beyond=beyond,
        step_norms=step_norms,
        spans=spans,
        product_norms=product_norms,
        lyapunov=lyapunov,
        recurrent_norm=float(torch.linalg.matrix_norm(cell.recurrent_matrix.detach(), 2)),
        verdict=Verdict("healthy", ""),
        **activity,
    )
    diagnosis.verdict = judge_layer(diagnosis, options.tolerance, farthest=int(lengths.max()) - 1)
    return diagnosis


def _weight_tangents(
    cell: AbstractCell, inputs: Tensor, previous: Tensor, valid: Tensor, weight_grad: Tensor
) -> Tensor:
    r"""``u[k, b] = ∂⁺h_k/∂W_hh [G]``, the immediate effect on the state of moving
    :math:`W_{hh}` along G = dL/dW_hh at step k, shape ``(T, B, S)`` (zero at padding).

    :math:`\partial L / \partial W_{hh} = \sum_k (\partial^+ h_k / \partial W_{hh})^\top
    \delta_k`, so :math:`s_k = \langle \delta_k, u_k \rangle` is the projection of step k's
    term on G, and :math:`\sum_k s_k = \|G\|^2`: each term's share of the gradient. One
    batched JVP in the direction G gives all of them.
    """
    steps, batch = inputs.shape[:2]
    rows_x = inputs.flatten(0, 1)
    rows_s = unflatten_state(previous.flatten(0, 1), cell.hidden_size)

    def state_for(weight: Tensor) -> Tensor:
        return flatten_state(functional_call(cell, {"weight_hh": weight}, (rows_x, rows_s)))

    weight = cell.weight_hh.detach()
    _, tangent = jvp(state_for, (weight,), (weight_grad.to(weight.dtype),))
    return tangent.reshape(steps, batch, -1) * valid.unsqueeze(-1)


def _propagated_shares(
    step: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    previous: Tensor,
    valid: Tensor,
    direct: Tensor,
    tangents: Tensor,
    max_distance: int,
) -> Tensor:
    r"""Many-to-many losses: the part of :math:`\|G\|^2` from dependencies d steps long.

    The use of :math:`W_{hh}` at step k reaches the loss terms of step :math:`t = k + d`
    through :math:`J_t \cdots J_{k+1}`. Carrying all step-k tangents forward one step at a
    time (one batched JVP per distance) and meeting them with the direct derivatives
    :math:`e_t` separates the distances: share(d) = :math:`\sum_t \langle e_t,
    J_t \cdots J_{t-d+1} u_{t-d} \rangle`, for d = 0..``max_distance``.
    """
    steps = inputs.shape[0]
    shares = [(direct * tangents).sum()]
    carried = tangents
    for d in range(1, min(max_distance, steps - 1) + 1):
        w = carried[:-1]
        advance = partial(step, inputs[d:].flatten(0, 1))
        _, moved = jvp(advance, (previous[d:].flatten(0, 1),), (w.flatten(0, 1),))
        carried = torch.where(valid[d:].unsqueeze(-1), moved.reshape(w.shape), w)
        shares.append((direct[d:] * carried).sum())
    return torch.stack(shares)


def _decay_rate(
    by_distance: Tensor | None, spans: list[int], product_norms: Tensor, lyapunov: Tensor
) -> float:
    """The per-step factor of the gradient going back: fitted to the profile by distance
    (many-to-one), else to the Jacobian products against their span, else ``exp(λ₁)``."""
    if by_distance is not None:
        return decay_rate(by_distance.flip(0))
    usable = product_norms > 0
    if int(usable.sum()) >= 2:
        span = torch.tensor(spans, dtype=torch.float64)[usable.cpu()]
        log_norm = product_norms[usable].double().log().cpu()
        slope = ((span - span.mean()) * (log_norm - log_norm.mean())).sum() / (
            (span - span.mean()).square().sum()
        )
        return math.exp(float(slope))
    return math.exp(float(lyapunov[0])) if lyapunov.numel() else math.nan


def _activity(
    cell: AbstractCell, inputs: Tensor, previous: Tensor, valid: Tensor
) -> dict[str, Any]:
    """Saturation and dead units (Elman), gate statistics (gated cells)."""
    rows_s = unflatten_state(previous.flatten(0, 1), cell.hidden_size)
    gates = cell.gates(inputs.flatten(0, 1), rows_s)
    rows = valid.flatten()
    if isinstance(cell, ElmanCell):
        z = gates["z"][rows]
        derivative = cell.derivative(z)
        activity: dict[str, Any] = {
            "derivative_norm": float(derivative.amax(-1).median()),
            "gates": {},
        }
        if cell.nonlinearity == "relu":
            active = z > 0
            activity["saturation"] = float((~active).float().mean())
            activity["dead_units"] = float((~active.any(0)).float().mean())
        else:
            activity["saturation"] = float((derivative < 0.1).float().mean())
            activity["dead_units"] = None
        return activity
    statistics = {}
    for name, kind in cell.gate_activations.items():
        value = gates[name][rows]
        slope = value * (1 - value) if kind == "sigmoid" else 1 - value.square()
        statistics[name] = {
            "mean": float(value.mean()),
            "saturated": float((slope < 0.1).float().mean()),
        }
    return {"derivative_norm": None, "saturation": None, "dead_units": None, "gates": statistics}


# -- helpers ----------------------------------------------------------------------------


def _parts(state: State) -> tuple[Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def _flat_step(cell: AbstractCell) -> Callable[[Tensor, Tensor], Tensor]:
    """The cell's step on flat states ``(N, S)`` (``S = 2H`` for an LSTM's ``(h, c)``)."""

    def step(x: Tensor, state: Tensor) -> Tensor:
        return flatten_state(cell.step(x, unflatten_state(state, cell.hidden_size)))

    return step


def _lengths(tape: LayerTape) -> Tensor:
    steps, batch = tape.inputs.shape[:2]
    if tape.mask is None:
        return torch.full((batch,), steps, dtype=torch.long, device=tape.inputs.device)
    return tape.mask.sum(0)


def _span_ladder(steps: int) -> list[int]:
    """1, 2, 4, ... below ``T - 1``, then ``T - 1`` (the longest distance in a sequence)."""
    longest = max(steps - 1, 1)
    spans = [2**i for i in range(int(math.log2(longest)) + 1) if 2**i < longest]
    return spans + [longest]


def _describe_cell(cell: AbstractCell) -> str:
    if isinstance(cell, ElmanCell):
        return f"Elman({cell.nonlinearity})"
    return type(cell).__name__.removesuffix("Cell")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f} %"


def _jsonable(value: Any) -> Any:
    if isinstance(value, Tensor):
        return _jsonable(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return value
