"""TLS and mutual TLS on a real server, with certificates made for the test by
the openssl CLI, and the SDK as the client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sagex.sdk import AsyncSage, ChannelConfig, UnauthenticatedError, UnavailableError
from sagex.server.credentials import ClientCredentials
from sagex.server.lifecycle import RunningServer, ServerOptions
from tests.security.helpers import TOKEN, Certs, agent_server, server_options


def tls_options(certs: Certs, mutual: bool, **changes: Any) -> ServerOptions:
    return server_options(tls_cert_file=certs.server_cert, tls_key_file=certs.server_key,
                          tls_client_ca_file=certs.ca if mutual else None, **changes)


@pytest_asyncio.fixture(loop_scope="session")
async def tls_agent(tmp_path: Path, certs: Certs) -> AsyncIterator[RunningServer]:
    async with agent_server(tmp_path, tls_options(certs, mutual=False)) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def mtls_agent(tmp_path: Path, certs: Certs) -> AsyncIterator[RunningServer]:
    async with agent_server(tmp_path, tls_options(certs, mutual=True)) as running:
        assert running.auth == "mtls"
        yield running


async def list_explanations(running: RunningServer, **config: Any) -> list[object]:
    channel = ChannelConfig(max_retries=0, timeout_s=10, **config)
    async with AsyncSage(activation=None, agent=f"127.0.0.1:{running.port}", scoring=None, config=channel) as sage:
        return [e async for e in sage.agent.list()]


async def test_tls_refuses_plaintext_and_serves_a_client_that_trusts_the_ca(tls_agent: RunningServer,
                                                                            certs: Certs) -> None:
    with pytest.raises(UnavailableError):
        await list_explanations(tls_agent)  # plaintext
    assert await list_explanations(tls_agent, tls=True, root_certificates=certs.read("ca")) == []


async def test_tls_client_without_the_ca_does_not_trust_the_server(tls_agent: RunningServer, certs: Certs) -> None:
    with pytest.raises(UnavailableError):
        await list_explanations(tls_agent, tls=True, root_certificates=certs.read("rogue_cert"))


async def test_mtls_requires_a_client_certificate_from_the_ca(mtls_agent: RunningServer, certs: Certs) -> None:
    ca = certs.read("ca")
    with pytest.raises(UnavailableError):
        await list_explanations(mtls_agent)  # plaintext
    with pytest.raises(UnavailableError):
        await list_explanations(mtls_agent, tls=True, root_certificates=ca)  # no client certificate
    with pytest.raises(UnavailableError):  # a certificate from another CA
        await list_explanations(mtls_agent, tls=True, root_certificates=ca, private_key=certs.read("rogue_key"),
                                certificate_chain=certs.read("rogue_cert"))
    assert await list_explanations(mtls_agent, tls=True, root_certificates=ca, private_key=certs.read("client_key"),
                                   certificate_chain=certs.read("client_cert")) == []


async def test_tokens_and_tls_together(tmp_path: Path, certs: Certs, tokens_file: Path) -> None:
    async with agent_server(tmp_path, tls_options(certs, mutual=False, auth_tokens_file=tokens_file)) as running:
        assert running.auth == "tokens"
        with pytest.raises(UnauthenticatedError):
            await list_explanations(running, tls=True, root_certificates=certs.read("ca"))
        assert await list_explanations(running, tls=True, root_certificates=certs.read("ca"), token=TOKEN) == []


# --- configuration -----------------------------------------------------------------


def test_server_tls_options_are_validated(certs: Certs) -> None:
    with pytest.raises(ValueError, match="tls_cert_file and tls_key_file: give both"):
        ServerOptions(tls_cert_file=certs.server_cert)
    with pytest.raises(ValueError, match="mutual TLS needs the server's own"):
        ServerOptions(tls_client_ca_file=certs.ca)
    options = ServerOptions(tls_cert_file=str(certs.server_cert), tls_key_file=str(certs.server_key))  # type: ignore[arg-type]
    assert options.tls and options.tls_cert_file == certs.server_cert  # TOML gives strings


async def test_unreadable_certificate_is_a_clear_error(tmp_path: Path, certs: Certs) -> None:
    options = server_options(tls_cert_file=tmp_path / "missing.crt", tls_key_file=certs.server_key)
    with pytest.raises(ValueError, match="tls_cert_file: cannot read"):
        async with agent_server(tmp_path, options):
            pass


def test_client_credentials_from_the_environment(tmp_path: Path, certs: Certs) -> None:
    assert ClientCredentials.from_env({}) == ClientCredentials()
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\n")
    creds = ClientCredentials.from_env({
        "SAGE_TOKEN": "ignored-when-a-file-is-given", "SAGE_TOKEN_FILE": str(token_file),
        "SAGE_TLS_CA_FILE": str(certs.ca), "SAGE_TLS_CERT_FILE": str(certs.client_cert),
        "SAGE_TLS_KEY_FILE": str(certs.client_key), "SAGE_TLS_SERVER_NAME": "localhost",
    })
    assert creds.tls and creds.token == TOKEN and creds.ca_file == certs.ca and creds.server_name == "localhost"
    assert creds.metadata() == (("authorization", f"Bearer {TOKEN}"),)
    assert TOKEN not in repr(creds)
    assert ClientCredentials.from_env({"SAGE_TLS": "true"}).tls
    with pytest.raises(ValueError, match="both a certificate and its key"):
        ClientCredentials.from_env({"SAGE_TLS_CERT_FILE": str(certs.client_cert)})


async def test_sdk_reads_tls_and_token_from_the_environment(tmp_path: Path, certs: Certs, tokens_file: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The variables the services read for their own calls work for the SDK (and so the CLI) too."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    async with agent_server(tmp_path, tls_options(certs, mutual=True, auth_tokens_file=tokens_file)) as running:
        address = f"127.0.0.1:{running.port}"
        monkeypatch.setenv("SAGE_TLS_CA_FILE", str(certs.ca))
        monkeypatch.setenv("SAGE_TLS_CERT_FILE", str(certs.client_cert))
        monkeypatch.setenv("SAGE_TLS_KEY_FILE", str(certs.client_key))
        monkeypatch.setenv("SAGE_TOKEN_FILE", str(token_file))
        async with AsyncSage(activation=None, agent=address, scoring=None) as sage:
            assert [e async for e in sage.agent.list()] == []
        monkeypatch.delenv("SAGE_TLS_KEY_FILE")
        with pytest.raises(ValueError, match="give both or neither"):
            ChannelConfig.from_env()
