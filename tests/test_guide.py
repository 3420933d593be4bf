"""The guide (docs/guide): every snippet runs and writes its figures; every figure on a page
exists and has a caption; every snippet is shown on some page."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib.image import imread

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "guide"
SNIPPETS = sorted((GUIDE / "snippets").glob("*.py"))
PAGES = sorted(GUIDE.glob("*.md"))
FIGURE_BLOCK = re.compile(r"<figure markdown>(.*?)</figure>", re.DOTALL)
IMAGE = re.compile(r"!\[[^\]]*\]\(\.\./figures/guide/([^)\s]+)\)")


def test_there_are_snippets_and_pages() -> None:
    assert len(SNIPPETS) >= 7 and len(PAGES) >= 8


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.stem for s in SNIPPETS])
def test_snippet_runs_and_writes_its_figures(snippet: Path, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "BPTT_GUIDE_QUICK": "1",
        "BPTT_FIGURES": str(tmp_path),
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [sys.executable, str(snippet)],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip(), "a snippet prints the table its page shows"
    figures = sorted(tmp_path.glob("*.png"))
    assert figures, f"{snippet.name} wrote no figure to BPTT_FIGURES"
    for figure in figures:
        image = imread(figure)
        assert image.ndim == 3 and min(image.shape[:2]) > 100
        assert (ROOT / "docs" / "figures" / "guide" / figure.name).is_file(), (
            f"{figure.name} is not committed under docs/figures/guide (run make figures)"
        )


def test_every_figure_on_a_page_exists_and_has_a_caption() -> None:
    for page in PAGES:
        text = page.read_text()
        in_blocks = 0
        for block in FIGURE_BLOCK.findall(text):
            images = IMAGE.findall(block)
            assert len(images) == 1, f"{page.name}: a <figure> holds one guide image"
            assert (ROOT / "docs" / "figures" / "guide" / images[0]).is_file(), images[
                0
            ]
            caption = re.search(r"<figcaption>(.*?)</figcaption>", block, re.DOTALL)
            assert caption and len(caption.group(1).strip()) > 20, (
                f"{page.name}: {images[0]} lacks a caption"
            )
            in_blocks += 1
        assert in_blocks == len(IMAGE.findall(text)), (
            f"{page.name}: every image sits in a <figure>"
        )


def test_every_snippet_is_included_by_a_page() -> None:
    included = set()
    for page in PAGES:
        included |= set(
            re.findall(r'--8<-- "docs/guide/snippets/([^"]+\.py)"', page.read_text())
        )
    assert {s.name for s in SNIPPETS} <= included
