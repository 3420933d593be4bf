r"""Penalties added to the loss against vanishing and exploding gradients.

Every rule is an :class:`AbstractRegularizer`: ``regularizer.penalty(model, loss, tapes)``
is a scalar to add to the loss before ``backward()``. Rules about the dynamics read the
:class:`~bptt.recurrent.LayerTape` of every layer (``needs_tape``), which the forward pass
records inside :meth:`bptt.Recurrent.recording_tape` (it runs the unrolled loop, slower
than the fused kernel, so record only when the rule needs it)::

    regularizer = make_regularizer("pascanu:2")
    for x, y in data:
        with model.recurrent.recording_tape() as tapes:
            loss = loss_fn(model(x), y)
        total = loss + regularizer.penalty(model, loss, tapes)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
"""

from __future__ import annotations

import abc
import math
from functools import partial
from typing import Any, ClassVar, final

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor, nn

from bptt._registry import Registry
from bptt.cells import AbstractCell, State, flatten_state, map_state, unflatten_state
from bptt.recurrent import LayerTape
from bptt.remedies.stateless import require_empty_state
from bptt.weights import recurrent_weights

__all__ = [
    "REGULARIZERS",
    "AbstractRegularizer",
    "L2Regularizer",
    "LyapunovRegularizer",
    "PascanuRegularizer",
    "lyapunov_spectrum",
    "make_regularizer",
]

# a delta below this fraction of the largest one carries no gradient (Pascanu)
_NEGLIGIBLE = 1e-12


class AbstractRegularizer(abc.ABC):
    """A penalty on the model, added to the loss: ``loss + regularizer.penalty(...)``.

    Args:
        weight: the factor in front of the penalty, a positive finite number.
    """

    name: ClassVar[str]
    needs_tape: ClassVar[bool]
    """``True`` if :meth:`penalty` needs the :class:`~bptt.recurrent.LayerTape` of every
    layer, recorded by :meth:`bptt.Recurrent.recording_tape` during the forward pass."""

    def __init__(self, weight: float) -> None:
        if isinstance(weight, bool) or not (
            isinstance(weight, int | float) and math.isfinite(weight) and weight > 0
        ):
            raise ValueError(
                f"the weight of {type(self).__name__} must be a positive finite number, "
                f"received {weight!r}; e.g. make_regularizer('{self.name}:1.0')"
            )
        self.weight = float(weight)

    @abc.abstractmethod
    def penalty(
        self, model: nn.Module, loss: Tensor, tapes: list[LayerTape] | None
    ) -> Tensor:
        """The weighted penalty to add to the loss.

        Args:
            model: the model being trained.
            loss: the loss of the forward pass, still in the autograd graph.
            tapes: the layer tapes of that forward pass; ``None`` unless ``needs_tape``.

        Returns:
            A 0-d tensor, differentiable with respect to the model's parameters.
        """

    def _tapes(self, tapes: list[LayerTape] | None) -> list[LayerTape]:
        if not tapes:
            raise ValueError(
                f"{type(self).__name__} needs the layer tapes of the forward pass, received "
                f"{tapes!r}; run the forward pass inside `with model.recurrent.recording_tape() "
                "as tapes:` and pass `tapes`"
            )
        return tapes

    def state_dict(self) -> dict[str, Any]:
        """The state a resumed run needs (empty: the penalties here keep none)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state returned by :meth:`state_dict`."""
        require_empty_state(self, state, "regulariser")

    def __repr__(self) -> str:
        public = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in public.items())})"


@final
class L2Regularizer(AbstractRegularizer):
    r"""Squared Frobenius norm of the recurrent weights.

    .. math::
        \Omega = w \sum_{\text{layers}} \|W_{hh}\|_F^2

    over every parameter named ``weight_hh`` (bptt cells) or ``weight_hh_l<k>`` (torch's
    fused modules). Its gradient is :math:`2 w W_{hh}`. To decay *all* parameters, use the
    optimizer's ``weight_decay`` instead.

    Args:
        weight: :math:`w`.
    """

    name = "l2"
    needs_tape = False

    def __init__(self, weight: float = 1e-4) -> None:
        super().__init__(weight)

    def penalty(
        self, model: nn.Module, loss: Tensor, tapes: list[LayerTape] | None
    ) -> Tensor:
        weights = [getattr(owner, name) for owner, name in recurrent_weights(model)]
        if not weights:
            names = [n for n, _ in model.named_parameters()]
            raise ValueError(
                f"found no recurrent weight (a parameter named weight_hh or weight_hh_l<k>) "
                f"among the model's parameters {names}; use optimizer weight decay instead"
            )
        return self.weight * sum(w.square().sum() for w in weights)


