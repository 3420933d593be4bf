"""How far back a gradient profile ||dL/dh_k|| reaches: the profile of a layer, its effective
horizon, its decay rate, and the distances 1, 2, 4, ..., T - 1 at which it is sampled."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from bptt.gradient_profile import sum_by_distance

__all__ = [
    "decay_rate", "distance_ladder", "effective_horizon", "fitted_rate", "gradient_decay_rate", "layer_profile",
    "relative_by_distance",
]  # fmt: skip


def effective_horizon(profile: Tensor, tolerance: float = 1e-3) -> int:
    """How many steps back the gradient still reaches from the last step.

    The largest distance ``d`` such that ``profile[T-1-d] >= tolerance * profile[T-1]``
    (see docs/maths.md, "The gradient profile and the effective horizon"). For a many-to-one
    loss, ``profile[T-1]`` is the gradient at the loss step.

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


def fitted_rate(distances: Tensor, values: Tensor) -> float:
    r"""The per-unit factor ``r`` in ``values ≈ c r^distance``, by least squares in log.

    .. math::
        \log r = \frac{\sum_i (x_i - \bar x)(\log y_i - \overline{\log y})}{\sum_i (x_i - \bar x)^2}

    over the points whose value is positive and finite (computed in float64).

    Args:
        distances: the abscissae ``x``, shape ``(N,)``.
        values: the values ``y``, shape ``(N,)``.

    Returns:
        ``r``; ``nan`` with fewer than two usable points.
    """
    x = distances.detach().double().cpu()
    y = values.detach().double().cpu()
    usable = (y > 0) & torch.isfinite(y)
    if usable.sum() < 2:
        return math.nan
    x, y = x[usable], y[usable].log()
    slope = ((x - x.mean()) * (y - y.mean())).sum() / (x - x.mean()).square().sum()
    return math.exp(float(slope))


def decay_rate(profile: Tensor) -> float:
    """The fitted per-step factor ``r`` in ``||δ_{T-d}|| ≈ ||δ_T|| r^d`` (least squares in log).

    ``r < 1`` means the gradient vanishes going back in time, ``r > 1`` that it explodes.
    Zero entries are left out of the fit; returns ``nan`` with fewer than two usable points.
    """
    return fitted_rate(torch.arange(profile.numel(), dtype=torch.float64), profile.flip(0))


def gradient_decay_rate(
    by_distance: Tensor | None, spans: Sequence[int], product_norms: Tensor, lyapunov: Tensor
) -> float:
    """A layer's per-step factor of the gradient going back: fitted to the profile by distance
    (many-to-one losses), else to the norms of the Jacobian products against their span,
    else :math:`e^{\\lambda_1}`.

    Args:
        by_distance: the profile by distance from the loss step (loss step last), or ``None``.
        spans: the spans of ``product_norms``.
        product_norms: one norm per span (empty when not measured).
        lyapunov: the top Lyapunov exponents (may be empty).
    """
    if by_distance is not None:
        return decay_rate(by_distance.flip(0))
    rate = fitted_rate(torch.tensor(list(spans), dtype=torch.float64), product_norms)
    if not math.isnan(rate):
        return rate
    return math.exp(float(lyapunov[0])) if lyapunov.numel() else math.nan


def layer_profile(
    delta: Tensor, hidden_size: int, lengths: Tensor, many_to_one: bool
) -> tuple[Tensor, Tensor | None]:
    r"""A layer's gradient profile from the total derivatives of its states.

    Args:
        delta: :math:`\delta_k` on the flat state, ``(T, B, S)`` (the hidden state first).
        hidden_size: ``H``: the profile reads ``delta[..., :H]``.
        lengths: ``(B,)`` valid lengths.
        many_to_one: also align the samples at their loss step (their last valid step).

    Returns:
        ``(profile, by_distance)``: :math:`\|\delta_k\|` over the batch for k = 0..T-1, and
        for many-to-one losses the same against the distance ``d`` from each sample's loss
        step (``None`` otherwise), both ``(T,)`` in ``delta``'s dtype (norms are summed in
        float64, where squares of large float32 norms do not overflow).
    """
    per_sample = delta[..., :hidden_size].double().norm(dim=-1)
    profile = per_sample.square().sum(1).sqrt().to(delta.dtype)
    by_distance = sum_by_distance(per_sample.square(), lengths).sqrt().to(delta.dtype) if many_to_one else None
    return profile, by_distance


def distance_ladder(longest: int) -> list[int]:
    """The distances 1, 2, 4, ... below ``longest``, then ``longest`` (``[]`` when it is below 1).

    Where the spans of the Jacobian products are measured and where the profile is logged,
    with ``longest = T - 1``, the longest distance in a sequence.
    """
    if longest < 1:
        return []
    return [2**i for i in range(longest.bit_length()) if 2**i < longest] + [longest]


def relative_by_distance(profile: Tensor | Sequence[float]) -> Tensor:
    """A profile (loss step last, as :meth:`GradientProfile.norms`) by distance from the loss step.

    Returns:
        Entry ``d`` is ``||δ||`` ``d`` steps before the loss step divided by its value at the
        loss step (left unscaled when that is 0), float64, shape ``(T,)``.
    """
    by_distance = torch.as_tensor(profile, dtype=torch.float64).flip(0)
    return by_distance / by_distance[0] if by_distance[0] > 0 else by_distance
