"""The README's SDK example runs as written against live services."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from sagex.agent.config import AgentConfig
from sagex.agent.server import running_agent_server

pytestmark = pytest.mark.asyncio(loop_scope="session")
README = Path(__file__).resolve().parents[2] / "README.md"


def sdk_example() -> str:
    section = README.read_text().split("## The Python SDK", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's SDK section has no python example"
    return match.group(1)


async def test_readme_example_runs(server: Any, agent_config: AgentConfig) -> None:
    async with running_agent_server(agent_config) as (agent, _):
        env = {**os.environ, "SAGE_ACTIVATION": f"127.0.0.1:{server.port}", "SAGE_AGENT": f"127.0.0.1:{agent.port}"}
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", sdk_example(), env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]
    lines = out.decode().splitlines()
    assert lines[0].startswith("[(") and lines[1].startswith("3880 ") and lines[2].startswith("2347 ")
