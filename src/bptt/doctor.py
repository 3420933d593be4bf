r"""The doctor: from a diagnosis to cures, ranked with reasons, and an A/B test that proves one.

Three steps, each usable on its own::

    examination = examine(config)                   # diagnosis + gradient-norm sample
    cures = prescribe(config, examination)          # ranked, each with its reason
    trials = try_cures(config, cures[:3], out)      # same budget and seed as the baseline
    print(format_trials(trials)); print(recommend(trials).sentence)

The rules read the numbers of :func:`bptt.diagnose` and follow the literature:

- **exploding** (:math:`\sigma_{\max}(J) > 1`, :math:`\lambda_1 > 0`, or non-finite values):
  clip the global gradient norm at a threshold taken from the observed gradient-norm
  distribution (Pascanu et al. 2013), bound or orthogonalise :math:`W_{hh}`, lower the
  learning rate;
- **vanishing** in an Elman RNN: a gated cell (LSTM/GRU: an additive memory path), IRNN (ReLU
  with :math:`W_{hh} = I`, Le et al. 2015), an orthogonal :math:`W_{hh}` (Arjovsky et al.
  2016; Lezcano-Casado & Martínez-Rubio 2019), skip connections in time; saturation and the
  derivative norm say which matters most;
- **vanishing** in a gated cell: chrono initialisation of the gate biases (Tallec & Ollivier
  2018), a forget-gate bias of 1 (Jozefowicz et al. 2015);
- **vanishing at long range** (the gradient reaches less than 1/:data:`LONG_RANGE` of the
  length): the long-memory cells, expRNN (Lezcano-Casado & Martínez-Rubio 2019) first on a
  memory task (:data:`MEMORY_TASKS`), LEM (Rusch et al. 2022) first otherwise, and coRNN
  (Rusch & Mishra 2021); in a gated cell before its gate initialisations, in an Elman RNN
  after the gated cells;
- **healthy**: the gradient reaches the whole sequence; what remains is optimisation.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, final

import torch

from bptt.builders import build_model, make_task
from bptt.cells import AbstractElmanCell, cell_spec, make_cell
from bptt.config import TrainConfig, clip_spec
from bptt.diagnostics import Diagnosis, diagnose
from bptt.diagnostics.records import LayerDiagnosis
from bptt.gradients import global_grad_norm
from bptt.rundir import RunDirectory
from bptt.training import DIAGNOSIS_SEED_OFFSET, RunResult, train

__all__ = [
    "Cure",
    "DoctorReport",
    "Examination",
    "Recommendation",
    "Trial",
    "doctor",
    "estimated_horizon",
    "examine",
    "findings",
    "format_trials",
    "prescribe",
    "recommend",
    "try_cures",
]

GRADIENT_SAMPLE = 32
"""Batches whose gradient norm a fresh model's examination measures (no update is made)."""

REACH_TOLERANCE = 1e-3
"""The relative gradient that still counts as reaching a step: the tolerance of the examination's
effective horizon and of :func:`estimated_horizon`."""

LONG_RANGE = 10
"""The sequence is long for a model whose gradient reaches less than ``length / LONG_RANGE``
steps back: the long-memory cells are prescribed."""

MEMORY_TASKS = frozenset({"copy"})
"""Tasks that store information for the whole delay and recall it (copy memory): expRNN's
norm-preserving recurrence is prescribed first for them, LEM first for the others."""


@final
@dataclass(frozen=True)
class Examination:
    """What the doctor looked at.

    Attributes:
        source: what was examined, in words.
        diagnosis: the diagnosis of the model on a batch of its task.
        gradient_norms: observed global gradient norms: the training log of a run, or
            :data:`GRADIENT_SAMPLE` batches of a fresh model (finite values only).
        nonfinite_fraction: the fraction of observed gradient norms that were NaN/Inf.
    """

    source: str
    diagnosis: Diagnosis
    gradient_norms: torch.Tensor
    nonfinite_fraction: float


