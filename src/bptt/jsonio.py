"""Files that readers may open at any moment: atomic writes and JSON (lines) records.

A leaf module (it imports nothing of bptt), shared by the run directory, the diagnostics'
watch and the diagnosis records.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through ``write(file)`` so that readers see the old or the new file, never a part.

    The file gets the mode an ordinary ``open(path, "w")`` would give it (``0o666`` less
    the umask, so ``0o644`` under the usual umask 022), not the ``0o600`` of a temporary
    file: a colleague, a TensorBoard server or a study worker under another user can read it.
    """
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(handle, 0o666 & ~_umask())
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
