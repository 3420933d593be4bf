"""Studies: a grid of remedies x lengths x seeds, each trial an ordinary run, in one SQLite store.

``bptt study adding --lengths 50,100 --configs rnn-tanh,irnn,lstm --clip none,norm:1``
expands the grid into :class:`~bptt.config.TrainConfig` s, records them in
``OUT/study.sqlite`` (:class:`~bptt.store.ResultStore`) and runs those not finished yet,
each in its own run directory ``OUT/trials/KEY``. Re-running a study skips finished
trials and retries failed ones; trials left running by a crash or Ctrl-C are marked failed
at the start of the next run and retried.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import multiprocessing
import os
import time
import tomllib
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, final

import torch
from tqdm import tqdm

from bptt import training
from bptt._registry import unknown_name_message
from bptt.cells import CELLS
from bptt.config import TrainConfig
from bptt.diagnostics.records import DiagnosisRecord
from bptt.jsonio import read_jsonl
from bptt.store import ResultStore, TrialRecord, trial_key

PRESETS: dict[str, dict[str, Any]] = {
    "orthogonal": {"cell": "ortho-rnn"},
    "irnn": {"cell": "irnn", "lr": 3e-4},
    "lstm-chrono": {"cell": "lstm", "init": "chrono"},
}
"""Configuration names beyond the cell names: the :class:`TrainConfig` fields each sets.

