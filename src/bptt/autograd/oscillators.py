r"""Explicit backpropagation through time for LEM and coRNN, with the gradient profile.

Both cells carry a state :math:`(y_t, z_t)` and output :math:`y_t`. Below,
:math:`\delta_t = \partial L / \partial y_t` and :math:`\zeta_t = \partial L / \partial z_t`
are total derivatives, each with the other part of the state held fixed, and :math:`g_t`
is the gradient reaching the output :math:`y_t` directly.

**LEM** (:class:`bptt.cells.LEMCell`), with :math:`k_{1,t} = \Delta t\, \sigma(\cdot)` and
:math:`k_{2,t}` the two time steps, :math:`c^z_t, c^y_t` the two tanh candidates:

.. math::
    z_t = z_{t-1} + k_{1,t} (c^z_t - z_{t-1}), \qquad y_t = y_{t-1} + k_{2,t} (c^y_t - y_{t-1}).

Step :math:`t` hands back, with :math:`\hat\zeta_t = \zeta_t + W_{zh}^\top u^y_t` (the
gradient of :math:`z_t` including its path into :math:`c^y_t`):

.. math::
    u^{(2)}_t = \delta_t (c^y_t - y_{t-1})\, k_{2,t} (1 - k_{2,t} / \Delta t), \qquad
    u^y_t = \delta_t\, k_{2,t} (1 - (c^y_t)^2),

    u^{(1)}_t = \hat\zeta_t (c^z_t - z_{t-1})\, k_{1,t} (1 - k_{1,t} / \Delta t), \qquad
    u^z_t = \hat\zeta_t\, k_{1,t} (1 - (c^z_t)^2),

    \zeta_{t-1} = (1 - k_{1,t})\, \hat\zeta_t, \qquad
    \delta_{t-1} = g_{t-1} + (1 - k_{2,t})\, \delta_t + W_{hh}^\top (u^{(1)}_t, u^{(2)}_t, u^z_t).

**coRNN** (:class:`bptt.cells.CoRNNCell`), with :math:`c_t` the driving force
:math:`\tanh(W y_{t-1} + \mathcal{W} z_{t-1} + V x_t + b)`:

.. math::
    z_t = z_{t-1} + \Delta t\, (c_t - \gamma y_{t-1} - \epsilon z_{t-1}), \qquad
    y_t = y_{t-1} + \Delta t\, z_t;

    \hat\zeta_t = \zeta_t + \Delta t\, \delta_t, \qquad u_t = \hat\zeta_t\, \Delta t\, (1 - c_t^2),

    \delta_{t-1} = g_{t-1} + \delta_t - \Delta t\, \gamma\, \hat\zeta_t + W^\top u_t, \qquad
    \zeta_{t-1} = (1 - \Delta t\, \epsilon)\, \hat\zeta_t + \mathcal{W}^\top u_t.

In both, the weights get :math:`\sum_t u_t (\text{what they multiply})^\top` and the
biases :math:`\sum_t u_t`, as single matrix products after the recursion. A padded step
(``mask`` ``False``) freezes the state; both recursions handle it by setting its time
step (:math:`k_1, k_2` or :math:`\Delta t`) to zero, which makes the step the identity
exactly, its :math:`u_t` zero and hands :math:`\delta_t, \zeta_t` on unchanged.
"""

from __future__ import annotations

import math
from typing import Any, Final, final

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from bptt.autograd.elman import ProfileCallback, _check_like_inputs, _check_mask, _input_projection
from bptt.autograd.gated import _input_side_grads, _recurrent_weight_grad
from bptt.weights import gate_blocks


def check_option(
    caller: str, name: str, value: object, meaning: str, fix: str, *, positive: bool, at_most: float | None = None
) -> float:
    """``value`` as a float, or ``ValueError`` saying what was expected, what was received and ``fix``.

    Args:
        caller: who checks, at the start of the message.
        name: the option's name; meaning: what it is, in words.
        value: the value received.
        fix: how to fix the call, ending the message.
        positive: ``> 0`` when ``True``, ``>= 0`` otherwise.
        at_most: an upper bound (inclusive), or ``None``.
    """
    if at_most is not None:
        bound = f"in (0, {at_most:g}]"
    else:
        bound = "> 0" if positive else ">= 0"
    number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    above = number > 0 if positive else number >= 0
    if not (math.isfinite(number) and above and (at_most is None or number <= at_most)):
        raise ValueError(
            f"{caller} expected {name} ({meaning}) to be a finite number {bound}, received {value!r}; {fix}"
        )
    return number


