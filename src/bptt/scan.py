r"""The linear recurrence :math:`h_t = a_t \odot h_{t-1} + b_t` over a whole sequence at once.

Cells whose gates read the input only (minGRU, minLSTM: :mod:`bptt.cells.minimal`) reduce a
layer to this recurrence, so a layer costs one input projection and one scan instead of
``T`` cell steps. :func:`linear_scan` computes it in chunks: a loop over the ``C`` positions
of a chunk, all chunks at once, then a loop over the ``T / C`` chunks to carry the state
between them, :math:`2\sqrt{T}` short loops in all with ``C`` near :math:`\sqrt{T}`. It uses only
products and sums of the :math:`a_t` and :math:`b_t` (no logarithms, no divisions), so float32 keeps
the accuracy of the step loop at any length, and the :math:`a_t` may be zero or negative.
The backward pass is the same recurrence run backwards (see :func:`linear_scan`).

Alternatives measured by ``benchmarks/bench_scan.py`` (CPU, one thread, float32,
``B = 32, H = 128``): the log-space scan of the paper (cumulative sums of :math:`\log a_t` and
``logcumsumexp``) is about ten times slower and its error grows with ``T`` (about 1e-3 at
``T = 5000``, where this scan stays at the step loop's 5e-7), since it adds and subtracts
logarithms of size :math:`\sum_t |\log a_t|`; ``torch._higher_order_ops.associative_scan``
(eager) is as accurate and slower. On the CPU a plain loop over the ``T`` steps is faster still
(small tensors stay in cache); the chunks are for accelerators, where each loop iteration
costs a kernel launch.
"""

from __future__ import annotations

import math
from typing import Any, final

import torch
from torch import Tensor

__all__ = ["linear_scan"]


def linear_scan(a: Tensor, b: Tensor, h0: Tensor, *, chunk: int | None = None) -> Tensor:
    r"""Every state of the linear recurrence :math:`h_t = a_t \odot h_{t-1} + b_t`, ``t = 0..T-1``.

    Equal to the loop ``h = h0; for t in range(T): h = a[t] * h + b[t]`` up to rounding, and
    differentiable by autograd with respect to ``a``, ``b`` and ``h0``, twice as well: the
    gradient :math:`\delta_t = \partial L / \partial h_t` (total) is the reverse recurrence

    .. math::
        \delta_{T-1} = g_{T-1}, \qquad \delta_t = g_t + a_{t+1} \odot \delta_{t+1}, \qquad
        \frac{\partial L}{\partial b_t} = \delta_t, \quad
        \frac{\partial L}{\partial a_t} = \delta_t \odot h_{t-1}, \quad
        \frac{\partial L}{\partial h_0} = a_0 \odot \delta_0

    with :math:`g_t` the gradient reaching the output at step t, computed by the same scan.

    Args:
        a: the decays :math:`a_t`, ``(T, B, H)``.
        b: the inputs :math:`b_t`, ``(T, B, H)``.
        h0: the state before the first step, ``(B, H)``.
        chunk: steps per chunk ``C``; ``None`` takes the first divisor of ``T`` from
            :math:`\lceil\sqrt{T}\,\rceil` to twice that (no padding), else
            :math:`\lceil\sqrt{T}\,\rceil`: near the fewest Python iterations, ``C + T / C``.

    Returns:
        The states :math:`h_0 \ldots h_{T-1}` after each step, ``(T, B, H)``.

    Raises:
        ValueError: if the shapes, dtypes or devices do not match, or ``chunk`` is not a
            positive integer.
    """
    _check(a, b, h0, chunk)
    return _LinearScan.apply(a, b, h0, _chunk_size(a.shape[0]) if chunk is None else chunk)


def _chunk_size(steps: int) -> int:
    """The default chunk of :func:`linear_scan` for ``steps`` steps."""
    root = math.ceil(math.sqrt(steps))
    return next((size for size in range(root, 2 * root + 1) if steps % size == 0), root)


