"""A user's own sequences from a ``.npz`` file: classification or regression, per sequence or per step.

The file holds:

- ``x``: ``(N, T, F)`` float features (``(N, T)`` is read as ``F = 1``).
- ``y``: the targets, whose shape and dtype choose the task:

  ==============  ==========  =========================================
  ``y`` shape     ``y`` dtype task
  ==============  ==========  =========================================
  ``(N,)``        integer     many-to-one classification (accuracy)
  ``(N,)``, ``(N, D)``  float  many-to-one regression (MSE)
  ``(N, T)``      integer     per-step classification (accuracy)
  ``(N, T)``, ``(N, T, D)``  float  per-step regression (MSE)
  ==============  ==========  =========================================

  ``y`` is read as per step whenever its second axis has ``T`` entries (the steps of ``x``).

- ``lengths`` (optional): ``(N,)`` integers, the valid steps of each sequence. Without it,
  sequences may end in padding steps whose features are all NaN; the steps before the
  first all-NaN step are valid. Any other NaN or Inf in ``x`` or ``y`` is an error, and so
  is a padding step followed by a valid one. Per-step targets beyond a sequence's length
  are ignored (they may be anything finite, or NaN).

The sequences are split 80/10/10 into train, validation and test with ``split_seed``.
"""

from __future__ import annotations

import functools
import zipfile
from pathlib import Path
from typing import final

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bptt.data import split_indices
from bptt.tasks.base import AbstractDatasetTask, Batch, majority_share


