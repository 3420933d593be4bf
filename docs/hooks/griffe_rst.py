"""griffe extension: read the docstrings' reStructuredText idioms as Markdown.

The docstrings follow PyTorch's style: Google sections (``Args:``, ``Returns:``, ``Shape:``)
with Sphinx roles (``:func:`x```, ``:math:`x```) and ``.. math::`` blocks. mkdocstrings
renders docstrings as Markdown, where those would show as raw markup; this extension rewrites
them, before the docstrings are parsed, into code spans and fenced LaTeX blocks (the site
loads no math JavaScript, so the formulas are shown as their source).
"""

from __future__ import annotations

import re
import textwrap

import griffe

ROLE = re.compile(
    r":(?:py:)?(?:func|class|meth|data|mod|attr|obj|exc|const|math):`(~?)([^`]+)`"
)


def _role(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    if tilde:  # :func:`~a.b.c` shows as c
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def _math_blocks(text: str) -> str:
    """``.. math::`` and its indented body -> a fenced ``latex`` block at the same indent."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if stripped.startswith(".. math::"):
            indent = line[: len(line) - len(stripped)]
            body: list[str] = []
            inline = stripped[len(".. math::") :].strip()
            if inline:
                body.append(inline)
            i += 1
            while i < len(lines) and (
                not lines[i].strip()
                or len(lines[i]) - len(lines[i].lstrip()) > len(indent)
            ):
                body.append(lines[i])
                i += 1
            while body and not body[-1].strip():
                body.pop()
            formula = textwrap.dedent("\n".join(body)).strip("\n")
            if out and out[-1].strip():
                out.append("")
            out += [
                f"{indent}```latex",
                *(indent + row if row else row for row in formula.splitlines()),
                f"{indent}```",
            ]
            if i < len(lines) and lines[i].strip():
                out.append("")
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


LITERAL = re.compile(r"(?<=\S)::$", re.MULTILINE)
"""A paragraph ending in ``::`` introduces an indented literal block, already code in Markdown."""


def rst_to_markdown(text: str) -> str:
    """The rewrite applied to every docstring."""
    return LITERAL.sub(":", ROLE.sub(_role, _math_blocks(text)))


class RstToMarkdown(griffe.Extension):
    """Rewrites every docstring with :func:`rst_to_markdown` as soon as it is loaded."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: object) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)
