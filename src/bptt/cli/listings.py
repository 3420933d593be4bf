"""The commands that list what there is: ``cells``, ``tasks`` and ``data``."""

from __future__ import annotations

import argparse

from bptt.cells import CELLS
from bptt.data import dataset_table
from bptt.tasks import TASKS, AbstractDatasetTask, AbstractStreamTask, get_task

__all__ = ["run_cells", "run_data", "run_tasks"]


def run_cells(args: argparse.Namespace) -> int:
    """``bptt cells``: every cell name with its options and their defaults, and what it is."""
    print(f"{'cell':14} {'options (defaults)':34} description")
    for name in CELLS.names():
        spec = CELLS.get(name)
        options = ",".join(f"{key}={value}" for key, value in spec.options.items()) or "-"
        print(f"{name:14} {options:34} {spec.description}")
    print("\noptions go after colons: --cell lem:dt=0.05, --cell cornn:dt=0.042:gamma=2.7:epsilon=4.7")
    return 0


def run_data(args: argparse.Namespace) -> int:
    """``bptt data``: the real data sets, whether each is installed, and its size."""
    print(f"{'data set':16} {'installed':>9} {'size':>22}  description")
    for info in dataset_table():
        size = f"{info.size:,} {info.unit}" if info.installed else f"install: {info.install_command}"
        print(f"{info.name:16} {'yes' if info.installed else 'no':>9} {size:>22}  {info.description}")
    return 0


def run_tasks(args: argparse.Namespace) -> int:
    """``bptt tasks``: every task with its metric, baseline and threshold at ``--length``."""
    print(f"{'task':15} {'metric':14} {'baseline':>9} {'solved at':>10}  description (at length {args.length})")
    for name in TASKS.names():
        if issubclass(TASKS.get(name), AbstractDatasetTask | AbstractStreamTask):  # reads data
            print(f"{name:15} {'(real data)':14} {'-':>9} {'-':>10}  {TASKS.get(name).description}")
            continue
        task = get_task(name, args.length)
        direction = ">=" if task.higher_is_better else "<"
        print(
            f"{name:15} {task.metric_name:14} {task.baseline:9.4g} {direction:>3}{task.solved_threshold:7.4g}  "
            f"{task.description}"
        )
    print("\nreal-data tasks: metrics and baselines come from the data (bptt data, docs/data.md)")
    return 0
