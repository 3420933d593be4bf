r"""What a layer's units do: saturation and dead units (Elman cells), gate statistics (gated cells).

A unit whose derivative :math:`f'` is small passes little gradient back: the Jacobian
:math:`J_t = \mathrm{diag} f'(z_t)\, W_{hh}` of an Elman cell shrinks with it, and a gate stuck
near 0 or 1 (sigmoid) or ±1 (tanh) does the same for a gated cell.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import final

from torch import Tensor

from bptt.activations import activation
from bptt.cells import AbstractCell, unflatten_state

__all__ = ["SATURATED_SLOPE", "Activity", "activity"]

SATURATED_SLOPE = 0.1
"""A unit or gate whose derivative is below this counts as saturated."""


@final
@dataclass(frozen=True)
class Activity:
    """The activity statistics of one layer over its valid steps.

    Attributes:
        derivative_norm: cells with one nonlinearity (Elman, expRNN): median of
            :math:`\\|\\mathrm{diag} f'(z_t)\\|_2`.
        saturation: tanh/sigmoid: fraction of units with :math:`f' <` :data:`SATURATED_SLOPE`;
            ReLU, modReLU: fraction of inactive units (:math:`f' = 0`).
        dead_units: ReLU, modReLU: fraction of units inactive at every step of every sample.
        gates: gated cells: per gate, its ``mean`` and ``saturated`` fraction.
    """

    derivative_norm: float | None = None
    saturation: float | None = None
    dead_units: float | None = None
    gates: dict[str, dict[str, float]] = field(default_factory=dict)


def activity(cell: AbstractCell, inputs: Tensor, previous: Tensor, valid: Tensor) -> Activity:
    """Saturation and dead units (cells with one nonlinearity), gate statistics (gated cells).

    Args:
        cell: the layer's cell.
        inputs: its inputs, ``(T, B, I)``.
        previous: its flat state before every step, ``(T, B, S)``.
        valid: ``(T, B)`` valid steps: only these are counted.
    """
    rows_s = unflatten_state(previous.flatten(0, 1), cell.hidden_size)
    gates = cell.gates(inputs.flatten(0, 1), rows_s)
    rows = valid.flatten()
    slope = cell.slope(gates)
    if slope is not None:
        slope = slope[rows]
        norm = float(slope.amax(-1).median())
        if cell.piecewise_linear:
            inactive = slope == 0
            return Activity(norm, float(inactive.float().mean()), float(inactive.all(0).float().mean()))
        return Activity(norm, float((slope < SATURATED_SLOPE).float().mean()))
    statistics = {}
    for name, kind in cell.gate_activations.items():
        value = gates[name][rows]
        slope = activation(kind).derivative_from_output(value, None)
        statistics[name] = {
            "mean": float(value.mean()),
            "saturated": float((slope < SATURATED_SLOPE).float().mean()),
        }
    return Activity(gates=statistics)
