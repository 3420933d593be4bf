"""Watching a training loop: scheduled diagnoses, anomalies, and captures to replay them.

Works in :func:`bptt.train` and in a plain PyTorch loop::

    with bptt.watch(model, every=50, out="runs/mine", loss_fn=loss_fn) as watcher:
        for step, (x, y) in enumerate(loader):
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            if watcher.observe(step, loss, x, y):   # False: non-finite, skip the update
                optimizer.step()

Every step costs one host sync for the loss and one for the gradient norm. Every
``every`` steps a full :func:`bptt.diagnose` runs on that step's batch (about three
training steps' worth of work), so the cost is bounded by the schedule. Records go to
``out/diagnostics.jsonl`` and ``out/anomalies.jsonl``; the batch and weights behind a
non-finite step or a loss spike go to ``out/captures/step-N.pt`` for ``bptt replay``.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, final

import torch
from torch import Tensor, nn

from bptt.diagnostics.anomalies import (
    AnomalyKind,
    AnomalyRecord,
    LossSpikeDetector,
    NonFiniteReport,
    OscillationDetector,
)
from bptt.diagnostics.diagnosis import LossFunction, diagnose
from bptt.diagnostics.records import DiagnosisRecord, compact_record
from bptt.gradients import global_grad_norm
from bptt.jsonio import append_jsonl, atomic_write

__all__ = ["Watch", "load_capture", "watch"]

DIAGNOSTICS, ANOMALIES, CAPTURES = "diagnostics.jsonl", "anomalies.jsonl", "captures"

RecordKind = Literal["diagnosis", "anomaly"]
"""The first argument of a watch's ``on_record``."""


