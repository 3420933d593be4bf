"""The gradient profile record: ||dL/dh_k|| for every step k and sample, per layer.

A leaf module (it imports nothing of bptt): :class:`bptt.Recurrent` fills the record during a
backward pass, the diagnostics read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import final

import torch
from torch import Tensor


def sum_by_distance(values: Tensor, lengths: Tensor) -> Tensor:
    r"""Per-step values summed over the batch by distance from each sample's last valid step.

    .. math::
        s_d = \sum_b v_{L_b - 1 - d,\, b}, \qquad d = 0, \dots, T - 1

    where a sample shorter than ``d + 1`` contributes nothing to :math:`s_d`.

    Args:
        values: ``(T, B)`` per step and sample.
        lengths: ``(B,)`` valid lengths :math:`L_b`.

    Returns:
        ``(T,)``, entry ``d`` for distance ``d`` (the last valid step first).
    """
    steps = values.shape[0]
    distance = torch.arange(steps, device=values.device).unsqueeze(1)
    index = lengths.to(values.device).unsqueeze(0) - 1 - distance  # (T, B)
    gathered = values.gather(0, index.clamp(min=0))
    return torch.where(index >= 0, gathered, 0.0).sum(1)


@final
@dataclass
class GradientProfile:
    r"""Norms of the total derivative :math:`\delta_k = \partial L / \partial h_k`, per layer.

    Filled during a backward pass by :meth:`bptt.Recurrent.recording_profile`: the explicit
    BPTT of Elman, GRU and LSTM layers computes it in its own backward recursion; the other
    cells, which run the unrolled loop, through gradient hooks on each step's hidden state.

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
        return sum_by_distance(per_sample.square(), lengths).sqrt().flip(0)
