"""The long-memory table: gated cells, IndRNN and the long-memory cells on the adding problem and
copy memory at T = 100, 500, 1000.

Each row trains with its paper's optimiser, learning rate and width (:data:`ROWS`), and every
row of a task gets the same step budget and batch (:data:`STEPS`, :data:`BATCH`) and seed,
through ``bptt.train``. The table gives the final validation loss, that loss as a share of the
task's trivial baseline, whether and at which step the task was solved, the gradient horizon
after training, and the wall time per optimizer step. Runs already finished under ``--out`` are
read back, and a run that was interrupted resumes from its last checkpoint, so a stopped table
continues where it stopped when started again with the same arguments.

    python experiments/long_memory.py                      # the full table (an estimated 15-20 h on 2 cores)
    python experiments/long_memory.py --quick --rows lstm lem --tasks adding   # a smoke test, T = 100

Writes ``OUT/long_memory-TASKS.json`` and prints a Markdown table (also ``.md``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from _tables import Job, baselines, loss_and_solved, markdown, run_jobs, slug, write_table

from bptt import TrainConfig

ROWS: dict[str, dict[str, Any]] = {
    # the gated cells: bptt's defaults (Adam 3e-3, 128 units), no one paper's
    "lstm": {"cell": "lstm", "optimizer": "adam", "lr": 3e-3, "hidden": 128},
    "gru": {"cell": "gru", "optimizer": "adam", "lr": 3e-3, "hidden": 128},
    # the same LSTM with chrono initialisation of the gate biases (Tallec & Ollivier 2018)
    "lstm + chrono": {"cell": "lstm", "init": "chrono", "optimizer": "adam", "lr": 3e-3, "hidden": 128},
    # Li et al. 2018, adding problem: two layers of 128 units, Adam lr 2e-4, batch 50
    # (|u| <= 2^(1/T): the cell's constraint)
    "indrnn": {"cell": "indrnn", "layers": 2, "optimizer": "adam", "lr": 2e-4, "hidden": 128},
    # Lezcano-Casado & Martínez-Rubio 2019, copy memory: RMSprop lr 2e-4 (the skew parameter at a
    # tenth of it: the cell's slow parameter), 190 units, batch 128, Henaff init (the cell's default)
    "exprnn": {"cell": "exprnn", "optimizer": "rmsprop", "lr": 2e-4, "hidden": 190},
    # Rusch et al. 2022, adding problem: Adam lr 2.6e-3, 128 units, batch 50 (Δt 0.0242: the cell's default)
    "lem": {"cell": "lem", "optimizer": "adam", "lr": 2.6e-3, "hidden": 128},
    # Rusch & Mishra 2021, adding problem: Adam lr 2e-2, 128 units, batch 50
    # (Δt 0.06, γ 66, ε 15: the cell's defaults)
    "cornn": {"cell": "cornn", "optimizer": "adam", "lr": 2e-2, "hidden": 128},
}
"""Row label -> the TrainConfig fields of that row: each cell's published optimiser settings
(the papers' batch sizes are in :data:`BATCH`: one per task, for every row)."""

BATCH = {"adding": 50, "copy": 128}
"""Sequences per batch, one per task for every row: the adding problem's 50 (Li et al. 2018,
Rusch & Mishra 2021, Rusch et al. 2022), copy memory's 128 (Lezcano-Casado & Martínez-Rubio 2019)."""

STEPS = {"adding": 5000, "copy": 5000}
"""The default step budget per task, the same for every row."""

LENGTHS = (100, 500, 1000)

QUICK = {"lengths": [100], "steps": 30, "eval_every": 10, "eval_size": 64}
"""``--quick``: a smoke test of the whole pipeline at T = 100, in seconds per run."""


def step_budgets(items: list[str], tasks: list[str]) -> dict[str, int]:
    """``["3000"]`` (every task) or ``["adding=5000", "copy=2000"]`` -> steps per task; tasks
    left out keep :data:`STEPS`."""
    budgets = {task: STEPS[task] for task in tasks}
    for item in items:
        task, equals, value = item.rpartition("=")
        if not value.isdigit() or int(value) < 1 or (equals and task not in tasks):
            raise ValueError(
                f"expected --steps N or --steps TASK=N with TASK among {tasks} and N a positive integer, "
                f"received {item!r}"
            )
        for name in [task] if equals else tasks:
            budgets[name] = int(value)
    return budgets


def caption(task: str, rows: list[dict[str, Any]], steps: int) -> str:
    return (
        f"**{task}**: validation {rows[0]['metric']} after {steps} steps of batch {rows[0]['config']['batch']} "
        f"(in brackets: as a share of the trivial baseline, {baselines(rows)}); **bold** = solved, `✓@N` at "
        "step N; `½@N`: first below half the baseline at step N; `h`: gradient horizon after training "
        "(steps back); `s/step`: wall seconds per optimizer step; `nf`: non-finite steps skipped."
    )


def cell(row: dict[str, Any]) -> str:
    text = loss_and_solved(row) + f", h {row['horizon']}"
    if row["seconds_per_step"] is not None:
        text += f", {row['seconds_per_step']:.3g} s/step"
    if row["nonfinite_steps"]:
        text += f", nf {row['nonfinite_steps']}"
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(BATCH), choices=list(BATCH))
    parser.add_argument("--lengths", nargs="+", type=int, help=f"default {list(LENGTHS)}; --quick: {QUICK['lengths']}")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), help="labels from ROWS")
    parser.add_argument(
        "--steps", nargs="+", default=[], metavar="[TASK=]N",
        help=f"the step budget, for every task or per task (default {STEPS}; --quick: {QUICK['steps']})",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="runs side by side, one thread each")
    parser.add_argument("--quick", action="store_true", help="T = 100, a few steps, small evaluations")
    parser.add_argument("--out", type=Path, help="default runs/long-memory (--quick: runs/long-memory-quick)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.rows) - set(ROWS))
    if unknown:
        parser.error(f"unknown rows {unknown}; choose among {list(ROWS)}")
    try:
        steps = step_budgets(args.steps or ([str(QUICK["steps"])] if args.quick else []), args.tasks)
    except ValueError as error:
        parser.error(str(error))
    lengths = args.lengths or (QUICK["lengths"] if args.quick else list(LENGTHS))
    out = args.out or Path("runs/long-memory-quick" if args.quick else "runs/long-memory")
    jobs = []
    for task in args.tasks:
        evaluation = (QUICK["eval_every"], QUICK["eval_size"]) if args.quick else (100, 500)
        for length in lengths:
            for label in args.rows:
                config = TrainConfig(
                    task=task, length=length, steps=steps[task], batch=BATCH[task], seed=args.seed,
                    eval_every=evaluation[0], eval_size=evaluation[1], checkpoint_every=evaluation[0],
                    diagnose_every=0, **ROWS[label],
                )
                jobs.append(Job(label, config, out / task / f"T{length}" / slug(label)))

    def show(row: dict[str, Any]) -> None:
        print(
            f"{row['task']:7} T={row['length']:<5} {row['label']:14} {row['metric']} {row['value']:.4g} "
            f"({row['value'] / row['baseline']:.0%} of the baseline) solved={row['solved']} at={row['solved_at']} "
            f"h={row['horizon']} s/step={row['seconds_per_step']}",
            flush=True,
        )

    rows = run_jobs(jobs, args.workers, show)
    table = markdown(rows, ROWS, lambda task, task_rows: caption(task, task_rows, steps[task]), cell, "row")
    payload = {"steps": steps, "batch": {task: BATCH[task] for task in args.tasks}, "rows": rows}
    write_table(out, "long_memory-" + "-".join(args.tasks), payload, table)


if __name__ == "__main__":
    main()
