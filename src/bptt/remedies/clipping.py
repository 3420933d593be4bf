"""Gradient clipping that reports what it did."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ClipEvent:
    """What one clipping call saw and did.

    Attributes:
        norm: the global L2 norm of all gradients before clipping.
        threshold: the clipping threshold (a norm or a value), ``None`` when not clipping.
        clipped: whether any gradient was changed.
    """

    norm: float
    threshold: float | None
    clipped: bool


def clip_gradients_(
    parameters: Iterable[Tensor],
    max_norm: float | None = None,
    max_value: float | None = None,
) -> ClipEvent:
    r"""Clip gradients in place by global norm or by value, and report the pre-clip norm.

    - by norm: if :math:`\|g\|_2 > c`, :math:`g \leftarrow g \cdot c / \|g\|_2`; the update
      keeps its direction (Pascanu et al. 2013);
    - by value: :math:`g_i \leftarrow \mathrm{clamp}(g_i, -v, v)`; each entry is bounded but
      the direction of the update changes.

    Args:
        parameters: tensors whose ``.grad`` are clipped.
        max_norm: global-norm threshold ``c``.
        max_value: value threshold ``v``. At most one of the two may be given.

    Returns:
        A :class:`ClipEvent` with the global gradient norm measured before clipping.
    """
    if max_norm is not None and max_value is not None:
        raise ValueError("pass max_norm or max_value, not both")
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return ClipEvent(norm=0.0, threshold=max_norm or max_value, clipped=False)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    if max_norm is not None:
        scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        for grad in grads:
            grad.mul_(scale)
        return ClipEvent(norm=float(norm), threshold=max_norm, clipped=bool(norm > max_norm))
    if max_value is not None:
        largest = torch.stack([g.abs().max() for g in grads]).max()
        for grad in grads:
            grad.clamp_(-max_value, max_value)
        return ClipEvent(norm=float(norm), threshold=max_value, clipped=bool(largest > max_value))
    return ClipEvent(norm=float(norm), threshold=None, clipped=False)