@final
@dataclass(frozen=True)
class Cure:
    """One remedy: what to change in the config, and why.

    Attributes:
        name: a short label (``"lstm"``, ``"clip-norm:2.3"``).
        changes: :class:`~bptt.config.TrainConfig` fields to replace.
        reason: why, quoting the diagnosis.
    """

    name: str
    changes: dict[str, Any]
    reason: str

    def apply(self, config: TrainConfig) -> TrainConfig:
        return dataclasses.replace(config, **self.changes)


@final
@dataclass(frozen=True)
class Trial:
    """One arm of the A/B test.

    Attributes:
        name: ``"baseline"`` or the cure's name.
        changes: the config fields changed from the baseline.
        result: the run's :class:`~bptt.training.RunResult`.
        seconds: wall time of the run.
    """

    name: str
    changes: dict[str, Any]
    result: RunResult
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        result = self.result
        return {
            "name": self.name,
            "changes": self.changes,
            "metric": result.metric_name,
            "value": result.metrics[result.metric_name],
            "baseline": result.baseline,
            "solved": result.solved,
            "solved_at": result.solved_at,
            "horizon": result.horizon,
            "nonfinite_steps": result.nonfinite_steps,
            "steps": result.steps,
            "seconds": self.seconds,
            "run_dir": str(result.run_dir),
        }


@final
@dataclass(frozen=True)
class Recommendation:
    """The doctor's conclusion from the trials.

    Attributes:
        trial: the recommended arm, ``None`` if no cure did better than the baseline.
        sentence: the conclusion in words.
    """

    trial: Trial | None
    sentence: str


# -- examine ---------------------------------------------------------------------------------


def examine(
    config: TrainConfig,
    run_dir: str | Path | None = None,
    *,
    batch_size: int = 32,
    seed: int = 0,
) -> Examination:
    """Diagnose the model ``config`` describes, fresh or from ``run_dir``'s checkpoint, and
    collect the gradient norms its clipping threshold will be chosen from.

    Args:
        config: the run's configuration.
        run_dir: a run directory written by :func:`bptt.train`: its checkpoint is diagnosed
            and its logged gradient norms are used. ``None`` examines a fresh model and
            measures :data:`GRADIENT_SAMPLE` gradient norms on batches of the task.
        batch_size: sequences in the diagnosed batch.
        seed: seeds the fresh model and the examined batches.

    Returns:
        An :class:`Examination`.
    """
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(seed + DIAGNOSIS_SEED_OFFSET)
    if run_dir is not None:
        run = RunDirectory(Path(run_dir))
        model, task, _, step = run.load_model()
        records = [r for r in run.metrics() if r["split"] == "train"]
        norms = torch.tensor([float(r["grad_norm"]) for r in records], dtype=torch.float64)
        source = f"{run_dir} at step {step}"
    else:
        task = make_task(config)
        model = build_model(config, task)
        norms = torch.tensor(
            [_gradient_norm(model, task, task.sample(config.batch, generator)) for _ in range(GRADIENT_SAMPLE)],
            dtype=torch.float64,
        )
        source = f"a fresh {config.cell} ({config.init or cell_spec(config.cell)[0].init} init)"
    batch = task.sample(batch_size, generator)
    model.eval()
    diagnosis = diagnose(
        model, batch.inputs, batch.targets, lambda output, _: task.probe_loss(output, batch),
        lengths=batch.lengths, tolerance=REACH_TOLERANCE, products=False,
    )
    finite = torch.isfinite(norms)
    fraction = 1.0 - float(finite.double().mean()) if norms.numel() else 0.0
    return Examination(source, diagnosis, norms[finite], fraction)


def _gradient_norm(model: torch.nn.Module, task: Any, batch: Any) -> float:
    model.zero_grad(set_to_none=True)
    task.loss(model(batch.inputs, batch.lengths), batch).backward()
    norm = float(global_grad_norm(model.parameters()))
    model.zero_grad(set_to_none=True)
    return norm


