"""The verdict: vanishing, exploding, healthy or non-finite, in plain words with the numbers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal, final, get_args

from torch import Tensor

from bptt.diagnostics.activity import SATURATED_SLOPE, Activity

__all__ = ["KINDS", "Verdict", "VerdictKind", "judge_layer", "overall_verdict"]

VerdictKind = Literal["non-finite", "exploding", "vanishing", "healthy"]
"""The verdicts, most severe first."""

KINDS: tuple[VerdictKind, ...] = get_args(VerdictKind)
"""The verdicts, most severe first, as a tuple."""

SATURATED = 0.25
"""Fraction of saturated (or dead) units above which saturation is named as a cause."""


@final
@dataclass(frozen=True)
class Verdict:
    """A verdict and the sentence that justifies it.

    Attributes:
        kind: one of :data:`KINDS`.
        explanation: what was measured, in words, quoting the numbers.
    """

    kind: VerdictKind
    explanation: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"verdict must be one of {KINDS}, got {self.kind!r}")

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@final
@dataclass(frozen=True)
class Evidence:
    """What a layer's verdict reads: the measurements of :func:`bptt.diagnose` on one layer.

    Attributes:
        steps: ``T``.
        profile_by_distance: the profile against the distance from the loss step, loss step
            first (many-to-one losses), else ``None``.
        farthest: the longest distance any sample covers (its length minus 1).
        horizon: the effective horizon (many-to-one losses), else ``None``.
        decay_rate: the fitted per-step factor of the gradient going back.
        spans: the spans of ``product_norms`` (empty when not measured).
        product_norms: median :math:`\\sigma_{\\max}(J_T \\cdots J_{T-d+1})` per span.
        lyapunov: the top Lyapunov exponents.
        median_step_norm: median :math:`\\sigma_{\\max}(J_t)`.
        recurrent_norm: :math:`\\|W_{hh}\\|_2`.
        activity: saturation, dead units and gates.
    """

    steps: int
    profile_by_distance: Tensor | None
    farthest: int
    horizon: int | None
    decay_rate: float
    spans: Sequence[int]
    product_norms: Tensor
    lyapunov: Tensor
    median_step_norm: float
    recurrent_norm: float
    activity: Activity


def judge_layer(evidence: Evidence, tolerance: float) -> Verdict:
    """Judge one layer from the gradient that reaches the farthest step.

    For a many-to-one loss the evidence is the measured profile: the gradient ``D`` steps
    back from the loss relative to the gradient at the loss step, with ``D`` the longest
    distance any sample covers (its length minus 1). A gradient that is exactly 0 there
    (e.g. every ReLU unit dead) is vanishing. For a many-to-many loss, whose profile mixes
    every step's loss, it is the largest gain of the Jacobian product over the longest
    span, :math:`\\sigma_{\\max}(J_T \\cdots J_{T-D+1})` (or, without products,
    :math:`e^{\\lambda_1 D}`, ``D = T - 1``).
    Below ``tolerance``: vanishing; above ``1 / tolerance``: exploding; else healthy.
    """
    layer = evidence
    if layer.profile_by_distance is not None:
        reach = layer.profile_by_distance
        distance = layer.farthest
        reference = float(reach[0])
        ratio = float(reach[distance]) / reference if reference > 0 else 0.0
        measured = f"the gradient from {distance} steps back is {_times(ratio)} the loss step's"
    elif layer.spans:
        distance = layer.spans[-1]
        ratio = float(layer.product_norms[-1])
        measured = (
            f"the largest gain over {distance} steps, σ_max(J_T⋯J_(T-{distance - 1})), "
            f"is {ratio:.2g}"
        )
    else:
        distance = layer.steps - 1
        ratio = math.exp(float(layer.lyapunov[0]) * distance)
        measured = (
            f"the top Lyapunov exponent λ₁ = {float(layer.lyapunov[0]):+.3g} per step "
            f"compounds to {ratio:.2g} over {distance} steps"
        )
    kind: VerdictKind
    if ratio > 1 / tolerance:
        kind = "exploding"
    elif ratio < tolerance or not math.isfinite(ratio):
        kind = "vanishing"
    else:
        kind = "healthy"
    parts = [measured + _trend(layer, kind), _jacobian(layer)]
    parts += _causes(layer, kind)
    if layer.lyapunov.numel():
        parts.append(f"top Lyapunov exponent λ₁ = {float(layer.lyapunov[0]):+.3g} per step")
    return Verdict(kind, "; ".join(part for part in parts if part) + ".")


def overall_verdict(verdicts: list[Verdict], names: list[str] | None = None) -> Verdict:
    """The most severe of the layers' verdicts, naming the layer when there are several."""
    if not verdicts:
        raise ValueError("expected at least one layer verdict, got none")
    worst = min(range(len(verdicts)), key=lambda i: KINDS.index(verdicts[i].kind))
    verdict = verdicts[worst]
    if names is None or len(verdicts) == 1:
        return verdict
    return Verdict(verdict.kind, f"{names[worst]}: {verdict.explanation}")


