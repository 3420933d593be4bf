"""The ``bptt`` command: train, diagnose, replay, doctor, sample, demo, study, report, tasks, data.

:func:`main` runs a command line; :func:`build_parser` (in :mod:`bptt.cli.parser`) defines it,
and the commands themselves live by group in :mod:`bptt.cli.runs`,
:mod:`bptt.cli.diagnosis`, :mod:`bptt.cli.studies` and :mod:`bptt.cli.listings`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from bptt.cli.parser import build_parser

__all__ = ["INTERRUPTED_HINTS", "build_parser", "main"]

INTERRUPTED_HINTS = {
    "train": "the last checkpoint is intact, continue with --resume",
    "study": "finished trials are kept in the store; run the same command again to do the rest",
}
"""What to do after Ctrl-C, per command."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bptt`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, OSError) as error:
        print(f"bptt: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = INTERRUPTED_HINTS.get(args.command, "")
        print(f"bptt: interrupted{'; ' + hint if hint else ''}", file=sys.stderr)
        return 130
