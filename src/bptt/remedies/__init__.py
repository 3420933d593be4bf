"""Cures for vanishing and exploding gradients."""

from bptt.remedies.clipping import ClipEvent, clip_gradients_

__all__ = ["ClipEvent", "clip_gradients_"]
