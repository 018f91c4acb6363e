"""One request id follows a call from the SDK through the agent into the
activation service's logs: the SDK sends x-request-id, the agent's interceptor
binds it for structlog, and the agent's activation client forwards it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import structlog
from structlog.testing import LogCapture

from sagex.activation.assets.paths import EMBEDDED_SAE_ID
from sagex.api.activation.v1 import activation_service_pb2 as apb
from sagex.sdk import AsyncSage, ChannelConfig
from sagex.server import interceptors
from tests.security.helpers import agent_server, server_options

REQUEST_ID = "trace-me-7f3c2a9e"
ACTIVATION = "/sagex.api.activation.v1.ActivationService/"


class FixedRequestId(ChannelConfig):
    """The SDK's config, with a request id the test knows instead of a fresh one per call."""

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return tuple((k, REQUEST_ID if k == "x-request-id" else v) for k, v in super().metadata())


@contextmanager
def captured_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """Every structlog event, debug included, with the bound context variables
    merged in the way the services' own configuration does."""
    saved = structlog.get_config()
    capture = LogCapture()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture],
                        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
                        cache_logger_on_first_use=False)
    # A logger cached by an earlier configure_logging() in this process would bypass the capture.
    monkeypatch.setattr(interceptors, "log", structlog.get_logger("sagex.rpc"))
    try:
        yield capture.entries
    finally:
        structlog.configure(**saved)


async def test_sdk_request_id_reaches_the_activation_service_through_the_agent(
    server: Any, session_stub: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    stats = await session_stub.GetFeatureStatistics(apb.GetFeatureStatisticsRequest(sae_id=EMBEDDED_SAE_ID))
    dead = np.flatnonzero(np.frombuffer(stats.max_activation, "<f4") <= 0)
    assert len(dead), "every feature fires in the test corpus"
    feature = int(dead[0])  # triaged as dead: statistics and exemplars, then a cheap result

    async with agent_server(tmp_path, server_options(), activation=f"127.0.0.1:{server.port}") as agent:
        config = FixedRequestId(max_retries=0, timeout_s=120)
        async with AsyncSage(activation=None, agent=f"127.0.0.1:{agent.port}", scoring=None, config=config) as sage:
            with captured_logs(monkeypatch) as logs:
                explanation = await sage.agent.explain(EMBEDDED_SAE_ID, feature)
    assert explanation.feature_id == feature

    activation_calls = {e["method"].removeprefix(ACTIVATION) for e in logs
                        if e.get("method", "").startswith(ACTIVATION) and e.get("request_id") == REQUEST_ID}
    assert {"GetModelInfo", "GetFeatureStatistics", "MineExemplars"} <= activation_calls, logs
    strangers = {e.get("request_id") for e in logs if e.get("method", "").startswith(ACTIVATION)} - {REQUEST_ID}
    assert not strangers, "every activation call made for this request carries its id"
    assert any(e.get("request_id") == REQUEST_ID and e.get("method", "").endswith("/ExplainFeature") for e in logs)
