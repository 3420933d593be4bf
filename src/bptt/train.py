"""The training loop: one flat loop, in the order things happen."""

from __future__ import annotations

import contextlib
import inspect
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from bptt.cells import State, cell_spec, map_state
from bptt.config import TrainConfig
from bptt.diagnostics.profile import decay_rate, effective_horizon
from bptt.diagnostics.watch import Watch
from bptt.init import init_recurrent_
from bptt.models import LastStepHead, PerStepHead, SequenceModel
from bptt.recurrent import Recurrent
from bptt.remedies.clipping import (
    AbstractClipper,
    NormClipper,
    ValueClipper,
    clip_gradients_,
    make_clipper,
)
from bptt.remedies.constraints import AbstractConstraint, make_constraint
from bptt.remedies.guards import NonFiniteGuard
from bptt.remedies.regularizers import make_regularizer
from bptt.jsonio import read_jsonl
from bptt.rundir import RunDirectory
from bptt.tasks import TASKS, AbstractStreamTask, AbstractTask, Batch, get_task
from bptt.tensorboard_log import TensorBoardLog

VALIDATION_SEED_OFFSET = 1_000_003
"""The validation set is drawn from ``seed + VALIDATION_SEED_OFFSET``, apart from training data."""

StepCallback = Callable[[dict[str, Any]], None]
"""Called after every optimizer step with that step's metrics record."""


@dataclass(frozen=True)
class RunResult:
    """The outcome of :func:`train`.

    Attributes:
        run_dir: the run directory.
        steps: optimizer steps taken in total (including before a resume).
        metrics: validation metrics at the end.
        metric_name, baseline, solved_threshold, solved: the task's verdict.
        horizon: how many steps back the gradient reaches at the end (tolerance 1e-3).
        decay_rate: fitted per-step factor of the gradient profile (< 1 vanishing).
        nonfinite_steps: steps whose update was not applied because the loss, a gradient
            or the updated weights were NaN/Inf (skipped or rolled back).
        solved_at: the first evaluation step at which the task counted as solved, or
            ``None`` if it never did (evaluations are ``config.eval_every`` steps apart).
        test_metrics: the metrics on the task's held-out test split at the end, for
            tasks on real data (``None`` for generated tasks).
    """

    run_dir: Path
    steps: int
    metrics: dict[str, float]
    metric_name: str
    baseline: float
    solved_threshold: float
    solved: bool
    horizon: int
    decay_rate: float
    nonfinite_steps: int
    solved_at: int | None = None
    test_metrics: dict[str, float] | None = None

    def verdict(self) -> str:
        """One sentence: solved or not, the metric against the baseline and threshold."""
        value = self.metrics[self.metric_name]
        status = "SOLVED" if self.solved else "not solved"
        test = ""
        if self.test_metrics is not None:
            test = f" (test {self.test_metrics[self.metric_name]:.4g})"
        return (
            f"{status}: validation {self.metric_name} {value:.4g}{test} vs trivial baseline "
            f"{self.baseline:.4g} (solved at {self.solved_threshold:.4g}); the gradient reaches "
            f"{self.horizon} steps back (per-step factor {self.decay_rate:.3g})"
        )


