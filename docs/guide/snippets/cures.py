"""The cures, one at a time, on the same failing set-up: a tanh RNN on the adding problem."""

import math
import os
import tempfile
from pathlib import Path

import torch
from matplotlib.figure import Figure

import bptt
from bptt.remedies import NormClipper, ValueClipper
from bptt.rundir import read_jsonl
from bptt.tasks import AddingTask

ROOT = Path(__file__).resolve().parents[3]  # the repository
FIGURES = ROOT / os.environ.get("BPTT_FIGURES", "docs/figures/guide")
QUICK = bool(os.environ.get("BPTT_GUIDE_QUICK"))
STEPS = 50 if QUICK else 1000
T = 50
CURES = {  # each row changes one thing in the baseline: tanh RNN, 64 units, Adam 3e-3
    "baseline (tanh RNN)": {},
    "clip norm 1": {"clip": "norm:1"},
    "clip value 25": {"clip": "value:25"},
    "orthogonal init": {"init": "orthogonal"},
    "Pascanu regulariser": {"regularizer": "pascanu:1"},
    "ReLU": {"cell": "rnn-relu"},
    "IRNN (lr 3e-4, clip 1)": {"cell": "irnn", "lr": 3e-4, "clip": "norm:1"},
    "residual in time": {"cell": "residual-rnn"},
    "GRU": {"cell": "gru"},
    "LSTM": {"cell": "lstm"},
}
task = AddingTask(T)
probe = task.sample(256, torch.Generator().manual_seed(1))
rows = {}
print(f"T = {T}, {STEPS} steps")
print(
    f"{'cure':<24}{'horizon':>8}{'med σ(J)':>9}{'e^λ₁':>7}{'val MSE':>9}{'solved at':>10}{'h after':>8}"
)
for name, options in CURES.items():
    config = bptt.TrainConfig(
        task="adding", length=T, hidden=64, steps=STEPS, eval_every=50, eval_size=500,
        diagnose_every=0, **{"cell": "rnn-tanh", **options},
    )  # fmt: skip
    torch.manual_seed(config.seed)
    fresh = bptt.build_model(config, task)  # what the cure does before any training
    layer = bptt.diagnose(
        fresh, probe.inputs, probe.targets, lambda out, y: task.loss(out, probe)
    ).layers[0]
    with tempfile.TemporaryDirectory() as out:
        result = bptt.train(config, out, overwrite=True, progress=False)
        curve = [
            (r["step"], r["mse"])
            for r in read_jsonl(Path(out) / "metrics.jsonl")
            if r["split"] == "validation"
        ]
    growth = math.exp(layer.lyapunov[0])
    rows[name] = layer, growth, result, curve
    solved = "-" if result.solved_at is None else str(result.solved_at)
    print(
        f"{name:<24}{layer.horizon:>8}{layer.median_step_norm:>9.3f}{growth:>7.3f}"
        f"{result.metrics['mse']:>9.3g}{solved:>10}{result.horizon:>8}"
    )

# clipping on an exploding gradient: a ReLU RNN with W_h = 1.5 I, one batch
torch.manual_seed(0)
exploding = bptt.build_model(
    bptt.TrainConfig(task="adding", length=T, cell="irnn", hidden=64), task
)
with torch.no_grad():
    exploding.recurrent.cells[0].weight_hh.mul_(1.5)
print(f"\nclipping one exploding gradient (ReLU RNN, W_h = 1.5 I, T = {T})")
print(f"{'rule':<16}{'norm before':>12}{'norm after':>11}{'cosine to raw':>14}")
for rule, clipper in {
    "norm at 1": NormClipper(1.0),
    "value at 25": ValueClipper(25.0),
}.items():
    exploding.zero_grad()
    task.loss(exploding(probe.inputs), probe).backward()
    raw = torch.cat([p.grad.flatten() for p in exploding.parameters()])
    event = clipper(exploding.parameters())
    clipped = torch.cat([p.grad.flatten() for p in exploding.parameters()])
    cosine = float(raw @ clipped / (raw.norm() * clipped.norm()))
    print(f"{rule:<16}{event.norm:>12.3g}{float(clipped.norm()):>11.3g}{cosine:>14.3f}")

figure = Figure(figsize=(13, 4.4))
profile_axis, spectra_axis, curve_axis = figure.subplots(1, 3)
colors = {name: f"C{i}" for i, name in enumerate(CURES)}
for name, (layer, _growth, _result, curve) in rows.items():
    reach = layer.profile_by_distance / layer.profile_by_distance[0]
    if not name.startswith("clip"):  # clipping leaves a fresh model unchanged
        profile_axis.plot(reach, color=colors[name], label=name)
    steps, mse = zip(*curve, strict=True)
    curve_axis.plot(steps, mse, color=colors[name], lw=1, label=name)
names = list(rows)
spectra_axis.barh(names, [rows[n][1] for n in names], color=[colors[n] for n in names])
spectra_axis.axvline(1, color="black", lw=0.8)
spectra_axis.invert_yaxis()
profile_axis.axhline(1e-3, color="gray", ls=":", lw=0.8)
profile_axis.set(yscale="log", ylim=(1e-12, 1e3), xlabel="distance d from the loss step (steps back)",
                 ylabel="‖δ_(T−d)‖ / ‖δ_T‖ (log)", title="Profile at initialisation")  # fmt: skip
spectra_axis.set(xscale="log", xlabel="e^λ₁: per-step growth of J_t ⋯ J_1 (log)",
                 title="Top Lyapunov exponent at initialisation")  # fmt: skip
curve_axis.axhline(task.baseline, color="gray", ls="--", lw=0.8, label="baseline 1/6")
curve_axis.axhline(
    task.solved_threshold, color="green", ls=":", lw=0.8, label="solved (0.01)"
)
curve_axis.set(yscale="log", xlabel="optimizer step", ylabel="validation MSE (log)",
               title=f"Adding problem, T = {T}: training")  # fmt: skip
profile_axis.legend(fontsize="x-small")
curve_axis.legend(fontsize="x-small", ncol=2, loc="lower left")
figure.tight_layout()
FIGURES.mkdir(parents=True, exist_ok=True)
figure.savefig(FIGURES / "cures.png", dpi=100)
