"""SQLite persistence: jobs, their features, explanations with their hypotheses,
probes and token usage.

A feature's explanation and the row that marks it done in its job are written in
one transaction, so after a crash a feature is either fully recorded or still
pending, never half-done and never twice. Writes are durable at commit
(WAL with synchronous=FULL) before any progress is reported.
"""

from __future__ import annotations

import base64
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sagex.api.agent.v1 import agent_service_pb2 as pb

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    request_id TEXT UNIQUE,
    request BLOB NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('RUNNING', 'SUCCEEDED', 'CANCELLED', 'FAILED')),
    error_message TEXT NOT NULL DEFAULT '',
    create_time REAL NOT NULL,
    update_time REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS job_features (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    feature_id INTEGER NOT NULL,
    explanation TEXT REFERENCES explanations(name),
    failed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, position),
    UNIQUE (job_id, feature_id)
);
CREATE TABLE IF NOT EXISTS explanations (
    name TEXT PRIMARY KEY,
    sae_id TEXT NOT NULL,
    feature_id INTEGER NOT NULL,
    job_id TEXT,
    policy TEXT NOT NULL,
    failed INTEGER NOT NULL,
    triage_class TEXT NOT NULL,
    stop_reason TEXT NOT NULL,
    description TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    llm_calls INTEGER NOT NULL,
    create_time REAL NOT NULL,
    body BLOB NOT NULL,
    UNIQUE (job_id, feature_id)
);
CREATE INDEX IF NOT EXISTS explanations_newest ON explanations (create_time DESC, name DESC);
CREATE INDEX IF NOT EXISTS explanations_feature ON explanations (sae_id, feature_id);
CREATE TABLE IF NOT EXISTS hypotheses (
    explanation TEXT NOT NULL REFERENCES explanations(name) ON DELETE CASCADE,
    id INTEGER NOT NULL,
    text TEXT NOT NULL,
    is_control INTEGER NOT NULL,
    status TEXT NOT NULL,
    PRIMARY KEY (explanation, id)
);
CREATE TABLE IF NOT EXISTS probes (
    explanation TEXT NOT NULL REFERENCES explanations(name) ON DELETE CASCADE,
    id INTEGER NOT NULL,
    hypothesis_id INTEGER NOT NULL,
    round INTEGER NOT NULL,
    text TEXT NOT NULL,
    expected TEXT NOT NULL,
    max_activation REAL NOT NULL,
    as_expected INTEGER NOT NULL,
    PRIMARY KEY (explanation, id)
);
"""


@dataclass(frozen=True)
class JobRow:
    id: str
    request: pb.BatchExplainFeaturesRequest
    state: str
    error_message: str
    create_time: float
    update_time: float
    total: int
    done: int
    failed: int
    usage: pb.Usage
    explanations: list[str]  # in feature order; "" where not done


class StaleRequest(Exception):
    """An idempotency key was reused with a different request."""


def _page_token(create_time: float, name: str) -> str:
    return base64.urlsafe_b64encode(f"{create_time!r}|{name}".encode()).decode()


def parse_page_token(token: str) -> tuple[float, str]:
    """Raises ValueError on a token this store did not issue."""
    raw = base64.urlsafe_b64decode(token.encode()).decode()
    when, _, name = raw.partition("|")
    return float(when), name


class Store:
    def __init__(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(path)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- jobs -------------------------------------------------------------------

    def create_job(self, job_id: str, request: pb.BatchExplainFeaturesRequest) -> tuple[str, bool]:
        """Insert a job, or return the existing one with the same request_id.
        Returns (job id, created)."""
        body = request.SerializeToString(deterministic=True)
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if request.request_id:
                    row = self._db.execute("SELECT id, request FROM jobs WHERE request_id = ?",
                                           (request.request_id,)).fetchone()
                    if row is not None:
                        self._db.execute("COMMIT")
                        if bytes(row[1]) != body:
                            raise StaleRequest(request.request_id)
                        return row[0], False
                self._db.execute(
                    "INSERT INTO jobs (id, request_id, request, state, create_time, update_time) "
                    "VALUES (?, ?, ?, 'RUNNING', ?, ?)",
                    (job_id, request.request_id or None, body, now, now),
                )
                self._db.executemany(
                    "INSERT INTO job_features (job_id, position, feature_id) VALUES (?, ?, ?)",
                    [(job_id, i, f) for i, f in enumerate(request.feature_ids)],
                )
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return job_id, True

    def pending_features(self, job_id: str) -> list[tuple[int, int]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT position, feature_id FROM job_features WHERE job_id = ? AND explanation IS NULL "
                "ORDER BY position", (job_id,)).fetchall()
        return [(int(p), int(f)) for p, f in rows]

    def running_jobs(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute(
                "SELECT id FROM jobs WHERE state = 'RUNNING' ORDER BY create_time").fetchall()]

    def finish_job(self, job_id: str, state: str, error: str = "") -> None:
        with self._lock:
            self._db.execute("UPDATE jobs SET state = ?, error_message = ?, update_time = ? WHERE id = ? "
                             "AND state = 'RUNNING'", (state, error, time.time(), job_id))

    def delete_job(self, job_id: str) -> bool:
        with self._lock:
            cur = self._db.execute("DELETE FROM jobs WHERE id = ? AND state != 'RUNNING'", (job_id,))
            return cur.rowcount > 0

    def job(self, job_id: str) -> JobRow | None:
        with self._lock:
            row = self._db.execute("SELECT id, request, state, error_message, create_time, update_time FROM jobs "
                                   "WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            features = self._db.execute(
                "SELECT jf.explanation, jf.failed FROM job_features jf WHERE jf.job_id = ? ORDER BY jf.position",
                (job_id,)).fetchall()
            usage = self._db.execute(
                "SELECT COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
                "COALESCE(SUM(cost_usd), 0), COALESCE(SUM(llm_calls), 0) FROM explanations WHERE job_id = ?",
                (job_id,)).fetchone()
        request = pb.BatchExplainFeaturesRequest.FromString(row[1])
        failed = sum(1 for name, f in features if name is not None and f)
        done = sum(1 for name, f in features if name is not None and not f)
        return JobRow(row[0], request, row[2], row[3], row[4], row[5], len(features), done, failed,
                      pb.Usage(prompt_tokens=usage[0], completion_tokens=usage[1], cost_usd=usage[2],
                               llm_calls=usage[3]),
                      [name or "" for name, _ in features])

    def list_jobs(self, page_size: int, after: tuple[float, str] | None) -> tuple[list[str], str]:
        with self._lock:
            if after is None:
                rows = self._db.execute("SELECT id, create_time FROM jobs ORDER BY create_time DESC, id DESC "
                                        "LIMIT ?", (page_size + 1,)).fetchall()
            else:
                rows = self._db.execute(
                    "SELECT id, create_time FROM jobs WHERE (create_time, id) < (?, ?) "
                    "ORDER BY create_time DESC, id DESC LIMIT ?", (after[0], after[1], page_size + 1)).fetchall()
        token = _page_token(rows[page_size - 1][1], rows[page_size - 1][0]) if len(rows) > page_size else ""
        return [r[0] for r in rows[:page_size]], token

    # -- explanations -----------------------------------------------------------

    def record(self, explanation: pb.Explanation, job_id: str | None = None, position: int | None = None) -> bool:
        """Store an explanation (and mark its job feature done) atomically.
        Returns False when the job feature was already recorded (a duplicate run)."""
        e = explanation
        created = e.create_time.seconds + e.create_time.nanos / 1e9
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if job_id is not None:
                    row = self._db.execute("SELECT explanation FROM job_features WHERE job_id = ? AND position = ?",
                                           (job_id, position)).fetchone()
                    if row is None or row[0] is not None:
                        self._db.execute("ROLLBACK")
                        return False
                failed = e.HasField("error")
                self._db.execute(
                    "INSERT INTO explanations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (e.name, e.sae_id, e.feature_id, job_id, e.policy, int(failed), e.triage_class, e.stop_reason,
                     e.description, e.usage.prompt_tokens, e.usage.completion_tokens, e.usage.cost_usd,
                     e.usage.llm_calls, created, e.SerializeToString()),
                )
                self._db.executemany(
                    "INSERT INTO hypotheses VALUES (?, ?, ?, ?, ?)",
                    [(e.name, h.id, h.text, int(h.is_control), pb.HypothesisStatus.Name(h.status))
                     for h in e.hypotheses],
                )
                self._db.executemany(
                    "INSERT INTO probes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(e.name, p.id, p.hypothesis_id, p.round, p.text, pb.ExpectedOutcome.Name(p.expected),
                      p.max_activation, int(p.as_expected)) for p in e.probes],
                )
                if job_id is not None:
                    self._db.execute(
                        "UPDATE job_features SET explanation = ?, failed = ? WHERE job_id = ? AND position = ?",
                        (e.name, int(failed), job_id, position))
                    self._db.execute("UPDATE jobs SET update_time = ? WHERE id = ?", (time.time(), job_id))
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return True

    def explanation(self, name: str) -> pb.Explanation | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM explanations WHERE name = ?", (name,)).fetchone()
        return pb.Explanation.FromString(row[0]) if row else None

    def list_explanations(
        self, sae_id: str, feature_ids: Sequence[int], page_size: int, after: tuple[float, str] | None
    ) -> tuple[list[pb.Explanation], str]:
        where, args = [], []
        if sae_id:
            where.append("sae_id = ?")
            args.append(sae_id)
        if feature_ids:
            where.append(f"feature_id IN ({','.join('?' * len(feature_ids))})")
            args += list(feature_ids)
        if after is not None:
            where.append("(create_time, name) < (?, ?)")
            args += [after[0], after[1]]
        sql = "SELECT body, create_time, name FROM explanations"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY create_time DESC, name DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, (*args, page_size + 1)).fetchall()
        token = _page_token(rows[page_size - 1][1], rows[page_size - 1][2]) if len(rows) > page_size else ""
        return [pb.Explanation.FromString(r[0]) for r in rows[:page_size]], token

    def count(self, table: str) -> int:
        assert table in ("jobs", "job_features", "explanations", "hypotheses", "probes")
        with self._lock:
            return int(self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
