"""Files that readers may open at any moment: atomic writes and JSON (lines) records.

A leaf module (it imports nothing of bptt), shared by the run directory, the diagnostics'
watch, the diagnosis records and the results store. :func:`to_json` is the one policy for
values JSON cannot hold: each file format says what a non-finite number becomes.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Literal

NONFINITE_STRINGS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
"""How :func:`to_json` writes non-finite numbers with ``nonfinite="string"``, and :func:`from_json` reads them."""

Nonfinite = Literal["null", "string", "error"]
"""What :func:`to_json` makes of NaN and ±infinity: ``None``, a string, or a :class:`ValueError`."""


def to_json(value: Any, where: str, nonfinite: Nonfinite) -> Any:
    """``value`` as plain JSON values, checked: dicts with string keys, lists (from lists or
    tuples), strings, integers, finite floats, booleans and ``None``.

    Args:
        value: the value to convert.
        where: how error messages name ``value``, e.g. ``"summary"``.
        nonfinite: what NaN and ±infinity become: ``"null"``, ``None`` (a diagnosis record:
            not measured or not finite); ``"string"``, ``"NaN"``, ``"Infinity"`` or
            ``"-Infinity"`` (standard JSON that :func:`from_json` reads back as the numbers);
            ``"error"``, a :class:`ValueError`.

    Raises:
        TypeError: on a value JSON cannot hold (a tensor, a set, a numpy integer ...) or a
            dict key that is not a string.
        ValueError: on a non-finite number with ``nonfinite="error"``.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return float(value)
        if nonfinite == "null":
            return None
        if nonfinite == "error":
            raise ValueError(f"{where} is {value}; it must hold finite numbers only")
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        for name in value:
            if not isinstance(name, str):
                raise TypeError(f"{where} has the key {name!r}; JSON objects need string keys")
        return {name: to_json(item, f"{where}[{name!r}]", nonfinite) for name, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(item, f"{where}[{i}]", nonfinite) for i, item in enumerate(value)]
    raise TypeError(
        f"{where} is a {type(value).__name__}, which JSON cannot hold; convert it to a number, "
        "string, bool, None, list or dict first (e.g. float(tensor) or tensor.tolist())"
    )


def from_json(value: Any) -> Any:
    """The inverse of :func:`to_json` with ``nonfinite="string"``: the strings of
    :data:`NONFINITE_STRINGS` back to NaN and ±infinity, anywhere in ``value``."""
    if isinstance(value, str):
        return NONFINITE_STRINGS.get(value, value)
    if isinstance(value, dict):
        return {name: from_json(item) for name, item in value.items()}
    if isinstance(value, list):
        return [from_json(item) for item in value]
    return value


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through ``write(file)`` so that readers see the old or the new file, never a part.

    The temporary file is created like an ordinary ``open(path, "w")`` creates one, so the
    operating system gives it ``0o666`` less the umask (``0o644`` under the usual umask 022),
    not the ``0o600`` of :func:`tempfile.mkstemp`: a colleague, a TensorBoard server or a
    study worker under another user can read it. Its random name and ``O_EXCL`` keep two
    writers apart.
    """
    temporary = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON to ``path``, atomically."""
    atomic_write(path, lambda file: file.write(json.dumps(value, indent=2).encode() + b"\n"))


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON record as a line of ``path``."""
    with open(path, "a") as file:
        file.write(json.dumps(record) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All records of a JSON-lines file, in order (a torn last line from a crash is dropped)."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records
