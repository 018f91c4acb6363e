"""The durable operations without servers: the SQLite store, and the runner
resuming, refusing to resume, cancelling and evicting, with a scripted job whose
units can be held back to stop a run in the middle."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
import pytest_asyncio
from google.rpc import code_pb2, error_details_pb2

from sagex.api.scoring.v1 import scoring_service_pb2 as pb
from sagex.llm import LLMConfig
from sagex.scoring.config import SCORERS, ScoringConfig
from sagex.scoring.heldout import HeldoutSpec
from sagex.scoring.jobs import BatchScoring
from sagex.server import operations as ops_module
from sagex.server.operations import CannotResume, Commit, Operations, UnitResult
from sagex.server.opstore import OperationRow, OperationStore, Progress, Runner, StaleRequest, UnitRow

on_loop = pytest.mark.asyncio(loop_scope="session")


class ScriptedJob:
    """Scores explanation i by echoing it; items in ``jobs.held`` wait for ``jobs.release``."""

    kind: ClassVar[str] = "batch_score"
    concurrency: ClassVar[int] = 0

    def __init__(self, jobs: ScriptedJobs, request: pb.BatchScoreExplanationsRequest) -> None:
        self.jobs = jobs
        self.request = request
        self.plan: dict[str, Any] = {"scorers": ["scripted"]}

    def items(self) -> list[int]:
        return list(range(len(self.request.explanations)))

    async def check(self) -> None:
        if self.jobs.missing:
            raise CannotResume(self.jobs.missing, f"{self.jobs.missing} is gone")

    async def run_item(self, op_id: str, item: int, positions: Sequence[int], commit: Commit) -> None:
        self.jobs.runs[item] += 1
        if item in self.jobs.held:
            await self.jobs.release.wait()
        await commit(positions[0], UnitResult(pb.ScoreExplanationResponse(explanation=self.request.explanations[item])))

    def response(self, units: Sequence[UnitRow]) -> pb.BatchScoreExplanationsResponse:
        return pb.BatchScoreExplanationsResponse(
            results=[pb.ScoreExplanationResponse.FromString(u.result) for u in units if u.done and u.result])

    def summary(self, progress: Progress) -> str:
        return f"{progress.units_done} of {progress.units} explanations"


class ScriptedJobs:
    def __init__(self) -> None:
        self.runs: Counter[int] = Counter()
        self.held: set[int] = set()
        self.release = asyncio.Event()
        self.missing = ""

    def new(self, n: int, request_id: str = "") -> ScriptedJob:
        request = pb.BatchScoreExplanationsRequest(
            explanations=[pb.ExplanationToScore(sae_id="s", feature_id=i, text=f"text {i}") for i in range(n)],
            request_id=request_id)
        return ScriptedJob(self, request)

    def load(self, kind: str, request: bytes, plan: dict[str, Any]) -> ScriptedJob:
        return ScriptedJob(self, pb.BatchScoreExplanationsRequest.FromString(request))

    def metadata(self, row: OperationRow, progress: Progress) -> pb.BatchScoreExplanationsMetadata:
        return BatchScoring.metadata(progress)


@pytest_asyncio.fixture(loop_scope="session")
async def started() -> AsyncIterator[list[Operations]]:
    """Operations are started with ``start(ops)``; all are closed at the end."""
    running: list[Operations] = []
    yield running
    for ops in running:
        await ops.close()
        ops.store.close()


async def start(running: list[Operations], path: Path, jobs: ScriptedJobs) -> Operations:
    ops = Operations(OperationStore(path), jobs, concurrency=4, retention_s=3600)
    await ops.start()
    running.append(ops)
    return ops


async def crash(ops: Operations) -> None:
    """Stop like a killed process: work abandoned, nothing released, the runner's row left behind."""
    assert ops._ticker is not None
    ops._ticker.cancel()
    tasks = list(ops._tasks.values())
    for task in tasks:
        task.cancel()
    await asyncio.gather(ops._ticker, *tasks, return_exceptions=True)
    ops_module._live_tokens.discard(ops.runner.token)


async def until_done(ops: Operations, name: str, units: int) -> None:
    for _ in range(400):
        meta = pb.BatchScoreExplanationsMetadata()
        (await ops.get(name)).metadata.Unpack(meta)
        if meta.done >= units:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{name} is stuck at {meta}")


