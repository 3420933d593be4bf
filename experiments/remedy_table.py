"""The remedy table: every cure on the adding problem and copy memory at T = 50, 100, 200.

Each configuration trains with the same budget (steps, batch, hidden size, seed) through
``bptt.train``; the table says which ones get below the task's trivial baseline, whether and
when they solve it, how far back the gradient reaches after training, and how many steps
were non-finite. Runs already finished under ``--out`` are read back, so an interrupted
table continues where it stopped.

    python experiments/remedy_table.py                  # the full table (over an hour on 2 cores)
    python experiments/remedy_table.py --lengths 50 --tasks adding --steps 300   # a quick look

Writes ``OUT/remedy_table-TASKS.json`` and prints a Markdown table (also ``.md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import time
from pathlib import Path
from typing import Any

import torch

from bptt import TrainConfig, train
from bptt.builders import build_model, make_task
from bptt.jsonio import read_jsonl
from bptt.rundir import RunDirectory
from bptt.tasks import Batch
from bptt.training import VALIDATION_SEED_OFFSET, gradient_reach

REMEDIES: dict[str, dict[str, Any]] = {
    "rnn-tanh": {},
    "rnn-tanh + clip-norm 1": {"clip": "norm:1"},
    "rnn-tanh + orthogonal init": {"init": "orthogonal"},
    "irnn (lr 3e-4, clip-norm 1)": {"cell": "irnn", "lr": 3e-4, "clip": "norm:1"},
    "ortho-rnn (constraint)": {"cell": "ortho-rnn"},
    "indrnn": {"cell": "indrnn"},
    "lstm": {"cell": "lstm"},
    "lstm + chrono": {"cell": "lstm", "init": "chrono"},
    "gru": {"cell": "gru"},
    "irnn, SGD lr 0.1 (exploding)": {"cell": "irnn", "optimizer": "sgd", "lr": 0.1},
    "irnn, SGD lr 0.1 + clip-norm 1": {"cell": "irnn", "optimizer": "sgd", "lr": 0.1, "clip": "norm:1"},
}
"""Label -> the TrainConfig fields it changes from the common base."""

HALF = 0.5
"""'Below the baseline' means a validation loss under this fraction of the trivial baseline's."""


def run_one(job: tuple[str, dict[str, Any], Path]) -> dict[str, Any]:
    """Train one configuration (or read it back if it finished before); one table row."""
    label, fields, out = job
    torch.set_num_threads(1)  # two runs side by side on two cores
    config = TrainConfig(**fields)
    summary_path = out / "summary.json"
    if summary_path.exists() and RunDirectory(out).config() == config:  # fields added since: defaults
        summary = json.loads(summary_path.read_text())
    else:
        started = time.perf_counter()
        train(config, out, overwrite=True, progress=False)
        summary = json.loads(summary_path.read_text())
        summary["wall_seconds"] = time.perf_counter() - started
        summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    records = read_jsonl(out / "metrics.jsonl")
    norms = [r["grad_norm"] for r in records if r["split"] == "train" and math.isfinite(r["grad_norm"])]
    metric = summary["metric_name"]
    value = summary["metrics"][metric]
    half = [  # every table metric is a loss: lower is better
        r["step"] for r in records
        if r["split"] == "validation" and r[metric] < HALF * summary["baseline"]
    ]
    return {
        "remedy": label,
        "task": config.task,
        "length": config.length,
        "metric": metric,
        "value": value,
        "baseline": summary["baseline"],
        "below_half_baseline_at": half[0] if half else None,
        "solved": summary["solved"],
        "solved_at": summary.get("solved_at"),
        "horizon": horizon_after_training(config, out),
        "nonfinite_steps": summary["nonfinite_steps"],
        "max_grad_norm": max(norms) if norms else None,
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


def markdown(rows: list[dict[str, Any]], steps: int) -> str:
    """One table per task: remedies down, lengths across; each cell ``value (solved at)``."""
    lines = []
    for task in sorted({row["task"] for row in rows}):
        task_rows = [row for row in rows if row["task"] == task]
        lengths = sorted({row["length"] for row in task_rows})
        first = task_rows[0]
        lines += [
            (f"**{task}**: validation {first['metric']} after {steps} steps (in brackets: as a share of "
            f"the trivial baseline, {_baselines(task_rows)}); `½@N`: first below half the baseline at step N; "
            "**bold** = "
            "solved, `✓@N` at step N; `h`: gradient horizon after training (steps back); `nf`: "
            "non-finite steps skipped."),
            "",
            "| remedy | " + " | ".join(f"T = {length}" for length in lengths) + " |",
            "|---|" + "---|" * len(lengths),
        ]
        for remedy in REMEDIES:
            cells = []
            for length in lengths:
                match = [r for r in task_rows if r["remedy"] == remedy and r["length"] == length]
                cells.append(_cell(match[0]) if match else "")
            if any(cells):
                lines.append(f"| {remedy} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _baselines(rows: list[dict[str, Any]]) -> str:
    values = {row["length"]: row["baseline"] for row in rows}
    if len(set(values.values())) == 1:
        return f"{next(iter(values.values())):.3g}"
    return ", ".join(f"{value:.3g} at T = {length}" for length, value in sorted(values.items()))


def _cell(row: dict[str, Any]) -> str:
    value = f"{row['value']:.3g} ({row['value'] / row['baseline']:.0%})"
    text = f"**{value}**" if row["solved"] else value
    if row["below_half_baseline_at"] is not None:
        text += f" ½@{row['below_half_baseline_at']}"
    if row["solved"]:
        text += f" ✓@{row['solved_at']}"
    text += f", h {row['horizon']}"
    if row["nonfinite_steps"]:
        text += f", nf {row['nonfinite_steps']}"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["adding", "copy"])
    parser.add_argument("--lengths", nargs="+", type=int, default=[50, 100, 200])
    parser.add_argument("--remedies", nargs="+", default=list(REMEDIES), help="labels from REMEDIES")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/remedy-table"))
    args = parser.parse_args()
    unknown = sorted(set(args.remedies) - set(REMEDIES))
    if unknown:
        parser.error(f"unknown remedies {unknown}; choose among {list(REMEDIES)}")
    base = dataclasses.asdict(
        TrainConfig(
            steps=args.steps, hidden=args.hidden, batch=args.batch, seed=args.seed,
            eval_every=100, eval_size=500, checkpoint_every=args.steps, diagnose_every=0,
        )
    )
    jobs = []
    for task in args.tasks:
        for length in args.lengths:
            for label in args.remedies:
                fields = {**base, "task": task, "length": length, **REMEDIES[label]}
                slug = label.replace(" ", "").replace(",", "_").replace("(", "").replace(")", "")
                jobs.append((label, fields, args.out / task / f"T{length}" / slug))
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        rows = []
        for row in pool.imap(run_one, jobs):
            rows.append(row)
            print(
                f"{row['task']:7} T={row['length']:<4} {row['remedy']:34} {row['metric']} "
                f"{row['value']:.4g} solved={row['solved']} at={row['solved_at']} "
                f"h={row['horizon']} nf={row['nonfinite_steps']}",
                flush=True,
            )
    args.out.mkdir(parents=True, exist_ok=True)
    name = "remedy_table-" + "-".join(args.tasks)
    (args.out / f"{name}.json").write_text(json.dumps({"steps": args.steps, "rows": rows}, indent=2) + "\n")
    table = markdown(rows, args.steps)
    (args.out / f"{name}.md").write_text(table + "\n")
    print()
    print(table)


if __name__ == "__main__":
    main()
