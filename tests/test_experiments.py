"""The experiment tables: a run is read back once finished, resumed once interrupted, and the
long-memory table's quick mode writes its table."""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from types import ModuleType

import pytest

from bptt import TrainConfig
from bptt.jsonio import read_jsonl

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"

TINY = TrainConfig(
    task="adding", length=12, cell="lstm", hidden=8, steps=20, batch=8,
    eval_every=10, eval_size=32, checkpoint_every=10, diagnose_every=0, seed=1,
)


@pytest.fixture
def tables(monkeypatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    return importlib.import_module("_tables")


@pytest.fixture
def long_memory(tables) -> ModuleType:
    return importlib.import_module("long_memory")


class Interrupt(Exception):
    pass


def test_an_interrupted_run_resumes_to_the_same_curve_and_a_finished_one_is_read_back(tables, tmp_path, monkeypatch):
    reference = tables.train_or_read(TINY, tmp_path / "reference")
    real_train = tables.train

    def stop_at_15(record):
        if record["step"] == 15:
            raise Interrupt

    with pytest.raises(Interrupt):  # killed between the checkpoints at 10 and 20
        real_train(TINY, tmp_path / "run", progress=False, callbacks=[stop_at_15])
    calls = []

    def recording_train(config, out, **options):
        calls.append(options)
        return real_train(config, out, **options)

    monkeypatch.setattr(tables, "train", recording_train)
    resumed = tables.train_or_read(TINY, tmp_path / "run")
    assert calls == [{"resume": True, "overwrite": False, "progress": False}]
    assert resumed["metrics"] == reference["metrics"]
    assert [r["step"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["split"] == "train"] == list(
        range(1, 21)
    )
    per_step = resumed["seconds_per_step"]
    assert per_step > 0 and resumed["wall_seconds"] == pytest.approx(20 * per_step)
    assert tables.train_or_read(TINY, tmp_path / "run") == resumed and len(calls) == 1  # read back
    longer = dataclasses.replace(TINY, steps=30)
    tables.train_or_read(longer, tmp_path / "run")  # another config: trained again from scratch
    assert calls[-1] == {"resume": False, "overwrite": True, "progress": False}


def test_long_memory_quick_writes_the_table_and_reads_it_back(long_memory, tables, tmp_path, monkeypatch, capsys):
    argv = ["--quick", "--rows", "lstm", "lstm + chrono", "--tasks", "adding", "--lengths", "12",
            "--steps", "3", "--workers", "1", "--out", str(tmp_path)]
    long_memory.main(argv)
    saved = json.loads((tmp_path / "long_memory-adding.json").read_text())
    assert saved["steps"] == {"adding": 3} and saved["batch"] == {"adding": long_memory.BATCH["adding"]}
    rows = saved["rows"]
    assert [(r["label"], r["length"], r["steps"]) for r in rows] == [("lstm", 12, 3), ("lstm + chrono", 12, 3)]
    assert rows[1]["config"]["init"] == "chrono" and rows[0]["config"]["batch"] == long_memory.BATCH["adding"]
    assert all(r["seconds_per_step"] > 0 and r["baseline"] == pytest.approx(1 / 6) for r in rows)
    table = (tmp_path / "long_memory-adding.md").read_text()
    assert "| row | T = 12 |" in table and "| lstm + chrono | " in table and "s/step" in table
    assert f"{rows[0]['value']:.3g} ({rows[0]['value'] / rows[0]['baseline']:.0%})" in table

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(tables, "train", no_training)
    capsys.readouterr()
    long_memory.main(argv)
    assert json.loads((tmp_path / "long_memory-adding.json").read_text())["rows"] == rows


def test_long_memory_rows_and_step_budgets(long_memory):
    assert set(long_memory.ROWS) == {"lstm", "gru", "lstm + chrono", "indrnn", "exprnn", "lem", "cornn"}
    assert long_memory.ROWS["indrnn"]["layers"] == 2
    for fields in long_memory.ROWS.values():  # every row is a valid config on both tasks
        for task, batch in long_memory.BATCH.items():
            TrainConfig(task=task, batch=batch, **fields)
    assert long_memory.step_budgets(["7"], ["adding", "copy"]) == {"adding": 7, "copy": 7}
    default = long_memory.STEPS["adding"]
    assert long_memory.step_budgets(["copy=9"], ["adding", "copy"]) == {"adding": default, "copy": 9}
    with pytest.raises(ValueError, match="TASK=N"):
        long_memory.step_budgets(["charlm=3"], ["adding"])
    with pytest.raises(SystemExit):
        long_memory.main(["--rows", "lstm", "nope"])
