"""The SQLite results store: life cycle, races between processes, crashes, foreign files."""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bptt.store import ResultStore, StoreError, trial_key

STORE_SOURCE = Path(__file__).resolve().parents[1] / "src" / "bptt" / "store.py"

# Child processes are fresh interpreters (like a spawn-context pool worker) that load
# bptt/store.py by file path, so that each starts in ~0.1 s instead of importing torch.
# Each prints "ready", waits for "go" on stdin so that all of them race, then does its part.
CHILD = textwrap.dedent(
    """
    import importlib.util, json, random, sys, time
    spec = importlib.util.spec_from_file_location("bptt_store_child", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    store = module.ResultStore(sys.argv[2])
    role, worker, keys = sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5])
    print("ready", flush=True)
    sys.stdin.readline()
    done = []
    if role == "claim":
        random.Random(worker).shuffle(keys)
        for key in keys:
            if store.claim(key):
                store.finish(key, {"worker": worker})
                done.append(key)
    elif role == "finish":
        for key in keys:
            store.finish(key, {"worker": worker, "loss": float("nan")})
            done.append(key)
    elif role == "hold":
        conn = store._connection()
        conn.execute("PRAGMA cache_size = 1")  # spill the uncommitted pages into the WAL file
        with store._write() as conn:
            conn.execute("UPDATE trials SET status = 'finished', summary = '{}' WHERE key = ?", (keys[0],))
            for i in range(300):
                conn.execute(
                    "INSERT INTO trials (key, study, config, run_dir) VALUES (?, 'partial', ?, 'x')",
                    (f"partial-{i}", "x" * 1000),
                )
            print("written", flush=True)
            time.sleep(60)  # killed here, before COMMIT
    print(json.dumps(done), flush=True)
    """
)


def start_children(path: Path, role: str, key_lists: list[list[str]]) -> list[subprocess.Popen]:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(STORE_SOURCE), str(path), role, str(worker), json.dumps(keys)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        for worker, keys in enumerate(key_lists)
    ]
    for child in children:
        assert child.stdout.readline().strip() == "ready"
    return children


def race(path: Path, role: str, key_lists: list[list[str]]) -> list[list[str]]:
    """Run one child per key list, all released at once; each returns the keys it handled."""
    children = start_children(path, role, key_lists)
    for child in children:
        child.stdin.write("go\n")
        child.stdin.flush()
    results = []
    for child in children:
        out, _ = child.communicate(timeout=60)
        assert child.returncode == 0
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def grid(n: int) -> list[dict]:
    return [{"task": "adding", "lr": 10.0 ** -(1 + i % 4), "seed": i} for i in range(n)]


def new_store(tmp_path: Path, n: int = 0, study: str = "s") -> tuple[ResultStore, list[str]]:
    store = ResultStore(tmp_path / "study.sqlite")
    keys = store.add(grid(n), study, lambda config: str(tmp_path / "runs" / str(config["seed"])))
    return store, keys


def test_add_is_idempotent_and_keeps_finished_trials(tmp_path):
    store, keys = new_store(tmp_path, 5)
    config = grid(5)[0]
    assert keys[0] == hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    assert trial_key(dict(reversed(config.items()))) == keys[0]  # key order does not matter
    assert store.claim(keys[0])
    store.finish(keys[0], {"loss": 0.5})

    again = store.add(grid(5) + [grid(5)[1]], "other", lambda config: "elsewhere")
    assert again == keys + [keys[1]]
    assert store.counts() == {"pending": 4, "running": 0, "finished": 1, "failed": 0}
    first = store.trial(keys[0])
    assert (first.status, first.attempts, first.summary, first.study) == ("finished", 1, {"loss": 0.5}, "s")
    assert first.run_dir == str(tmp_path / "runs" / "0")
    assert [t.config for t in store.trials()] == grid(5)  # in the order added
    assert store.trials(study="other") == []
    with pytest.raises(ValueError, match="finite"):
        store.add([{"lr": math.nan}], "s", str)
    with pytest.raises(TypeError, match="lr'\\] is a object"):
        store.add([{"lr": object()}], "s", str)
    assert len(store.trials()) == 5  # a bad config adds nothing


