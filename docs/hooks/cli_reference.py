"""mkdocs hook: the CLI reference, generated from ``bptt.cli.build_parser()`` at build time.

``docs/reference/cli.md`` holds the marker ``<!-- bptt-cli-help -->``; this hook replaces it
with the ``--help`` text of ``bptt`` and of every subcommand, in the parser's order, so the
page cannot drift from the code. ``tests/test_docs.py`` checks the built page against the
parser with :func:`command_helps`.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager
from pathlib import Path

MARKER = "<!-- bptt-cli-help -->"
WIDTH = 100
"""Columns of the help text (argparse reads ``COLUMNS``), fixed so that the page is reproducible."""


@contextmanager
def _columns(width: int):
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        yield
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def _parser() -> argparse.ArgumentParser:
    try:
        from bptt.cli import build_parser
    except ImportError:  # bptt not installed: import it from the checkout
        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
        from bptt.cli import build_parser
    return build_parser()


def _subcommands(
    parser: argparse.ArgumentParser,
) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """``(name, one-line help, parser)`` of every subcommand, in the order they were added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            summaries = {
                choice.dest: choice.help or "" for choice in action._choices_actions
            }
            return [
                (name, summaries.get(name, ""), sub)
                for name, sub in action.choices.items()
            ]
    return []


def command_helps() -> list[tuple[str, str, str]]:
    """``(command, one-line help, --help text)``: ``bptt`` first, then every subcommand."""
    parser = _parser()
    with _columns(WIDTH):
        helps = [("bptt", parser.description or "", parser.format_help())]
        helps += [
            (f"bptt {name}", summary, sub.format_help())
            for name, summary, sub in _subcommands(parser)
        ]
    return helps


def cli_markdown() -> str:
    """The reference as Markdown: a table of the commands, then a section per command."""
    helps = command_helps()
    lines = ["| command | what it does |", "|---|---|"]
    for command, summary, _ in helps[1:]:
        anchor = command.replace(" ", "-")
        lines.append(f"| [`{command}`](#{anchor}) | {summary} |")
    for command, _, text in helps:
        lines += [
            "",
            f"## `{command}` {{#{command.replace(' ', '-')}}}",
            "",
            "```text",
            text.rstrip(),
            "```",
        ]
    return "\n".join(lines) + "\n"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, cli_markdown())
