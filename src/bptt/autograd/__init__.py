"""Explicit BPTT: autograd Functions whose backward is the recursion written out."""

from bptt.autograd.elman import ElmanBPTTFunction, elman_bptt
from bptt.autograd.gated import GRUBPTTFunction, LSTMBPTTFunction, gru_bptt, lstm_bptt

__all__ = [
    "ElmanBPTTFunction",
    "GRUBPTTFunction",
    "LSTMBPTTFunction",
    "elman_bptt",
    "gru_bptt",
    "lstm_bptt",
]
