"""Each real data set is read once per test session.

The data packages are part of the set-up (``make test`` installs them); a test that needs a
missing one fails with the loader's error, which names the install command.
"""

from __future__ import annotations

import pytest
from torch import Tensor

from bptt.data import load_mnist, load_reviews, load_shakespeare


@pytest.fixture(scope="session")
def mnist() -> dict[str, tuple[Tensor, Tensor]]:
    return load_mnist()


@pytest.fixture(scope="session")
def imdb() -> list[tuple[str, int]]:
    return load_reviews("imdb")


@pytest.fixture(scope="session")
def rotten_tomatoes() -> list[tuple[str, int]]:
    return load_reviews("rotten-tomatoes")


@pytest.fixture(scope="session")
def shakespeare() -> str:
    return load_shakespeare()