def test_a_units_own_records_land_with_its_done_mark_or_not_at_all(tmp_path: Path) -> None:
    store = OperationStore(tmp_path / "ops.sqlite3", extra_schema="CREATE TABLE IF NOT EXISTS notes (text TEXT);")
    try:
        store.create("a", "batch_score", b"", "", {}, [0, 1], "me")

        def broken(db: Any) -> None:
            db.execute("INSERT INTO notes VALUES ('half')")
            raise RuntimeError("disk full")

        with pytest.raises(RuntimeError):
            store.commit_unit("a", 0, b"r", failed=False, also=broken)
        assert store.pending("a") == [(0, 0), (1, 1)] and store.count("notes") == 0  # rolled back together
        assert store.commit_unit("a", 0, b"r", failed=False,
                                 also=lambda db: db.execute("INSERT INTO notes VALUES ('x')"))
        assert not store.commit_unit("a", 0, b"r", failed=False,  # a duplicate: its records are not written
                                     also=lambda db: db.execute("INSERT INTO notes VALUES ('y')"))
        assert store.count("notes") == 1 and store.pending("a") == [(1, 1)]
    finally:
        store.close()


def test_store_records_each_unit_once_and_pages(tmp_path: Path) -> None:
    store = OperationStore(tmp_path / "ops.sqlite3")
    try:
        request = pb.BatchScoreExplanationsRequest(request_id="k").SerializeToString(deterministic=True)
        assert store.create("a", "batch_score", request, "k", {"x": 1}, [0, 0, 1], "me") == ("a", True)
        assert store.create("b", "batch_score", request, "k", {"x": 1}, [0], "me") == ("a", False)
        with pytest.raises(StaleRequest):
            store.create("c", "compare", request, "k", {}, [0], "me")
        assert store.commit_unit("a", 1, b"first", failed=True)
        assert not store.commit_unit("a", 1, b"second", failed=False)  # a duplicate run: the first stands
        assert store.progress("a") == Progress(units=3, units_done=1, units_failed=1, items=2, items_done=0)
        assert store.commit_unit("a", 0, b"zero", failed=False)
        assert store.progress("a").items_done == 1 and store.pending("a") == [(2, 1)]
        assert [u.result for u in store.units("a")] == [b"zero", b"first", None]
        assert store.operation("a") is not None and store.operation("a").plan == {"x": 1}  # type: ignore[union-attr]

        for op_id in ("b", "c"):
            store.create(op_id, "batch_score", b"", "", {}, [0], "me")
        first, token = store.page(2)  # newest first
        assert [r.id for r in first] == ["c", "b"] and token == "b"
        rest, token = store.page(2, token)
        assert [r.id for r in rest] == ["a"] and token == ""
        with pytest.raises(KeyError):
            store.page(2, "nope")

        assert store.delete("a") is False  # running
        assert store.finish("a", "SUCCEEDED", response=b"r") and not store.finish("a", "FAILED")
        assert store.delete("a") is True and store.delete("a") is None
        assert store.count("units") == 2  # a's went with it
    finally:
        store.close()


def test_finished_operations_are_evicted_after_the_retention(tmp_path: Path) -> None:
    store = OperationStore(tmp_path / "ops.sqlite3")
    try:
        for op_id in ("old", "running"):
            store.create(op_id, "batch_score", b"", op_id, {}, [0, 1], "me")
        store.finish("old", "FAILED", error=b"")
        assert store.evict(finished_before=time.time() - 3600) == 0  # finished just now: kept
        assert store.evict(finished_before=time.time() + 1) == 1
        assert store.operation("old") is None and store.operation("running") is not None
        assert store.count("units") == 2
        # The request_id of an evicted operation is free again.
        assert store.create("new", "batch_score", b"", "old", {}, [0], "me") == ("new", True)
    finally:
        store.close()


def test_only_operations_of_gone_runners_are_adopted(tmp_path: Path) -> None:
    store = OperationStore(tmp_path / "ops.sqlite3")
    try:
        me = Runner("me", "host-a", os.getpid())
        store.register(me)
        store.register(Runner("alive", "host-a", os.getppid()))  # another live process on this host
        store.register(Runner("dead", "host-a", 2**22 + 12345))  # no such process
        store.register(Runner("remote", "host-b", 1))  # another host: only its lease can tell
        for owner in ("alive", "dead", "remote"):
            store.create(owner, "batch_score", b"", "", {}, [0], owner)
        assert [r.id for r in store.adopt(me, {"me"}, lease_s=60)] == ["dead"]
        assert {r.id for r in store.adopt(me, {"me"}, lease_s=-1)} == {"alive", "remote"}  # leases ran out
        assert store.heartbeat(me) == {"alive", "dead", "remote"}
    finally:
        store.close()


