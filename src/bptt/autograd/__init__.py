"""Explicit BPTT: autograd Functions whose backward is the recursion written out."""

from bptt.autograd.elman import ElmanBPTTFunction, elman_bptt
from bptt.autograd.gated import GRUBPTTFunction, LSTMBPTTFunction, gru_bptt, lstm_bptt
from bptt.autograd.oscillators import CoRNNBPTTFunction, LEMBPTTFunction, cornn_bptt, lem_bptt

__all__ = [
    "CoRNNBPTTFunction",
    "ElmanBPTTFunction",
    "GRUBPTTFunction",
    "LEMBPTTFunction",
    "LSTMBPTTFunction",
    "cornn_bptt",
    "elman_bptt",
    "gru_bptt",
    "lem_bptt",
    "lstm_bptt",
]
