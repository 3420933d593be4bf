"""Name -> class registries used by the CLI and configs to look up cells, tasks and inits."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Generic, TypeVar, final

T = TypeVar("T")


@final
class Registry(Generic[T]):
    """A mapping from names to objects of one kind (cells, tasks, initialisers).

    Args:
        kind: what is registered, used in error messages (e.g. ``"cell"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name``; raises ``KeyError`` if the name is taken."""
        if name in self._entries:
            raise KeyError(
                f"a {self.kind} named {name!r} is already registered "
                f"({self._entries[name]!r}); choose another name"
            )
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        """Return the entry registered as ``name``.

        Raises:
            ValueError: if ``name`` is unknown; the message lists the known names and
                suggests the closest one.
        """
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(unknown_name_message(self.kind, name, self.names())) from None

    def parse(self, spec: str) -> tuple[str, T, float | None] | None:
        """Read a spec ``"NAME"`` or ``"NAME:NUMBER"`` as configs and the CLI write it.

        Returns:
            ``(name, entry, number)`` with ``number`` ``None`` when none was given, or
            ``None`` for the spec ``"none"``.

        Raises:
            ValueError: for an unknown name (see :meth:`get`) or a value that is not a number.
        """
        name, colon, value = spec.strip().partition(":")
        if name == "none" and not colon:
            return None
        entry = self.get(name)
        if not colon:
            return name, entry, None
        try:
            return name, entry, float(value)
        except ValueError:
            raise ValueError(
                f"expected a number after '{name}:', received {value!r}; write e.g. '{name}:1'"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def unknown_name_message(kind: str, name: str, known: list[str]) -> str:
    """Error text for an unknown name: what was received, what exists, the closest match."""
    message = f"unknown {kind} {name!r}; expected one of: {', '.join(known)}"
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    if close:
        message += f". Did you mean {close[0]!r}?"
    return message