def _check(a: Tensor, b: Tensor, h0: Tensor, chunk: int | None) -> None:
    for name, value in (("a", a), ("b", b), ("h0", h0)):
        if not isinstance(value, Tensor) or not value.is_floating_point():
            kind = f"a {value.dtype} tensor" if isinstance(value, Tensor) else f"a {type(value).__name__}"
            raise ValueError(f"linear_scan expected {name} to be a floating-point tensor, received {kind}")
    if a.ndim != 3 or a.shape[0] == 0:
        raise ValueError(
            f"linear_scan expected a of shape (T, B, H) with T >= 1, received shape {tuple(a.shape)}; "
            "for one sequence add a batch dimension, a.unsqueeze(1)"
        )
    if b.shape != a.shape or h0.shape != a.shape[1:]:
        raise ValueError(
            f"linear_scan expected b of a's shape {tuple(a.shape)} and h0 of shape {tuple(a.shape[1:])}, "
            f"received b {tuple(b.shape)} and h0 {tuple(h0.shape)}"
        )
    if len({a.dtype, b.dtype, h0.dtype}) != 1 or len({a.device, b.device, h0.device}) != 1:
        raise ValueError(
            "linear_scan expected a, b and h0 of one dtype on one device, received "
            f"{a.dtype}/{a.device}, {b.dtype}/{b.device}, {h0.dtype}/{h0.device}; convert them with .to()"
        )
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"linear_scan expected chunk to be a positive integer or None, received {chunk!r}")


def _chunked_scan(a: Tensor, b: Tensor, h0: Tensor, chunk: int, reverse: bool = False) -> Tensor:
    """The states of :func:`linear_scan`, without autograd, in chunks of ``chunk`` steps; with
    ``reverse``, of the recurrence running backwards, :math:`h_t = a_t h_{t+1} + b_t` from
    :math:`h_T` = ``h0``."""
    steps = a.shape[0]
    size = min(chunk, steps)
    count = -(-steps // size)
    pad = count * size - steps
    if pad:  # padded steps (after the end, or before the start in reverse) keep the state: a = 1, b = 0
        ones, zeros = a.new_ones(pad, *a.shape[1:]), b.new_zeros(pad, *b.shape[1:])
        a, b = (
            (torch.cat([ones, a]), torch.cat([zeros, b])) if reverse else (torch.cat([a, ones]), torch.cat([b, zeros]))
        )
    # positions in the order the recurrence visits them, and the one visited before each
    step, first = (-1, size - 1) if reverse else (1, 0)
    decay = a.reshape(count, size, *a.shape[1:])
    # within every chunk at once: the product of the decays so far, and the state from zero
    # (a loop, not cumprod, which is several times slower on the CPU along a middle dimension)
    carried = torch.empty_like(decay)
    carried[:, first] = decay[:, first]
    local = b.reshape(count, size, *b.shape[1:]).clone()
    for position in range(first + step, first + step * size, step):
        before = position - step
        torch.mul(carried[:, before], decay[:, position], out=carried[:, position])
        local[:, position].addcmul_(decay[:, position], local[:, before])
    # the state entering every chunk
    last = size - 1 - first
    chunks = range(count - 1, -1, -1) if reverse else range(count)
    starts = torch.empty(count, *h0.shape, dtype=a.dtype, device=a.device)
    starts[chunks[0]] = h0
    for index, before in zip(chunks[1:], chunks, strict=False):
        torch.addcmul(local[before, last], carried[before, last], starts[before], out=starts[index])
    states = local.addcmul_(carried, starts.unsqueeze(1)).reshape(count * size, *a.shape[1:])
    return states[pad:] if reverse else states[:steps]


@final
class _LinearScan(torch.autograd.Function):
    """:func:`linear_scan` as an autograd Function whose backward is the reverse scan."""

    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, h0: Tensor, chunk: int) -> Tensor:
        states = _chunked_scan(a, b, h0, chunk)
        ctx.chunk = chunk
        ctx.save_for_backward(a, h0, states)
        return states

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:
        a, h0, states = ctx.saved_tensors
        # delta_t = g_t + a_{t+1} delta_{t+1}
        following = torch.cat([a[1:], a.new_ones(1, *a.shape[1:])])
        if torch.is_grad_enabled():  # a double backward: the reverse scan as a differentiable linear_scan
            delta = linear_scan(following.flip(0), grad.flip(0), torch.zeros_like(h0), chunk=ctx.chunk).flip(0)
        else:
            delta = _chunked_scan(following, grad, torch.zeros_like(h0), ctx.chunk, reverse=True)
        grad_a = grad_h0 = None
        if ctx.needs_input_grad[0]:
            grad_a = delta * torch.cat([h0.unsqueeze(0), states[:-1]])
        if ctx.needs_input_grad[2]:
            grad_h0 = a[0] * delta[0]
        return grad_a, delta if ctx.needs_input_grad[1] else None, grad_h0, None
