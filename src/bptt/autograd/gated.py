r"""Explicit backpropagation through time for the LSTM and the GRU, with the gradient profile.

Forward: the input projection of all steps in one matrix product, then per step one
product with :math:`W_{hh}` and in-place pointwise operations; the gate activations are
saved. Backward: the recursion of :math:`\delta_t = \partial L / \partial h_t` (total
derivative) with one product with :math:`W_{hh}` per step, then the weight gradients as
single matrix products over all steps.

LSTM, gates ``i, f, g, o``; :math:`\gamma_t = \partial L / \partial c_t` with :math:`h_t`
held fixed and :math:`\hat\gamma_t` the same through :math:`h_t = o_t \tanh(c_t)` too:

.. math::
    \delta_t = \frac{\partial \ell_t}{\partial h_t} + W_{hh}^\top a_{t+1}, \qquad
    \hat\gamma_t = \gamma_t + \delta_t\, o_t \tanh'(c_t), \qquad
    \gamma_{t-1} = \hat\gamma_t\, f_t,

    a_t = \big(\hat\gamma_t g_t \sigma'(i_t),\ \hat\gamma_t c_{t-1} \sigma'(f_t),\
    \hat\gamma_t i_t \tanh'(g_t),\ \delta_t \tanh(c_t) \sigma'(o_t)\big).

GRU, gates ``r, z, n``, with :math:`q_t = W_{hn} h_{t-1} + b_{hn}`; the candidate's
pre-activation gets :math:`\nu_t` from the input side, :math:`r_t \nu_t` from :math:`q_t`:

.. math::
    \delta_{t-1} = \frac{\partial \ell_{t-1}}{\partial h_{t-1}} + z_t \delta_t
    + W_{hh}^\top a_t, \qquad \nu_t = \delta_t (1 - z_t) \tanh'(n_t),

    a_t = \big(\nu_t q_t \sigma'(r_t),\ \delta_t (h_{t-1} - n_t) \sigma'(z_t),\
    r_t \nu_t\big).

In both, :math:`\partial L / \partial W_{hh} = \sum_t a_t h_{t-1}^\top`,
:math:`\partial L / \partial b_{hh} = \sum_t a_t`, and :math:`W_{ih}, b_{ih}` get the same
with :math:`x_t` and :math:`a^x_t`: :math:`a_t` with the GRU's candidate block :math:`\nu_t`.
A masked step freezes the state: its :math:`a_t` is zero and it hands :math:`\delta_t`
(and :math:`\gamma_t`) to step :math:`t-1` unchanged.
"""

from __future__ import annotations

from typing import Any, final

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from bptt.autograd.elman import (
    ProfileCallback,
    _check_like_inputs,
    _check_mask,
    _input_projection,
)
from bptt.weights import gate_blocks


