"""Diagnostics: see the gradient along the time axis."""

from bptt.gradient_profile import GradientProfile

from bptt.diagnostics.anomalies import (
    LossSpikeDetector,
    NonFiniteReport,
    OscillationDetector,
)
from bptt.diagnostics.depth import DepthDiagnosis, diagnose_depth
from bptt.diagnostics.diagnosis import (
    Diagnosis,
    LayerDiagnosis,
    default_loss,
    diagnose,
    gradient_profiles,
)
from bptt.diagnostics.profile import decay_rate, effective_horizon
from bptt.diagnostics.verdict import Verdict
from bptt.diagnostics.watch import Watch, watch

__all__ = [
    "DepthDiagnosis",
    "Diagnosis",
    "GradientProfile",
    "LayerDiagnosis",
    "LossSpikeDetector",
    "NonFiniteReport",
    "OscillationDetector",
    "Verdict",
    "Watch",
    "decay_rate",
    "default_loss",
    "diagnose",
    "diagnose_depth",
    "effective_horizon",
    "gradient_profiles",
    "watch",
]
