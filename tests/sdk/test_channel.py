"""Channel settings of the SDK, without a server."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sagex.sdk._channel import ChannelConfig, target


def test_targets_and_service_config() -> None:
    assert target("127.0.0.1:1") == "127.0.0.1:1"
    assert target(["127.0.0.1:1", "127.0.0.2:2"]) == "ipv4:127.0.0.1:1,127.0.0.2:2"
    with pytest.raises(ValueError, match="host:port"):
        target("localhost")
    with pytest.raises(ValueError, match="one DNS name"):
        target(["a:1", "b:2"])
    config = json.loads(ChannelConfig(max_retries=2).service_config())
    assert config["methodConfig"][0]["retryPolicy"]["maxAttempts"] == 3
    assert {"service": "sagex.api.agent.v1.AgentService", "method": "ExplainFeature"} not in config["methodConfig"][0][
        "name"]  # a stream that has started cannot be retried


def test_sdk_imports_no_service_code() -> None:
    code = ("import sys, sagex.sdk; bad = [m for m in sys.modules if m.split('.')[:2] in "
            "(['sagex','agent'], ['sagex','activation'], ['sagex','server'], ['sagex','llm'], ['sagex','remote'])]; "
            "print(bad); sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
