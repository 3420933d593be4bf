"""Cures for vanishing and exploding gradients."""

from bptt.remedies.clipping import (
    CLIPPERS,
    AbstractClipper,
    AGCClipper,
    AutoClipper,
    ClipEvent,
    NormClipper,
    PerParameterNormClipper,
    ValueClipper,
    ZScoreClipper,
    clip_gradients_,
    make_clipper,
)
from bptt.remedies.guards import GuardCounts, NonFiniteGuard

__all__ = [
    "CLIPPERS",
    "AGCClipper",
    "AbstractClipper",
    "AutoClipper",
    "ClipEvent",
    "GuardCounts",
    "NonFiniteGuard",
    "NormClipper",
    "PerParameterNormClipper",
    "ValueClipper",
    "ZScoreClipper",
    "clip_gradients_",
    "make_clipper",
]
