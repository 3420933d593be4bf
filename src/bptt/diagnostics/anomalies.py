"""Anomalies: where the first non-finite value appeared, loss spikes and oscillation.

A non-finite value is localised in the order things are computed: the forward pass
(layer by layer, step by step: which gate of which sample), the loss, the backward pass
(top layer first, last step first: the hidden-state gradient), then the parameter
gradients. The detectors are plain objects fed one loss value per training step.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Literal, NotRequired, TypedDict, final, get_args

import torch
from torch import Tensor

from bptt.cells import State, flatten_state
from bptt.diagnostics.trace import TapedLayer

__all__ = [
    "ANOMALY_KINDS",
    "TENSORS",
    "AnomalyKind",
    "AnomalyRecord",
    "LossSpikeDetector",
    "NonFiniteReport",
    "NonFiniteTensor",
    "NonFiniteValue",
    "OscillationDetector",
    "nonfinite_in_backward",
    "nonfinite_in_forward",
]

NonFiniteTensor = Literal["activation", "loss", "hidden-state gradient", "parameter gradient"]
"""Where a non-finite value can first appear, in the order they are computed."""

TENSORS: tuple[NonFiniteTensor, ...] = get_args(NonFiniteTensor)

NonFiniteValue = Literal["nan", "inf", "-inf"]
"""Which non-finite value: NaN, or an infinity of either sign."""

AnomalyKind = Literal["non-finite", "loss-spike", "oscillation"]
"""What a watch flags at a training step."""

ANOMALY_KINDS: tuple[AnomalyKind, ...] = get_args(AnomalyKind)


@final
class AnomalyRecord(TypedDict):
    """An anomaly as a watch records it: one line of ``anomalies.jsonl``, and the ``anomaly``
    of a capture.

    ``report`` (a :meth:`NonFiniteReport.to_dict`) comes with a located ``"non-finite"``
    step, ``loss`` and ``z`` (its robust z-score) with a ``"loss-spike"``, ``capture`` (the
    path of the capture) when the step's batch and weights were captured.
    """

    step: int
    kind: AnomalyKind
    message: str
    report: NotRequired[dict[str, Any]]
    loss: NotRequired[float]
    z: NotRequired[float]
    capture: NotRequired[str]


@final
@dataclass
class NonFiniteReport:
    """Where the first non-finite value appeared.

    Attributes:
        tensor: one of :data:`TENSORS`.
        layer: the layer's name (``"<module>.l<index>"``), ``None`` for the loss or a
            parameter outside the recurrent layers.
        step: the time step (0-based) of an activation or hidden-state gradient.
        sample: the first sample of the batch that holds it.
        gate: for an activation, the first gate holding it (``"state"`` if every gate
            is finite and only the state is not, e.g. an LSTM cell overflow).
        parameter: for a parameter gradient, the parameter's name.
        value: ``"nan"``, ``"inf"`` or ``"-inf"``.
        training_step: the training step, when known.
    """

    tensor: NonFiniteTensor
    layer: str | None = None
    step: int | None = None
    sample: int | None = None
    gate: str | None = None
    parameter: str | None = None
    value: NonFiniteValue = "nan"
    training_step: int | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def describe(self) -> str:
        """The report in one sentence."""
        where = [f"layer {self.layer}"] if self.layer is not None else []
        where += [f"step {self.step}"] if self.step is not None else []
        where += [f"gate '{self.gate}'"] if self.gate is not None else []
        where += [f"sample {self.sample}"] if self.sample is not None else []
        where += [f"parameter {self.parameter}"] if self.parameter is not None else []
        when = f" at training step {self.training_step}" if self.training_step is not None else ""
        return (
            f"the first non-finite value ({self.value}) appears in the {self.tensor}"
            f"{' at ' + ', '.join(where) if where else ''}{when}"
        )


def nonfinite_in_forward(layers: list[TapedLayer], loss: Tensor) -> NonFiniteReport | None:
    """The first non-finite activation (layer, step, sample, gate), else a non-finite loss."""
    for layer in layers:
        tape = layer.tape
        states = torch.stack([flatten_state(state) for state in tape.states]).detach()
        bad = ~torch.isfinite(states)
        if not bad.any():
            continue
        step, sample = (int(i) for i in bad.any(-1).nonzero()[0])
        previous = tape.initial if step == 0 else tape.states[step - 1]
        previous = _row(previous, sample)
        with torch.no_grad():
            gates = tape.cell.gates(tape.inputs[step, sample : sample + 1].detach(), previous)
        gate = next((name for name, value in gates.items() if not torch.isfinite(value).all()), "state")
        return NonFiniteReport(
            "activation", layer.name, step, sample, gate,
            value=_kind(states[step, sample]),
        )
    if not torch.isfinite(loss):
        return NonFiniteReport("loss", value=_kind(loss.detach()))
    return None


def nonfinite_in_backward(
    layers: list[TapedLayer], deltas: list[Tensor], parameter_grads: dict[str, Tensor]
) -> NonFiniteReport | None:
    """The first non-finite hidden-state gradient in backward order, else parameter gradient.

    Args:
        layers: the taped layers, in forward order.
        deltas: per layer, the total derivatives on the flat state, ``(T, B, S)``.
        parameter_grads: the gradient of every parameter, by name.
    """
    for layer, delta in zip(reversed(layers), reversed(deltas), strict=True):
        bad = ~torch.isfinite(delta).all(-1)
        if bad.any():
            step = int(bad.any(1).nonzero().max())
            sample = int(bad[step].nonzero()[0])
            return NonFiniteReport(
                "hidden-state gradient", layer.name, step, sample, value=_kind(delta[step, sample])
            )
    for name, grad in parameter_grads.items():
        if not torch.isfinite(grad).all():
            return NonFiniteReport("parameter gradient", parameter=name, value=_kind(grad))
    return None


@final
class LossSpikeDetector:
    """Flags a loss far above the recent ones, by a robust z-score on a running window.

    ``z = (loss - median) / (1.4826 * MAD)`` over the last ``window`` finite losses;
    a spike is ``z > threshold`` once at least ``warmup`` losses are in the window.

    Args:
        window: how many recent losses make the reference.
        threshold: robust z-score above which a loss is a spike.
        warmup: losses needed before anything is flagged.
    """

    def __init__(self, window: int = 50, threshold: float = 6.0, warmup: int = 20) -> None:
        if window < 3 or not 1 <= warmup <= window or threshold <= 0:
            raise ValueError(
                f"expected window >= 3, 1 <= warmup <= window and threshold > 0, got "
                f"window={window}, warmup={warmup}, threshold={threshold}"
            )
        self.window, self.threshold, self.warmup = window, threshold, warmup
        self.history: deque[float] = deque(maxlen=window)

    def update(self, loss: float) -> float | None:
        """Add one loss; return its robust z-score if it is a spike, else ``None``.

        A spike is not added to the window, so a run of spikes stays visible.
        """
        if not math.isfinite(loss):
            return None
        score = self.score(loss)
        if score is not None and score > self.threshold:
            return score
        self.history.append(loss)
        return None

    def score(self, loss: float) -> float | None:
        """The robust z-score of ``loss`` against the window (``None`` during warm-up)."""
        if len(self.history) < self.warmup:
            return None
        values = torch.tensor(list(self.history), dtype=torch.float64)
        median = values.median()
        spread = 1.4826 * (values - median).abs().median()
        floor = 1e-3 * abs(float(median)) + 1e-12
        return float((loss - median) / max(float(spread), floor))

    def state_dict(self) -> dict[str, object]:
        return {"history": list(self.history)}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.history = deque(state["history"], maxlen=self.window)


@final
class OscillationDetector:
    """Flags a loss that swings up and down instead of decreasing.

    Over the last ``window`` losses: the lag-1 autocorrelation of the step-to-step changes
    is below ``-correlation`` (every rise is followed by a fall), well beyond what noise
    gives (-0.5 for white noise); at least a fraction ``correlation`` of consecutive changes
    flip sign (2/3 for noise; one outlier alone pushes the autocorrelation towards -1 but
    flips only two signs); and the swings are large: their median size exceeds
    ``amplitude`` times the median loss.
    """

    def __init__(
        self, window: int = 40, correlation: float = 0.8, amplitude: float = 0.1
    ) -> None:
        if window < 4:
            raise ValueError(f"window must be at least 4, got {window}")
        self.window, self.correlation, self.amplitude = window, correlation, amplitude
        self.history: deque[float] = deque(maxlen=window)

    def update(self, loss: float) -> bool:
        """Add one loss; return whether the window oscillates."""
        if not math.isfinite(loss):
            return False
        self.history.append(loss)
        if len(self.history) < self.window:
            return False
        values = torch.tensor(list(self.history), dtype=torch.float64)
        changes = values.diff()
        centred = changes - changes.mean()
        denominator = centred.square().sum()
        if denominator == 0:
            return False
        autocorrelation = float((centred[1:] * centred[:-1]).sum() / denominator)
        alternating = float((changes[1:] * changes[:-1] < 0).double().mean())
        swing = float(changes.abs().median())
        return (
            autocorrelation < -self.correlation
            and alternating >= self.correlation
            and swing > self.amplitude * float(values.median().abs())
        )

    def state_dict(self) -> dict[str, object]:
        return {"history": list(self.history)}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.history = deque(state["history"], maxlen=self.window)


def _row(state: State, sample: int) -> State:
    if isinstance(state, tuple):
        return tuple(part[sample : sample + 1].detach() for part in state)
    return state[sample : sample + 1].detach()


def _kind(values: Tensor) -> NonFiniteValue:
    values = values.detach().flatten()
    if torch.isnan(values).any():
        return "nan"
    return "inf" if bool((values == math.inf).any()) else "-inf"
