"""Integrations with training frameworks, each an optional extra.

- :mod:`bptt.integrations.lightning`: :class:`~bptt.integrations.lightning.BPTTCallback`
  for PyTorch Lightning (``pip install bptt[lightning]``).
- :mod:`bptt.integrations.tensorboard`: :class:`~bptt.integrations.tensorboard.TensorBoardLog`,
  a run's records as TensorBoard events (``bptt train --tensorboard``;
  ``pip install bptt[tensorboard]``).

Nothing is imported here: ``import bptt`` never imports a framework.
"""
