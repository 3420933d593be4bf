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
from pathlib import Path
from typing import Any

from _tables import Job, baselines, loss_and_solved, markdown, run_jobs, slug, write_table

from bptt import TrainConfig

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


def caption(task: str, rows: list[dict[str, Any]], steps: int) -> str:
    return (
        f"**{task}**: validation {rows[0]['metric']} after {steps} steps (in brackets: as a share of "
        f"the trivial baseline, {baselines(rows)}); `½@N`: first below half the baseline at step N; "
        "**bold** = "
        "solved, `✓@N` at step N; `h`: gradient horizon after training (steps back); `nf`: "
        "non-finite steps skipped."
    )


def cell(row: dict[str, Any]) -> str:
    text = loss_and_solved(row) + f", h {row['horizon']}"
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
    jobs = [
        Job(label, TrainConfig(**{**base, "task": task, "length": length, **REMEDIES[label]}),
            args.out / task / f"T{length}" / slug(label))
        for task in args.tasks
        for length in args.lengths
        for label in args.remedies
    ]

    def show(row: dict[str, Any]) -> None:
        print(
            f"{row['task']:7} T={row['length']:<4} {row['label']:34} {row['metric']} "
            f"{row['value']:.4g} solved={row['solved']} at={row['solved_at']} "
            f"h={row['horizon']} nf={row['nonfinite_steps']}",
            flush=True,
        )

    rows = run_jobs(jobs, args.workers, show)
    table = markdown(rows, REMEDIES, lambda task, task_rows: caption(task, task_rows, args.steps), cell, "remedy")
    write_table(args.out, "remedy_table-" + "-".join(args.tasks), {"steps": args.steps, "rows": rows}, table)


if __name__ == "__main__":
    main()