@final
class PascanuRegularizer(AbstractRegularizer):
    r"""Keeps the backpropagated gradient's norm from changing (Pascanu et al. 2013, eq. 9).

    .. math::
        \Omega = w \cdot \operatorname{mean}_{k, b} \left(
            \frac{\| J_k^T \delta_k \|}{\| \delta_k \|} - 1 \right)^2,
        \qquad \delta_k = \frac{\partial L}{\partial s_k}, \quad
        J_k = \frac{\partial s_k}{\partial s_{k-1}}

    over every valid step ``k`` (the first one, from the initial state, included) and
    sample ``b``, for each layer's flat state ``s`` (an LSTM's ``cat([h, c])``); the layers'
    means are averaged. As in the paper, :math:`\delta_k`, the states and the inputs are
    constants: only :math:`J_k`'s dependence on the parameters is differentiated. Padded
    steps and those whose :math:`\delta_k` is negligible (below ``1e-12`` of the largest)
    are left out.

    Cost: a backward pass for the :math:`\delta_k`, one re-run of all steps batched
    together, and a double backward through it.

    Args:
        weight: :math:`w`.
    """

    name = "pascanu"
    needs_tape = True

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__(weight)

    def penalty(
        self, model: nn.Module, loss: Tensor, tapes: list[LayerTape] | None
    ) -> Tensor:
        tapes = self._tapes(tapes)
        if not loss.requires_grad:
            raise ValueError(
                "the loss does not require grad, so dL/ds_k is unknown; compute it with "
                "autograd enabled (not under torch.no_grad()) and before backward()"
            )
        deltas = _total_derivatives(loss, tapes)
        terms = [
            _pascanu_term(tape, delta)
            for tape, delta in zip(tapes, deltas, strict=True)
        ]
        return self.weight * torch.stack(terms).mean()


@final
class LyapunovRegularizer(AbstractRegularizer):
    r"""Gradient flossing (Engelken 2023): pushes the top Lyapunov exponents towards 0.

    .. math::
        \Omega = w \sum_{i=1}^{k} \lambda_i^2

    with :math:`\lambda_i` the exponents of each layer along the recorded trajectory (see
    :func:`lyapunov_spectrum`; the layer's states and inputs are constants), averaged over
    the first ``samples`` sequences of the batch; the layers' penalties are averaged.
    :math:`\lambda_1 < 0` means vanishing and :math:`> 0` exploding gradients, so the penalty
    keeps long products of Jacobians from doing either.

    Cost: ``T`` sequential steps on ``k * samples`` rows with a forward-mode tangent, a
    small QR each, and the backward pass through them.

    Args:
        weight: :math:`w`.
        k: how many exponents to floss.
        samples: how many sequences of the batch to compute them on.
    """

    name = "lyapunov"
    needs_tape = True

    def __init__(self, weight: float = 1.0, k: int = 1, samples: int = 4) -> None:
        super().__init__(weight)
        for name, value in (("k", k), ("samples", samples)):
            if isinstance(value, bool) or not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be a positive int, received {value!r}")
        self.k, self.samples = k, samples

    def penalty(
        self, model: nn.Module, loss: Tensor, tapes: list[LayerTape] | None
    ) -> Tensor:
        terms = []
        for tape in self._tapes(tapes):
            rows = slice(0, self.samples)
            mask = None if tape.mask is None else tape.mask[:, rows]
            before = _states_before(tape)[:, rows]
            inputs = tape.inputs[:, rows]
            exponents = lyapunov_spectrum(
                tape.cell, inputs, None, self.k, states=before, mask=mask
            )
            terms.append(exponents.square().sum())
        return self.weight * torch.stack(terms).mean()


