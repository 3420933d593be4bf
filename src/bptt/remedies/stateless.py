"""The checkpoint state of a remedy that keeps none."""

from __future__ import annotations

from typing import Any


def require_empty_state(owner: object, state: dict[str, Any], kind: str) -> None:
    """Check that a state handed to a stateless remedy's ``load_state_dict`` is empty.

    Args:
        owner: the remedy (named in the message).
        state: what ``load_state_dict`` received.
        kind: what the remedy is (``"clipper"``, ``"constraint"``, ``"regulariser"``).

    Raises:
        ValueError: when ``state`` has keys: it belongs to another kind of remedy.
    """
    if state:
        raise ValueError(
            f"{type(owner).__name__} keeps no state, but received keys {sorted(state)}; "
            f"pass the state_dict() of the same kind of {kind}"
        )
