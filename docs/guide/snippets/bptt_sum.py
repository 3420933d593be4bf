"""Backpropagation through time: dL/dW_h as a sum of contributions from every time distance."""

import os
from pathlib import Path

import torch
from matplotlib.figure import Figure

import bptt
from bptt.tasks import AddingTask

ROOT = Path(__file__).resolve().parents[3]  # the repository
FIGURES = ROOT / os.environ.get("BPTT_FIGURES", "docs/figures/guide")
T = 50
STEPS = 100 if os.environ.get("BPTT_GUIDE_QUICK") else 600
task = AddingTask(T)  # the target is the sum of two marked values among T
probe = task.sample(256, torch.Generator().manual_seed(1))  # a fixed batch to diagnose


def diagnose(model):
    return bptt.diagnose(
        model, probe.inputs, probe.targets, lambda out, y: task.loss(out, probe)
    )


diagnoses = {}
for cell in ("rnn-tanh", "gru"):
    torch.manual_seed(0)
    model = bptt.build_model(
        bptt.TrainConfig(task="adding", length=T, cell=cell, hidden=32), task
    )
    diagnoses[cell, 0] = diagnose(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    data = torch.Generator().manual_seed(0)
    for _ in range(STEPS):  # a short real run: Adam on fresh batches
        batch = task.sample(64, data)
        loss = task.loss(model(batch.inputs), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    diagnoses[cell, STEPS] = diagnose(model)

BINS = [(0, 0), (1, 4), (5, 9), (10, 19), (20, T - 1)]
header = "".join(f"{f'd {a}–{b}' if a < b else f'd = {a}':>10}" for a, b in BINS)
print(f"{'model':<10}{'step':>6}{'loss':>8}{'horizon':>9}{header}{'sum':>6}")
for (cell, step), diagnosis in diagnoses.items():
    layer = diagnosis.layers[0]
    # share of dL/dW_h from dependencies d steps long
    share = layer.gradient_by_distance
    cells = "".join(f"{float(share[a : b + 1].sum()):>10.3f}" for a, b in BINS)
    print(
        f"{cell:<10}{step:>6}{diagnosis.loss:>8.3f}{layer.horizon:>9}{cells}{float(share.sum()):>6.2f}"
    )

figure = Figure(figsize=(11, 4.2))
left, right = figure.subplots(1, 2)
for ((cell, step), diagnosis), style in zip(
    diagnoses.items(), ["C0:", "C0-", "C1:", "C1-"], strict=True
):
    layer = diagnosis.layers[0]
    # ||δ_(T-d)|| / ||δ_T||
    reach = layer.profile_by_distance / layer.profile_by_distance[0]
    label = f"{cell}, step {step} (horizon {layer.horizon})"
    left.plot(reach, style, label=label)
    left.plot(layer.spans, layer.product_norms, style[:2] + "o", ms=3)
    right.plot(layer.gradient_by_distance.cumsum(0), style, label=label)
left.axhline(1e-3, color="gray", lw=0.8, ls="--")
left.set_yscale("log")
left.set_xlabel("distance d from the loss step (steps back)")
left.set_ylabel("relative size (log)")
left.set_title("Lines: ‖δ_(T−d)‖ / ‖δ_T‖;  dots: σ_max(J_T ⋯ J_(T−d+1))")
left.legend(fontsize="small")
right.set_xlabel("distance d (steps)")
right.set_ylabel("cumulative share of ∂L/∂W_h")
right.set_title("∂L/∂W_h from dependencies of length ≤ d")
right.legend(fontsize="small", loc="lower right")
figure.tight_layout()
FIGURES.mkdir(parents=True, exist_ok=True)
figure.savefig(FIGURES / "bptt_sum.png", dpi=100)
