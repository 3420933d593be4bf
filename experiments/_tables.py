"""What the experiment tables share: train one configuration through ``bptt.train`` (or read
back the run that finished before, or resume the one that was interrupted), summarise its run
as a table row, run the jobs side by side, and write the table as Markdown and JSON.

A table script builds its :class:`Job` list and calls :func:`run_jobs`; every run lives in its
own directory under the table's ``--out``, so a table that was stopped continues where it
stopped when it is started again with the same arguments.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, final

import torch

from bptt import TrainConfig, train
from bptt.builders import build_model, make_task
from bptt.jsonio import read_jsonl
from bptt.rundir import RunDirectory, RunDirectoryError
from bptt.tasks import Batch
from bptt.training import VALIDATION_SEED_OFFSET, gradient_reach

HALF = 0.5
"""'Below the baseline' means a validation loss under this fraction of the trivial baseline's."""


@final
@dataclass(frozen=True)
class Job:
    """One table cell to compute.

    Attributes:
        label: the row it belongs to.
        config: the run's configuration.
        out: the run's directory.
    """

    label: str
    config: TrainConfig
    out: Path


def slug(label: str) -> str:
    """A directory name for a row label: ``"irnn (lr 3e-4, clip-norm 1)"`` -> ``"irnnlr3e-4_clip-norm1"``."""
    return label.replace(" ", "").replace(",", "_").replace("(", "").replace(")", "")


def train_or_read(config: TrainConfig, out: Path) -> dict[str, Any]:
    """The summary of the run of ``config`` at ``out``, training only what is missing.

    A run that finished with this config is read back; one that was interrupted after a
    checkpoint resumes from it (``bptt.train(resume=True)``: the curve continues as if it had
    never stopped); anything else there (another config, no checkpoint) is replaced. The
    summary gains ``seconds_per_step``, the wall time per optimizer step (evaluations and
    checkpoints included) of the steps trained by this call, and ``wall_seconds``, that rate
    times the steps; both are written back to ``summary.json``.
    """
    run = RunDirectory(out)
    summary_path = out / "summary.json"
    try:
        same = run.config() == config  # a field added since the run reads as its default
    except RunDirectoryError:
        same = False
    if same and summary_path.exists():
        return json.loads(summary_path.read_text())
    try:
        start = int(run.load_checkpoint()["step"]) if same else 0
    except RunDirectoryError:  # killed before its first checkpoint
        start = 0
    started = time.perf_counter()
    train(config, out, resume=start > 0, overwrite=start == 0, progress=False)
    per_step = (time.perf_counter() - started) / max(1, config.steps - start)
    summary = json.loads(summary_path.read_text())
    summary |= {"seconds_per_step": per_step, "wall_seconds": per_step * config.steps}
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def run_job(job: Job) -> dict[str, Any]:
    """Train one configuration (or read it back, or resume it) and return its table row.

    Returns:
        ``label``, ``task``, ``length``, ``metric``, ``value`` (the final validation metric),
        ``baseline`` (the task's trivial baseline), ``below_half_baseline_at`` (first
        validation step under :data:`HALF` of it), ``solved``, ``solved_at``, ``horizon``
        (from the final checkpoint, :func:`horizon_after_training`), ``nonfinite_steps``,
        ``max_grad_norm``, ``steps``, ``seconds_per_step``, ``seconds`` and ``config``.
    """
    config, out = job.config, job.out
    summary = train_or_read(config, out)
    records = read_jsonl(out / "metrics.jsonl")
    norms = [r["grad_norm"] for r in records if r["split"] == "train" and math.isfinite(r["grad_norm"])]
    metric = summary["metric_name"]
    half = [  # every table metric is a loss: lower is better
        r["step"] for r in records
        if r["split"] == "validation" and r[metric] < HALF * summary["baseline"]
    ]
    return {
        "label": job.label,
        "task": config.task,
        "length": config.length,
        "metric": metric,
        "value": summary["metrics"][metric],
        "baseline": summary["baseline"],
        "below_half_baseline_at": half[0] if half else None,
        "solved": summary["solved"],
        "solved_at": summary.get("solved_at"),
        "horizon": horizon_after_training(config, out),
        "nonfinite_steps": summary["nonfinite_steps"],
        "max_grad_norm": max(norms) if norms else None,
        "steps": config.steps,
        "seconds_per_step": summary.get("seconds_per_step"),
        "seconds": summary.get("wall_seconds"),
        "config": config.to_dict(),
    }


