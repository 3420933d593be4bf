"""The report's figures: one function per figure, each a titled, labelled matplotlib Figure.

Every function takes plain records (as read from a run directory or a study's store) and
returns a :class:`matplotlib.figure.Figure` that a reader understands without the code.
Figures are built with matplotlib's object API (no pyplot, no global state, no window).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from bptt.diagnostics.profile import relative_by_distance
from bptt.diagnostics.records import DiagnosisRecord

Record = dict[str, Any]
"""A record of ``metrics.jsonl``."""


def training_curves(metrics: Sequence[Record], metric_name: str) -> Figure:
    """Training loss and gradient norm per step, validation metric, clipping and NaN events."""
    train = [r for r in metrics if r["split"] == "train"]
    validation = [r for r in metrics if r["split"] == "validation"]
    figure = Figure(figsize=(8, 8))
    (loss_axis, norm_axis, metric_axis) = figure.subplots(3, 1, sharex=True)
    steps = np.array([r["step"] for r in train])
    loss = np.array([r["loss"] for r in train], dtype=float)
    loss_axis.plot(steps, loss, lw=0.8, label="training loss")
    clipped = np.array([bool(r.get("clipped")) for r in train])
    if clipped.any():
        loss_axis.plot(steps[clipped], loss[clipped], "x", ms=3, color="tab:orange", label="clipped step")
    _mark_nonfinite(train, (loss_axis, norm_axis, metric_axis))
    loss_axis.set_yscale("log")
    loss_axis.set_ylabel("training loss (log)")
    loss_axis.legend(loc="upper right")
    norm = np.array([r["grad_norm"] for r in train], dtype=float)
    norm_axis.plot(steps, norm, lw=0.8, color="tab:green", label="gradient norm before clipping")
    thresholds = [r.get("clip_threshold") for r in train]
    if any(t is not None for t in thresholds):
        norm_axis.plot(steps, [math.nan if t is None else t for t in thresholds], "--", color="tab:orange",
                       lw=0.8, label="clip threshold")
    norm_axis.set_yscale("log")
    norm_axis.set_ylabel("global gradient norm (log)")
    norm_axis.legend(loc="upper right")
    metric_axis.plot([r["step"] for r in validation], [r[metric_name] for r in validation], "o-", ms=3,
                     color="tab:purple", label=f"validation {metric_name}")
    metric_axis.set_xlabel("optimizer step")
    metric_axis.set_ylabel(f"validation {metric_name}")
    metric_axis.legend(loc="upper right")
    figure.suptitle("Training: loss, gradient norm (clipped steps marked) and validation metric")
    figure.tight_layout()
    return figure


def _mark_nonfinite(train: Sequence[Record], axes: Sequence[Any]) -> None:
    steps = [r["step"] for r in train if r.get("skipped_nonfinite")]
    for axis in axes:
        for index, step in enumerate(steps):
            axis.axvline(step, color="tab:red", lw=0.6, alpha=0.6,
                         label="non-finite step (skipped)" if index == 0 and axis is axes[0] else None)


def profile_lines(diagnoses: Sequence[DiagnosisRecord]) -> Figure:
    """||dL/dh|| against the distance from the loss step, one line per scheduled diagnosis."""
    figure = Figure(figsize=(8, 4.5))
    axis = figure.subplots()
    chosen = _spread(diagnoses, 6)
    colors = matplotlib.colormaps["viridis"](np.linspace(0, 1, len(chosen)))
    for record, color in zip(chosen, colors, strict=True):
        relative = _relative_profile(record)
        axis.plot(np.arange(len(relative)), relative, color=color, label=f"step {record['step']}")
    axis.set_yscale("log")
    axis.set_xlabel("distance d from the loss step (steps back)")
    axis.set_ylabel("||dL/dh|| relative to the loss step (log)")
    axis.set_title("Gradient profile: how far back the gradient reaches, as training goes on")
    axis.legend(title="diagnosis at", fontsize="small")
    figure.tight_layout()
    return figure


def profile_heatmap(diagnoses: Sequence[DiagnosisRecord]) -> Figure:
    """The relative gradient profile over training steps (rows) and distance (columns)."""
    rows = [_relative_profile(record) for record in diagnoses]
    width = max(len(row) for row in rows)
    grid = np.full((len(rows), width), np.nan)
    for index, row in enumerate(rows):
        grid[index, : len(row)] = row
    positive = grid[np.isfinite(grid) & (grid > 0)]
    figure = Figure(figsize=(8, 4.5))
    axis = figure.subplots()
    norm = LogNorm(vmin=max(positive.min(), 1e-12), vmax=positive.max()) if positive.size else None
    image = axis.imshow(np.where(grid > 0, grid, np.nan), aspect="auto", origin="lower", norm=norm,
                        cmap="magma", interpolation="nearest")
    axis.set_yticks(range(len(diagnoses)), [str(r["step"]) for r in diagnoses])
    axis.set_xlabel("distance d from the loss step (steps back)")
    axis.set_ylabel("training step of the diagnosis")
    axis.set_title("Gradient profile over training (colour: ||dL/dh|| relative to the loss step)")
    figure.colorbar(image, ax=axis, label="relative ||dL/dh|| (log)")
    figure.tight_layout()
    return figure


def step_norm_distribution(diagnoses: Sequence[DiagnosisRecord]) -> Figure:
    """The distribution of per-step Jacobian spectral norms at each scheduled diagnosis."""
    figure = Figure(figsize=(8, 4.5))
    axis = figure.subplots()
    stats = []
    for record in diagnoses:
        low, q05, q25, median, q75, q95, high = record["layers"][-1]["step_norm_quantiles"]
        stats.append({"label": str(record["step"]), "med": median, "q1": q25, "q3": q75,
                      "whislo": q05, "whishi": q95, "fliers": [low, high]})
    axis.bxp(stats, showfliers=True, flierprops={"marker": ".", "markersize": 4})
    axis.axhline(1.0, color="grey", lw=0.8, ls="--", label="1: a step neither shrinks nor stretches")
    axis.set_yscale("log")
    axis.set_xlabel("training step of the diagnosis")
    axis.set_ylabel("σ_max(J_t) of one step (log)")
    axis.set_title("Per-step Jacobian spectral norms (box: quartiles; whiskers: 5–95 %; dots: min, max)")
    axis.legend(loc="upper right", fontsize="small")
    if len(stats) > 12:
        for index, tick in enumerate(axis.get_xticklabels()):
            tick.set_visible(index % math.ceil(len(stats) / 12) == 0)
    figure.tight_layout()
    return figure


def study_profiles(profiles: dict[int, dict[str, DiagnosisRecord]]) -> Figure:
    """Gradient profile against distance per configuration, one panel per length.

    Args:
        profiles: ``{length: {configuration label: last diagnosis record}}``.
    """
    lengths = sorted(profiles)
    figure = Figure(figsize=(5 * len(lengths), 4.5))
    axes = np.atleast_1d(figure.subplots(1, len(lengths), sharey=True))
    for axis, length in zip(axes, lengths, strict=True):
        for name, record in profiles[length].items():
            relative = _relative_profile(record)
            axis.plot(np.arange(len(relative)), relative, label=name)
        axis.set_yscale("log")
        axis.set_xlabel("distance d from the loss step (steps back)")
        axis.set_title(f"T = {length}")
    axes[0].set_ylabel("||dL/dh|| relative to the loss step (log)")
    axes[-1].legend(fontsize="small")
    figure.suptitle("Gradient profile at the end of training, per configuration (first seed)")
    figure.tight_layout()
    return figure


def spectra(record: DiagnosisRecord) -> Figure:
    """Norms of Jacobian products against span (when measured), and the Lyapunov spectrum."""
    layer = record["layers"][-1]
    with_products = bool(layer["spans"])
    figure = Figure(figsize=(10 if with_products else 6, 4))
    axes = figure.subplots(1, 2 if with_products else 1)
    product_axis, lyapunov_axis = axes if with_products else (None, axes)
    if product_axis is not None:
        product_axis.plot(layer["spans"], layer["product_norms"], "o-", ms=3,
                          label="median σ_max(J_T⋯J_(T−d+1))")
        product_axis.axhline(1.0, color="grey", lw=0.8, ls="--", label="1: neither vanishing nor exploding")
        product_axis.set_yscale("log")
        product_axis.set_xlabel("span d of the Jacobian product (steps)")
        product_axis.set_ylabel("largest singular value (log)")
        product_axis.set_title("Jacobian products against their span")
        product_axis.legend(fontsize="small")
    exponents = layer["lyapunov"]
    lyapunov_axis.bar(np.arange(1, len(exponents) + 1), exponents, color="tab:blue",
                      label="λ_i (per step, natural log)")
    lyapunov_axis.axhline(0.0, color="grey", lw=0.8)
    lyapunov_axis.set_xlabel("exponent index i")
    lyapunov_axis.set_ylabel("Lyapunov exponent λ_i (1/step)")
    lyapunov_axis.set_title("Lyapunov spectrum (λ₁ < 0: vanishing; > 0: exploding)", fontsize="medium")
    lyapunov_axis.legend(fontsize="small")
    figure.suptitle(f"{layer['name']} at step {record['step']}: median σ_max(J_t) of one step "
                    f"{layer['median_step_norm']:.3g}")
    figure.tight_layout()
    return figure


def success_heatmap(rows: Sequence[str], lengths: Sequence[int], rates: np.ndarray, counts: np.ndarray) -> Figure:
    """Share of trials solved per configuration (rows) and length (columns)."""
    figure = Figure(figsize=(1.6 * len(lengths) + 4, 0.5 * len(rows) + 1.8))
    axis = figure.subplots()
    image = axis.imshow(rates, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    axis.set_xticks(range(len(lengths)), [f"T = {n}" for n in lengths])
    axis.set_yticks(range(len(rows)), rows)
    for i in range(len(rows)):
        for j in range(len(lengths)):
            text = "–" if counts[i, j] == 0 else f"{rates[i, j]:.0%} of {counts[i, j]}"
            axis.text(j, i, text, ha="center", va="center", fontsize="small")
    axis.set_xlabel("sequence length / delay T")
    axis.set_title("Share of trials that solved the task")
    figure.colorbar(image, ax=axis, label="share solved")
    figure.tight_layout()
    return figure


def longest_solved(rows: Sequence[str], longest: Sequence[int]) -> Figure:
    """The longest length at which each configuration solved the task at least once."""
    figure = Figure(figsize=(8, 0.45 * len(rows) + 1.8))
    axis = figure.subplots()
    axis.barh(range(len(rows)), longest, color="tab:green", label="longest T solved (0: none)")
    axis.set_yticks(range(len(rows)), rows)
    axis.invert_yaxis()
    axis.set_xlabel("sequence length / delay T (steps)")
    axis.set_title("Longest dependency each configuration learnt")
    axis.legend(loc="lower right")
    figure.tight_layout()
    return figure


def _relative_profile(record: DiagnosisRecord) -> np.ndarray:
    """The top layer's profile, loss step first: entry d is ||δ|| d steps back, relative."""
    return relative_by_distance(record["layers"][-1]["profile"]).numpy()


def _spread(items: Sequence[DiagnosisRecord], count: int) -> list[DiagnosisRecord]:
    if len(items) <= count:
        return list(items)
    return [items[round(i)] for i in np.linspace(0, len(items) - 1, count)]
