"""Two agent processes on one database: each job has one runner while both live, a
replica that dies loses its jobs to the other, and no feature is explained twice."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.longrunning import operations_pb2
from google.protobuf import duration_pb2

from sagex.api.activation.v1 import activation_service_pb2 as apb
from sagex.api.agent.v1 import agent_service_pb2 as pb
from sagex.server.lifecycle import channel_options
from tests.agent.conftest import SAE, AgentClient
from tests.agent.test_restart import _free_port, start_agent, wait_serving

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_two_replicas_share_one_database_without_running_a_feature_twice(server: Any, stub: Any,
                                                                                tmp_path: Path) -> None:
    stats = await stub.GetFeatureStatistics(apb.GetFeatureStatisticsRequest(sae_id=SAE))
    wfreq = np.frombuffer(stats.window_frequency, "<f4")
    features = [int(f) for f in np.flatnonzero((wfreq > 0.02) & (wfreq < 0.3))][:12]
    database = tmp_path / "agent.sqlite3"
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    ports = [_free_port(), _free_port()]
    procs = [start_agent(port, server.port, database, log) for port, log in zip(ports, logs, strict=True)]
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=channel_options()) for port in ports]
    try:
        for channel, proc, log in zip(channels, procs, logs, strict=True):
            await wait_serving(channel, proc, log)
        a, b = (AgentClient(c) for c in channels)
        # One job per replica, and the same request sent to both: one job, whichever answers.
        jobs = [await a.agent.BatchExplainFeatures(pb.BatchExplainFeaturesRequest(
                    sae_id=SAE, feature_ids=features[:6], concurrency=1, skip_triage=True, request_id="on-a")),
                await b.agent.BatchExplainFeatures(pb.BatchExplainFeaturesRequest(
                    sae_id=SAE, feature_ids=features[6:], concurrency=1, skip_triage=True, request_id="on-b"))]
        twice = pb.BatchExplainFeaturesRequest(sae_id=SAE, feature_ids=features[6:], concurrency=1,
                                               skip_triage=True, request_id="on-b")
        assert (await a.agent.BatchExplainFeatures(twice)).name == jobs[1].name

        meta = pb.BatchExplainFeaturesMetadata()
        for _ in range(1200):  # until replica a is in the middle of its job
            (await b.ops.GetOperation(operations_pb2.GetOperationRequest(name=jobs[0].name))).metadata.Unpack(meta)
            if meta.done + meta.failed >= 2:
                break
            await asyncio.sleep(0.05)
        assert "operation_resumed" not in logs[1].read_text()  # b never took a job of a live a
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(timeout=30)
        assert meta.done + meta.failed < 6, "replica a must die in the middle of its job"

        for job in jobs:  # b adopts a's job at its next heartbeat and finishes both
            done = await b.ops.WaitOperation(operations_pb2.WaitOperationRequest(
                name=job.name, timeout=duration_pb2.Duration(seconds=300)), timeout=310)
            assert done.done and not done.HasField("error"), done.error
            done.metadata.Unpack(meta)
            assert meta.done + meta.failed == meta.total == 6
    finally:
        for channel in channels:
            await channel.close()
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)

    db = sqlite3.connect(database)
    for job, expected in zip(jobs, (features[:6], features[6:]), strict=True):
        rows = db.execute("SELECT feature_id FROM explanations WHERE job_id = ?",
                          (job.name.removeprefix("operations/"),)).fetchall()
        assert sorted(r[0] for r in rows) == sorted(expected)  # every feature once: none lost, none twice
    assert db.execute("SELECT COUNT(*) FROM operations").fetchone()[0] == 2
    texts = [log.read_text() for log in logs]
    assert "operation_resumed" in texts[1] and "duplicate_unit_dropped" not in texts[0] + texts[1]
