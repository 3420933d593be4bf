"""Where a module keeps its recurrent weights, and their gate blocks.

Recurrent weights follow torch's layout: ``weight_hh`` has shape ``(G*H, H)``, the ``G``
gate blocks (1 for Elman; 3 for GRU: r, z, n; 4 for LSTM: i, f, g, o) stacked along dim 0,
named ``weight_hh`` in bptt's and torch's cells and ``weight_hh_l<k>`` (``_reverse``) in
torch's RNN modules. The initialisers, the constraints, the regularisers and the explicit
BPTT all find and check them here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, final

from torch import Tensor, nn
from torch.nn.utils import parametrize

__all__ = ["RECURRENT_WEIGHT", "RecurrentLayer", "gate_blocks", "recurrent_layers", "recurrent_weights"]


def gate_blocks(
    weight: Tensor,
    num_gates: int | None = None,
    *,
    caller: str,
    name: str = "the tensor",
    gate_names: str = "",
    fix: str = "pass the recurrent weight weight_hh (not weight_ih) and num_gates = rows // columns",
) -> tuple[int, int]:
    r"""Check that ``weight`` is ``G`` square ``(H, H)`` gate blocks stacked along dim 0.

    This is torch's layout of a recurrent weight ``weight_hh`` (``G`` = 1 Elman, 3 GRU,
    4 LSTM). Every function that reads gate blocks checks them here.

    Args:
        weight: the tensor to check.
        num_gates: ``G`` when the caller knows it; ``None`` infers ``G = rows // columns``.
        caller: the function checking, named at the start of the message.
        name: what ``weight`` is, in the message (e.g. ``"weight_hh"``).
        gate_names: the gates in stacking order (e.g. ``"i, f, g, o"``), in the message.
        fix: how to fix the call, ending the message.

    Returns:
        ``(G, H)``.

    Raises:
        ValueError: if ``num_gates`` is not a positive integer, or ``weight`` is not 2-D,
            empty, or not ``G`` square blocks; the message states the expected and received
            shapes.
    """
    if num_gates is not None and (isinstance(num_gates, bool) or not isinstance(num_gates, int) or num_gates < 1):
        raise ValueError(
            f"{caller} expected num_gates to be a positive integer (1 Elman, 3 GRU, 4 LSTM), "
            f"received {num_gates!r}"
        )
    shape = tuple(weight.shape)
    rows, cols = shape if len(shape) == 2 else (0, 0)
    gates = num_gates if num_gates is not None else rows // cols if cols else 0
    if len(shape) != 2:
        problem = "it is not 2-D"
    elif rows == 0 or cols == 0:
        problem = "it is empty"
    elif num_gates is not None and rows % num_gates != 0:
        problem = f"its {rows} rows do not split into {num_gates} blocks (choose a num_gates that divides {rows})"
    elif gates == 0 or rows != gates * cols:
        problem = f"its blocks of {cols} columns are not square"
    else:
        return gates, cols
    stacked = "G*H" if num_gates is None else "H" if num_gates == 1 else f"{num_gates}H"
    if num_gates == 1:
        layout = "a square 2-D tensor"
    else:
        gate_list = f" {gate_names}" if gate_names else ""
        layout = f"{'G' if num_gates is None else num_gates} square (H, H) gate blocks{gate_list} stacked along dim 0"
    raise ValueError(
        f"{caller} expected {name} of shape ({stacked}, H) with H >= 1 ({layout}), got {shape}: {problem}; {fix}"
    )


@final
@dataclass(frozen=True)
class RecurrentLayer:
    """The parameters of one recurrent layer (one direction), as torch names them.

    Args:
        name: qualified name of the recurrent weight in its module (e.g.
            ``"weight_hh_l1"`` or ``"cells.0.weight_hh"``), used in messages.
        weight_hh: recurrent weight, ``(G*H, H)``.
        weight_ih: input weight ``(G*H, I)``, or ``None`` if the layer has none.
        biases: the layer's ``bias_ih`` and ``bias_hh`` that exist (none if ``bias=False``).
        projection: the LSTM projection ``weight_hr`` (``proj_size > 0``), else ``None``.
    """

    name: str
    weight_hh: Tensor
    weight_ih: Tensor | None
    biases: tuple[Tensor, ...]
    projection: Tensor | None

    @property
    def num_gates(self) -> int:
        """``G = rows // columns`` of :attr:`weight_hh` (1 Elman, 3 GRU, 4 LSTM).

        Raises:
            ValueError: if :attr:`weight_hh` is not a stack of square ``(H, H)`` blocks.
        """
        if self.projection is not None:
            raise ValueError(
                f"{self.name} belongs to an LSTM with proj_size > 0, whose recurrent gate "
                f"blocks {tuple(self.weight_hh.shape)} are not square; expected proj_size=0 "
                f"for this scheme, or initialise {self.name} yourself"
            )
        num_gates, _ = gate_blocks(
            self.weight_hh,
            caller="the initialisation",
            name=self.name,
            fix="this scheme applies to torch-layout recurrent weights only",
        )
        return num_gates


RECURRENT_WEIGHT: Final = re.compile(r"weight_hh(?P<suffix>_l\d+(?:_reverse)?)?")
"""The name of a recurrent weight: ``weight_hh`` (bptt cells, torch's cells) or
``weight_hh_l<k>`` / ``weight_hh_l<k>_reverse`` (torch's RNN modules, group ``suffix``)."""


def _recurrent_weight_names(owner: nn.Module) -> list[str]:
    """The names of the recurrent weights that ``owner`` holds itself, sorted: parameters,
    and weights computed by a parametrisation (:mod:`torch.nn.utils.parametrize`)."""
    names = set(dict(owner.named_parameters(recurse=False)))
    if parametrize.is_parametrized(owner):
        names |= set(owner.parametrizations.keys())
    return [name for name in sorted(names) if RECURRENT_WEIGHT.fullmatch(name)]


def recurrent_weights(module: nn.Module) -> list[tuple[nn.Module, str]]:
    """``(owner, name)`` of every recurrent weight in ``module`` (see :data:`RECURRENT_WEIGHT`),
    constrained by a parametrisation or not; ``getattr(owner, name)`` is the weight."""
    return [(owner, name) for _, owner in module.named_modules() for name in _recurrent_weight_names(owner)]


def recurrent_layers(module: nn.Module) -> list[RecurrentLayer]:
    """Every recurrent layer in ``module``: one per parameter named ``weight_hh``,
    ``weight_hh_l<k>`` or ``weight_hh_l<k>_reverse``, with its sibling input weight and
    biases (same owner, same suffix). A weight computed by a parametrisation is not a
    parameter to initialise and is left out."""
    layers = []
    for prefix, owner in module.named_modules():
        parameters = dict(owner.named_parameters(recurse=False))
        for name in _recurrent_weight_names(owner):
            if name not in parameters:
                continue
            suffix = RECURRENT_WEIGHT.fullmatch(name)["suffix"] or ""
            biases = (parameters.get(f"bias_ih{suffix}"), parameters.get(f"bias_hh{suffix}"))
            layers.append(
                RecurrentLayer(
                    name=f"{prefix}.{name}" if prefix else name,
                    weight_hh=parameters[name],
                    weight_ih=parameters.get(f"weight_ih{suffix}"),
                    biases=tuple(bias for bias in biases if bias is not None),
                    projection=parameters.get(f"weight_hr{suffix}"),
                )
            )
    return layers
