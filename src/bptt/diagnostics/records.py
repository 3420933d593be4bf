"""The records of a diagnosis: what :func:`bptt.diagnose` returns, and the compact record of it
that a watched training keeps at every scheduled step.

:class:`LayerDiagnosis` and :class:`Diagnosis` hold tensors; their :meth:`~Diagnosis.to_dict`
is the JSON of ``diagnosis.json``. :class:`DiagnosisRecord` is the stored form of the compact
record, one line of ``diagnostics.jsonl``: the same typed dict whether it was just made by
:func:`compact_record` or read back from the file, for every consumer (the report, the
TensorBoard log, the Lightning callback, studies). Numbers that are not finite (or not
measured) are ``None`` (``null`` in JSON).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NotRequired, TypedDict, final

from torch import Tensor

from bptt.diagnostics.anomalies import NonFiniteReport
from bptt.diagnostics.profile import distance_ladder
from bptt.diagnostics.spectra import median_step_norm, step_norm_quantiles
from bptt.diagnostics.verdict import Verdict, VerdictKind
from bptt.jsonio import to_json, write_json

__all__ = [
    "Diagnosis", "DiagnosisRecord", "GateRecord", "LayerDiagnosis", "LayerRecord", "compact_record", "layer_scalars",
]  # fmt: skip


@final
@dataclass
class LayerDiagnosis:
    r"""Everything measured on one recurrent layer. ``T`` steps, ``B`` samples.

    Attributes:
        name: ``"<module path>.l<layer>"``.
        cell: the cell, e.g. ``"Elman(tanh)"``, ``"LSTM"``.
        profile: :math:`\|\delta_k\|` over the batch for k = 0..T-1, shape ``(T,)``.
        profile_by_distance: for many-to-one losses, the profile against the distance
            ``d`` from each sample's loss step (its last valid step), shape ``(T,)``;
            ``None`` for many-to-many losses.
        horizon: the effective horizon of ``profile_by_distance`` (see docs/maths.md, "The
            gradient profile and the effective horizon"), ``None`` for many-to-many losses.
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
        return median_step_norm(self.step_norms)

    @property
    def step_norm_quantiles(self) -> list[float]:
        """Quantiles :data:`~bptt.diagnostics.spectra.STEP_NORM_QUANTILES` of
        :math:`\\sigma_{\\max}(J_t)` over valid steps and diagnosed samples: the distribution
        behind :attr:`median_step_norm`."""
        return step_norm_quantiles(self.step_norms)

    def to_dict(self) -> dict[str, Any]:
        values = {key: _plain(value) for key, value in self.__dict__.items()} | {
            "median_step_norm": self.median_step_norm,
            "step_norm_quantiles": self.step_norm_quantiles,
        }
        return to_json(values, self.name, nonfinite="null")


@final
@dataclass
class Diagnosis:
    """The result of :func:`bptt.diagnose`.

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
        values = {
            "loss": self.loss,
            "many_to_one": self.many_to_one,
            "verdict": self.verdict.to_dict(),
            "nonfinite": None if self.nonfinite is None else self.nonfinite.to_dict(),
            "layers": [layer.to_dict() for layer in self.layers],
            "meta": self.meta,
        }
        return to_json(values, "diagnosis", nonfinite="null")

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


@final
class GateRecord(TypedDict):
    """One gate of a :class:`LayerRecord`: its mean value and its saturated fraction."""

    mean: float | None
    saturated: float | None


@final
class LayerRecord(TypedDict):
    """One layer of a :class:`DiagnosisRecord`: the numbers of its :class:`LayerDiagnosis` worth
    keeping at every scheduled step (lists where the diagnosis holds tensors)."""

    name: str
    horizon: int | None
    decay_rate: float | None
    median_step_norm: float | None
    step_norm_quantiles: NotRequired[list[float | None]]  # runs written before it was kept lack it
    lyapunov: list[float | None]
    profile: list[float | None]
    spans: list[int]
    product_norms: list[float | None]
    gradient_by_distance: list[float | None]
    saturation: float | None
    gates: dict[str, GateRecord]
    verdict: VerdictKind


@final
class DiagnosisRecord(TypedDict):
    """A scheduled diagnosis as a watch keeps it: one line of ``diagnostics.jsonl``.

    ``layers`` is empty when the diagnosed pass was not finite.
    """

    step: int
    loss: float | None
    verdict: VerdictKind
    explanation: str
    layers: list[LayerRecord]


def compact_record(step: int, diagnosis: Diagnosis) -> DiagnosisRecord:
    """The numbers of ``diagnosis``, made at training step ``step``, worth keeping at every
    scheduled step (JSON-ready)."""
    layers = [
        LayerRecord(
            name=layer.name,
            horizon=layer.horizon,
            decay_rate=_json(layer.decay_rate),
            median_step_norm=_json(layer.median_step_norm),
            step_norm_quantiles=_json(layer.step_norm_quantiles),
            lyapunov=_json(layer.lyapunov),
            profile=_json(layer.profile),
            spans=list(layer.spans),
            product_norms=_json(layer.product_norms),
            gradient_by_distance=_json(layer.gradient_by_distance),
            saturation=_json(layer.saturation),
            gates=_json(layer.gates),
            verdict=layer.verdict.kind,
        )
        for layer in diagnosis.layers
    ]
    return DiagnosisRecord(
        step=step,
        loss=_json(diagnosis.loss),
        verdict=diagnosis.verdict.kind,
        explanation=diagnosis.verdict.explanation,
        layers=layers,
    )


def layer_scalars(layer: LayerRecord) -> dict[str, float]:
    """One layer of a :class:`DiagnosisRecord` as scalars for a metrics logger.

    Returns:
        ``horizon``, ``decay_rate``, ``spectral_norm_median`` (median σ_max(J_t)),
        ``lyapunov_max``, ``saturation`` and ``profile_d<d>``: ``||δ||`` ``d`` steps before
        the last step relative to the last step's, for d = 1, 2, 4, ..., T - 1. Values that
        are ``None`` (not measured, or not finite) are left out.
    """
    values = {
        "horizon": layer["horizon"],
        "decay_rate": layer["decay_rate"],
        "spectral_norm_median": layer["median_step_norm"],
        "lyapunov_max": layer["lyapunov"][0] if layer["lyapunov"] else None,
        "saturation": layer["saturation"],
    }
    profile = layer["profile"]  # ||δ_k|| for k = 0..T-1; None where not finite
    last = profile[-1] if profile else None
    if last:
        for d in distance_ladder(len(profile) - 1):
            value = profile[-1 - d]
            if value is not None:
                values[f"profile_d{d}"] = value / last
    return {key: float(value) for key, value in values.items() if value is not None}


def _plain(value: Any) -> Any:
    """Tensors as lists and verdicts as dicts, for :func:`~bptt.jsonio.to_json`."""
    if isinstance(value, Tensor):
        return value.tolist()
    if isinstance(value, Verdict):
        return value.to_dict()
    return value


def _json(value: Any) -> Any:
    return to_json(_plain(value), "diagnosis record", nonfinite="null")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f} %"
