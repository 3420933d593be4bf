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
from bptt.remedies.constraints import (
    CONSTRAINTS,
    AbstractConstraint,
    CayleyConstraint,
    OrthogonalBlocks,
    OrthogonalConstraint,
    SpectralBound,
    make_constraint,
)
from bptt.remedies.guards import GuardCounts, NonFiniteGuard
from bptt.remedies.regularizers import (
    REGULARIZERS,
    AbstractRegularizer,
    L2Regularizer,
    LyapunovRegularizer,
    PascanuRegularizer,
    lyapunov_spectrum,
    make_regularizer,
)

__all__ = [
    "CLIPPERS",
    "CONSTRAINTS",
    "REGULARIZERS",
    "AGCClipper",
    "AbstractClipper",
    "AbstractConstraint",
    "AbstractRegularizer",
    "AutoClipper",
    "CayleyConstraint",
    "ClipEvent",
    "GuardCounts",
    "L2Regularizer",
    "LyapunovRegularizer",
    "NonFiniteGuard",
    "NormClipper",
    "OrthogonalBlocks",
    "OrthogonalConstraint",
    "PascanuRegularizer",
    "PerParameterNormClipper",
    "SpectralBound",
    "ValueClipper",
    "ZScoreClipper",
    "clip_gradients_",
    "lyapunov_spectrum",
    "make_clipper",
    "make_constraint",
    "make_regularizer",
]
