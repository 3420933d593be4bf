r"""The one backward pass of a diagnosis, and what the measurements read from a layer's tape.

One :func:`torch.autograd.grad` call gives, per taped layer and step, the total derivative
:math:`\delta_k = \partial L / \partial h_k`, its direct part :math:`e_k` (from the loss and
the layers above) and the gradient of each step's recurrent projection, plus every
parameter's gradient and each layer's recurrent weight's gradient (see docs/maths.md,
"The backward recursion"). ``.grad`` is left untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import final

import torch
from torch import Tensor

from bptt.cells import State, flatten_state
from bptt.diagnostics.trace import TapedLayer
from bptt.recurrent import LayerTape

__all__ = ["LayerGradients", "backward", "is_many_to_one", "previous_states", "sequence_lengths", "valid_steps"]


@final
@dataclass
class LayerGradients:
    """What the backward pass gives for one layer, on its flat state ``S``.

    Attributes:
        delta: the total derivatives :math:`\\delta_k`, ``(T, B, S)``.
        direct: their direct parts :math:`e_k` (the loss and the layers above), ``(T, B, S)``.
        recurrent: :math:`\\partial L / \\partial (W_{hh} h_{k-1} + b_{hh})`, ``(T, B, G*H)``.
    """

    delta: Tensor
    direct: Tensor
    recurrent: Tensor


def backward(
    loss: Tensor, layers: list[TapedLayer], parameters: dict[str, Tensor], weights: list[Tensor]
) -> tuple[list[LayerGradients], dict[str, Tensor], list[Tensor]]:
    """One backward pass through the taped forward pass.

    Args:
        loss: the scalar loss.
        layers: the taped layers, in the order they ran.
        parameters: the model's parameters that require a gradient, by name.
        weights: each layer's recurrent weight as its cell used it.

    Returns:
        Per layer its :class:`LayerGradients`, every parameter's gradient by name, and the
        gradient of each of ``weights``.
    """
    state_parts = [[_parts(state) for state in layer.tape.states] for layer in layers]
    final_parts = [_parts(layer.tape.final) for layer in layers]
    wanted: list[Tensor] = []
    for layer, states, finals in zip(layers, state_parts, final_parts, strict=True):
        wanted += [part for parts in states for part in parts]
        wanted += list(layer.tape.outputs) + list(finals) + list(layer.tape.recurrent_parts)
    wanted += list(parameters.values()) + weights
    # parts of a state that no parameter reached (e.g. the zeros a skip-k cell's state
    # starts with) have no graph: their gradient is zero
    reached = [tensor for tensor in wanted if tensor.requires_grad]
    found = iter(torch.autograd.grad(loss, reached, allow_unused=True, materialize_grads=True))
    grads = [next(found).detach() if tensor.requires_grad else torch.zeros_like(tensor) for tensor in wanted]
    per_layer, cursor = [], 0
    for layer, states, finals in zip(layers, state_parts, final_parts, strict=True):
        count, steps = len(finals), len(states)
        flat = grads[cursor : cursor + steps * count]
        cursor += steps * count
        delta = torch.stack([torch.cat(flat[t * count : (t + 1) * count], -1) for t in range(steps)])
        outputs = torch.stack(grads[cursor : cursor + steps])
        cursor += steps
        final = torch.cat(grads[cursor : cursor + count], -1)
        cursor += count
        recurrent = torch.stack(grads[cursor : cursor + steps])
        cursor += steps
        direct = torch.zeros_like(delta)
        mask = layer.tape.mask
        direct[..., : outputs.shape[-1]] = outputs if mask is None else outputs * mask.unsqueeze(-1)
        direct[-1] += final
        per_layer.append(LayerGradients(delta, direct, recurrent))
    parameter_grads = dict(zip(parameters, grads[cursor : cursor + len(parameters)], strict=True))
    return per_layer, parameter_grads, grads[cursor + len(parameters) :]


def is_many_to_one(direct: Tensor, tape: LayerTape) -> bool:
    """Whether the loss reaches the layer only at each sample's last valid step.

    Args:
        direct: the layer's direct derivatives :math:`e_k`, ``(T, B, S)``.
        tape: the layer's tape.
    """
    last = sequence_lengths(tape) - 1
    steps = torch.arange(direct.shape[0], device=direct.device).unsqueeze(1)
    before = direct.abs().sum(-1)[steps < last.unsqueeze(0)]
    return bool((before == 0).all()) and bool(direct.abs().sum() > 0)


def sequence_lengths(tape: LayerTape) -> Tensor:
    """The valid length of every sample, ``(B,)`` (``T`` for all without a mask)."""
    steps, batch = tape.inputs.shape[:2]
    if tape.mask is None:
        return torch.full((batch,), steps, dtype=torch.long, device=tape.inputs.device)
    return tape.mask.sum(0)


def valid_steps(tape: LayerTape) -> Tensor:
    """Which steps of which samples are valid, ``(T, B)`` booleans."""
    if tape.mask is not None:
        return tape.mask
    steps, batch = tape.inputs.shape[:2]
    return torch.ones(steps, batch, dtype=torch.bool, device=tape.inputs.device)


def previous_states(tape: LayerTape) -> Tensor:
    """The flat state before every step, ``(T, B, S)``: the initial state, then the states."""
    return torch.stack([flatten_state(s) for s in [tape.initial, *tape.states[:-1]]])


def _parts(state: State) -> tuple[Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)
