"""How far back a gradient profile ||dL/dh_k|| reaches: the effective horizon and the decay rate."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def effective_horizon(profile: Tensor, tolerance: float = 1e-3) -> int:
    """How many steps back the gradient still reaches from the last step.

    The largest distance ``d`` such that ``profile[T-1-d] >= tolerance * profile[T-1]``
    (DESIGN.md section 4). For a many-to-one loss, ``profile[T-1]`` is the gradient at the
    loss step.

    Args:
        profile: ``||dL/dh_k||`` for k = 1..T, shape ``(T,)``.
        tolerance: relative threshold.

    Returns:
        The horizon in steps, between 0 and T-1 (T-1 means the whole sequence).
    """
    if profile.ndim != 1 or profile.numel() == 0:
        raise ValueError(f"expected a non-empty 1-D profile, got shape {tuple(profile.shape)}")
    profile = profile.detach().double().cpu()
    reference = profile[-1]
    if not torch.isfinite(profile).all():
        raise ValueError("the gradient profile contains NaN or Inf; the gradient is non-finite")
    if reference <= 0:
        return 0
    reaching = (profile >= tolerance * reference).nonzero().flatten()
    return int(profile.numel() - 1 - reaching[0]) if reaching.numel() else 0


def decay_rate(profile: Tensor) -> float:
    """The fitted per-step factor ``r`` in ``||δ_{T-d}|| ≈ ||δ_T|| r^d`` (least squares in log).

    ``r < 1`` means the gradient vanishes going back in time, ``r > 1`` that it explodes.
    Zero entries are left out of the fit; returns ``nan`` with fewer than two usable points.
    """
    profile = profile.detach().double().cpu().flip(0)
    distance = torch.arange(profile.numel(), dtype=torch.float64)
    usable = (profile > 0) & torch.isfinite(profile)
    if usable.sum() < 2:
        return math.nan
    x, y = distance[usable], profile[usable].log()
    slope = ((x - x.mean()) * (y - y.mean())).sum() / (x - x.mean()).square().sum()
    return math.exp(float(slope))


def relative_by_distance(profile: Tensor | Sequence[float]) -> Tensor:
    """A profile (loss step last, as :meth:`GradientProfile.norms`) by distance from the loss step.

    Returns:
        Entry ``d`` is ``||δ||`` ``d`` steps before the loss step divided by its value at the
        loss step (left unscaled when that is 0), float64, shape ``(T,)``.
    """
    by_distance = torch.as_tensor(profile, dtype=torch.float64).flip(0)
    return by_distance / by_distance[0] if by_distance[0] > 0 else by_distance
