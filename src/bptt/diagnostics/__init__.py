"""Diagnostics: see the gradient along the time axis."""

from bptt.diagnostics.profile import GradientProfile, decay_rate, effective_horizon

__all__ = ["GradientProfile", "decay_rate", "effective_horizon"]