def lstm_bptt(
    inputs: Tensor,
    h0: Tensor,
    c0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None,
    bias_hh: Tensor | None,
    mask: Tensor | None = None,
    on_profile: ProfileCallback | None = None,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    r"""Run an LSTM layer over a sequence, differentiated by explicit BPTT.

    Equivalent to this loop, in torch's gate order (weights copy one-to-one from
    :class:`torch.nn.LSTM`), but faster, with the backward of the module docstring::

        h, c = h0, c0
        for t in range(T):
            i, f, g, o = (x[t] @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh).chunk(4, -1)
            c_new = sigmoid(f) * c + sigmoid(i) * tanh(g)
            h_new = sigmoid(o) * tanh(c_new)
            if mask is None or mask[t, b]:          # per sample b
                h, c = h_new, c_new
            output[t] = h if mask is None or mask[t, b] else 0

    Args:
        inputs: the input sequence, time-major.
        h0, c0: the initial hidden and cell states.
        weight_ih: input-to-hidden weights (``torch.nn.LSTM.weight_ih_l0``).
        weight_hh: hidden-to-hidden weights (``weight_hh_l0``).
        bias_ih, bias_hh: the biases, or ``None``.
        mask: ``True`` where step ``t`` of sample ``b`` is valid; ``None`` means all valid.
            An invalid step carries ``(h, c)`` unchanged and outputs zero.
        on_profile: if given, the backward pass calls it once with a detached ``(T, B)``
            tensor: the norm over hidden units of :math:`\delta_k = \partial L / \partial h_k`
            with :math:`c_k` held fixed (what a gradient hook on :math:`h_k` sees),
            including the path through the gradient of ``h_n``.

    Returns:
        ``(output, (h_n, c_n))``: the hidden state at every step (zero on invalid steps)
        and the states after each sample's last valid step.

    Shape:
        - inputs: ``(T, B, I)``; h0, c0: ``(B, H)``; mask: ``(T, B)``, ``torch.bool``
        - weight_ih: ``(4H, I)``; weight_hh: ``(4H, H)``; bias_ih, bias_hh: ``(4H,)``
        - output: ``(T, B, H)``; h_n, c_n: ``(B, H)``

    Raises:
        ValueError: on arguments whose shapes, dtypes or devices do not fit together.
    """
    states = {"h0": h0, "c0": c0}
    _check_arguments("LSTM", inputs, states, weight_ih, weight_hh, bias_ih, bias_hh, mask)
    output, h_n, c_n = LSTMBPTTFunction.apply(
        inputs, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, mask, on_profile
    )
    return output, (h_n, c_n)


def gru_bptt(
    inputs: Tensor,
    h0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None,
    bias_hh: Tensor | None,
    mask: Tensor | None = None,
    on_profile: ProfileCallback | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Run a GRU layer over a sequence, differentiated by explicit BPTT.

    Equivalent to this loop, with torch's gate order and equations (weights copy
    one-to-one from :class:`torch.nn.GRU`), but faster, with the backward of the module
    docstring::

        h = h0
        for t in range(T):
            x_r, x_z, x_n = (x[t] @ weight_ih.T + bias_ih).chunk(3, -1)
            h_r, h_z, h_n = (h @ weight_hh.T + bias_hh).chunk(3, -1)
            r, z = sigmoid(x_r + h_r), sigmoid(x_z + h_z)
            h_new = (1 - z) * tanh(x_n + r * h_n) + z * h
            if mask is None or mask[t, b]:          # per sample b
                h = h_new
            output[t] = h if mask is None or mask[t, b] else 0

    Args:
        inputs: the input sequence, time-major.
        h0: the initial hidden state.
        weight_ih: input-to-hidden weights (``torch.nn.GRU.weight_ih_l0``).
        weight_hh: hidden-to-hidden weights (``weight_hh_l0``).
        bias_ih, bias_hh: the biases, or ``None``.
        mask: ``True`` where step ``t`` of sample ``b`` is valid; ``None`` means all valid.
            An invalid step carries ``h`` unchanged and outputs zero.
        on_profile: if given, the backward pass calls it once with a detached ``(T, B)``
            tensor: the norm over hidden units of :math:`\delta_k = \partial L / \partial h_k`,
            including the path through the gradient of ``h_n``.

    Returns:
        ``(output, h_n)``: the hidden state at every step (zero on invalid steps) and the
        state after each sample's last valid step.

    Shape:
        - inputs: ``(T, B, I)``; h0: ``(B, H)``; mask: ``(T, B)``, ``torch.bool``
        - weight_ih: ``(3H, I)``; weight_hh: ``(3H, H)``; bias_ih, bias_hh: ``(3H,)``
        - output: ``(T, B, H)``; h_n: ``(B, H)``

    Raises:
        ValueError: on arguments whose shapes, dtypes or devices do not fit together.
    """
    _check_arguments("GRU", inputs, {"h0": h0}, weight_ih, weight_hh, bias_ih, bias_hh, mask)
    return GRUBPTTFunction.apply(
        inputs, h0, weight_ih, weight_hh, bias_ih, bias_hh, mask, on_profile
    )


@final
class LSTMBPTTFunction(torch.autograd.Function):
    """The LSTM with a hand-written BPTT backward; call it via :func:`lstm_bptt`.

    Saves the activated gates ``(T, B, 4H)``, ``h_t``, ``c_t`` and ``tanh(c_t)``. Backward
    fills a ``(T, B, 4H)`` buffer with the local factors of :math:`a_t`, which the
    recursion turns into :math:`a_t` in place, and one ``(T, B, H)`` buffer (two with a
    mask, one more to keep the deltas when a profile is recorded).
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        inputs: Tensor,
        h0: Tensor,
        c0: Tensor,
        weight_ih: Tensor,
        weight_hh: Tensor,
        bias_ih: Tensor | None,
        bias_hh: Tensor | None,
        mask: Tensor | None,
        on_profile: ProfileCallback | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        gates = _input_projection(inputs, weight_ih, bias_ih, bias_hh)
        i, f, g, o = gates.chunk(4, dim=-1)
        states = torch.empty_like(i, memory_format=torch.contiguous_format)
        cells, tanh_cells = torch.empty_like(states), torch.empty_like(states)
        valid = None if mask is None else mask.unsqueeze(-1)
        weight_hh_t = weight_hh.t()
        h, c = h0, c0
        for t in range(gates.shape[0]):
            torch.sigmoid_(gates[t].addmm_(h, weight_hh_t)[:, : 2 * h0.shape[-1]])  # i, f
            torch.tanh_(g[t])
            torch.sigmoid_(o[t])
            torch.mul(f[t], c, out=cells[t]).addcmul_(i[t], g[t])
            torch.mul(o[t], torch.tanh(cells[t], out=tanh_cells[t]), out=states[t])
            if valid is not None:
                torch.where(valid[t], cells[t], c, out=cells[t])
                torch.where(valid[t], states[t], h, out=states[t])
            h, c = states[t], cells[t]
        saved = (inputs, h0, c0, weight_ih, weight_hh, gates, cells, tanh_cells, states, mask)
        ctx.save_for_backward(*saved)
        ctx.on_profile = on_profile
        output = states if valid is None else states * valid
        return output, states[-1].clone(), cells[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_output: Tensor, grad_h_n: Tensor, grad_c_n: Tensor
    ) -> tuple[Tensor | None, ...]:
        inputs, h0, c0, weight_ih, weight_hh, gates, cells, tanh_cells, states, mask = (
            ctx.saved_tensors
        )
        needs = ctx.needs_input_grad
        i, f, g, o = gates.chunk(4, dim=-1)
        one = gates.new_ones(())
        # Local factors of a_t; one full-width pass is cheaper than four strided ones.
        grad_gates = torch.addcmul(gates, gates, gates, value=-1.0)  # sigma' (g: below)
        a_i, a_f, a_g, a_o = grad_gates.chunk(4, dim=-1)
        a_i.mul_(g)
        a_f[0].mul_(c0)
        a_f[1:].mul_(cells[:-1])
        torch.addcmul(one, g, g, value=-1.0, out=a_g).mul_(i)
        a_o.mul_(tanh_cells)
        through_h = torch.addcmul(one, tanh_cells, tanh_cells, value=-1.0).mul_(o)
        forget, carried = f, None
        if mask is not None:
            valid = mask.unsqueeze(-1).to(gates.dtype)
            grad_gates.mul_(valid)
            through_h.mul_(valid)
            forget = torch.where(mask.unsqueeze(-1), f, 1.0)  # gamma crosses a frozen step
            carried = 1.0 - valid  # and so does delta
            grad_output = grad_output * valid

        steps, batch, hidden = states.shape
        deltas = states.new_empty(steps if ctx.on_profile is not None else 1, batch, hidden)
        gamma = states.new_empty(batch, hidden).copy_(grad_c_n)
        gamma_per_gate = gamma.unsqueeze(1)
        ifg = grad_gates.view(steps, batch, 4, hidden)[:, :, :3]
        rows, last = deltas.shape[0], steps - 1
        torch.add(grad_output[last], grad_h_n, out=deltas[last % rows])
        for t in range(last, -1, -1):
            delta = deltas[t % rows]
            if t < last:
                if carried is None:
                    torch.addmm(grad_output[t], grad_gates[t + 1], weight_hh, out=delta)
                else:  # with rows == 1 the output aliases its input elementwise: fine
                    torch.addcmul(grad_output[t], carried[t + 1], deltas[(t + 1) % rows], out=delta)
                    delta.addmm_(grad_gates[t + 1], weight_hh)
            gamma.addcmul_(delta, through_h[t])  # gamma-hat_t
            ifg[t].mul_(gamma_per_gate)
            a_o[t].mul_(delta)
            gamma.mul_(forget[t])  # gamma_{t-1}
        if ctx.on_profile is not None:
            ctx.on_profile(torch.linalg.vector_norm(deltas, dim=-1))
        grad_h0 = None
        if needs[1]:
            grad_h0 = grad_gates[0] @ weight_hh
            if carried is not None:
                grad_h0.addcmul_(carried[0], deltas[0])
        grad_inputs, grad_weight_ih, grad_bias = _input_side_grads(
            grad_gates, inputs, weight_ih, needs[0], needs[3], needs[5] or needs[6]
        )
        grad_weight_hh = _recurrent_weight_grad(grad_gates, h0, states) if needs[4] else None
        grad_bias_ih, grad_bias_hh = (grad_bias if need else None for need in needs[5:7])
        return (
            grad_inputs, grad_h0, gamma if needs[2] else None, grad_weight_ih, grad_weight_hh,
            grad_bias_ih, grad_bias_hh, None, None,
        )  # fmt: skip


@final
class GRUBPTTFunction(torch.autograd.Function):
    r"""The GRU with a hand-written BPTT backward; call it via :func:`gru_bptt`.

    Saves the activated gates ``(T, B, 3H)``, :math:`q_t` and ``h_t``. Backward fills a
    ``(T, B, 3H)`` buffer with the local factors of :math:`a_t`, which the recursion turns
    into :math:`a_t` in place, keeps every :math:`\delta_t` (for :math:`\nu_t` and the
    profile) and allocates one more ``(T, B, H)`` buffer (two with a mask).
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
        mask: Tensor | None,
        on_profile: ProfileCallback | None,
    ) -> tuple[Tensor, Tensor]:
        hidden = h0.shape[-1]
        bias = bias_ih
        if bias_hh is not None:  # all biases but b_hn, which stays inside q_t, go in here
            folded = torch.cat([bias_hh[: 2 * hidden], h0.new_zeros(hidden)])
            bias = folded if bias_ih is None else bias_ih + folded
        gates = _input_projection(inputs, weight_ih, bias, None)
        reset_update, n = gates[..., : 2 * hidden], gates[..., 2 * hidden :]
        r, z = reset_update.chunk(2, dim=-1)
        states = torch.empty_like(n, memory_format=torch.contiguous_format)
        recurrent_n = torch.empty_like(states)  # q_t
        weight_rz_t, weight_n_t = weight_hh[: 2 * hidden].t(), weight_hh[2 * hidden :].t()
        bias_n = None if bias_hh is None else bias_hh[2 * hidden :]
        valid = None if mask is None else mask.unsqueeze(-1)
        h = h0
        for t in range(gates.shape[0]):
            torch.sigmoid_(reset_update[t].addmm_(h, weight_rz_t))
            if bias_n is None:
                torch.mm(h, weight_n_t, out=recurrent_n[t])
            else:
                torch.addmm(bias_n, h, weight_n_t, out=recurrent_n[t])
            torch.tanh_(n[t].addcmul_(r[t], recurrent_n[t]))
            torch.lerp(n[t], h, z[t], out=states[t])  # n + z (h - n)
            if valid is not None:
                torch.where(valid[t], states[t], h, out=states[t])
            h = states[t]
        ctx.save_for_backward(inputs, h0, weight_ih, weight_hh, gates, recurrent_n, states, mask)
        ctx.on_profile = on_profile
        output = states if valid is None else states * valid
        return output, states[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor, grad_h_n: Tensor) -> tuple[Tensor | None, ...]:
        inputs, h0, weight_ih, weight_hh, gates, recurrent_n, states, mask = ctx.saved_tensors
        needs = ctx.needs_input_grad
        r, z, n = gates.chunk(3, dim=-1)
        # Local factors of a_t; the candidate block is scratch space until its turn.
        grad_gates = torch.addcmul(gates, gates, gates, value=-1.0)  # sigma' of r and z
        a_r, a_z, a_n = grad_gates.chunk(3, dim=-1)
        torch.sub(h0, n[0], out=a_n[0])
        torch.sub(states[:-1], n[1:], out=a_n[1:])
        a_z.mul_(a_n)
        through_n = torch.addcmul(gates.new_ones(()), n, n, value=-1.0)  # nu_t / delta_t
        through_n.addcmul_(through_n, z, value=-1.0)
        keep = z
        if mask is not None:
            valid = mask.unsqueeze(-1).to(gates.dtype)
            through_n.mul_(valid)
            a_z.mul_(valid)
            keep = torch.where(mask.unsqueeze(-1), z, 1.0)  # delta crosses a frozen step
            grad_output = grad_output * valid
        a_r.mul_(recurrent_n).mul_(through_n)
        torch.mul(through_n, r, out=a_n)

        steps, batch, hidden = states.shape
        deltas = torch.empty_like(states)
        per_gate, deltas_per_gate = grad_gates.view(steps, batch, 3, hidden), deltas.unsqueeze(2)
        last = steps - 1
        torch.add(grad_output[last], grad_h_n, out=deltas[last])
        for t in range(last, -1, -1):
            if t < last:
                torch.addcmul(grad_output[t], keep[t + 1], deltas[t + 1], out=deltas[t])
                deltas[t].addmm_(grad_gates[t + 1], weight_hh)
            per_gate[t].mul_(deltas_per_gate[t])
        if ctx.on_profile is not None:
            ctx.on_profile(torch.linalg.vector_norm(deltas, dim=-1))
        grad_h0 = None
        if needs[1]:
            grad_h0 = torch.addcmul(grad_gates[0] @ weight_hh, keep[0], deltas[0])
        grad_weight_hh = _recurrent_weight_grad(grad_gates, h0, states) if needs[3] else None
        grad_bias_hh = grad_gates.sum((0, 1)) if needs[5] else None
        if needs[0] or needs[2] or needs[4]:
            torch.mul(deltas, through_n, out=a_n)  # the candidate's input side: nu_t
        grad_inputs, grad_weight_ih, grad_bias_ih = _input_side_grads(
            grad_gates, inputs, weight_ih, needs[0], needs[2], needs[4]
        )
        return (
            grad_inputs, grad_h0, grad_weight_ih, grad_weight_hh,
            grad_bias_ih, grad_bias_hh, None, None,
        )  # fmt: skip


def _input_side_grads(
    grad_gates: Tensor, inputs: Tensor, weight_ih: Tensor, *needs: bool
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    r"""The gradients of ``inputs``, :math:`W_{ih}` and :math:`b_{ih}` from :math:`a^x_t`
    (one product or sum each), for those of the three whose flag in ``needs`` is set."""
    steps, batch, gate_rows = grad_gates.shape
    flat = grad_gates.view(steps * batch, gate_rows)
    return (
        (flat @ weight_ih).view_as(inputs) if needs[0] else None,
        # (x^T a)^T: with a few input features MKL is ~10x slower on a^T x
        (inputs.reshape(steps * batch, -1).t() @ flat).t().contiguous() if needs[1] else None,
        flat.sum(0) if needs[2] else None,
    )


def _recurrent_weight_grad(grad_gates: Tensor, h0: Tensor, states: Tensor) -> Tensor:
    r""":math:`\partial L / \partial W_{hh} = \sum_t a_t\, h_{t-1}^\top` as two matrix products."""
    gate_rows, hidden = grad_gates.shape[-1], states.shape[-1]
    grad = grad_gates[0].t() @ h0
    return grad.addmm_(grad_gates[1:].reshape(-1, gate_rows).t(), states[:-1].reshape(-1, hidden))


_GATES = {"LSTM": (4, "i, f, g, o"), "GRU": (3, "r, z, n")}


def _check_arguments(
    cell: str,
    inputs: Tensor,
    states: dict[str, Tensor],
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None,
    bias_hh: Tensor | None,
    mask: Tensor | None,
) -> None:
    """Raise ``ValueError`` with expected vs received and a fix for inconsistent arguments."""
    if inputs.ndim != 3 or inputs.shape[0] == 0 or not inputs.is_floating_point():
        raise ValueError(
            f"expected floating-point inputs of shape (T, B, I) with T >= 1 (time-major), "
            f"got {inputs.dtype} of shape {tuple(inputs.shape)}; for batch-first data pass "
            f"inputs.transpose(0, 1), for a single sequence inputs.unsqueeze(1)"
        )
    steps, batch, input_size = inputs.shape
    num_gates, gate_names = _GATES[cell]
    _, hidden = gate_blocks(
        weight_hh,
        num_gates,
        caller=f"{cell.lower()}_bptt",
        name="weight_hh",
        gate_names=gate_names,
        fix=f"pass torch.nn.{cell}'s weight_hh_l0",
    )
    rows = num_gates * hidden
    expected = {
        "weight_hh": (weight_hh, (rows, hidden), "the hidden-to-hidden matrix"),
        "weight_ih": (weight_ih, (rows, input_size), f"({num_gates}H, I), I = inputs.shape[-1]"),
        **{
            name: (
                state,
                (batch, hidden),
                f"(B, H), B = inputs.shape[1]; use {name}[0] for (1, B, H)",
            )
            for name, state in states.items()
        },
        "bias_ih": (bias_ih, (rows,), f"({num_gates}H,) or None"),
        "bias_hh": (bias_hh, (rows,), f"({num_gates}H,) or None"),
    }
    _check_like_inputs(expected, inputs, shape_note=f" (H = {hidden} from weight_hh)")
    if mask is not None:
        _check_mask(mask, steps, batch, inputs.device)
