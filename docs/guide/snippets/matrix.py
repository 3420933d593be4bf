"""The matrix case: J_t = diag(f'(z_t)) W_h, and its largest singular value decides."""

import math
import os
from pathlib import Path

import torch
from matplotlib.figure import Figure

import bptt
from bptt.init import orthogonal_

ROOT = Path(__file__).resolve().parents[3]  # the repository
FIGURES = ROOT / os.environ.get("BPTT_FIGURES", "docs/figures/guide")
T, B, I, H = 50, 16, 4, 64
# ||W_h||_2 = s: W_h = s Q, Q orthogonal
SCALES = [0.5, 0.8, 1.0, 1.25, 1.6, 2.0, 3.0, 4.0]
NONLINEARITIES = {"tanh": 1.0, "sigmoid": 0.25, "relu": 1.0}  # and γ = max f'
generator = torch.Generator().manual_seed(0)
# float64: ReLU at s = 4 grows ~1e16
x = torch.randn(B, T, I, generator=generator, dtype=torch.float64)
# L = <h_T, direction>, many-to-one
direction = torch.randn(B, H, generator=generator, dtype=torch.float64)


def loss_fn(output, targets):
    return (output[0][:, -1] * targets).sum()


results = {name: [] for name in NONLINEARITIES}
print(
    f"{'f':<9}{'‖W_h‖₂':>7}{'med max f′':>11}{'med σ(J_t)':>11}{'bound γs':>9}{'e^λ₁':>8}{'horizon':>8}"
)
for name, gamma in NONLINEARITIES.items():
    for s in SCALES:
        torch.manual_seed(0)
        cell = bptt.ElmanCell(I, H, name).double()
        orthogonal_(cell.weight_hh, gain=s, generator=torch.Generator().manual_seed(1))
        rnn = bptt.Recurrent([cell], batch_first=True)
        layer = bptt.diagnose(rnn, x, direction, loss_fn).layers[0]
        factor = math.exp(layer.lyapunov[0])  # per-step growth of the Jacobian products
        results[name].append((layer.median_step_norm, factor))
        print(
            f"{name:<9}{s:>7.2f}{layer.derivative_norm:>11.3f}{layer.median_step_norm:>11.3f}"
            f"{gamma * s:>9.2f}{factor:>8.3f}{layer.horizon:>8}"
        )

figure = Figure(figsize=(11, 4.2))
left, right = figure.subplots(1, 2)
z = torch.linspace(-6, 6, 241)
left.plot(z, 1 - z.tanh().square(), label="tanh′(z), max 1 at z = 0")
left.plot(z, z.sigmoid() * (1 - z.sigmoid()), label="sigmoid′(z), max 1/4")
left.plot(z, (z > 0).float(), label="ReLU′(z): 1 or 0")
left.set_xlabel("pre-activation z")
left.set_ylabel("f′(z)")
left.set_title("The derivative on the diagonal of J_t")
left.legend(fontsize="small")
for (name, _gamma), color in zip(
    NONLINEARITIES.items(), ["C0", "C1", "C2"], strict=True
):
    step, factor = zip(*results[name], strict=True)
    right.plot(SCALES, factor, "o-", color=color, label=f"{name}: e^λ₁ (products)")
    right.plot(
        SCALES, step, "x--", color=color, lw=0.8, label=f"{name}: median σ_max(J_t)"
    )
right.axhline(1, color="black", lw=0.8, ls=":")
right.set_xscale("log")
right.set_yscale("log")
right.set_xticks(SCALES, labels=[f"{s:g}" for s in SCALES], minor=False)
right.set_xticks([], minor=True)
right.set_yticks(
    [0.125, 0.25, 0.5, 1, 2, 4], labels=["1/8", "1/4", "1/2", "1", "2", "4"]
)
right.set_yticks([], minor=True)
right.set_xlabel("‖W_h‖₂ (W_h = s · orthogonal)")
right.set_ylabel("per-step factor (log)")
right.set_title("What one step stretches vs what the product keeps")
right.legend(fontsize="x-small")
figure.tight_layout()
FIGURES.mkdir(parents=True, exist_ok=True)
figure.savefig(FIGURES / "matrix.png", dpi=100)