@on_loop
async def test_an_interrupted_operation_resumes_only_its_pending_units(
        tmp_path: Path, started: list[Operations]) -> None:
    path, jobs = tmp_path / "ops.sqlite3", ScriptedJobs()
    jobs.held = {2, 3, 4}
    first = await start(started, path, jobs)
    op = await first.submit(jobs.new(5, "once"), "once")
    await until_done(first, op.name.removeprefix("operations/"), 2)
    await crash(first)
    assert jobs.runs[0] == jobs.runs[1] == 1 and jobs.runs[2] == 1

    jobs.runs.clear()
    jobs.release.set()
    second = await start(started, path, jobs)  # adopts the operation before anything else
    op_id = op.name.removeprefix("operations/")
    done = await second.wait(op_id, 10)
    assert done.done and not done.HasField("error"), done.error
    assert jobs.runs == Counter({2: 1, 3: 1, 4: 1})  # the finished units were not run again
    response, meta = pb.BatchScoreExplanationsResponse(), pb.BatchScoreExplanationsMetadata()
    done.response.Unpack(response)
    done.metadata.Unpack(meta)
    assert [r.explanation.feature_id for r in response.results] == [0, 1, 2, 3, 4]
    assert (meta.total, meta.done, meta.failed) == (5, 5, 0)
    again = await second.submit(jobs.new(5, "once"), "once")  # the same key: the same operation, not rerun
    assert again.name == op.name and again.done and jobs.runs.total() == 3


@on_loop
async def test_an_operation_that_cannot_resume_fails_with_its_partial_results(
        tmp_path: Path, started: list[Operations]) -> None:
    path, jobs = tmp_path / "ops.sqlite3", ScriptedJobs()
    jobs.held = {2, 3}
    first = await start(started, path, jobs)
    op_id = (await first.submit(jobs.new(4), "")).name.removeprefix("operations/")
    await until_done(first, op_id, 2)
    await crash(first)

    jobs.missing = "explainers/sage"
    second = await start(started, path, jobs)
    done = await second.wait(op_id, 10)
    assert done.error.code == code_pb2.FAILED_PRECONDITION
    assert done.error.message.startswith("cannot resume after a restart: explainers/sage is gone; 2 of 4 ")
    partial, failure = pb.BatchScoreExplanationsResponse(), error_details_pb2.PreconditionFailure()
    assert done.error.details[0].Unpack(partial) and done.error.details[1].Unpack(failure)
    assert [r.explanation.feature_id for r in partial.results] == [0, 1]
    assert failure.violations[0].subject == "explainers/sage"
    meta = pb.BatchScoreExplanationsMetadata()
    done.metadata.Unpack(meta)
    assert (meta.total, meta.done) == (4, 2)
    assert await second.delete(op_id) and second.store.count("units") == 0


@on_loop
async def test_cancel_is_recorded_before_the_work_stops_and_survives_a_restart(
        tmp_path: Path, started: list[Operations]) -> None:
    path, jobs = tmp_path / "ops.sqlite3", ScriptedJobs()
    jobs.held = {1}
    first = await start(started, path, jobs)
    op_id = (await first.submit(jobs.new(2), "")).name.removeprefix("operations/")
    await until_done(first, op_id, 1)
    assert not await first.delete(op_id)  # still running
    await first.cancel(op_id)
    op = await first.wait(op_id, 0)
    assert op.done and op.error.code == code_pb2.CANCELLED
    assert op.error.message.startswith("cancelled by the caller; 1 of 2 explanations were finished")
    await first.cancel(op_id)  # a finished operation stays as it is
    await crash(first)

    jobs.runs.clear()
    second = await start(started, path, jobs)
    assert (await second.get(op_id)).error.code == code_pb2.CANCELLED and not jobs.runs
    listed, token = await second.list(10)
    assert [o.name for o in listed] == [f"operations/{op_id}"] and token == ""
    with pytest.raises(KeyError):
        await second.get("nope")


@on_loop
async def test_a_resumed_job_refuses_settings_its_scores_would_not_compare_with() -> None:
    request = pb.BatchScoreExplanationsRequest(explanations=[pb.ExplanationToScore(sae_id="s", text="x")])

    def engine(config: ScoringConfig) -> Any:
        return SimpleNamespace(config=config, scorers=dict.fromkeys(SCORERS), activation=None)

    accepted = await BatchScoring.new(engine(ScoringConfig()), pb.BatchScoreExplanationsRequest(), ["detection"])
    plan = json.loads(json.dumps(accepted.plan))  # as stored
    await BatchScoring(engine(ScoringConfig(embedding_device="cuda")), request, plan).check()  # not a setting
    changed = ScoringConfig(heldout=HeldoutSpec(per_band=4), llm=LLMConfig(model="another"))
    with pytest.raises(CannotResume, match=r"heldout: .*'per_band': 10.* -> .*'per_band': 4.*; llm.model:  -> another"):
        await BatchScoring(engine(changed), request, plan).check()
