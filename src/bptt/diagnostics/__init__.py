"""Diagnostics: see the gradient along the time axis."""

from bptt.diagnostics.anomalies import (
    LossSpikeDetector,
    NonFiniteReport,
    OscillationDetector,
)
from bptt.diagnostics.depth import DepthDiagnosis, diagnose_depth
from bptt.diagnostics.diagnosis import default_loss, diagnose, gradient_profiles
from bptt.diagnostics.profile import decay_rate, effective_horizon
from bptt.diagnostics.records import Diagnosis, DiagnosisRecord, LayerDiagnosis, LayerRecord
from bptt.diagnostics.verdict import Verdict
from bptt.diagnostics.watching import Watch, watch
from bptt.gradient_profile import GradientProfile

__all__ = [
    "DepthDiagnosis",
    "Diagnosis",
    "DiagnosisRecord",
    "GradientProfile",
    "LayerDiagnosis",
    "LayerRecord",
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