def test_claim_finish_fail_retry_life_cycle(tmp_path):
    store, (a, b) = new_store(tmp_path, 2)
    assert store.todo() == [a, b]
    assert store.claim(a)
    assert not store.claim(a)  # already running
    store.fail(a, "ValueError: diverged")
    record = store.trial(a)
    assert (record.status, record.error, record.attempts) == ("failed", "ValueError: diverged", 1)
    assert store.todo(retry_failed=False) == [b]
    assert store.todo() == [a, b]

    assert store.claim(a)  # a retry
    record = store.trial(a)
    assert (record.status, record.error, record.attempts) == ("running", None, 2)
    store.finish(a, {"solved": True})
    assert not store.claim(a)  # finished trials are never run again
    assert store.todo() == [b]
    assert store.counts() == {"pending": 1, "running": 0, "finished": 1, "failed": 0}

    with pytest.raises(StoreError, match="it is finished, expected running"):
        store.fail(a, "late")
    with pytest.raises(StoreError, match="it is pending, expected running; claim it first"):
        store.finish(b, {})
    with pytest.raises(StoreError, match="no trial with key 'nope'"):
        store.claim("nope")
    assert store.trial(a).summary == {"solved": True}


def test_claim_is_exclusive_under_contention(tmp_path):
    store, keys = new_store(tmp_path, 20)
    claimed = race(store.path, "claim", [keys] * 4)
    everything = [key for worker in claimed for key in worker]
    assert sorted(everything) == sorted(keys)  # each trial claimed exactly once
    for worker, worker_keys in enumerate(claimed):
        for key in worker_keys:
            record = store.trial(key)
            assert (record.status, record.attempts, record.summary) == ("finished", 1, {"worker": worker})


def test_concurrent_finish_loses_no_result(tmp_path):
    store, keys = new_store(tmp_path, 40)
    for key in keys:
        assert store.claim(key)
    chunks = [keys[i::4] for i in range(4)]
    assert race(store.path, "finish", chunks) == chunks
    assert store.counts() == {"pending": 0, "running": 0, "finished": 40, "failed": 0}
    for worker, chunk in enumerate(chunks):
        for key in chunk:
            summary = store.trial(key).summary
            assert summary["worker"] == worker and math.isnan(summary["loss"])


def test_process_killed_inside_a_write_leaves_no_partial_write(tmp_path):
    store, keys = new_store(tmp_path, 3)
    store.close()
    (child,) = start_children(tmp_path / "study.sqlite", "hold", [keys[:1]])
    child.stdin.write("go\n")
    child.stdin.flush()
    assert child.stdout.readline().strip() == "written"
    wal = tmp_path / "study.sqlite-wal"
    assert wal.stat().st_size > 100_000  # the uncommitted pages did reach the disk
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    store = ResultStore(tmp_path / "study.sqlite")
    assert [t.key for t in store.trials()] == keys  # no partial rows
    assert store.counts() == {"pending": 3, "running": 0, "finished": 0, "failed": 0}
    assert store.claim(keys[0])  # the dead writer's lock is gone
    store.finish(keys[0], {"ok": 1})
    store.close()
    with ResultStore(tmp_path / "study.sqlite", timeout=5) as reopened:
        assert reopened.trial(keys[0]).summary == {"ok": 1}


def test_keyboard_interrupt_in_a_write_rolls_it_back(tmp_path):
    store, keys = new_store(tmp_path, 2)
    with pytest.raises(KeyboardInterrupt), store._write() as conn:
        conn.execute("UPDATE trials SET status = 'finished'")
        raise KeyboardInterrupt
    assert store.counts()["pending"] == 2
    assert store.claim(keys[0])  # no transaction is left open


