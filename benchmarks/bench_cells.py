"""One training step of each cell against torch's fused nn.LSTM, on the adding problem's shapes.

A step is forward + a many-to-one loss (a linear read-out of the last step's output, MSE
against a target) + backward, float32, T = 1000, B = 50, H = 128, I = 2 (the adding problem
as the LEM and coRNN papers train it). The reference is :class:`torch.nn.LSTM` of the same
hidden size (``lstm-fused``). Every other name is built with
``bptt.Recurrent.from_name(name, I, H)`` and runs

- ``default``: what :class:`bptt.Recurrent` picks for it (torch's fused kernel, the cell's
  explicit BPTT, or the unrolled loop when it has neither);
- ``unrolled``: for LEM and coRNN (all names with ``--unrolled``), the same model with a
  step hook registered: the Python loop differentiated by autograd, what the diagnostics
  run, and what the default path was before the explicit BPTT of
  :mod:`bptt.autograd.oscillators`.

Names that ``from_name`` does not know are skipped. All variants run side by side in one
process, interleaved repetition by repetition; each ratio is the median over
repetitions of the variant's time over the reference's time in the same repetition (robust
to load drifting on a shared machine). It runs on one thread by default: on a machine whose
cores other processes share, torch's thread pool spins and a step can take ten times longer.
Writes ``benchmarks/results/bench_cells.json`` (``bench_cells_quick.json`` with ``--quick``).

Usage::

    python benchmarks/bench_cells.py [NAME ...] [--quick] [--unrolled] [--steps T] [--threads N]
                                     [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from bench_bptt import environment, time_step, write_report
from torch import Tensor, nn

from bptt import Recurrent

REFERENCE = "lstm-fused"
NAMES = (REFERENCE, "lem", "cornn", "exprnn", "exprnn-cayley", "indrnn")
BATCH = 50
HIDDEN = 128
INPUT_SIZE = 2
UNROLLED = ("lem", "cornn")
RESULTS = Path(__file__).resolve().parent / "results" / "bench_cells.json"


def build(name: str) -> nn.Module | None:
    """The module for ``name`` (``None`` if unknown): nn.LSTM for the reference, else a Recurrent."""
    if name == REFERENCE:
        return nn.LSTM(INPUT_SIZE, HIDDEN)
    try:
        return Recurrent.from_name(name, INPUT_SIZE, HIDDEN)
    except ValueError:
        return None



def training_step(module: nn.Module, head: nn.Linear, x: Tensor, target: Tensor) -> None:
    module.zero_grad(set_to_none=True)
    head.zero_grad(set_to_none=True)
    output, _ = module(x)
    nn.functional.mse_loss(head(output[-1]).squeeze(-1), target).backward()


def variants(names: list[str], unrolled_too: tuple[str, ...], device: torch.device) -> dict[str, nn.Module]:
    """``name`` (default path) for every known name, reference first, and ``name/unrolled``
    for those in ``unrolled_too``."""
    found: dict[str, nn.Module] = {}
    for name in (REFERENCE, *(n for n in names if n != REFERENCE)):
        torch.manual_seed(0)
        module = build(name)
        if module is None:
            print(f"skipping {name!r}: not a registered cell name")
            continue
        found[name] = module.to(device)
        if isinstance(module, Recurrent) and name in unrolled_too:
            unrolled = build(name).to(device)
            unrolled.load_state_dict(module.state_dict())
            unrolled.register_step_hook(lambda layer, t, state: None)
            found[f"{name}/unrolled"] = unrolled
    return found


def check_agreement(modules: dict[str, nn.Module], head: nn.Linear, x: Tensor, target: Tensor) -> None:
    """Refuse to time a default path whose gradients differ from its unrolled loop."""
    for name, module in modules.items():
        if not name.endswith("/unrolled"):
            continue
        grads = []
        for each in (modules[name.removesuffix("/unrolled")], module):
            training_step(each, head, x, target)
            grads.append([p.grad.clone() for p in each.parameters()])
        for actual, expected in zip(*grads, strict=True):
            torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-3, msg=name)


def bench(
    names: list[str], unrolled_too: tuple[str, ...], steps: int, device: torch.device, warmup: int, reps: int
) -> dict:
    modules = variants(names, unrolled_too, device)
    torch.manual_seed(1)
    head = nn.Linear(HIDDEN, 1, device=device)
    x = torch.randn(steps, BATCH, INPUT_SIZE, device=device)
    target = torch.randn(BATCH, device=device)
    check_agreement(modules, head, x, target)
    steps_of: dict[str, Callable[[], None]] = {
        name: partial(training_step, module, head, x, target) for name, module in modules.items()
    }
    for step in steps_of.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps_of}
    order = list(steps_of)
    for rep in range(reps):
        shift = rep % len(order)
        for name in order[shift:] + order[:shift]:
            times[name].append(time_step(steps_of[name], device))
            print(".", end="", flush=True)
    print()
    return {
        "T": steps, "B": BATCH, "H": HIDDEN, "I": INPUT_SIZE, "reps": reps,
        "median_ms": {name: statistics.median(values) for name, values in times.items()},
        "ratio_to_lstm_fused": {
            name: statistics.median(a / b for a, b in zip(values, times[REFERENCE], strict=True))
            for name, values in times.items()
        },
    }


def print_table(result: dict, names: list[str]) -> None:
    ms, ratio = result["median_ms"], result["ratio_to_lstm_fused"]
    print(f"{'cell':>14} | {'default ms':>10} {'/lstm':>6} | {'unrolled ms':>11} {'/lstm':>6}")
    for name in (REFERENCE, *(n for n in names if n != REFERENCE)):
        if name not in ms:
            continue
        unrolled = f"{name}/unrolled"
        tail = f"{ms[unrolled]:>11.1f} {ratio[unrolled]:>6.2f}" if unrolled in ms else f"{'-':>11} {'-':>6}"
        print(f"{name:>14} | {ms[name]:>10.1f} {ratio[name]:>6.2f} | {tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(NAMES), help=f"cell names (default: {' '.join(NAMES)})")
    parser.add_argument(
        "--quick", action="store_true", help="three repetitions, no warm-up beyond the check (about 20 s)"
    )

    parser.add_argument("--unrolled", action="store_true", help="time every cell's unrolled loop too")
    parser.add_argument("--steps", type=int, default=1000, help="sequence length T (default 1000)")
    parser.add_argument("--threads", type=int, default=1, help="torch's CPU threads (default 1)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    unrolled_too = tuple(args.names) if args.unrolled else UNROLLED
    warmup, reps = (0, 3) if args.quick else (1, 7)
    print(
        f"one training step (forward + last-step MSE + backward), float32, T={args.steps}, B={BATCH}, "
        f"H={HIDDEN}, I={INPUT_SIZE}, device={device}, threads={torch.get_num_threads()}, "
        f"median of {reps} interleaved reps"
    )
    load_before = os.getloadavg()[0]
    result = bench(args.names, unrolled_too, args.steps, device, warmup, reps)
    print_table(result, args.names)
    report = {
        "benchmark": "bench_cells",
        "step": "forward + mse_loss(linear(output[-1])) + backward, float32",
        **environment(device),
        "load_average_before_after": [load_before, os.getloadavg()[0]],
        "results": [result],
    }
    write_report(RESULTS.with_stem("bench_cells_quick") if args.quick else RESULTS, report)


if __name__ == "__main__":
    main()
