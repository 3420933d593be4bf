r"""Jacobians of a recurrent step, seen only through Jacobian-vector products.

A step ``s_t = step(x_t, s_{t-1})`` has the per-sample Jacobian
:math:`J_t = \partial s_t / \partial s_{t-1}` (S x S). The functions here estimate its
spectral norm, the spectral norm of products :math:`J_T \cdots J_{T-d+1}` and the Lyapunov
exponents of the dynamics (see docs/maths.md, "Spectral norms by power iteration" and "Lyapunov
exponents") with ``torch.func`` JVPs and VJPs, never building an S x S matrix (except
:func:`explicit_jacobians`, meant for small S and tests).

A step for a cell with a structured state works on the flat state, e.g. an LSTM step on
``s = cat([h, c], dim=1)``::

    def step(x, s):
        h, c = s.chunk(2, dim=1)
        h, c = lstm_cell(x, (h, c))
        return torch.cat([h, c], dim=1)

Rows are independent samples, so one batched call gives every row its own product. The step
must be a pure function that ``torch.func`` can transform (``vjp`` of ``vjp``, ``vmap``).
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Callable, Sequence
from functools import partial
from typing import final

import torch
from torch import Tensor
from torch.func import jacrev, jvp, vjp, vmap

from bptt.cells import AbstractCell, flatten_state, unflatten_state

StepFunction = Callable[[Tensor, Tensor], Tensor]
"""``step(x, s) -> s_new``: inputs ``(N, I)`` and flat states ``(N, S)`` to states ``(N, S)``."""

LinearMap = Callable[[Tensor], Tensor]
"""A linear map on vectors of shape ``(*, N, S)``: ``J v`` or ``J^T u`` for N rows."""


def _check(inputs: Tensor, states: Tensor, mask: Tensor | None, iterations: int = 1) -> Tensor:
    """Validate the shapes shared by every function here; return the mask, all True if None."""
    if iterations < 1:
        raise ValueError(f"expected iterations >= 1, got {iterations}")
    if inputs.ndim != 3:
        raise ValueError(
            f"expected inputs of shape (T, B, I), got shape {tuple(inputs.shape)}; "
            "add the missing time or batch dimension with unsqueeze"
        )
    if states.ndim != 3 or states.shape[:2] != inputs.shape[:2]:
        raise ValueError(
            f"expected states of shape (T, B, S) = ({inputs.shape[0]}, {inputs.shape[1]}, S) "
            f"like inputs, got shape {tuple(states.shape)}; pass the flat state before each "
            "step, states[t] = s_(t-1)"
        )
    if mask is None:
        return torch.ones(inputs.shape[:2], dtype=torch.bool, device=inputs.device)
    if mask.shape != inputs.shape[:2] or mask.dtype != torch.bool:
        raise ValueError(
            f"expected a bool mask of shape (T, B) = {tuple(inputs.shape[:2])}, got "
            f"{mask.dtype} of shape {tuple(mask.shape)}; pass mask.bool() with one entry per "
            "step and sample"
        )
    return mask


BLOCK = 4
"""Vectors per row in the block power iteration of span products (default)."""

Index = int | Tensor
"""Selects rows of a trajectory: a step ``t``, or a ``(T, B)`` boolean mask."""


class Linearization(abc.ABC):
    """The Jacobians :math:`J_t` of one trajectory as linear maps, for every step and sample.

    Args:
        inputs: the input of every step, ``(T, B, I)``.
        states: the flat state *before* every step, ``(T, B, S)``.
    """

    def __init__(self, inputs: Tensor, states: Tensor) -> None:
        self.inputs, self.states = inputs, states.detach()

    @abc.abstractmethod
    def maps(self, index: Index) -> tuple[LinearMap, LinearMap]:
        """:math:`v \\mapsto J v` and :math:`u \\mapsto J^T u` for the selected rows.

        Both maps take vectors of shape ``(*, rows, S)``: any leading dimensions, then one
        vector per selected row.
        """


@final
class StepFunctionSteps(Linearization):
    """Any :data:`StepFunction`, linearised with ``torch.func`` at each call of :meth:`maps`.

    :math:`J v` is the VJP of the (linear) VJP map, about one backward pass instead of the
    forward and tangent passes of ``torch.func.jvp``.
    """

    def __init__(self, step: StepFunction, inputs: Tensor, states: Tensor) -> None:
        super().__init__(inputs, states)
        self.step = step

    def maps(self, index: Index) -> tuple[LinearMap, LinearMap]:
        x, s = self.inputs[index], self.states[index]
        out, vjp_fn = vjp(lambda s: self.step(x, s), s)
        if out.shape != s.shape:
            raise ValueError(
                f"step must map states of shape (N, S) to new states of the same shape, got "
                f"{tuple(s.shape)} -> {tuple(out.shape)}; flatten the state, e.g. cat([h, c], dim=1)"
            )
        _, transpose_fn = vjp(lambda u: vjp_fn(u)[0], torch.zeros_like(out))
        return _batched(lambda v: transpose_fn(v)[0]), _batched(lambda u: vjp_fn(u)[0])


@final
class WholeCellSteps(Linearization):
    r"""The Jacobians of a cell whose step is not unit-wise after its projections
    (:attr:`~bptt.cells.AbstractCell.unit_wise` is ``False``: LEM, coRNN), linearised whole.

    Each call of :meth:`maps` takes the VJP of ``cell.step`` on the flat state, as
    :class:`StepFunctionSteps` does for any step function; unlike a bare step function, the
    cell can be copied to another precision (:meth:`to`).

    Args:
        cell: the cell.
        inputs: its input at every step, ``(T, B, I)``.
        states: its flat state before every step, ``(T, B, S)``.
    """

    def __init__(self, cell: AbstractCell, inputs: Tensor, states: Tensor) -> None:
        super().__init__(inputs, states)
        self.cell = cell

    def to(self, dtype: torch.dtype) -> WholeCellSteps:
        """The same maps with a copy of the cell, its inputs and states in ``dtype``."""
        return WholeCellSteps(copy.deepcopy(self.cell).to(dtype), self.inputs.to(dtype), self.states.to(dtype))

    def maps(self, index: Index) -> tuple[LinearMap, LinearMap]:
        hidden = self.cell.hidden_size

        def step(x: Tensor, s: Tensor) -> Tensor:
            return flatten_state(self.cell.step(x, unflatten_state(s, hidden)))

        return StepFunctionSteps(step, self.inputs, self.states).maps(index)


def cell_steps(cell: AbstractCell, inputs: Tensor, states: Tensor) -> CellSteps | WholeCellSteps:
    """The linearisation that fits ``cell``: factored (:class:`CellSteps`) when its step is
    unit-wise after the projections, else whole (:class:`WholeCellSteps`)."""
    if cell.unit_wise:
        return CellSteps(cell, inputs, states)
    return WholeCellSteps(cell, inputs, states)


@final
class CellSteps(Linearization):
    r"""The Jacobians of a bptt cell in factored form, :math:`J_t = A_t W_{hh} + C_t`.

    A cell's step is two projections and a unit-wise update,
    :math:`s_t = g(W_{ih} x_t + b_{ih},\ W_{hh} h_{t-1} + b_{hh},\ s_{t-1})` with ``h`` the
    first ``H`` entries of the flat state. So for unit ``j`` of state part ``p``,

    .. math::
        (J_t v)_{p,j} = \sum_{\text{gate } g} A_{t,g,p,j}\, (W_{hh} v_h)_{g,j}
            + \sum_{\text{part } q} C_{t,q,p,j}\, v_{q,j}

    where :math:`A_{t,g,p,j} = \partial s_{t,p,j} / \partial (W_{hh} h)_{g,j}` and
    :math:`C_{t,q,p,j} = \partial s_{t,p,j} / \partial s_{t-1,q,j}` (direct use only). One
    forward-mode JVP per gate and per state part, over all steps at once, gives A and C;
    afterwards each map is one matrix product with :math:`W_{hh}` and a few element-wise
    products. For an Elman cell, ``A`` is :math:`f'(z_t)` and ``C`` is zero:
    :math:`J_t = \mathrm{diag}(f'(z_t))\, W_{hh}`.

    Args:
        cell: the cell.
        inputs: its input at every step, ``(T, B, I)``.
        states: its flat state before every step, ``(T, B, S)``.
    """

    def __init__(
        self,
        cell: AbstractCell,
        inputs: Tensor,
        states: Tensor,
    ) -> None:
        super().__init__(inputs, states)
        self.cell = cell
        hidden, size = cell.hidden_size, self.states.shape[-1]
        self.parts, gates = size // hidden, cell.num_gates
        with torch.no_grad():
            rows_x, rows_s = inputs.flatten(0, 1), self.states.flatten(0, 1)
            input_part, recurrent_part = cell.gate_input(rows_x, rows_s[:, :hidden])

            def update(recurrent: Tensor, flat_state: Tensor) -> Tensor:
                new = cell.pointwise(input_part, recurrent, unflatten_state(flat_state, hidden))
                return flatten_state(new)

            shape = (*inputs.shape[:2], self.parts, hidden)
            primals = (recurrent_part, rows_s)
            no_gate, no_state = torch.zeros_like(recurrent_part), torch.zeros_like(rows_s)
            through_gates = [(_block(recurrent_part, g, hidden), no_state) for g in range(gates)]
            direct = [(no_gate, _block(rows_s, q, hidden)) for q in range(self.parts)]
            # (T, B, G, P, H) and (T, B, Q, P, H)
            self.a = torch.stack([jvp(update, primals, t)[1].reshape(shape) for t in through_gates], 2)
            self.c = torch.stack([jvp(update, primals, t)[1].reshape(shape) for t in direct], 2)
        self.weight = cell.recurrent_matrix.detach()


    def to(self, dtype: torch.dtype) -> CellSteps:
        """The same maps in another precision (e.g. ``torch.float64``, so that long products
        of small Jacobians do not underflow), without recomputing ``A`` and ``C``."""
        converted = copy.copy(self)
        converted.a, converted.c, converted.weight = (
            x.to(dtype) for x in (self.a, self.c, self.weight)
        )
        converted.states = self.states.to(dtype)
        return converted

    def maps(self, index: Index) -> tuple[LinearMap, LinearMap]:
        a, c, weight = self.a[index], self.c[index], self.weight
        hidden, parts = self.cell.hidden_size, self.parts

        def forward(v: Tensor) -> Tensor:
            gates = (v[..., :hidden] @ weight.T).unflatten(-1, (-1, 1, hidden))  # (*, N, G, 1, H)
            per_part = v.unflatten(-1, (parts, 1, hidden))  # (*, N, Q, 1, H)
            return ((a * gates).sum(-3) + (c * per_part).sum(-3)).flatten(-2)

        def backward(u: Tensor) -> Tensor:
            u = u.unflatten(-1, (1, parts, hidden))  # (*, N, 1, P, H)
            through_weight = (a * u).sum(-2).flatten(-2) @ weight  # (*, N, H)
            direct = (c * u).sum(-2)  # (*, N, Q, H)
            direct[..., 0, :] += through_weight
            return direct.flatten(-2)

        return forward, backward


def _block(like: Tensor, index: int, size: int) -> Tensor:
    """Ones on columns ``[index * size, (index + 1) * size)``, zeros elsewhere."""
    tangent = torch.zeros_like(like)
    tangent[:, index * size : (index + 1) * size] = 1
    return tangent


def _batched(fn: LinearMap) -> LinearMap:
    """``fn`` on ``(N, S)`` extended to ``(*, N, S)`` by ``vmap`` over the leading dimensions."""

    def apply(v: Tensor) -> Tensor:
        if v.ndim == 2:
            return fn(v)
        return vmap(fn)(v.flatten(0, -3)).unflatten(0, v.shape[:-2])

    return apply


def _linearization(step: StepFunction | Linearization, inputs: Tensor, states: Tensor) -> Linearization:
    if isinstance(step, Linearization):
        return step
    return StepFunctionSteps(step, inputs, states)


def _randn(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal start vectors; ``generator=None`` = a generator seeded with 0."""
    if generator is None:
        generator = torch.Generator(like.device).manual_seed(0)
    return torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)


