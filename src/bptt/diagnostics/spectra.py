r"""The spectra of a layer's step Jacobians on a few samples: per step, over spans, Lyapunov.

The Jacobians :math:`J_t = \partial h_t / \partial h_{t-1}` of the first ``n`` samples of the
batch, in factored form where the cell allows (:func:`~bptt.diagnostics.jacobian.cell_steps`), give

- :math:`\sigma_{\max}(J_t)` per step (:func:`step_norms`);
- :math:`\sigma_{\max}(J_T \cdots J_{T-d+1})` per span ``d`` (:func:`span_products`);
- the top Lyapunov exponents (:func:`lyapunov`).

Products over long spans fall far below float32's 1e-38, so the last two run on the maps
in float64 (:meth:`SampledSteps.double`); see docs/maths.md, "Spectral norms by power
iteration" and "Lyapunov exponents".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import final

import torch
from torch import Tensor

from bptt.cells import AbstractCell
from bptt.diagnostics.jacobian import (
    BLOCK,
    CellSteps,
    WholeCellSteps,
    cell_steps,
    lyapunov_exponents,
    product_spectral_norms,
    step_spectral_norms,
)

__all__ = [
    "STEP_NORM_QUANTILES", "SampledSteps", "lyapunov", "median_step_norm", "span_products", "step_norm_quantiles",
    "step_norms",
]  # fmt: skip

STEP_NORM_QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
"""The quantiles of the per-step spectral norms kept by :attr:`LayerDiagnosis.step_norm_quantiles`."""


@final
@dataclass(frozen=True)
class SampledSteps:
    """The linearised steps of the first ``n`` samples of a layer's batch.

    Attributes:
        jacobians: the linearised steps of those samples (factored where the cell allows).
        inputs: their inputs, ``(T, n, I)``.
        previous: their flat state before every step, ``(T, n, S)``.
        mask: their valid steps, ``(T, n)``.
    """

    jacobians: CellSteps | WholeCellSteps
    inputs: Tensor
    previous: Tensor
    mask: Tensor

    @classmethod
    def of(cls, cell: AbstractCell, inputs: Tensor, previous: Tensor, valid: Tensor, samples: int) -> SampledSteps:
        """The steps of the first ``samples`` samples (all when the batch is smaller)."""
        n = min(inputs.shape[1], samples)
        inputs, previous = inputs[:, :n], previous[:, :n]
        return cls(cell_steps(cell, inputs, previous), inputs, previous, valid[:, :n])

    def double(self) -> SampledSteps:
        """The same steps with the maps and states in float64 (``A`` and ``C`` are not recomputed)."""
        return SampledSteps(self.jacobians.to(torch.float64), self.inputs, self.previous.double(), self.mask)


def step_norms(steps: SampledSteps, iterations: int, tolerance: float, generator: torch.Generator) -> Tensor:
    """:math:`\\sigma_{\\max}(J_t)` per step and sample, ``(T, n)``, ``nan`` at padded steps.

    Args:
        steps: the sampled steps.
        iterations: the most power iterations.
        tolerance: stop once the estimates move by less than this relative amount.
        generator: for the random start vectors.
    """
    return step_spectral_norms(
        steps.jacobians, steps.inputs, steps.previous, mask=steps.mask,
        iterations=iterations, tolerance=tolerance, block=BLOCK, generator=generator,
    )  # fmt: skip


def span_products(
    steps: SampledSteps, spans: Sequence[int], iterations: int, tolerance: float, generator: torch.Generator
) -> Tensor:
    """The median over samples of :math:`\\sigma_{\\max}(J_T \\cdots J_{T-d+1})`, one per span
    ``d`` (empty without spans), float64 (pass :meth:`SampledSteps.double`)."""
    if not spans:
        return torch.empty(0, dtype=torch.float64)
    return product_spectral_norms(
        steps.jacobians, steps.inputs, steps.previous, list(spans), mask=steps.mask,
        iterations=iterations, tolerance=tolerance, generator=generator,
    ).median(dim=1).values  # fmt: skip


def lyapunov(steps: SampledSteps, k: int, generator: torch.Generator) -> Tensor:
    """The top ``k`` Lyapunov exponents (at most the state size; per step, natural log),
    averaged over the samples, ``(k,)``."""
    k = min(k, steps.previous.shape[-1])
    return lyapunov_exponents(
        steps.jacobians, steps.inputs, steps.previous, k, mask=steps.mask, generator=generator
    ).mean(0)


def median_step_norm(step_norms: Tensor) -> float:
    """Median :math:`\\sigma_{\\max}(J_t)` over valid (finite) steps and samples; ``nan`` without one."""
    values = step_norms[torch.isfinite(step_norms)]
    return float(values.median()) if values.numel() else math.nan


def step_norm_quantiles(step_norms: Tensor) -> list[float]:
    """The quantiles :data:`STEP_NORM_QUANTILES` of :math:`\\sigma_{\\max}(J_t)` over valid
    (finite) steps and samples: the distribution behind :func:`median_step_norm`."""
    values = step_norms[torch.isfinite(step_norms)].double()
    if not values.numel():
        return [math.nan] * len(STEP_NORM_QUANTILES)
    return torch.quantile(values, torch.tensor(STEP_NORM_QUANTILES, dtype=values.dtype)).tolist()
