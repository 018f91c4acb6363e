"""Two activation replicas; one is killed (SIGKILL) in the middle of a batch
explain job. The agent's client skips the dead replica and retries the calls it
lost, so the job completes with every feature explained, none failed or lost."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.longrunning import operations_pb2
from google.protobuf import duration_pb2

from sagex.activation.config import ActivationConfig
from sagex.activation.server import SERVICE_NAME as ACTIVATION
from sagex.agent.budget import Budget
from sagex.agent.config import AgentConfig
from sagex.agent.server import running_agent_server
from sagex.api.activation.v1 import activation_service_pb2 as apb
from sagex.api.agent.v1 import agent_service_pb2 as pb
from sagex.server.lifecycle import ServerOptions, channel_options
from tests.agent.conftest import SAE, AgentClient
from tests.agent.test_restart import _free_port, wait_serving

pytestmark = pytest.mark.asyncio(loop_scope="session")


def start_replica(port: int, config: ActivationConfig, tmp: Path, log: Path) -> subprocess.Popen[bytes]:
    """A second activation server over the same corpus and settings as the session's one."""
    toml = tmp / "replica.toml"
    toml.write_text(
        "[activation]\n"
        f'corpus_dir = "{config.corpus_dir}"\nmining_cache_dir = "{tmp / "mining"}"\n'
        f"max_mining_tokens = {config.max_mining_tokens}\nwindow_tokens = {config.window_tokens}\n")
    return subprocess.Popen(
        [sys.executable, "-m", "sagex.cli.main", "serve", "activation", "--port", str(port), "--config", str(toml),
         "--log-level", "warning"],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})


async def test_killing_one_replica_mid_job_loses_no_feature(server: Any, stub: Any, activation_config: ActivationConfig,
                                                            tmp_path: Path) -> None:
    stats = await stub.GetFeatureStatistics(apb.GetFeatureStatisticsRequest(sae_id=SAE))
    wfreq = np.frombuffer(stats.window_frequency, "<f4")
    features = [int(f) for f in np.flatnonzero((wfreq > 0.02) & (wfreq < 0.3))][:8]
    port, log = _free_port(), tmp_path / "replica.log"
    replica = start_replica(port, activation_config, tmp_path, log)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await wait_serving(channel, replica, log, ACTIVATION, attempts=1200)
        config = AgentConfig(activation=(f"127.0.0.1:{server.port}", f"127.0.0.1:{port}"),
                             database=tmp_path / "agent.sqlite3",
                             budget=Budget(max_rounds=2, max_probes_per_hypothesis=4, max_seconds=300),
                             server=ServerOptions(port=0, drain_seconds=0.0, grace_seconds=1.0))
        async with running_agent_server(config) as (agent, runtime):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{agent.port}", options=channel_options()) as channel:
                client = AgentClient(channel)
                op = await client.agent.BatchExplainFeatures(pb.BatchExplainFeaturesRequest(
                    sae_id=SAE, feature_ids=features, concurrency=2, skip_triage=True, request_id="replica-fault"))
                meta = pb.BatchExplainFeaturesMetadata()
                for _ in range(3000):  # until probes are in flight on both replicas, and a feature is done
                    (await client.ops.GetOperation(operations_pb2.GetOperationRequest(name=op.name))
                     ).metadata.Unpack(meta)
                    if meta.done >= 1 and any(f.probes for f in meta.running):
                        break
                    await asyncio.sleep(0.05)
                replica.send_signal(signal.SIGKILL)  # a crash: no drain, connections cut mid-call
                replica.wait(timeout=30)
                finished_before = meta.done + meta.failed
                assert finished_before < len(features), "the replica must die in the middle of the job"

                done = await client.ops.WaitOperation(operations_pb2.WaitOperationRequest(
                    name=op.name, timeout=duration_pb2.Duration(seconds=400)), timeout=410)
                assert done.done and not done.HasField("error"), done.error
                done.metadata.Unpack(meta)
                assert (meta.done, meta.failed, meta.total) == (len(features), 0, len(features))
                response = pb.BatchExplainFeaturesResponse()
                done.response.Unpack(response)
                for name in response.explanations:
                    ex = (await client.agent.GetExplanation(pb.GetExplanationRequest(name=name))).explanation
                    assert not ex.HasField("error") and ex.probes, (ex.feature_id, ex.error.message)
            assert runtime.store.count("explanations") == len(features)  # every feature once, none twice
    finally:
        if replica.poll() is None:
            replica.kill()
            replica.wait(timeout=30)