def make_task(config: TrainConfig) -> AbstractTask:
    """The task ``config`` names, with its data file and options.

    Raises:
        ValueError: for an unknown task, an option the task does not take, or bad data.
    """
    options = dict(config.task_options)
    if config.data is not None:
        options["data"] = config.data
    task_type = TASKS.get(config.task)
    accepted = [
        name for name, parameter in inspect.signature(task_type).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        what = "a data file" if unknown == ["data"] else f"the options {unknown}"
        raise ValueError(
            f"task {config.task!r} does not take {what}; its options are {accepted or 'none'}"
        )
    return get_task(config.task, config.length, **options)


def build_model(config: TrainConfig, task: AbstractTask) -> SequenceModel:
    """The model a config describes, for ``task``'s inputs and outputs, initialised."""
    if config.embedding is not None and task.vocab_size is None:
        raise ValueError(
            f"embedding={config.embedding} applies to token inputs, but task {task.name!r} "
            "has float features; leave embedding unset"
        )
    input_size = task.input_size if task.vocab_size is None else config.embedding or task.input_size
    recurrent = Recurrent.from_name(
        config.cell, input_size, config.hidden, config.layers, residual=config.residual
    )
    head_type = PerStepHead if task.many_to_many else LastStepHead
    model = SequenceModel(recurrent, head_type(config.hidden, task.num_outputs), task.vocab_size)
    # chrono initialisation draws its time scales up to the task's length
    init_recurrent_(model.recurrent, config.init or cell_spec(config.cell)[0].init, max_length=config.length)
    constraint = make_training_constraint(config)
    if constraint is not None:  # after the init: an orthogonal parametrisation keeps it
        constraint.attach(model.recurrent)
    return model


def make_training_constraint(config: TrainConfig) -> AbstractConstraint | None:
    """The constraint ``config`` asks for, or the cell's own (``ortho-rnn``, ``indrnn``), if any."""
    spec = config.constraint or cell_spec(config.cell)[0].constraint or "none"
    return make_constraint(spec, config.length)


def make_training_clipper(config: TrainConfig) -> AbstractClipper | None:
    """The clipper ``config`` asks for (``clip`` spec, ``clip_norm`` or ``clip_value``), if any."""
    if config.clip is not None:
        return make_clipper(config.clip)
    if config.clip_norm is not None:
        return NormClipper(config.clip_norm)
    if config.clip_value is not None:
        return ValueClipper(config.clip_value)
    return None


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    parameters, lr, decay = model.parameters(), config.lr, config.weight_decay
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=config.momentum, weight_decay=decay)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=lr, weight_decay=decay)
    return torch.optim.Adam(parameters, lr=lr, weight_decay=decay)


