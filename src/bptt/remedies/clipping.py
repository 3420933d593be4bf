"""Gradient clipping that reports what it did."""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from bptt._registry import Registry


@dataclass(frozen=True)
class ClipEvent:
    """What one clipping call saw and did.

    Attributes:
        norm: the global L2 norm of all gradients before clipping.
        threshold: the clipping threshold (a norm or a value), ``None`` when not clipping.
        clipped: whether any gradient was changed.
        post_norm: the global norm after clipping (``None`` when not measured).
    """

    norm: float
    threshold: float | None
    clipped: bool
    post_norm: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def clip_gradients_(
    parameters: Iterable[Tensor],
    max_norm: float | None = None,
    max_value: float | None = None,
) -> ClipEvent:
    r"""Clip gradients in place by global norm or by value, and report the pre-clip norm.

    - by norm: if :math:`\|g\|_2 > c`, :math:`g \leftarrow g \cdot c / \|g\|_2`; the update
      keeps its direction (Pascanu et al. 2013);
    - by value: :math:`g_i \leftarrow \mathrm{clamp}(g_i, -v, v)`; each entry is bounded but
      the direction of the update changes.

    Args:
        parameters: tensors whose ``.grad`` are clipped.
        max_norm: global-norm threshold ``c``.
        max_value: value threshold ``v``. At most one of the two may be given.

    Returns:
        A :class:`ClipEvent` with the global gradient norm measured before clipping.
    """
    if max_norm is not None and max_value is not None:
        raise ValueError("pass max_norm or max_value, not both")
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return ClipEvent(norm=0.0, threshold=max_norm or max_value, clipped=False)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    if max_norm is not None:
        scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        for grad in grads:
            grad.mul_(scale)
        return ClipEvent(norm=float(norm), threshold=max_norm, clipped=bool(norm > max_norm))
    if max_value is not None:
        largest = torch.stack([g.abs().max() for g in grads]).max()
        for grad in grads:
            grad.clamp_(-max_value, max_value)
        return ClipEvent(norm=float(norm), threshold=max_value, clipped=bool(largest > max_value))
    return ClipEvent(norm=float(norm), threshold=None, clipped=False)



class AbstractClipper(abc.ABC):
    """A gradient-clipping rule: ``clipper(parameters)`` clips their ``.grad`` in place.

    Concrete clippers implement :meth:`clip_`; adaptive ones keep a state with
    :meth:`state_dict` / :meth:`load_state_dict`, so that a resumed run clips exactly as the
    uninterrupted one would. Use between ``backward()`` and ``optimizer.step()``, in
    :func:`bptt.train` or any loop; the returned :class:`ClipEvent` has the global norm
    before and after and the threshold used.
    """

    name: ClassVar[str]

    def __call__(self, parameters: Iterable[Tensor]) -> ClipEvent:
        parameters = [p for p in parameters if p.grad is not None]
        if not parameters:
            return ClipEvent(norm=0.0, threshold=None, clipped=False, post_norm=0.0)
        grads = [p.grad for p in parameters]
        norm = _global_norm(grads)
        threshold, clipped = self.clip_(parameters, norm)
        return ClipEvent(float(norm), threshold, clipped, float(_global_norm(grads)))

    @abc.abstractmethod
    def clip_(self, parameters: list[Tensor], norm: Tensor) -> tuple[float | None, bool]:
        """Clip the parameters' gradients in place, given their global ``norm``.

        Returns:
            The threshold used and whether any gradient changed.
        """

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state, got keys {sorted(state)}")


class NormClipper(AbstractClipper):
    """Global-norm clipping (Pascanu et al. 2013): keeps the direction of the update."""

    name = "norm"

    def __init__(self, max_norm: float) -> None:
        self.max_norm = _positive("max_norm", max_norm)

    def clip_(self, parameters: list[Tensor], norm: Tensor) -> tuple[float, bool]:
        scale = torch.clamp(self.max_norm / (norm + 1e-6), max=1.0)
        torch._foreach_mul_([p.grad for p in parameters], scale)
        return self.max_norm, bool(norm > self.max_norm)


class PerParameterNormClipper(AbstractClipper):
    """Clips each parameter's gradient norm to ``max_norm`` on its own."""

    name = "per-parameter"

    def __init__(self, max_norm: float) -> None:
        self.max_norm = _positive("max_norm", max_norm)

    def clip_(self, parameters: list[Tensor], norm: Tensor) -> tuple[float, bool]:
        grads = [p.grad for p in parameters]
        norms = torch.stack(torch._foreach_norm(grads))
        scales = torch.clamp(self.max_norm / (norms + 1e-6), max=1.0)
        torch._foreach_mul_(grads, list(scales.unbind()))
        return self.max_norm, bool((norms > self.max_norm).any())


class ValueClipper(AbstractClipper):
    """Clips every gradient entry to ``[-max_value, max_value]``: changes the direction."""

    name = "value"

    def __init__(self, max_value: float) -> None:
        self.max_value = _positive("max_value", max_value)

    def clip_(self, parameters: list[Tensor], norm: Tensor) -> tuple[float, bool]:
        grads = [p.grad for p in parameters]
        largest = torch.stack([g.abs().amax() for g in grads]).amax()
        for grad in grads:
            grad.clamp_(-self.max_value, self.max_value)
        return self.max_value, bool(largest > self.max_value)


