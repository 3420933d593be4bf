r"""The nonlinearities of the Elman cells, each with its derivative and torch's fused mode.

One table, :data:`ACTIVATIONS`, read by the cells (:class:`bptt.cells.AbstractElmanCell`), the
explicit BPTT (:func:`bptt.autograd.elman_bptt`) and the diagnostics. For each name:

========= ===================== ================================= ==================== ==========
name      :math:`f(z)`          :math:`f'(z)`                     :math:`f'` from h    torch mode
========= ===================== ================================= ==================== ==========
tanh      :math:`\tanh z`       :math:`1 - \tanh^2 z`             :math:`1 - h^2`      RNN_TANH
relu      :math:`\max(z, 0)`    :math:`[z > 0]`                   :math:`[h > 0]`      RNN_RELU
sigmoid   :math:`\sigma(z)`     :math:`\sigma(z)(1 - \sigma(z))`  :math:`h (1 - h)`    (none)
========= ===================== ================================= ==================== ==========

The derivative is a function of the output :math:`h = f(z)` for all three, so a backward
pass need not keep :math:`z`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, final

import torch
from torch import Tensor

from bptt._registry import Registry

__all__ = ["ACTIVATIONS", "Activation", "activation"]


@final
@dataclass(frozen=True)
class Activation:
    """A nonlinearity ``f`` and what the cells and the backward passes need of it.

    Args:
        name: its name in :data:`ACTIVATIONS`.
        function: :math:`f`, elementwise.
        function_: :math:`f` in place (returns its argument).
        derivative: :math:`f'(z)` from the pre-activation ``z``.
        derivative_from_output: ``(h, out)`` -> :math:`f'(z)` from the output
            :math:`h = f(z)`, written into ``out`` when it is given (the explicit BPTT
            reuses one buffer: on the CPU a fresh ``(T, B, H)`` tensor costs page faults
            comparable to the arithmetic done on it).
        fused_mode: the mode of :class:`torch.nn.RNN` that computes ``f``
            (``"RNN_TANH"``, ``"RNN_RELU"``), or ``None`` if torch has no fused kernel for it.
    """

    name: str
    function: Callable[[Tensor], Tensor]
    function_: Callable[[Tensor], Tensor]
    derivative: Callable[[Tensor], Tensor]
    derivative_from_output: Callable[[Tensor, Tensor | None], Tensor]
    fused_mode: str | None


def _tanh_derivative(z: Tensor) -> Tensor:
    return 1 - torch.tanh(z).square()


def _tanh_derivative_from_output(h: Tensor, out: Tensor | None = None) -> Tensor:
    return torch.addcmul(h.new_ones(()), h, h, value=-1.0, out=out)  # 1 - h^2


def _sigmoid_derivative(z: Tensor) -> Tensor:
    sigma = torch.sigmoid(z)
    return sigma * (1 - sigma)


def _sigmoid_derivative_from_output(h: Tensor, out: Tensor | None = None) -> Tensor:
    return torch.addcmul(h, h, h, value=-1.0, out=out)  # h (1 - h)


def _relu_derivative(z: Tensor) -> Tensor:
    return (z > 0).to(z.dtype)


def _relu_derivative_from_output(h: Tensor, out: Tensor | None = None) -> Tensor:
    # 1 where h > 0 (that is, z > 0), else 0
    return (h > 0).to(h.dtype) if out is None else torch.gt(h, 0, out=out)


ACTIVATIONS: Final[Registry[Activation]] = Registry("nonlinearity")
"""The nonlinearities by name: ``"tanh"``, ``"relu"``, ``"sigmoid"``."""
ACTIVATIONS.register(
    "tanh",
    Activation("tanh", torch.tanh, torch.tanh_, _tanh_derivative, _tanh_derivative_from_output, "RNN_TANH"),
)
ACTIVATIONS.register(
    "relu",
    Activation("relu", torch.relu, torch.relu_, _relu_derivative, _relu_derivative_from_output, "RNN_RELU"),
)
ACTIVATIONS.register(
    "sigmoid",
    Activation(
        "sigmoid", torch.sigmoid, torch.sigmoid_, _sigmoid_derivative, _sigmoid_derivative_from_output, None
    ),
)


def activation(name: str) -> Activation:
    """The :class:`Activation` named ``name``.

    Raises:
        ValueError: for an unknown name; the message lists the known ones and suggests the
            closest (``"tahn"`` -> ``"tanh"``).
    """
    return ACTIVATIONS.get(name)
