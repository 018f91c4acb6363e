"""The README's SDK example runs as written against live services, from an environment
that has only the contracts and the SDK installed (no torch, no service)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sagex.agent.config import AgentConfig
from sagex.agent.server import running_agent_server

on_loop = pytest.mark.asyncio(loop_scope="session")  # the async tests share the session's servers
ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def sdk_example() -> str:
    section = README.read_text().split("## The Python SDK", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's SDK section has no python example"
    return match.group(1)


@pytest.fixture(scope="module")
def sdk_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with what the README tells a researcher to install:
    ``pip install ./protos/python ./clients/python`` (copies, so the checkout gets no build output)."""
    tmp = tmp_path_factory.mktemp("sdk-only")
    for folder in ("protos/python", "clients/python"):
        shutil.copytree(ROOT / folder, tmp / folder, ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                                                   "__pycache__"))
    subprocess.run([sys.executable, "-m", "venv", str(tmp / "venv")], check=True)
    python = tmp / "venv" / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", str(tmp / "protos/python"),
                              str(tmp / "clients/python")], capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    return python


def test_the_sdk_installs_without_torch_or_any_service(sdk_python: Path) -> None:
    listed = subprocess.run([str(sdk_python), "-m", "pip", "list", "--format=freeze"], capture_output=True,
                            text=True, check=True).stdout.lower()
    names = {line.split("==")[0] for line in listed.splitlines()}
    assert {"sagex", "sagex-api", "grpcio", "protobuf"} <= names
    assert not names & {"torch", "triton", "sae-lens", "transformers", "sagex-server", "sagex-activation"}
    help_text = subprocess.run([str(sdk_python), "-m", "sagex.cli.main", "--help"], capture_output=True, text=True)
    assert help_text.returncode == 0 and "explain" in help_text.stdout
    serve = subprocess.run([str(sdk_python), "-m", "sagex.cli.main", "serve", "activation"], capture_output=True,
                           text=True)  # the services are not installed here: a clear error, not a traceback
    assert serve.returncode != 0 and "pip install ./services/activation" in serve.stderr
    assert "Traceback" not in serve.stderr


@on_loop
async def test_readme_example_runs(server: Any, agent_config: AgentConfig, sdk_python: Path) -> None:
    async with running_agent_server(agent_config) as (agent, _):
        env = {**os.environ, "SAGE_ACTIVATION": f"127.0.0.1:{server.port}", "SAGE_AGENT": f"127.0.0.1:{agent.port}"}
        env.pop("PYTHONPATH", None)  # only what that environment installed
        proc = await asyncio.create_subprocess_exec(str(sdk_python), "-c", sdk_example(), env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]
    lines = out.decode().splitlines()
    assert lines[0].startswith("[(") and lines[1].startswith("3880 ") and lines[2].startswith("2347 ")
