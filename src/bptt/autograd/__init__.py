"""Explicit BPTT: autograd Functions whose backward is the recursion written out."""

from bptt.autograd.elman import ElmanBPTTFunction, elman_bptt

__all__ = ["ElmanBPTTFunction", "elman_bptt"]
