"""The agent calling a protected activation service: its token (and client
certificate) come from the environment, as a deployment would mount them.
The activation servers here share the session's loaded model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from sagex.activation.assets.paths import EMBEDDED_SAE_ID
from sagex.activation.config import ActivationConfig
from sagex.activation.server import running_activation_server
from sagex.remote.activation import ActivationClient, ActivationUnavailable
from sagex.sdk import AsyncSage, ChannelConfig, InvalidArgumentError, UnavailableError
from sagex.server.credentials import ClientCredentials
from sagex.server.lifecycle import RunningServer
from tests.security.helpers import OTHER_TOKEN, TOKEN, Certs, agent_server, server_options


@asynccontextmanager
async def activation_server(config: ActivationConfig, runtime: Any, **server: Any) -> AsyncIterator[RunningServer]:
    async with running_activation_server(replace(config, server=server_options(**server)), runtime) as (running, _):
        yield running


def token_file(tmp_path: Path, token: str) -> Path:
    path = tmp_path / f"tokens-{token[-4:]}"
    path.write_text(token + "\n")
    return path


async def explain_out_of_range(agent: RunningServer) -> None:
    """One small agent RPC that needs the activation service: the agent must ask it
    for the SAE's size before it can say the feature id is out of range."""
    config = ChannelConfig(token=OTHER_TOKEN, max_retries=0, timeout_s=30)
    async with AsyncSage(activation=None, agent=f"127.0.0.1:{agent.port}", scoring=None, config=config) as sage:
        await sage.agent.explain(EMBEDDED_SAE_ID, 10**6)


@pytest.mark.parametrize("mutual_tls", [False, True])
async def test_agent_with_credentials_calls_a_protected_activation_server(
    activation_config: ActivationConfig, runtime: Any, tmp_path: Path, certs: Certs, mutual_tls: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tls = {"tls_cert_file": certs.server_cert, "tls_key_file": certs.server_key, "tls_client_ca_file": certs.ca}
    async with activation_server(activation_config, runtime, auth_tokens_file=token_file(tmp_path, TOKEN),
                                 **(tls if mutual_tls else {})) as activation:
        address = f"127.0.0.1:{activation.port}"
        agent_options = server_options(auth_tokens_file=token_file(tmp_path, OTHER_TOKEN))
        if mutual_tls:
            monkeypatch.setenv("SAGE_TLS_CA_FILE", str(certs.ca))
            monkeypatch.setenv("SAGE_TLS_CERT_FILE", str(certs.client_cert))
            monkeypatch.setenv("SAGE_TLS_KEY_FILE", str(certs.client_key))

        # Without the activation service's token the agent cannot check the request.
        async with agent_server(tmp_path, agent_options, activation=address) as agent:
            with pytest.raises(UnavailableError, match="UNAUTHENTICATED"):
                await explain_out_of_range(agent)

        monkeypatch.setenv("SAGE_TOKEN", TOKEN)
        async with agent_server(tmp_path, agent_options, activation=address) as agent:
            with pytest.raises(InvalidArgumentError) as err:
                await explain_out_of_range(agent)
        assert "out of range" in str(err.value), "the agent got the SAE's size from the activation service"


async def test_activation_client_over_mutual_tls(activation_config: ActivationConfig, runtime: Any,
                                                 tmp_path: Path, certs: Certs) -> None:
    async with activation_server(activation_config, runtime, tls_cert_file=certs.server_cert,
                                 tls_key_file=certs.server_key, tls_client_ca_file=certs.ca,
                                 auth_tokens_file=token_file(tmp_path, TOKEN)) as activation:
        address = [f"127.0.0.1:{activation.port}"]
        good = ClientCredentials(token=TOKEN, tls=True, ca_file=certs.ca, cert_file=certs.client_cert,
                                 key_file=certs.client_key)
        client = ActivationClient(address, timeout_s=10, credentials=good)
        try:
            assert EMBEDDED_SAE_ID in await client.sae_ids()
        finally:
            await client.close()
        # No client certificate: the handshake fails, and every attempt with it.
        client = ActivationClient(address, timeout_s=10, attempts=1, backoff_s=0.01,
                                  credentials=replace(good, cert_file=None, key_file=None))
        try:
            with pytest.raises(ActivationUnavailable):
                await client.sae_ids()
        finally:
            await client.close()
