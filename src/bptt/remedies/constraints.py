r"""Constraints on the recurrent weights that keep the Jacobians' norms near 1.

Two kinds, both :class:`AbstractConstraint`:

- **parametrisations** (:class:`OrthogonalConstraint`): the recurrent weight becomes a
  function of an unconstrained parameter through :mod:`torch.nn.utils.parametrize`,
  :math:`W = B\, \phi(A - A^\top)` per gate block, with :math:`\phi` the matrix exponential
  or the Cayley map. Every gate block stays exactly orthogonal while the optimizer moves
  ``A`` (Lezcano-Casado & Martínez-Rubio 2019, "expRNN"; Helfrich et al. 2018, "scoRNN").
- **projections** (:class:`SpectralBound`): after every optimizer step the weight is
  pulled back into a set, here :math:`\sigma_{\max} \le c` per gate block (a vector
  recurrent weight, as in IndRNN, is clamped to :math:`|u_j| \le c`). With
  :math:`c = \gamma^{1/T}` this is IndRNN's bound (Li et al. 2018): the gradient can grow
  by at most :math:`\gamma` over :math:`T` steps.

Both work on bptt cells and on torch's own ``nn.RNN/GRU/LSTM`` (fused) modules::

    constraint = make_constraint("orthogonal")
    constraint.attach(model)                 # before the optimizer is built
    optimizer = torch.optim.Adam(model.parameters())
    for batch in data:
        ...
        optimizer.step()
        constraint.project_(model)           # a no-op for parametrisations
"""

from __future__ import annotations

import abc
import math
from typing import Any, ClassVar, final

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from bptt._registry import Registry
from bptt.orthogonal import OrthogonalBlocks
from bptt.remedies.stateless import require_empty_state
from bptt.weights import gate_blocks, recurrent_weights

__all__ = [
    "CONSTRAINTS",
    "AbstractConstraint",
    "CayleyConstraint",
    "OrthogonalBlocks",
    "OrthogonalConstraint",
    "SpectralBound",
    "make_constraint",
]

def _gate_blocks(weight: Tensor, owner: nn.Module, name: str, caller: str) -> int:
    """The number ``G`` of square ``(H, H)`` blocks stacked in a recurrent weight."""
    num_gates, _ = gate_blocks(
        weight,
        caller=caller,
        name=f"{type(owner).__name__}.{name}",
        fix="an orthogonal constraint or a spectral bound on blocks needs square blocks (a vector "
        "weight such as IndRNN's takes the 'spectral' or 'indrnn' bound)",
    )
    return num_gates


class AbstractConstraint(abc.ABC):
    """A constraint on every recurrent weight of a model."""

    name: ClassVar[str]

    @abc.abstractmethod
    def attach(self, module: nn.Module) -> nn.Module:
        """Constrain every recurrent weight of ``module`` in place; call it before the
        optimizer is built (a parametrisation replaces the parameters). Returns ``module``.

        Raises:
            ValueError: if ``module`` has no recurrent weight, or one is already constrained.
        """

    @abc.abstractmethod
    def project_(self, module: nn.Module) -> None:
        """Pull the weights back into the constraint set; call it after every optimizer step."""

    def state_dict(self) -> dict[str, Any]:
        """The state a resumed run needs beyond the model's weights (empty: a parametrisation
        keeps its state in the model, a projection keeps none)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state returned by :meth:`state_dict`."""
        require_empty_state(self, state, "constraint")


def _weights_or_raise(module: nn.Module, caller: str) -> list[tuple[nn.Module, str]]:
    """:func:`~bptt.weights.recurrent_weights` of ``module``; raises if there is none."""
    found = recurrent_weights(module)
    if not found:
        raise ValueError(
            f"{caller} expected a module with recurrent weights named 'weight_hh' or "
            f"'weight_hh_l<k>', received {type(module).__name__} with parameters "
            f"{[name for name, _ in module.named_parameters()][:8]}"
        )
    return found


def _attach_orthogonal(module: nn.Module, orthogonal_map: str, caller: str) -> nn.Module:
    """Register :class:`OrthogonalBlocks` with ``orthogonal_map`` on every recurrent weight."""
    for owner, name in _weights_or_raise(module, caller):
        if parametrize.is_parametrized(owner, name):
            kinds = ", ".join(type(p).__name__ for p in owner.parametrizations[name])
            raise ValueError(
                f"{caller} expected an unconstrained recurrent weight, received "
                f"{parametrize.type_before_parametrizations(owner).__name__}.{name}, already computed by "
                f"{kinds}; attach a constraint once (a cell such as exprnn keeps its W_hh orthogonal "
                "itself: give it no --constraint)"
            )
        weight = getattr(owner, name)
        blocks = _gate_blocks(weight, owner, name, caller)
        parametrization = OrthogonalBlocks(blocks, weight.shape[1], orthogonal_map)
        parametrize.register_parametrization(
            owner, name, parametrization.to(device=weight.device, dtype=weight.dtype)
        )
    return module


