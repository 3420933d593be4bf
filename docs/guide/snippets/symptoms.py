"""Symptoms: what vanishing and exploding gradients look like while training."""

import os
import tempfile
from pathlib import Path

import torch
from matplotlib.figure import Figure

import bptt
from bptt.rundir import read_jsonl
from bptt.tasks import AddingTask

ROOT = Path(__file__).resolve().parents[3]  # the repository
FIGURES = ROOT / os.environ.get("BPTT_FIGURES", "docs/figures/guide")
STEPS = 100 if os.environ.get("BPTT_GUIDE_QUICK") else 300
T = 200
RUNS = {  # the adding problem at T = 200, 64 units, batch 64, seed 0
    "tanh RNN, Adam 3e-3": {"cell": "rnn-tanh"},
    "IRNN, SGD 0.003": {"cell": "irnn", "optimizer": "sgd", "lr": 0.003},
    "IRNN, SGD 0.1": {"cell": "irnn", "optimizer": "sgd", "lr": 0.1},
}
task = AddingTask(T)
probe = task.sample(256, torch.Generator().manual_seed(1))
curves, profiles = {}, {}
print(
    f"{'run':<22}{'median ‖g‖':>11}{'max ‖g‖':>10}{'spikes':>7}{'max loss':>10}"
    f"{'non-finite':>11}{'val MSE':>9}{'horizon':>8}"
)
for name, options in RUNS.items():
    config = bptt.TrainConfig(
        task="adding", length=T, hidden=64, steps=STEPS, eval_every=STEPS, eval_size=500,
        diagnose_every=0, **options,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as out:
        result = bptt.train(config, out, overwrite=True, progress=False)
        log = [
            r for r in read_jsonl(Path(out) / "metrics.jsonl") if r["split"] == "train"
        ]
        model = bptt.build_model(config, task)
        model.load_state_dict(torch.load(Path(out) / "checkpoint.pt")["model"])
    norms = torch.tensor([r["grad_norm"] for r in log])
    losses = torch.tensor([r["loss"] for r in log])
    curves[name] = norms, losses
    finite = norms[torch.isfinite(norms)]
    # steps with ‖g‖ > 10 × its median
    spikes = int((finite > 10 * finite.median()).sum())
    max_loss = losses[torch.isfinite(losses)].max()
    diagnosis = bptt.diagnose(
        model, probe.inputs, probe.targets, lambda out, y: task.loss(out, probe)
    )
    if diagnosis.layers:
        profiles[name] = diagnosis.layers[0].profile_by_distance
    horizon = diagnosis.layers[0].horizon if diagnosis.layers else "-"
    print(
        f"{name:<22}{finite.median():>11.3g}{finite.max():>10.3g}{spikes:>7}{max_loss:>10.3g}"
        f"{result.nonfinite_steps:>11}{result.metrics['mse']:>9.3g}{horizon:>8}"
    )
    if not diagnosis.layers:
        print(f"    {name}: {diagnosis.verdict.explanation}")

figure = Figure(figsize=(13, 4.2))
norm_axis, loss_axis, profile_axis = figure.subplots(1, 3)
for (name, (norms, losses)), color in zip(
    curves.items(), ["C0", "C1", "C3"], strict=True
):
    steps = torch.arange(1, len(norms) + 1)
    bad = ~torch.isfinite(losses)
    norm_axis.plot(steps, norms, color=color, lw=0.8, label=name)
    loss_axis.plot(steps, losses, color=color, lw=0.8, label=name)
    if bad.any():  # non-finite steps: the guard skipped the update
        loss_axis.plot(steps[bad], torch.full((int(bad.sum()),), 0.97), "x", ms=3, color=color,
                       transform=loss_axis.get_xaxis_transform(), label=f"{name}: loss NaN/Inf")  # fmt: skip
for name, reach in profiles.items():
    color = "C0" if name.startswith("tanh") else "C1"
    profile_axis.plot(reach / reach[0], color=color, label=name)
loss_axis.axhline(
    task.baseline, color="gray", ls="--", lw=0.8, label="predict the mean (1/6)"
)
norm_axis.set(yscale="log", xlabel="optimizer step", ylabel="global gradient norm (log)",
              title="Gradient norm before clipping")  # fmt: skip
loss_axis.set(yscale="log", xlabel="optimizer step", ylabel="training MSE (log)",
              title="Training loss")  # fmt: skip
profile_axis.set(yscale="log", xlabel="distance d from the loss step (steps back)",
                 ylabel="‖δ_(T−d)‖ / ‖δ_T‖ (log)", title="After training: how far back it reaches")  # fmt: skip
for axis in (norm_axis, loss_axis, profile_axis):
    axis.legend(fontsize="x-small")
figure.tight_layout()
FIGURES.mkdir(parents=True, exist_ok=True)
figure.savefig(FIGURES / "symptoms.png", dpi=100)
