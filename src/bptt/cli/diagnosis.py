"""The commands that look into a model: ``diagnose``, ``replay``, ``doctor``."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from bptt.builders import build_model, make_task
from bptt.cli.arguments import config_from_args, device_from_args
from bptt.diagnostics import diagnose
from bptt.doctor import DoctorReport, doctor, findings, format_trials
from bptt.replay import replay
from bptt.rundir import RunDirectory
from bptt.tasks import Batch, task_for_file
from bptt.training import DIAGNOSIS_SEED_OFFSET

__all__ = ["run_diagnose", "run_doctor", "run_replay"]


def run_diagnose(args: argparse.Namespace) -> int:
    """``bptt diagnose``: a run's checkpoint or a fresh model, on a batch of its task."""
    if args.task is None and args.data is not None:
        args.task = task_for_file(args.data)
    if args.run_dir is not None and args.task is not None:
        raise ValueError("diagnose takes RUN_DIR or --task/--data (with --cell, --length, ...), not both")
    if args.run_dir is None and args.task is None:
        raise ValueError("diagnose needs RUN_DIR, or --task NAME or --data FILE (with --cell, --length, ...)")
    if args.run_dir is not None:
        model, task, config, step = RunDirectory(args.run_dir).load_model()
        source = f"{args.run_dir} (checkpoint at step {step})"
        default_out = args.run_dir / "diagnosis.json"
    else:
        config = config_from_args(args, command="diagnose")
        task = make_task(config)
        torch.manual_seed(config.seed)
        model = build_model(config, task)
        source = f"a fresh {config.cell} model ({config.init or 'default'} initialisation)"
        default_out = Path(f"diagnosis-{config.task}-{config.cell}-T{config.length}.json")
    generator = torch.Generator().manual_seed(args.seed + DIAGNOSIS_SEED_OFFSET)
    batch = task.validation_set(args.sequences, generator)
    model.eval()
    diagnosis = diagnose(
        model, batch.inputs, batch.targets, lambda output, _: task.probe_loss(output, batch),
        lengths=batch.lengths, lyapunov_k=args.lyapunov,
    )
    print(f"{task.name} (length {config.length}), {args.sequences} sequences, {source}")
    print(diagnosis.summary())
    if diagnosis.layers and diagnosis.layers[-1].profile_by_distance is not None:
        print(_reach(diagnosis.layers[-1].profile_by_distance, diagnosis.layers[-1].horizon, batch))
    out = args.out or default_out
    diagnosis.save(out)
    print(f"written: {out}")
    return 0


def _reach(by_distance: torch.Tensor, horizon: int, batch: Batch) -> str:
    """How far back into the sequences the gradient of the probed loss reaches, in words."""
    relative = by_distance / by_distance[0]
    distances = [d for d in (1, 3, 10, 30, 100, 300, 1000) if d < len(relative)]
    profile = ", ".join(f"d={d}: {float(relative[d]):.2g}" for d in distances)
    steps = batch.inputs.shape[1]
    lengths = batch.lengths.double() if batch.lengths is not None else torch.full((1,), float(steps))
    median = float(lengths.median())
    return (
        f"\nreach (top layer): ||dL/dh|| d steps before the loss step, relative to it: {profile}\n"
        f"the gradient reaches {horizon} steps back, {min(1.0, horizon / median):.0%} of the median "
        f"sequence ({median:.0f} steps; {int(lengths.min())} to {int(lengths.max())})"
    )


def run_replay(args: argparse.Namespace) -> int:
    """``bptt replay``: rerun a captured step; exit status 1 if the anomaly is not reproduced."""
    outcome = replay(args.capture)
    anomaly = outcome.capture
    print(f"captured at training step {anomaly['step']}: {anomaly['kind']}: {anomaly['message']}")
    if outcome.diagnosis.nonfinite is not None:
        print(f"replayed: {outcome.diagnosis.nonfinite.describe()}")
    else:
        print(f"replayed: loss {outcome.diagnosis.loss:.6g}; verdict {outcome.diagnosis.verdict.kind}")
    print(f"reproduced: {'yes' if outcome.reproduced else 'no'}")
    return 0 if outcome.reproduced else 1


def run_doctor(args: argparse.Namespace) -> int:
    """``bptt doctor``: examine, rank the cures, and A/B-test the top ones with ``--try``."""
    run_dir = getattr(args, "run_dir", None)
    if run_dir is not None and "task" in args:
        raise ValueError("doctor takes RUN_DIR or --task (with --cell, --length, ...), not both")
    config = config_from_args(args, saved=run_dir)
    out = getattr(args, "out", None) or Path(f"runs/doctor-{config.task}-{config.cell}-T{config.length}")
    print(f"examining {run_dir or 'a fresh model'}: {config.cell} on {config.task} (length {config.length})")

    def show(report: DoctorReport) -> None:
        print(report.examination.diagnosis.summary())
        print(f"\nfindings ({report.examination.source}): {findings(config, report.examination)}")
        print("\ncures, best first:")
        for rank, cure in enumerate(report.cures, 1):
            print(f"{rank}. {cure.name}: {cure.reason}.")
        if args.tries:
            print(f"\nA/B test of the top {args.tries}, {config.steps} steps each, seed {config.seed} ...", flush=True)

    report = doctor(
        config,
        out,
        run_dir=run_dir,
        tries=args.tries,
        device=device_from_args(args),
        progress=False if getattr(args, "no_progress", False) else None,
        on_prescription=show,
    )
    if report.trials:
        print(format_trials(report.trials))
        print()
        print(report.recommendation.sentence)
    print(f"written: {Path(out) / 'doctor.json'}")
    return 0
