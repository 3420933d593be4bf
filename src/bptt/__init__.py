"""bptt: make recurrent networks trainable on long sequences."""

from bptt.autograd import elman_bptt
from bptt.builders import build_model
from bptt.cells import (
    CELLS,
    AbstractCell,
    CoRNNCell,
    ElmanCell,
    ExpRNNCell,
    GRUCell,
    IndRNNCell,
    LEMCell,
    LSTMCell,
    ResidualElmanCell,
    SkipElmanCell,
)
from bptt.config import TrainConfig
from bptt.diagnostics import (
    Diagnosis,
    GradientProfile,
    Watch,
    decay_rate,
    diagnose,
    effective_horizon,
    gradient_profiles,
    watch,
)
from bptt.models import LastStepHead, PerStepHead, SequenceModel
from bptt.recurrent import Recurrent
from bptt.training import RunResult, parameter_groups, train

__version__ = "0.1.0"

__all__ = [
    "CELLS",
    "AbstractCell",
    "CoRNNCell",
    "Diagnosis",
    "ElmanCell",
    "ExpRNNCell",
    "GRUCell",
    "GradientProfile",
    "IndRNNCell",
    "LEMCell",
    "LSTMCell",
    "LastStepHead",
    "PerStepHead",
    "Recurrent",
    "ResidualElmanCell",
    "RunResult",
    "SequenceModel",
    "SkipElmanCell",
    "TrainConfig",
    "Watch",
    "build_model",
    "decay_rate",
    "diagnose",
    "effective_horizon",
    "elman_bptt",
    "gradient_profiles",
    "parameter_groups",
    "train",
    "watch",
]