@final
class ArrayTask(AbstractDatasetTask):
    """Train on a user's ``x``/``y`` arrays (see the module docstring for the layout).

    Baselines: for classification, the majority class's share of the test split (per step
    where targets are per step); for regression, the MSE of predicting the training mean.
    Solved: classification halfway from the baseline to 100 %, regression below 10 % of the
    baseline MSE.

    Args:
        length: ignored beyond a check: the file sets the sequence length (pass it, or
            any positive value, as the run's length).
        data: the ``.npz`` file.
        split_seed: seeds the train/validation/test split.
    """

    name = "arrays"
    description = "your own sequences from an .npz file (x: N x T x F, y: N or N x T; see docs)"

    def __init__(self, length: int, *, data: str | None = None, split_seed: int = 0) -> None:
        super().__init__(length)
        if data is None:
            raise ValueError("the arrays task reads your .npz file: pass data=PATH (bptt train --data PATH)")
        self.data = data
        self.x, self.y, self.lengths, self.classification = load_arrays(data)
        self.many_to_many = self.y.ndim >= 2 and self.y.shape[1] == self.x.shape[1]
        self.parts = split_indices(len(self.x), seed=split_seed)
        self.input_size = self.x.shape[2]
        self.vocab_size = None
        if self.classification:
            self.metric_name, self.higher_is_better = "accuracy", True
            self.num_outputs = int(self.y.max()) + 1
            test = self.examples("test", torch.arange(self.split_size("test")))
            self.baseline = majority_share(self._valid_targets(test), self.num_outputs)
            self.solved_threshold = (1 + self.baseline) / 2
        else:
            self.metric_name, self.higher_is_better = "mse", False
            scalar = self.y.ndim == 1 or (self.many_to_many and self.y.ndim == 2)
            self.num_outputs = 1 if scalar else self.y.shape[-1]
            train = self.examples("train", torch.arange(self.split_size("train")))
            test = self.examples("test", torch.arange(self.split_size("test")))
            mean = self._valid_targets(train).mean(0)
            self.baseline = float(((self._valid_targets(test) - mean) ** 2).mean())
            self.solved_threshold = 0.1 * self.baseline

    def split_size(self, split: str) -> int:
        return len(self.parts[self._check_split(split)])

    def examples(self, split: str, indices: Tensor) -> Batch:
        rows = self.parts[self._check_split(split)][indices]
        lengths = self.lengths[rows]
        steps = int(lengths.max()) if len(rows) else self.x.shape[1]
        targets = self.y[rows]
        if self.many_to_many:
            targets = targets[:, :steps]
            if not self.classification and targets.ndim == 2:
                targets = targets.unsqueeze(-1)
        elif not self.classification and targets.ndim == 1:
            targets = targets.unsqueeze(-1)
        return Batch(self.x[rows, :steps], targets, lengths)

    def loss(self, prediction: Tensor, batch: Batch) -> Tensor:
        self.check_prediction(prediction, batch)
        prediction, targets = self._valid(prediction, batch)
        if self.classification:
            return F.cross_entropy(prediction, targets)
        return F.mse_loss(prediction, targets)

    @torch.no_grad()
    def metrics(self, prediction: Tensor, batch: Batch) -> dict[str, float]:
        loss = self.loss(prediction, batch)
        if not self.classification:
            return {"mse": loss.item()}
        prediction, targets = self._valid(prediction, batch)
        accuracy = (prediction.argmax(-1) == targets).float().mean()
        return {"accuracy": accuracy.item(), "cross_entropy": loss.item()}

    def _valid(self, prediction: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
        """Predictions and targets of the valid steps only (per-step tasks), flattened."""
        if not self.many_to_many:
            return prediction, batch.targets
        mask = _step_mask(batch)
        return prediction[mask], batch.targets.to(prediction.device)[mask]

    def _valid_targets(self, batch: Batch) -> Tensor:
        return batch.targets[_step_mask(batch)] if self.many_to_many else batch.targets

    def __repr__(self) -> str:
        return f"ArrayTask(data={self.data!r}, sequences={len(self.x)}, steps={self.x.shape[1]})"


def _step_mask(batch: Batch) -> Tensor:
    steps = batch.targets.shape[1]
    return torch.arange(steps, device=batch.targets.device) < batch.lengths.to(batch.targets.device).unsqueeze(1)


def load_arrays(path: str | Path) -> tuple[Tensor, Tensor, Tensor, bool]:
    """Read and check a user's ``.npz`` file (layout in the module docstring).

    The result is cached per process while the file is unchanged (same modification time
    and size); an edited file is read again.

    Returns:
        ``(x, y, lengths, classification)``: ``x`` ``(N, T, F)`` float32 with padding set to
        0, ``y`` int64 (classification) or float32, ``lengths`` ``(N,)`` int64.

    Raises:
        ValueError: a file that is not an ``.npz``, a missing ``x`` or ``y``, ragged
            (object) or empty arrays, shapes that do not match, NaN or Inf outside the
            padding, negative class labels, fewer than two classes, or lengths outside
            ``1..T``.
    """
    path = Path(path)
    try:
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        stamp = None  # _load_arrays reports the missing file
    return _load_arrays(path, stamp)


def arrays_length(path: str | Path, given: int | None = None) -> int:
    """The length ``T`` of a user's ``.npz`` data set: its number of steps.

    Args:
        path: the ``.npz`` file.
        given: a length asked for (``--length``); it may only repeat ``T``.

    Raises:
        ValueError: if ``given`` differs from ``T`` (or the file is not a valid data set).
    """
    steps = load_arrays(path)[0].shape[1]
    if given is not None and given != steps:
        raise ValueError(f"--length {given} does not apply to {path}: its sequences have T = {steps} "
                         "steps (leave --length out; cut or pad the arrays in the file to change T)")
    return steps


@functools.lru_cache(maxsize=2)
def _load_arrays(path: Path, stamp: tuple[int, int] | None) -> tuple[Tensor, Tensor, Tensor, bool]:
    how = "save your arrays with numpy.savez(path, x=x, y=y[, lengths=lengths])"
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:  # EOFError: an empty file
        raise ValueError(f"{path} cannot be read as an .npz archive ({error}); {how}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):  # a .npy file: one unnamed array
        raise ValueError(  # noqa: TRY004  (bad file content, not a bad argument type)
            f"{path} holds a single array, not an .npz archive of named arrays; {how}"
        )
    arrays = {}
    with archive:
        for name in archive.files:
            try:
                arrays[name] = archive[name]
            except (OSError, ValueError, zipfile.BadZipFile) as error:
                if "Object arrays" not in str(error):
                    raise ValueError(f"{path}: array {name!r} cannot be read ({error}); {how}") from None
                raise ValueError(
                    f"{path}: array {name!r} is a ragged (object) array, which is not loaded "
                    "(allow_pickle=False); pad the sequences to one length (all-NaN steps or a "
                    "'lengths' array) and save numeric arrays"
                ) from None
    missing = [name for name in ("x", "y") if name not in arrays]
    if missing:
        raise ValueError(f"{path}: expected arrays 'x' and 'y' (and optionally 'lengths'), got {sorted(arrays)}")
    x, y = arrays["x"], arrays["y"]
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3 or not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{path}: x must be numeric of shape (N, T, F) or (N, T), got {x.dtype} of shape {x.shape}")
    if 0 in x.shape:
        raise ValueError(f"{path}: x is empty (shape {x.shape}); it needs at least one sequence, step and feature")
    n, steps = x.shape[:2]
    if y.dtype == np.bool_:
        y = y.astype(np.int64)  # binary labels
    if np.iscomplexobj(x) or np.iscomplexobj(y):
        raise ValueError(f"{path}: x and y must be real numbers, got {x.dtype} and {y.dtype}")
    if y.shape[:1] != (n,) or not np.issubdtype(y.dtype, np.number):
        raise ValueError(f"{path}: y must be numeric with one row per sequence ({n}), got {y.dtype} of shape {y.shape}")
    if y.size == 0:
        raise ValueError(f"{path}: y is empty (shape {y.shape}); every sequence needs a target")
    x = x.astype(np.float32)
    if "lengths" in arrays:
        lengths = arrays["lengths"]
        if lengths.shape != (n,) or not np.issubdtype(lengths.dtype, np.integer):
            raise ValueError(f"{path}: lengths must be ({n},) integers, got {lengths.dtype} of shape {lengths.shape}")
        if lengths.min() < 1 or lengths.max() > steps:
            raise ValueError(
                f"{path}: lengths must lie in 1..{steps} (the steps of x), got {lengths.min()}..{lengths.max()}"
            )
    else:
        lengths = _lengths_from_nan_padding(path, x)
    valid = np.arange(steps)[None, :] < lengths[:, None]
    bad = ~np.isfinite(x) & valid[:, :, None]
    if bad.any():
        sequence, step, feature = np.argwhere(bad)[0]
        raise ValueError(
            f"{path}: x holds {int(bad.sum())} NaN or Inf values inside the valid steps, the first at "
            f"sequence {sequence}, step {step}, feature {feature}; fix or drop them (NaN marks padding "
            "only when it fills whole trailing steps)"
        )
    x[~valid] = 0.0
    per_step = y.ndim >= 2 and y.shape[1] == steps
    classification = np.issubdtype(y.dtype, np.integer)
    y_checked = y[valid] if per_step else y
    if not np.isfinite(y_checked.astype(np.float64)).all():
        raise ValueError(f"{path}: y holds NaN or Inf values (outside the padding); every target must be finite")
    if classification:
        if y.ndim > (2 if per_step else 1):
            raise ValueError(f"{path}: integer (class) targets must be (N,) or (N, T), got shape {y.shape}")
        if y_checked.min() < 0:
            raise ValueError(f"{path}: class labels must be 0, 1, ..., got a minimum of {y_checked.min()}")
        if len(np.unique(y_checked)) < 2:
            raise ValueError(
                f"{path}: a classifier needs at least two distinct class labels in y, got only "
                f"{np.unique(y_checked).tolist()}"
            )
        y = np.where(valid, y, 0) if per_step else y
        targets = torch.as_tensor(y.astype(np.int64))
    else:
        y = np.where(valid.reshape(valid.shape + (1,) * (y.ndim - 2)), y, 0.0) if per_step else y
        targets = torch.as_tensor(y.astype(np.float32))
    return torch.as_tensor(x), targets, torch.as_tensor(lengths.astype(np.int64)), bool(classification)


def _lengths_from_nan_padding(path: Path, x: np.ndarray) -> np.ndarray:
    """Valid steps per sequence: those before trailing steps whose features are all NaN."""
    padding = np.isnan(x).all(axis=2)
    lengths = x.shape[1] - np.cumprod(padding[:, ::-1], axis=1).sum(axis=1)
    inner = padding & (np.arange(x.shape[1])[None, :] < lengths[:, None])
    if inner.any():
        sequence, step = np.argwhere(inner)[0]
        raise ValueError(
            f"{path}: sequence {sequence} has an all-NaN step {step} followed by valid steps; NaN "
            "padding must come at the end of a sequence (or pass a 'lengths' array)"
        )
    if (lengths == 0).any():
        raise ValueError(f"{path}: sequence {int(np.argmax(lengths == 0))} is all padding; drop empty sequences")
    return lengths
