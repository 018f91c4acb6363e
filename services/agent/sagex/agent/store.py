"""SQLite persistence of explanations with their hypotheses, probes and token usage.

The tables live in the same file as the batch jobs' operations (sagex.server.opstore):
a job feature's explanation is written in the transaction that marks its unit done,
so after a crash a feature is either fully recorded or still pending, never
half-done and never twice. Writes are durable at commit (WAL with synchronous=FULL)
before any progress is reported.
"""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

from sagex.api.agent.v1 import agent_service_pb2 as pb
from sagex.server.opstore import OperationStore

SCHEMA = """
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


def _page_token(create_time: float, name: str) -> str:
    return base64.urlsafe_b64encode(f"{create_time!r}|{name}".encode()).decode()


def parse_page_token(token: str) -> tuple[float, str]:
    """Raises ValueError on a token this store did not issue."""
    raw = base64.urlsafe_b64decode(token.encode()).decode()
    when, _, name = raw.partition("|")
    return float(when), name


def _insert(db: sqlite3.Connection, e: pb.Explanation, job_id: str | None) -> None:
    created = e.create_time.seconds + e.create_time.nanos / 1e9
    db.execute(
        "INSERT INTO explanations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (e.name, e.sae_id, e.feature_id, job_id, e.policy, int(e.HasField("error")), e.triage_class, e.stop_reason,
         e.description, e.usage.prompt_tokens, e.usage.completion_tokens, e.usage.cost_usd,
         e.usage.llm_calls, created, e.SerializeToString()),
    )
    db.executemany(
        "INSERT INTO hypotheses VALUES (?, ?, ?, ?, ?)",
        [(e.name, h.id, h.text, int(h.is_control), pb.HypothesisStatus.Name(h.status)) for h in e.hypotheses],
    )
    db.executemany(
        "INSERT INTO probes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(e.name, p.id, p.hypothesis_id, p.round, p.text, pb.ExpectedOutcome.Name(p.expected),
          p.max_activation, int(p.as_expected)) for p in e.probes],
    )


class Store:
    """Explanations, over the operations store's connection (one file, one lock)."""

    def __init__(self, path: Path) -> None:
        self.ops = OperationStore(path, extra_schema=SCHEMA)

    def close(self) -> None:
        self.ops.close()

    def record(self, explanation: pb.Explanation) -> None:
        """Store an explanation made outside a job (a stream's)."""
        with self.ops.write() as db:
            _insert(db, explanation, None)

    @staticmethod
    def recorder(explanation: pb.Explanation, job_id: str) -> Callable[[sqlite3.Connection], None]:
        """Writes a job feature's explanation inside the transaction that marks its unit done."""
        return lambda db: _insert(db, explanation, job_id)

    def job_usage(self, job_id: str) -> pb.Usage:
        row = self.ops.read(
            "SELECT COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
            "COALESCE(SUM(cost_usd), 0), COALESCE(SUM(llm_calls), 0) FROM explanations WHERE job_id = ?",
            (job_id,))[0]
        return pb.Usage(prompt_tokens=row[0], completion_tokens=row[1], cost_usd=row[2], llm_calls=row[3])

    def explanation(self, name: str) -> pb.Explanation | None:
        rows = self.ops.read("SELECT body FROM explanations WHERE name = ?", (name,))
        return pb.Explanation.FromString(rows[0][0]) if rows else None

    def list_explanations(
        self, sae_id: str, feature_ids: Sequence[int], page_size: int, after: tuple[float, str] | None
    ) -> tuple[list[pb.Explanation], str]:
        where: list[str] = []
        args: list[object] = []
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
        rows = self.ops.read(sql, (*args, page_size + 1))
        token = _page_token(rows[page_size - 1][1], rows[page_size - 1][2]) if len(rows) > page_size else ""
        return [pb.Explanation.FromString(r[0]) for r in rows[:page_size]], token

    def count(self, table: str) -> int:
        return self.ops.count(table)