def _times(ratio: float) -> str:
    if ratio == 0:
        return "exactly 0 times"
    return f"{ratio:.2g} of" if ratio < 1 else f"{ratio:.2g} times"


def _trend(layer: Evidence, kind: VerdictKind) -> str:
    rate = layer.decay_rate
    text = ""
    if layer.horizon is not None and kind == "vanishing":
        text += f" (effective horizon {layer.horizon} steps"
    elif layer.horizon is not None:
        text += f" (horizon {layer.horizon} steps"
    if math.isfinite(rate):
        verb = "shrinks" if rate < 1 else "grows"
        text += f"{'; ' if text else ' ('}it {verb} ×{rate:.3g} per step"
    return text + (")" if text else "")


def _jacobian(layer: Evidence) -> str:
    text = f"median σ_max(J_t) is {layer.median_step_norm:.2g}"
    if layer.activity.derivative_norm is not None:
        text += (
            f" (‖W_h‖₂ = {layer.recurrent_norm:.2g}, median ‖diag f′(z_t)‖ = "
            f"{layer.activity.derivative_norm:.2g})"
        )
    else:
        text += f" (‖W_hh‖₂ = {layer.recurrent_norm:.2g})"
    return text


def _causes(layer: Evidence, kind: VerdictKind) -> list[str]:
    causes = []
    relu = layer.activity.dead_units is not None
    if layer.activity.saturation is not None and kind == "vanishing":
        if relu and layer.activity.dead_units >= SATURATED:
            causes.append(f"because {_pct(layer.activity.dead_units)} of ReLU units are dead")
        elif not relu and layer.activity.saturation >= SATURATED:
            causes.append(
                f"because {_pct(layer.activity.saturation)} of the units are saturated (f′ < {SATURATED_SLOPE:g})"
            )
        elif layer.recurrent_norm < 1:
            causes.append(f"because ‖W_h‖₂ = {layer.recurrent_norm:.2g} < 1 shrinks it every step")
    if relu and kind == "exploding":
        causes.append(
            f"ReLU passes W_h through unchanged on the {_pct(1 - layer.activity.saturation)} active units"
        )
    if kind == "vanishing" and layer.median_step_norm >= 1 and layer.spans:
        causes.append(
            f"although single steps stretch by up to {layer.median_step_norm:.2g}, the product "
            f"over {layer.spans[-1]} steps has σ_max {float(layer.product_norms[-1]):.2g}: the "
            "directions one Jacobian stretches are not those the next passes on"
        )
    if "forget" in layer.activity.gates:
        forget = layer.activity.gates["forget"]
        causes.append(
            f"mean forget gate {forget['mean']:.2f} ({_pct(forget['saturated'])} saturated)"
        )
    if "update" in layer.activity.gates:
        update = layer.activity.gates["update"]
        causes.append(
            f"mean update gate {update['mean']:.2f} ({_pct(update['saturated'])} saturated)"
        )
    return causes


def _pct(value: float) -> str:
    return f"{100 * value:.0f} %"
