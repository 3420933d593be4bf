"""Reports: figures of a run or a study, as PNG and SVG files and one self-contained HTML page.

``bptt report RUN_DIR`` shows a run's training curves (clipping and non-finite steps
marked), its gradient profile against distance and over training, the distribution of the
per-step Jacobian spectral norms at each diagnosis, and the norms of Jacobian products
against their span and the Lyapunov exponents at its last diagnosis. ``bptt report
STUDY_DIR`` shows the share of trials solved per configuration and length, the longest
length each configuration solved, and the gradient profile of each configuration.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bptt.config import TrainConfig
from bptt.diagnostics.records import DiagnosisRecord
from bptt.jsonio import read_jsonl
from bptt.report import plots
from bptt.report.html import Panel, write_report
from bptt.rundir import RunDirectory
from bptt.store import ResultStore
from bptt.study import STORE, label

__all__ = ["Panel", "report", "run_panels", "study_panels", "write_report"]


def report(path: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of a run directory or a study directory; returns the HTML page.

    Args:
        path: a run directory (``config.json``) or a study directory (``study.sqlite``).
        out: where the report goes; by default ``PATH/report/``.

    Raises:
        ValueError: if ``path`` is neither, or holds nothing to show yet.
    """
    path = Path(path)
    out = Path(out) if out is not None else path / "report"
    if (path / STORE).is_file():
        panels, summary = study_panels(path)
        return write_report(panels, f"bptt study: {path}", summary, out)
    if (path / "config.json").is_file():
        panels, summary = run_panels(path)
        return write_report(panels, f"bptt run: {path}", summary, out)
    raise ValueError(
        f"{path} is neither a run directory (config.json) nor a study directory ({STORE}); "
        "pass a directory written by bptt train or bptt study"
    )


def run_panels(path: Path) -> tuple[list[Panel], str]:
    """The figures of one run, and its summary as text."""
    run = RunDirectory(path)
    config = run.config()
    metrics = read_jsonl(path / "metrics.jsonl") if (path / "metrics.jsonl").exists() else []
    if not metrics:
        raise ValueError(f"{path} has no metrics yet; train it first")
    summary_file = path / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    metric = summary.get("metric_name") or next(
        key for key in metrics[-1] if key not in ("step", "split") and metrics[-1]["split"] == "validation"
    )
    panels = [Panel("training", f"{config.cell} on {config.task} (length {config.length}): training loss "
                    "and global gradient norm per step (orange crosses: clipped steps; red lines: "
                    f"non-finite steps, skipped), and the validation {metric}.",
                    plots.training_curves(metrics, metric))]
    diagnoses = _diagnoses(path)
    if diagnoses:
        panels += [
            Panel("profile", "The gradient profile ||dL/dh_k|| against the distance from the loss step, "
                  "relative to the loss step, at the scheduled diagnoses: a line that falls fast "
                  "means the gradient vanishes before it reaches the early steps.",
                  plots.profile_lines(diagnoses)),
            Panel("profile-heatmap", "The same profile at every scheduled diagnosis (rows) and distance "
                  "(columns): how the reach of the gradient changes during training.",
                  plots.profile_heatmap(diagnoses)),
        ]
        if all("step_norm_quantiles" in r["layers"][-1] for r in diagnoses):  # older runs lack it
            panels.append(Panel(
                "step-norms", "The largest singular value of each step's Jacobian ∂h_t/∂h_(t−1), over the "
                "steps and samples of each scheduled diagnosis: below 1 a step shrinks the gradient "
                "going back, above 1 it can stretch it.", plots.step_norm_distribution(diagnoses)))
        panels.append(Panel(
            "spectra", "At the last diagnosis: the largest singular value of products of d Jacobians "
            "against d (below 1 and falling: vanishing; above 1: exploding), and the Lyapunov "
            "exponents.", plots.spectra(diagnoses[-1])))
    text = json.dumps({k: v for k, v in summary.items() if k != "run_dir"}, indent=2) if summary else "(running)"
    return panels, text


def study_panels(path: Path) -> tuple[list[Panel], str]:
    """The figures of a study, and its success table as text."""
    with ResultStore(path / STORE) as store:
        trials = store.trials()
    if not trials:
        raise ValueError(f"{path / STORE} holds no trials; run bptt study first")
    configs = [TrainConfig.from_dict(t.config) for t in trials]
    rows = list(dict.fromkeys(label(c) for c in configs))
    lengths = sorted({c.length for c in configs})
    solved = np.zeros((len(rows), len(lengths)))
    counts = np.zeros((len(rows), len(lengths)), dtype=int)
    for trial, config in zip(trials, configs, strict=True):
        if trial.status != "finished":
            continue
        i, j = rows.index(label(config)), lengths.index(config.length)
        counts[i, j] += 1
        solved[i, j] += bool(trial.summary["solved"])
    rates = np.divide(solved, counts, out=np.zeros_like(solved), where=counts > 0)
    longest = [max((n for n, s in zip(lengths, solved[i], strict=True) if s > 0), default=0)
               for i in range(len(rows))]
    task = configs[0].task
    panels = [
        Panel("success", f"{task}: the share of finished trials (seeds) that solved the task, per "
              "configuration and length; '–': no finished trial.",
              plots.success_heatmap(rows, lengths, rates, counts)),
        Panel("longest-solved", f"{task}: the longest length at which each configuration solved the "
              "task in at least one trial (0: at none of the lengths tried).",
              plots.longest_solved(rows, longest)),
    ]
    profiles: dict[int, dict[str, DiagnosisRecord]] = {}
    for trial, config in zip(trials, configs, strict=True):
        diagnoses = _diagnoses(Path(trial.run_dir)) if trial.status == "finished" else []
        if diagnoses:
            profiles.setdefault(config.length, {}).setdefault(label(config), diagnoses[-1])
    if profiles:
        panels.append(Panel("profiles", f"{task}: how far back the gradient reaches at the end of training, "
                            "per configuration (the last scheduled diagnosis of each configuration's "
                            "first finished trial); a line that falls fast means vanishing.",
                            plots.study_profiles(profiles)))
    table = "\n".join(
        f"{row:32} " + "  ".join(f"T={n}: {int(solved[i, j])}/{counts[i, j]}" for j, n in enumerate(lengths))
        for i, row in enumerate(rows)
    )
    return panels, f"{len(trials)} trials of {task}; solved / finished per configuration and length:\n{table}"


def _diagnoses(run_dir: Path) -> list[DiagnosisRecord]:
    """A run's scheduled diagnoses that have layers (a non-finite pass has none), in order."""
    path = run_dir / "diagnostics.jsonl"
    return [r for r in read_jsonl(path) if r.get("layers")] if path.exists() else []
