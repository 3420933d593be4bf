"""Run directories: config.json, metrics.jsonl, checkpoint.pt, summary.json and the
watch logs (diagnostics.jsonl, anomalies.jsonl, captures/).

Every file that matters is written atomically (a temporary file in the same folder, then
``os.replace``), so a crash at any moment leaves the last good version in place.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, NamedTuple, final

import torch

from bptt.builders import rebuild_model
from bptt.config import TrainConfig
from bptt.jsonio import append_jsonl, atomic_write, read_jsonl, write_json
from bptt.models import SequenceModel
from bptt.tasks import AbstractTask

CONFIG, METRICS, CHECKPOINT, SUMMARY = "config.json", "metrics.jsonl", "checkpoint.pt", "summary.json"
LOGS = (METRICS, "diagnostics.jsonl", "anomalies.jsonl")
"""The JSON-lines logs of a run, one record per line, each with a ``step``."""
CHECKPOINT_KEYS = frozenset({"step", "model", "optimizer", "scheduler", "rng", "nonfinite_steps"})
"""What every checkpoint holds; the training loop adds the state of every other stateful part."""


@final
class RunDirectoryError(ValueError):
    """A run directory cannot be created, resumed or read as asked."""


@final
class TrainedModel(NamedTuple):
    """A run's model with its checkpoint's weights, as :meth:`RunDirectory.load_model` returns it.

    Attributes:
        model: the model, in training mode, with the checkpoint's weights.
        task: the run's task.
        config: the run's saved config.
        step: the training step of the checkpoint.
    """

    model: SequenceModel
    task: AbstractTask
    config: TrainConfig
    step: int


@final
class RunDirectory:
    """The folder of one training run.

    Use :meth:`create` for a new run and :meth:`resume` to continue one.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, path: str | Path, config: TrainConfig, overwrite: bool = False) -> RunDirectory:
        """Start a new run in ``path`` and write its config.

        Raises:
            RunDirectoryError: if ``path`` exists and is not empty, unless ``overwrite`` and it is
                a bptt run directory (one with a config.json): other folders are never deleted.
        """
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            if not overwrite:
                raise RunDirectoryError(
                    f"run directory {path} already exists; pass --resume to continue it, "
                    "--overwrite to replace it, or choose another --out"
                )
            if not (path / CONFIG).is_file():
                raise RunDirectoryError(
                    f"refusing to overwrite {path}: it is not a bptt run directory (no {CONFIG}); "
                    "choose another --out"
                )
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path)
        run.write_config(config)
        return run

    @classmethod
    def resume(cls, path: str | Path, config: TrainConfig) -> RunDirectory:
        """Open an existing run to continue it with ``config``.

        Only ``steps`` may differ from the saved config (to train for longer); call
        :meth:`write_config` once the checkpoint has loaded to record the new value. A config
        saved by bptt 0.1.0 (``clip_norm``, ``clip_value``) compares as the ``clip`` spec it
        stands for.

        Raises:
            RunDirectoryError: missing directory or config, or a config that differs.
        """
        path = Path(path)
        saved = cls(path).config()
        differences = {
            key: (getattr(saved, key), value)
            for key, value in config.to_dict().items()
            if key != "steps" and getattr(saved, key) != value
        }
        if differences:
            listed = ", ".join(f"{k}: saved {old!r}, given {new!r}" for k, (old, new) in differences.items())
            raise RunDirectoryError(
                f"cannot resume {path} with a different config ({listed}); "
                "only --steps may change on resume"
            )
        return cls(path)

    def write_config(self, config: TrainConfig) -> None:
        write_json(self.path / CONFIG, config.to_dict())

    def config(self) -> TrainConfig:
        """The run's saved config."""
        file = self.path / CONFIG
        if not file.is_file():
            raise RunDirectoryError(f"{self.path} is not a bptt run directory: {CONFIG} is missing")
        try:
            return TrainConfig.from_dict(json.loads(file.read_text()))
        except (json.JSONDecodeError, TypeError, ValueError) as error:
            raise RunDirectoryError(f"{file} is not a valid bptt config: {error}") from error

    # -- metrics ----------------------------------------------------------------------

    def log(self, record: dict[str, Any]) -> None:
        """Append one JSON record to metrics.jsonl."""
        append_jsonl(self.path / METRICS, record)

    def metrics(self) -> list[dict[str, Any]]:
        """All records of metrics.jsonl, in order (a torn last line from a crash is dropped)."""
        return read_jsonl(self.path / METRICS)

    def truncate_logs(self, step: int) -> None:
        """Keep only log records up to ``step`` (those after the checkpoint are replayed on resume)."""
        for name in LOGS:
            path = self.path / name
            if path.exists():
                kept = "".join(json.dumps(r) + "\n" for r in read_jsonl(path) if r["step"] <= step)
                atomic_write(path, lambda file, kept=kept: file.write(kept.encode()))

    # -- checkpoint -------------------------------------------------------------------

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Write checkpoint.pt atomically: a crash leaves the previous checkpoint intact."""
        atomic_write(self.path / CHECKPOINT, lambda file: torch.save(state, file))

    def load_checkpoint(self, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """Load checkpoint.pt with ``weights_only=True``.

        Raises:
            RunDirectoryError: if the checkpoint is missing, truncated, corrupt or incomplete.
        """
        file = self.path / CHECKPOINT
        if not file.is_file():
            raise RunDirectoryError(f"no checkpoint to resume from: {file} does not exist")
        try:
            state = torch.load(file, map_location=map_location, weights_only=True)
        except Exception as error:  # torch raises many types for a damaged zip/pickle
            raise RunDirectoryError(
                f"checkpoint {file} is corrupt or truncated ({type(error).__name__}: {error}); "
                "restore it from a backup or start the run again with --overwrite"
            ) from error
        missing = CHECKPOINT_KEYS - set(state) if isinstance(state, dict) else CHECKPOINT_KEYS
        if missing:
            raise RunDirectoryError(
                f"checkpoint {file} is not a bptt checkpoint: missing {sorted(missing)}"
            )
        if "carried_state" in state:  # bptt 0.1.0's name for the stream's carried state
            state["stream"] = {"carried": state.pop("carried_state")}
        return state

    def load_model(self) -> TrainedModel:
        """The run's model with the weights of its checkpoint, its task and its config.

        Raises:
            RunDirectoryError: if the config or the checkpoint is missing or damaged.
        """
        config = self.config()
        checkpoint = self.load_checkpoint()
        model, task = rebuild_model(config, checkpoint["model"])
        return TrainedModel(model, task, config, checkpoint["step"])

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.path / SUMMARY, summary)
