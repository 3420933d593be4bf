"""The docs site builds in strict mode, every page is there, and nothing on it is stale."""

from __future__ import annotations

import html
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings")
yaml = pytest.importorskip("yaml")


def _load_hook(name: str):
    spec = importlib.util.spec_from_file_location(
        f"docs_hook_{name}", ROOT / "docs" / "hooks" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _nav_pages(nav) -> list[str]:
    pages = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def _built_page(site: Path, page: str) -> Path:
    """Where mkdocs writes ``page`` (directory URLs: a/b.md -> a/b/index.html)."""
    stem = page.removesuffix(".md")
    if stem == "index" or stem.endswith("/index"):
        return site / f"{stem}.html"
    return site / stem / "index.html"


def _text(page: Path) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = os.environ | {"OMP_NUM_THREADS": "1", "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [
            sys.executable, "-m", "mkdocs", "build", "--strict",
            "--site-dir", str(out), "--config-file", str(ROOT / "mkdocs.yml"),
        ],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, (
        f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    )
    return out


@pytest.fixture(scope="module")
def nav_pages() -> list[str]:
    # mkdocs.yml uses the !relative tag; a loader that ignores unknown tags reads the nav
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=Loader)
    return _nav_pages(config["nav"])


def test_every_nav_page_is_built(site: Path, nav_pages: list[str]) -> None:
    assert len(nav_pages) >= 20
    missing = [page for page in nav_pages if not _built_page(site, page).is_file()]
    assert not missing, f"nav pages not built: {missing}"


def test_cli_reference_has_the_help_of_every_command(site: Path) -> None:
    hook = _load_hook("cli_reference")
    text = _text(_built_page(site, "reference/cli.md"))
    helps = hook.command_helps()
    from bptt.cli import build_parser

    commands = {name for name, *_ in hook._subcommands(build_parser())}
    assert {command.removeprefix("bptt ") for command, *_ in helps[1:]} == commands
    for command, _, help_text in helps:
        for line in help_text.splitlines():
            assert line.rstrip() in text, (
                f"{command}: the built CLI reference lacks {line!r}"
            )


def test_every_image_on_the_site_exists(site: Path) -> None:
    checked = 0
    for page in site.rglob("*.html"):
        for source in re.findall(
            r'<img[^>]*\ssrc="([^"]+)"', page.read_text(encoding="utf-8")
        ):
            url = urlsplit(html.unescape(source))
            if url.scheme == "data":
                continue
            assert not url.scheme and not url.netloc, (
                f"{page}: external image {source} (the site must stand alone)"
            )
            target = (page.parent / unquote(url.path)).resolve()
            assert target.is_file(), (
                f"{page.relative_to(site)}: image {source} is missing from the site"
            )
            checked += 1
    assert checked >= 2  # at least the demo figure on the home page and on Studies


def test_every_figure_is_listed_with_its_command(site: Path) -> None:
    text = _text(_built_page(site, "benchmarks.md"))
    figures = [
        p
        for p in (ROOT / "docs" / "figures").rglob("*")
        if p.suffix in (".png", ".svg")
    ]
    assert figures
    for figure in figures:
        assert figure.name in text, f"{figure} is not listed on the Benchmarks page"