def _power_iteration(
    forward: LinearMap, backward: LinearMap, start: Tensor, iterations: int, tolerance: float
) -> Tensor:
    r"""Largest singular value of a row-wise linear map :math:`A`, by block power iteration.

    Each row carries an orthonormal block :math:`V` of ``block`` vectors:
    :math:`U = A V`, estimate :math:`\sigma = \sigma_{\max}(U)` (Rayleigh-Ritz, a lower
    bound that rises to :math:`\sigma_{\max}(A)`), then :math:`V = \mathrm{orth}(A^T U)`.
    A block converges like :math:`(\sigma_{k+1} / \sigma_1)^2` per iteration instead of
    :math:`(\sigma_2 / \sigma_1)^2`, which matters when the top singular values are close;
    the maps are applied to the whole block in one call. ``forward`` = :math:`A` and
    ``backward`` = :math:`A^T` take ``(block, *rows, S)``, the shape of ``start``. Stops once
    no estimate changed by more than a relative ``tolerance`` (at least the dtype's
    epsilon) in one iteration.
    """
    v = start[0]
    tolerance = max(tolerance, torch.finfo(v.dtype).eps)
    basis = _orthonormal(start)
    previous = torch.full(v.shape[:-1], torch.inf, dtype=v.dtype, device=v.device)
    for i in range(1, iterations + 1):
        image = forward(basis)
        scale = image.abs().amax(dim=(0, -1)).clamp_min(torch.finfo(v.dtype).tiny)
        sigma = torch.linalg.matrix_norm(image.movedim(0, -1) / scale[..., None, None], 2) * scale
        converged = (sigma - previous).abs() <= tolerance * sigma
        if i == iterations or bool(converged.all()):
            break
        basis, previous = _orthonormal(backward(image / scale[..., None])), sigma
    return sigma