def horizon_after_training(config: TrainConfig, out: Path) -> int:
    """How far back the gradient of the task's probe loss reaches, from the final checkpoint.

    The same batch as ``bptt.train``'s own measurement, recomputed so that cached runs get
    the current definition (e.g. copy's probe: the loss of the recall steps alone).
    """
    task = make_task(config)
    model = build_model(config, task)
    model.load_state_dict(RunDirectory(out).load_checkpoint()["model"])
    generator = torch.Generator().manual_seed(config.seed + VALIDATION_SEED_OFFSET)
    validation = task.validation_set(config.eval_size, generator)
    batch = Batch(*(part[: config.batch] for part in (validation.inputs, validation.targets)))
    return gradient_reach(model, task, batch)[0]


def _run_job_alone(job: Job) -> dict[str, Any]:
    torch.set_num_threads(1)  # runs side by side, one core each
    return run_job(job)


def run_jobs(jobs: Sequence[Job], workers: int, on_row: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
    """Run ``jobs`` (``workers`` at a time, one thread each; in this process with one worker)
    and return their rows in order, passing each to ``on_row`` as it comes."""
    if workers < 1:
        raise ValueError(f"expected at least one worker, got {workers}")
    rows = []
    if workers == 1:
        for job in jobs:
            rows.append(run_job(job))
            on_row(rows[-1])
        return rows
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for row in pool.imap(_run_job_alone, jobs):
            rows.append(row)
            on_row(row)
    return rows


def markdown(
    rows: Sequence[dict[str, Any]],
    labels: Iterable[str],
    caption: Callable[[str, list[dict[str, Any]]], str],
    cell: Callable[[dict[str, Any]], str],
    corner: str,
) -> str:
    """One table per task: ``labels`` down (in that order; rows without a run left out) under
    the heading ``corner``, lengths across, each entry ``cell(row)``, below the task's
    ``caption(task, rows)``."""
    labels = list(labels)
    lines = []
    for task in sorted({row["task"] for row in rows}):
        task_rows = [row for row in rows if row["task"] == task]
        lengths = sorted({row["length"] for row in task_rows})
        lines += [
            caption(task, task_rows),
            "",
            f"| {corner} | " + " | ".join(f"T = {length}" for length in lengths) + " |",
            "|---|" + "---|" * len(lengths),
        ]
        for label in labels:
            cells = []
            for length in lengths:
                match = [r for r in task_rows if r["label"] == label and r["length"] == length]
                cells.append(cell(match[0]) if match else "")
            if any(cells):
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def baselines(rows: Sequence[dict[str, Any]]) -> str:
    """The trivial baseline of the rows' task, one value or one per length."""
    values = {row["length"]: row["baseline"] for row in rows}
    if len(set(values.values())) == 1:
        return f"{next(iter(values.values())):.3g}"
    return ", ".join(f"{value:.3g} at T = {length}" for length, value in sorted(values.items()))


def loss_and_solved(row: dict[str, Any]) -> str:
    """``value (share of the baseline)``, bold when solved, then ``½@N`` and ``✓@N``."""
    value = f"{row['value']:.3g} ({row['value'] / row['baseline']:.0%})"
    text = f"**{value}**" if row["solved"] else value
    if row["below_half_baseline_at"] is not None:
        text += f" ½@{row['below_half_baseline_at']}"
    if row["solved"]:
        text += f" ✓@{row['solved_at']}"
    return text


def write_table(out: Path, name: str, payload: dict[str, Any], table: str) -> None:
    """Write ``out/NAME.json`` (``payload``) and ``out/NAME.md`` (``table``), then print the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / f"{name}.md").write_text(table + "\n")
    print()
    print(table)