# -- prescribe -------------------------------------------------------------------------------


def prescribe(config: TrainConfig, examination: Examination) -> list[Cure]:
    """Cures for what ``examination`` found, best first, each with the reason behind it
    (the measurements themselves are in :func:`findings`).

    Cures that would not change ``config`` (the cell it already has, an init it already
    uses) are left out.
    """
    diagnosis = examination.diagnosis
    layer = _worst_layer(diagnosis)
    if diagnosis.verdict.kind in ("exploding", "non-finite") or examination.nonfinite_fraction > 0:
        cures = _exploding_cures(config, examination, layer)
    elif diagnosis.verdict.kind == "vanishing" and layer is not None:
        cures = _vanishing_cures(config, layer)
    else:
        cures = _healthy_cures(config)
    return [cure for cure in cures if cure.apply(config) != config]


def findings(config: TrainConfig, examination: Examination) -> str:
    """What the examination measured, in one sentence with the numbers the cures rely on."""
    diagnosis = examination.diagnosis
    layer = _worst_layer(diagnosis)
    norms = examination.gradient_norms
    observed = (
        f"gradient norm median {float(torch.quantile(norms, 0.5)):.3g} (max {norms.max():.3g}) "
        f"over {norms.numel()} steps"
        if norms.numel()
        else "no finite gradient norm observed"
    )
    if examination.nonfinite_fraction:
        observed += f", {examination.nonfinite_fraction:.0%} non-finite"
    if layer is None:
        return f"{diagnosis.verdict.kind}: {diagnosis.verdict.explanation} {observed}."
    lyapunov = layer.lyapunov[0].item() if layer.lyapunov.numel() else math.nan
    parts = [
        (f"{diagnosis.verdict.kind} ({layer.name}): the gradient reaches {_reached(layer)} of "
        f"{config.length} steps back (×{layer.decay_rate:.3g} per step)"),
        (f"median σ_max(J_t) {layer.median_step_norm:.3g}, ‖W_hh‖₂ {layer.recurrent_norm:.3g}, "
        f"λ₁ {lyapunov:+.3g}"),
    ]
    if layer.saturation is not None:
        parts.append(f"{layer.saturation:.0%} of units saturated or inactive")
    if layer.derivative_norm is not None:
        parts.append(f"median ‖diag f′‖ {layer.derivative_norm:.3g}")
    for gate in ("forget", "update"):
        if gate in layer.gates:
            parts.append(f"mean {gate} gate {layer.gates[gate]['mean']:.2f}")
    return "; ".join(parts + [observed]) + "."


def estimated_horizon(layer: LayerDiagnosis) -> float:
    r"""How many steps back ``layer``'s gradient reaches, measured or extrapolated.

    The effective horizon where the diagnosis measured one (many-to-one losses); otherwise
    (many-to-many losses, whose profile mixes every step's loss) the distance at which the
    fitted per-step factor :math:`r` compounds to :math:`\varepsilon` = :data:`REACH_TOLERANCE`:

    .. math::
        d = \frac{\log \varepsilon}{\log r}, \qquad r < 1,

    and infinity for :math:`r \ge 1` or an unfitted :math:`r`.
    """
    if layer.horizon is not None:
        return float(layer.horizon)
    rate = layer.decay_rate
    if not math.isfinite(rate) or rate >= 1:
        return math.inf
    return math.log(REACH_TOLERANCE) / math.log(rate) if rate > 0 else 0.0


def _reached(layer: LayerDiagnosis) -> str:
    """:func:`estimated_horizon` in words: ``"12"``, ``"about 18"`` (extrapolated) or ``"all"``."""
    reach = estimated_horizon(layer)
    if not math.isfinite(reach):
        return "all"
    return f"{reach:.0f}" if layer.horizon is not None else f"about {reach:.0f}"


