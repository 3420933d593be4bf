"""mkdocs hook: the list of every figure in ``docs/figures/``, with the command that makes it.

``docs/benchmarks.md`` holds the marker ``<!-- bptt-figures -->``; this hook replaces it with
one section per figure file (PNG or SVG), showing the figure and its command. A guide figure
is made by the snippet in ``docs/guide/snippets/`` that names its file; the other figures are
listed in :data:`COMMANDS`. A figure with no known command is a build warning (so a strict
build fails): every figure on the site must say how it was made.
"""

from __future__ import annotations

import logging
from pathlib import Path

MARKER = "<!-- bptt-figures -->"
LOG = logging.getLogger("mkdocs.hooks.figures")

COMMANDS = {
    "demo-success.png": (
        (
            "make demo     # = bptt study adding --lengths 50,100 --configs rnn-tanh,irnn,lstm --clip none,norm:1 \\\n"
            "              #       --steps 3000 --hidden 64 --name demo --out runs/demo && bptt report runs/demo\n"
            "cp runs/demo/report/figures/success.png docs/figures/demo-success.png"
        ),
        (
            "The demo study's success-rate heatmap: one row per configuration, one column per length "
            "([Studies](studies.md#the-adding-problem-study-what-make-demo-runs))."
        ),
    ),
    "demo-profiles.png": (
        (
            "make demo     # as above\n"
            "cp runs/demo/report/figures/profiles.png docs/figures/demo-profiles.png"
        ),
        (
            "The demo study's gradient profiles at the end of training, per configuration and length "
            "([Studies](studies.md#the-adding-problem-study-what-make-demo-runs))."
        ),
    ),
}
"""Figures not made by a guide snippet: file name -> (command, caption)."""


def figure_entries(docs_dir: Path) -> list[tuple[Path, str | None, str]]:
    """``(figure path relative to docs/, command or None, caption)`` for every figure file."""
    figures = docs_dir / "figures"
    snippets = sorted((docs_dir / "guide" / "snippets").glob("*.py"))
    sources = {snippet: snippet.read_text(encoding="utf-8") for snippet in snippets}
    entries = []
    for path in sorted(p for p in figures.rglob("*") if p.suffix in (".png", ".svg")):
        relative = path.relative_to(docs_dir)
        if path.name in COMMANDS:
            command, caption = COMMANDS[path.name]
        else:
            makers = [
                s
                for s, text in sources.items()
                if f'"{path.name}"' in text or f"'{path.name}'" in text
            ]
            command = f"python docs/guide/snippets/{makers[0].name}" if makers else None
            caption = (
                f"Made by the guide's snippet `{makers[0].name}` (`make figures` runs them all)."
                if makers
                else ""
            )
        entries.append((relative, command, caption))
    return entries


def figures_markdown(docs_dir: Path) -> str:
    lines = []
    for relative, command, caption in figure_entries(docs_dir):
        if command is None:
            LOG.warning(
                "docs/%s: no command makes this figure (add it to docs/hooks/figures.py)",
                relative,
            )
            continue
        lines += [f"### `{relative.name}`", "", caption, "", "```bash", command, "```", "",
                  f"![{relative.name}]({relative.as_posix()})", ""]  # fmt: skip
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, figures_markdown(Path(config["docs_dir"])))