def lr_factor(config: TrainConfig, step: int) -> float:
    """Learning-rate multiplier at ``step`` (0-based): linear warm-up, then constant or cosine."""
    if step < config.warmup:
        return (step + 1) / config.warmup
    if config.schedule == "cosine":
        progress = (step - config.warmup) / max(1, config.steps - config.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


@torch.no_grad()
def evaluate(model: nn.Module, task: AbstractTask, data: Batch, chunk: int = 256) -> dict[str, float]:
    """The task's metrics on ``data``, averaged over chunks weighted by their size."""
    model.eval()
    totals: dict[str, float] = {}
    count = data.targets.shape[0]
    for start in range(0, count, chunk):
        part = _slice(data, start, start + chunk)
        metrics = task.metrics(model(part.inputs, part.lengths), part)
        size = part.targets.shape[0]
        for name, value in metrics.items():
            totals[name] = totals.get(name, 0.0) + value * size / count
    model.train()
    return totals


@torch.no_grad()
def evaluate_stream(
    model: SequenceModel, task: AbstractStreamTask, split: str, streams: int, max_tokens: int | None = None
) -> dict[str, float]:
    """The task's metrics on ``split`` read as ``streams`` parallel parts, carrying the state.

    Every token of the (first ``max_tokens`` of the) split is predicted from all the text
    before it in its part, as in training with truncated BPTT; metrics are averaged over
    tokens.
    """
    model.eval()
    device = next(model.parameters()).device
    totals: dict[str, float] = {}
    count, state = 0, None
    for chunk in task.chunks(split, streams, max_tokens):
        chunk = chunk.to(device)
        prediction, state = model.forward_with_state(chunk.inputs, state)
        size = chunk.targets.numel()
        for name, value in task.metrics(prediction, chunk).items():
            totals[name] = totals.get(name, 0.0) + value * size
        count += size
    model.train()
    return {name: total / count for name, total in totals.items()}


def gradient_reach(model: SequenceModel, task: AbstractTask, data: Batch) -> tuple[int, float]:
    """Effective horizon and per-step decay of ``||dL/dh_k||`` on one batch (top layer).

    For a many-to-one task on a variable-length batch, the profile is taken against the
    distance from each sequence's own last step (where its loss is).
    """
    model.zero_grad(set_to_none=True)
    with model.recurrent.recording_profile() as profile:
        task.probe_loss(model(data.inputs, data.lengths), data).backward()
    model.zero_grad(set_to_none=True)
    many_to_one = data.lengths is not None and not task.many_to_many
    norms = profile.norms_by_distance(data.lengths) if many_to_one else profile.norms()
    if not torch.isfinite(norms).all():
        return 0, math.nan
    return effective_horizon(norms), decay_rate(norms)


def train(
    config: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    device: str | torch.device = "cpu",
    progress: bool | None = None,
    callbacks: Sequence[StepCallback] = (),
    tensorboard: bool = False,
) -> RunResult:
    """Train the model ``config`` describes on its task, writing a run directory at ``out``.

    Each step: sample a batch, forward, loss (plus the regulariser's penalty), backward, clip (recording the pre-clip norm),
    watch for anomalies (:class:`bptt.diagnostics.watch.Watch`: a non-finite step is
    localised and captured, as is a loss spike; every ``config.diagnose_every`` steps a
    full diagnosis is logged), optimizer step (skipped if the loss or the gradient is
    non-finite), learning-rate schedule, log, and periodically evaluate and checkpoint.

    Args:
        config: the run's configuration.
        out: the run directory. It must not exist (or be empty) unless ``resume`` or ``overwrite``.
        resume: continue the run saved in ``out`` from its checkpoint; the curve continues
            exactly as if the run had never stopped.
        overwrite: replace an existing run directory.
        device: where to train.
        progress: show a progress bar; ``None`` shows one when stderr is a terminal.
        callbacks: functions called with every step's record.
        tensorboard: also write the metrics, diagnoses and anomalies as TensorBoard events
            in ``out/tensorboard/`` (:class:`bptt.tensorboard_log.TensorBoardLog`; needs
            ``pip install bptt[tensorboard]``).

    Returns:
        A :class:`RunResult`; also written to ``out/summary.json``.
    """
    # Validate everything before touching the disk: a bad name must not leave a run dir.
    task = make_task(config)
    if tensorboard:
        TensorBoardLog.writer_class()  # missing tensorboard: a clear error, no run directory
    torch.manual_seed(config.seed)
    model = build_model(config, task).to(device)
    optimizer = make_optimizer(config, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(config, step))
    data_rng = torch.Generator().manual_seed(config.seed)
    validation = task.validation_set(
        config.eval_size, torch.Generator().manual_seed(config.seed + VALIDATION_SEED_OFFSET)
    ).to(device)
    # a stream (charlm) is read in chunks carrying the state (truncated BPTT); its
    # validation score carries the state too, over eval_size chunks' worth of tokens
    streaming = isinstance(task, AbstractStreamTask)
    carried: State | None = None

    def validate() -> dict[str, float]:
        if streaming:
            return evaluate_stream(model, task, "validation", config.batch, config.eval_size * config.length)
        return evaluate(model, task, validation)

    clipper = make_training_clipper(config)
    constraint = make_training_constraint(config)
    regularizer = make_regularizer(config.regularizer or "none")
    taped = regularizer is not None and regularizer.needs_tape
    step, nonfinite_steps = 0, 0
    if resume:
        run = RunDirectory.resume(out, config)
        state = run.load_checkpoint(map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        data_rng.set_state(state["rng"]["data"])
        step, nonfinite_steps = state["step"], state["nonfinite_steps"]
        carried = state.get("carried_state")
        if clipper is not None and "clipper" in state:
            clipper.load_state_dict(state["clipper"])
        run.truncate_logs(step)
        run.write_config(config)
    else:
        run = RunDirectory.create(out, config, overwrite=overwrite)

    def save_checkpoint() -> None:
        run.save_checkpoint(
            {
                "step": step,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": {"torch": torch.get_rng_state(), "data": data_rng.get_state()},
                "nonfinite_steps": nonfinite_steps,
                "clipper": clipper.state_dict() if clipper is not None else {},
                "carried_state": carried,
            }
        )

    board = TensorBoardLog(run.path / "tensorboard") if tensorboard else None
    guard = NonFiniteGuard(model, optimizer, policy=config.on_nonfinite, scheduler=scheduler)
    watcher = Watch(
        model,
        every=config.diagnose_every,
        out=run.path,
        capture_extra={"config": config.to_dict()},
        # the last scheduled diagnosis also measures the Jacobian products (for the report)
        products_at=lambda at: at + config.diagnose_every > config.steps,
        on_record=board.watch_record if board else None,
    )
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=config.steps, initial=step, disable=not show, desc=f"{config.cell} {config.task}")
    metrics = validate() if step >= config.steps else {}
    started = time.perf_counter()
    while step < config.steps:
        # 1. data: a random batch, or the stream's next chunk (the state restarts with it)
        if streaming:
            batch, restart = task.stream_batch(step, config.batch)
            carried = None if restart else carried
        else:
            batch = task.sample(config.batch, data_rng)
        batch = batch.to(device)
        # 2. forward and loss (recording the states when the regulariser reads them); a
        #    stream carries its final state to the next chunk, detached: truncated BPTT
        with model.recurrent.recording_tape() if taped else contextlib.nullcontext() as tapes:
            prediction, final = model.forward_with_state(batch.inputs, carried, batch.lengths)
            loss = task.loss(prediction, batch)
        if streaming:
            carried = map_state(torch.Tensor.detach, final)
        penalty = regularizer.penalty(model, loss, tapes) if regularizer else None
        # 3. backward
        optimizer.zero_grad(set_to_none=True)
        (loss if penalty is None else loss + penalty).backward()
        # 4. clip, recording the global norm before clipping
        clip = clipper(model.parameters()) if clipper else clip_gradients_(model.parameters())
        # 5. watch (anomalies every step, a diagnosis on schedule); update, never with a
        #    non-finite loss, gradient or result: skipped, or rolled back (on_nonfinite)
        loss_value = loss.item()
        watcher.observe(
            step + 1,
            loss_value,
            batch.inputs,
            batch.targets,
            batch.lengths,
            grad_norm=clip.norm,
            loss_fn=lambda output, _, batch=batch: task.loss(output, batch),
        )
        applied = guard.step(loss_value)  # optimizer.step() only if everything is finite
        if not applied:
            nonfinite_steps += 1
            carried = None  # a non-finite state must not reach the next chunk
        elif constraint is not None:
            constraint.project_(model)  # e.g. the spectral bound; parametrisations need none
        # 6. learning-rate schedule
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        step += 1
        # 7. log
        record = {
            "step": step,
            "split": "train",
            "loss": loss_value,
            "grad_norm": clip.norm,
            "clipped": clip.clipped,
            "clip_threshold": clip.threshold,
            "lr": lr,
            "skipped_nonfinite": not applied,
        }
        if penalty is not None:
            record["penalty"] = penalty.item()
        run.log(record)
        if board:
            board.metrics(record)
        for callback in callbacks:
            callback(record)
        # 8. evaluate and checkpoint on schedule
        if step % config.eval_every == 0 or step == config.steps:
            metrics = validate()
            run.log({"step": step, "split": "validation", **metrics})
            if board:
                board.metrics({"step": step, "split": "validation", **metrics})
            bar.write(_eval_line(step, task, metrics, nonfinite_steps))
        if step % config.checkpoint_every == 0 or step == config.steps:
            save_checkpoint()
        bar.set_postfix(loss=f"{loss_value:.4f}", grad=f"{clip.norm:.3g}", **_short(task, metrics))
        bar.update(1)
    bar.close()
    if board:
        board.close()

    horizon, rate = gradient_reach(model, task, _slice(validation, 0, config.batch))
    test = task.test_set()
    if streaming:
        test_metrics = evaluate_stream(model, task, "test", config.batch)
    else:
        test_metrics = None if test is None else evaluate(model, task, test.to(device))
    value = metrics[task.metric_name]
    result = RunResult(
        run_dir=Path(out),
        steps=step,
        metrics=metrics,
        metric_name=task.metric_name,
        baseline=task.baseline,
        solved_threshold=task.solved_threshold,
        solved=task.is_solved(value),
        horizon=horizon,
        decay_rate=rate,
        nonfinite_steps=nonfinite_steps,
        solved_at=_first_solved(run, task),
        test_metrics=test_metrics,
    )
    run.write_summary(
        {
            "task": config.task,
            "length": config.length,
            "cell": config.cell,
            **asdict(result),
            "run_dir": str(result.run_dir),
            "train_seconds_this_session": time.perf_counter() - started,
        }
    )
    return result


def _first_solved(run: RunDirectory, task: AbstractTask) -> int | None:
    """The first validation step of the run's log at which ``task`` counted as solved."""
    for record in read_jsonl(run.path / "metrics.jsonl"):
        if record["split"] == "validation" and task.is_solved(record[task.metric_name]):
            return record["step"]
    return None


def _slice(data: Batch, start: int, stop: int) -> Batch:
    lengths = None if data.lengths is None else data.lengths[start:stop]
    return Batch(data.inputs[start:stop], data.targets[start:stop], lengths)


def _short(task: AbstractTask, metrics: dict[str, float]) -> dict[str, str]:
    return {task.metric_name: f"{metrics[task.metric_name]:.4g}"} if metrics else {}


def _eval_line(step: int, task: AbstractTask, metrics: dict[str, float], nonfinite: int) -> str:
    values = ", ".join(f"{name} {value:.4g}" for name, value in metrics.items())
    skipped = f", {nonfinite} non-finite steps skipped" if nonfinite else ""
    return f"step {step}: validation {values} (baseline {task.metric_name} {task.baseline:.4g}){skipped}"
