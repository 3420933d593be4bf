"""Tasks: seeded batch generators with their loss, metric and baseline, known by name."""

from __future__ import annotations

from bptt._registry import Registry
from bptt.tasks.arrays import ArrayTask, arrays_length, load_arrays
from bptt.tasks.base import (
    SPLITS,
    AbstractClassificationTask,
    AbstractDatasetTask,
    AbstractRegressionTask,
    AbstractStreamTask,
    AbstractTask,
    Batch,
)
from bptt.tasks.images import (
    AbstractImageTask,
    DigitsTask,
    PermutedMNISTTask,
    SequentialMNISTTask,
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
from bptt.tasks.text import CharLMTask, SentimentTask, read_labelled_csv, read_text_file

__all__ = [
    "AGREEMENT_PAD",
    "AGREEMENT_VERBS",
    "AGREEMENT_VOCABULARY",
    "COPY_BLANK",
    "SPLITS",
    "TASKS",
    "TEMPORAL_ORDER_SYMBOLS",
    "AbstractClassificationTask",
    "AbstractDatasetTask",
    "AbstractImageTask",
    "AbstractRegressionTask",
    "AbstractStreamTask",
    "AbstractTask",
    "AddingTask",
    "AgreementTask",
    "ArrayTask",
    "Batch",
    "CharLMTask",
    "CopyTask",
    "DigitsTask",
    "PermutedMNISTTask",
    "SentimentTask",
    "SequentialMNISTTask",
    "TemporalOrderTask",
    "adding_problem",
    "agreement",
    "arrays_length",
    "copy_memory",
    "get_task",
    "load_arrays",
    "read_labelled_csv",
    "read_text_file",
    "task_for_file",
    "temporal_order",
]

TASKS: Registry[type[AbstractTask]] = Registry("task")
_ALL_TASKS = (
    AddingTask,
    CopyTask,
    TemporalOrderTask,
    AgreementTask,
    SentimentTask,
    CharLMTask,
    SequentialMNISTTask,
    PermutedMNISTTask,
    DigitsTask,
    ArrayTask,
)
for _task in _ALL_TASKS:
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


FILE_TASKS = {".csv": "sentiment", ".txt": "charlm", ".npz": "arrays"}
"""The task a user's data file trains by its extension (``bptt train --data FILE``)."""


def task_for_file(path: str) -> str:
    """The task name for a user's data file: CSV -> sentiment, text -> charlm, npz -> arrays.

    Raises:
        ValueError: for another extension, or a file that does not exist.
    """
    from pathlib import Path

    file = Path(path)
    if not file.is_file():
        raise ValueError(f"data file {path!r} does not exist (or is not a file)")
    suffix = file.suffix.lower()
    if suffix not in FILE_TASKS:
        raise ValueError(
            f"cannot tell the task of {path!r} from its extension {suffix!r}: expected .csv "
            "(text,label rows), .txt (text for a language model) or .npz (arrays x, y[, lengths])"
        )
    return FILE_TASKS[suffix]
