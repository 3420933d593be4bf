r"""PyTorch Lightning: watch, diagnose and clip a LightningModule's recurrent layers.

:class:`BPTTCallback` brings :class:`bptt.Watch` and the clippers of
:mod:`bptt.remedies.clipping` into a Lightning ``Trainer`` without a change to the
training loop. At every optimizer step, in ``on_before_optimizer_step`` (after
``backward``, after AMP unscaling, before ``optimizer.step()``), it

1. clips the gradients of the optimizer's parameters with a bptt clipper, if given,
   recording the global norm before clipping;
2. checks the loss and the gradients for NaN and Inf, and applies ``on_nonfinite``;
3. watches for loss spikes and oscillation and, every ``every`` steps, runs a full
   :func:`bptt.diagnose` on the step's batch with the weights about to be updated.

Any LightningModule holding a ``torch.nn.RNN`` / ``GRU`` / ``LSTM`` or a bptt
:class:`~bptt.Recurrent` works::

    import lightning.pytorch as pl
    import torch
    from torch import nn

    from bptt.integrations.lightning import BPTTCallback


    class Regressor(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.lstm, self.head = nn.LSTM(2, 32, batch_first=True), nn.Linear(32, 1)

        def forward(self, x):
            return self.head(self.lstm(x)[0][:, -1])

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.mse_loss(self(x), y)

        def configure_optimizers(self):
            # bptt.parameter_groups(self, 1e-3) instead of self.parameters() gives a bptt
            # cell's slow parameters (expRNN's skew-symmetric one) their own learning rate
            return torch.optim.Adam(self.parameters(), lr=1e-3)


    callback = BPTTCallback(every=100, clip="norm:1")  # and no gradient_clip_val
    pl.Trainer(max_steps=1000, callbacks=[callback]).fit(Regressor(), loader)
    print(callback.diagnoses[-1]["verdict"])

What is logged, to every logger of the trainer:

- at each optimizer step, through ``LightningModule.log`` (so thinned by the trainer's
  ``log_every_n_steps``): ``bptt/grad_norm`` (global norm before clipping),
  ``bptt/clipped`` (1 or 0), ``bptt/clip_threshold``, ``bptt/grad_norm_clipped`` (after
  clipping, with a clipper) and ``bptt/nonfinite_steps`` (the count so far);
- after each diagnosis, at its step and never thinned: ``bptt/verdict`` and, per
  recurrent layer ``L`` (e.g. ``lstm.l0``), ``bptt/L/verdict`` (see :data:`VERDICT_CODES`),
  ``bptt/L/horizon`` (many-to-one losses), ``bptt/L/decay_rate``,
  ``bptt/L/spectral_norm_median`` (median :math:`\sigma_{\max}(J_t)`),
  ``bptt/L/lyapunov_max``, ``bptt/L/saturation`` (Elman cells) and the gradient profile
  ``bptt/L/profile_d<d>``: :math:`\|\delta\|` ``d`` steps before the last step,
  relative to the last step's, for d = 1, 2, 4, ..., T - 1;
- on each anomaly: ``bptt/anomaly/<kind>`` = 1 (``non-finite``, ``loss-spike``,
  ``oscillation``);
- to a ``TensorBoardLogger`` also the verdicts and anomalies in words (text
  ``bptt/verdict``, ``bptt/anomalies``) and the gradient profiles as a figure
  (``bptt/profile``).

The full records stay in :attr:`BPTTCallback.diagnoses` and
:attr:`BPTTCallback.anomalies` and, when the trainer has a logger with a folder, are
appended to ``<log_dir>/bptt/diagnostics.jsonl`` and ``anomalies.jsonl``; the batch and
weights of a non-finite step or a loss spike go to ``<log_dir>/bptt/captures/``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, final

import torch
from torch import Tensor

from bptt.diagnostics.anomalies import AnomalyRecord
from bptt.diagnostics.diagnosis import ForwardFunction, LossFunction
from bptt.diagnostics.records import DiagnosisRecord, layer_scalars
from bptt.diagnostics.verdict import VerdictKind
from bptt.diagnostics.watching import Watch
from bptt.remedies.clipping import (
    AbstractClipper,
    ClipEvent,
    clip_gradients_,
    make_clipper,
)
from bptt.report.plots import profile_lines
from bptt.tasks import Batch

try:
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger
    from lightning.pytorch.plugins.precision import MixedPrecision
    from lightning.pytorch.utilities import rank_zero_warn
except ImportError as error:  # the optional extra is not installed
    raise ImportError(
        "bptt.integrations.lightning needs PyTorch Lightning 2.2 or later: "
        f"pip install bptt[lightning] (importing it failed: {error})"
    ) from error

__all__ = ["VERDICT_CODES", "BPTTCallback", "unpack_default"]

Policy = Literal["skip", "warn", "raise"]
UnpackBatch = Callable[[Any], tuple[Tensor, Tensor, Tensor | None]]

VERDICT_CODES: dict[VerdictKind, float] = {"vanishing": -1.0, "healthy": 0.0, "exploding": 1.0, "non-finite": 2.0}
"""The verdicts as the numbers logged for them (loggers of scalars take no words)."""


def unpack_default(batch: Any) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(inputs, targets, lengths)`` of a :class:`bptt.tasks.Batch`, or of a tuple or list
    whose first two items are the inputs and the targets (lengths ``None``).

    Raises:
        TypeError: for any other batch, naming the ``unpack_batch`` argument.
    """
    if isinstance(batch, Batch):
        return batch.inputs, batch.targets, batch.lengths
    if isinstance(batch, tuple | list) and len(batch) >= 2:
        inputs, targets = batch[0], batch[1]
        if isinstance(inputs, Tensor) and isinstance(targets, Tensor):
            return inputs, targets, None
    raise TypeError(
        f"BPTTCallback cannot find (inputs, targets) in a batch of type "
        f"{type(batch).__name__}; pass BPTTCallback(unpack_batch=...), a function "
        "batch -> (inputs, targets, lengths or None)"
    )


