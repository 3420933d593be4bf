"""The parser of the ``bptt`` command: every command, its flags and their help.

The flags that set :class:`~bptt.config.TrainConfig` fields come in three groups shared by the
commands that take them: the task (:func:`add_task_flags`), the model (:func:`add_model_flags`:
``train``, ``doctor`` and ``diagnose`` build the same models) and the training
(:func:`add_training_flags`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bptt.cells import CELLS
from bptt.cli.arguments import task_option
from bptt.cli.diagnosis import run_diagnose, run_doctor, run_replay
from bptt.cli.listings import run_cells, run_data, run_tasks
from bptt.cli.runs import run_demo, run_sample, run_train
from bptt.cli.studies import run_report, run_study
from bptt.config import OPTIMIZERS, SCHEDULES, TrainConfig
from bptt.init import INITS
from bptt.study import EXECUTORS, PRESETS
from bptt.tasks import TASKS

__all__ = ["add_model_flags", "add_task_flags", "add_training_flags", "build_parser"]

DEFAULTS = TrainConfig()


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``bptt`` command line; each command sets ``run``, its handler."""
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
    report.set_defaults(run=run_report)
    data = commands.add_parser("data", help="list the real data sets, whether each is installed, and its size")
    data.set_defaults(run=run_data)
    tasks = commands.add_parser("tasks", help="list the tasks with their metric, baseline and threshold")
    tasks.add_argument("--length", type=int, default=100, help="length at which to show baselines (default 100)")
    tasks.set_defaults(run=run_tasks)
    cells = commands.add_parser("cells", help="list the cells with their options and defaults")
    cells.set_defaults(run=run_cells)
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
    add_task_flags(train_parser)
    add_model_flags(train_parser)
    add_training_flags(train_parser)
    add = train_parser.add_argument
    add("--out", type=Path, help="run directory (default runs/TASK-CELL-TLENGTH-sSEED)")
    add("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    add("--overwrite", action="store_true", help="replace an existing run directory")
    add("--device", help="cpu, cuda, ... (default: cuda if available, else cpu)")
    add("--no-progress", action="store_true", help="no progress bar")
    add("--tensorboard", action="store_true",
        help="also log scalars, gradient profiles and anomalies for TensorBoard in OUT/tensorboard/ "
        "(pip install bptt[tensorboard]; view with: tensorboard --logdir OUT)")
    train_parser.set_defaults(run=run_train)


def add_task_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of the task: ``--length``, ``--data``, ``--option``."""
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
        type=task_option,
        metavar="KEY=VALUE",
        help="a task option, repeatable, e.g. --option dataset=rotten-tomatoes --option limit=1000",
    )


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that define the model (unset ones are absent, or ``None``): the same for every
    command that builds one, so that a model trained with them can be diagnosed fresh."""
    add = parser.add_argument
    add("--embedding", type=int, help="embedding width for token inputs (default: the task's)")
    add(
        "--cell",
        help=f"cell: {', '.join(CELLS.names())}; options after a colon, e.g. skip-rnn:8, lem:dt=0.05, "
        f"exprnn:init=cayley (see `bptt cells`) (default {DEFAULTS.cell})",
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


def add_training_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of the training: steps, batch, clipping, optimizer, schedule, evaluation, seed."""
    add = parser.add_argument
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
    add(
        "--slow-lr-factor",
        type=float,
        help="the fraction of --lr at which a cell's slow parameters train (expRNN's skew-symmetric "
        "parameter; default: the cell's own, 0.1)",
    )
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
    add_task_flags(parser)
    add_model_flags(parser)
    add("--seed", type=int, default=0, help="seeds the fresh model and the batch (default 0)")
    add("--batch", dest="sequences", metavar="BATCH", type=int, default=32,
        help="sequences in the diagnosed batch (default 32)")
    add("--lyapunov", type=int, default=8, help="Lyapunov exponents to compute (default 8)")
    add("--out", type=Path, help="where diagnosis.json goes (default RUN_DIR/ or ./)")
    parser.set_defaults(run=run_diagnose)


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
    parser.set_defaults(run=run_replay)


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
    add_task_flags(parser)
    add_model_flags(parser)
    add_training_flags(parser)
    add = parser.add_argument
    add("--try", dest="tries", type=int, default=0, help="A/B-test the top K cures (default 0: only rank)")
    add("--out", type=Path, help="where doctor.json and the trials go (default runs/doctor-TASK-CELL-TLENGTH)")
    add("--device", help="cpu, cuda, ... (default: cuda if available, else cpu)")
    add("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(run=run_doctor)


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
    parser.set_defaults(run=run_sample)


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
    add("--spec", type=Path,
        help="a TOML file with the study's fields (task, lengths, configs, clips, seeds, steps, [base])")
    add("--lengths", help="comma-separated lengths, e.g. 50,100,200")
    add("--configs", help=f"comma-separated configurations: cell names or {', '.join(PRESETS)}")
    add("--clip", dest="clips", help="comma-separated clip specs, none for no clipping (default none)")
    add("--seeds", type=int, help="seeds per cell of the grid (default 1)")
    add("--steps", type=int, help="optimizer steps per trial (default 2000)")
    add("--hidden", type=int, help="hidden units (default: TrainConfig's)")
    add("--batch", type=int, help="batch size (default: TrainConfig's)")
    add("--name", help="the study's name in the store (default: the task)")
    add("--out", type=Path, help="study directory (default runs/study-TASK)")
    add("--executor", default="local", choices=EXECUTORS,
        help="local process pool, or Ray tasks (pip install 'bptt[ray]')")
    add("--address", help="ray: the cluster to join, e.g. ray://head:10001 or auto (default: a local instance)")
    add("--workers", type=int, help="local: processes, one thread each; ray: CPUs of the local instance (default: all)")
    add("--no-retry", action="store_true", help="leave failed trials failed")
    add("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_study)


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
    demo.set_defaults(run=run_demo)
