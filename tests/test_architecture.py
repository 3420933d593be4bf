"""The package's shape, read from its source: layers that point one way, no import cycles, no
submodule shadowed by a re-exported name.

The layers, bottom up (a module may import its own layer and the layers below, except where
``SEPARATE`` says two layers of one rank stay apart):

    leaf          small shared pieces that import nothing of bptt
    core          the model: cells, autograd, the unroll loop, initialisers, model heads
    tasks         the tasks and the data they load
    measurements  diagnostics and remedies
    application   config, run directories, training, doctor, studies, reports, integrations
    face          the command line
"""

from __future__ import annotations

import ast
import importlib
import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SOURCE / "bptt"

LAYERS: dict[str, tuple[int, tuple[str, ...]]] = {
    "leaf": (0, ("_registry", "jsonio", "gradient_profile", "gradients")),
    "core": (1, ("activations", "weights", "orthogonal", "scan", "cells", "autograd", "recurrent", "init", "models")),
    "tasks": (1, ("tasks", "data")),
    "diagnostics": (2, ("diagnostics",)),
    "remedies": (2, ("remedies",)),
    "application": (
        3,
        (
            "config", "builders", "rundir", "training", "doctor", "study", "store", "report",
            "replay", "generate", "integrations",
        ),
    ),
    "face": (4, ("cli",)),
}
"""layer name -> (rank, the top-level modules and packages of ``bptt`` in it)."""

SEPARATE = {frozenset({"core", "tasks"}), frozenset({"diagnostics", "remedies"})}
"""Layers of one rank that must not import each other."""


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, name: str) -> Iterator[tuple[str, int]]:
    """Every ``bptt`` module ``path`` imports, anywhere in the file (a function body or an
    ``if TYPE_CHECKING:`` block counts too), with its line."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, node.lineno
            for alias in node.names:  # `from bptt.cells import elman` imports a submodule
                yield f"{target}.{alias.name}", node.lineno


def edges() -> dict[str, set[str]]:
    """module -> the bptt modules that importing it runs first.

    Importing ``bptt.x.y`` from outside the package ``bptt.x`` runs ``bptt/x/__init__`` too, so
    that is an edge as well (the top-level ``bptt/__init__``, which re-exports the public names
    of every layer, is left out). Names that are not modules are dropped.
    """
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        inside = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for target, _ in imported(path, name):
            if target not in known:
                continue
            targets.add(target)
            parts = target.split(".")
            for depth in range(2, len(parts)):
                package = ".".join(parts[:depth])
                if not (inside == package or inside.startswith(package + ".")):
                    targets.add(package)
        graph[name] = targets - {name}
    return graph


def layer_of(name: str) -> str | None:
    parts = name.split(".")
    if len(parts) < 2:
        return None  # bptt/__init__: the public face re-exports from every layer
    for layer, (_, members) in LAYERS.items():
        if parts[1] in members:
            return layer
    return None


def test_every_module_has_a_layer():
    unplaced = sorted(name for name in modules() if name != "bptt" and layer_of(name) is None)
    assert not unplaced, f"add these modules to a layer in tests/test_architecture.py: {unplaced}"


def test_layers_point_one_way():
    known = modules()
    violations = []
    for name, path in known.items():
        source = layer_of(name)
        if source is None:
            continue
        rank = LAYERS[source][0]
        for target, line in imported(path, name):
            destination = layer_of(target) if target in known else None
            if destination is None or destination == source:
                continue
            upward = LAYERS[destination][0] > rank
            sideways = frozenset({source, destination}) in SEPARATE
            if upward or sideways:
                violations.append(f"{path.relative_to(SOURCE)}:{line} ({source}) imports {target} ({destination})")
    assert not violations, "imports against the layers:\n" + "\n".join(violations)


def test_no_import_cycles():
    graph = edges()
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target) :] + [target]))
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("package", sorted(p.parent for p in PACKAGE.rglob("__init__.py")), ids=str)
def test_no_submodule_shadowed(package: Path):
    """A package's ``__init__`` binds no name that is also one of its submodules, so that
    ``import bptt.x.y as m`` gives the module."""
    submodules = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    submodules |= {p.name for p in package.iterdir() if (p / "__init__.py").is_file()}
    name = module_name(package / "__init__.py")
    bound = set()
    for node in ast.parse((package / "__init__.py").read_text()).body:
        if isinstance(node, ast.ImportFrom):
            itself = node.module == name or (node.level == 1 and node.module is None)
            # `from bptt.report import plots` binds the submodule itself: no shadowing
            bound |= {alias.asname or alias.name for alias in node.names if not itself}
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.Assign):
            bound |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    shadowed = sorted(bound & submodules)
    assert not shadowed, f"{package.relative_to(SOURCE)}/__init__.py rebinds submodule names: {shadowed}"


def classes() -> list[type]:
    """Every class defined in the package (modules imported, ``__main__`` left out)."""
    found = []
    for name in sorted(modules()):
        if name.endswith("__main__"):
            continue
        module = importlib.import_module(name)
        found += [c for c in vars(module).values() if inspect.isclass(c) and c.__module__ == name]
    return found


def is_abstract(cls: type) -> bool:
    """Abstract methods left to implement, or a base named ``Abstract*`` that only its
    subclasses complete (with class attributes such as a task's ``name``)."""
    return inspect.isabstract(cls) or cls.__name__.startswith("Abstract")


def test_every_class_is_abstract_or_final():
    """Share code through functions, composition or abstract bases; never by subclassing a
    concrete class."""
    found = classes()
    neither = [
        f"{c.__module__}.{c.__qualname__}" for c in found if not (is_abstract(c) or getattr(c, "__final__", False))
    ]
    assert not neither, f"decorate with typing.final or make abstract: {neither}"
    concrete_bases = [
        f"{c.__module__}.{c.__qualname__}({base.__qualname__})"
        for c in found
        for base in c.__mro__[1:]
        if base.__module__.startswith("bptt") and not is_abstract(base)
    ]
    assert not concrete_bases, f"classes that subclass a concrete bptt class: {concrete_bases}"


def test_the_checks_can_fail(tmp_path):
    """The layer rule on a made-up upward import, and the cycle search on a made-up cycle."""
    assert layer_of("bptt.recurrent") == "core" and layer_of("bptt.diagnostics.watching") == "diagnostics"
    assert LAYERS[layer_of("bptt.diagnostics.x")][0] > LAYERS[layer_of("bptt.cells.base")][0]
    module = tmp_path / "bptt" / "cells" / "x.py"
    module.parent.mkdir(parents=True)
    module.write_text("from ..diagnostics import profile\nimport bptt.training\n")
    targets = [t for t, _ in imported(module, "bptt.cells.x")]
    assert "bptt.diagnostics" in targets and "bptt.training" in targets