def test_recover_interrupted_marks_running_trials_failed(tmp_path):
    store, keys = new_store(tmp_path, 4)
    store.add([{"other": 1}], "t", str)
    for key in [*keys[:3], trial_key({"other": 1})]:
        assert store.claim(key)
    store.finish(keys[0], {"loss": 1.0})
    store.close()  # the "crashed" run left keys[1], keys[2] and the study-t trial running

    store = ResultStore(tmp_path / "study.sqlite")
    assert store.recover_interrupted(study="s") == 2
    assert store.counts("t") == {"pending": 0, "running": 1, "finished": 0, "failed": 0}
    assert store.recover_interrupted() == 1
    assert store.recover_interrupted() == 0
    assert [(t.status, t.error) for t in store.trials("s")] == [
        ("finished", None), ("failed", "interrupted"), ("failed", "interrupted"), ("pending", None),
    ]
    assert store.todo(study="s") == keys[1:]
    assert store.claim(keys[1]) and store.trial(keys[1]).attempts == 2
    late = store.trial(keys[2])
    store.finish(keys[2], {"loss": 2.0})  # a result that arrives after recovery is kept
    assert store.trial(keys[2]).status == "finished" and late.status == "failed"


def _foreign_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (text TEXT)")
    conn.execute("INSERT INTO notes VALUES ('mine')")
    conn.commit()
    conn.close()


def _other_version(path: Path) -> None:
    ResultStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()


def _corrupt_store(path: Path) -> None:
    store = ResultStore(path)
    store.add(grid(30), "s", str)
    store.close()
    data = bytearray(path.read_bytes())
    page = 4096
    data[page : 2 * page] = bytes(range(256)) * (page // 256)  # garbage in the trials table's root page
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda path: path.write_text("loss,step\n0.5,1\n"), "not an SQLite database"),
        (_foreign_sqlite, "SQLite database but not a bptt results store"),
        (_other_version, "schema version 99, but this bptt reads version 1"),
        (_corrupt_store, "damaged"),
    ],
    ids=["text", "foreign-sqlite", "other-version", "corrupt"],
)
def test_foreign_or_damaged_files_are_refused_and_left_unchanged(tmp_path, make, message):
    path = tmp_path / "study.sqlite"
    make(path)
    before = path.read_bytes()
    with pytest.raises(StoreError, match=message):
        ResultStore(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.sqlite"]  # no journal left behind


def test_summaries_round_trip_including_nonfinite(tmp_path):
    store, (key,) = new_store(tmp_path, 1)
    summary = {
        "loss": math.nan, "grad_norm": math.inf, "decay_rate": -math.inf, "steps": 3, "solved": False,
        "metrics": {"accuracy": 0.75, "history": [1.5, math.nan, None]}, "solved_at": None, "name": "x",
    }
    store.claim(key)
    store.finish(key, summary)
    loaded = store.trial(key).summary
    assert json.dumps(loaded) == json.dumps(summary)  # NaN-aware equality, key order kept
    assert loaded["grad_norm"] == math.inf and loaded["decay_rate"] == -math.inf
    (text,) = store._read("SELECT summary FROM trials")[0]
    json.loads(text, parse_constant=lambda token: pytest.fail(f"non-standard JSON token {token}"))
    (value,) = store._read("SELECT json_extract(summary, '$.metrics.history[1]') FROM trials")[0]
    assert value == "NaN"  # SQLite's own JSON functions read every row

    (other,) = store.add([{"x": 1}], "s", str)
    store.claim(other)
    with pytest.raises(TypeError, match=r"summary\['metrics'\]\['w'\] is a set"):
        store.finish(other, {"metrics": {"w": {1}}})
    assert store.trial(other).status == "running"  # nothing was written


def test_store_pickles_to_a_fresh_connection(tmp_path):
    store, keys = new_store(tmp_path, 2)
    copy = pickle.loads(pickle.dumps(store))
    assert copy._conn is None  # opened lazily on first use
    assert copy.claim(keys[0])
    assert not store.claim(keys[0])
    copy.close()
    store.close()


def test_new_store_is_wal_and_versioned(tmp_path):
    store, _ = new_store(tmp_path, 1)
    assert store._read("PRAGMA journal_mode") == [("wal",)]
    assert store._read("PRAGMA user_version") == [(1,)]
    with pytest.raises(StoreError, match="is a directory"):
        ResultStore(tmp_path)
    with pytest.raises(StoreError, match="cannot open"):
        ResultStore(tmp_path / "missing" / "study.sqlite")
    (tmp_path / "empty.sqlite").touch()
    with ResultStore(tmp_path / "empty.sqlite") as empty:  # an empty file becomes a new store
        assert empty.counts() == {"pending": 0, "running": 0, "finished": 0, "failed": 0}
