"""Run configuration: one frozen dataclass, saved with every run as config.json."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, final

from bptt._registry import unknown_name_message
from bptt.cells import make_cell
from bptt.remedies.clipping import make_clipper
from bptt.remedies.constraints import make_constraint
from bptt.remedies.regularizers import make_regularizer
from bptt.tasks import TASKS

OPTIMIZERS = ("sgd", "adam", "rmsprop")
SCHEDULES = ("constant", "cosine")
NONFINITE_POLICIES = ("skip", "rollback")


LATER_FIELDS: dict[str, Any] = {"slow_lr_factor": None}
"""Fields added to :class:`TrainConfig` after bptt 0.1.0, with their defaults."""


@final
@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run.

    Args:
        task: task name (see ``bptt tasks``).
        length: the task's length knob (sequence length or delay; for real data the most
            tokens kept of a review, the truncation length of BPTT, or the steps per image).
        data: a data file of the user's for the task (``sentiment``: a CSV of
            ``text,label``; ``charlm``: a text file; ``arrays``: an ``.npz``).
        task_options: the task's keyword options, e.g. ``{"dataset": "rotten-tomatoes"}``
            for ``sentiment`` or ``{"limit": 1000}`` (see each task's docstring).
        cell: cell name (see :data:`bptt.cells.CELLS`).
        hidden: hidden units per layer.
        layers: stacked recurrent layers.
        embedding: the embedding width for token inputs; ``None`` takes the task's default.
        init: initialisation scheme (see :data:`bptt.init.INITS`); ``None`` uses the
            cell's own (identity for ``irnn``, torch's default otherwise).
        steps: optimizer steps.
        batch: sequences per batch.
        optimizer: ``"sgd"`` (with momentum), ``"adam"`` or ``"rmsprop"``.
        lr: learning rate.
        slow_lr_factor: the fraction of ``lr`` at which a cell's slow parameters train
            (:attr:`bptt.cells.AbstractCell.slow_parameters`, e.g. expRNN's skew-symmetric
            parameter); ``None`` takes each cell's own (0.1 for expRNN).
        momentum: SGD momentum.
        weight_decay: L2 weight decay passed to the optimizer.
        schedule: ``"constant"`` or ``"cosine"`` (to zero at the last step), after
            ``warmup`` steps of linear warm-up.
        warmup: linear warm-up steps.
        clip: the gradient clipper by spec (:func:`bptt.remedies.make_clipper`), e.g.
            ``"norm:1"`` (the global norm, keeping the direction), ``"value:25"`` (every
            entry), ``"agc:0.01"``, ``"autoclip:10"``, ``"zscore:2.5"``, ``"per-parameter:1"``;
            ``None`` clips nothing (the norm is still measured and logged).
        constraint: a constraint on the recurrent weights by spec
            (:func:`bptt.remedies.make_constraint`): ``"orthogonal"``, ``"cayley"``,
            ``"spectral:C"``, ``"indrnn:G"``; ``None`` keeps the cell's own (``ortho-rnn`` and
            ``indrnn`` have one), ``"none"`` removes it.
        residual: add each stacked layer's input to its output (layers after the first).
        regularizer: a penalty added to the loss by spec
            (:func:`bptt.remedies.make_regularizer`): ``"l2:W"`` (recurrent weights),
            ``"pascanu:W"`` (Pascanu et al. 2013), ``"lyapunov:W"`` (gradient flossing).
        on_nonfinite: what a non-finite loss or gradient does: ``"skip"`` the update, or
            ``"rollback"`` to the last good state with the learning rate halved (see
            :class:`bptt.remedies.NonFiniteGuard`).
        eval_every: evaluate on the validation set every this many steps.
        eval_size: validation sequences (a fixed set, generated once from the seed).
        checkpoint_every: write the checkpoint every this many steps (and at the end).
        diagnose_every: run a full diagnosis (profile, spectra, Lyapunov exponents) every
            this many steps into diagnostics.jsonl (the last one also measures the norms of
            Jacobian products against their span); 0 turns it off. Anomalies (non-finite
            steps, loss spikes, oscillation) are watched at every step regardless.
        seed: seeds the model, the data and dropout.
    """

    task: str = "adding"
    length: int = 100
    data: str | None = None
    task_options: dict[str, Any] = field(default_factory=dict)
    cell: str = "rnn-tanh"
    hidden: int = 128
    layers: int = 1
    embedding: int | None = None
    init: str | None = None
    steps: int = 2000
    batch: int = 64
    optimizer: str = "adam"
    lr: float = 3e-3
    slow_lr_factor: float | None = None
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup: int = 0
    clip: str | None = None
    constraint: str | None = None
    residual: bool = False
    regularizer: str | None = None
    on_nonfinite: str = "skip"
    eval_every: int = 100
    eval_size: int = 1000
    checkpoint_every: int = 100
    diagnose_every: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        positive = ("length", "hidden", "layers", "steps", "batch", "eval_every", "eval_size", "checkpoint_every")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.embedding is not None and (
            not isinstance(self.embedding, int) or isinstance(self.embedding, bool) or self.embedding < 1
        ):
            raise ValueError(f"embedding must be a positive integer or None, got {self.embedding!r}")
        if not isinstance(self.task_options, dict) or not all(isinstance(k, str) for k in self.task_options):
            raise ValueError(
                f"task_options must be a dict of option names to values, got {self.task_options!r}"
            )
        for name in ("warmup", "diagnose_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")
        factor = self.slow_lr_factor
        if factor is not None and not (isinstance(factor, int | float) and math.isfinite(factor) and factor > 0):
            raise ValueError(
                f"expected slow_lr_factor to be a positive finite number (a fraction of lr, e.g. 0.1) or None, "
                f"received {self.slow_lr_factor!r}"
            )
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ValueError(
                f"expected weight_decay >= 0 and momentum in [0, 1), got "
                f"weight_decay={self.weight_decay}, momentum={self.momentum}"
            )
        if self.on_nonfinite not in NONFINITE_POLICIES:
            raise ValueError(
                unknown_name_message("on_nonfinite policy", self.on_nonfinite, list(NONFINITE_POLICIES))
            )
        # bad specs fail here, before any run directory exists
        if self.clip is not None:
            make_clipper(self.clip)
        if self.constraint is not None:
            make_constraint(self.constraint, self.length)
        if self.regularizer is not None:
            make_regularizer(self.regularizer)
        make_cell(self.cell, 1, 2)  # the name, its options and their values
        TASKS.get(self.task)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(unknown_name_message("optimizer", self.optimizer, list(OPTIMIZERS)))
        if self.schedule not in SCHEDULES:
            raise ValueError(unknown_name_message("schedule", self.schedule, list(SCHEDULES)))

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict; a field added since bptt 0.1.0 (:data:`LATER_FIELDS`) is left
        out while it has its default, so that the trial keys of earlier studies stay the same."""
        values = dataclasses.asdict(self)
        for name, default in LATER_FIELDS.items():
            if values[name] == default:
                del values[name]
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a config from elsewhere).

        The keys ``clip_norm`` and ``clip_value`` of configs saved by bptt 0.1.0 are read
        as the ``clip`` spec they stand for (:func:`clip_spec`).
        """
        values = dict(values)
        old = {key: values.pop(key) for key in OLD_CLIP_KEYS if key in values}
        if any(value is not None for value in old.values()):
            if values.get("clip") is not None:
                raise ValueError(f"choose one of clip, clip_norm and clip_value, got clip and {sorted(old)}")
            values["clip"] = clip_spec(old.get("clip_norm"), old.get("clip_value"))
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; expected keys among {sorted(known)}")
        return cls(**values)


OLD_CLIP_KEYS = ("clip_norm", "clip_value")
"""The clipping fields of bptt 0.1.0's configs, replaced by the one ``clip`` spec."""


def clip_spec(norm: float | None = None, value: float | None = None) -> str | None:
    """The ``clip`` spec of a global-norm or a value threshold (``--clip-norm``, ``--clip-value``).

    ``clip_spec(1.0)`` is ``"norm:1"``, ``clip_spec(value=0.25)`` is ``"value:0.25"``; the number
    is written exactly (``1e-07``, ``0.1234567``), so the clipper gets the threshold given.

    Raises:
        ValueError: if both are given.
    """
    if norm is not None and value is not None:
        raise ValueError(f"choose one of clip_norm and clip_value, got clip_norm={norm} and clip_value={value}")
    if norm is None and value is None:
        return None
    name, number = ("norm", norm) if norm is not None else ("value", value)
    text = f"{number:g}"
    return f"{name}:{text if float(text) == number else repr(float(number))}"
