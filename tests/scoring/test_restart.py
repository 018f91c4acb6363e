"""Kill the scoring service (SIGKILL, a real subprocess) in the middle of a
long-running operation and start it again on the same database:

* a batch resumes and completes with every explanation scored exactly once (the
  fake LLM's request log shows no unit finished before the kill asked again, and
  every other unit asked exactly as often as in an uninterrupted run), with the
  same results as an uninterrupted run;
* a comparison whose explainer is gone after the restart fails cleanly with
  FAILED_PRECONDITION, and what it had finished stays readable.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sagex.api.agent.v1 import agent_service_pb2 as agent_pb
from sagex.api.agent.v1 import agent_service_pb2_grpc as agent_grpc
from sagex.api.scoring.v1 import scoring_service_pb2 as pb
from sagex.api.scoring.v1 import scoring_service_pb2_grpc as pb_grpc
from sagex.scoring.config import ScoringConfig
from sagex.scoring.server import SERVICE_NAME, running_scoring_server
from sagex.server.lifecycle import channel_options
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.scoring import scripted
from tests.scoring.conftest import SAE

pytestmark = pytest.mark.asyncio(loop_scope="session")

EXPLANATION = re.compile(r"^Explanation of the feature: (.*)$", re.MULTILINE)
SETTINGS = """
[scoring]
database = "scoring.sqlite3"
default_scorers = ["detection"]
batch_concurrency = 1
llm_concurrency = 2

[scoring.llm]
max_retries = 0

[scoring.heldout]
per_band = 3
non_activating = 9
min_activating = 3
min_non_activating = 3

[scoring.detection.classifier]
examples_per_prompt = 6
"""


class SlowLLM:
    """The literal reader of ``scripted`` (baseline prompts get a fixed phrase),
    answering after ``delay_s``."""

    def __init__(self) -> None:
        self.delay_s = 0.0
        self.classifier = scripted.classifier(logprobs=True)

    def __call__(self, body: dict[str, Any]) -> Reply:
        if body["messages"][0]["content"].startswith("We study features"):
            reply = Reply(content='Explanation: the word "because"')
        else:
            reply = self.classifier(body)
        return replace(reply, delay_s=self.delay_s)


def explained(requests: list[dict[str, Any]]) -> Counter[str]:
    """Scorer prompts per explanation text."""
    return Counter(m.group(1) for r in requests if (m := EXPLANATION.search(scripted.user_text(r))))


@pytest.fixture
def llm() -> Iterator[tuple[FakeOpenAI, SlowLLM]]:
    handler = SlowLLM()
    with FakeOpenAI(handler) as fake:
        yield fake, handler


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ScoringProcess:
    """``sage serve scoring`` in a subprocess, on a fixed port and database."""

    def __init__(self, tmp: Path, activation_port: int, fake: FakeOpenAI) -> None:
        self.config, self.log, self.port = tmp / "scoring.toml", tmp / "scoring.log", _free_port()
        self.config.write_text(SETTINGS)
        self.database = tmp / "scoring.sqlite3"
        self.flags = ["--activation", f"127.0.0.1:{activation_port}", "--llm-base-url", fake.base_url,
                      "--llm-model", "fake-model"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sagex.cli.main", "serve", "scoring", "--port", str(self.port), "--config",
             str(self.config), "--log-level", "info", *self.flags, *extra],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)  # no drain, no cleanup: a crash
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)

    async def serving(self) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}", options=channel_options())
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(1200):
            assert self.proc is not None and self.proc.poll() is None, \
                f"scoring exited with {self.proc and self.proc.returncode}:\n{self.log.read_text()[-3000:]}"
            try:
                resp = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=1)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return channel
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"scoring never became ready:\n{self.log.read_text()[-3000:]}")


@pytest_asyncio.fixture(loop_scope="session")
async def scoring(server: Any, llm: tuple[FakeOpenAI, SlowLLM], tmp_path: Path) -> AsyncIterator[ScoringProcess]:
    process = ScoringProcess(tmp_path, server.port, llm[0])
    yield process
    process.stop()


async def progress_until(ops: operations_pb2_grpc.OperationsStub, name: str, meta: Any,
                         reached: Callable[[Any], bool]) -> None:
    for _ in range(1200):
        (await ops.GetOperation(operations_pb2.GetOperationRequest(name=name), timeout=10)).metadata.Unpack(meta)
        if reached(meta):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} never got there: {meta}")


async def wait_done(ops: operations_pb2_grpc.OperationsStub, name: str) -> operations_pb2.Operation:
    done = await ops.WaitOperation(operations_pb2.WaitOperationRequest(
        name=name, timeout=duration_pb2.Duration(seconds=240)), timeout=250)
    assert done.done, done
    return done


def units(database: Path, name: str) -> list[tuple[int, int, bytes | None]]:
    """(position, done, result) of the operation's units, straight from the file."""
    with closing(sqlite3.connect(database)) as db:
        return db.execute("SELECT position, done, result FROM units WHERE operation_id = ? ORDER BY position",
                          (name.removeprefix("operations/"),)).fetchall()


