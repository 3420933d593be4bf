r"""Jacobians of a recurrent step, seen only through Jacobian-vector products.

A step ``s_t = step(x_t, s_{t-1})`` has the per-sample Jacobian
:math:`J_t = \partial s_t / \partial s_{t-1}` (S x S). The functions here estimate its
spectral norm, the spectral norm of products :math:`J_T \cdots J_{T-d+1}` and the Lyapunov
exponents of the dynamics (DESIGN.md section 4) with ``torch.func`` JVPs and VJPs, never
building an S x S matrix (except :func:`explicit_jacobians`, meant for small S and tests).

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

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.func import jacrev, vjp, vmap

StepFunction = Callable[[Tensor, Tensor], Tensor]
"""``step(x, s) -> s_new``: inputs ``(N, I)`` and flat states ``(N, S)`` to states ``(N, S)``."""

_LinearMap = Callable[[Tensor], Tensor]


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


def _linearize(step: StepFunction, x: Tensor, s: Tensor) -> tuple[_LinearMap, _LinearMap]:
    r"""The maps :math:`v \mapsto J v` and :math:`u \mapsto J^T u` of ``step`` at ``(x, s)``.

    Both reuse one forward pass. :math:`J v` is the VJP of the (linear) VJP map, which costs
    about one backward pass instead of the forward and tangent passes of ``torch.func.jvp``.
    """
    out, vjp_fn = vjp(lambda s: step(x, s), s)
    if out.shape != s.shape:
        raise ValueError(
            f"step must map states of shape (N, S) to new states of the same shape, got "
            f"{tuple(s.shape)} -> {tuple(out.shape)}; flatten the state, e.g. cat([h, c], dim=1)"
        )
    _, transpose_fn = vjp(lambda u: vjp_fn(u)[0], torch.zeros_like(out))
    return (lambda v: transpose_fn(v)[0]), (lambda u: vjp_fn(u)[0])


def _randn(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal start vectors; ``generator=None`` = a generator seeded with 0."""
    if generator is None:
        generator = torch.Generator(like.device).manual_seed(0)
    return torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)


def _normalize(v: Tensor) -> tuple[Tensor, Tensor]:
    """The rows of ``v`` scaled to norm 1, and the log of their norms (``-inf`` for zero rows).

    Divides by the largest entry first, so that the squares of tiny rows do not underflow.
    """
    tiny = torch.finfo(v.dtype).tiny
    scale = v.abs().amax(dim=-1, keepdim=True).clamp_min(tiny)
    norm = (v / scale).norm(dim=-1, keepdim=True).clamp_min(tiny)
    return v / scale / norm, (scale * norm).log().squeeze(-1)


def _power_iteration(
    forward: _LinearMap, backward: _LinearMap, v: Tensor, iterations: int
) -> Tensor:
    r"""Largest singular value of a row-wise linear map :math:`A`, by power iteration.

    On :math:`A^T A`: :math:`v \leftarrow A^T A v / \|A^T A v\|`, estimate
    :math:`\sigma = \|A v\|`, with ``forward`` = :math:`A` and ``backward`` = :math:`A^T`.
    Stops once no estimate changed by more than a relative ``1e-10`` (or the dtype's epsilon,
    if larger) in one iteration, checked every 5 iterations.
    """
    tolerance = max(1e-10, torch.finfo(v.dtype).eps)
    v, _ = _normalize(v)
    previous = torch.full(v.shape[:-1], torch.inf, dtype=v.dtype, device=v.device)
    for i in range(1, iterations + 1):
        u, log_sigma = _normalize(forward(v))
        sigma = log_sigma.exp()
        converged = (sigma - previous).abs() <= tolerance * sigma
        if i == iterations or (i % 5 == 0 and bool(converged.all())):
            break
        (v, _), previous = _normalize(backward(u)), sigma
    return sigma


