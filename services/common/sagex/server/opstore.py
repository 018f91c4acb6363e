"""SQLite persistence of long-running operations (the agent's batch jobs, scoring's
batches and comparisons).

An operation is its request, a plan (what the request was resolved to when it
was accepted) and one row per *unit* of work (a feature to explain, an
explanation to score, a feature and explainer to compare). A unit's result is
written together with its "done" mark in one transaction (with whatever else
the service records for it, ``commit_unit``'s ``also``), so after a crash a
unit is either fully recorded or still pending, never half-done and never
twice. Writes are durable at commit (WAL, synchronous=FULL).

Several servers of one service may share one file (the default lives in the
user's cache). Each server registers a *runner* row and heartbeats it; an operation is
run only by the runner that owns it, and a RUNNING operation whose owner is gone
(stopped, killed, or silent past the lease) is adopted by a live runner.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
STATES = ("RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")

SCHEMA = """
CREATE TABLE IF NOT EXISTS operations (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    request_id TEXT UNIQUE,
    request BLOB NOT NULL,
    plan TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
    owner TEXT,
    response BLOB,
    error BLOB,
    create_time REAL NOT NULL,
    update_time REAL NOT NULL,
    finish_time REAL
);
CREATE INDEX IF NOT EXISTS operations_created ON operations (create_time, id);
CREATE INDEX IF NOT EXISTS operations_finished ON operations (finish_time) WHERE state != 'RUNNING';
CREATE TABLE IF NOT EXISTS units (
    operation_id TEXT NOT NULL REFERENCES operations(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    item INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    result BLOB,
    note TEXT NOT NULL DEFAULT '',
    finish_time REAL,
    PRIMARY KEY (operation_id, position)
);
CREATE TABLE IF NOT EXISTS runners (
    token TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    heartbeat REAL NOT NULL
);
"""


class StaleRequest(Exception):
    """The request_id was used before for a different request."""


@dataclass(frozen=True)
class OperationRow:
    id: str
    kind: str
    request: bytes  # the serialized request, as submitted
    plan: dict[str, Any]
    state: str
    response: bytes | None  # the serialized response, once SUCCEEDED
    error: bytes | None  # a serialized google.rpc.Status, once FAILED or CANCELLED
    create_time: float
    update_time: float
    finish_time: float | None

    @property
    def done(self) -> bool:
        return self.state != "RUNNING"


@dataclass(frozen=True)
class UnitRow:
    position: int
    item: int  # the request entry the unit belongs to (an explanation, a feature)
    done: bool
    failed: bool
    result: bytes | None  # the unit's serialized result message
    note: str  # why a finished unit has no result


@dataclass(frozen=True)
class Progress:
    units: int
    units_done: int
    units_failed: int
    items: int
    items_done: int  # items whose every unit is done


@dataclass(frozen=True)
class Runner:
    """One server's claim on operations: who it is and where it runs."""

    token: str
    host: str
    pid: int


_COLUMNS = "id, kind, request, plan, state, response, error, create_time, update_time, finish_time"


def _row(r: Sequence[Any]) -> OperationRow:
    return OperationRow(r[0], r[1], bytes(r[2]), json.loads(r[3]), r[4], None if r[5] is None else bytes(r[5]),
                        None if r[6] is None else bytes(r[6]), r[7], r[8], r[9])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class OperationStore:
    """Thread-safe; every method is a short blocking call (run them off the event loop)."""

    def __init__(self, path: Path, extra_schema: str = "") -> None:
        """``extra_schema``: the service's own tables, kept in the same file so they can be
        written in a unit's transaction."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30.0)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                self._db.close()
                raise ValueError(f"{self.path} holds operations in format {version}; this server reads "
                                 f"format {SCHEMA_VERSION}: point database at another file")
            self._db.executescript(SCHEMA + extra_schema)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: committed on success, rolled back on any error."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- operations -------------------------------------------------------------

    def create(self, op_id: str, kind: str, request: bytes, request_id: str, plan: dict[str, Any],
               items: Sequence[int], owner: str) -> tuple[str, bool]:
        """Insert an operation with all its units pending (``items[p]`` is unit p's
        item), or find the one with the same request_id. Returns (id, created);
        raises StaleRequest when the request_id names a different request."""
        now = time.time()
        with self.write() as db:
            if request_id:
                row = db.execute("SELECT id, kind, request FROM operations WHERE request_id = ?",
                                 (request_id,)).fetchone()
                if row is not None:
                    if row[1] != kind or bytes(row[2]) != request:
                        raise StaleRequest(request_id)
                    return row[0], False
            db.execute("INSERT INTO operations (id, kind, request_id, request, plan, state, owner, create_time, "
                       "update_time) VALUES (?, ?, ?, ?, ?, 'RUNNING', ?, ?, ?)",
                       (op_id, kind, request_id or None, request, json.dumps(plan, sort_keys=True), owner, now, now))
            db.executemany("INSERT INTO units (operation_id, position, item) VALUES (?, ?, ?)",
                           [(op_id, p, item) for p, item in enumerate(items)])
        return op_id, True

    def operation(self, op_id: str) -> OperationRow | None:
        rows = self.read(f"SELECT {_COLUMNS} FROM operations WHERE id = ?", (op_id,))
        return _row(rows[0]) if rows else None

    def progress(self, op_id: str) -> Progress:
        with self._lock:
            units = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(done), 0), COALESCE(SUM(done AND failed), 0) FROM units "
                "WHERE operation_id = ?", (op_id,)).fetchone()
            items = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(finished), 0) FROM (SELECT MIN(done) AS finished FROM units "
                "WHERE operation_id = ? GROUP BY item)", (op_id,)).fetchone()
        return Progress(int(units[0]), int(units[1]), int(units[2]), int(items[0]), int(items[1]))

    def units(self, op_id: str) -> list[UnitRow]:
        rows = self.read("SELECT position, item, done, failed, result, note FROM units WHERE operation_id = ? "
                          "ORDER BY position", (op_id,))
        return [UnitRow(r[0], r[1], bool(r[2]), bool(r[3]), None if r[4] is None else bytes(r[4]), r[5])
                for r in rows]

    def pending(self, op_id: str) -> list[tuple[int, int]]:
        """(position, item) of every unit not done yet, in order."""
        rows = self.read("SELECT position, item FROM units WHERE operation_id = ? AND done = 0 ORDER BY position",
                          (op_id,))
        return [(int(p), int(i)) for p, i in rows]

    def commit_unit(self, op_id: str, position: int, result: bytes | None, failed: bool, note: str = "",
                    also: Callable[[sqlite3.Connection], None] | None = None) -> bool:
        """Record a unit's result and mark it done, atomically, with ``also``'s writes in
        the same transaction. False when it was already done (a duplicate run): the first
        result stands and ``also`` does not run."""
        now = time.time()
        with self.write() as db:
            cur = db.execute("UPDATE units SET done = 1, failed = ?, result = ?, note = ?, finish_time = ? "
                             "WHERE operation_id = ? AND position = ? AND done = 0",
                             (int(failed), result, note, now, op_id, position))
            if cur.rowcount == 0:
                return False
            if also is not None:
                also(db)
            db.execute("UPDATE operations SET update_time = ? WHERE id = ?", (now, op_id))
        return True

    def finish(self, op_id: str, state: str, *, response: bytes | None = None, error: bytes | None = None) -> bool:
        """Move a RUNNING operation to its final state; False when it was not running."""
        assert state in STATES[1:], state
        now = time.time()
        with self.write() as db:
            cur = db.execute("UPDATE operations SET state = ?, response = ?, error = ?, owner = NULL, "
                             "update_time = ?, finish_time = ? WHERE id = ? AND state = 'RUNNING'",
                             (state, response, error, now, now, op_id))
            return cur.rowcount > 0

    def delete(self, op_id: str) -> bool | None:
        """True when deleted, False when still running, None when unknown."""
        with self.write() as db:
            row = db.execute("SELECT state FROM operations WHERE id = ?", (op_id,)).fetchone()
            if row is None:
                return None
            if row[0] == "RUNNING":
                return False
            db.execute("DELETE FROM operations WHERE id = ?", (op_id,))
            return True

    def page(self, page_size: int, after: str = "") -> tuple[list[OperationRow], str]:
        """Newest first; the page token is the last id returned. KeyError when
        ``after`` names no stored operation."""
        with self._lock:
            if after:
                mark = self._db.execute("SELECT create_time, id FROM operations WHERE id = ?", (after,)).fetchone()
                if mark is None:
                    raise KeyError(after)
                rows = self._db.execute(
                    f"SELECT {_COLUMNS} FROM operations WHERE (create_time, id) < (?, ?) "
                    "ORDER BY create_time DESC, id DESC LIMIT ?", (mark[0], mark[1], page_size + 1)).fetchall()
            else:
                rows = self._db.execute(f"SELECT {_COLUMNS} FROM operations ORDER BY create_time DESC, id DESC "
                                        "LIMIT ?", (page_size + 1,)).fetchall()
        page = [_row(r) for r in rows[:page_size]]
        return page, (page[-1].id if len(rows) > page_size else "")

    def evict(self, finished_before: float) -> int:
        """Delete operations (and their units) that finished before the given time."""
        with self.write() as db:
            return db.execute("DELETE FROM operations WHERE state != 'RUNNING' AND finish_time < ?",
                              (finished_before,)).rowcount

    def count(self, table: str) -> int:
        if not table.isidentifier():
            raise ValueError(f"not a table name: {table!r}")
        return int(self.read(f"SELECT COUNT(*) FROM {table}")[0][0])

    # -- runners ----------------------------------------------------------------

    def register(self, runner: Runner) -> None:
        with self.write() as db:
            db.execute("INSERT OR REPLACE INTO runners VALUES (?, ?, ?, ?)",
                       (runner.token, runner.host, runner.pid, time.time()))

    def heartbeat(self, runner: Runner) -> set[str]:
        """Renew the runner's lease; returns the RUNNING operations it still owns."""
        with self.write() as db:
            db.execute("INSERT OR REPLACE INTO runners VALUES (?, ?, ?, ?)",
                       (runner.token, runner.host, runner.pid, time.time()))
            rows = db.execute("SELECT id FROM operations WHERE owner = ? AND state = 'RUNNING'",
                              (runner.token,)).fetchall()
        return {r[0] for r in rows}

    def adopt(self, runner: Runner, live_tokens: Collection[str], lease_s: float) -> list[OperationRow]:
        """Take over every RUNNING operation whose owner is gone, oldest first.

        A runner is gone when its lease ran out, when it ran on this host in a
        process that no longer exists, or when it ran in this very process id
        without being one of ``live_tokens`` (a previous incarnation: containers
        restart with the same pid)."""
        now = time.time()
        with self.write() as db:
            gone = []
            for token, host, pid, heartbeat in db.execute("SELECT token, host, pid, heartbeat FROM runners"):
                if token in live_tokens:
                    continue
                same_host = host == runner.host
                if (now - heartbeat > lease_s or (same_host and pid == runner.pid)
                        or (same_host and not pid_alive(pid))):
                    gone.append(token)
            db.executemany("DELETE FROM runners WHERE token = ?", [(t,) for t in gone])
            rows = db.execute(
                f"UPDATE operations SET owner = ? WHERE state = 'RUNNING' AND (owner IS NULL OR owner NOT IN "
                f"(SELECT token FROM runners)) RETURNING {_COLUMNS}", (runner.token,)).fetchall()
        return sorted((_row(r) for r in rows), key=lambda r: (r.create_time, r.id))

    def release(self, runner: Runner) -> None:
        """Give up the runner's operations (left RUNNING, for another runner to resume)."""
        with self.write() as db:
            db.execute("UPDATE operations SET owner = NULL WHERE owner = ?", (runner.token,))
            db.execute("DELETE FROM runners WHERE token = ?", (runner.token,))


__all__ = ["OperationRow", "OperationStore", "Progress", "Runner", "StaleRequest", "UnitRow", "pid_alive"]