def lyapunov_spectrum(
    cell: AbstractCell,
    inputs: Tensor,
    initial_state: State | None,
    k: int,
    *,
    states: Tensor | None = None,
    mask: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""The top ``k`` Lyapunov exponents of ``cell`` along a trajectory, differentiably.

    Runs the trajectory without gradients (unless ``states`` gives it), then the QR method
    (:func:`bptt.diagnostics.jacobian.lyapunov_exponents` computes the same, detached):

    .. math::
        Q_t R_t = J_t Q_{t-1}, \qquad
        \lambda_i = \frac{1}{T_{\text{valid}}} \sum_t \log |(R_t)_{ii}|

    with :math:`Q_0` a random orthonormal S x k matrix. :math:`J_t` is evaluated at the
    recorded (constant) states but keeps its dependence on the cell's parameters, so the
    result can be backpropagated to them.

    Args:
        cell: the cell.
        inputs: its input at every step.
        initial_state: the state before the first step; ``None`` = zeros.
        k: how many exponents, in ``[1, S]`` (S = flat state size, 2H for an LSTM).
        states: the flat state before every step (:func:`~bptt.cells.flatten_state`),
            e.g. ``initial`` and ``states[:-1]`` of a :class:`~bptt.recurrent.LayerTape`;
            when given, the trajectory is not re-run and ``initial_state`` must be ``None``.
        mask: ``True`` at real steps, ``False`` at padding (skipped); ``None`` = all real.
        generator: for :math:`Q_0`; ``None`` = a generator seeded with 0.

    Returns:
        Each sample's exponents sorted in descending order, averaged over samples.

    Shape:
        - inputs: ``(T, B, I)``, states: ``(T, B, S)``, mask: ``(T, B)``
        - output: ``(k,)``
    """
    if inputs.ndim != 3:
        raise ValueError(
            f"expected inputs of shape (T, B, I), received shape {tuple(inputs.shape)}; "
            "add the missing time or batch dimension with unsqueeze"
        )
    if states is None:
        states = _trajectory(cell, inputs, initial_state, mask)
    elif initial_state is not None:
        raise ValueError(
            "received both initial_state and states; the states before every step already "
            "fix the trajectory, so pass initial_state=None"
        )
    elif states.shape[:2] != inputs.shape[:2]:
        raise ValueError(
            f"expected states of shape (T, B, S) with (T, B) = {tuple(inputs.shape[:2])} like "
            f"the inputs, received shape {tuple(states.shape)}"
        )
    return _exponents(cell, inputs, states.detach(), k, mask, generator).mean(0)


@torch.no_grad()
def _trajectory(
    cell: AbstractCell, inputs: Tensor, initial_state: State | None, mask: Tensor | None
) -> Tensor:
    """The flat state before every step, ``(T, B, S)``; padding freezes it, as in bptt.Recurrent."""
    state = initial_state
    if state is None:
        state = cell.init_state(
            inputs.shape[1], device=inputs.device, dtype=inputs.dtype
        )
    before = []
    for t, x_t in enumerate(inputs.unbind(0)):
        before.append(flatten_state(state))
        new = cell.step(x_t, state)
        if mask is not None:
            new = map_state(partial(torch.where, mask[t, :, None]), new, state)
        state = new
    return torch.stack(before)


def _exponents(
    cell: AbstractCell,
    inputs: Tensor,
    before: Tensor,
    k: int,
    mask: Tensor | None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Per-sample exponents ``(B, k)``, sorted, from the flat states before each step ``(T, B, S)``."""
    steps, batch, size = before.shape
    if not 1 <= k <= size:
        raise ValueError(
            f"expected k in [1, S] = [1, {size}] (S = flat state size), received k={k}"
        )
    if generator is None:
        generator = torch.Generator(before.device).manual_seed(0)
    start = torch.randn(
        (batch, size, k), generator=generator, dtype=before.dtype, device=before.device
    )
    q = torch.linalg.qr(start).Q  # (B, S, k)
    total = before.new_zeros(batch, k)
    for t, (x_t, before_t) in enumerate(zip(inputs.detach().unbind(0), before.detach().unbind(0), strict=True)):
        # J_t Q, all k columns at once: they are stacked into the batch and pushed through
        # the step as forward-mode tangents (dual numbers), and ordinary autograd
        # differentiates the tangent w.r.t. the parameters. It works for every cell, costs
        # about two forward passes of one step and never builds the S x S Jacobian; it is
        # simpler than a double VJP and about twice as fast as torch.func.jvp here.
        x = x_t.repeat(k, 1)
        with fwAD.dual_level():
            tangents = q.permute(2, 0, 1).flatten(0, 1)  # (k * B, S)
            dual = fwAD.make_dual(before_t.repeat(k, 1), tangents)
            new = cell.step(x, unflatten_state(dual, cell.hidden_size))
            image = fwAD.unpack_dual(flatten_state(new)).tangent  # (k * B, S)
        q_new, r = torch.linalg.qr(image.unflatten(0, (k, batch)).permute(1, 2, 0))
        logs = r.diagonal(dim1=-2, dim2=-1).abs().log()
        if mask is None:
            q, total = q_new, total + logs
        else:
            q = torch.where(mask[t, :, None, None], q_new, q)
            total = total + torch.where(mask[t, :, None], logs, 0.0)
    counts = steps if mask is None else mask.sum(0)[:, None]
    return (total / counts).sort(dim=1, descending=True).values


def _states_before(tape: LayerTape) -> Tensor:
    """The flat state before every step, ``(T, B, S)``, detached."""
    states = [tape.initial, *tape.states[:-1]]
    return torch.stack([flatten_state(s) for s in states]).detach()


def _total_derivatives(loss: Tensor, tapes: list[LayerTape]) -> list[Tensor]:
    """``dL/ds_t`` for every tape, flat and detached, ``(T, B, S)``; one backward pass."""
    parts = [
        [p for s in tape.states for p in (s if isinstance(s, tuple) else (s,))]
        for tape in tapes
    ]
    grads = torch.autograd.grad(
        loss,
        [p for tape_parts in parts for p in tape_parts],
        retain_graph=True,
        allow_unused=True,
        materialize_grads=True,
    )
    deltas, start = [], 0
    for tape, tape_parts in zip(tapes, parts, strict=True):
        chunk = torch.stack(grads[start : start + len(tape_parts)])  # (T * P, B, H)
        start += len(tape_parts)
        per_step = chunk.unflatten(0, (len(tape.states), -1))  # (T, P, B, H)
        deltas.append(
            per_step.transpose(1, 2).flatten(2)
        )  # (T, B, P*H) as flatten_state
    return deltas


def _pascanu_term(tape: LayerTape, delta: Tensor) -> Tensor:
    """One layer's mean of ``(||J_k^T u_k|| - 1)^2`` with ``u_k = delta_k / ||delta_k||``."""
    norms = delta.norm(dim=-1)  # (T, B)
    tiny = torch.finfo(norms.dtype).tiny
    keep = norms > (_NEGLIGIBLE * norms.max()).clamp_min(tiny)
    if tape.mask is not None:
        keep = keep & tape.mask
    units = torch.where(keep[..., None], delta / norms.clamp_min(tiny)[..., None], 0.0)
    # every step at once: time is stacked into the batch, J^T u is the VJP of the re-run step
    prev = _states_before(tape).flatten(0, 1).requires_grad_()
    cell = tape.cell
    new = cell.step(
        tape.inputs.detach().flatten(0, 1), unflatten_state(prev, cell.hidden_size)
    )
    (back,) = torch.autograd.grad(
        flatten_state(new), prev, units.flatten(0, 1), create_graph=True
    )
    ratios = back.norm(dim=-1).unflatten(0, keep.shape)
    squares = torch.where(keep, (ratios - 1).square(), 0.0)
    return squares.sum() / keep.sum().clamp_min(1)


REGULARIZERS: Registry[type[AbstractRegularizer]] = Registry("regularizer")
for _regularizer in (L2Regularizer, PascanuRegularizer, LyapunovRegularizer):
    REGULARIZERS.register(_regularizer.name, _regularizer)
REGULARIZERS.register("flossing", LyapunovRegularizer)


def make_regularizer(spec: str) -> AbstractRegularizer | None:
    """A regularizer from a spec ``"NAME"`` or ``"NAME:WEIGHT"``, as configs and the CLI write it.

    ``"l2:1e-4"``, ``"pascanu:2"``, ``"lyapunov:1"`` (alias ``"flossing"``); a bare name
    takes the class's default weight.

    Args:
        spec: the spec; ``"none"`` means no regularizer.

    Returns:
        The regularizer, or ``None`` for ``"none"``.

    Raises:
        ValueError: for an unknown name (with the known ones listed), a weight that is not
            a number, or a weight that is not positive and finite.
    """
    parsed = REGULARIZERS.parse(spec)
    if parsed is None:
        return None
    _, cls, weight = parsed
    return cls() if weight is None else cls(weight)