IRNN gets a learning rate of 3e-4: at the default 3e-3 its ReLU recurrence diverges (see
docs/remedies.md)."""

STORE = "study.sqlite"


def configuration(name: str) -> dict[str, Any]:
    """The :class:`TrainConfig` fields of configuration ``name``: a preset or a cell name."""
    if name in PRESETS:
        return dict(PRESETS[name])
    if name.split(":")[0] in CELLS.names():
        return {"cell": name}
    raise ValueError(unknown_name_message("configuration", name, [*PRESETS, *CELLS.names()]))


def clipping(spec: str) -> dict[str, Any]:
    """The :class:`TrainConfig` field of a clip spec: ``"none"`` or any ``--clip`` spec."""
    return {} if spec == "none" else {"clip": spec}


@final
@dataclasses.dataclass(frozen=True)
class StudySpec:
    """A grid: every configuration x clip x length x seed, with the same budget.

    Args:
        task: the task name.
        lengths: the task lengths.
        configs: configuration names (see :func:`configuration`).
        clips: clip specs, ``"none"`` for no clipping (see :func:`clipping`).
        seeds: how many seeds (0, 1, ..., seeds - 1).
        steps: optimizer steps of every trial.
        base: other :class:`TrainConfig` fields shared by all trials, e.g. ``{"hidden": 64}``;
            ``diagnose_every`` defaults to a quarter of ``steps`` (the spectral-norm statistics
            of the store come from those diagnoses).
        name: the study's name in the store.
    """

    task: str
    lengths: tuple[int, ...]
    configs: tuple[str, ...]
    clips: tuple[str, ...] = ("none",)
    seeds: int = 1
    steps: int = 2000
    base: dict[str, Any] = dataclasses.field(default_factory=dict)
    name: str = "study"

    def trials(self) -> list[TrainConfig]:
        """The grid's configs, validated (a bad name or value raises before anything runs)."""
        if self.seeds < 1 or not self.lengths or not self.configs or not self.clips:
            raise ValueError(
                f"a study needs lengths, configs, clips and seeds >= 1; got lengths={self.lengths}, "
                f"configs={self.configs}, clips={self.clips}, seeds={self.seeds}"
            )
        trials = []
        for config in self.configs:
            for clip in self.clips:
                for length in self.lengths:
                    for seed in range(self.seeds):
                        fields = {"diagnose_every": max(1, self.steps // 4), **self.base, "task": self.task,
                                  "length": length, "steps": self.steps, "seed": seed,
                                  **configuration(config), **clipping(clip)}
                        trials.append(TrainConfig(**fields))
        return trials

    @classmethod
    def from_toml(cls, path: str | Path) -> StudySpec:
        """Read a spec from a TOML file whose keys are this class's fields, e.g.::

            task = "adding"
            lengths = [50, 100]
            configs = ["rnn-tanh", "lstm"]
            clips = ["none", "norm:1"]
            seeds = 2
            steps = 1000
            [base]
            hidden = 64
        """
        with open(path, "rb") as file:
            values = tomllib.load(file)
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{path}: unknown study keys {unknown}; expected keys among {sorted(known)}")
        for key in ("lengths", "configs", "clips"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


def label(config: TrainConfig) -> str:
    """A short name of a trial's configuration, without its length and seed."""
    name = config.cell if config.init is None else f"{config.cell}+{config.init}"
    return f"{name} clip {config.clip or 'none'}"


@final
@dataclasses.dataclass(frozen=True)
class StudyResult:
    """The store's trials after a study ran, and how many ran this time."""

    out: Path
    trials: list[TrialRecord]
    ran: int

    def table(self) -> str:
        """Success rate per configuration (rows) and length (columns), as text."""
        lengths = sorted({t.config["length"] for t in self.trials})
        rows: dict[str, dict[int, list[TrialRecord]]] = {}
        for trial in self.trials:
            config = TrainConfig.from_dict(trial.config)
            rows.setdefault(label(config), {}).setdefault(config.length, []).append(trial)
        width = max(len(name) for name in rows)
        lines = [f"{'configuration':{width}}  " + "  ".join(f"{'T=' + str(n):>9}" for n in lengths)]
        for name, cells in rows.items():
            texts = []
            for length in lengths:
                trials = cells.get(length, [])
                done = [t for t in trials if t.status == "finished"]
                solved = sum(bool(t.summary and t.summary["solved"]) for t in done)
                failed = len(trials) - len(done)
                texts.append(f"{solved}/{len(done)}" + (f" ({failed}!)" if failed else ""))
            lines.append(f"{name:{width}}  " + "  ".join(f"{text:>9}" for text in texts))
        lines.append("cells: solved / finished trials; (n!) trials failed or not run")
        return "\n".join(lines)


EXECUTORS = ("local", "ray")


def run_study(
    spec: StudySpec,
    out: str | Path,
    *,
    executor: str = "local",
    workers: int | None = None,
    address: str | None = None,
    retry_failed: bool = True,
    progress: bool | None = None,
    on_trial: Callable[[TrialRecord], None] | None = None,
) -> StudyResult:
    """Run the trials of ``spec`` that are not finished.

    This process claims each trial in the store, hands it to the executor, and records the
    summary (or the error) that comes back: only the driver writes the store, so workers on
    other machines need no access to it. A trial still claimed when the study is killed is
    marked failed at the start of the next run, and retried.

    Args:
        spec: the grid.
        out: the study directory: ``study.sqlite`` and ``trials/KEY/`` run directories
            (on a Ray cluster, a path every node can write, e.g. a shared file system).
        executor: ``"local"`` (a process pool) or ``"ray"`` (Ray tasks, one CPU each;
            ``pip install bptt[ray]``).
        workers: local: processes, each with one torch thread (``None``: the CPU count; 1
            runs the trials in this process). Ray: the CPUs of a local Ray instance
            started here (``None``: all); ignored with ``address``.
        address: the Ray cluster to join, e.g. ``"ray://head:10001"`` or ``"auto"``;
            ``None`` starts a local instance (or uses the one already initialised).
        retry_failed: run failed trials again.
        progress: a progress bar over trials; ``None`` shows one when stderr is a terminal.
        on_trial: called with each trial's record when it ends.

    Returns:
        The store's trials of this study, and how many ran.
    """
    if executor not in EXECUTORS:
        raise ValueError(unknown_name_message("executor", executor, list(EXECUTORS)))
    configs = spec.trials()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with ResultStore(out / STORE) as store:
        keys = store.add(
            (config.to_dict() for config in configs), spec.name,
            lambda config: str(out / "trials" / trial_key(config)),
        )
        store.recover_interrupted(spec.name)
        ours = set(keys)
        todo = [store.trial(key) for key in store.todo(retry_failed, spec.name) if key in ours]
        disable = None if progress is None else not progress  # None: only on a terminal
        bar = tqdm(total=len(todo), desc=f"study {spec.name}", unit="trial", disable=disable)

        outstanding: set[str] = set()  # claimed by this run, not yet recorded

        def claimed() -> Iterator[TrialRecord]:
            for trial in todo:
                if store.claim(trial.key):  # claimed as submitted
                    outstanding.add(trial.key)
                    yield trial

        def record(key: str, outcome: tuple[bool, Any]) -> None:
            finished, value = outcome
            if finished:
                store.finish(key, value)
            else:
                store.fail(key, value)
            outstanding.discard(key)
            bar.update(1)
            if on_trial is not None:
                on_trial(store.trial(key))

        try:
            if executor == "ray":
                _run_on_ray(claimed(), record, workers, address)
            elif (workers or os.cpu_count() or 1) == 1:
                for trial in claimed():
                    record(trial.key, execute_trial(trial.config, trial.run_dir))
            else:
                _run_in_pool(claimed(), record, workers or os.cpu_count() or 1)
        except BaseException as error:  # Ctrl-C, a dead pool: release this run's claims
            for key in outstanding:
                store.fail(key, f"interrupted ({type(error).__name__})")
            raise
        finally:
            bar.close()
        return StudyResult(out, [t for t in store.trials(spec.name) if t.key in ours], len(todo))


def _run_in_pool(trials: Iterable[TrialRecord], record: Callable[[str, Any], None], workers: int) -> None:
    context = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = {pool.submit(execute_trial, t.config, t.run_dir): t.key for t in trials}
        try:
            for future in concurrent.futures.as_completed(futures):
                record(futures[future], future.result())
        except BaseException:  # Ctrl-C: stop now; claimed trials are retried next time
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _run_on_ray(
    trials: Iterable[TrialRecord], record: Callable[[str, Any], None], cpus: int | None, address: str | None
) -> None:
    try:
        import ray
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "the ray executor needs Ray: pip install 'bptt[ray]' (or pip install ray)", name="ray"
        ) from None
    if not ray.is_initialized():
        options = {"address": address} if address is not None else {"num_cpus": cpus}
        ray.init(include_dashboard=False, log_to_driver=False, **options)
    remote = ray.remote(num_cpus=1, max_retries=0)(execute_trial)
    pending = {remote.remote(t.config, t.run_dir): t.key for t in trials}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            key = pending.pop(done[0])
            try:
                outcome = ray.get(done[0])
            except ray.exceptions.RayError as error:  # a worker died: the trial failed
                outcome = (False, f"{type(error).__name__}: {error}")
            record(key, outcome)
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise


def execute_trial(config: dict[str, Any], run_dir: str) -> tuple[bool, dict[str, Any] | str]:
    """Train one trial (in a worker, one torch thread).

    Returns:
        ``(True, summary)`` (see :func:`trial_summary`) or ``(False, traceback)``.
    """
    torch.set_num_threads(1)
    started = time.perf_counter()
    try:
        result = training.train(TrainConfig.from_dict(config), run_dir, overwrite=True, progress=False)
    except Exception:  # noqa: BLE001 - recorded in the store; the study goes on with the others
        return False, traceback.format_exc(limit=8)
    return True, trial_summary(result.run_dir, time.perf_counter() - started)


def trial_summary(run_dir: str | Path, wall_seconds: float) -> dict[str, Any]:
    """What the store keeps of a finished run: its summary, wall time and spectral norms.

    ``spectral_norm_median`` and ``spectral_norm_max`` are the median over the top layer's
    steps of :math:`\\sigma_{\\max}(J_t)` at the last scheduled diagnosis, and the largest
    such median over the run (``None`` without a diagnosis: ``diagnose_every`` is 0 or
    larger than the run).
    """
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    records: list[DiagnosisRecord] = read_jsonl(run_dir / "diagnostics.jsonl")
    medians = [record["layers"][-1]["median_step_norm"] for record in records if record["layers"]]
    finite = [m for m in medians if m is not None and math.isfinite(m)]
    return {
        **summary,
        "wall_seconds": wall_seconds,
        "spectral_norm_median": medians[-1] if medians else None,
        "spectral_norm_max": max(finite) if finite else None,
    }


def parse_list(text: str, kind: Callable[[str], Any] = str) -> tuple[Any, ...]:
    """``"50,100,200"`` -> ``(50, 100, 200)`` with ``kind``; empty items are an error."""
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise ValueError(f"expected a comma-separated list such as 50,100,200, got {text!r}")
    try:
        return tuple(kind(item) for item in items)
    except ValueError:
        raise ValueError(f"expected a comma-separated list of {kind.__name__}, got {text!r}") from None

