"""From a config to its parts: the task, the model (fresh or with saved weights), the constraint.

The one place a run's model is built, shared by training, the run directory (which rebuilds a
trained model), the doctor and replay.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from bptt.cells import cell_spec
from bptt.config import TrainConfig
from bptt.init import init_recurrent_
from bptt.models import LastStepHead, PerStepHead, SequenceModel
from bptt.recurrent import Recurrent
from bptt.remedies.constraints import AbstractConstraint, make_constraint
from bptt.tasks import TASKS, AbstractTask, get_task

__all__ = ["build_model", "make_task", "make_training_constraint", "rebuild_model"]


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
    scheme = config.init or cell_spec(config.cell)[0].init
    if scheme != "default":  # torch's own initialisation, which the cells already have
        init_recurrent_(model.recurrent, scheme, max_length=config.length)
    constraint = make_training_constraint(config)
    if constraint is not None:  # after the init: an orthogonal parametrisation keeps it
        constraint.attach(model.recurrent)
    return model


def rebuild_model(config: TrainConfig, weights: Mapping[str, Tensor | Any]) -> tuple[SequenceModel, AbstractTask]:
    """The model ``config`` describes with saved ``weights`` (a ``state_dict``), and its task.

    Args:
        config: the run's configuration.
        weights: the model's ``state_dict`` from a checkpoint or a capture.

    Returns:
        ``(model, task)``; the model is in training mode, on the CPU.
    """
    task = make_task(config)
    model = build_model(config, task)
    model.load_state_dict(weights)
    return model, task


def make_training_constraint(config: TrainConfig) -> AbstractConstraint | None:
    """The constraint ``config`` asks for, or the cell's own (``ortho-rnn``, ``indrnn``), if any."""
    spec = config.constraint or cell_spec(config.cell)[0].constraint or "none"
    return make_constraint(spec, config.length)
