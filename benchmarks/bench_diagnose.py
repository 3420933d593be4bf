"""What a diagnosis costs, in plain training steps measured side by side in one run.

For each model (bptt tanh RNN, bptt LSTM, a user's fused torch.nn.LSTM) on the adding
problem at H=256, T=200, B=32 (defaults), the median time of:

- ``step``: one plain training step (forward, backward, Adam step) — the unit;
- ``profile``: :func:`bptt.gradient_profiles` (||dL/dh_k|| of every layer);
- ``diagnose``: the full :func:`bptt.diagnose` (profile, weight-gradient decomposition,
  sigma_max(J_t) at every step, product norms, top-8 Lyapunov exponents);
- ``retain_grad``: the naive profile: unroll with ``retain_grad()`` on every h_t;
- ``per_k``: the naiver one: one backward pass per step k (T passes; timed once);

and ``watch``: 2 x 200 training steps with ``bptt.watch(every=50)`` against 2 x 200
without, alternated. The variants of a model are timed in turn within each repetition.

    python benchmarks/bench_diagnose.py            # writes benchmarks/results/bench_diagnose.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from bench_bptt import environment, write_report
from torch import Tensor, nn

import bptt
from bptt.tasks import get_task


class TorchLSTMModel(nn.Module):
    """A user's model: a fused nn.LSTM and a linear read-out of the last step."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(2, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.lstm(x)[0][:, -1])


def make_model(kind: str, length: int, hidden: int) -> nn.Module:
    if kind == "torch-lstm":
        return TorchLSTMModel(hidden)
    config = bptt.TrainConfig(task="adding", length=length, cell=kind, hidden=hidden)
    return bptt.build_model(config, get_task("adding", length))


def interleaved_ms(calls: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Median milliseconds of each call, timed in turn within every repetition.

    Interleaving puts every variant under the same background load, so that the ratios
    hold on a shared, noisy machine even when the absolute times drift.
    """
    for call in calls.values():  # warm-up
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(reps):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(1e3 * (time.perf_counter() - start))
    return {f"{name}_ms": statistics.median(values) for name, values in times.items()}


def naive_retain_grad(model: nn.Module, cell: nn.Module, x: Tensor, y: Tensor, head: nn.Module) -> Tensor:
    """||dL/dh_k|| by an unrolled loop with retain_grad() on every state, then backward()."""
    steps = x.shape[1]
    state = cell.init_state(x.shape[0])
    hiddens = []
    for t in range(steps):
        state = cell.step(x[:, t], state)
        hidden = cell.hidden(state)
        hidden.retain_grad()
        hiddens.append(hidden)
    loss = nn.functional.mse_loss(head(torch.stack(hiddens, 1), None), y)
    model.zero_grad()
    loss.backward()
    return torch.stack([h.grad.norm() for h in hiddens])


def naive_per_k(cell: nn.Module, x: Tensor, y: Tensor, head: nn.Module) -> Tensor:
    """||dL/dh_k|| by one backward pass per step k."""
    steps = x.shape[1]
    state = cell.init_state(x.shape[0])
    hiddens = []
    for t in range(steps):
        state = cell.step(x[:, t], state)
        hiddens.append(cell.hidden(state))
    loss = nn.functional.mse_loss(head(torch.stack(hiddens, 1), None), y)
    return torch.stack(
        [torch.autograd.grad(loss, h, retain_graph=True)[0].norm() for h in hiddens]
    )


def bench_model(kind: str, length: int, hidden: int, batch: int, reps: int) -> dict[str, float]:
    torch.manual_seed(0)
    task = get_task("adding", length)
    data = task.sample(batch, torch.Generator().manual_seed(0))
    model = make_model(kind, length, hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, y = data.inputs, data.targets

    def loss_fn(output: Tensor, targets: Tensor) -> Tensor:
        return nn.functional.mse_loss(output, targets)

    def step() -> None:
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()

    calls: dict[str, Callable[[], object]] = {
        "step": step,
        "profile": lambda: bptt.gradient_profiles(model, x, y, loss_fn),
        "diagnose": lambda: bptt.diagnose(model, x, y, loss_fn),
    }
    if kind != "torch-lstm":
        cell, head = model.recurrent.cells[0], model.head
        calls["retain_grad"] = lambda: naive_retain_grad(model, cell, x, y, head)
    row = interleaved_ms(calls, reps)
    if kind != "torch-lstm":
        start = time.perf_counter()
        naive_per_k(cell, x, y, head)  # T backward passes: timed once
        row["per_k_ms"] = 1e3 * (time.perf_counter() - start)
    for name in ("profile", "diagnose", "retain_grad", "per_k"):
        if f"{name}_ms" in row:
            row[f"{name}/step"] = row[f"{name}_ms"] / row["step_ms"]
    return row


def bench_watch(length: int, hidden: int, batch: int, steps: int, every: int) -> dict[str, float]:
    """Seconds for ``steps`` training steps of an LSTM, with and without watching."""
    task = get_task("adding", length)

    def loop(watched: bool) -> float:
        torch.manual_seed(0)
        model = make_model("lstm", length, hidden)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        generator = torch.Generator().manual_seed(0)
        loss_fn = nn.functional.mse_loss
        with bptt.watch(model, every=every if watched else 0, loss_fn=loss_fn) as watcher:
            start = time.perf_counter()
            for index in range(1, steps + 1):
                data = task.sample(batch, generator)
                optimizer.zero_grad()
                loss = loss_fn(model(data.inputs), data.targets)
                loss.backward()
                if not watched or watcher.observe(index, loss, data.inputs, data.targets):
                    optimizer.step()
            return time.perf_counter() - start

    plain = watched = 0.0
    for _ in range(2):  # alternate, so that both see the same background load
        plain += loop(False)
        watched += loop(True)
    steps *= 2
    diagnoses = steps // every
    per_diagnosis_steps = (watched - plain) / diagnoses / (plain / steps)
    return {
        "plain_s": plain,
        "watched_s": watched,
        "watched/plain": watched / plain,
        "diagnosis_in_steps": per_diagnosis_steps,
        "implied_overhead_every_500": per_diagnosis_steps / 500,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--models", default="rnn-tanh,lstm,torch-lstm")
    parser.add_argument("--watch-steps", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_diagnose.json"))
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    rows = {}
    for kind in args.models.split(","):
        rows[kind] = bench_model(kind, args.length, args.hidden, args.batch, args.reps)
        ratios = "  ".join(f"{k} {v:.2f}x" for k, v in rows[kind].items() if "/" in k)
        print(f"{kind:11} step {rows[kind]['step_ms']:8.1f} ms   {ratios}")
    watch = bench_watch(args.length, args.hidden, args.batch, args.watch_steps, every=50)
    print(
        f"watch every 50 steps: 2 x {args.watch_steps} LSTM steps in {watch['watched_s']:.1f} s "
        f"vs {watch['plain_s']:.1f} s plain: {watch['watched/plain']:.3f}x; one scheduled "
        f"diagnosis costs {watch['diagnosis_in_steps']:.1f} steps, so every 500 steps "
        f"(bptt train's default) adds {100 * watch['implied_overhead_every_500']:.1f} %"
    )
    write_report(
        args.out,
        {
            "shape": {"hidden": args.hidden, "length": args.length, "batch": args.batch},
            "models": rows,
            "watch_every_50": watch,
            "environment": environment(torch.device("cpu")),
        },
    )


if __name__ == "__main__":
    main()