def _worst_layer(diagnosis: Diagnosis) -> LayerDiagnosis | None:
    """The layer the overall verdict comes from (the first one with that verdict)."""
    for layer in diagnosis.layers:
        if layer.verdict.kind == diagnosis.verdict.kind:
            return layer
    return diagnosis.layers[0] if diagnosis.layers else None


NEW_CELL: dict[str, Any] = {"init": None, "constraint": None}
"""What a cure that changes the cell resets: the new cell's own initialisation and constraint
(its :class:`~bptt.cells.CellSpec`) replace the old cell's."""


def _exploding_cures(config: TrainConfig, examination: Examination, layer: LayerDiagnosis | None) -> list[Cure]:
    norms, nonfinite = examination.gradient_norms, examination.nonfinite_fraction
    if norms.numel():
        threshold = float(f"{float(torch.quantile(norms, 0.5)):.3g}")
        chosen = f"the median of {norms.numel()} observed norms ({norms.min():.3g} to {norms.max():.3g})"
    else:
        threshold, chosen = 1.0, "the conventional 1: no finite norm was observed"
    elman = isinstance(make_cell(config.cell, 1, 1), AbstractElmanCell)
    cures = [
        Cure(
            f"clip-norm:{threshold:g}",
            {"clip": clip_spec(threshold)},
            f"clipping the global gradient norm at {threshold:g}, {chosen}, bounds every update "
            "and keeps its direction (Pascanu et al. 2013)",
        ),
        Cure(
            "ortho-rnn" if elman else "orthogonal",
            {"cell": "ortho-rnn"} if elman else {"constraint": "orthogonal"},
            "an orthogonal W_hh"
            + (f" (now ‖W_hh‖₂ = {layer.recurrent_norm:.3g})" if layer is not None else "")
            + " has every singular value 1, so σ_max(J_t) <= max f′ and nothing grows through time",
        ),
        Cure(
            "spectral:1",
            {"constraint": "spectral:1"},
            "projecting each gate block of W_hh to σ_max <= 1 after every step bounds the "
            "Jacobians by max f′ and leaves the weights free otherwise",
        ),
        Cure(
            f"lr:{config.lr / 3:.3g}",
            {"lr": float(f"{config.lr / 3:.3g}")},
            f"a third of the learning rate ({config.lr:g} -> {config.lr / 3:.3g}) shrinks the "
            "updates that throw the state across a cliff of the loss",
        ),
    ]
    if layer is not None and layer.lyapunov.numel() and layer.lyapunov[0] > 0:
        cures.append(
            Cure(
                "lyapunov:0.1",
                {"regularizer": "lyapunov:0.1"},
                f"λ₁ = {layer.lyapunov[0].item():+.3g} > 0: nearby trajectories diverge; gradient "
                "flossing (Engelken 2023) penalises λ₁² and pulls it to 0",
            )
        )
    if config.on_nonfinite != "rollback" and nonfinite:
        cures.append(
            Cure(
                "rollback",
                {"on_nonfinite": "rollback"},
                f"{nonfinite:.0%} of the steps were non-finite: rolling back to the last good "
                "state with half the learning rate recovers where skipping cannot",
            )
        )
    return cures


