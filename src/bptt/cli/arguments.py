"""From parsed flags to a :class:`~bptt.config.TrainConfig`, and the flags' value types."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from bptt.config import TrainConfig, clip_spec
from bptt.rundir import RunDirectory
from bptt.tasks import TASKS, arrays_length, task_for_file

__all__ = ["config_from_args", "device_from_args", "task_option"]


def task_option(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` -> ``(key, value)``, the value read as JSON (numbers, true, null) or a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, e.g. limit=1000, got {text!r}")
    try:
        return key.replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.replace("-", "_"), value


def config_from_args(args: argparse.Namespace, saved: Path | None = None, command: str = "train") -> TrainConfig:
    """Flags given on the command line, over the config saved in ``saved`` or the defaults.

    ``--clip-norm C`` and ``--clip-value V`` are shorthands for ``--clip norm:C`` and
    ``--clip value:V``. For ``--data FILE`` the task follows from the file's extension, and an
    ``.npz`` data set's length is its number of steps.
    """
    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    given = {key: value for key, value in vars(args).items() if key in fields and value is not None}
    shorthand = clip_spec(getattr(args, "clip_norm", None), getattr(args, "clip_value", None))
    if shorthand is not None:
        given["clip"] = shorthand
    if "task_options" in given:
        given["task_options"] = dict(given["task_options"])
    if saved is not None:
        return dataclasses.replace(RunDirectory(saved).config(), **given)
    if "task" not in given and "data" in given:
        given["task"] = task_for_file(given["data"])
    if "task" not in given:
        raise ValueError(f"{command} needs a TASK (one of {', '.join(TASKS.names())}) or --data FILE")
    if given["task"] == "arrays" and "data" in given:
        given["length"] = arrays_length(given["data"], given.get("length"))
    return TrainConfig(**given)


def device_from_args(args: argparse.Namespace) -> str:
    """``--device``, else cuda if available, else cpu."""
    return getattr(args, "device", None) or ("cuda" if torch.cuda.is_available() else "cpu")