def _block_shape(shape: tuple[int, ...], block: int) -> tuple[int, ...]:
    """``(block, *shape)`` for start vectors of shape ``(*rows, S)``, at most S vectors."""
    if block < 1:
        raise ValueError(f"expected a block of at least 1 vector, got {block}")
    return (min(block, shape[-1]), *shape)


def _orthonormal(block: Tensor) -> Tensor:
    """An orthonormal basis, per row, of the ``k`` vectors in ``block`` of shape ``(k, *rows, S)``."""
    scale = block.abs().amax(dim=(0, -1), keepdim=True).clamp_min(torch.finfo(block.dtype).tiny)
    q = torch.linalg.qr((block / scale).movedim(0, -1)).Q
    return q.movedim(-1, 0)


@torch.no_grad()
def step_spectral_norms(
    step: StepFunction | Linearization,
    inputs: Tensor,
    states: Tensor,
    *,
    mask: Tensor | None = None,
    iterations: int = 30,
    tolerance: float = 1e-10,
    block: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Spectral norm :math:`\sigma_{\max}(J_t)` of every step's Jacobian, per sample.

    .. math::
        J_t = \frac{\partial\, \mathrm{step}(x_t, s_{t-1})}{\partial s_{t-1}}, \qquad
        \sigma_{\max}(J_t) = \max_{\|v\| = 1} \|J_t v\|

    by power iteration on :math:`J_t^T J_t`, all T x B Jacobians at once: each iteration is
    one batched Jacobian-vector and one vector-Jacobian product.

    Args:
        step: the recurrent step (see :data:`StepFunction`), or a :class:`Linearization`
            of this trajectory.
        inputs: the input of every step.
        states: the state *before* every step, ``states[t]`` = :math:`s_{t-1}`.
        mask: ``True`` where the step is real, ``False`` at padding; ``None`` = all real.
        iterations: the most power iterations; fewer when all estimates have converged.
        tolerance: converged when no estimate changes by more than this relative amount
            in one iteration.
        block: vectors per row in the block power iteration (more converge in fewer
            iterations when the top singular values are close, at a higher cost each).
        generator: for the random start vectors; ``None`` = a generator seeded with 0.

    Returns:
        The detached estimates, ``nan`` where ``mask`` is ``False``.

    Shape:
        - inputs: ``(T, B, I)``, states: ``(T, B, S)``, mask: ``(T, B)``
        - output: ``(T, B)``
    """
    mask = _check(inputs, states, mask, iterations)
    jvp_fn, vjp_fn = _linearization(step, inputs, states).maps(mask)
    s = states[mask].detach()
    start = _randn(_block_shape(s.shape, block), s, generator)
    norms = torch.full(mask.shape, torch.nan, dtype=s.dtype, device=s.device)
    norms[mask] = _power_iteration(jvp_fn, vjp_fn, start, iterations, tolerance)
    return norms


@torch.no_grad()
def product_spectral_norms(
    step: StepFunction | Linearization,
    inputs: Tensor,
    states: Tensor,
    spans: Sequence[int],
    *,
    mask: Tensor | None = None,
    iterations: int = 20,
    tolerance: float = 1e-10,
    block: int = BLOCK,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Spectral norm of the products of the last ``d`` Jacobians, for every span ``d``.

    .. math::
        P_d = J_T J_{T-1} \cdots J_{T-d+1} = \frac{\partial s_T}{\partial s_{T-d}}

    the factor by which a gradient at the last step can grow or shrink going ``d`` steps back.
    Padding steps (``mask`` False) freeze the state, so their Jacobian is the identity.

    Each span has its own power iteration on :math:`P_d^T P_d` (all samples as rows): one
    JVP sweep over the last ``d`` steps and one VJP sweep back per iteration, stopping when
    its estimates converge. Long products have a wide gap between their top singular values
    and converge in a few iterations; short ones are cheap. In float32, products below about
    ``1e-38`` underflow to 0: pass float64 states (or a float64 :class:`CellSteps`).

    Args:
        step: the recurrent step (see :data:`StepFunction`), or a :class:`Linearization`
            of this trajectory.
        inputs: the input of every step.
        states: the state *before* every step, ``states[t]`` = :math:`s_{t-1}`.
        spans: the lengths ``d`` of the products, each in ``[1, T]``.
        mask: ``True`` where the step is real, ``False`` at padding; ``None`` = all real.
        iterations: the most power iterations; fewer when all estimates have converged.
        tolerance: converged when no estimate changes by more than this relative amount
            in one iteration.
        block: vectors per row in the block power iteration (more converge in fewer
            iterations when the top singular values are close, at a higher cost each).
        generator: for the random start vectors; ``None`` = a generator seeded with 0.

    Returns:
        The detached estimates of :math:`\sigma_{\max}(P_d)`, one row per span.

    Shape:
        - inputs: ``(T, B, I)``, states: ``(T, B, S)``, mask: ``(T, B)``
        - output: ``(len(spans), B)``
    """
    mask = _check(inputs, states, mask, iterations)
    steps, states = inputs.shape[0], states.detach()
    if not spans or any(not 1 <= d <= steps for d in spans):
        raise ValueError(
            f"expected a non-empty list of spans in [1, T] = [1, {steps}], got {list(spans)}; "
            "a span is the number of Jacobians in the product"
        )
    linearization = _linearization(step, inputs, states)
    maps: dict[int, tuple[LinearMap, LinearMap]] = {}

    def sweep(v: Tensor, times: Sequence[int], which: int) -> Tensor:
        for t in times:
            if t not in maps:
                maps[t] = linearization.maps(t)
            v = torch.where(mask[t, :, None], maps[t][which](v), v)
        return v

    norms = []
    for span in spans:  # one power iteration per span: long products converge in a few
        window = range(steps - span, steps)
        start = _randn(_block_shape(states.shape[1:], block), states, generator)
        norms.append(
            _power_iteration(
                partial(sweep, times=window, which=0),
                partial(sweep, times=window[::-1], which=1),
                start,
                iterations,
                tolerance,
            )
        )
    return torch.stack(norms)


@torch.no_grad()
def lyapunov_exponents(
    step: StepFunction | Linearization,
    inputs: Tensor,
    states: Tensor,
    k: int,
    *,
    mask: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""The top ``k`` Lyapunov exponents along the trajectory, per sample (QR method).

    .. math::
        Q_t R_t = J_t Q_{t-1}, \qquad
        \lambda_i = \frac{1}{T_{\text{valid}}} \sum_t \log |(R_t)_{ii}|

    with :math:`Q_0` a random orthonormal S x k matrix (Benettin et al. 1980). The mean
    growth rate per step of a k-dimensional volume; :math:`\lambda_1 < 0` means vanishing
    and :math:`\lambda_1 > 0` exploding gradients. Padding steps are skipped and
    :math:`T_{\text{valid}}` counts the real steps of each sample. A Jacobian that maps some
    direction to zero (e.g. dead ReLU units) gives :math:`\log 0 = -\infty`.

    Args:
        step: the recurrent step (see :data:`StepFunction`), or a :class:`Linearization`
            of this trajectory.
        inputs: the input of every step.
        states: the state *before* every step, ``states[t]`` = :math:`s_{t-1}`.
        k: how many exponents, in ``[1, S]``.
        mask: ``True`` where the step is real, ``False`` at padding; ``None`` = all real.
        generator: for :math:`Q_0`; ``None`` = a generator seeded with 0.

    Returns:
        The detached exponents of every sample, sorted in descending order; average over
        samples yourself. ``nan`` for a sample without real steps.

    Shape:
        - inputs: ``(T, B, I)``, states: ``(T, B, S)``, mask: ``(T, B)``
        - output: ``(B, k)``
    """
    mask = _check(inputs, states, mask)
    states = states.detach()
    batch, size = states.shape[1:]
    if not 1 <= k <= size:
        raise ValueError(f"expected k in [1, S] = [1, {size}], got k={k}")
    q = torch.linalg.qr(_randn((batch, size, k), states, generator)).Q
    total = torch.zeros(batch, k, dtype=states.dtype, device=states.device)
    linearization = _linearization(step, inputs, states)
    for t in range(inputs.shape[0]):
        jvp_fn = linearization.maps(t)[0]
        q_new, r = torch.linalg.qr(jvp_fn(q.movedim(2, 0)).movedim(0, 2))
        q = torch.where(mask[t, :, None, None], q_new, q)
        total += torch.where(mask[t, :, None], r.diagonal(dim1=1, dim2=2).abs().log(), 0)
    return (total / mask.sum(0)[:, None]).sort(dim=1, descending=True).values


@torch.no_grad()
def explicit_jacobians(step: StepFunction, inputs: Tensor, states: Tensor) -> Tensor:
    r"""Every step's Jacobian :math:`J_t` as a matrix, by ``jacrev``: for small S and for tests.

    Shape:
        - inputs: ``(T, B, I)``, states: ``(T, B, S)``
        - output: ``(T, B, S, S)``, ``output[t, b, i, j]`` =
          :math:`\partial s_{t,i} / \partial s_{t-1,j}` of sample b
    """
    _check(inputs, states, None)
    steps, batch, size = states.shape

    def one(x: Tensor, s: Tensor) -> Tensor:
        return step(x[None], s[None])[0]

    jacobians = vmap(jacrev(one, argnums=1))(inputs.flatten(0, 1), states.detach().flatten(0, 1))
    return jacobians.reshape(steps, batch, size, size)
