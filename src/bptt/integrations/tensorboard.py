"""TensorBoard logging of a run (``bptt train ... --tensorboard``; ``pip install bptt[tensorboard]``).

The run directory stays the record of truth (``metrics.jsonl``, ``diagnostics.jsonl``,
``anomalies.jsonl``); :class:`TensorBoardLog` writes the same numbers as TensorBoard events
under ``RUN_DIR/tensorboard/`` for people who watch their runs there::

    tensorboard --logdir runs/

What is logged, against the training step:

- ``train/loss``, ``train/grad_norm`` (before clipping), ``train/clip_threshold``,
  ``train/clipped`` (0 or 1), ``train/lr``, ``train/skipped_nonfinite`` (0 or 1);
- ``validation/<metric>`` at every evaluation;
- at every scheduled diagnosis, per recurrent layer ``L``, ``diagnosis/L/KEY`` for the
  scalars of :func:`bptt.diagnostics.records.layer_scalars` (horizon, decay rate, median
  σ_max(J_t), λ₁, saturation, and the gradient profile relative to the loss step at
  distances 1, 2, 4, ..., T - 1 as ``profile_d<d>``, the names the Lightning callback
  logs), and the whole profile as a figure ``profile/L`` (the Images tab; one per
  diagnosis, on the step slider);
- every anomaly (non-finite step, loss spike, oscillation) as text under ``anomalies``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, final

import numpy as np
from matplotlib.figure import Figure

from bptt.diagnostics.anomalies import AnomalyRecord
from bptt.diagnostics.profile import relative_by_distance
from bptt.diagnostics.records import DiagnosisRecord, layer_scalars
from bptt.diagnostics.watching import RecordKind

__all__ = ["TensorBoardLog"]

_TRAIN_SCALARS = ("loss", "grad_norm", "clip_threshold", "clipped", "lr", "skipped_nonfinite")


@final
class TensorBoardLog:
    """Writes a run's records as TensorBoard events.

    Args:
        folder: where the event files go (created if missing).

    Raises:
        ImportError: when the ``tensorboard`` package is not installed.
    """

    def __init__(self, folder: str | Path) -> None:
        self.writer = self.writer_class()(log_dir=str(folder))

    @staticmethod
    def writer_class() -> type:
        """torch's ``SummaryWriter``; raises a clear ImportError without tensorboard."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:  # torch imports the tensorboard package lazily
            raise ImportError(
                "--tensorboard needs the tensorboard package: pip install 'bptt[tensorboard]'"
            ) from error
        return SummaryWriter

    def metrics(self, record: dict[str, Any]) -> None:
        """Log one record of ``metrics.jsonl`` (a training step or an evaluation)."""
        step, split = record["step"], record["split"]
        names = _TRAIN_SCALARS if split == "train" else [k for k in record if k not in ("step", "split")]
        for name in names:
            value = record.get(name)
            if value is not None:
                self.writer.add_scalar(f"{split}/{name}", float(value), step)

    def watch_record(self, kind: RecordKind, record: DiagnosisRecord | AnomalyRecord) -> None:
        """Log one record of the watch: ``kind`` is ``"diagnosis"`` or ``"anomaly"``."""
        if kind == "anomaly":
            self.anomaly(record)
        else:
            self.diagnosis(record)

    def anomaly(self, record: AnomalyRecord) -> None:
        """Log an anomaly as text."""
        step = record["step"]
        self.writer.add_text("anomalies", f"step {step}, {record['kind']}: {record['message']}", step)

    def diagnosis(self, record: DiagnosisRecord) -> None:
        """Log a diagnosis: each layer's scalars, and its profile as a figure."""
        step = record["step"]
        for layer in record["layers"]:
            name = layer["name"]
            for key, value in layer_scalars(layer).items():
                self.writer.add_scalar(f"diagnosis/{name}/{key}", value, step)
            relative = relative_by_distance(layer["profile"]).numpy()
            self.writer.add_figure(f"profile/{name}", _profile_figure(relative, name, step), step)

    def close(self) -> None:
        """Flush the events to disk and close the files."""
        self.writer.close()


def _profile_figure(relative: np.ndarray, name: str, step: int) -> Figure:
    figure = Figure(figsize=(6, 3.5))
    axis = figure.subplots()
    axis.plot(np.arange(len(relative)), relative)
    axis.set_yscale("log")
    axis.set_xlabel("distance d from the loss step (steps back)")
    axis.set_ylabel("||dL/dh|| relative to d = 0 (log)")
    axis.set_title(f"{name}: gradient profile at step {step}")
    figure.tight_layout()
    return figure
