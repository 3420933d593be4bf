"""The training loop: one flat loop, in the order things happen."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, final

import torch
from torch import nn
from tqdm import tqdm

from bptt.builders import build_model, make_task, make_training_constraint
from bptt.cells import AbstractCell, State, map_state
from bptt.config import TrainConfig
from bptt.diagnostics.profile import decay_rate, effective_horizon
from bptt.diagnostics.watching import Watch
from bptt.integrations.tensorboard import TensorBoardLog
from bptt.jsonio import read_jsonl
from bptt.models import SequenceModel
from bptt.remedies.clipping import clip_gradients_, make_clipper
from bptt.remedies.guards import NonFiniteGuard
from bptt.remedies.regularizers import make_regularizer
from bptt.rundir import RunDirectory
from bptt.tasks import AbstractStreamTask, AbstractTask, Batch

VALIDATION_SEED_OFFSET = 1_000_003
"""The validation set is drawn from ``seed + VALIDATION_SEED_OFFSET``, apart from training data."""

DIAGNOSIS_SEED_OFFSET = 2_000_003
"""The batch that ``bptt diagnose`` and the doctor's examination look at is drawn from
``seed + DIAGNOSIS_SEED_OFFSET``: sequences apart from the training batches (``seed``) and the
validation set (``seed + VALIDATION_SEED_OFFSET``), so that a diagnosis is not of data the
model was fitted or selected on, and the same seed always diagnoses the same batch."""

StepCallback = Callable[[dict[str, Any]], None]
"""Called after every optimizer step with that step's metrics record."""


@final
class RandomState:
    """The random number generators of a run, as one part of its checkpointed state.

    Args:
        data: the generator the training batches are drawn from; the global torch
            generator (the model's initialisation, random regularisers) is saved with it.
    """

    def __init__(self, data: torch.Generator) -> None:
        self.data = data

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"torch": torch.get_rng_state(), "data": self.data.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        torch.set_rng_state(state["torch"])
        self.data.set_state(state["data"])


@final
class CarriedState:
    """The hidden state a stream task (``charlm``) carries from one chunk to the next.

    Truncated BPTT: the state is detached between chunks, and reset when the stream's
    parts start over or after a non-finite step. ``None`` starts from zeros.
    """

    def __init__(self) -> None:
        self.state: State | None = None

    def state_dict(self) -> dict[str, State | None]:
        return {"carried": self.state}

    def load_state_dict(self, state: dict[str, State | None]) -> None:
        self.state = state["carried"]


@final
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