@final
class BPTTCallback(pl.Callback):
    """Diagnoses, anomaly detection and gradient clipping for a LightningModule's training.

    A thin adapter around :class:`bptt.Watch`: the records, files and captures are the
    ones :func:`bptt.train` writes. The diagnoses run on the LightningModule itself, as
    ``forward(module, inputs, lengths)`` then ``loss_fn(output, targets)``, in the
    module's current (training) mode.

    Args:
        every: run a full :func:`bptt.diagnose` every ``every`` optimizer steps, from the
            first (0: never; anomalies are still detected at every step).
        clip: a bptt clipper, or its spec as the CLI's ``--clip`` takes it (``"norm:1"``,
            ``"value:25"``, ``"autoclip:10"``, ``"agc:0.01"``, ``"zscore:2.5"``, ...,
            see :func:`bptt.remedies.make_clipper`); ``None``: only measure the norm. Do
            not combine with the trainer's ``gradient_clip_val``.
        loss_fn: ``loss_fn(output, targets) -> scalar`` for the diagnoses; default
            :func:`bptt.diagnostics.default_loss` (MSE or cross-entropy).
        unpack_batch: ``batch -> (inputs, targets, lengths or None)``; default
            :func:`unpack_default`.
        forward: ``forward(module, inputs, lengths) -> output`` for modules whose
            ``forward`` is not ``module(inputs)`` / ``module(inputs, lengths=lengths)``.
        on_nonfinite: what to do with an update whose loss or gradient holds NaN or Inf:
            ``"skip"`` drops it (the gradients are set to ``None``, so that
            ``optimizer.step()`` leaves the weights and the optimizer state alone);
            ``"warn"`` applies it; ``"raise"`` stops training with a
            :class:`FloatingPointError`. It is always logged and recorded, and the first
            ``max_captures`` are located (layer, step, gate) and warned about.
        out: folder of the JSON-lines records and captures; default ``<log_dir>/bptt``
            of the trainer's logger, or in memory only when it has none.
        max_captures: at most this many captures, and located non-finite steps.
        spike_threshold: robust z-score of a loss spike (see :class:`bptt.Watch`).
        diagnose_options: keyword arguments for :func:`bptt.diagnose` (by default the
            scheduled diagnoses leave out the Jacobian products, ``products=False``).

    Attributes:
        clipper: the clipper, or ``None``.
        watcher: the :class:`bptt.Watch` of the current fit (``None`` before it).

    Raises:
        ValueError: at the start of fitting, if both ``clip`` and the trainer's
            ``gradient_clip_val`` are set.
    """

    def __init__(
        self,
        every: int = 50,
        clip: str | AbstractClipper | None = None,
        *,
        loss_fn: LossFunction | None = None,
        unpack_batch: UnpackBatch | None = None,
        forward: ForwardFunction | None = None,
        on_nonfinite: Policy = "skip",
        out: str | Path | None = None,
        max_captures: int = 5,
        spike_threshold: float = 6.0,
        diagnose_options: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(every, int) or every < 0:
            raise ValueError(
                f"every must be a non-negative integer (0 = never), got {every!r}"
            )
        if on_nonfinite not in ("skip", "warn", "raise"):
            raise ValueError(
                f"on_nonfinite must be 'skip', 'warn' or 'raise', got {on_nonfinite!r}"
            )
        if isinstance(clip, str):
            clip = make_clipper(clip)
        if clip is not None and not isinstance(clip, AbstractClipper):
            raise TypeError(
                f"clip must be a spec such as 'norm:1', a bptt clipper or None, got a "
                f"{type(clip).__name__}"
            )
        self.every = every
        self.clipper = clip
        self.loss_fn = loss_fn
        self.unpack_batch = unpack_default if unpack_batch is None else unpack_batch
        self.on_nonfinite = on_nonfinite
        self.out = out
        self.max_captures = max_captures
        self.spike_threshold = spike_threshold
        self.diagnose_options = dict(diagnose_options or {})
        if forward is not None:
            self.diagnose_options["forward"] = forward
        self.watcher: Watch | None = None
        self._watch_state: dict[str, Any] | None = None
        self._batch: Any = None
        self._loss: Tensor | None = None

    @property
    def diagnoses(self) -> list[DiagnosisRecord]:
        """The records of the scheduled diagnoses (see :class:`bptt.diagnostics.DiagnosisRecord`)."""
        return [] if self.watcher is None else self.watcher.diagnoses

    @property
    def anomalies(self) -> list[AnomalyRecord]:
        """The anomaly records: ``step``, ``kind``, ``message`` and details."""
        return [] if self.watcher is None else self.watcher.anomalies

    def setup(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str
    ) -> None:
        if stage != "fit":
            return
        if self.clipper is not None and trainer.gradient_clip_val:
            raise ValueError(
                f"BPTTCallback(clip={self.clipper!r}) and Trainer(gradient_clip_val="
                f"{trainer.gradient_clip_val}) would both clip every step, bptt first and "
                "Lightning after it; keep one: drop gradient_clip_val, or drop clip and "
                "let the callback only measure and diagnose"
            )
        out = self.out
        if out is None and trainer.loggers:
            log_dir = trainer.log_dir  # a collective call: every rank makes it
            out = None if log_dir is None else Path(log_dir) / "bptt"
        leader = trainer.is_global_zero  # other ranks only clip and guard
        self.watcher = Watch(
            pl_module,
            every=self.every if leader else 0,
            out=out if leader else None,
            loss_fn=self.loss_fn,
            max_captures=self.max_captures,
            spike_threshold=self.spike_threshold,
            diagnose_options=self.diagnose_options,
        )
        if self._watch_state is not None:
            self.watcher.load_state_dict(self._watch_state)

    def on_train_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._batch, self._loss = batch, None

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor
    ) -> None:
        loss = loss.detach()
        precision = trainer.precision_plugin
        if isinstance(precision, MixedPrecision) and precision.scaler is not None:
            loss = loss / precision.scaler.get_scale()  # the loss arrives scaled
        self._loss = loss

    def on_before_optimizer_step(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        optimizer: torch.optim.Optimizer,
    ) -> None:
        if self.watcher is None:
            raise RuntimeError(
                "BPTTCallback.setup() did not run: pass it in Trainer(callbacks=...)"
            )
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        if self._loss is None:
            if any(p.grad is not None for p in parameters):
                raise RuntimeError(
                    "BPTTCallback saw gradients but no backward pass through Lightning; in "
                    "manual optimization call self.manual_backward(loss), not loss.backward()"
                )
            return  # training_step returned None: no backward, nothing to watch
        # 1. clip, recording the global norm before clipping
        clipper = self.clipper or clip_gradients_  # the latter only measures the norm
        clip = clipper(parameters)
        # 2. watch: anomalies at every step, a diagnosis on schedule
        step = trainer.global_step
        inputs, targets, lengths = self.unpack_batch(self._batch)
        watcher = self.watcher
        seen_diagnoses, seen_anomalies = len(watcher.diagnoses), len(watcher.anomalies)
        finite = watcher.observe(
            step, self._loss, inputs, targets, lengths, grad_norm=clip.norm
        )
        # 3. log
        self._log_step(pl_module, clip)
        for record in watcher.diagnoses[seen_diagnoses:]:
            self._log_diagnosis(trainer, record)
        new_anomalies = watcher.anomalies[seen_anomalies:]
        for record in new_anomalies:
            self._log_anomaly(trainer, record)
        # 4. never apply a non-finite update silently
        if not finite:
            located = [r for r in new_anomalies if r["kind"] == "non-finite"]
            self._on_nonfinite(
                step, parameters, located[0]["message"] if located else None
            )

    def state_dict(self) -> dict[str, Any]:
        """The clipper's state and the watch's (its detectors' windows and counts), for checkpoints."""
        state = {} if self.clipper is None else {"clipper": self.clipper.state_dict()}
        if self.watcher is not None:
            state["watch"] = self.watcher.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.clipper is not None and "clipper" in state_dict:
            self.clipper.load_state_dict(state_dict["clipper"])
        if "watch" in state_dict:  # before setup() made the watch: it restores it then
            self._watch_state = state_dict["watch"]
            if self.watcher is not None:
                self.watcher.load_state_dict(self._watch_state)

    def _on_nonfinite(
        self, step: int, parameters: list[Tensor], location: str | None
    ) -> None:
        found = f"bptt: non-finite loss or gradient at step {step}"
        if location is not None:
            found += f" ({location})"
        if self.on_nonfinite == "raise":
            raise FloatingPointError(
                f"{found}; on_nonfinite='skip' drops such updates instead"
            )
        if self.on_nonfinite == "skip":
            # torch optimizers leave the parameters without a gradient alone
            for parameter in parameters:
                parameter.grad = None
            action = "the update was skipped"
        else:
            action = "the update was applied (on_nonfinite='warn')"
        if location is not None:  # the first max_captures only; all are counted
            rank_zero_warn(
                f"{found}; {action}. All such steps are counted in bptt/nonfinite_steps."
            )

    def _log_step(self, pl_module: pl.LightningModule, clip: ClipEvent) -> None:
        metrics = {
            "bptt/grad_norm": clip.norm,
            "bptt/clipped": float(clip.clipped),
            "bptt/nonfinite_steps": float(self.watcher.nonfinite_steps),
        }
        if clip.threshold is not None:
            metrics["bptt/clip_threshold"] = clip.threshold
        if self.clipper is not None and clip.post_norm is not None:
            metrics["bptt/grad_norm_clipped"] = clip.post_norm
        pl_module.log_dict(metrics, on_step=True, on_epoch=False)

    def _log_diagnosis(self, trainer: pl.Trainer, record: DiagnosisRecord) -> None:
        metrics = {"bptt/verdict": VERDICT_CODES[record["verdict"]]}
        for layer in record["layers"]:
            scalars = {"verdict": VERDICT_CODES[layer["verdict"]]} | layer_scalars(layer)
            metrics |= {f"bptt/{layer['name']}/{key}": value for key, value in scalars.items()}
        step = record["step"]
        _log_metrics(trainer, metrics, step)
        for logger in _tensorboards(trainer):
            text = f"**{record['verdict']}**: {record['explanation']}"
            logger.experiment.add_text("bptt/verdict", text, step)
            profiled = [r for r in self.diagnoses if r["layers"]]
            if profiled:
                logger.experiment.add_figure(
                    "bptt/profile", profile_lines(profiled), step
                )

    def _log_anomaly(self, trainer: pl.Trainer, record: AnomalyRecord) -> None:
        step = record["step"]
        _log_metrics(trainer, {f"bptt/anomaly/{record['kind']}": 1.0}, step)
        for logger in _tensorboards(trainer):
            logger.experiment.add_text(
                "bptt/anomalies", f"**{record['kind']}**: {record['message']}", step
            )


def _log_metrics(trainer: pl.Trainer, metrics: dict[str, float], step: int) -> None:
    """Straight to every logger (rank zero only), not thinned by ``log_every_n_steps``."""
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=step)


def _tensorboards(trainer: pl.Trainer) -> list[TensorBoardLogger]:
    return [
        logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)
    ]
