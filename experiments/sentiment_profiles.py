"""Gradient profiles of trained sentiment models, side by side, on the same test reviews.

For each run directory (e.g. a tanh RNN and an LSTM trained with ``bptt train sentiment``)
the model's latest checkpoint is diagnosed on the same reviews of the test split: the norm of
``dL/dh`` ``d`` tokens before the end of each review, relative to the end, shows how much of
a review the loss can still learn from.

    python experiments/sentiment_profiles.py runs/imdb-rnn-tanh runs/imdb-lstm --reviews 64

Prints a Markdown table and writes ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from bptt.builders import build_model, make_task
from bptt.diagnostics import diagnose
from bptt.rundir import RunDirectory
from bptt.tasks import Batch

DISTANCES = (0, 1, 3, 10, 30, 100, 200, 300)


def profile(run_dir: Path, reviews: int, seed: int) -> dict:
    """The diagnosis of ``run_dir``'s checkpoint on ``reviews`` seeded test reviews."""
    run = RunDirectory(run_dir)
    config = run.config()
    task = make_task(config)
    model = build_model(config, task)
    model.load_state_dict(run.load_checkpoint()["model"])
    model.eval()
    order = torch.randperm(task.split_size("test"), generator=torch.Generator().manual_seed(seed))
    batch: Batch = task.examples("test", order[:reviews].sort().values)
    diagnosis = diagnose(
        model, batch.inputs, batch.targets, lambda output, _: task.probe_loss(output, batch),
        lengths=batch.lengths, lyapunov_k=4, products=False,
    )
    top = diagnosis.layers[-1]
    relative = (top.profile_by_distance / top.profile_by_distance[0]).tolist()
    summary = json.loads((run.path / "summary.json").read_text())
    return {
        "run": str(run_dir),
        "cell": config.cell,
        "test_accuracy": summary["test_metrics"]["accuracy"],
        "horizon": top.horizon,
        "decay_rate": top.decay_rate,
        "lyapunov_1": float(top.lyapunov[0]),
        "median_review_tokens": float(batch.lengths.double().median()),
        "relative_by_distance": relative,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="sentiment run directories")
    parser.add_argument("--reviews", type=int, default=64, help="test reviews to diagnose")
    parser.add_argument("--seed", type=int, default=0, help="picks the reviews")
    parser.add_argument("--out", type=Path, default=Path("runs/sentiment_profiles.json"))
    args = parser.parse_args()
    rows = [profile(run, args.reviews, args.seed) for run in args.runs]
    header = " | ".join(row["cell"] for row in rows)
    print(f"| | {header} |")
    print("|---" * (len(rows) + 1) + "|")
    print("| test accuracy | " + " | ".join(f"{row['test_accuracy']:.1%}" for row in rows) + " |")
    print("| horizon (tokens back) | " + " | ".join(str(row["horizon"]) for row in rows) + " |")
    print("| λ₁ (per token) | " + " | ".join(f"{row['lyapunov_1']:.3f}" for row in rows) + " |")
    longest = max(len(row["relative_by_distance"]) for row in rows)
    for d in (d for d in DISTANCES if d < longest):
        cells = [
            row["relative_by_distance"][d] if d < len(row["relative_by_distance"]) else float("nan") for row in rows
        ]
        print(f"| ‖dL/dh‖ at d = {d} | " + " | ".join(f"{value:.2g}" for value in cells) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"reviews": args.reviews, "seed": args.seed, "runs": rows}, indent=2) + "\n")
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