@final
class Watch:
    """Scheduled diagnostics and anomaly detection for one model's training.

    Args:
        model: the model being trained.
        every: run a full diagnosis every ``every`` steps (0: never; anomalies are
            still detected at every step).
        out: folder for the JSON-lines logs and captures; ``None`` keeps them in memory.
        loss_fn: ``loss_fn(output, targets)``, as for :func:`bptt.diagnose`.
        max_captures: at most this many captures are written, and at most this many
            non-finite steps are localised (each costs a diagnostic pass).
        capture_extra: saved in every capture (e.g. the run's config, so that
            ``bptt replay`` can rebuild the model).
        spike_threshold: robust z-score of a loss spike (see :class:`LossSpikeDetector`).
        diagnose_options: keyword arguments for :func:`bptt.diagnose`; by default the
            scheduled diagnoses leave out the Jacobian products (``products=False``), the
            costliest part.
        products_at: a schedule, ``step -> bool``: the scheduled diagnoses at the steps
            where it is true also measure the Jacobian products (e.g. only the last one);
            ``None``: never, unless ``diagnose_options`` says otherwise.
        on_record: called as ``on_record("diagnosis", record)`` with every
            :class:`~bptt.diagnostics.records.DiagnosisRecord` and ``on_record("anomaly",
            record)`` with every :class:`~bptt.diagnostics.anomalies.AnomalyRecord`, as they
            are made (e.g. to mirror them to TensorBoard).

    Attributes:
        diagnoses: the compact records of the scheduled diagnoses, in order.
        anomalies: the anomaly records, in order.

    A resumed run restores what the watch has seen (the detectors' windows, the counts)
    through :meth:`state_dict` and :meth:`load_state_dict`, so that it flags the same steps
    as a run that never stopped.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        every: int = 50,
        out: str | Path | None = None,
        loss_fn: LossFunction | None = None,
        max_captures: int = 5,
        capture_extra: dict[str, Any] | None = None,
        spike_threshold: float = 6.0,
        diagnose_options: dict[str, Any] | None = None,
        products_at: Callable[[int], bool] | None = None,
        on_record: Callable[[RecordKind, DiagnosisRecord | AnomalyRecord], None] | None = None,
    ) -> None:
        if not isinstance(every, int) or every < 0:
            raise ValueError(f"every must be a non-negative integer (0 = never), got {every!r}")
        self.model = model
        self.every = every
        self.out = None if out is None else Path(out)
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
        self.loss_fn = loss_fn
        self.max_captures = max_captures
        self.capture_extra = capture_extra or {}
        self.diagnose_options = {"products": False} | (diagnose_options or {})
        self.products_at = products_at
        self.on_record = on_record
        self.spikes = LossSpikeDetector(threshold=spike_threshold)
        self.oscillation = OscillationDetector()
        self.oscillating = False
        self.diagnoses: list[DiagnosisRecord] = []
        self.anomalies: list[AnomalyRecord] = []
        self.captures = 0
        self.nonfinite_steps = 0

    def observe(
        self,
        step: int,
        loss: Tensor | float,
        inputs: Tensor,
        targets: Tensor,
        lengths: Tensor | None = None,
        *,
        grad_norm: float | None = None,
        loss_fn: LossFunction | None = None,
    ) -> bool:
        """Look at one training step, after ``backward()`` and before the optimizer step.

        Args:
            step: the training step (any increasing count).
            loss: the step's loss.
            inputs: the step's input batch (kept only when captured).
            targets: the step's targets (kept only when captured).
            lengths: the step's sequence lengths, if variable (kept only when captured).
            grad_norm: the global gradient norm, if already computed (e.g. by clipping).
            loss_fn: overrides the watch's ``loss_fn`` for this step.

        Returns:
            ``True`` if the loss and the gradient are finite, so the update may be applied.
        """
        loss_value = float(loss.detach()) if isinstance(loss, Tensor) else float(loss)
        norm = float(global_grad_norm(self.model.parameters())) if grad_norm is None else grad_norm
        finite = math.isfinite(loss_value) and math.isfinite(norm)
        batch = (inputs, targets, lengths)
        loss_fn = loss_fn or self.loss_fn
        if not finite:
            self.nonfinite_steps += 1
            if self.nonfinite_steps <= self.max_captures:  # localising costs a diagnostic pass
                report = self._locate(batch, loss_fn)
                report.training_step = step
                self._anomaly(step, "non-finite", report.describe(), batch, report=report.to_dict())
        else:
            score = self.spikes.update(loss_value)
            if score is not None:
                self._anomaly(
                    step, "loss-spike", f"loss {loss_value:.4g} is {score:.1f} robust standard "
                    "deviations above the recent window", batch, loss=loss_value, z=score,
                )
            oscillating = self.oscillation.update(loss_value)
            if oscillating and not self.oscillating:
                self._anomaly(
                    step, "oscillation", "the loss swings up and down instead of decreasing "
                    "(try a lower learning rate or gradient clipping)", None,
                )
            self.oscillating = oscillating
        if finite and self.every and step % self.every == 0:
            options = self.diagnose_options
            if self.products_at is not None and self.products_at(step):
                options = options | {"products": True}
            diagnosis = diagnose(self.model, inputs, targets, loss_fn, lengths=lengths, **options)
            record = compact_record(step, diagnosis)
            self.diagnoses.append(record)
            self._write(DIAGNOSTICS, record)
            if self.on_record is not None:
                self.on_record("diagnosis", record)
        return finite

    def state_dict(self) -> dict[str, Any]:
        """What the watch has seen that decides what it flags next: the loss windows of the
        spike and oscillation detectors, whether the loss was oscillating, and how many
        captures were written and non-finite steps localised (each capped by ``max_captures``).

        The records themselves are in ``out``'s files (or :attr:`diagnoses` and
        :attr:`anomalies`), not here.
        """
        return {
            "spikes": self.spikes.state_dict(),
            "oscillation": self.oscillation.state_dict(),
            "oscillating": self.oscillating,
            "captures": self.captures,
            "nonfinite_steps": self.nonfinite_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned, e.g. from a checkpoint."""
        self.spikes.load_state_dict(state["spikes"])
        self.oscillation.load_state_dict(state["oscillation"])
        self.oscillating = bool(state["oscillating"])
        self.captures = int(state["captures"])
        self.nonfinite_steps = int(state["nonfinite_steps"])

    def _locate(self, batch: tuple, loss_fn: LossFunction | None) -> NonFiniteReport:
        """Where the non-finite value came from, by a diagnostic pass on the same batch."""
        inputs, targets, lengths = batch
        diagnosis = diagnose(self.model, inputs, targets, loss_fn, lengths=lengths, **self.diagnose_options)
        if diagnosis.nonfinite is not None:
            return diagnosis.nonfinite
        # Not reproduced by the pass (e.g. a dropout mask): name the parameter gradient.
        for name, parameter in self.model.named_parameters():
            if parameter.grad is not None and not torch.isfinite(parameter.grad).all():
                return NonFiniteReport("parameter gradient", parameter=name)
        return NonFiniteReport("loss")

    def _anomaly(
        self, step: int, kind: AnomalyKind, message: str, batch: tuple | None, **details: Any
    ) -> None:
        record = AnomalyRecord(step=step, kind=kind, message=message, **details)
        if batch is not None and self.out is not None and self.captures < self.max_captures:
            record["capture"] = str(self._capture(step, record, batch))
        self.anomalies.append(record)
        self._write(ANOMALIES, record)
        if self.on_record is not None:
            self.on_record("anomaly", record)

    def _capture(self, step: int, record: AnomalyRecord, batch: tuple) -> Path:
        inputs, targets, lengths = batch
        folder = self.out / CAPTURES
        folder.mkdir(exist_ok=True)
        path = folder / f"step-{step}.pt"
        capture = {
            "step": step,
            "anomaly": record,
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "training": self.model.training,
            "inputs": inputs.detach().cpu(),
            "targets": targets.detach().cpu(),
            "lengths": None if lengths is None else lengths.detach().cpu(),
            **self.capture_extra,
        }
        buffer = io.BytesIO()
        torch.save(capture, buffer)
        atomic_write(path, lambda file: file.write(buffer.getvalue()))
        self.captures += 1
        return path

    def _write(self, name: str, record: DiagnosisRecord | AnomalyRecord) -> None:
        if self.out is not None:
            append_jsonl(self.out / name, record)


@contextlib.contextmanager
def watch(model: nn.Module, every: int = 50, **options: Any) -> Iterator[Watch]:
    """Watch ``model``'s training inside the block; see :class:`Watch` for the options."""
    yield Watch(model, every=every, **options)


def load_capture(path: str | Path) -> dict[str, Any]:
    """Read a capture written by :class:`Watch` (tensors only: ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no capture at {path}; captures are written to RUN_DIR/captures/")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path} is not a readable bptt capture: {error}") from error