def _vanishing_cures(config: TrainConfig, layer: LayerDiagnosis) -> list[Cure]:
    """Gated cells first (the most reliable cure in our remedy table and the literature), then
    at long range the long-memory cells, then IRNN or an orthogonal W_hh (which first depends on
    saturation), skip, IndRNN. A gated cell that vanishes at long range gets the long-memory
    cells before its own gate initialisations."""
    long_memory = _long_memory_cures(config, layer)
    gate = next((name for name in ("forget", "update") if name in layer.gates), None)
    if gate is not None:  # LSTM / GRU
        mean = layer.gates[gate]["mean"]
        memory = 1 / max(1e-6, 1 - mean if gate == "forget" else mean)
        return long_memory + [
            Cure(
                "chrono",
                {"init": "chrono"},
                f"the gates keep memory for about {memory:.2g} steps (mean {gate} gate "
                f"{mean:.2f}); chrono initialisation spreads their time scales over "
                f"1..{config.length} (Tallec & Ollivier 2018)",
            ),
            Cure(
                "forget-bias",
                {"init": "forget-bias"},
                "a forget-gate bias of 1 starts the cell remembering (Jozefowicz et al. 2015)",
            ),
            Cure(
                "orthogonal-init",
                {"init": "orthogonal"},
                f"orthogonal gate blocks start every singular value of W_hh at 1 (now "
                f"‖W_hh‖₂ = {layer.recurrent_norm:.3g})",
            ),
        ]
    cures = [
        Cure(
            "gru",
            {"cell": "gru", **NEW_CELL},
            "a gated cell carries its state additively, h_t = (1-z) h_(t-1) + z h̃: the "
            "gradient passes wherever the update gate is closed",
        ),
        Cure(
            "lstm",
            {"cell": "lstm", **NEW_CELL},
            "the LSTM's cell state c_t = f c_(t-1) + i g is an additive path, scaled only by "
            "the forget gate",
        ),
        Cure(
            "irnn",
            {"cell": "irnn", **NEW_CELL},
            "ReLU units do not saturate, and W_hh = I (IRNN, Le et al. 2015) makes J_t = I on "
            "every active unit at the start",
        ),
        Cure(
            "ortho-rnn",
            {"cell": "ortho-rnn", **NEW_CELL},
            f"an orthogonal W_hh (σ = 1 exactly, expRNN; now ‖W_hh‖₂ = {layer.recurrent_norm:.3g}) "
            "leaves only f′ to shrink the gradient",
        ),
        Cure(
            "skip-rnn:10",
            {"cell": "skip-rnn:10", **NEW_CELL},
            f"a skip connection 10 steps back crosses the sequence in {config.length // 10} "
            f"identity hops instead of {config.length} shrinking ones",
        ),
        Cure(
            "indrnn",
            {"cell": "indrnn", **NEW_CELL},
            "IndRNN's diagonal recurrence, bounded at 2^(1/T), keeps each unit's gradient "
            "between vanishing and a 2-fold growth over the sequence",
        ),
        Cure(
            "pascanu:1",
            {"regularizer": "pascanu:1"},
            "Pascanu et al.'s (2013) regulariser penalises every step that shrinks ‖∂L/∂h_k‖, "
            "pushing the Jacobians towards norm 1 without changing the cell",
        ),
    ]
    if layer.saturation is not None and layer.saturation < 0.05:
        # unsaturated: the small W_hh is the cause, so orthogonality before IRNN
        cures[2], cures[3] = cures[3], cures[2]
    return cures[:2] + long_memory + cures[2:]


def _long_memory_cures(config: TrainConfig, layer: LayerDiagnosis) -> list[Cure]:
    """expRNN, LEM and coRNN when the gradient reaches far less than the length (none otherwise):
    expRNN first on a memory task, LEM first on the others."""
    if estimated_horizon(layer) * LONG_RANGE >= config.length:
        return []
    now = f"now the gradient reaches {_reached(layer)} of {config.length} steps back"
    exprnn = Cure(
        "exprnn",
        {"cell": "exprnn", **NEW_CELL},
        "expRNN (Lezcano-Casado & Martínez-Rubio 2019) keeps W_hh = exp(A - Aᵀ) orthogonal, every "
        "singular value 1 throughout training, and modReLU's derivative is 1 on every active unit: "
        f"‖J_t‖ = 1 there, so the gradient crosses the whole delay undiminished ({now})",
    )
    lem = Cure(
        "lem",
        {"cell": "lem", **NEW_CELL},
        "LEM (Rusch et al. 2022) discretises a multiscale ODE with learned time steps, a sigmoid "
        "gate per unit and step: units with small steps hold their state over long time scales, "
        "its gradients are bounded and do not vanish exponentially, and it solves the adding "
        f"problem to T = 10000 ({now})",
    )
    cornn = Cure(
        "cornn",
        {"cell": "cornn", **NEW_CELL},
        "coRNN (Rusch & Mishra 2021) is a network of coupled damped oscillators, "
        "y'' = tanh(W y + 𝒲 y' + V u + b) - γ y - ε y': its hidden states and gradients are bounded "
        f"by construction, so the gradient neither explodes nor vanishes exponentially ({now})",
    )
    return [exprnn, lem, cornn] if config.task in MEMORY_TASKS else [lem, cornn, exprnn]


