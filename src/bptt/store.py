"""The results store of a study: one SQLite file (``study.sqlite``) with a row per trial.

A study runs a grid of trials, each an ordinary :func:`bptt.train` run in its own run
directory, in several processes at once (a local process pool or Ray workers). The store
records which trials exist, which are being run, and how each one ended::

    pending ──claim──► running ──finish──► finished
       ▲                  │  └────fail────► failed ──claim──► running …
       │                  └── (process killed) ── recover_interrupted ──► failed
     add

Concurrency and crash safety come from SQLite itself:

* every process opens its own connection (lazily, on first use; a store object that is
  pickled to a worker or inherited through ``fork`` reconnects there);
* the file is in WAL journal mode, so readers never block the writer and the writer never
  blocks readers, and a busy timeout makes a writer wait for the lock instead of failing;
* every write is one short transaction, ``BEGIN IMMEDIATE`` … ``COMMIT``: it takes the
  write lock before it reads, so a check and the update that depends on it (``claim``)
  cannot interleave with another process's. Any exception, ``KeyboardInterrupt``
  included, rolls it back; a process killed in the middle leaves an uncommitted WAL tail
  that SQLite discards the next time the file is opened. No user code runs while the
  lock is held.

The store must live on a local file system (WAL needs shared memory between the
processes, which network file systems do not provide); Ray workers on other machines
should report their results to the driver, which writes them.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, final

from bptt.jsonio import from_json, to_json

SCHEMA_VERSION = 1
"""Stored in ``PRAGMA user_version``; a file with another version is refused, never migrated in place."""
APPLICATION_ID = int.from_bytes(b"bptt", "big")
"""Stored in ``PRAGMA application_id`` (header bytes 68-71): marks the file as a bptt results store."""
STATUSES = ("pending", "running", "finished", "failed")
KEY_LENGTH = 16
"""Hex digits of the sha256 kept in a trial key (64 bits)."""

_SQLITE_MAGIC = b"SQLite format 3\x00"
_SCHEMA = (
    """CREATE TABLE trials (
        key TEXT PRIMARY KEY,
        study TEXT NOT NULL,
        config TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending'
            CHECK (status IN ('pending', 'running', 'finished', 'failed')),
        run_dir TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        started REAL,
        finished REAL,
        summary TEXT,
        error TEXT
    )""",
    "CREATE INDEX trials_status ON trials (status)",
    "CREATE INDEX trials_study ON trials (study)",
)
_COLUMNS = "key, study, config, status, run_dir, attempts, started, finished, summary, error"
_INHERITED: list[sqlite3.Connection] = []
"""Connections inherited through ``fork``: kept alive, never used or closed in the child."""


@final
class StoreError(RuntimeError):
    """A results store cannot be opened, or a trial cannot change state as asked."""


@final
@dataclass(frozen=True)
class TrialRecord:
    """One row of the store.

    Attributes:
        key: :func:`trial_key` of the config.
        study: the study that added the trial first.
        config: the trial's config, as given to :meth:`ResultStore.add`.
        status: ``"pending"``, ``"running"``, ``"finished"`` or ``"failed"``.
        run_dir: the trial's run directory.
        attempts: how many times the trial was claimed.
        started: when the last attempt was claimed (seconds since the epoch), or ``None``.
        finished: when the last attempt finished or failed, or ``None``.
        summary: the summary given to :meth:`ResultStore.finish` (non-finite floats
            restored), or ``None``.
        error: why the last attempt failed (``"interrupted"`` if its process died), or ``None``.
    """

    key: str
    study: str
    config: dict[str, Any]
    status: str
    run_dir: str
    attempts: int
    started: float | None
    finished: float | None
    summary: dict[str, Any] | None
    error: str | None


def trial_key(config: dict[str, Any]) -> str:
    """The stable key of a trial: the sha256 of ``json.dumps(config, sort_keys=True)``, truncated.

    Equal configs give equal keys in every process and Python version; note that ``1`` and
    ``1.0`` are different values here, as they are in JSON.

    Raises:
        TypeError: if ``config`` is not a dict of JSON values with string keys.
        ValueError: if it holds NaN or infinity.
    """
    return _config_text(config)[0]


def _config_text(config: dict[str, Any]) -> tuple[str, str]:
    if not isinstance(config, dict):
        raise TypeError(f"a trial config must be a dict, got {type(config).__name__}")
    text = json.dumps(to_json(config, "config", nonfinite="error"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH], text


def _check_header(path: Path) -> None:
    """Refuse a non-empty file that is not a bptt store, reading its header only."""
    try:
        if path.is_dir():
            raise StoreError(f"{path} is a directory; give the path of a results file, e.g. {path / 'study.sqlite'}")
        if not path.exists() or path.stat().st_size == 0:
            return
        with open(path, "rb") as file:
            header = file.read(100)
    except OSError as error:
        raise StoreError(f"cannot read results store {path}: {error}") from error
    if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
        raise StoreError(
            f"{path} is not a bptt results store: it is not an SQLite database (its first bytes "
            f"are {header[:16]!r}, expected {_SQLITE_MAGIC!r}); choose another path for the study"
        )
    application_id = int.from_bytes(header[68:72], "big")
    if application_id != APPLICATION_ID:
        raise StoreError(
            f"{path} is an SQLite database but not a bptt results store (application id "
            f"{application_id:#x}, expected {APPLICATION_ID:#x}); it was left untouched, "
            "choose another path for the study"
        )


@final
class ResultStore:
    """The SQLite file of a study, safe to use from several processes at once.

    Opening a path that does not exist (or an empty file) creates a store there; opening a
    file that is not a bptt store, is damaged, or has another schema version raises
    :class:`StoreError` and leaves the file as it was. Each write is its own transaction,
    so a process that dies or is interrupted changes all of one write or nothing.

    The object may be pickled (to a worker process or a Ray task): only the path and the
    timeout travel, and the copy opens its own connection on first use.

    Args:
        path: the SQLite file, conventionally ``<study dir>/study.sqlite``; its folder must exist.
        timeout: seconds a write waits for another process's transaction before failing.

    Raises:
        StoreError: if ``path`` cannot be opened as a bptt results store.

    Example::

        with ResultStore(out / "study.sqlite") as store:
            store.add(grid, study="clip", run_dir_for=lambda c: str(out / trial_key(c)))
            for key in store.todo():
                if store.claim(key):
                    ...  # train, then store.finish(key, summary) or store.fail(key, message)
    """

    def __init__(self, path: str | os.PathLike[str], timeout: float = 60.0) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.path = Path(path)
        self.timeout = float(timeout)
        self._setup()
        self._connection()  # open now, so that a wrong path fails here rather than later

    def _setup(self) -> None:
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._conn: sqlite3.Connection | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "timeout": self.timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.timeout = state["path"], state["timeout"]
        self._setup()

    def __repr__(self) -> str:
        return f"ResultStore({str(self.path)!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close this process's connection (a later call opens a new one)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    # -- connection and transactions ---------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._pid != os.getpid():  # a forked child: the parent's connection is not ours
            if self._conn is not None:
                _INHERITED.append(self._conn)
            self._setup()
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        _check_header(self.path)
        try:
            # isolation_level=None: no implicit transactions, we issue BEGIN/COMMIT ourselves
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as error:
            raise StoreError(f"cannot open results store {self.path}: {error}") from error
        try:
            self._create_or_check(conn)
            conn.execute("PRAGMA journal_mode = WAL")  # persistent; a no-op once set
        except sqlite3.DatabaseError as error:
            conn.close()
            raise StoreError(
                f"{self.path} is damaged or not a bptt results store ({error}); it was left "
                "untouched, restore it from a backup or choose another path"
            ) from error
        except BaseException:
            conn.close()
            raise
        return conn

    def _create_or_check(self, conn: sqlite3.Connection) -> None:
        if _identity(conn) == (0, 0, 0):  # an empty database: this process may create the schema
            conn.execute("BEGIN IMMEDIATE")
            try:
                if _identity(conn) == (0, 0, 0):  # still empty now that we hold the lock
                    for statement in _SCHEMA:
                        conn.execute(statement)
                    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
        application_id, version, _ = _identity(conn)
        if application_id != APPLICATION_ID:
            raise StoreError(
                f"{self.path} is an SQLite database but not a bptt results store (application "
                f"id {application_id:#x}, expected {APPLICATION_ID:#x}); it was left untouched, "
                "choose another path for the study"
            )
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} is a bptt results store of schema version {version}, but this "
                f"bptt reads version {SCHEMA_VERSION}; open it with the bptt version that wrote "
                "it, or start the study in a new file"
            )
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise StoreError(
                f"{self.path} is damaged (SQLite quick_check: {check}); it was left untouched, "
                "restore it from a backup or start the study in a new file"
            )

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it is committed, or none of it (any exception rolls back)."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")  # take the write lock before reading anything
            except sqlite3.OperationalError as error:
                raise StoreError(
                    f"could not lock results store {self.path} for writing within {self.timeout:g} s "
                    f"({error}); another process holds it, retry or pass a larger timeout"
                ) from error
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise

    def _read(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._connection().execute(sql, parameters).fetchall()

    def _status(self, conn: sqlite3.Connection, key: str) -> str:
        row = conn.execute("SELECT status FROM trials WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise StoreError(f"no trial with key {key!r} in {self.path}; add its config first")
        return row[0]

    # -- writes --------------------------------------------------------------------------

    def add(
        self,
        configs: Iterable[dict[str, Any]],
        study: str,
        run_dir_for: Callable[[dict[str, Any]], str | os.PathLike[str]],
    ) -> list[str]:
        """Add trials as pending, all in one transaction; trials already there are kept as they are.

        Adding is idempotent: a trial that is already in the store (under any study) keeps its
        status, attempts, summary and run directory, so re-adding a grid resumes it.

        Args:
            configs: one JSON-serialisable dict per trial (see :func:`trial_key`).
            study: the study's name, recorded with new trials.
            run_dir_for: the run directory of a trial, from its config (called before the
                transaction, for every config).

        Returns:
            The key of every config, in the order given (a repeated config repeats its key).

        Raises:
            TypeError: if a config is not a dict of JSON values with string keys.
            ValueError: if a config holds NaN or infinity.
            StoreError: if a key collides with a different stored config.
        """
        rows = []
        for config in configs:
            key, text = _config_text(config)
            rows.append((key, study, text, os.fspath(run_dir_for(config))))
        with self._write() as conn:
            for key, study_name, text, run_dir in rows:
                stored = conn.execute("SELECT config FROM trials WHERE key = ?", (key,)).fetchone()
                if stored is None:
                    conn.execute(
                        "INSERT INTO trials (key, study, config, run_dir) VALUES (?, ?, ?, ?)",
                        (key, study_name, text, run_dir),
                    )
                elif stored[0] != text:
                    raise StoreError(
                        f"trial key {key} of config {text} collides with the stored config "
                        f"{stored[0]}; raise KEY_LENGTH in bptt.store and start a new study file"
                    )
        return [row[0] for row in rows]

    def claim(self, key: str) -> bool:
        """Atomically move a pending or failed trial to running and count the attempt.

        Of several processes that claim the same trial at once, exactly one gets ``True``.

        Returns:
            ``True`` if this call claimed the trial, ``False`` if it is running or finished.

        Raises:
            StoreError: if there is no trial ``key``.
        """
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE trials SET status = 'running', attempts = attempts + 1, started = ?, "
                "finished = NULL, error = NULL WHERE key = ? AND status IN ('pending', 'failed')",
                (time.time(), key),
            )
            if cursor.rowcount == 1:
                return True
            self._status(conn, key)  # raises for an unknown key
            return False

    def finish(self, key: str, summary: dict[str, Any]) -> None:
        """Record a trial's summary and mark it finished.

        The summary is stored as standard JSON; NaN and ±infinity are written as the
        strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (so SQLite's JSON functions can
        read every row) and are turned back into floats by :meth:`trials`; a string with one
        of these exact values therefore reads back as a float.

        A trial that :meth:`recover_interrupted` marked failed while it was in fact still
        running may still be finished: its result is kept.

        Args:
            key: a trial claimed with :meth:`claim`.
            summary: JSON values with string keys (numbers, strings, bools, None, lists, dicts).

        Raises:
            TypeError: if ``summary`` holds something JSON cannot (a tensor, a numpy int …).
            StoreError: if there is no trial ``key``, or it is not running (or failed).
        """
        if not isinstance(summary, dict):
            raise TypeError(f"a trial summary must be a dict, got {type(summary).__name__}")
        text = json.dumps(to_json(summary, "summary", nonfinite="string"), allow_nan=False)
        with self._write() as conn:
            status = self._status(conn, key)
            if status not in ("running", "failed"):
                raise StoreError(f"cannot finish trial {key}: it is {status}, expected running; claim it first")
            conn.execute(
                "UPDATE trials SET status = 'finished', finished = ?, summary = ?, error = NULL WHERE key = ?",
                (time.time(), text, key),
            )

    def fail(self, key: str, error: str) -> None:
        """Mark a running trial failed with a message (``todo`` offers it again).

        Raises:
            StoreError: if there is no trial ``key``, or it is not running.
        """
        with self._write() as conn:
            status = self._status(conn, key)
            if status != "running":
                raise StoreError(f"cannot fail trial {key}: it is {status}, expected running")
            conn.execute(
                "UPDATE trials SET status = 'failed', finished = ?, error = ? WHERE key = ?",
                (time.time(), str(error), key),
            )

    def recover_interrupted(self, study: str | None = None) -> int:
        """Mark trials left running by a crashed or interrupted run as failed (``"interrupted"``).

        Call it when a study starts, before any worker claims a trial: a trial that another
        live process is running would be marked too (and could then be claimed twice).

        Args:
            study: only this study's trials; ``None`` for all.

        Returns:
            How many trials were marked.
        """
        where, parameters = _study_filter(study, "status = 'running'")
        with self._write() as conn:
            return conn.execute(
                f"UPDATE trials SET status = 'failed', finished = ?, error = 'interrupted' WHERE {where}",
                (time.time(), *parameters),
            ).rowcount

    # -- reads -----------------------------------------------------------------------------

    def todo(self, retry_failed: bool = True, study: str | None = None) -> list[str]:
        """Keys of the trials still to run, in the order they were added: pending, and failed
        ones too if ``retry_failed``; ``study`` restricts them to one study."""
        statuses = "('pending', 'failed')" if retry_failed else "('pending')"
        where, parameters = _study_filter(study, f"status IN {statuses}")
        return [row[0] for row in self._read(f"SELECT key FROM trials WHERE {where} ORDER BY rowid", parameters)]

    def trials(self, study: str | None = None) -> list[TrialRecord]:
        """Every trial (of ``study``, if given), in the order they were added."""
        where, parameters = _study_filter(study, "1")
        rows = self._read(f"SELECT {_COLUMNS} FROM trials WHERE {where} ORDER BY rowid", parameters)
        return [_record(row) for row in rows]

    def trial(self, key: str) -> TrialRecord:
        """The trial ``key``.

        Raises:
            StoreError: if there is none.
        """
        rows = self._read(f"SELECT {_COLUMNS} FROM trials WHERE key = ?", (key,))
        if not rows:
            raise StoreError(f"no trial with key {key!r} in {self.path}; add its config first")
        return _record(rows[0])

    def counts(self, study: str | None = None) -> dict[str, int]:
        """How many trials have each status (every status is listed, zeros included)."""
        where, parameters = _study_filter(study, "1")
        found = dict(self._read(f"SELECT status, COUNT(*) FROM trials WHERE {where} GROUP BY status", parameters))
        return {status: found.get(status, 0) for status in STATUSES}


def _identity(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """(application id, schema version, number of schema objects) of an open database."""
    return (
        conn.execute("PRAGMA application_id").fetchone()[0],
        conn.execute("PRAGMA user_version").fetchone()[0],
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0],
    )


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        # SQLite may have rolled back already (e.g. after an I/O error); the original error matters
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _study_filter(study: str | None, condition: str) -> tuple[str, tuple[Any, ...]]:
    if study is None:
        return condition, ()
    return f"{condition} AND study = ?", (study,)


def _record(row: tuple[Any, ...]) -> TrialRecord:
    key, study, config, status, run_dir, attempts, started, finished, summary, error = row
    return TrialRecord(
        key=key,
        study=study,
        config=json.loads(config),
        status=status,
        run_dir=run_dir,
        attempts=attempts,
        started=started,
        finished=finished,
        summary=None if summary is None else from_json(json.loads(summary)),
        error=error,
    )
