"""Gradient clipping that reports what it did.

Every rule is an :class:`AbstractClipper`: ``event = clipper(model.parameters())`` clips the
``.grad`` in place between ``loss.backward()`` and ``optimizer.step()`` and returns a
:class:`ClipEvent` (global norm before and after, the threshold used). Adaptive clippers keep
their state in :meth:`~AbstractClipper.state_dict`, so a resumed run clips exactly as the
uninterrupted one would. The same objects work in :func:`bptt.train` and in one's own loop::

    clipper = make_clipper("autoclip:10")
    for batch in data:
        loss = model(batch).mean()
        optimizer.zero_grad()
        loss.backward()
        event = clipper(model.parameters())  # one host sync, for the event
        optimizer.step()
        log(event.to_dict())
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, NamedTuple, final

import torch
from torch import Tensor

from bptt._registry import Registry
from bptt.gradients import global_grad_norm
from bptt.remedies.stateless import require_empty_state

__all__ = [
    "CLIPPERS",
    "AGCClipper",
    "AbstractClipper",
    "AutoClipper",
    "ClipEvent",
    "NormClipper",
    "PerParameterNormClipper",
    "ValueClipper",
    "ZScoreClipper",
    "clip_gradients_",
    "make_clipper",
]

_TINY = 1e-6  # added to norms before dividing, as torch.nn.utils.clip_grad_norm_ does


@final
@dataclass(frozen=True)
class ClipEvent:
    """What one clipping call saw and did; plain floats and bools, ready for JSON.

    Attributes:
        norm: the global L2 norm of all gradients before clipping.
        threshold: the threshold used (a norm, a value, or AGC's ratio ``clipping``);
            ``None`` when nothing was clipped against (no rule, or a clipper warming up).
        clipped: whether any gradient was changed.
        post_norm: the global norm after clipping (``None`` when not measured).
        clipped_fraction: for unit-wise rules, the fraction of units that were clipped:
            parameters (per-parameter), rows (AGC) or entries (value); ``None`` otherwise.
    """

    norm: float
    threshold: float | None
    clipped: bool
    post_norm: float | None = None
    clipped_fraction: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@final
class _Clip(NamedTuple):
    """What :meth:`AbstractClipper.clip_` did, still on the device (no host sync)."""

    threshold: Tensor | float | None
    clipped: Tensor
    clipped_fraction: Tensor | None = None


class AbstractClipper(abc.ABC):
    """A gradient-clipping rule: ``clipper(parameters)`` clips their ``.grad`` in place.

    Subclasses implement :meth:`clip_`, which must not synchronise with the device; adaptive
    ones also implement :meth:`state_dict` / :meth:`load_state_dict`, whose values are plain
    Python numbers and lists. Use between ``backward()`` and ``optimizer.step()``.
    """

    name: ClassVar[str]

    def __call__(self, parameters: Iterable[Tensor]) -> ClipEvent:
        """Clip the gradients of ``parameters`` in place.

        Args:
            parameters: tensors whose ``.grad`` are clipped; those without one are ignored.

        Returns:
            A :class:`ClipEvent`. Building it is the one host-device sync of the call.
        """
        parameters = [p for p in parameters if p.grad is not None]
        if not parameters:
            return ClipEvent(norm=0.0, threshold=None, clipped=False, post_norm=0.0)
        norm = global_grad_norm(parameters)
        result = self.clip_(parameters, norm)
        numbers = [norm, global_grad_norm(parameters), result.clipped]
        for optional in (result.threshold, result.clipped_fraction):
            if optional is not None:
                numbers.append(optional)
        values = torch.stack(
            [
                torch.as_tensor(x, dtype=torch.float64, device=norm.device)
                for x in numbers
            ]
        ).tolist()  # the one sync
        threshold = values[3] if result.threshold is not None else None
        fraction = values[-1] if result.clipped_fraction is not None else None
        return ClipEvent(values[0], threshold, bool(values[2]), values[1], fraction)

    @abc.abstractmethod
    def clip_(self, parameters: list[Tensor], norm: Tensor) -> _Clip:
        """Clip the parameters' gradients in place, given their global ``norm`` (0-d tensor).

        Returns:
            The threshold used, whether any gradient changed (a 0-d bool tensor) and,
            for unit-wise rules, the fraction of units clipped.
        """

    def state_dict(self) -> dict[str, Any]:
        """The state a resumed run needs (empty for stateless rules)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state returned by :meth:`state_dict`."""
        require_empty_state(self, state, "clipper")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_arguments(self)})"


@final
class NormClipper(AbstractClipper):
    r"""Global-norm clipping (Pascanu et al. 2013), as :func:`torch.nn.utils.clip_grad_norm_`.

    .. math::
        g \leftarrow g \cdot \min\left(1, \frac{c}{\|g\|_2 + 10^{-6}}\right)

    where :math:`g` is all gradients concatenated: the update keeps its direction.

    Args:
        max_norm: the threshold ``c`` on the global L2 norm.
    """

    name = "norm"

    def __init__(self, max_norm: float) -> None:
        self.max_norm = _positive("max_norm", max_norm)

    def clip_(self, parameters: list[Tensor], norm: Tensor) -> _Clip:
        return _Clip(self.max_norm, _scale_to_(parameters, norm, self.max_norm))


@final
class PerParameterNormClipper(AbstractClipper):
    r"""Clips each parameter's gradient to norm ``max_norm`` on its own.

    .. math::
        g_p \leftarrow g_p \cdot \min\left(1, \frac{c}{\|g_p\|_2 + 10^{-6}}\right)
        \quad \text{for every parameter } p

    Each parameter keeps its direction; the direction of the whole update may change.

    Args:
        max_norm: the threshold ``c`` on each parameter's gradient norm.
    """

    name = "per-parameter"

    def __init__(self, max_norm: float) -> None:
        self.max_norm = _positive("max_norm", max_norm)

    def clip_(self, parameters: list[Tensor], norm: Tensor) -> _Clip:
        grads = [p.grad for p in parameters]
        norms = torch.stack(torch._foreach_norm(grads))
        scales = torch.clamp(self.max_norm / (norms + _TINY), max=1.0)
        torch._foreach_mul_(grads, list(scales.unbind()))
        over = norms > self.max_norm
        return _Clip(self.max_norm, over.any(), over.double().mean())


@final
class ValueClipper(AbstractClipper):
    r"""Clips every gradient entry, as :func:`torch.nn.utils.clip_grad_value_`.

    .. math::
        g_i \leftarrow \mathrm{clamp}(g_i, -v, v)

    Each entry is bounded but the direction of the update changes.

    Args:
        max_value: the bound ``v``.
    """

    name = "value"

    def __init__(self, max_value: float) -> None:
        self.max_value = _positive("max_value", max_value)

    def clip_(self, parameters: list[Tensor], norm: Tensor) -> _Clip:
        grads = [p.grad for p in parameters]
        over = sum(g.abs().gt(self.max_value).sum() for g in grads)
        total = sum(g.numel() for g in grads)
        torch._foreach_clamp_min_(grads, -self.max_value)
        torch._foreach_clamp_max_(grads, self.max_value)
        return _Clip(self.max_value, over > 0, over.double() / total)


@final
class AutoClipper(AbstractClipper):
    r"""AutoClip (Seetharaman et al. 2020): clip the global norm at a percentile of its history.

    At step :math:`t`, with :math:`n_1, \dots, n_t` the global norms seen so far (this step's
    included, all of them or the last ``history``),

    .. math::
        c_t = \mathrm{quantile}(n_1, \dots, n_t;\ p / 100), \qquad
        g \leftarrow g \cdot \min\left(1, \frac{c_t}{\|g\|_2 + 10^{-6}}\right)

    with the quantile interpolated linearly, as :func:`torch.quantile`. The history (the
    pre-clip norms) is the state; non-finite norms are kept out of the quantile, and a
    threshold of zero (only zero gradients so far) clips nothing.

    Args:
        percentile: ``p`` in ``(0, 100]``; the paper recommends 10.
        history: keep only the last ``history`` norms; ``None`` keeps them all.
    """

    name = "autoclip"

    def __init__(self, percentile: float = 10.0, history: int | None = None) -> None:
        if not (isinstance(percentile, int | float) and 0 < percentile <= 100):
            raise ValueError(
                f"percentile must lie in (0, 100], received {percentile!r}; AutoClip uses 10"
            )
        if history is not None and not (isinstance(history, int) and history >= 1):
            raise ValueError(
                f"history must be a positive int or None (keep all), received {history!r}"
            )
        self.percentile, self.history = float(percentile), history
        self._norms: list[float] = []  # loaded, not yet moved to the device
        self._buffer: Tensor | None = None  # float64, capacity doubles as it fills
        self._count = 0

    @property
    def norms(self) -> Tensor:
        """The norms the next threshold is computed from (a float64 tensor, oldest first)."""
        if self._buffer is None:
            return torch.tensor(self._norms, dtype=torch.float64)
        return self._buffer[: self._count]

    def clip_(self, parameters: list[Tensor], norm: Tensor) -> _Clip:
        value = norm.detach().to(torch.float64)
        # a non-finite norm is stored as NaN, which nanquantile leaves out
        self._append(torch.where(value.isfinite(), value, math.nan))
        threshold = torch.nanquantile(self.norms, self.percentile / 100)
        return _Clip(threshold, _scale_to_(parameters, norm, threshold))

    def _append(self, norm: Tensor) -> None:
        if self._buffer is None or self._buffer.device != norm.device:
            self._buffer = self.norms.to(norm.device)
            self._count = len(self._buffer)
        if self.history is not None and self._count == self.history:
            self._buffer[:-1] = self._buffer[1:].clone()  # a window: drop the oldest
            self._count -= 1
        if self._count == len(self._buffer):
            capacity = max(16, 2 * self._count)
            if self.history is not None:
                capacity = min(capacity, self.history)
            grown = norm.new_empty(capacity)
            grown[: self._count] = self._buffer[: self._count]
            self._buffer = grown
        self._buffer[self._count] = norm
        self._count += 1

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.norms.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        norms = [float(x) for x in state["history"]]
        if self.history is not None:
            norms = norms[-self.history :]
        self._norms, self._buffer, self._count = norms, None, len(norms)


@final
class AGCClipper(AbstractClipper):
    r"""Unit-wise adaptive gradient clipping (AGC, Brock et al. 2021).

    For every unit :math:`i` of every parameter (a row of a weight matrix or of a
    flattened kernel, an entry of a bias or other vector),

    .. math::
        g_i \leftarrow
        \begin{cases}
            \lambda \dfrac{\max(\|w_i\|, \epsilon)}{\|g_i\|}\, g_i
                & \text{if } \dfrac{\|g_i\|}{\max(\|w_i\|, \epsilon)} > \lambda \\
            g_i & \text{otherwise}
        \end{cases}

    so that each unit's update stays below a fraction :math:`\lambda` of its weight norm.
    The event's ``threshold`` is :math:`\lambda` and ``clipped_fraction`` the fraction of
    units clipped.

    Args:
        clipping: :math:`\lambda`.
        eps: :math:`\epsilon`, so that units with zero weights can still move.
    """

    name = "agc"

    def __init__(self, clipping: float = 0.01, eps: float = 1e-3) -> None:
        self.clipping = _positive("clipping", clipping)
        self.eps = _positive("eps", eps)

    def clip_(self, parameters: list[Tensor], norm: Tensor) -> _Clip:
        over_counts, units = [], 0
        for parameter in parameters:  # a loop over parameters, each one vectorised
            weight, grad = _units(parameter.detach()), _units(parameter.grad)
            limit = self.clipping * weight.norm(dim=1, keepdim=True).clamp_min(self.eps)
            grad_norm = grad.norm(dim=1, keepdim=True)
            over = grad_norm > limit
            grad.mul_(torch.where(over, limit / grad_norm.clamp_min(1e-12), 1.0))
            over_counts.append(over.sum())
            units += over.numel()
        over = torch.stack(over_counts).sum()
        return _Clip(self.clipping, over > 0, over.double() / units)


@final
class ZScoreClipper(AbstractClipper):
    r"""Z-score spike clipping (as in ZClip, Kumar et al. 2025).

    The first ``warmup`` global norms are only collected; their mean and variance start
    the statistics (non-finite norms never enter them). After that, with :math:`\mu, \sigma^2`
    the running mean and variance,

    .. math::
        c = \mu + z\sigma, \qquad
        g \leftarrow g \cdot \min\left(1, \frac{c}{\|g\|_2}\right) \text{ if } \|g\|_2 > c,

    and the statistics are updated by exponential moving averages (factor :math:`\alpha`)
    with the norm after clipping, :math:`n' = \min(\|g\|_2, c)`, so that a spike does not
    inflate them:

    .. math::
        \mu \leftarrow \alpha\mu + (1 - \alpha) n', \qquad
        \sigma^2 \leftarrow \alpha\sigma^2 + (1 - \alpha)(n' - \mu)^2.

    Args:
        z: the z-score above which a norm is a spike.
        alpha: the EMA factor in ``(0, 1)``; closer to 1 remembers longer.
        warmup: how many steps to observe before clipping.
    """

    name = "zscore"

    def __init__(self, z: float = 2.5, alpha: float = 0.97, warmup: int = 25) -> None:
        self.z = _positive("z", z)
        if not (isinstance(alpha, int | float) and 0 < alpha < 1):
            raise ValueError(
                f"alpha must lie in (0, 1), received {alpha!r}; ZClip uses 0.97"
            )
        if not (isinstance(warmup, int) and warmup >= 1):
            raise ValueError(
                f"warmup must be a positive int, received {warmup!r}; ZClip uses 25"
            )
        self.alpha, self.warmup = float(alpha), warmup
        self._seen: list[Tensor] = []  # warm-up norms (float64, on the device)
        self._mean: Tensor | None = None
        self._var: Tensor | None = None

    def clip_(self, parameters: list[Tensor], norm: Tensor) -> _Clip:
        value = norm.detach().to(torch.float64)
        if self._mean is None or self._var is None:
            self._seen.append(value)
            if len(self._seen) == self.warmup:
                seen = torch.stack([x.to(value.device) for x in self._seen])
                finite = seen.isfinite()
                count = finite.sum().clamp_min(1)
                self._mean = torch.where(finite, seen, 0.0).sum() / count
                self._var = (
                    torch.where(finite, seen - self._mean, 0.0).square().sum() / count
                )
                self._seen = []
            return _Clip(None, torch.zeros((), dtype=torch.bool, device=norm.device))
        mean, var = self._mean.to(value.device), self._var.to(value.device)
        threshold = mean + self.z * var.sqrt()
        clipped = value > threshold
        scale = torch.where(clipped, threshold / value, 1.0).to(norm.dtype)
        torch._foreach_mul_([p.grad for p in parameters], scale)
        kept = torch.minimum(value, threshold)
        new_mean = self.alpha * mean + (1 - self.alpha) * kept
        new_var = self.alpha * var + (1 - self.alpha) * (kept - new_mean) ** 2
        finite = value.isfinite()  # a NaN or Inf norm leaves the statistics alone
        self._mean = torch.where(finite, new_mean, mean)
        self._var = torch.where(finite, new_var, var)
        return _Clip(threshold, clipped)

    def state_dict(self) -> dict[str, Any]:
        if self._mean is None or self._var is None:
            return {
                "warmup_norms": [float(x) for x in self._seen],
                "mean": None,
                "var": None,
            }
        return {"warmup_norms": [], "mean": float(self._mean), "var": float(self._var)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._seen = [
            torch.tensor(float(x), dtype=torch.float64) for x in state["warmup_norms"]
        ]
        self._mean, self._var = _scalar(state["mean"]), _scalar(state["var"])


CLIPPERS: Registry[type[AbstractClipper]] = Registry("clipper")
for _clipper in (
    NormClipper,
    PerParameterNormClipper,
    ValueClipper,
    AutoClipper,
    AGCClipper,
    ZScoreClipper,
):
    CLIPPERS.register(_clipper.name, _clipper)


def make_clipper(spec: str) -> AbstractClipper | None:
    """A clipper from a spec ``"NAME"`` or ``"NAME:VALUE"``, as configs and the CLI write it.

    The value is the clipper's first argument: ``"norm:1"`` (max norm), ``"per-parameter:1"``,
    ``"value:25"`` (max value), ``"autoclip:10"`` (percentile), ``"agc:0.01"`` (clipping
    ratio), ``"zscore:2.5"`` (z); a bare name takes the defaults where there are some.

    Args:
        spec: the spec; ``"none"`` means no clipping.

    Returns:
        The clipper, or ``None`` for ``"none"``.

    Raises:
        ValueError: for an unknown name (with the known ones listed), a value that is not
            a number, a missing required value, or a value out of range.
    """
    parsed = CLIPPERS.parse(spec)
    if parsed is None:
        return None
    name, cls, number = parsed
    if number is not None:
        return cls(number)
    try:
        return cls()
    except TypeError:
        raise ValueError(
            f"clipper {name!r} needs a value, received {spec!r}; write e.g. '{name}:1'"
        ) from None


def clip_gradients_(
    parameters: Iterable[Tensor],
    max_norm: float | None = None,
    max_value: float | None = None,
) -> ClipEvent:
    r"""Clip gradients in place by global norm or by value, and report the pre-clip norm.

    - by norm: if :math:`\|g\|_2 > c`, :math:`g \leftarrow g \cdot c / \|g\|_2`; the update
      keeps its direction (Pascanu et al. 2013), as :class:`NormClipper`;
    - by value: :math:`g_i \leftarrow \mathrm{clamp}(g_i, -v, v)`; each entry is bounded but
      the direction of the update changes, as :class:`ValueClipper`;
    - neither: nothing is changed, only the norm is measured.

    Args:
        parameters: tensors whose ``.grad`` are clipped.
        max_norm: global-norm threshold ``c``.
        max_value: value threshold ``v``. At most one of the two may be given.

    Returns:
        A :class:`ClipEvent` with the global gradient norm measured before clipping.
    """
    if max_norm is not None and max_value is not None:
        raise ValueError(
            f"pass max_norm or max_value, not both (received {max_norm} and {max_value})"
        )
    parameters = [p for p in parameters if p.grad is not None]
    if not parameters:
        return ClipEvent(norm=0.0, threshold=max_norm or max_value, clipped=False)
    if max_norm is not None:
        return NormClipper(max_norm)(parameters)
    if max_value is not None:
        return ValueClipper(max_value)(parameters)
    norm = float(global_grad_norm(parameters))
    return ClipEvent(norm=norm, threshold=None, clipped=False, post_norm=norm)


def _scale_to_(
    parameters: list[Tensor], norm: Tensor, threshold: Tensor | float
) -> Tensor:
    """Scale all gradients so their global norm is at most ``threshold``; whether it was over."""
    # a zero threshold (AutoClip after only zero gradients) would erase the update
    over = (norm > threshold) & (threshold > 0)
    scale = torch.where(over, threshold / (norm + _TINY), 1.0).to(norm.dtype)
    torch._foreach_mul_([p.grad for p in parameters], scale)
    return over


def _scalar(value: float | None) -> Tensor | None:
    return None if value is None else torch.tensor(float(value), dtype=torch.float64)


def _units(tensor: Tensor) -> Tensor:
    """A view with one row per unit: rows of a matrix (or flattened kernel), entries of a vector."""
    return tensor.view(tensor.shape[0], -1) if tensor.ndim > 1 else tensor.view(-1, 1)


def _positive(name: str, value: float) -> float:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(
            f"{name} must be a positive finite number, received {value!r}; e.g. {name}=1.0"
        )
    return float(value)


def _arguments(clipper: AbstractClipper) -> str:
    public = {k: v for k, v in vars(clipper).items() if not k.startswith("_")}
    return ", ".join(f"{k}={v!r}" for k, v in public.items())