async def test_killed_batch_resumes_and_scores_each_explanation_once(
        server: Any, scoring: ScoringProcess, llm: tuple[FakeOpenAI, SlowLLM], token_features: dict[int, str],
        tmp_path: Path) -> None:
    fake, handler = llm
    features = list(token_features)[:3]
    request = pb.BatchScoreExplanationsRequest(
        explanations=[pb.ExplanationToScore(sae_id=SAE, feature_id=f, text=f'the word "{token_features[f]}" ({k})')
                      for k in range(2) for f in features], seed=5, request_id="kill-me")
    total = len(request.explanations)

    # An uninterrupted run of the same request, in process, for the expected results.
    reference_config = ScoringConfig.from_toml(scoring.config, activation=(f"127.0.0.1:{server.port}",),
                                               database=tmp_path / "reference.sqlite3")
    reference_config = replace(reference_config, llm=replace(reference_config.llm, base_url=fake.base_url,
                                                             model="fake-model")).with_server(port=0)
    async with running_scoring_server(reference_config) as (running, _):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}", options=channel_options()) as channel:
            op = await pb_grpc.ScoringServiceStub(channel).BatchScoreExplanations(request, timeout=30)
            reference = await wait_done(operations_pb2_grpc.OperationsStub(channel), op.name)
    assert not reference.HasField("error"), reference.error
    expected = pb.BatchScoreExplanationsResponse()
    reference.response.Unpack(expected)
    per_unit = explained(fake.requests)
    assert set(per_unit) == {ex.text for ex in request.explanations}
    assert len(set(per_unit.values())) == 1  # every explanation takes the same number of prompts
    calls = next(iter(per_unit.values()))
    fake.requests.clear()

    handler.delay_s = 0.3  # the batch now takes seconds: time to kill it in the middle
    scoring.start()
    async with await scoring.serving() as channel:
        op = await pb_grpc.ScoringServiceStub(channel).BatchScoreExplanations(request, timeout=30)
        meta = pb.BatchScoreExplanationsMetadata()
        await progress_until(operations_pb2_grpc.OperationsStub(channel), op.name, meta, lambda m: m.done >= 2)
        scoring.kill()
    finished = {request.explanations[p].text for p, done, _ in units(scoring.database, op.name) if done}
    assert 2 <= len(finished) < total, "the batch must be cut in the middle"
    asked_before = len(fake.requests)

    scoring.start()
    async with await scoring.serving() as channel:
        again = await pb_grpc.ScoringServiceStub(channel).BatchScoreExplanations(request, timeout=30)
        assert again.name == op.name  # the same key finds the stored operation, not a new one
        done = await wait_done(operations_pb2_grpc.OperationsStub(channel), op.name)
    assert not done.HasField("error"), done.error
    done.metadata.Unpack(meta)
    expected_meta = pb.BatchScoreExplanationsMetadata()
    reference.metadata.Unpack(expected_meta)
    assert (meta.total, meta.done, meta.failed) == (total, total, expected_meta.failed)
    response = pb.BatchScoreExplanationsResponse()
    done.response.Unpack(response)
    assert response == expected  # the same results, in the same order, as the uninterrupted run

    after = explained(fake.requests[asked_before:])
    assert not set(after) & finished, "a unit finished before the kill was scored again"
    assert after == dict.fromkeys({ex.text for ex in request.explanations} - finished, calls)
    rows = units(scoring.database, op.name)
    assert len(rows) == total and all(flag and result for _, flag, result in rows)
    assert "operation_resumed" in scoring.log.read_text()


