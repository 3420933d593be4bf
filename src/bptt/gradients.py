r"""The global gradient norm: one definition for clipping, the watch and the doctor.

A leaf module (it imports nothing of bptt).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

__all__ = ["global_grad_norm"]


def global_grad_norm(parameters: Iterable[Tensor]) -> Tensor:
    r"""The L2 norm of all the parameters' gradients taken together.

    .. math::
        \|g\|_2 = \Big(\sum_p \|g_p\|_2^2\Big)^{1/2}

    as :func:`torch.nn.utils.clip_grad_norm_` measures it before clipping. No host-device
    sync: call ``float()`` on the result when the number is needed on the host.

    Args:
        parameters: tensors whose ``.grad`` are measured; those without one are left out.

    Returns:
        A 0-d tensor on the gradients' device (``0.`` when no parameter has a gradient).
        NaN or Inf in any gradient makes it non-finite.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads)
