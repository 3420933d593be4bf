"""One training step of an Elman RNN: torch's fused RNN vs autograd unrolled vs explicit BPTT.

A step is forward + MSE loss on all outputs + backward, in float32. Four variants run side
by side in one process, interleaved repetition by repetition, on the same weights and data:

- ``fused``: :class:`torch.nn.RNN` (tanh);
- ``unrolled``: a Python loop of the same ops (one input projection, then ``addmm`` + ``tanh``
  per step), differentiated by autograd;
- ``explicit``: :func:`bptt.autograd.elman_bptt`;
- ``profile``: the same, recording the gradient profile ``||dL/dh_k||`` for every step.

Shapes: T in {100, 500}, H in {64, 256}, B = 32, input size I = 32. Reports the median ms
per variant and the ratios explicit/fused, explicit/unrolled and profile/explicit, each the
median over repetitions of the ratio within one repetition (robust to load drifting on a
shared machine); writes ``benchmarks/results/bench_bptt.json``.

Usage::

    python benchmarks/bench_bptt.py [--quick] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import Tensor, nn

from bptt.autograd import elman_bptt

STEPS = (100, 500)
HIDDEN = (64, 256)
BATCH = 32
INPUT_SIZE = 32
RESULTS = Path(__file__).resolve().parent / "results" / "bench_bptt.json"

Forward = Callable[[Tensor, Tensor], Tensor]


def make_variants(rnn: nn.RNN) -> dict[str, Forward]:
    """Each variant maps ``(x, h0)`` to the ``(T, B, H)`` outputs, with ``rnn``'s weights."""
    w_ih, w_hh, b_ih, b_hh = rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0
    sink: list[Tensor] = []

    def fused(x: Tensor, h0: Tensor) -> Tensor:
        return rnn(x, h0.unsqueeze(0))[0]

    def unrolled(x: Tensor, h0: Tensor) -> Tensor:
        projection = torch.addmm(b_ih + b_hh, x.flatten(0, 1), w_ih.t()).unflatten(0, x.shape[:2])
        h, outputs = h0, []
        for t in range(x.shape[0]):
            h = torch.addmm(projection[t], h, w_hh.t()).tanh()
            outputs.append(h)
        return torch.stack(outputs)

    def explicit(x: Tensor, h0: Tensor) -> Tensor:
        return elman_bptt(x, h0, w_ih, w_hh, b_ih, b_hh)[0]

    def profile(x: Tensor, h0: Tensor) -> Tensor:
        sink.clear()
        return elman_bptt(x, h0, w_ih, w_hh, b_ih, b_hh, on_profile=sink.append)[0]

    return {"fused": fused, "unrolled": unrolled, "explicit": explicit, "profile": profile}


def training_step(forward: Forward, rnn: nn.RNN, x: Tensor, h0: Tensor, target: Tensor) -> None:
    rnn.zero_grad(set_to_none=True)
    loss = nn.functional.mse_loss(forward(x, h0), target)
    loss.backward()


def check_agreement(
    variants: dict[str, Forward], rnn: nn.RNN, x: Tensor, h0: Tensor, target: Tensor
) -> None:
    """Refuse to time variants that do not compute the same outputs and gradients."""
    results = {}
    for name, forward in variants.items():
        training_step(forward, rnn, x, h0, target)
        with torch.no_grad():
            results[name] = [forward(x, h0), *(p.grad.clone() for p in rnn.parameters())]
    for name, tensors in results.items():
        for actual, expected in zip(tensors, results["fused"], strict=True):
            torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4, msg=name)


def time_step(step: Callable[[], None], device: torch.device) -> float:
    """Milliseconds of one call, synchronising the device around it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 1e3 * (time.perf_counter() - start)


def bench_shape(
    steps: int, hidden: int, device: torch.device, warmup: int, reps: int
) -> dict[str, object]:
    """Median ms per variant for one shape; repetitions are interleaved across variants."""
    torch.manual_seed(0)
    rnn = nn.RNN(INPUT_SIZE, hidden, nonlinearity="tanh", device=device)
    x = torch.randn(steps, BATCH, INPUT_SIZE, device=device)
    h0 = torch.zeros(BATCH, hidden, device=device)
    target = torch.randn(steps, BATCH, hidden, device=device)
    variants = make_variants(rnn)
    times: dict[str, list[float]] = {name: [] for name in variants}
    peak_mib: dict[str, float] = {}
    check_agreement(variants, rnn, x, h0, target)
    for forward in variants.values():
        for _ in range(warmup):
            training_step(forward, rnn, x, h0, target)
    names = list(variants)
    for rep in range(reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]  # rotate who goes first
        for name in order:
            step = partial(training_step, variants[name], rnn, x, h0, target)
            times[name].append(time_step(step, device))
    if device.type == "cuda":
        for name, forward in variants.items():
            torch.cuda.reset_peak_memory_stats(device)
            training_step(forward, rnn, x, h0, target)
            peak_mib[name] = torch.cuda.max_memory_allocated(device) / 2**20
    medians = {name: statistics.median(values) for name, values in times.items()}

    def paired_ratio(numerator: str, denominator: str) -> float:
        return statistics.median(a / b for a, b in zip(times[numerator], times[denominator], strict=True))

    return {
        "T": steps,
        "H": hidden,
        "B": BATCH,
        "I": INPUT_SIZE,
        "reps": reps,
        "median_ms": medians,
        "ratios": {
            "explicit/fused": paired_ratio("explicit", "fused"),
            "explicit/unrolled": paired_ratio("explicit", "unrolled"),
            "profile/explicit": paired_ratio("profile", "explicit"),
        },
        **({"cuda_peak_mib": peak_mib} if peak_mib else {}),
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def print_table(rows: list[dict[str, object]]) -> None:
    header = (
        f"{'T':>4} {'H':>4} | {'fused':>8} {'unrolled':>9} {'explicit':>9} {'profile':>8} ms"
        f" | {'expl/fused':>10} {'expl/unroll':>11} {'prof/expl':>9}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        ms, ratio = row["median_ms"], row["ratios"]
        print(
            f"{row['T']:>4} {row['H']:>4} | {ms['fused']:>8.2f} {ms['unrolled']:>9.2f} "
            f"{ms['explicit']:>9.2f} {ms['profile']:>8.2f}    | {ratio['explicit/fused']:>10.2f} "
            f"{ratio['explicit/unrolled']:>11.2f} {ratio['profile/explicit']:>9.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    device = torch.device(args.device)
    warmup, reps = (1, 5) if args.quick else (3, 21)

    print(
        f"one training step (forward + MSE + backward), float32, B={BATCH}, I={INPUT_SIZE}, "
        f"device={device}, threads={torch.get_num_threads()}, median of {reps} interleaved reps"
    )
    load_before = os.getloadavg()
    rows = [bench_shape(t, h, device, warmup, reps) for t, h in itertools.product(STEPS, HIDDEN)]
    print_table(rows)

    report = {
        "benchmark": "bench_bptt",
        "step": "forward + mse_loss(all outputs) + backward, float32",
        **environment(device),
        "load_average_before_after": [load_before[0], os.getloadavg()[0]],
        "process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "results": rows,
    }
    write_report(RESULTS, report)


def environment(device: torch.device) -> dict[str, object]:
    """What a benchmark's figures depend on: versions, device, threads, machine."""
    return {
        "torch": torch.__version__,
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.platform(),
        "python": platform.python_version(),
    }


def write_report(path: Path, report: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")

if __name__ == "__main__":
    main()
