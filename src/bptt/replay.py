"""Replay a captured anomaly: the same weights, the same batch, the same diagnostic pass."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, final

from torch import nn

from bptt.builders import make_task, rebuild_model
from bptt.config import TrainConfig
from bptt.diagnostics.diagnosis import LossFunction, diagnose
from bptt.diagnostics.records import Diagnosis
from bptt.diagnostics.watching import load_capture
from bptt.tasks import Batch

__all__ = ["Replay", "replay"]


@final
@dataclass
class Replay:
    """The outcome of :func:`replay`.

    Attributes:
        capture: the capture's anomaly record.
        diagnosis: the diagnosis of the captured batch with the captured weights.
        reproduced: whether the replay shows the captured anomaly again: the same
            non-finite location, or, for a loss spike, the same loss (to 1e-5: the
            diagnostic pass unrolls what training may have run fused).
    """

    capture: dict[str, Any]
    diagnosis: Diagnosis
    reproduced: bool


def replay(path: str | Path, model: nn.Module | None = None, loss_fn: LossFunction | None = None) -> Replay:
    """Rerun the step captured at ``path`` (written by :class:`bptt.diagnostics.Watch`).

    Args:
        path: the capture file, ``RUN_DIR/captures/step-N.pt``.
        model: the model to load the captured weights into; ``None`` rebuilds it from
            the run's config saved in the capture (captures written by ``bptt train``).
        loss_fn: the loss; ``None`` uses the task's loss for captures from ``bptt train``.
    """
    capture = load_capture(path)
    lengths = capture["lengths"]
    if model is None or loss_fn is None:
        if "config" not in capture:
            raise ValueError(
                f"{path} was captured outside bptt train and holds no config: pass the model "
                "and loss_fn to replay(path, model, loss_fn)"
            )
        config = TrainConfig.from_dict(capture["config"])
        if model is None:
            model, task = rebuild_model(config, capture["model"])
        else:
            task = make_task(config)
            model.load_state_dict(capture["model"])
        batch = Batch(capture["inputs"], capture["targets"], lengths)
        loss_fn = loss_fn or (lambda output, _: task.loss(output, batch))
    else:
        model.load_state_dict(capture["model"])
    model.train(capture["training"])
    diagnosis = diagnose(model, capture["inputs"], capture["targets"], loss_fn, lengths=lengths)
    anomaly = capture["anomaly"]
    if anomaly["kind"] == "non-finite":
        found = None if diagnosis.nonfinite is None else diagnosis.nonfinite.to_dict()
        expected = dict(anomaly["report"])
        if found is not None:
            found["training_step"] = expected["training_step"]
        reproduced = found == expected
    else:
        reproduced = math.isclose(diagnosis.loss, anomaly["loss"], rel_tol=1e-5)
    return Replay(anomaly, diagnosis, reproduced)