class SlowAgent(agent_grpc.AgentServiceServicer):
    """Explains each feature as its measured word, after a pause."""

    def __init__(self, words: dict[int, str]) -> None:
        self.words = words

    async def ExplainFeature(self, request: agent_pb.ExplainFeatureRequest, context: Any) -> AsyncIterator[Any]:
        await asyncio.sleep(1.0)
        ex = agent_pb.Explanation(sae_id=request.sae_id, feature_id=request.feature_id, policy="scripted",
                                  description=f'the word "{self.words[request.feature_id]}"')
        yield agent_pb.ExplainFeatureResponse(explanation=ex)


async def test_comparison_that_cannot_resume_fails_cleanly_with_its_results(
        scoring: ScoringProcess, llm: tuple[FakeOpenAI, SlowLLM], token_features: dict[int, str]) -> None:
    fake, handler = llm
    agent = grpc.aio.server()
    agent_grpc.add_AgentServiceServicer_to_server(SlowAgent(token_features), agent)
    agent_port = agent.add_insecure_port("127.0.0.1:0")
    await agent.start()
    features = list(token_features)[:4]
    request = pb.CompareExplainersRequest(sae_id=SAE, feature_ids=features, explainers=["sage", "single_pass"],
                                          scorers=["detection"], seed=1, request_id="compare-kill")
    handler.delay_s = 0.2
    try:
        scoring.start("--agent", f"127.0.0.1:{agent_port}")
        async with await scoring.serving() as channel:
            op = await pb_grpc.ScoringServiceStub(channel).CompareExplainers(request, timeout=30)
            meta = pb.CompareExplainersMetadata()
            await progress_until(operations_pb2_grpc.OperationsStub(channel), op.name, meta, lambda m: m.done >= 1)
            scoring.kill()
    finally:
        await agent.stop(0)
    before = units(scoring.database, op.name)
    finished = [(p, result) for p, done, result in before if done]
    assert 2 <= len(finished) < 2 * len(features), "the comparison must be cut in the middle"
    asked_before = len(fake.requests)

    scoring.start()  # no --agent: the "sage" explainer is gone
    async with await scoring.serving() as channel:
        ops = operations_pb2_grpc.OperationsStub(channel)
        done = await wait_done(ops, op.name)
        assert done.error.code == code_pb2.FAILED_PRECONDITION
        assert "cannot resume" in done.error.message and "'sage'" in done.error.message, done.error.message
        failure, partial = error_details_pb2.PreconditionFailure(), pb.CompareExplainersResponse()
        assert sorted(d.type_url.rsplit(".", 1)[-1] for d in done.error.details) == \
            ["CompareExplainersResponse", "PreconditionFailure"]
        for detail in done.error.details:
            assert detail.Unpack(failure) or detail.Unpack(partial)
        assert failure.violations[0].subject == "explainers/sage"
        done.metadata.Unpack(meta)
        assert meta.total == len(features) and 1 <= meta.done < len(features)  # progress as it was
        # What was finished is all there: every stored score is in its explainer's mean.
        counted = {s.explainer: n for s in partial.summaries
                   if (n := {m.name: m.n for m in s.metrics}.get("detection.balanced_accuracy", 0))}
        stored = Counter(request.explainers[p % 2] for p, result in finished
                         if result and not pb.ScoreExplanationResponse.FromString(result).results[0].HasField("error"))
        assert counted == dict(stored) and counted["sage"] >= 1
        listed = await ops.ListOperations(operations_pb2.ListOperationsRequest(), timeout=10)
        assert op.name in [o.name for o in listed.operations]
    assert len(fake.requests) == asked_before  # nothing was scored again
    assert units(scoring.database, op.name) == before  # and nothing stored was lost