@final
class OrthogonalConstraint(AbstractConstraint):
    """Keep every gate block of every recurrent weight orthogonal (:class:`OrthogonalBlocks`).

    Args:
        orthogonal_map: ``"matrix_exp"`` (default) or ``"cayley"``.
    """

    name = "orthogonal"

    def __init__(self, orthogonal_map: str = "matrix_exp") -> None:
        if orthogonal_map not in OrthogonalBlocks.MAPS:
            raise ValueError(
                f"orthogonal_map must be one of {OrthogonalBlocks.MAPS}, got {orthogonal_map!r}"
            )
        self.orthogonal_map = orthogonal_map

    def attach(self, module: nn.Module) -> nn.Module:
        return _attach_orthogonal(module, self.orthogonal_map, "OrthogonalConstraint.attach")

    def project_(self, module: nn.Module) -> None:
        """A no-op: the parametrisation keeps every block orthogonal."""

    def __repr__(self) -> str:
        return f"OrthogonalConstraint({self.orthogonal_map!r})"


@final
class CayleyConstraint(AbstractConstraint):
    """:class:`OrthogonalConstraint` with the Cayley map: every gate block of every recurrent
    weight :math:`W_g = B_g (I - S_g/2)^{-1} (I + S_g/2)`, :math:`S_g` skew-symmetric."""

    name = "cayley"
    orthogonal_map: ClassVar[str] = "cayley"

    def attach(self, module: nn.Module) -> nn.Module:
        return _attach_orthogonal(module, self.orthogonal_map, "CayleyConstraint.attach")

    def project_(self, module: nn.Module) -> None:
        """A no-op: the parametrisation keeps every block orthogonal."""

    def __repr__(self) -> str:
        return "CayleyConstraint()"


@final
class SpectralBound(AbstractConstraint):
    r"""Project each recurrent gate block to :math:`\sigma_{\max}(W_g) \le c` after every step.

    A block whose largest singular value exceeds ``c`` is rescaled by :math:`c/\sigma_{\max}`;
    a vector recurrent weight (IndRNN's ``u``, whose Jacobian is diagonal) is clamped to
    :math:`[-c, c]`. With ``horizon=T`` the bound is :math:`c = \gamma^{1/T}`, IndRNN's rule
    (Li et al. 2018): over ``T`` steps the recurrent factor grows at most ``γ``-fold.

    Args:
        bound: ``c``, or ``γ`` when ``horizon`` is given; positive.
        horizon: ``T``; ``None`` uses ``bound`` as the per-step bound itself.
    """

    name = "spectral"

    def __init__(self, bound: float = 1.0, horizon: int | None = None) -> None:
        if not (math.isfinite(bound) and bound > 0):
            raise ValueError(f"the spectral bound must be a positive number, got {bound!r}")
        if horizon is not None and (not isinstance(horizon, int) or horizon < 1):
            raise ValueError(f"horizon must be a positive integer (the sequence length), got {horizon!r}")
        self.bound, self.horizon = bound, horizon

    @property
    def per_step(self) -> float:
        """The bound on each step's recurrent factor."""
        return self.bound if self.horizon is None else self.bound ** (1.0 / self.horizon)

    def attach(self, module: nn.Module) -> nn.Module:
        _weights_or_raise(module, "SpectralBound.attach")
        self.project_(module)
        return module

    @torch.no_grad()
    def project_(self, module: nn.Module) -> None:
        for owner, name in recurrent_weights(module):
            if parametrize.is_parametrized(owner, name):
                raise ValueError(
                    f"{type(owner).__name__}.{name} is parametrised "
                    f"({owner.parametrizations[name]}); a projection would be undone"
                )
            weight = getattr(owner, name)
            if weight.ndim == 1:
                weight.clamp_(-self.per_step, self.per_step)
                continue
            num_gates = _gate_blocks(weight, owner, name, "SpectralBound.project_")
            blocks = weight.view(num_gates, weight.shape[1], -1)
            sigma = torch.linalg.matrix_norm(blocks.float(), ord=2).to(weight.dtype)
            blocks.mul_(torch.clamp(self.per_step / sigma, max=1.0)[:, None, None])

    def __repr__(self) -> str:
        horizon = "" if self.horizon is None else f", horizon={self.horizon}"
        return f"SpectralBound({self.bound}{horizon})"


CONSTRAINTS: Registry[type[AbstractConstraint]] = Registry("constraint")
for _constraint in (OrthogonalConstraint, CayleyConstraint, SpectralBound):
    CONSTRAINTS.register(_constraint.name, _constraint)
CONSTRAINTS.register("indrnn", SpectralBound)


def make_constraint(spec: str, length: int | None = None) -> AbstractConstraint | None:
    """A constraint from a spec, as configs and the CLI write it.

    - ``"orthogonal"``: every gate block orthogonal through the matrix exponential;
    - ``"cayley"``: the same through the Cayley map;
    - ``"spectral:C"``: :math:`\\sigma_{\\max}(W_g) \\le C` after every step (default 1);
    - ``"indrnn:G"``: IndRNN's bound :math:`G^{1/T}` per step, ``T = length`` (default G 2);
    - ``"none"``: no constraint.

    Args:
        spec: the spec.
        length: the sequence length ``T``, needed by ``"indrnn"``.

    Raises:
        ValueError: for an unknown name, a value that is not a number or out of range, a
            value given to a constraint that takes none, or ``"indrnn"`` without a length.
    """
    parsed = CONSTRAINTS.parse(spec)
    if parsed is None:
        return None
    name, cls, number = parsed
    if cls is not SpectralBound:
        if number is not None:
            raise ValueError(f"constraint {name!r} takes no value, received {spec!r}; write '{name}'")
        return cls()
    if name == "spectral":
        return SpectralBound(1.0 if number is None else number)
    if length is None:
        raise ValueError("the 'indrnn' bound gamma^(1/T) needs the sequence length T; pass length=")
    return SpectralBound(2.0 if number is None else number, horizon=length)