@torch.no_grad()
def step_spectral_norms(
    step: StepFunction,
    inputs: Tensor,
    states: Tensor,
    *,
    mask: Tensor | None = None,
    iterations: int = 30,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Spectral norm :math:`\sigma_{\max}(J_t)` of every step's Jacobian, per sample.

    .. math::
        J_t = \frac{\partial\, \mathrm{step}(x_t, s_{t-1})}{\partial s_{t-1}}, \qquad
        \sigma_{\max}(J_t) = \max_{\|v\| = 1} \|J_t v\|

    by power iteration on :math:`J_t^T J_t`, all T x B Jacobians at once: each iteration is
    one batched Jacobian-vector and one vector-Jacobian product.

    Args:
        step: the recurrent step, see :data:`StepFunction`.
        inputs: the input of every step.
        states: the state *before* every step, ``states[t]`` = :math:`s_{t-1}`.
        mask: ``True`` where the step is real, ``False`` at padding; ``None`` = all real.
        iterations: the most power iterations; fewer when all estimates have converged.
        generator: for the random start vectors; ``None`` = a generator seeded with 0.

    Returns:
        The detached estimates, ``nan`` where ``mask`` is ``False``.

    Shape:
        - inputs: ``(T, B, I)``, states: ``(T, B, S)``, mask: ``(T, B)``
        - output: ``(T, B)``
    """
    mask = _check(inputs, states, mask, iterations)
    x, s = inputs[mask], states[mask].detach()
    jvp_fn, vjp_fn = _linearize(step, x, s)
    start = _randn(s.shape, s, generator)
    norms = torch.full(mask.shape, torch.nan, dtype=s.dtype, device=s.device)
    norms[mask] = _power_iteration(jvp_fn, vjp_fn, start, iterations)
    return norms


@torch.no_grad()
def product_spectral_norms(
    step: StepFunction,
    inputs: Tensor,
    states: Tensor,
    spans: Sequence[int],
    *,
    mask: Tensor | None = None,
    iterations: int = 20,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Spectral norm of the products of the last ``d`` Jacobians, for every span ``d``.

    .. math::
        P_d = J_T J_{T-1} \cdots J_{T-d+1} = \frac{\partial s_T}{\partial s_{T-d}}

    the factor by which a gradient at the last step can grow or shrink going ``d`` steps back.
    Padding steps (``mask`` False) freeze the state, so their Jacobian is the identity.

    All spans and samples are rows of one power iteration on :math:`P_d^T P_d`: each
    iteration is one JVP sweep over the last ``max(spans)`` steps and one VJP sweep back, and
    the rows of span ``d`` are only acted on in the last ``d`` steps. In float32, products
    below about ``1e-38`` underflow to 0.

    Args:
        step: the recurrent step, see :data:`StepFunction`.
        inputs: the input of every step.
        states: the state *before* every step, ``states[t]`` = :math:`s_{t-1}`.
        spans: the lengths ``d`` of the products, each in ``[1, T]``.
        mask: ``True`` where the step is real, ``False`` at padding; ``None`` = all real.
        iterations: the most power iterations; fewer when all estimates have converged.
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
    # Rows are (span, sample), spans in descending order: at step t the spans acting on it
    # (those with d >= T - t) are a prefix of the rows.
    order = sorted(range(len(spans)), key=lambda i: -spans[i])
    longest = spans[order[0]]
    window = range(steps - longest, steps)
    maps = [_linearize(step, inputs[t], states[t]) for t in window]
    acting = [sum(spans[i] >= steps - t for i in order) for t in window]
    real = [mask[t, :, None] for t in window]

    def sweep(v: Tensor, which: int, times: Sequence[int]) -> Tensor:
        v = v.clone()
        for k in times:
            head = v[: acting[k]]
            v[: acting[k]] = torch.where(real[k], vmap(maps[k][which])(head), head)
        return v

    def forward(v: Tensor) -> Tensor:
        return sweep(v, 0, range(longest))

    def backward(u: Tensor) -> Tensor:
        return sweep(u, 1, range(longest - 1, -1, -1))

    start = _randn((len(spans), *states.shape[1:]), states, generator)
    norms = _power_iteration(forward, backward, start, iterations)
    return norms[torch.tensor(order, device=norms.device).argsort()]


@torch.no_grad()
def lyapunov_exponents(
    step: StepFunction,
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
        step: the recurrent step, see :data:`StepFunction`.
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
    for t in range(inputs.shape[0]):
        jvp_fn = _linearize(step, inputs[t], states[t])[0]
        q_new, r = torch.linalg.qr(vmap(jvp_fn, in_dims=2, out_dims=2)(q))
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