def parameter_groups(model: nn.Module, lr: float, slow_lr_factor: float | None = None) -> list[dict[str, Any]]:
    """``model``'s parameters as optimizer groups: one at ``lr``, then one per slower rate.

    A cell's :attr:`~bptt.cells.AbstractCell.slow_parameters` train at their fraction of
    ``lr`` (expRNN's skew-symmetric parameter at ``lr / 10``, as in Lezcano-Casado &
    Martínez-Rubio 2019), or at ``slow_lr_factor`` when given. A model without slow
    parameters gets the one group.

    Args:
        model: the model.
        lr: the base learning rate.
        slow_lr_factor: overrides every cell's own factor.

    Returns:
        Parameter groups for a :class:`torch.optim.Optimizer`, each with its ``"lr"``.
    """
    factors: dict[int, float] = {}
    for cell in model.modules():
        if isinstance(cell, AbstractCell):
            for name, factor in cell.slow_parameters.items():
                factors[id(cell.get_parameter(name))] = factor if slow_lr_factor is None else slow_lr_factor
    groups: dict[float, list[nn.Parameter]] = {1.0: []}
    for parameter in model.parameters():
        groups.setdefault(factors.get(id(parameter), 1.0), []).append(parameter)
    return [{"params": params, "lr": lr * factor} for factor, params in groups.items() if params or factor == 1.0]


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer ``config`` names over ``model``'s parameters (in groups, see
    :func:`parameter_groups`), with its learning rate and decay."""
    parameters, lr, decay = parameter_groups(model, config.lr, config.slow_lr_factor), config.lr, config.weight_decay
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

    Each step: sample a batch, forward, loss (plus the regulariser's penalty), backward, clip
    (recording the pre-clip norm), watch for anomalies (:class:`bptt.diagnostics.Watch`: a
    non-finite step is localised and captured, as is a loss spike; every
    ``config.diagnose_every`` steps a full diagnosis is logged), optimizer step (skipped if the loss or the gradient is
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
            in ``out/tensorboard/`` (:class:`bptt.integrations.tensorboard.TensorBoardLog`; needs
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
    rng = RandomState(torch.Generator().manual_seed(config.seed))
    validation = task.validation_set(
        config.eval_size, torch.Generator().manual_seed(config.seed + VALIDATION_SEED_OFFSET)
    ).to(device)
    # a stream (charlm) is read in chunks carrying the state (truncated BPTT); its
    # validation score carries the state too, over eval_size chunks' worth of tokens
    streaming = isinstance(task, AbstractStreamTask)
    carried = CarriedState()

    def validate() -> dict[str, float]:
        if streaming:
            return evaluate_stream(model, task, "validation", config.batch, config.eval_size * config.length)
        return evaluate(model, task, validation)

    clipper = make_clipper(config.clip or "none")
    constraint = make_training_constraint(config)
    regularizer = make_regularizer(config.regularizer or "none")
    taped = regularizer is not None and regularizer.needs_tape
    if resume:
        run = RunDirectory.resume(out, config)
        checkpoint = run.load_checkpoint(map_location=device)  # damaged: an error, nothing written
    else:
        run, checkpoint = RunDirectory.create(out, config, overwrite=overwrite), None
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
    # Everything a resumed run needs to continue exactly as if it had never stopped: each
    # part has state_dict() / load_state_dict(), and the checkpoint is these, by name, plus
    # the step and the count of non-finite steps. A new stateful part goes in this list.
    stateful = {
        name: part
        for name, part in {
            "model": model,
            "optimizer": optimizer,
            "scheduler": scheduler,
            "rng": rng,
            "clipper": clipper,
            "guard": guard,  # the last good state a rollback returns to
            "watch": watcher,  # the loss windows of the spike and oscillation detectors
            "constraint": constraint,
            "regularizer": regularizer,
            "stream": carried,
        }.items()
        if part is not None  # no clipper, constraint or regulariser asked for
    }
    step, nonfinite_steps = 0, 0
    if checkpoint is not None:
        step, nonfinite_steps = checkpoint["step"], checkpoint["nonfinite_steps"]
        for name, part in stateful.items():
            if name in checkpoint:  # bptt 0.1.0 saved no guard, watch, constraint or regulariser
                part.load_state_dict(checkpoint[name])
        run.truncate_logs(step)
        run.write_config(config)

    def save_checkpoint() -> None:
        parts = {name: part.state_dict() for name, part in stateful.items()}
        run.save_checkpoint({"step": step, "nonfinite_steps": nonfinite_steps, **parts})

    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=config.steps, initial=step, disable=not show, desc=f"{config.cell} {config.task}")
    metrics = validate() if step >= config.steps else {}
    started = time.perf_counter()
    while step < config.steps:
        # 1. data: a random batch, or the stream's next chunk (the state restarts with it)
        if streaming:
            batch, restart = task.stream_batch(step, config.batch)
            carried.state = None if restart else carried.state
        else:
            batch = task.sample(config.batch, rng.data)
        batch = batch.to(device)
        # 2. forward and loss (recording the states when the regulariser reads them); a
        #    stream carries its final state to the next chunk, detached: truncated BPTT
        with model.recurrent.recording_tape() if taped else contextlib.nullcontext() as tapes:
            prediction, final = model.forward_with_state(batch.inputs, carried.state, batch.lengths)
            loss = task.loss(prediction, batch)
        if streaming:
            carried.state = map_state(torch.Tensor.detach, final)
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
            carried.state = None  # a non-finite state must not reach the next chunk
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
