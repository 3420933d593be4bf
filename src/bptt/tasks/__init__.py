"""Tasks: seeded batch generators with their loss, metric and baseline, known by name."""

from __future__ import annotations

from bptt._registry import Registry
from bptt.tasks.base import (
    AbstractClassificationTask,
    AbstractRegressionTask,
    AbstractTask,
    Batch,
)
from bptt.tasks.synthetic import (
    AGREEMENT_PAD,
    AGREEMENT_VERBS,
    AGREEMENT_VOCABULARY,
    COPY_BLANK,
    TEMPORAL_ORDER_SYMBOLS,
    AddingTask,
    AgreementTask,
    CopyTask,
    TemporalOrderTask,
    adding_problem,
    agreement,
    copy_memory,
    temporal_order,
)

__all__ = [
    "AGREEMENT_PAD",
    "AGREEMENT_VERBS",
    "AGREEMENT_VOCABULARY",
    "COPY_BLANK",
    "TASKS",
    "TEMPORAL_ORDER_SYMBOLS",
    "AbstractClassificationTask",
    "AbstractRegressionTask",
    "AbstractTask",
    "AddingTask",
    "AgreementTask",
    "Batch",
    "CopyTask",
    "TemporalOrderTask",
    "adding_problem",
    "agreement",
    "copy_memory",
    "get_task",
    "temporal_order",
]

TASKS: Registry[type[AbstractTask]] = Registry("task")
for _task in (AddingTask, CopyTask, TemporalOrderTask, AgreementTask):
    TASKS.register(_task.name, _task)
del _task


def get_task(name: str, length: int, **options: object) -> AbstractTask:
    """Build the task registered as ``name`` (see :data:`TASKS`).

    Args:
        name: e.g. ``"adding"``, ``"copy"``, ``"temporal-order"``, ``"agreement"``.
        length: the task's difficulty knob (delay or sequence length).
        **options: the task's keyword options, e.g. ``vary_length=False`` for ``"agreement"``.

    Raises:
        ValueError: if ``name`` is unknown (suggesting the closest name) or ``length`` is
            invalid for the task.
    """
    return TASKS.get(name)(length, **options)
