"""Study throughput: trials per minute with each executor, and the store's overhead per trial.

The same grid of small trials (the adding problem, short runs) is run from scratch by the
local executor with 1 and 2 workers and by Ray on a local instance limited to 2 CPUs, side
by side in one process; the store's overhead is the time of recording a trial (add, claim,
finish with a realistic summary) without training, averaged over many trials.

    python benchmarks/bench_study.py                 # 8 trials of 300 steps per executor
    python benchmarks/bench_study.py --trials 4 --steps 100

Prints a table of ratios against the 1-worker local executor and writes
benchmarks/results/bench_study.json. Not run by CI.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import ray

from bptt.store import ResultStore, trial_key
from bptt.study import StudySpec, run_study

RESULTS = Path(__file__).parent / "results"


def grid(trials: int, steps: int) -> StudySpec:
    """``trials`` small adding-problem trials (one configuration, ``trials`` seeds)."""
    return StudySpec(
        task="adding", lengths=(20,), configs=("rnn-tanh",), seeds=trials, steps=steps,
        base={"hidden": 16, "batch": 16, "eval_every": steps, "eval_size": 64, "diagnose_every": 0},
        name="bench",
    )


def trials_per_minute(spec: StudySpec, executor: str, workers: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        result = run_study(spec, folder, executor=executor, workers=workers, progress=False)
        seconds = time.perf_counter() - started
    assert result.ran == len(spec.trials()), "every trial must run"
    return 60 * result.ran / seconds


def store_overhead(trials: int) -> float:
    """Seconds per trial to add, claim and finish it in a fresh store (no training)."""
    summary = {"solved": False, "metrics": {"mse": 0.16}, "horizon": 12, "wall_seconds": 1.0,
               "profile": list(range(200))}
    with tempfile.TemporaryDirectory() as folder, ResultStore(Path(folder) / "study.sqlite") as store:
        configs = [{"seed": seed, "task": "adding"} for seed in range(trials)]
        started = time.perf_counter()
        for config in configs:
            key = store.add([config], "bench", lambda c: f"{folder}/{trial_key(c)}")[0]
            store.claim(key)
            store.finish(key, summary)
        return (time.perf_counter() - started) / trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="trials per executor")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per trial")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_study.json")
    args = parser.parse_args()
    spec = grid(args.trials, args.steps)
    rates = {
        "local, 1 worker": trials_per_minute(spec, "local", 1),
        "local, 2 workers": trials_per_minute(spec, "local", 2),
    }
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        rates["ray, local 2 CPUs"] = trials_per_minute(spec, "ray", 2)
    finally:
        ray.shutdown()
    overhead = store_overhead(200)
    reference = rates["local, 1 worker"]
    print(f"{args.trials} trials of {args.steps} steps (adding, T=20, 16 units) per executor")
    print(f"{'executor':20} {'trials/min':>11} {'vs 1 worker':>12}")
    for name, rate in rates.items():
        print(f"{name:20} {rate:11.2f} {rate / reference:11.2f}x")
    seconds_per_trial = 60 / reference
    print(f"store overhead per trial: {overhead * 1e3:.2f} ms ({overhead / seconds_per_trial:.2%} of a trial)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "trials": args.trials, "steps": args.steps, "trials_per_minute": rates,
        "ratio_vs_local_1": {name: rate / reference for name, rate in rates.items()},
        "store_seconds_per_trial": overhead, "machine": platform.platform(),
        "python": platform.python_version(),
    }, indent=2) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
