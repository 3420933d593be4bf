"""Integrations with training frameworks, each an optional extra.

- :mod:`bptt.integrations.lightning`: :class:`~bptt.integrations.lightning.BPTTCallback`
  for PyTorch Lightning (``pip install bptt[lightning]``).

Nothing is imported here: ``import bptt`` never imports a framework.
"""
