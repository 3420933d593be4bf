"""The ``bptt`` command: train, diagnose, replay, doctor, sample, demo, tasks, data."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from bptt.cells import CELLS
from bptt.config import OPTIMIZERS, SCHEDULES, TrainConfig
from bptt.data import dataset_table
from bptt.diagnostics import diagnose
from bptt.doctor import DoctorReport, doctor, findings, format_trials
from bptt.generate import generate
from bptt.init import INITS
from bptt.replay import replay
from bptt.rundir import RunDirectory
from bptt.study import EXECUTORS, PRESETS, STORE, StudySpec, parse_list, run_study
from bptt.tasks import (
    TASKS,
    AbstractDatasetTask,
    AbstractStreamTask,
    Batch,
    get_task,
    load_arrays,
    task_for_file,
)
from bptt.train import RunResult, build_model, make_task, train

DEFAULTS = TrainConfig()
DIAGNOSE_SEED_OFFSET = 2_000_003
"""Seeds the diagnosed batch apart from the training and validation data."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bptt`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, OSError) as error:
        print(f"bptt: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = INTERRUPTED_HINTS.get(args.command, "")
        print(f"bptt: interrupted{'; ' + hint if hint else ''}", file=sys.stderr)
        return 130


INTERRUPTED_HINTS = {
    "train": "the last checkpoint is intact, continue with --resume",
    "study": "finished trials are kept in the store; run the same command again to do the rest",
}
"""What to do after Ctrl-C, per command."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bptt",
        description=(
            "Make recurrent networks trainable on long sequences: train RNNs on long-dependency "
            "tasks and see how far back their gradient reaches through time."
        ),
    )
    commands = parser.add_subparsers(title="commands", dest="command", required=True, metavar="COMMAND")
    _add_train(commands)
    _add_diagnose(commands)
    _add_replay(commands)
    _add_doctor(commands)
    _add_demo(commands)
    _add_sample(commands)
    _add_study(commands)
    report = commands.add_parser(
        "report",
        help="figures of a run or a study: PNG, SVG and one self-contained HTML page",
        description=(
            "Write PATH/report/report.html (figures embedded) and PATH/report/figures/*.png|svg. "
            "A run: training curves with clipping and non-finite steps marked, the gradient "
            "profile against distance and over training, spectra and Lyapunov exponents. A study: "
            "the share of trials solved per configuration and length, the longest length solved."
        ),
    )
    report.add_argument("path", type=Path, help="a run directory or a study directory")
    report.add_argument("--out", type=Path, help="where the report goes (default PATH/report)")
    report.set_defaults(run=_run_report)
    data = commands.add_parser("data", help="list the real data sets, whether each is installed, and its size")
    data.set_defaults(run=_run_data)
    tasks = commands.add_parser("tasks", help="list the tasks with their metric, baseline and threshold")
    tasks.add_argument("--length", type=int, default=100, help="length at which to show baselines (default 100)")
    tasks.set_defaults(run=_run_tasks)
    return parser


def _add_train(commands: argparse._SubParsersAction) -> None:
    train_parser = commands.add_parser(
        "train",
        help="train a recurrent model on a task and say whether it solved it",
        description=(
            "Train a model on a task, writing a run directory (config.json, metrics.jsonl, "
            "checkpoint.pt, summary.json). Ends by saying whether the task was solved against "
            "its trivial baseline, and how many steps back the gradient reaches."
        ),
        argument_default=argparse.SUPPRESS,
    )
    train_parser.add_argument("task", nargs="?", help=f"task name: {', '.join(TASKS.names())} (see `bptt tasks`)")
    _add_config_flags(train_parser)
    add = train_parser.add_argument
    add("--out", type=Path, help="run directory (default runs/TASK-CELL-TLENGTH-sSEED)")
    add("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    add("--overwrite", action="store_true", help="replace an existing run directory")
    add("--device", help="cpu, cuda, ... (default: cuda if available, else cpu)")
    add("--no-progress", action="store_true", help="no progress bar")
    add("--tensorboard", action="store_true",
        help="also log scalars, gradient profiles and anomalies for TensorBoard in OUT/tensorboard/ "
        "(pip install bptt[tensorboard]; view with: tensorboard --logdir OUT)")
    train_parser.set_defaults(run=_run_train)


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that set :class:`~bptt.config.TrainConfig` fields (unset ones are absent)."""
    add = parser.add_argument
    add(
        "--length",
        type=int,
        help=f"sequence length / delay; for real data: tokens kept per review (sentiment), "
        f"the truncation length of BPTT (charlm), steps per image (smnist) (default {DEFAULTS.length})",
    )
    add(
        "--data",
        help="your own data file: a CSV of text,label (sentiment), a UTF-8 text file (charlm) "
        "or an .npz of x, y[, lengths] (arrays); the task follows from the extension",
    )
    add(
        "--option",
        dest="task_options",
        action="append",
        type=_task_option,
        metavar="KEY=VALUE",
        help="a task option, repeatable, e.g. --option dataset=rotten-tomatoes --option limit=1000",
    )
    add("--embedding", type=int, help="embedding width for token inputs (default: the task's)")
    add(
        "--cell",
        help=f"cell: {', '.join(CELLS.names())}; skip-rnn:K skips K steps (default {DEFAULTS.cell})",
    )
    add("--hidden", type=int, help=f"hidden units per layer (default {DEFAULTS.hidden})")
    add("--layers", type=int, help=f"stacked layers (default {DEFAULTS.layers})")
    add("--residual", action="store_const", const=True, help="residual connections between stacked layers")
    add("--init", help=f"initialisation: {', '.join(INITS.names())} (default: the cell's own)")
    add(
        "--constraint",
        help="constrain W_hh: orthogonal, cayley (orthogonal through the Cayley map), spectral:C "
        "(sigma_max <= C), indrnn:G (|u| <= G^(1/T)), none (default: the cell's own)",
    )
    add(
        "--regularizer",
        help="add a penalty: l2:W (recurrent weights), pascanu:W (keeps ||dL/dh_k|| from "
        "shrinking, Pascanu et al. 2013), lyapunov:W (gradient flossing: lambda_1 -> 0)",
    )
    add("--steps", type=int, help=f"optimizer steps (default {DEFAULTS.steps})")
    add("--batch", type=int, help=f"batch size (default {DEFAULTS.batch})")
    clip = parser.add_mutually_exclusive_group()
    clip.add_argument("--clip-norm", type=float, help="clip the global gradient norm (keeps the direction)")
    clip.add_argument(
        "--clip",
        help="any clipper: norm:C, per-parameter:C, value:V, autoclip:P (percentile of the norm "
        "history), agc:L (unit-wise), zscore:Z (spikes)",
    )
    clip.add_argument("--clip-value", type=float, help="clip each gradient entry to [-V, V]")
    add(
        "--on-nonfinite",
        help="on a NaN/Inf loss or gradient: skip the update, or rollback to the last good "
        f"state with the learning rate halved (default {DEFAULTS.on_nonfinite})",
    )
    add("--optimizer", help=f"{', '.join(OPTIMIZERS)} (default {DEFAULTS.optimizer})")
    add("--lr", type=float, help=f"learning rate (default {DEFAULTS.lr})")
    add("--momentum", type=float, help=f"SGD momentum (default {DEFAULTS.momentum})")
    add("--weight-decay", type=float, help=f"L2 weight decay (default {DEFAULTS.weight_decay})")
    add("--schedule", help=f"learning-rate schedule: {', '.join(SCHEDULES)} (default {DEFAULTS.schedule})")
    add("--warmup", type=int, help=f"linear warm-up steps (default {DEFAULTS.warmup})")
    add("--eval-every", type=int, help=f"evaluate every N steps (default {DEFAULTS.eval_every})")
    add("--eval-size", type=int, help=f"validation sequences (default {DEFAULTS.eval_size})")
    add("--checkpoint-every", type=int, help=f"checkpoint every N steps (default {DEFAULTS.checkpoint_every})")
    add(
        "--diagnose-every",
        type=int,
        help=f"log a full diagnosis every N steps, 0 = never (default {DEFAULTS.diagnose_every})",
    )
    add("--seed", type=int, help=f"random seed (default {DEFAULTS.seed})")


def _add_diagnose(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "diagnose",
        help="how far back the gradient reaches, why, and a verdict",
        description=(
            "Diagnose a trained run (RUN_DIR: its latest checkpoint on a batch of its task) or "
            "a fresh model (--task, --cell, --length, ...): the gradient profile, Jacobian "
            "spectra, Lyapunov exponents, saturation and gates per layer, and a verdict "
            "(vanishing / exploding / healthy / non-finite). Writes diagnosis.json."
        ),
    )
    add = parser.add_argument
    add("run_dir", nargs="?", type=Path, help="a run directory written by `bptt train`")
    add("--task", help="task of a fresh model (instead of RUN_DIR)")
    add("--data", help="the task's data file (see bptt train --data)")
    add("--option", dest="task_options", action="append", type=_task_option, metavar="KEY=VALUE", help="a task option")
    add("--length", type=int, help=f"sequence length (default {DEFAULTS.length}; for --data FILE.npz: its T)")
    add("--cell", default=DEFAULTS.cell, help=f"cell (default {DEFAULTS.cell})")
    add("--hidden", type=int, default=DEFAULTS.hidden, help=f"hidden units (default {DEFAULTS.hidden})")
    add("--layers", type=int, default=DEFAULTS.layers, help=f"layers (default {DEFAULTS.layers})")
    add("--init", help="initialisation (default: the cell's own)")
    add("--seed", type=int, default=0, help="seeds the fresh model and the batch (default 0)")
    add("--batch", type=int, default=32, help="sequences in the diagnosed batch (default 32)")
    add("--lyapunov", type=int, default=8, help="Lyapunov exponents to compute (default 8)")
    add("--out", type=Path, help="where diagnosis.json goes (default RUN_DIR/ or ./)")
    parser.set_defaults(run=_run_diagnose)


def _add_replay(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "replay",
        help="rerun a captured non-finite step or loss spike",
        description=(
            "Load a capture written during training (RUN_DIR/captures/step-N.pt: weights and "
            "batch) and rerun the step with diagnostics; says where the first non-finite value "
            "appears and whether the captured failure is reproduced (exit status 1 if not)."
        ),
    )
    parser.add_argument("capture", type=Path, help="the capture file")
    parser.set_defaults(run=_run_replay)


def _add_doctor(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "doctor",
        help="diagnose, recommend cures with reasons, and A/B-test them on the task",
        description=(
            "Examine a run (RUN_DIR: its checkpoint and its logged gradient norms) or a fresh "
            "model (--task and the training flags), rank cures with the reason taken from the "
            "diagnosis, and with --try K train the baseline and the top K cures with the same "
            "budget and seed: a table of metric, solved, step solved at, gradient horizon "
            "after training. Writes OUT/doctor.json."
        ),
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument(
        "run_dir", nargs="?", type=Path, default=None, help="a run directory written by `bptt train`"
    )
    parser.add_argument("--task", help=f"task of a fresh model: {', '.join(TASKS.names())}")
    _add_config_flags(parser)
    add = parser.add_argument
    add("--try", dest="tries", type=int, default=0, help="A/B-test the top K cures (default 0: only rank)")
    add("--out", type=Path, help="where doctor.json and the trials go (default runs/doctor-TASK-CELL-TLENGTH)")
    add("--device", help="cpu, cuda, ... (default: cuda if available, else cpu)")
    add("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(run=_run_doctor)


def _add_sample(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "sample",
        help="generate text with a trained language model (a charlm run)",
        description="Continue a prompt with the model of a charlm run directory, one character at a time.",
    )
    add = parser.add_argument
    add("run_dir", type=Path, help="a run directory written by `bptt train charlm ...`")
    add("--prompt", default="\n", help="the text to continue (default: a new line)")
    add("--length", type=int, default=500, help="characters to generate (default 500)")
    add("--temperature", type=float, default=0.8, help="below 1 conservative, above 1 varied, 0 greedy (default 0.8)")
    add("--seed", type=int, default=0, help="seeds the sampling (default 0)")
    parser.set_defaults(run=_run_sample)


def _add_study(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "study",
        help="run a grid of configurations x clipping x lengths x seeds into one SQLite store",
        description=(
            "Expand a grid into ordinary runs (OUT/trials/KEY), record each trial's summary in "
            "OUT/study.sqlite, and print the success rate per configuration and length. Re-running "
            "skips finished trials and retries failed or interrupted ones. Exit status 1 if a "
            "trial is not finished."
        ),
    )
    add = parser.add_argument
    add("task", nargs="?", help="task name (or give --spec FILE.toml)")
    add("--spec", type=Path, help="a TOML file with the study's fields (task, lengths, configs, clips, seeds, steps, [base])")
    add("--lengths", help="comma-separated lengths, e.g. 50,100,200")
    add("--configs", help=f"comma-separated configurations: cell names or {', '.join(PRESETS)}")
    add("--clip", dest="clips", help="comma-separated clip specs, none for no clipping (default none)")
    add("--seeds", type=int, help="seeds per cell of the grid (default 1)")
    add("--steps", type=int, help="optimizer steps per trial (default 2000)")
    add("--hidden", type=int, help="hidden units (default: TrainConfig's)")
    add("--batch", type=int, help="batch size (default: TrainConfig's)")
    add("--name", help="the study's name in the store (default: the task)")
    add("--out", type=Path, help="study directory (default runs/study-TASK)")
    add("--executor", default="local", choices=EXECUTORS, help="local process pool, or Ray tasks (pip install 'bptt[ray]')")
    add("--address", help="ray: the cluster to join, e.g. ray://head:10001 or auto (default: a local instance)")
    add("--workers", type=int, help="local: processes, one thread each; ray: CPUs of the local instance (default: all)")
    add("--no-retry", action="store_true", help="leave failed trials failed")
    add("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=_run_study)


def _add_demo(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo",
        help="train a tanh RNN and an LSTM on the adding problem and compare them",
        description=(
            "The vanishing gradient in one minute: a tanh RNN and an LSTM learn the adding "
            "problem; for each, the validation loss against the trivial baseline and how many "
            "steps back the gradient reaches."
        ),
    )
    demo.add_argument("--length", type=int, default=50, help="sequence length (default 50)")
    demo.add_argument("--steps", type=int, default=1500, help="optimizer steps per model (default 1500)")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="where the two runs go")
    demo.set_defaults(run=_run_demo)


def _task_option(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` -> ``(key, value)``, the value read as JSON (numbers, true, null) or a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, e.g. limit=1000, got {text!r}")
    try:
        return key.replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.replace("-", "_"), value


def _config_from_args(args: argparse.Namespace, saved: Path | None = None) -> TrainConfig:
    """Flags given on the command line, over the config saved in ``saved`` or the defaults."""
    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    given = {key: value for key, value in vars(args).items() if key in fields and value is not None}
    if "task_options" in given:
        given["task_options"] = dict(given["task_options"])
    if saved is not None:
        return dataclasses.replace(RunDirectory(saved).config(), **given)
    if "task" not in given and "data" in given:
        given["task"] = task_for_file(given["data"])
    if "task" not in given:
        raise ValueError(f"train needs a TASK (one of {', '.join(TASKS.names())}) or --data FILE")
    if given["task"] == "arrays" and "data" in given:
        given["length"] = _arrays_length(given["data"], given.get("length"))
    return TrainConfig(**given)


def _arrays_length(path: str, given: int | None) -> int:
    """The length of an .npz data set is its number of steps T; --length may only repeat it."""
    steps = load_arrays(path)[0].shape[1]
    if given is not None and given != steps:
        raise ValueError(f"--length {given} does not apply to {path}: its sequences have T = {steps} "
                         "steps (leave --length out; cut or pad the arrays in the file to change T)")
    return steps


def _run_train(args: argparse.Namespace) -> int:
    if getattr(args, "resume", False) and "out" not in args:
        raise ValueError("--resume needs --out DIR, the run directory to continue")
    config = _config_from_args(args, saved=args.out if getattr(args, "resume", False) else None)
    out = getattr(args, "out", None) or Path(
        f"runs/{config.task}-{config.cell}-T{config.length}-s{config.seed}"
    )
    device = getattr(args, "device", None) or ("cuda" if torch.cuda.is_available() else "cpu")
    result = train(
        config,
        out,
        resume=getattr(args, "resume", False),
        overwrite=getattr(args, "overwrite", False),
        device=device,
        progress=False if getattr(args, "no_progress", False) else None,
        tensorboard=getattr(args, "tensorboard", False),
    )
    print(f"{config.cell} on {config.task} (length {config.length}): {result.verdict()}")
    print(f"run directory: {result.run_dir}")
    return 0


def _run_demo(args: argparse.Namespace) -> int:
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


def _run_diagnose(args: argparse.Namespace) -> int:
    if args.task is None and args.data is not None:
        args.task = task_for_file(args.data)
    if args.run_dir is not None and args.task is not None:
        raise ValueError("diagnose takes RUN_DIR or --task/--data (with --cell, --length, ...), not both")
    if args.run_dir is None and args.task is None:
        raise ValueError("diagnose needs RUN_DIR, or --task NAME or --data FILE (with --cell, --length, ...)")
    if args.task == "arrays" and args.data is not None:
        args.length = _arrays_length(args.data, args.length)
    if args.run_dir is not None:
        run = RunDirectory(args.run_dir)
        config = run.config()
        task = make_task(config)
        model = build_model(config, task)
        model.load_state_dict(run.load_checkpoint()["model"])
        source = f"{args.run_dir} (checkpoint at step {run.load_checkpoint()['step']})"
        default_out = args.run_dir / "diagnosis.json"
    else:
        config = TrainConfig(
            task=args.task, length=args.length or DEFAULTS.length, cell=args.cell, hidden=args.hidden,
            layers=args.layers, init=args.init, seed=args.seed, data=args.data,
            task_options=dict(args.task_options or []),
        )
        task = make_task(config)
        torch.manual_seed(config.seed)
        model = build_model(config, task)
        source = f"a fresh {config.cell} model ({config.init or 'default'} initialisation)"
        default_out = Path(f"diagnosis-{config.task}-{config.cell}-T{config.length}.json")
    batch = task.validation_set(args.batch, torch.Generator().manual_seed(args.seed + DIAGNOSE_SEED_OFFSET))
    model.eval()
    diagnosis = diagnose(
        model, batch.inputs, batch.targets, lambda output, _: task.probe_loss(output, batch),
        lengths=batch.lengths, lyapunov_k=args.lyapunov,
    )
    print(f"{task.name} (length {config.length}), {args.batch} sequences, {source}")
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


def _run_doctor(args: argparse.Namespace) -> int:
    run_dir = getattr(args, "run_dir", None)
    if run_dir is not None and "task" in args:
        raise ValueError("doctor takes RUN_DIR or --task (with --cell, --length, ...), not both")
    config = _config_from_args(args, saved=run_dir)
    out = getattr(args, "out", None) or Path(f"runs/doctor-{config.task}-{config.cell}-T{config.length}")
    device = getattr(args, "device", None) or ("cuda" if torch.cuda.is_available() else "cpu")
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
        device=device,
        progress=False if getattr(args, "no_progress", False) else None,
        on_prescription=show,
    )
    if report.trials:
        print(format_trials(report.trials))
        print()
        print(report.recommendation.sentence)
    print(f"written: {Path(out) / 'doctor.json'}")
    return 0


def _run_sample(args: argparse.Namespace) -> int:
    run = RunDirectory(args.run_dir)
    config = run.config()
    if not issubclass(TASKS.get(config.task), AbstractStreamTask):  # a wrong run, not a wrong type
        raise ValueError(  # noqa: TRY004
            f"{args.run_dir} trained task {config.task!r}, which does not generate text; "
            "sample from a charlm run (bptt train charlm ...)"
        )
    task = make_task(config)
    model = build_model(config, task)
    model.load_state_dict(run.load_checkpoint()["model"])
    text = generate(
        model, task.tokenizer, args.prompt, args.length, args.temperature,
        torch.Generator().manual_seed(args.seed),
    )
    print(args.prompt + text)
    return 0


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


def _run_study(args: argparse.Namespace) -> int:
    spec = _study_spec(args)
    out = args.out or Path(f"runs/study-{spec.name}")
    total = len(spec.trials())
    print(f"study {spec.name!r}: {total} trials of {spec.task} ({spec.steps} steps each) in {out}")
    result = run_study(
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


def _run_report(args: argparse.Namespace) -> int:
    from bptt.report import report  # matplotlib is imported only for reports

    print(f"written: {report(args.path, args.out)}")
    return 0


def _run_replay(args: argparse.Namespace) -> int:
    outcome = replay(args.capture)
    anomaly = outcome.capture
    print(f"captured at training step {anomaly['step']}: {anomaly['kind']}: {anomaly['message']}")
    if outcome.diagnosis.nonfinite is not None:
        print(f"replayed: {outcome.diagnosis.nonfinite.describe()}")
    else:
        print(f"replayed: loss {outcome.diagnosis.loss:.6g}; verdict {outcome.diagnosis.verdict.kind}")
    print(f"reproduced: {'yes' if outcome.reproduced else 'no'}")
    return 0 if outcome.reproduced else 1


def _run_data(args: argparse.Namespace) -> int:
    print(f"{'data set':16} {'installed':>9} {'size':>22}  description")
    for info in dataset_table():
        size = f"{info.size:,} {info.unit}" if info.installed else f"install: {info.install_command}"
        print(f"{info.name:16} {'yes' if info.installed else 'no':>9} {size:>22}  {info.description}")
    return 0


def _run_tasks(args: argparse.Namespace) -> int:
    print(f"{'task':15} {'metric':14} {'baseline':>9} {'solved at':>10}  description (at length {args.length})")
    for name in TASKS.names():
        if issubclass(TASKS.get(name), AbstractDatasetTask | AbstractStreamTask):  # reads data
            print(f"{name:15} {'(real data)':14} {'-':>9} {'-':>10}  {TASKS.get(name).description}")
            continue
        task = get_task(name, args.length)
        direction = ">=" if task.higher_is_better else "<"
        print(
            f"{name:15} {task.metric_name:14} {task.baseline:9.4g} {direction:>3}{task.solved_threshold:7.4g}  "
            f"{task.description}"
        )
    print("\nreal-data tasks: metrics and baselines come from the data (bptt data, docs/data.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
