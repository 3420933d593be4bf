"""minGRU / minLSTM layers through bptt.scan.linear_scan against their step loop and torch's fused LSTM.

Two parts, float32, one thread by default (a shared CPU makes torch's thread pool spin):

- ``layers``: forward + backward of one layer (``B = 32``, ``H = I = 128``, the loss a fixed
  weighting of every output) at ``T`` in 100, 1000, 4000: ``mingru`` and ``minlstm`` on their
  default path (one :func:`~bptt.scan.linear_scan`), the same with a step hook registered
  (``/loop``: :class:`bptt.Recurrent`'s unrolled loop, what the diagnostics run), and
  :class:`torch.nn.LSTM` (``lstm-fused``). Each scan path's gradients are first checked
  against its loop.
- ``scans``: the recurrence :math:`h_t = a_t h_{t-1} + b_t` alone (minGRU-like coefficients,
  ``B = 32``, ``H = 128``) at ``T`` in 1000, 5000, by :func:`~bptt.scan.linear_scan`
  (chunked), a Python step loop, the log-space scan (cumulative sums of :math:`\\log a_t`,
  ``logcumsumexp`` of the positive and the negative parts of :math:`b_t` separately) and
  ``torch._higher_order_ops.associative_scan`` (eager, ``combine_mode="generic"``): forward
  ms, forward + backward ms, and the largest float32 error against a float64 step loop.

Repetitions are interleaved across variants; the figures are medians. Writes
``benchmarks/results/bench_scan.json`` (its ``"quick"`` says whether ``--quick`` made it).

Usage::

    python benchmarks/bench_scan.py [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
from bench_bptt import environment, time_step, write_report
from torch import Tensor, nn

from bptt import Recurrent
from bptt.cells.minimal import MinGRUCell, MinLSTMCell, positive_g
from bptt.scan import linear_scan

BATCH, HIDDEN, INPUT_SIZE = 32, 128, 128
LAYER_STEPS = (100, 1000, 4000)
SCAN_STEPS = (1000, 5000)
RESULTS = Path(__file__).resolve().parent / "results" / "bench_scan.json"
CPU = torch.device("cpu")
Scan = Callable[[Tensor, Tensor, Tensor], Tensor]


# -- layers ----------------------------------------------------------------------------------


def layer_variants() -> dict[str, nn.Module]:
    """The scan paths, their loops (a step hook forces Recurrent's unrolled loop) and nn.LSTM."""
    variants: dict[str, nn.Module] = {}
    for name, cell in (("mingru", MinGRUCell), ("minlstm", MinLSTMCell)):
        torch.manual_seed(0)
        variants[name] = Recurrent([cell(INPUT_SIZE, HIDDEN)])
        loop = Recurrent([cell(INPUT_SIZE, HIDDEN)])
        loop.load_state_dict(variants[name].state_dict())
        loop.register_step_hook(lambda layer, t, state: None)
        variants[f"{name}/loop"] = loop
    torch.manual_seed(0)
    variants["lstm-fused"] = nn.LSTM(INPUT_SIZE, HIDDEN)
    return variants


def layer_step(module: nn.Module, x: Tensor, weights: Tensor) -> None:
    module.zero_grad(set_to_none=True)
    output, _ = module(x)
    (output * weights).mean().backward()


def check_layers(variants: dict[str, nn.Module], x: Tensor, weights: Tensor) -> None:
    """Refuse to time a scan path whose gradients differ from its loop's."""
    for name in ("mingru", "minlstm"):
        grads = []
        for module in (variants[name], variants[f"{name}/loop"]):
            layer_step(module, x, weights)
            grads.append([p.grad.clone() for p in module.parameters()])
        for actual, expected in zip(*grads, strict=True):
            torch.testing.assert_close(actual, expected, atol=1e-6, rtol=1e-4, msg=name)


def bench_layers(steps: int, reps: int) -> dict[str, object]:
    variants = layer_variants()
    torch.manual_seed(1)
    x = torch.randn(steps, BATCH, INPUT_SIZE)
    weights = torch.randn(steps, BATCH, HIDDEN)
    check_layers(variants, x, weights)
    times: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    for rep in range(reps):
        shift = rep % len(order)
        for name in order[shift:] + order[:shift]:
            times[name].append(time_step(lambda module=variants[name]: layer_step(module, x, weights), CPU))
    median = {name: statistics.median(values) for name, values in times.items()}
    return {
        "T": steps, "B": BATCH, "H": HIDDEN, "I": INPUT_SIZE, "reps": reps,
        "forward_backward_ms": median,
        "ratio_to_lstm_fused": {name: value / median["lstm-fused"] for name, value in median.items()},
    }  # fmt: skip


# -- scans -----------------------------------------------------------------------------------


def step_loop(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    states, h = [], h0
    for a_t, b_t in zip(a.unbind(0), b.unbind(0), strict=True):
        h = torch.addcmul(b_t, a_t, h)
        states.append(h)
    return torch.stack(states)


def log_space(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """Heinsen's log-space scan, ``b`` and ``h0`` split into positive and negative parts (``a > 0``)."""
    values = torch.cat([h0.unsqueeze(0), b])
    decays = torch.cat([torch.zeros_like(h0).unsqueeze(0), a.log()]).cumsum(0)

    def positive_part(v: Tensor) -> Tensor:
        logs = torch.where(v > 0, v, 1.0).log().masked_fill(v <= 0, -math.inf)
        return (decays + torch.logcumsumexp(logs - decays, 0)).exp()

    return (positive_part(values) - positive_part(-values))[1:]


def associative(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    from torch._higher_order_ops import associative_scan

    def combine(first: tuple[Tensor, Tensor], second: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        return first[0] * second[0], second[0] * first[1] + second[1]

    pairs = (torch.cat([torch.zeros_like(h0).unsqueeze(0), a]), torch.cat([h0.unsqueeze(0), b]))
    return associative_scan(combine, pairs, dim=0, combine_mode="generic")[1][1:]


SCANS: dict[str, Scan] = {
    "linear_scan": linear_scan,
    "step_loop": step_loop,
    "log_space": log_space,
    "associative_scan": associative,
}


def coefficients(steps: int) -> tuple[Tensor, Tensor, Tensor]:
    """minGRU-like ``a = 1 - z``, ``b = z g(.)`` and ``h0``, float64."""
    gen = torch.Generator().manual_seed(0)
    z = torch.sigmoid(2 * torch.randn(steps, BATCH, HIDDEN, generator=gen, dtype=torch.float64))
    candidate = positive_g(torch.randn(steps, BATCH, HIDDEN, generator=gen, dtype=torch.float64))
    return 1 - z, z * candidate, torch.randn(BATCH, HIDDEN, generator=gen, dtype=torch.float64)


def bench_scans(steps: int, reps: int) -> dict[str, object]:
    exact = coefficients(steps)
    reference = step_loop(*exact)
    single = [part.float() for part in exact]
    errors, forward, both = {}, {}, {}
    for name, scan in SCANS.items():
        errors[name] = float((scan(*single).double() - reference).abs().max())

        def forward_only(scan: Scan = scan) -> None:
            with torch.no_grad():
                scan(*single)

        def forward_backward(scan: Scan = scan) -> None:
            leaves = [part.clone().requires_grad_() for part in single]
            scan(*leaves).sum().backward()

        forward[name] = statistics.median(time_step(forward_only, CPU) for _ in range(reps))
        both[name] = statistics.median(time_step(forward_backward, CPU) for _ in range(reps))
    return {
        "T": steps, "B": BATCH, "H": HIDDEN, "reps": reps, "float32_max_abs_error": errors,
        "forward_ms": forward, "forward_backward_ms": both,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two repetitions per variant")
    parser.add_argument("--threads", type=int, default=1, help="torch's CPU threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reps = 2 if args.quick else 5
    load_before = os.getloadavg()[0]
    layers = []
    for steps in LAYER_STEPS:
        layers.append(bench_layers(steps, reps))
        ms = layers[-1]["forward_backward_ms"]
        print(f"layers T={steps}: " + ", ".join(f"{name} {value:.1f} ms" for name, value in ms.items()), flush=True)
    scans = []
    for steps in SCAN_STEPS:
        scans.append(bench_scans(steps, reps))
        row = scans[-1]
        print(
            f"scans T={steps}: "
            + ", ".join(
                f"{name} fwd {row['forward_ms'][name]:.1f} ms, fwd+bwd {row['forward_backward_ms'][name]:.1f} ms, "
                f"error {row['float32_max_abs_error'][name]:.1e}"
                for name in SCANS
            ),
            flush=True,
        )
    report = {
        "benchmark": "bench_scan",
        "quick": args.quick,
        "layers_step": "forward + mean(output * fixed weights) + backward, float32",
        **environment(CPU),
        "load_average_before_after": [load_before, os.getloadavg()[0]],
        "layers": layers,
        "scans": scans,
    }
    write_report(RESULTS, report)


if __name__ == "__main__":
    main()