def lem_bptt(
    inputs: Tensor,
    y0: Tensor,
    z0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None,
    bias_hh: Tensor | None,
    weight_zh: Tensor,
    bias_zh: Tensor | None,
    dt: float,
    mask: Tensor | None = None,
    on_profile: ProfileCallback | None = None,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    r"""Run a LEM layer over a sequence, differentiated by explicit BPTT.

    Equivalent to this loop over :class:`bptt.cells.LEMCell`'s step (blocks of ``weight_ih``:
    :math:`\Delta t_1, \Delta t_2, z, y`; of ``weight_hh``: the first three), but faster,
    with the backward of the module docstring::

        y, z = y0, z0
        for t in range(T):
            a1, a2, az, ay = (x[t] @ weight_ih.T + bias_ih).chunk(4, -1)
            r1, r2, rz = (y @ weight_hh.T + bias_hh).chunk(3, -1)
            k1, k2 = dt * sigmoid(a1 + r1), dt * sigmoid(a2 + r2)
            z_new = (1 - k1) * z + k1 * tanh(az + rz)
            y_new = (1 - k2) * y + k2 * tanh(ay + z_new @ weight_zh.T + bias_zh)
            if mask is None or mask[t, b]:          # per sample b
                y, z = y_new, z_new
            output[t] = y if mask is None or mask[t, b] else 0

    Args:
        inputs: the input sequence, time-major.
        y0, z0: the initial state.
        weight_ih: the input weights :math:`V_1, V_2, V_z, V_y`.
        weight_hh: the weights :math:`W_1, W_2, W_z` acting on :math:`y_{t-1}`.
        bias_ih, bias_hh: the biases of those two products, or ``None``.
        weight_zh: :math:`W_y`, acting on :math:`z_t`.
        bias_zh: its bias, or ``None``.
        dt: the largest time step :math:`\Delta t \in (0, 1]`.
        mask: ``True`` where step ``t`` of sample ``b`` is valid; ``None`` means all valid.
            An invalid step carries ``(y, z)`` unchanged and outputs zero.
        on_profile: if given, the backward pass calls it once with a detached ``(T, B)``
            tensor: the norm over hidden units of :math:`\delta_k = \partial L / \partial y_k`
            with :math:`z_k` held fixed (what a gradient hook on :math:`y_k` sees), including
            the path through the gradient of ``y_n``.

    Returns:
        ``(output, (y_n, z_n))``: :math:`y` at every step (zero on invalid steps) and the
        state after each sample's last valid step.

    Shape:
        - inputs: ``(T, B, I)``; y0, z0: ``(B, H)``; mask: ``(T, B)``, ``torch.bool``
        - weight_ih: ``(4H, I)``; weight_hh: ``(3H, H)``; weight_zh: ``(H, H)``
        - bias_ih: ``(4H,)``; bias_hh: ``(3H,)``; bias_zh: ``(H,)``
        - output: ``(T, B, H)``; y_n, z_n: ``(B, H)``

    Raises:
        ValueError: on a ``dt`` outside :math:`(0, 1]`, or arguments whose shapes, dtypes or
            devices do not fit together.
    """
    step = check_option("lem_bptt", "dt", dt, "the largest time step", "pass the cell's dt", positive=True, at_most=1)
    steps, batch, features, hidden = _check_layer("lem_bptt", inputs, weight_hh, 3, "dt_z, dt_y, z")
    _check_like_inputs(
        {
            **_states(y0, z0, batch, hidden),
            "weight_ih": (weight_ih, (4 * hidden, features), "(4H, I) with I = inputs.shape[-1]"),
            "weight_zh": (weight_zh, (hidden, hidden), "the (H, H) weight acting on z_t"),
            "bias_ih": (bias_ih, (4 * hidden,), "(4H,) or None"),
            "bias_hh": (bias_hh, (3 * hidden,), "(3H,) or None"),
            "bias_zh": (bias_zh, (hidden,), "(H,) or None"),
        },
        inputs,
        shape_note=f" (H = {hidden} from weight_hh)",
    )
    if mask is not None:
        _check_mask(mask, steps, batch, inputs.device)
    output, y_n, z_n = LEMBPTTFunction.apply(
        inputs, y0, z0, weight_ih, weight_hh, bias_ih, bias_hh, weight_zh, bias_zh, step, mask, on_profile
    )
    return output, (y_n, z_n)


def cornn_bptt(
    inputs: Tensor,
    y0: Tensor,
    z0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None,
    bias_hh: Tensor | None,
    weight_zh: Tensor,
    dt: float,
    gamma: float,
    epsilon: float,
    mask: Tensor | None = None,
    on_profile: ProfileCallback | None = None,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    r"""Run a coRNN layer over a sequence, differentiated by explicit BPTT.

    Equivalent to this loop over :class:`bptt.cells.CoRNNCell`'s step, but faster, with the
    backward of the module docstring::

        y, z = y0, z0
        for t in range(T):
            c = tanh(x[t] @ weight_ih.T + bias_ih + y @ weight_hh.T + bias_hh + z @ weight_zh.T)
            z_new = z + dt * (c - gamma * y - epsilon * z)
            y_new = y + dt * z_new
            if mask is None or mask[t, b]:          # per sample b
                y, z = y_new, z_new
            output[t] = y if mask is None or mask[t, b] else 0

    Args:
        inputs: the input sequence, time-major.
        y0, z0: the initial state.
        weight_ih: :math:`V`.
        weight_hh: :math:`W`, acting on :math:`y_{t-1}`.
        bias_ih, bias_hh: the biases (their sum is :math:`b`), or ``None``.
        weight_zh: :math:`\mathcal{W}`, acting on :math:`z_{t-1}`.
        dt: the time step :math:`\Delta t > 0`.
        gamma: the restoring force :math:`\gamma \ge 0`.
        epsilon: the damping :math:`\epsilon \ge 0`.
        mask: ``True`` where step ``t`` of sample ``b`` is valid; ``None`` means all valid.
            An invalid step carries ``(y, z)`` unchanged and outputs zero.
        on_profile: if given, the backward pass calls it once with a detached ``(T, B)``
            tensor: the norm over hidden units of :math:`\delta_k = \partial L / \partial y_k`
            with :math:`z_k` held fixed, including the path through the gradient of ``y_n``.

    Returns:
        ``(output, (y_n, z_n))``: :math:`y` at every step (zero on invalid steps) and the
        state after each sample's last valid step.

    Shape:
        - inputs: ``(T, B, I)``; y0, z0: ``(B, H)``; mask: ``(T, B)``, ``torch.bool``
        - weight_ih: ``(H, I)``; weight_hh, weight_zh: ``(H, H)``; bias_ih, bias_hh: ``(H,)``
        - output: ``(T, B, H)``; y_n, z_n: ``(B, H)``

    Raises:
        ValueError: on a ``dt`` that is not > 0, a ``gamma`` or ``epsilon`` that is not >= 0,
            or arguments whose shapes, dtypes or devices do not fit together.
    """
    fix = "pass the cell's value"
    options = (
        check_option("cornn_bptt", "dt", dt, "the time step", fix, positive=True),
        check_option("cornn_bptt", "gamma", gamma, "the restoring force", fix, positive=False),
        check_option("cornn_bptt", "epsilon", epsilon, "the damping", fix, positive=False),
    )
    steps, batch, features, hidden = _check_layer("cornn_bptt", inputs, weight_hh, 1, "")
    _check_like_inputs(
        {
            **_states(y0, z0, batch, hidden),
            "weight_ih": (weight_ih, (hidden, features), "(H, I) with I = inputs.shape[-1]"),
            "weight_zh": (weight_zh, (hidden, hidden), "the (H, H) weight acting on z_{t-1}"),
            "bias_ih": (bias_ih, (hidden,), "(H,) or None"),
            "bias_hh": (bias_hh, (hidden,), "(H,) or None"),
        },
        inputs,
        shape_note=f" (H = {hidden} from weight_hh)",
    )
    if mask is not None:
        _check_mask(mask, steps, batch, inputs.device)
    output, y_n, z_n = CoRNNBPTTFunction.apply(
        inputs, y0, z0, weight_ih, weight_hh, bias_ih, bias_hh, weight_zh, *options, mask, on_profile
    )
    return output, (y_n, z_n)


@final
class LEMBPTTFunction(torch.autograd.Function):
    """LEM with a hand-written BPTT backward; call it via :func:`lem_bptt`.

    The forward pass turns the input projection ``(T, B, 4H)`` in place into
    :math:`(k_1, k_2, c^z, c^y)` (the time steps already zero on padded steps) and saves it
    with :math:`y_t` and :math:`z_t`. The backward pass fills one ``(T, B, 4H)`` buffer with
    the local factors of :math:`u_t`, :data:`CHUNK` steps at a time, which the recursion
    turns into :math:`u_t` in place; it keeps every :math:`\\delta_t` only when a profile is
    recorded.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        inputs: Tensor,
        y0: Tensor,
        z0: Tensor,
        weight_ih: Tensor,
        weight_hh: Tensor,
        bias_ih: Tensor | None,
        bias_hh: Tensor | None,
        weight_zh: Tensor,
        bias_zh: Tensor | None,
        dt: float,
        mask: Tensor | None,
        on_profile: ProfileCallback | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        hidden = y0.shape[-1]
        folded = None  # bias_hh and bias_zh, stacked like weight_ih's blocks
        if bias_hh is not None or bias_zh is not None:
            folded = torch.cat([
                y0.new_zeros(3 * hidden) if bias_hh is None else bias_hh,
                y0.new_zeros(hidden) if bias_zh is None else bias_zh,
            ])  # fmt: skip
        gates = _input_projection(inputs, weight_ih, bias_ih, folded)
        steps_k, from_y = gates[..., : 2 * hidden], gates[..., : 3 * hidden]
        k1, k2, candidate_z, candidate_y = gates.chunk(4, dim=-1)
        ys = torch.empty_like(k1, memory_format=torch.contiguous_format)
        zs = torch.empty_like(ys)
        valid = None if mask is None else mask.unsqueeze(-1).to(gates.dtype)
        weight_hh_t, weight_zh_t = weight_hh.t(), weight_zh.t()
        y, z = y0, z0
        for t in range(gates.shape[0]):
            from_y[t].addmm_(y, weight_hh_t)
            torch.sigmoid_(steps_k[t]).mul_(dt)
            if valid is not None:
                steps_k[t].mul_(valid[t])  # a zero time step freezes the state exactly
            torch.lerp(z, torch.tanh_(candidate_z[t]), k1[t], out=zs[t])
            torch.tanh_(candidate_y[t].addmm_(zs[t], weight_zh_t))
            torch.lerp(y, candidate_y[t], k2[t], out=ys[t])
            y, z = ys[t], zs[t]
        ctx.save_for_backward(inputs, y0, z0, weight_ih, weight_hh, weight_zh, gates, ys, zs, mask)
        ctx.dt, ctx.on_profile = dt, on_profile
        output = ys if valid is None else ys * valid
        return output, ys[-1].clone(), zs[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor, grad_y_n: Tensor, grad_z_n: Tensor) -> tuple[Tensor | None, ...]:
        inputs, y0, z0, weight_ih, weight_hh, weight_zh, gates, ys, zs, mask = ctx.saved_tensors
        needs = ctx.needs_input_grad
        steps, batch, hidden = ys.shape
        k1, k2, candidate_z, candidate_y = gates.chunk(4, dim=-1)
        grads = torch.empty_like(gates)
        u1, u2, uz, uy = grads.chunk(4, dim=-1)
        if mask is not None:  # the output is zero on padded steps (their k are zero already)
            grad_output = grad_output * mask.unsqueeze(-1)
        from_y = grads[..., : 3 * hidden]

        rows = steps if ctx.on_profile is not None else 1
        deltas = ys.new_empty(rows, batch, hidden)
        zeta, zeta_hat = grad_z_n.clone(memory_format=torch.contiguous_format), torch.empty_like(ys[0])
        grad_y0 = torch.empty_like(ys[0])
        last = steps - 1
        torch.add(grad_output[last], grad_y_n, out=deltas[last % rows])
        for t in range(last, -1, -1):
            if t == last or (t + 1) % CHUNK == 0:
                _lem_local_factors(grads, gates, ys, zs, y0, z0, ctx.dt, t - t % CHUNK, t + 1)
            delta = deltas[t % rows]
            u2[t].mul_(delta)
            uy[t].mul_(delta)
            torch.addmm(zeta, uy[t], weight_zh, out=zeta_hat)
            u1[t].mul_(zeta_hat)
            uz[t].mul_(zeta_hat)
            torch.addcmul(zeta_hat, zeta_hat, k1[t], value=-1.0, out=zeta)
            # (1 - k2) delta; with rows == 1, `before` is `delta`, read entry by entry first
            before = deltas[(t - 1) % rows] if t > 0 else grad_y0
            torch.addcmul(delta, delta, k2[t], value=-1.0, out=before)
            if t > 0:
                before.add_(grad_output[t - 1])
            before.addmm_(from_y[t], weight_hh)
        if ctx.on_profile is not None:
            ctx.on_profile(torch.linalg.vector_norm(deltas, dim=-1))
        grad_inputs, grad_weight_ih, grad_bias = _input_side_grads(
            grads, inputs, weight_ih, needs[0], needs[3], any(needs[i] for i in (5, 6, 8))
        )
        grad_weight_hh = _recurrent_weight_grad(from_y, y0, ys) if needs[4] else None
        grad_weight_zh = (uy.reshape(-1, hidden).t() @ zs.reshape(-1, hidden)) if needs[7] else None
        return (
            grad_inputs, grad_y0 if needs[1] else None, zeta if needs[2] else None,
            grad_weight_ih, grad_weight_hh,
            grad_bias if needs[5] else None,
            grad_bias[: 3 * hidden].clone() if needs[6] else None,
            grad_weight_zh,
            grad_bias[3 * hidden :].clone() if needs[8] else None,
            None, None, None,
        )  # fmt: skip


@final
class CoRNNBPTTFunction(torch.autograd.Function):
    """coRNN with a hand-written BPTT backward; call it via :func:`cornn_bptt`.

    The state lives in one ``(T, B, 2H)`` buffer, :math:`(y_t, z_t)` side by side, so one
    product with :math:`(W\\ \\mathcal{W})` per step serves both in the forward pass, and
    one with its transpose in the backward pass. Saves the states and the driving forces
    :math:`c_t`; the backward pass turns a ``(T, B, H)`` buffer of local factors into
    :math:`u_t` in place and keeps every :math:`(\\delta_t, \\zeta_t)` only when a profile is
    recorded.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        inputs: Tensor,
        y0: Tensor,
        z0: Tensor,
        weight_ih: Tensor,
        weight_hh: Tensor,
        bias_ih: Tensor | None,
        bias_hh: Tensor | None,
        weight_zh: Tensor,
        dt: float,
        gamma: float,
        epsilon: float,
        mask: Tensor | None,
        on_profile: ProfileCallback | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        hidden = y0.shape[-1]
        drive = _input_projection(inputs, weight_ih, bias_ih, bias_hh)
        steps = drive.shape[0]
        start = torch.cat([y0, z0], dim=-1)
        states = start.new_empty(steps, *start.shape)
        weight_t = torch.cat([weight_hh, weight_zh], dim=1).t()
        time_steps = _time_steps(dt, mask, drive.dtype)
        previous = start
        for t in range(steps):
            c = torch.tanh_(drive[t].addmm_(previous, weight_t))
            y, z = previous[:, :hidden], previous[:, hidden:]
            y_new, z_new = states[t, :, :hidden], states[t, :, hidden:]
            torch.add(c, y, alpha=-gamma, out=z_new).sub_(z, alpha=epsilon)
            if time_steps is None:
                torch.add(z, z_new, alpha=dt, out=z_new)
                torch.add(y, z_new, alpha=dt, out=y_new)
            else:  # zero on padded steps: the state stays exactly
                torch.addcmul(z, z_new, time_steps[t], out=z_new)
                torch.addcmul(y, z_new, time_steps[t], out=y_new)
            previous = states[t]
        ctx.save_for_backward(inputs, start, weight_ih, weight_hh, weight_zh, drive, states, mask)
        ctx.options, ctx.on_profile = (dt, gamma, epsilon), on_profile
        output = states[..., :hidden]
        output = output.clone(memory_format=torch.contiguous_format) if mask is None else output * mask.unsqueeze(-1)
        return output, states[-1, :, :hidden].clone(), states[-1, :, hidden:].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor, grad_y_n: Tensor, grad_z_n: Tensor) -> tuple[Tensor | None, ...]:
        inputs, start, weight_ih, weight_hh, weight_zh, drive, states, mask = ctx.saved_tensors
        needs = ctx.needs_input_grad
        dt, gamma, epsilon = ctx.options
        steps, batch, width = states.shape
        hidden = width // 2
        time_steps = _time_steps(dt, mask, drive.dtype)
        grads = torch.addcmul(drive.new_ones(()), drive, drive, value=-1.0)  # 1 - c^2, then u_t
        if time_steps is None:
            grads.mul_(dt)
        else:
            grads.mul_(time_steps)
            keep_z = torch.addcmul(drive.new_ones(()), time_steps, time_steps.new_full((), -epsilon))
            grad_output = grad_output * mask.unsqueeze(-1)
        weight = torch.cat([weight_hh, weight_zh], dim=1)

        rows = steps if ctx.on_profile is not None else 1
        deltas = states.new_empty(rows, batch, width)  # (delta_t, zeta_t) side by side
        zeta_hat, grad_start = start.new_empty(batch, hidden), torch.empty_like(start)
        last = steps - 1
        torch.add(grad_output[last], grad_y_n, out=deltas[last % rows, :, :hidden])
        deltas[last % rows, :, hidden:].copy_(grad_z_n)
        for t in range(last, -1, -1):
            current = deltas[t % rows]
            delta, zeta = current[:, :hidden], current[:, hidden:]
            if time_steps is None:
                torch.add(zeta, delta, alpha=dt, out=zeta_hat)
            else:
                torch.addcmul(zeta, delta, time_steps[t], out=zeta_hat)
            grads[t].mul_(zeta_hat)
            # with rows == 1, `before` is `current`: each entry is read before it is written
            before = deltas[(t - 1) % rows] if t > 0 else grad_start
            if t > 0:
                torch.add(grad_output[t - 1], delta, out=before[:, :hidden])
            else:
                before[:, :hidden].copy_(delta)
            if time_steps is None:
                before[:, :hidden].add_(zeta_hat, alpha=-dt * gamma)
                torch.mul(zeta_hat, 1.0 - dt * epsilon, out=before[:, hidden:])
            else:
                before[:, :hidden].addcmul_(zeta_hat, time_steps[t], value=-gamma)
                torch.mul(zeta_hat, keep_z[t], out=before[:, hidden:])
            before.addmm_(grads[t], weight)
        if ctx.on_profile is not None:
            ctx.on_profile(torch.linalg.vector_norm(deltas[..., :hidden], dim=-1))
        grad_inputs, grad_weight_ih, grad_bias = _input_side_grads(
            grads, inputs, weight_ih, needs[0], needs[3], needs[5] or needs[6]
        )
        grad_weight = _recurrent_weight_grad(grads, start, states) if needs[4] or needs[7] else None
        return (
            grad_inputs,
            grad_start[:, :hidden].clone() if needs[1] else None,
            grad_start[:, hidden:].clone() if needs[2] else None,
            grad_weight_ih,
            grad_weight[:, :hidden].contiguous() if needs[4] else None,
            grad_bias if needs[5] else None,
            grad_bias.clone() if needs[5] and needs[6] else grad_bias if needs[6] else None,
            grad_weight[:, hidden:].contiguous() if needs[7] else None,
            None, None, None, None, None,
        )  # fmt: skip


CHUNK: Final = 32
"""Steps whose local factors LEM's backward pass computes at once, just before the recursion
reaches them (while they are in cache): over the whole sequence, each pass would stream
through a ``(T, B, H)`` block from main memory."""


def _lem_local_factors(
    grads: Tensor, gates: Tensor, ys: Tensor, zs: Tensor, y0: Tensor, z0: Tensor, dt: float, start: int, stop: int
) -> None:
    r"""Write the local factors of LEM's :math:`u_t` for steps ``start..stop-1`` into ``grads``:
    :math:`(c^z_t - z_{t-1}) k_1 (1 - k_1 / \Delta t)`, :math:`(c^y_t - y_{t-1}) k_2 (1 - k_2 / \Delta t)`,
    :math:`k_1 (1 - (c^z_t)^2)`, :math:`k_2 (1 - (c^y_t)^2)`, in ``weight_ih``'s block order; the
    recursion multiplies them by :math:`\hat\zeta_t` or :math:`\delta_t`."""
    k1, k2, candidate_z, candidate_y = gates[start:stop].chunk(4, dim=-1)
    u1, u2, uz, uy = grads[start:stop].chunk(4, dim=-1)
    one = gates.new_ones(())
    for u, k, candidate, before, first in ((u1, k1, candidate_z, zs, z0), (u2, k2, candidate_y, ys, y0)):
        if start == 0:
            torch.sub(candidate[0], first, out=u[0])
            torch.sub(candidate[1:], before[: stop - 1], out=u[1:])
        else:
            torch.sub(candidate, before[start - 1 : stop - 1], out=u)
        u.mul_(k).addcmul_(u, k, value=-1.0 / dt)  # k (1 - k / dt) is k's slope
    torch.addcmul(one, candidate_z, candidate_z, value=-1.0, out=uz).mul_(k1)
    torch.addcmul(one, candidate_y, candidate_y, value=-1.0, out=uy).mul_(k2)


def _time_steps(dt: float, mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """``None`` without a mask (every step is ``dt``), else ``dt`` on valid steps and 0 on
    padded ones, ``(T, B, 1)``."""
    return None if mask is None else mask.unsqueeze(-1).to(dtype) * dt


def _states(y0: Tensor, z0: Tensor, batch: int, hidden: int) -> dict[str, tuple[Tensor, tuple[int, ...], str]]:
    """The expected shapes of the initial state, for :func:`_check_like_inputs`."""
    return {
        name: (state, (batch, hidden), f"(B, H) with B = inputs.shape[1]; use {name}[0] for (1, B, H)")
        for name, state in (("y0", y0), ("z0", z0))
    }


def _check_layer(
    caller: str, inputs: Tensor, weight_hh: Tensor, num_gates: int, gate_names: str
) -> tuple[int, int, int, int]:
    """``(T, B, I, H)`` from ``inputs`` and ``weight_hh``, or ``ValueError`` with the fix."""
    if inputs.ndim != 3 or inputs.shape[0] == 0 or not inputs.is_floating_point():
        raise ValueError(
            f"{caller} expected floating-point inputs of shape (T, B, I) with T >= 1 (time-major), "
            f"got {inputs.dtype} of shape {tuple(inputs.shape)}; for batch-first data pass "
            f"inputs.transpose(0, 1), for a single sequence inputs.unsqueeze(1)"
        )
    _, hidden = gate_blocks(
        weight_hh, num_gates, caller=caller, name="weight_hh", gate_names=gate_names,
        fix="pass the cell's weight_hh, the weights acting on y_(t-1)",
    )  # fmt: skip
    return (*inputs.shape, hidden)
