"""The scalar case: one hidden unit, h_t = f(w h_(t-1) + x_t), and dh_T/dh_k = prod w f'(z_i)."""

import os
from pathlib import Path

import torch
from matplotlib.figure import Figure

import bptt

ROOT = Path(__file__).resolve().parents[3]  # the repository
FIGURES = ROOT / os.environ.get("BPTT_FIGURES", "docs/figures/guide")
T = 60
torch.manual_seed(0)
noise = 0.1 * torch.randn(1, T, 1, dtype=torch.float64)  # one sequence of small inputs

CASES = [("relu", 0.9), ("relu", 1.1), ("tanh", 0.9), ("tanh", 1.1), ("tanh", 2.0)]
measured, closed, factors = {}, {}, {}
for nonlinearity, w in CASES:
    # x_t > 0 keeps the ReLU unit active
    x = noise.abs() if nonlinearity == "relu" else noise
    cell = bptt.ElmanCell(1, 1, nonlinearity).double()
    with torch.no_grad():  # z_t = w h_(t-1) + x_t: no biases, input weight 1
        cell.weight_hh.fill_(w), cell.weight_ih.fill_(1.0)
        cell.bias_ih.zero_(), cell.bias_hh.zero_()
    rnn = bptt.Recurrent([cell], batch_first=True)
    with rnn.recording_profile() as profile:  # the explicit BPTT records |dL/dh_k|
        h, _ = rnn(x)
        h[0, -1, 0].backward()  # L = h_T, so dL/dh_k = dh_T/dh_k
    # the closed form: z_t from the forward pass, then the product of w f'(z_i) for i > k
    h_before = torch.cat([torch.zeros(1), h[0, :-1, 0].detach()])
    step_factor = (w * cell.derivative(w * h_before + x[0, :, 0])).abs()  # |w f'(z_t)|
    key = f"{nonlinearity}, w = {w}"
    factors[key] = step_factor
    closed[key] = torch.cat([step_factor[1:].flip(0).cumprod(0).flip(0), torch.ones(1)])
    measured[key] = profile.norms()

print(
    f"{'unit':<16}{'mean |w f′|':>12}{'d = 10':>12}{'d = 50':>12}{'closed form':>13}{'horizon':>9}"
)
for key, m in measured.items():
    geometric = factors[key][1:].log().mean().exp()
    c = closed[key]
    horizon = bptt.effective_horizon(m)
    print(
        f"{key:<16}{geometric:>12.3f}{m[-11]:>12.3g}{m[-51]:>12.3g}{c[-51]:>13.3g}{horizon:>9}"
    )
    assert torch.allclose(m, c, rtol=1e-10), key  # the recorded profile is the product

figure = Figure(figsize=(11, 4.2))
left, right = figure.subplots(1, 2)
distance = torch.arange(T - 1, -1, -1)
for (key, m), color in zip(
    measured.items(), ["C0", "C1", "C2", "C3", "C4"], strict=True
):
    left.plot(distance, m, "o", ms=3, color=color, label=f"{key} (measured)")
    left.plot(distance, closed[key], "-", lw=1, color=color)
    right.plot(range(1, T), factors[key][1:], color=color, lw=1, label=key)
left.set_yscale("log")
left.set_xlabel("distance d = T − k (steps back from the loss)")
left.set_ylabel("|∂h_T / ∂h_k| (log)")
left.set_title("|∂h_T/∂h_k|: dots measured, lines Π |w f′(z_i)|")
left.legend(fontsize="small")
right.axhline(1, color="black", lw=0.8, ls="--")
right.set_yscale("log")
right.set_xlabel("step t")
right.set_ylabel("|w f′(z_t)| (log)")
right.set_title("The per-step factor: below 1 vanishes, above 1 explodes")
right.legend(fontsize="small")
figure.tight_layout()
FIGURES.mkdir(parents=True, exist_ok=True)
figure.savefig(FIGURES / "scalar.png", dpi=100)