class AutoClipper(AbstractClipper):
    """AutoClip (Seetharaman et al. 2020): clip the global norm at a percentile of the history.

    The threshold is the ``percentile``-th percentile of every global norm seen so far, this
    step's included; the history is the state.
    """

    name = "autoclip"

    def __init__(self, percentile: float = 10.0) -> None:
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile must lie in (0, 100], got {percentile}")
        self.percentile = percentile
        self.history: list[float] = []

    def clip_(self, parameters: list[Tensor], norm: Tensor) -> tuple[float, bool]:
        self.history.append(float(norm))
        history = torch.tensor(self.history, dtype=torch.float64)
        threshold = float(torch.quantile(history, self.percentile / 100))
        if threshold <= 0:  # all-zero gradients so far: nothing to clip against
            return threshold, False
        return threshold, NormClipper(threshold).clip_(parameters, norm)[1]

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state["history"])


class AGCClipper(AbstractClipper):
    r"""Unit-wise adaptive gradient clipping (AGC, Brock et al. 2021).

    For every unit ``i`` (a row of a weight matrix, an entry of a vector),
    :math:`g_i \leftarrow g_i \cdot \lambda \max(\|w_i\|, \epsilon) / \|g_i\|` when
    :math:`\|g_i\| / \max(\|w_i\|, \epsilon) > \lambda`: the update of each unit stays
    below a fraction ``clipping`` of that unit's weight norm.
    """

    name = "agc"

    def __init__(self, clipping: float = 0.01, eps: float = 1e-3) -> None:
        self.clipping = _positive("clipping", clipping)
        self.eps = _positive("eps", eps)

    def clip_(self, parameters: list[Tensor], norm: Tensor) -> tuple[float, bool]:
        clipped = []
        for parameter in parameters:
            weight, grad = _units(parameter.detach()), _units(parameter.grad)
            limit = self.clipping * weight.norm(dim=1, keepdim=True).clamp_min(self.eps)
            grad_norm = grad.norm(dim=1, keepdim=True)
            over = grad_norm > limit
            grad.mul_(torch.where(over, limit / grad_norm.clamp_min(1e-12), 1.0))
            clipped.append(over.any())
        return self.clipping, bool(torch.stack(clipped).any())


class ZScoreClipper(AbstractClipper):
    """Z-score spike clipping (as in ZClip): clip norms far above their running statistics.

    Exponential moving mean and variance of the global norm (factor ``alpha``); once
    ``warmup`` norms are in, a norm with z-score above ``z`` is scaled down to
    ``mean + z * std``. The statistics are updated with the norm after clipping, so a spike
    does not inflate them.
    """

    name = "zscore"

    def __init__(self, z: float = 2.5, alpha: float = 0.97, warmup: int = 25) -> None:
        self.z = _positive("z", z)
        if not 0 < alpha < 1 or warmup < 1:
            raise ValueError(f"expected alpha in (0, 1) and warmup >= 1, got {alpha}, {warmup}")
        self.alpha, self.warmup = alpha, warmup
        self.seen, self.mean, self.var = 0, 0.0, 0.0

    def clip_(self, parameters: list[Tensor], norm: Tensor) -> tuple[float | None, bool]:
        value, threshold, clipped = float(norm), None, False
        if self.seen >= self.warmup:
            threshold = self.mean + self.z * self.var**0.5
            if value > threshold:
                clipped = NormClipper(threshold).clip_(parameters, norm)[1]
                value = threshold
        if self.seen == 0:
            self.mean = value
        else:
            delta = value - self.mean
            self.mean += (1 - self.alpha) * delta
            self.var = self.alpha * (self.var + (1 - self.alpha) * delta**2)
        self.seen += 1
        return threshold, clipped

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "mean": self.mean, "var": self.var}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen, self.mean, self.var = state["seen"], state["mean"], state["var"]


CLIPPERS: Registry[type[AbstractClipper]] = Registry("clipper")
for _clipper in (NormClipper, PerParameterNormClipper, ValueClipper, AutoClipper, AGCClipper, ZScoreClipper):
    CLIPPERS.register(_clipper.name, _clipper)


def make_clipper(spec: str) -> AbstractClipper | None:
    """A clipper from ``"NAME"`` or ``"NAME:VALUE"`` (e.g. ``"norm:1"``, ``"agc:0.01"``,
    ``"autoclip:10"``); ``"none"`` gives ``None``. The value is the clipper's first argument."""
    name, _, value = spec.partition(":")
    if name == "none":
        return None
    cls = CLIPPERS.get(name)
    if not value:
        return cls()
    try:
        number = float(value)
    except ValueError:
        raise ValueError(
            f"expected a number after '{name}:', got {value!r}; e.g. '{name}:1'"
        ) from None
    return cls(number)


def _units(tensor: Tensor) -> Tensor:
    """A view with one row per unit: rows of a matrix (or of a flattened kernel), entries of a vector."""
    return tensor.view(tensor.shape[0], -1) if tensor.ndim > 1 else tensor.view(-1, 1)


def _positive(name: str, value: float) -> float:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _global_norm(grads: list[Tensor]) -> Tensor:
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
