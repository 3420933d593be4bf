"""Which cells learn the adding problem at which length, with the same step budget?

Trains every (cell, length) pair with `bptt.train`, the same flags for all (the CLI's
defaults unless overridden), then prints, for each, the final validation MSE against the
trivial baseline (1/6), whether it is solved (MSE < 0.01) and how many steps back the
gradient reaches at the end.

    python benchmarks/adding_study.py --cells lstm --lengths 50          # defaults: 2000 steps, lr 3e-3
    python benchmarks/adding_study.py --cells rnn-tanh,irnn --lengths 200 --steps 6000 --lr 1e-4 --clip-norm 1

Writes benchmarks/results/adding_study.json. Not run by CI (minutes of CPU per run).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from bptt import TrainConfig, train
from bptt.config import clip_spec

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="rnn-tanh,irnn,lstm", help="comma-separated cell names")
    parser.add_argument("--lengths", default="50,200", help="comma-separated sequence lengths")
    parser.add_argument("--steps", type=int, default=TrainConfig.steps, help="optimizer steps per run")
    parser.add_argument("--lr", type=float, default=TrainConfig.lr, help="learning rate (Adam)")
    parser.add_argument("--clip-norm", type=float, default=None, help="global-norm clipping threshold")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "adding_study.json", help="JSON output file")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as runs:
        for length in (int(value) for value in args.lengths.split(",")):
            for cell in args.cells.split(","):
                config = TrainConfig(
                    task="adding", length=length, cell=cell, steps=args.steps, lr=args.lr,
                    clip=clip_spec(args.clip_norm), seed=args.seed,
                )
                started = time.perf_counter()
                result = train(config, Path(runs) / f"{cell}-{length}", progress=False)
                rows.append(
                    {
                        "cell": cell,
                        "length": length,
                        "steps": args.steps,
                        "mse": result.metrics["mse"],
                        "baseline": result.baseline,
                        "solved": result.solved,
                        "horizon": result.horizon,
                        "decay_rate": result.decay_rate,
                        "nonfinite_steps": result.nonfinite_steps,
                        "seconds": time.perf_counter() - started,
                        "config": config.to_dict(),
                    }
                )
                print_row(rows[-1])

    print()
    print(f"{'cell':9} {'length':>6} {'val MSE':>9} {'/ baseline':>10} {'solved':>6} {'horizon':>8} {'seconds':>8}")
    for row in rows:
        print_row(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "adding_study",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "processor": platform.processor(),
        "rows": rows,
    }
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {args.out}")


def print_row(row: dict) -> None:
    print(
        f"{row['cell']:9} {row['length']:>6} {row['mse']:9.4f} {row['mse'] / row['baseline']:10.1%} "
        f"{'yes' if row['solved'] else 'no':>6} {row['horizon']:>8} {row['seconds']:8.0f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
