"""The gradient profile: ||dL/dh_k|| for every step k, and how far back it reaches."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class GradientProfile:
    r"""Norms of the total derivative :math:`\delta_k = \partial L / \partial h_k`, per layer.

    Filled during a backward pass by :meth:`bptt.Recurrent.recording_profile`: the explicit
    BPTT of Elman layers computes it in its own backward recursion, other cells through
    gradient hooks on each step's hidden state.

    Attributes:
        per_sample: layer index -> tensor of shape ``(T, B)`` holding, for every step k
            and sample b, the norm over hidden units of :math:`\delta_k` for that sample.
    """

    per_sample: dict[int, Tensor] = field(default_factory=dict)

    def norms(self, layer: int = -1) -> Tensor:
        """The profile of one layer over the whole batch, ``||δ_k||`` for k = 1..T, shape ``(T,)``.

        Args:
            layer: layer index; negative counts from the top (``-1`` = last layer).
        """
        if not self.per_sample:
            raise RuntimeError(
                "the gradient profile is empty: run forward and backward inside "
                "`with recurrent.recording_profile() as profile:` first"
            )
        layers = sorted(self.per_sample)
        return self.per_sample[layers[layer]].square().sum(dim=1).sqrt()

    def norms_by_distance(self, lengths: Tensor, layer: int = -1) -> Tensor:
        r"""The profile against the distance from each sample's last valid step.

        For a many-to-one loss on a variable-length batch, the loss of sample ``b`` sits at
        step ``lengths[b] - 1``; this aligns the samples there, so that entry ``T - 1 - d``
        is the norm over the batch of :math:`\delta` at distance ``d`` (samples shorter
        than ``d + 1`` contribute nothing). Ordered like :meth:`norms`, the loss step last,
        so :func:`effective_horizon` reads it the same way.

        Args:
            lengths: ``(B,)`` valid lengths.
            layer: layer index; negative counts from the top.
        """
        self.norms(layer)  # the same error when empty
        per_sample = self.per_sample[sorted(self.per_sample)[layer]]
        steps = per_sample.shape[0]
        distance = torch.arange(steps, device=per_sample.device).unsqueeze(1)
        position = lengths.to(per_sample.device).unsqueeze(0) - 1 - distance  # (T, B)
        aligned = per_sample.gather(0, position.clamp(min=0)) * (position >= 0)
        return aligned.square().sum(dim=1).sqrt().flip(0)


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
