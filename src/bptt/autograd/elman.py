r"""Explicit backpropagation through time for the Elman RNN, with the gradient profile.

The forward pass runs the recurrence

.. math::
    z_t = W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}, \qquad h_t = f(z_t),

and the backward pass is the BPTT recursion written out (see docs/maths.md, "The backward
recursion"):

.. math::
    \delta_t = \frac{\partial \ell_t}{\partial h_t} + J_{t+1}^\top \delta_{t+1}, \qquad
    J_t = \frac{\partial h_t}{\partial h_{t-1}} = \mathrm{diag}(f'(z_t))\, W_{hh},

    \frac{\partial L}{\partial W_{hh}} = \sum_t (\delta_t \odot f'(z_t))\, h_{t-1}^\top, \qquad
    \frac{\partial L}{\partial W_{ih}} = \sum_t (\delta_t \odot f'(z_t))\, x_t^\top.

Because every :math:`\delta_t` passes through our hands, the gradient profile
:math:`\|\delta_k\|` costs one norm call per :data:`PROFILE_CHUNK` steps, with no
host-device synchronisation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, final

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from bptt.activations import activation
from bptt.weights import gate_blocks

PROFILE_CHUNK: Final = 32
"""Steps whose deltas the backward pass keeps at once to take their norms in one call."""

ProfileCallback = Callable[[Tensor], None]
"""``on_profile(norms)``: receives the ``(T, B)`` norms :math:`\\|\\delta_k\\|` per sample."""


def elman_bptt(
    inputs: Tensor,
    h0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None,
    bias_hh: Tensor | None,
    nonlinearity: str = "tanh",
    mask: Tensor | None = None,
    on_profile: ProfileCallback | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Run an Elman RNN layer over a sequence, differentiated by explicit BPTT.

    Computes, for :math:`t = 1, \dots, T`,

    .. math::
        z_t = W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}, \qquad h_t = f(z_t),

    which is equivalent to this loop (but runs faster, and its backward is the BPTT
    recursion of the module docstring)::

        h = h0
        for t in range(T):
            if mask is None or mask[t, b]:          # per sample b
                h = f(x[t] @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh)
            output[t] = h if mask is None or mask[t, b] else 0
        h_n = h

    With a ``mask``, an invalid step carries the state unchanged and outputs zero (like
    :func:`~torch.nn.utils.rnn.pad_packed_sequence`), so padded steps change neither the
    outputs, the losses nor the gradients; their inputs get a zero gradient.

    Args:
        inputs: the input sequence, time-major.
        h0: the initial hidden state.
        weight_ih: input-to-hidden weights :math:`W_{ih}` (as in :class:`torch.nn.RNNCell`).
        weight_hh: hidden-to-hidden weights :math:`W_{hh}`.
        bias_ih: input bias :math:`b_{ih}`, or ``None``.
        bias_hh: hidden bias :math:`b_{hh}`, or ``None``.
        nonlinearity: ``f``: ``"tanh"``, ``"relu"`` or ``"sigmoid"``.
        mask: ``True`` where step ``t`` of sample ``b`` is valid; ``None`` means all valid.
        on_profile: if given, the backward pass calls it once with the gradient profile, a
            detached ``(T, B)`` tensor holding, for every step ``k`` and sample ``b``, the
            norm over hidden units of the total derivative
            :math:`\delta_k = \partial L / \partial h_k` (including the path through the
            gradient of ``h_n``). On a padded step, :math:`h_k` is the carried state, so
            :math:`\delta_k` is the gradient carried along with it.

    Returns:
        ``(output, h_n)``: the hidden state at every step (zero on invalid steps) and the
        state after each sample's last valid step.

    Shape:
        - inputs: ``(T, B, I)``
        - h0: ``(B, H)``
        - weight_ih: ``(H, I)``; weight_hh: ``(H, H)``; bias_ih, bias_hh: ``(H,)``
        - mask: ``(T, B)``, ``torch.bool``
        - output: ``(T, B, H)``; h_n: ``(B, H)``

    Raises:
        ValueError: on an unknown ``nonlinearity``, or arguments whose shapes, dtypes or
            devices do not fit together.
    """
    _check_arguments(inputs, h0, weight_ih, weight_hh, bias_ih, bias_hh, nonlinearity, mask)
    return ElmanBPTTFunction.apply(
        inputs, h0, weight_ih, weight_hh, bias_ih, bias_hh, nonlinearity, mask, on_profile
    )


