"""The same problem in depth: bptt.diagnose on a 100-layer MLP, layer by layer."""

import os
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import nn

import bptt

ROOT = Path(__file__).resolve().parents[3]  # the repository
FIGURES = ROOT / os.environ.get("BPTT_FIGURES", "docs/figures/guide")
DEPTH, WIDTH = 100, 64
# 100 layers of shrinking gradients underflow float32
torch.set_default_dtype(torch.float64)
generator = torch.Generator().manual_seed(0)
x = torch.randn(128, WIDTH, generator=generator)
y = torch.randn(128, 1, generator=generator)


def mlp(activation, init=None):
    """100 blocks Linear(64, 64) -> activation, then a linear read-out; torch's default init
    (uniform in ±1/√64, ‖W‖₂ ≈ 1.1) unless ``init`` fills each weight."""
    torch.manual_seed(0)
    blocks = []
    for _ in range(DEPTH):
        linear = nn.Linear(WIDTH, WIDTH)
        if init is not None:
            init(linear.weight)
            nn.init.zeros_(linear.bias)
        blocks.append(nn.Sequential(linear, activation()))
    return nn.Sequential(*blocks, nn.Linear(WIDTH, 1))


MODELS = {
    "tanh, default init": mlp(nn.Tanh),
    "sigmoid, default init": mlp(nn.Sigmoid),
    "tanh, orthogonal": mlp(nn.Tanh, nn.init.orthogonal_),
    "tanh, orthogonal × 2": mlp(nn.Tanh, lambda w: nn.init.orthogonal_(w, gain=2.0)),
    "ReLU, He init": mlp(
        nn.ReLU, lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu")
    ),
}
# the recurrent counterpart: a tanh RNN of the same width, default init, 100 steps
torch.manual_seed(0)
rnn = bptt.Recurrent.from_name("rnn-tanh", WIDTH, WIDTH, batch_first=True)
sequence = torch.randn(128, DEPTH, WIDTH, generator=generator)
recurrent = bptt.diagnose(
    rnn, sequence, y, lambda out, t: (out[0][:, -1, :1] - t).pow(2).mean()
)

print(
    f"{'model':<24}{'horizon':>8}{'rate/layer':>11}{'med σ(J_l)':>11}{'‖δ_1‖/‖δ_top‖':>15}  verdict"
)
profiles = {}
for name, model in MODELS.items():
    # an nn.Sequential: diagnosed along its depth
    diagnosis = bptt.diagnose(model, x, y)
    # the outputs of the 100 blocks, the read-out left out
    profile = diagnosis.profile[:DEPTH]
    profiles[name] = profile / profile[-1]
    ratio = float(profile[0] / profile[-1])
    print(
        f"{name:<24}{diagnosis.horizon:>8}{diagnosis.decay_rate:>11.3f}{diagnosis.median_step_norm:>11.3f}"
        f"{ratio:>15.3g}  {diagnosis.verdict.kind}"
    )
layer = recurrent.layers[0]
reach = layer.profile_by_distance.flip(0)
profiles["tanh RNN, 100 steps (time)"] = reach / reach[-1]
ratio = float(reach[0] / reach[-1])
print(
    f"{'tanh RNN, 100 steps':<24}{layer.horizon:>8}{layer.decay_rate:>11.3f}{layer.median_step_norm:>11.3f}"
    f"{ratio:>15.3g}  {layer.verdict.kind}"
)

figure = Figure(figsize=(8, 4.8))
axis = figure.subplots()
for name, profile in profiles.items():
    style = "k--" if "RNN" in name else "-"
    axis.plot(torch.arange(DEPTH - 1, -1, -1), profile, style, label=name)
axis.axhline(1e-3, color="gray", lw=0.8, ls=":")
axis.set_yscale("log")
axis.set_xlabel("layers below the top (MLP)  /  steps back from the loss (RNN)")
axis.set_ylabel("‖∂L/∂a_l‖ relative to the top layer (log)")
axis.set_title("A 100-layer MLP's gradient by depth, and a tanh RNN's by time")
axis.legend(fontsize="small")
figure.tight_layout()
FIGURES.mkdir(parents=True, exist_ok=True)
figure.savefig(FIGURES / "feedforward.png", dpi=100)
