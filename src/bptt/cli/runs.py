"""The commands that train or use a run: ``train``, ``demo``, ``sample``."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from bptt.cli.arguments import config_from_args, device_from_args
from bptt.config import TrainConfig
from bptt.generate import generate
from bptt.rundir import RunDirectory
from bptt.tasks import TASKS, AbstractStreamTask
from bptt.training import RunResult, train

__all__ = ["run_demo", "run_sample", "run_train"]


def run_train(args: argparse.Namespace) -> int:
    """``bptt train``: train, then print the verdict and the run directory."""
    resume = getattr(args, "resume", False)
    if resume and "out" not in args:
        raise ValueError("--resume needs --out DIR, the run directory to continue")
    config = config_from_args(args, saved=args.out if resume else None)
    out = getattr(args, "out", None) or Path(
        f"runs/{config.task}-{config.cell}-T{config.length}-s{config.seed}"
    )
    result = train(
        config,
        out,
        resume=resume,
        overwrite=getattr(args, "overwrite", False),
        device=device_from_args(args),
        progress=False if getattr(args, "no_progress", False) else None,
        tensorboard=getattr(args, "tensorboard", False),
    )
    print(f"{config.cell} on {config.task} (length {config.length}): {result.verdict()}")
    print(f"run directory: {result.run_dir}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """``bptt demo``: a tanh RNN and an LSTM on the adding problem, side by side."""
    results: dict[str, RunResult] = {}
    for cell in ("rnn-tanh", "lstm"):
        config = TrainConfig(
            task="adding", length=args.length, cell=cell, steps=args.steps, eval_every=max(1, args.steps // 4)
        )
        print(f"training {cell} on the adding problem, length {args.length}, {args.steps} steps ...")
        results[cell] = train(config, args.out / cell, overwrite=True)
    first = next(iter(results.values()))
    print()
    print(
        f"adding problem, length {args.length}: trivial baseline MSE {first.baseline:.3f}, "
        f"solved below {first.solved_threshold}"
    )
    print(f"{'model':10} {'val MSE':>9} {'vs baseline':>12} {'solved':>7} {'gradient reaches':>17}")
    for cell, result in results.items():
        mse = result.metrics[result.metric_name]
        print(
            f"{cell:10} {mse:9.4f} {mse / result.baseline:11.1%} {'yes' if result.solved else 'no':>7} "
            f"{result.horizon:>8} of {args.length - 1} steps back"
        )
    print(
        "\n'gradient reaches' is the largest distance d with ||dL/dh_(T-d)|| >= 1e-3 * ||dL/dh_T||: "
        "a model whose gradient fades before it reaches the first marker cannot learn the task."
    )
    return 0


def run_sample(args: argparse.Namespace) -> int:
    """``bptt sample``: continue a prompt with a charlm run's model."""
    run = RunDirectory(args.run_dir)
    config = run.config()
    if not issubclass(TASKS.get(config.task), AbstractStreamTask):  # a wrong run, not a wrong type
        raise ValueError(  # noqa: TRY004
            f"{args.run_dir} trained task {config.task!r}, which does not generate text; "
            "sample from a charlm run (bptt train charlm ...)"
        )
    model, task, _, _ = run.load_model()
    text = generate(
        model, task.tokenizer, args.prompt, args.length, args.temperature,
        torch.Generator().manual_seed(args.seed),
    )
    print(args.prompt + text)
    return 0