@final
class ElmanBPTTFunction(torch.autograd.Function):
    """The Elman recurrence with a hand-written BPTT backward; call it via :func:`elman_bptt`.

    The forward pass saves the hidden states ``h_t`` (not ``z_t``: ``f'(z_t)`` is a
    function of ``h_t`` for tanh, sigmoid and relu). The backward pass keeps the
    ``dz_t = delta_t * f'(z_t)`` of all steps in one ``(T, B, H)`` buffer and computes the
    weight gradients after the loop as single matrix products. Besides the saved states,
    it allocates one ``(T, B, H)`` buffer (``dz``); the profile adds a ``(T, B)`` one.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        inputs: Tensor,
        h0: Tensor,
        weight_ih: Tensor,
        weight_hh: Tensor,
        bias_ih: Tensor | None,
        bias_hh: Tensor | None,
        nonlinearity: str,
        mask: Tensor | None,
        on_profile: ProfileCallback | None,
    ) -> tuple[Tensor, Tensor]:
        apply_ = activation(nonlinearity).function_
        states = _input_projection(inputs, weight_ih, bias_ih, bias_hh)
        valid = None if mask is None else mask.unsqueeze(-1)
        weight_hh_t = weight_hh.t()
        h = h0
        for t in range(states.shape[0]):
            step = states[t]
            apply_(step.addmm_(h, weight_hh_t))
            if valid is not None:
                torch.where(valid[t], step, h, out=step)
            h = step
        ctx.save_for_backward(inputs, h0, weight_ih, weight_hh, states, mask)
        ctx.nonlinearity = nonlinearity
        ctx.on_profile = on_profile
        output = states if valid is None else states * valid
        return output, states[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_output: Tensor, grad_h_n: Tensor
    ) -> tuple[Tensor | None, ...]:
        inputs, h0, weight_ih, weight_hh, states, mask = ctx.saved_tensors
        needs = ctx.needs_input_grad
        # dz holds f'(z_t) until the recursion overwrites it with delta_t * f'(z_t).
        dz = activation(ctx.nonlinearity).derivative_from_output(states, torch.empty_like(states))
        if mask is not None:
            valid = mask.unsqueeze(-1).to(states.dtype)
            dz.mul_(valid)
            grad_output = grad_output * valid
        norms = states.new_empty(states.shape[:2]) if ctx.on_profile is not None else None
        dh0 = _backward_recursion_(dz, grad_output, grad_h_n, weight_hh, mask, norms, needs[1])
        if norms is not None:
            ctx.on_profile(norms)

        steps, batch, hidden = states.shape
        dz_flat = dz.view(steps * batch, hidden)
        grad_inputs = (dz_flat @ weight_ih).view_as(inputs) if needs[0] else None
        # (x^T dz)^T: MKL is ~4x faster this way round when there are few input features
        grad_weight_ih = (inputs.reshape(steps * batch, -1).t() @ dz_flat).t() if needs[2] else None
        grad_weight_hh = _recurrent_weight_grad(dz, h0, states) if needs[3] else None
        grad_bias = dz_flat.sum(0) if needs[4] or needs[5] else None
        return (
            grad_inputs,
            dh0,
            grad_weight_ih,
            grad_weight_hh,
            grad_bias if needs[4] else None,
            grad_bias if needs[5] else None,
            None,
            None,
            None,
        )


def _input_projection(
    inputs: Tensor, weight_ih: Tensor, bias_ih: Tensor | None, bias_hh: Tensor | None
) -> Tensor:
    """``W_ih x_t + b_ih + b_hh`` for all steps in one matrix product, shape ``(T, B, H)``."""
    steps, batch, _ = inputs.shape
    flat = inputs.reshape(steps * batch, -1)
    bias = bias_ih if bias_hh is None else bias_hh if bias_ih is None else bias_ih + bias_hh
    projection = flat @ weight_ih.t() if bias is None else torch.addmm(bias, flat, weight_ih.t())
    return projection.view(steps, batch, -1)


def _backward_recursion_(
    dz: Tensor,
    grad_output: Tensor,
    grad_h_n: Tensor,
    weight_hh: Tensor,
    mask: Tensor | None,
    norms: Tensor | None,
    needs_grad_h0: bool,
) -> Tensor | None:
    r"""The BPTT recursion from step ``T`` down to step 1, filling ``dz`` in place.

    Without a mask, :math:`\delta_t = g_t + W_{hh}^\top dz_{t+1}` and
    :math:`dz_t = \delta_t \odot f'(z_t)`, starting from
    :math:`\delta_T = g_T + \partial L / \partial h_n`. With a mask ``m_t``, an invalid step
    passes its delta through unchanged:
    :math:`\delta_t = m_t g_t + W_{hh}^\top dz_{t+1} + (1 - m_{t+1})\,\delta_{t+1}` and
    :math:`dz_t = m_t\, \delta_t \odot f'(z_t)`.

    The deltas live in a ring of :data:`PROFILE_CHUNK` rows (one row without a profile);
    each time the ring has gone round, one norm call writes the profile of those steps.

    Args:
        dz: holds :math:`m_t f'(z_t)` on entry and :math:`dz_t` on return.
        grad_output: :math:`g_t = \partial L / \partial \mathrm{output}_t`, already masked.
        grad_h_n: :math:`\partial L / \partial h_n`.
        weight_hh: :math:`W_{hh}`.
        mask: the ``(T, B)`` validity mask, or ``None``.
        norms: a ``(T, B)`` buffer that receives :math:`\|\delta_t\|` per sample, or
            ``None``.
        needs_grad_h0: whether to return :math:`\partial L / \partial h_0`.

    Returns:
        :math:`\partial L / \partial h_0`, or ``None`` if not needed.
    """
    steps = dz.shape[0]
    rows = 1 if norms is None else min(steps, PROFILE_CHUNK)
    ring = dz.new_empty(rows, *dz.shape[1:])
    carried = None if mask is None else (~mask).unsqueeze(-1).to(dz.dtype)
    last = steps - 1
    torch.add(grad_output[last], grad_h_n, out=ring[last % rows])
    for t in range(last, -1, -1):
        delta = ring[t % rows]
        if t < last:
            if carried is None:
                torch.addmm(grad_output[t], dz[t + 1], weight_hh, out=delta)
            else:
                torch.addcmul(grad_output[t], carried[t + 1], ring[(t + 1) % rows], out=delta)
                delta.addmm_(dz[t + 1], weight_hh)
        dz[t].mul_(delta)
        if norms is not None and t % rows == 0:  # ring rows 0.. hold steps t..
            filled = min(rows, steps - t)
            torch.linalg.vector_norm(ring[:filled], dim=-1, out=norms[t : t + filled])
    if not needs_grad_h0:
        return None
    grad_h0 = dz[0] @ weight_hh
    if carried is not None:
        grad_h0.addcmul_(carried[0], ring[0])
    return grad_h0


def _recurrent_weight_grad(dz: Tensor, h0: Tensor, states: Tensor) -> Tensor:
    r""":math:`\partial L / \partial W_{hh} = \sum_t dz_t\, h_{t-1}^\top` as two matrix products."""
    hidden = dz.shape[-1]
    grad = dz[0].t() @ h0
    return grad.addmm_(dz[1:].reshape(-1, hidden).t(), states[:-1].reshape(-1, hidden))


def _check_arguments(
    inputs: Tensor,
    h0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None,
    bias_hh: Tensor | None,
    nonlinearity: str,
    mask: Tensor | None,
) -> None:
    """Raise ``ValueError`` with expected vs received and a fix for inconsistent arguments."""
    activation(nonlinearity)  # raises for an unknown name, suggesting the closest
    if inputs.ndim != 3 or inputs.shape[0] == 0:
        raise ValueError(
            f"expected inputs of shape (T, B, I) with T >= 1 (time-major), got shape "
            f"{tuple(inputs.shape)}; for batch-first data pass inputs.transpose(0, 1), "
            f"for a single sequence inputs.unsqueeze(1)"
        )
    steps, batch, input_size = inputs.shape
    _, hidden = gate_blocks(
        weight_hh,
        1,
        caller="elman_bptt",
        name="weight_hh",
        fix="pass the square hidden-to-hidden matrix (torch.nn.RNNCell.weight_hh)",
    )
    expected = {
        "weight_hh": (weight_hh, (hidden, hidden), "the hidden-to-hidden matrix"),
        "weight_ih": (weight_ih, (hidden, input_size), "(H, I) with I = inputs.shape[-1]"),
        "h0": (h0, (batch, hidden), "(B, H) with B = inputs.shape[1]; use h0[0] for (1, B, H)"),
        "bias_ih": (bias_ih, (hidden,), "(H,) or None"),
        "bias_hh": (bias_hh, (hidden,), "(H,) or None"),
    }
    _check_like_inputs(expected, inputs)
    if mask is not None:
        _check_mask(mask, steps, batch, inputs.device)


def _check_like_inputs(
    expected: dict[str, tuple[Tensor | None, tuple[int, ...], str]],
    inputs: Tensor,
    shape_note: str = "",
) -> None:
    """Check each ``name: (tensor, shape, hint)`` (``None`` tensors skipped): the shape, and
    the dtype and device of ``inputs``."""
    for name, (tensor, shape, hint) in expected.items():
        if tensor is None:
            continue
        if tuple(tensor.shape) != shape:
            raise ValueError(
                f"expected {name} of shape {shape}{shape_note}, got {tuple(tensor.shape)}; "
                f"{name} must be {hint}"
            )
        if tensor.dtype != inputs.dtype or tensor.device != inputs.device:
            raise ValueError(
                f"expected {name} with dtype {inputs.dtype} on {inputs.device} like inputs, "
                f"got {tensor.dtype} on {tensor.device}; convert it with "
                f"{name}.to(inputs.dtype, inputs.device)"
            )


def _check_mask(mask: Tensor, steps: int, batch: int, device: torch.device) -> None:
    if tuple(mask.shape) != (steps, batch):
        raise ValueError(
            f"expected mask of shape (T, B) = {(steps, batch)}, got {tuple(mask.shape)}; "
            f"for batch-first masks pass mask.transpose(0, 1)"
        )
    if mask.dtype != torch.bool or mask.device != device:
        raise ValueError(
            f"expected mask of dtype torch.bool on {device}, got {mask.dtype} on {mask.device}; "
            f"build it as a comparison, e.g. torch.arange(T)[:, None] < lengths[None, :]"
        )