def _healthy_cures(config: TrainConfig) -> list[Cure]:
    return [
        Cure(
            f"steps:{config.steps * 2}",
            {"steps": config.steps * 2},
            "the gradient reaches the whole sequence; what is left is optimisation: twice the steps",
        ),
        Cure(
            f"lr:{config.lr / 3:.3g}",
            {"lr": float(f"{config.lr / 3:.3g}")},
            f"a smaller learning rate ({config.lr / 3:.3g}) for a noisy descent",
        ),
        Cure(
            f"lr:{config.lr * 3:.3g}",
            {"lr": float(f"{config.lr * 3:.3g}")},
            f"a larger learning rate ({config.lr * 3:.3g}) for a slow descent",
        ),
    ]


# -- try ---------------------------------------------------------------------------------


def try_cures(
    config: TrainConfig,
    cures: Sequence[Cure],
    out: str | Path,
    *,
    device: str | torch.device = "cpu",
    progress: bool | None = False,
) -> list[Trial]:
    """Train the baseline and every cure with the same budget (steps, batch) and seed.

    Args:
        config: the baseline configuration.
        cures: the cures to try, each in ``out/<name>``.
        out: the folder for the runs (``out/baseline``, ...), overwritten.
        device: where to train.
        progress: show progress bars.

    Returns:
        One :class:`Trial` per arm, the baseline first.
    """
    out = Path(out)
    trials = []
    arms = [("baseline", {}, config)] + [(c.name, c.changes, c.apply(config)) for c in cures]
    for name, changes, arm_config in arms:
        started = time.perf_counter()
        result = train(arm_config, out / name.replace(":", "-"), overwrite=True, device=device, progress=progress)
        trials.append(Trial(name, changes, result, time.perf_counter() - started))
    return trials


def recommend(trials: Sequence[Trial]) -> Recommendation:
    """The arm to adopt: among cures that solve, the one that solves soonest; otherwise the
    best metric, if it beats the baseline."""
    baseline, cures = trials[0], list(trials[1:])
    solved = [t for t in cures if t.result.solved]
    if solved:
        best = min(solved, key=lambda t: (t.result.solved_at or t.result.steps, _loss_like(t)))
        before = "the baseline solved it too" if baseline.result.solved else "the baseline did not"
        return Recommendation(
            best,
            f"recommended: {best.name} ({_changes(best)}): it solved the task at step "
            f"{best.result.solved_at} of {best.result.steps}; {before} "
            f"({baseline.result.metric_name} {_value(baseline):.4g} -> {_value(best):.4g}).",
        )
    better = [t for t in cures if _loss_like(t) < _loss_like(baseline)]
    if not better:
        return Recommendation(None, "no cure did better than the baseline within this budget.")
    best = min(better, key=_loss_like)
    return Recommendation(
        best,
        f"recommended: {best.name} ({_changes(best)}): best {best.result.metric_name} "
        f"({_value(baseline):.4g} -> {_value(best):.4g}), though no arm solved the task within "
        f"{best.result.steps} steps; try more steps.",
    )


