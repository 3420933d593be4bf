"""The commands over many runs: ``study`` and ``report``."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from bptt.study import STORE, StudySpec, parse_list
from bptt.study import run_study as run_grid

__all__ = ["run_report", "run_study"]


def _study_spec(args: argparse.Namespace) -> StudySpec:
    """The grid of ``bptt study``: from --spec FILE, overridden by the flags given."""
    if args.spec is None and args.task is None:
        raise ValueError("study needs a TASK or --spec FILE.toml")
    spec = StudySpec.from_toml(args.spec) if args.spec is not None else None
    fields = dataclasses.asdict(spec) if spec is not None else {"task": args.task, "lengths": None, "configs": None}
    if args.task is not None:
        fields["task"] = args.task
    for name, kind in (("lengths", int), ("configs", str), ("clips", str)):
        if getattr(args, name) is not None:
            fields[name] = parse_list(getattr(args, name), kind)
    for name in ("seeds", "steps"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    fields["name"] = args.name or (spec.name if spec is not None else fields["task"])
    base = dict(fields.get("base") or {})
    base.update({n: getattr(args, n) for n in ("hidden", "batch") if getattr(args, n) is not None})
    fields["base"] = base
    missing = [name for name in ("lengths", "configs") if not fields.get(name)]
    if missing:
        raise ValueError(f"study needs {' and '.join('--' + m for m in missing)} (or --spec FILE.toml)")
    return StudySpec(**fields)


def run_study(args: argparse.Namespace) -> int:
    """``bptt study``: run the grid; exit status 1 if a trial is not finished."""
    spec = _study_spec(args)
    out = args.out or Path(f"runs/study-{spec.name}")
    total = len(spec.trials())
    print(f"study {spec.name!r}: {total} trials of {spec.task} ({spec.steps} steps each) in {out}")
    result = run_grid(
        spec, out, executor=args.executor, workers=args.workers, address=args.address,
        retry_failed=not args.no_retry,
        progress=False if args.no_progress else None,
    )
    print(f"ran {result.ran} trials ({total - result.ran} already finished)")
    print(result.table())
    failed = [t for t in result.trials if t.status != "finished"]
    for trial in failed[:5]:
        last = (trial.error or "interrupted").strip().splitlines()[-1]
        print(f"not finished ({trial.status}): {trial.run_dir}: {last}")
    print(f"store: {out / STORE}")
    return 1 if failed else 0


def run_report(args: argparse.Namespace) -> int:
    """``bptt report``: the figures and HTML page of a run or a study."""
    # imported here, not at the top: bptt.report imports matplotlib, which only reports need
    from bptt.report import report

    print(f"written: {report(args.path, args.out)}")
    return 0
