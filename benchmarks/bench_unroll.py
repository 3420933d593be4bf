"""The unrolled loop's cost per step against the sequence length: flat in T, or quadratic.

``bptt.Recurrent`` runs a Python loop over the steps whenever something taps them (a step
hook, the diagnosis tape, a regulariser, a cell without a fused kernel). Taking the step
inputs as ``x[t]`` from a ``(T, B, I)`` tensor that requires grad (every layer above the
first) makes each step's backward allocate and add a zero tensor of the whole input's
size, so the backward costs O(T^2 B I); ``x.unbind(0)`` gives all steps one backward.

A step is forward + loss on all outputs + backward, float32, of
``Recurrent.from_name("rnn-tanh", 64, 128, L, batch_first=True)`` with a step hook (which
forces the unrolled loop), B = 64. Two variants run side by side, interleaved repetition by
repetition, on the same cells:

- ``recurrent``: :class:`bptt.Recurrent` itself;
- ``indexed``: a local copy of the loop as it was before the fix, stepping on ``x[t]``.

Reports the median microseconds per time step (one training step's time / T); writes
``benchmarks/results/bench_unroll.json``.

Usage::

    python benchmarks/bench_unroll.py [--quick] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from bench_bptt import environment, time_step, write_report
from torch import Tensor

from bptt import Recurrent

STEPS = (250, 500, 1000, 2000)
LAYERS = (1, 2)
BATCH = 64
INPUT_SIZE = 64
HIDDEN = 128
RESULTS = Path(__file__).resolve().parent / "results" / "bench_unroll.json"


def indexed_loop(model: Recurrent, x: Tensor) -> Tensor:
    """The unrolled stack as ``Recurrent._unroll`` ran it before the fix (``x[t]``)."""
    x = x.transpose(0, 1)
    for cell in model.cells:
        state = cell.init_state(x.shape[1], device=x.device, dtype=x.dtype)
        outputs = []
        for t in range(x.shape[0]):
            state = cell.step(x[t], state)
            outputs.append(cell.hidden(state))
        x = torch.stack(outputs)
    return x.transpose(0, 1)


def recurrent(model: Recurrent, x: Tensor) -> Tensor:
    return model(x)[0]


def training_step(forward: Callable[[Tensor], Tensor], model: Recurrent, x: Tensor) -> None:
    model.zero_grad(set_to_none=True)
    forward(x).square().mean().backward()


def bench(steps: int, layers: int, device: torch.device, warmup: int, reps: int) -> dict:
    torch.manual_seed(0)
    model = Recurrent.from_name("rnn-tanh", INPUT_SIZE, HIDDEN, layers, batch_first=True).to(device)
    model.register_step_hook(lambda layer, t, state: None)
    x = torch.randn(BATCH, steps, INPUT_SIZE, device=device)
    with torch.no_grad():
        torch.testing.assert_close(recurrent(model, x), indexed_loop(model, x))
    variants = {"recurrent": partial(recurrent, model), "indexed": partial(indexed_loop, model)}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for forward in variants.values():
        for _ in range(warmup):
            training_step(forward, model, x)
    names = list(variants)
    for rep in range(reps):
        for name in names[rep % 2 :] + names[: rep % 2]:
            times[name].append(time_step(partial(training_step, variants[name], model, x), device))
    return {
        "T": steps, "L": layers, "B": BATCH, "I": INPUT_SIZE, "H": HIDDEN, "reps": reps,
        "median_us_per_step": {name: 1e3 * statistics.median(values) / steps for name, values in times.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T = 250, 500 and one repetition (a smoke run)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    device = torch.device(args.device)
    warmup, reps = (0, 1) if args.quick else (1, 3)
    steps = STEPS[:2] if args.quick else STEPS
    print(
        f"one training step of rnn-tanh unrolled, float32, B={BATCH}, I={INPUT_SIZE}, H={HIDDEN}, "
        f"device={device}, median of {reps} reps"
    )
    print(f"{'L':>2} {'T':>5} | {'recurrent':>10} {'indexed':>10} us/step | {'indexed/recurrent':>17}")
    rows = []
    for layers, length in itertools.product(LAYERS, steps):
        row = bench(length, layers, device, warmup, reps)
        us = row["median_us_per_step"]
        print(
            f"{layers:>2} {length:>5} | {us['recurrent']:10.0f} {us['indexed']:10.0f}         | "
            f"{us['indexed'] / us['recurrent']:17.2f}",
            flush=True,
        )
        rows.append(row)
    report = {
        "benchmark": "bench_unroll",
        **environment(device),
        "load_average": os.getloadavg()[0],
        "results": rows,
    }
    write_report(RESULTS, report)


if __name__ == "__main__":
    main()