def _value(trial: Trial) -> float:
    return trial.result.metrics[trial.result.metric_name]


def _loss_like(trial: Trial) -> float:
    """The metric turned into lower-is-better, NaN last."""
    value = _value(trial)
    if not math.isfinite(value):
        return math.inf
    higher = trial.result.solved_threshold > trial.result.baseline
    return -value if higher else value


def _changes(trial: Trial) -> str:
    return ", ".join(f"{key}={value}" for key, value in trial.changes.items() if value is not None)


def format_trials(trials: Sequence[Trial]) -> str:
    """The A/B table: metric, solved or not, steps to solve, horizon after training."""
    metric = trials[0].result.metric_name
    lines = [
        f"{'arm':<16}{metric:>10}{'solved':>8}{'at step':>9}{'horizon':>9}{'non-finite':>12}{'seconds':>9}",
        "-" * 73,
    ]
    for trial in trials:
        result = trial.result
        lines.append(
            f"{trial.name:<16}{_value(trial):>10.4g}{'yes' if result.solved else 'no':>8}"
            f"{result.solved_at if result.solved_at is not None else '-':>9}{result.horizon:>9}"
            f"{result.nonfinite_steps:>12}{trial.seconds:>9.0f}"
        )
    return "\n".join(lines)


# -- all together ----------------------------------------------------------------------------


@final
@dataclass
class DoctorReport:
    """Everything :func:`doctor` found, ready for JSON."""

    config: TrainConfig
    examination: Examination
    cures: list[Cure]
    trials: list[Trial] = field(default_factory=list)
    recommendation: Recommendation | None = None

    def to_dict(self) -> dict[str, Any]:
        diagnosis = self.examination.diagnosis
        norms = self.examination.gradient_norms
        return {
            "config": self.config.to_dict(),
            "examined": self.examination.source,
            "verdict": diagnosis.verdict.to_dict(),
            "findings": findings(self.config, self.examination),
            "gradient_norms": {
                "count": norms.numel(),
                "median": float(norms.median()) if norms.numel() else None,
                "nonfinite_fraction": self.examination.nonfinite_fraction,
            },
            "cures": [dataclasses.asdict(cure) for cure in self.cures],
            "trials": [trial.to_dict() for trial in self.trials],
            "recommendation": None
            if self.recommendation is None
            else {
                "arm": None if self.recommendation.trial is None else self.recommendation.trial.name,
                "sentence": self.recommendation.sentence,
            },
        }

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n")


def doctor(
    config: TrainConfig,
    out: str | Path,
    *,
    run_dir: str | Path | None = None,
    tries: int = 0,
    device: str | torch.device = "cpu",
    progress: bool | None = False,
    on_prescription: Callable[[DoctorReport], None] | None = None,
) -> DoctorReport:
    """Examine, prescribe and, with ``tries > 0``, A/B-test the top ``tries`` cures.

    Writes ``out/doctor.json`` and the trial runs under ``out/``.

    Args:
        config: the configuration to examine (and the baseline arm of the A/B test).
        out: where ``doctor.json`` and the trial runs go.
        run_dir: examine this run's checkpoint and gradient log instead of a fresh model.
        tries: how many of the top cures to A/B-test; 0 only ranks them.
        device: where to train the trials.
        progress: show progress bars during the trials.
        on_prescription: called with the report once the cures are ranked, before the
            trials start (the command line prints them there).
    """
    if not isinstance(tries, int) or tries < 0:
        raise ValueError(f"tries must be a non-negative integer (cures to A/B-test), got {tries!r}")
    examination = examine(config, run_dir, seed=config.seed)
    report = DoctorReport(config, examination, prescribe(config, examination))
    if on_prescription is not None:
        on_prescription(report)
    if tries:
        report.trials = try_cures(config, report.cures[:tries], out, device=device, progress=progress)
        report.recommendation = recommend(report.trials)
    report.save(Path(out) / "doctor.json")
    return report
