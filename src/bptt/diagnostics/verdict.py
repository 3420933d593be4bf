"""The verdict: vanishing, exploding, healthy or non-finite, in plain words with the numbers."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bptt.diagnostics.diagnosis import LayerDiagnosis

__all__ = ["KINDS", "Verdict", "judge_layer", "overall_verdict"]

KINDS = ("non-finite", "exploding", "vanishing", "healthy")
"""The verdicts, most severe first."""

SATURATED = 0.25
"""Fraction of saturated (or dead) units above which saturation is named as a cause."""


@dataclass(frozen=True)
class Verdict:
    """A verdict and the sentence that justifies it.

    Attributes:
        kind: one of :data:`KINDS`.
        explanation: what was measured, in words, quoting the numbers.
    """

    kind: str
    explanation: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"verdict must be one of {KINDS}, got {self.kind!r}")

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def judge_layer(layer: LayerDiagnosis, tolerance: float, farthest: int | None = None) -> Verdict:
    """Judge one layer from the gradient that reaches the farthest step.

    For a many-to-one loss the evidence is the measured profile: the gradient ``D`` steps
    back from the loss relative to the gradient at the loss step, with ``D = farthest``,
    the longest distance any sample covers (its length minus 1; default ``T - 1``). A
    gradient that is exactly 0 there (e.g. every ReLU unit dead) is vanishing. For a
    many-to-many loss, whose profile mixes every step's loss, it is the largest gain of
    the Jacobian product over the longest span, :math:`\\sigma_{\\max}(J_T \\cdots J_{T-D+1})`
    (or, without products, :math:`e^{\\lambda_1 D}`).
    Below ``tolerance``: vanishing; above ``1 / tolerance``: exploding; else healthy.
    """
    if layer.profile_by_distance is not None:
        reach = layer.profile_by_distance
        distance = reach.numel() - 1 if farthest is None else farthest
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
        distance = layer.step_norms.shape[0] - 1
        ratio = math.exp(float(layer.lyapunov[0]) * distance)
        measured = (
            f"the top Lyapunov exponent λ₁ = {float(layer.lyapunov[0]):+.3g} per step "
            f"compounds to {ratio:.2g} over {distance} steps"
        )
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


def _trend(layer: LayerDiagnosis, kind: str) -> str:
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


def _jacobian(layer: LayerDiagnosis) -> str:
    text = f"median σ_max(J_t) is {layer.median_step_norm:.2g}"
    if layer.derivative_norm is not None:
        text += (
            f" (‖W_h‖₂ = {layer.recurrent_norm:.2g}, median ‖diag f′(z_t)‖ = "
            f"{layer.derivative_norm:.2g})"
        )
    else:
        text += f" (‖W_hh‖₂ = {layer.recurrent_norm:.2g})"
    return text


def _causes(layer: LayerDiagnosis, kind: str) -> list[str]:
    causes = []
    relu = layer.dead_units is not None
    if layer.saturation is not None and kind == "vanishing":
        if relu and layer.dead_units >= SATURATED:
            causes.append(f"because {_pct(layer.dead_units)} of ReLU units are dead")
        elif not relu and layer.saturation >= SATURATED:
            causes.append(
                f"because {_pct(layer.saturation)} of the units are saturated (f′ < 0.1)"
            )
        elif layer.recurrent_norm < 1:
            causes.append(f"because ‖W_h‖₂ = {layer.recurrent_norm:.2g} < 1 shrinks it every step")
    if relu and kind == "exploding":
        causes.append(
            f"ReLU passes W_h through unchanged on the {_pct(1 - layer.saturation)} active units"
        )
    if kind == "vanishing" and layer.median_step_norm >= 1 and layer.spans:
        causes.append(
            f"although single steps stretch by up to {layer.median_step_norm:.2g}, the product "
            f"over {layer.spans[-1]} steps has σ_max {float(layer.product_norms[-1]):.2g}: the "
            "directions one Jacobian stretches are not those the next passes on"
        )
    if "forget" in layer.gates:
        forget = layer.gates["forget"]
        causes.append(
            f"mean forget gate {forget['mean']:.2f} ({_pct(forget['saturated'])} saturated)"
        )
    if "update" in layer.gates:
        update = layer.gates["update"]
        causes.append(
            f"mean update gate {update['mean']:.2f} ({_pct(update['saturated'])} saturated)"
        )
    return causes


def _pct(value: float) -> str:
    return f"{100 * value:.0f} %"
