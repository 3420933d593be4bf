"""bptt.Recurrent against torch.nn.RNN / GRU / LSTM on the same shapes: the cost of our cells.

A step is forward + MSE loss on all outputs + backward, float32, B = 32, I = 32. For each
cell, three variants run side by side in one process, interleaved repetition by repetition:

- ``torch``: the native module (torch.nn.RNN tanh, GRU, LSTM);
- ``fused``: :class:`bptt.Recurrent` with the same weights, no tap (runs torch's fused kernel
  on the cells' parameters through ``torch.func.functional_call``);
- ``unrolled``: the same Recurrent with a step hook registered (the Python loop that
  diagnostics use).

Reports median ms and the paired ratios fused/torch and unrolled/torch; writes
``benchmarks/results/bench_recurrent.json``.

Usage::

    python benchmarks/bench_recurrent.py [--quick] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
from functools import partial
from pathlib import Path

import torch
from bench_bptt import environment, time_step, write_report
from torch import nn

from bptt import Recurrent

CELLS = {"rnn-tanh": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
STEPS = (100, 500)
HIDDEN = (64, 256)
BATCH = 32
INPUT_SIZE = 32
RESULTS = Path(__file__).resolve().parent / "results" / "bench_recurrent.json"


def training_step(module: nn.Module, x: torch.Tensor, target: torch.Tensor) -> None:
    module.zero_grad(set_to_none=True)
    output, _ = module(x)
    nn.functional.mse_loss(output, target).backward()


def bench(cell: str, steps: int, hidden: int, device: torch.device, warmup: int, reps: int) -> dict:
    torch.manual_seed(0)
    ours = Recurrent.from_name(cell, INPUT_SIZE, hidden).to(device)
    theirs = CELLS[cell](INPUT_SIZE, hidden, device=device)
    with torch.no_grad():
        for name, parameter in ours.cells[0].named_parameters():
            getattr(theirs, f"{name}_l0").copy_(parameter)
    unrolled = Recurrent.from_name(cell, INPUT_SIZE, hidden).to(device)
    unrolled.load_state_dict(ours.state_dict())
    unrolled.register_step_hook(lambda layer, t, state: None)
    x = torch.randn(steps, BATCH, INPUT_SIZE, device=device)
    target = torch.randn(steps, BATCH, hidden, device=device)
    variants = {"torch": theirs, "fused": ours, "unrolled": unrolled}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for module in variants.values():
        for _ in range(warmup):
            training_step(module, x, target)
    names = list(variants)
    for rep in range(reps):
        for name in names[rep % 3 :] + names[: rep % 3]:
            times[name].append(time_step(partial(training_step, variants[name], x, target), device))

    def ratio(numerator: str) -> float:
        return statistics.median(a / b for a, b in zip(times[numerator], times["torch"], strict=True))

    return {
        "cell": cell, "T": steps, "H": hidden, "B": BATCH, "I": INPUT_SIZE, "reps": reps,
        "median_ms": {name: statistics.median(values) for name, values in times.items()},
        "ratios": {"fused/torch": ratio("fused"), "unrolled/torch": ratio("unrolled")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    device = torch.device(args.device)
    warmup, reps = (1, 3) if args.quick else (2, 11)
    print(f"one training step, float32, B={BATCH}, I={INPUT_SIZE}, device={device}, median of {reps} reps")
    print(
        f"{'cell':9} {'T':>4} {'H':>4} | {'torch':>8} {'fused':>8} {'unrolled':>9} ms | "
        f"{'fused/torch':>11} {'unrolled/torch':>14}"
    )
    rows = []
    for cell, steps, hidden in itertools.product(CELLS, STEPS, HIDDEN):
        row = bench(cell, steps, hidden, device, warmup, reps)
        ms, ratios = row["median_ms"], row["ratios"]
        print(
            f"{cell:9} {steps:>4} {hidden:>4} | {ms['torch']:8.2f} {ms['fused']:8.2f} {ms['unrolled']:9.2f}    | "
            f"{ratios['fused/torch']:11.2f} {ratios['unrolled/torch']:14.2f}",
            flush=True,
        )
        rows.append(row)
    report = {
        "benchmark": "bench_recurrent",
        **environment(device),
        "load_average": os.getloadavg()[0],
        "results": rows,
    }
    write_report(RESULTS, report)

if __name__ == "__main__":
    main()
