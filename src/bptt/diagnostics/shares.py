r"""Where :math:`G = \partial L / \partial W_{hh}` comes from: its shares by step and by dependency length.

:math:`G = \sum_k g_k h_{k-1}^\top` with :math:`g_k = \partial L / \partial (W_{hh} h_{k-1} + b_{hh})`:
step k's term projects on G as :math:`\langle g_k, G h_{k-1} \rangle`, and these projections sum
to :math:`\|G\|^2`. Divided by :math:`\|G\|^2` they are each step's share of the gradient; the
shares by dependency length split the same sum by how many steps separate the use of
:math:`W_{hh}` from the loss term it reaches.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor
from torch.func import jvp

from bptt.cells import AbstractCell, flatten_state, unflatten_state
from bptt.gradient_profile import sum_by_distance

__all__ = [
    "flat_step", "propagated_shares", "share_scale", "shares_by_distance", "shares_by_position",
    "step_contributions", "weight_tangents",
]  # fmt: skip


def step_contributions(recurrent_grads: Tensor, previous_hidden: Tensor, weight_grad: Tensor) -> Tensor:
    r"""Each step's projection on G, :math:`\langle g_k, G h_{k-1} \rangle` per step and sample.

    Args:
        recurrent_grads: :math:`g_k`, ``(T, B, G*H)``.
        previous_hidden: :math:`h_{k-1}`, ``(T, B, H)``.
        weight_grad: G, a matrix ``(G*H, H)``, or a vector ``(H,)`` for a diagonal recurrent
            weight (IndRNN), where :math:`G h` becomes :math:`G \odot h`.

    Returns:
        ``(T, B)``; the entries sum to :math:`\|G\|^2`.
    """
    moved = previous_hidden * weight_grad if weight_grad.ndim == 1 else previous_hidden @ weight_grad.T
    return (recurrent_grads * moved).sum(-1)


def share_scale(weight_grad: Tensor) -> Tensor:
    r""":math:`1 / \|G\|^2`, the factor that turns projections into shares (0 when G is 0)."""
    total = weight_grad.square().sum()
    return 1 / total if total > 0 else torch.zeros_like(total)


def shares_by_position(contributions: Tensor, scale: Tensor) -> Tensor:
    """The share of G from the use of :math:`W_{hh}` at each step, ``(T,)``; sums to 1."""
    return contributions.sum(1) * scale


def shares_by_distance(
    cell: AbstractCell,
    inputs: Tensor,
    previous: Tensor,
    valid: Tensor,
    direct: Tensor,
    weight_grad: Tensor,
    contributions: Tensor,
    lengths: Tensor,
    many_to_one: bool,
    max_distance: int,
) -> tuple[Tensor, float]:
    r"""The share of G from dependencies exactly ``d`` steps long, and the share beyond.

    A many-to-one loss sits at each sample's last valid step, so step k's projection is a
    dependency ``L_b - 1 - k`` steps long. A many-to-many loss has a term at every step:
    the step-k tangents :func:`weight_tangents` are carried forward one step at a time
    (:func:`propagated_shares`) to separate the distances.

    Args:
        cell: the layer's cell.
        inputs: its inputs, ``(T, B, I)``.
        previous: its flat state before every step, ``(T, B, S)``.
        valid: ``(T, B)`` valid steps.
        direct: the direct derivatives :math:`e_k`, ``(T, B, S)``.
        weight_grad: G.
        contributions: :func:`step_contributions`, ``(T, B)``.
        lengths: ``(B,)`` valid lengths.
        many_to_one: whether the loss reads each sample at its last valid step only.
        max_distance: the longest dependency resolved for a many-to-many loss.

    Returns:
        The shares for d = 0..D, ``(D + 1,)`` (``D = T - 1`` for many-to-one losses, else
        ``min(max_distance, T - 1)``), and the share beyond D (0 for many-to-one losses, or
        when G is 0).
    """
    scale = share_scale(weight_grad)
    if many_to_one:
        return sum_by_distance(contributions, lengths) * scale, 0.0
    tangents = weight_tangents(cell, inputs, previous, valid, weight_grad)
    shares = propagated_shares(flat_step(cell), inputs, previous, valid, direct, tangents, max_distance) * scale
    beyond = float(1 - shares.sum()) if weight_grad.square().sum() > 0 else 0.0
    return shares, beyond


def weight_tangents(
    cell: AbstractCell, inputs: Tensor, previous: Tensor, valid: Tensor, weight_grad: Tensor
) -> Tensor:
    r"""``u[k, b] = ∂⁺h_k/∂W_hh [G]``, the immediate effect on the state of moving
    :math:`W_{hh}` along G = dL/dW_hh at step k, shape ``(T, B, S)`` (zero at padding).

    :math:`\partial L / \partial W_{hh} = \sum_k (\partial^+ h_k / \partial W_{hh})^\top
    \delta_k`, so :math:`s_k = \langle \delta_k, u_k \rangle` is the projection of step k's
    term on G, and :math:`\sum_k s_k = \|G\|^2`: each term's share of the gradient. One
    batched JVP in the direction G gives all of them.
    """
    steps, batch = inputs.shape[:2]
    rows_x = inputs.flatten(0, 1)
    rows_s = unflatten_state(previous.flatten(0, 1), cell.hidden_size)
    h = cell.hidden(rows_s)
    input_part, _ = cell.gate_input(rows_x, h)

    def state_for(weight: Tensor) -> Tensor:
        return flatten_state(cell.pointwise(input_part, cell.recurrent_projection(h, weight), rows_s))

    weight = cell.weight_hh.detach()
    _, tangent = jvp(state_for, (weight,), (weight_grad.to(weight.dtype),))
    return tangent.reshape(steps, batch, -1) * valid.unsqueeze(-1)


def propagated_shares(
    step: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    previous: Tensor,
    valid: Tensor,
    direct: Tensor,
    tangents: Tensor,
    max_distance: int,
) -> Tensor:
    r"""Many-to-many losses: the part of :math:`\|G\|^2` from dependencies d steps long.

    The use of :math:`W_{hh}` at step k reaches the loss terms of step :math:`t = k + d`
    through :math:`J_t \cdots J_{k+1}`. Carrying all step-k tangents forward one step at a
    time (one batched JVP per distance) and meeting them with the direct derivatives
    :math:`e_t` separates the distances: share(d) = :math:`\sum_t \langle e_t,
    J_t \cdots J_{t-d+1} u_{t-d} \rangle`, for d = 0..``max_distance``.
    """
    steps = inputs.shape[0]
    shares = [(direct * tangents).sum()]
    carried = tangents
    for d in range(1, min(max_distance, steps - 1) + 1):
        w = carried[:-1]
        advance = partial(step, inputs[d:].flatten(0, 1))
        _, moved = jvp(advance, (previous[d:].flatten(0, 1),), (w.flatten(0, 1),))
        carried = torch.where(valid[d:].unsqueeze(-1), moved.reshape(w.shape), w)
        shares.append((direct[d:] * carried).sum())
    return torch.stack(shares)


def flat_step(cell: AbstractCell) -> Callable[[Tensor, Tensor], Tensor]:
    """The cell's step on flat states ``(N, S)`` (``S = 2H`` for an LSTM's ``(h, c)``)."""

    def step(x: Tensor, state: Tensor) -> Tensor:
        return flatten_state(cell.step(x, unflatten_state(state, cell.hidden_size)))

    return step
