"""Cures for vanishing and exploding gradients."""

from bptt.remedies.clipping import ClipEvent, clip_gradients_
from bptt.remedies.guards import GuardCounts, NonFiniteGuard

__all__ = ["ClipEvent", "GuardCounts", "NonFiniteGuard", "clip_gradients_"]
