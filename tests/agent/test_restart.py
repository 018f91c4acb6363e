"""Kill the agent process in the middle of a batch job and start it again: the
job completes with every feature explained exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.longrunning import operations_pb2
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sagex.agent.server import SERVICE_NAME
from sagex.api.activation.v1 import activation_service_pb2 as apb
from sagex.api.agent.v1 import agent_service_pb2 as pb
from sagex.server.lifecycle import channel_options
from tests.agent.conftest import SAE, AgentClient

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_agent(port: int, activation_port: int, database: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "sagex.cli.main", "serve", "agent", "--port", str(port),
         "--activation", f"127.0.0.1:{activation_port}", "--database", str(database), "--log-level", "info"],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


async def wait_serving(channel: grpc.aio.Channel, proc: subprocess.Popen[bytes], log: Path,
                       service: str = SERVICE_NAME, attempts: int = 300) -> None:
    """Until ``service`` on ``proc``'s server is SERVING; fails with the process's log if it exits."""
    health = health_pb2_grpc.HealthStub(channel)
    for _ in range(attempts):
        assert proc.poll() is None, f"{service} exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        try:
            resp = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
            if resp.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"{service} never became ready:\n{log.read_text()[-3000:]}")


async def test_killed_agent_resumes_its_job_exactly_once(server: Any, stub: Any, tmp_path: Path) -> None:
    stats = await stub.GetFeatureStatistics(apb.GetFeatureStatisticsRequest(sae_id=SAE))
    wfreq = np.frombuffer(stats.window_frequency, "<f4")
    features = [int(f) for f in np.flatnonzero((wfreq > 0.02) & (wfreq < 0.3))][:16]
    database, log, port = tmp_path / "agent.sqlite3", tmp_path / "agent.log", _free_port()
    request = pb.BatchExplainFeaturesRequest(sae_id=SAE, feature_ids=features, concurrency=1, request_id="kill-me",
                                             skip_triage=True)

    proc = start_agent(port, server.port, database, log)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=channel_options()) as channel:
            await wait_serving(channel, proc, log)
            client = AgentClient(channel)
            op = await client.agent.BatchExplainFeatures(request)
            meta = pb.BatchExplainFeaturesMetadata()
            for _ in range(600):
                (await client.ops.GetOperation(operations_pb2.GetOperationRequest(name=op.name))).metadata.Unpack(meta)
                if meta.done + meta.failed >= 3:
                    break
                await asyncio.sleep(0.05)
            proc.send_signal(signal.SIGKILL)  # no drain, no cleanup: a crash
            proc.wait(timeout=30)
        finished_before = meta.done + meta.failed
        assert 3 <= finished_before < len(features), "the job must be cut in the middle"

        proc = start_agent(port, server.port, database, log)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=channel_options()) as channel:
            await wait_serving(channel, proc, log)
            client = AgentClient(channel)
            again = await client.agent.BatchExplainFeatures(request)  # same key: same job, not a new one
            assert again.name == op.name
            done = await client.ops.WaitOperation(operations_pb2.WaitOperationRequest(
                name=op.name, timeout=duration_pb2.Duration(seconds=240)), timeout=250)
            assert done.done and not done.HasField("error"), done.error
            done.metadata.Unpack(meta)
            assert meta.done + meta.failed == meta.total == len(features)
            response = pb.BatchExplainFeaturesResponse()
            done.response.Unpack(response)
            assert all(response.explanations) and len(set(response.explanations)) == len(features)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)

    db = sqlite3.connect(database)
    job_id = op.name.removeprefix("operations/")
    rows = db.execute("SELECT feature_id FROM explanations WHERE job_id = ?", (job_id,)).fetchall()
    assert sorted(r[0] for r in rows) == sorted(features)  # every feature once: none lost, none twice
    assert db.execute("SELECT COUNT(*) FROM operations").fetchone()[0] == 1
    assert db.execute("SELECT COUNT(*) FROM units WHERE done = 0").fetchone()[0] == 0
    assert "operation_resumed" in log.read_text()
