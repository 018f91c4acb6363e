"""Interop with a client nobody in the project wrote: Node's @grpc/grpc-js, built from the
contracts as shipped (protos/, protos/third_party/), against the real activation server and
agent on loopback. ``make test-interop`` installs the Node packages (tests/interop/node_modules)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sagex.agent.config import AgentConfig
from sagex.agent.server import running_agent_server
from sagex.api.activation.v1 import activation_service_pb2 as apb
from tests.agent.conftest import SAE, agent_config  # noqa: F401 - fixture

HERE = Path(__file__).parent
NODE = shutil.which("node")
READY = NODE is not None and (HERE / "node_modules" / "@grpc" / "grpc-js").is_dir()

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.skipif(not READY, reason="needs node and the packages of tests/interop/package.json: run "
                                         "`make test-interop` (or `npm ci --prefix tests/interop`)"
                                         if NODE else "node is not installed (apt-get install nodejs npm)"),
]


async def run_node(env: dict[str, str]) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(NODE or "node", str(HERE / "interop.js"), env={**os.environ, **env},
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=300)
    assert proc.returncode == 0, err.decode()
    return json.loads(out.decode().strip().splitlines()[-1])


async def test_node_grpc_js_client(server: Any, session_stub: Any, agent_config: AgentConfig) -> None:  # noqa: F811
    stats = await session_stub.GetFeatureStatistics(apb.GetFeatureStatisticsRequest(sae_id=SAE))
    dead = [int(f) for f in np.flatnonzero(np.frombuffer(stats.window_frequency, "<f4") == 0)[:2]]
    async with running_agent_server(agent_config) as (agent, _):
        seen = await run_node({"SAGE_ACTIVATION": f"127.0.0.1:{server.port}", "SAGE_AGENT": f"127.0.0.1:{agent.port}",
                               "SAE": SAE, "FEATURES": ",".join(map(str, dead))})
    assert seen["health"] == {"activation": "SERVING", "agent": "SERVING"}
    assert SAE in seen["model"]["saes"] and seen["model"]["layers"] == 4
    stream = seen["stream"]
    assert stream["complete"] and stream["joined"] and stream["csr"] and stream["tokens"] > 5
    assert stream["starts"][0] == 0 and stream["starts"][1:] == stream["ends"][:-1]  # contiguous character spans
    assert stream["bad_batch"] == [{"code": 5, "message": stream["bad_batch"][0]["message"]}]  # NOT_FOUND, alone
    assert "no-such-sae" in stream["bad_batch"][0]["message"]
    op = seen["operation"]
    assert op["done"] and op["result"] == "response"
    assert op["response_type"] == "sagex.api.agent.v1.BatchExplainFeaturesResponse"
    assert op["explanations"] == len(dead)
    assert seen["error"]["code"] == 3 and seen["error"]["field"] == "feature_id"
    assert seen["malformed"]["code"] == 3 and seen["malformed"]["field"] == "texts[0]"
