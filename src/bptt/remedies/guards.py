"""Guards that keep NaN and Inf out of the weights.

A non-finite loss or gradient is never applied. What happens instead is the policy:

- ``"skip"`` (default): drop this step's update and carry on;
- ``"rollback"``: restore the last good weights and optimizer state, and lower the learning
  rate by ``lr_factor``, for runs that keep producing non-finite values from a bad region.

An update can also overflow by itself (finite gradient, huge learning rate): the guard checks
the weights after every update and, if any is non-finite, restores the last good state
whatever the policy. Use it in any loop::

    guard = NonFiniteGuard(model, optimizer, policy="rollback")
    for x, y in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        guard.step(loss)            # optimizer.step() only when everything is finite
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, final

import torch
from torch import Tensor, nn

__all__ = ["GuardCounts", "NonFiniteGuard"]

Policy = Literal["skip", "rollback"]


@final
@dataclass
class GuardCounts:
    """What the guard did so far.

    Attributes:
        applied: updates applied.
        skipped: steps whose non-finite loss or gradient was dropped.
        rolled_back: times the last good state was restored.
    """

    applied: int = 0
    skipped: int = 0
    rolled_back: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@final
class NonFiniteGuard:
    """Applies optimizer steps only when the loss, the gradients and the new weights are finite.

    Args:
        model: the model whose parameters are guarded.
        optimizer: its optimizer; :meth:`step` calls ``optimizer.step()``.
        policy: ``"skip"`` or ``"rollback"`` on a non-finite loss or gradient.
        lr_factor: on a rollback, every parameter group's learning rate is multiplied by it.
        snapshot_every: the last good state is taken at the first :meth:`step` and refreshed
            after every this many applied updates (a copy of the weights and the optimizer
            state; memory: one model and optimizer).
        scheduler: a learning-rate scheduler whose base rates a rollback lowers too (else
            the next ``scheduler.step()`` would restore the old rate).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        policy: Policy = "skip",
        lr_factor: float = 0.5,
        snapshot_every: int = 50,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    ) -> None:
        if policy not in ("skip", "rollback"):
            raise ValueError(f"policy must be 'skip' or 'rollback', got {policy!r}")
        if not 0 < lr_factor <= 1:
            raise ValueError(f"lr_factor must lie in (0, 1], got {lr_factor}")
        if not isinstance(snapshot_every, int) or snapshot_every < 1:
            raise ValueError(f"snapshot_every must be a positive integer, got {snapshot_every!r}")
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.policy, self.lr_factor, self.snapshot_every = policy, lr_factor, snapshot_every
        self.counts = GuardCounts()
        self._good: dict[str, Any] | None = None  # taken at the first step

    def step(self, loss: Tensor | float) -> bool:
        """Apply ``optimizer.step()`` if the loss and every gradient are finite.

        Returns:
            Whether the update was applied and left the weights finite.
        """
        if self._good is None:
            self._good = self._snapshot()
        value = float(loss.detach()) if isinstance(loss, Tensor) else float(loss)
        if not (math.isfinite(value) and _all_finite(p.grad for p in self._parameters())):
            if self.policy == "rollback":
                self._roll_back()
            else:
                self.counts.skipped += 1
            return False
        self.optimizer.step()
        if not _all_finite(self._parameters()):
            self._roll_back()  # the update itself overflowed: never keep it
            return False
        self.counts.applied += 1
        if self.counts.applied % self.snapshot_every == 0:
            self._good = self._snapshot()
        return True

    def state_dict(self) -> dict[str, Any]:
        """The counts and the last good state (weights and optimizer state; ``None`` before
        the first step), so that a resumed run rolls back to where the uninterrupted one would."""
        return {"counts": self.counts.to_dict(), "good": self._good}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state returned by :meth:`state_dict`."""
        self.counts = GuardCounts(**state["counts"])
        self._good = state["good"]

    def _parameters(self) -> list[Tensor]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def _snapshot(self) -> dict[str, Any]:
        return {
            "model": copy.deepcopy(self.model.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
        }

    def _roll_back(self) -> None:
        lrs = [group["lr"] * self.lr_factor for group in self.optimizer.param_groups]
        self.model.load_state_dict(self._good["model"])
        self.optimizer.load_state_dict(self._good["optimizer"])
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        if self.scheduler is not None:
            self.scheduler.base_lrs = [lr * self.lr_factor for lr in self.scheduler.base_lrs]
        self.optimizer.zero_grad(set_to_none=True)
        self.counts.rolled_back += 1


def _all_finite(tensors: Any) -> bool:
    """One host sync: whether every tensor (``None`` skipped) is free of NaN and Inf.

    Takes the largest magnitude of each tensor (NaN propagates through it), not a norm: a
    norm of large but finite values can overflow to Inf in float32.
    """
    peaks = [t.detach().abs().amax() for t in tensors if t is not None and t.numel()]
    return not peaks or bool(torch.isfinite(torch.stack(peaks)).all())
