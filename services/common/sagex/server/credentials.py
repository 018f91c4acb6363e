"""TLS for servers, and the credentials a service presents when it calls another.

Server: ``tls_cert_file`` + ``tls_key_file`` turn TLS on; ``tls_client_ca_file``
also requires every client to present a certificate signed by that CA (mutual
TLS). Files are read once at start (a rolling restart rotates them).

Client (the agent and scoring calling activation): ``ClientCredentials``, read
from the environment by default (``sagex.api.credentials`` reads the variables, for
the SDK too), so a deployment adds credentials without a config change.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import structlog

from sagex.api.credentials import ClientTls, read_file, token_from_env


def server_credentials(cert_file: Path | None, key_file: Path | None,
                       client_ca_file: Path | None) -> grpc.ServerCredentials | None:
    """TLS server credentials (mutual TLS with a client CA), or None for plaintext."""
    if cert_file is None or key_file is None:
        return None
    pair = (read_file(key_file, "tls_key_file"), read_file(cert_file, "tls_cert_file"))
    if client_ca_file is None:
        return grpc.ssl_server_credentials([pair])
    return grpc.ssl_server_credentials([pair], root_certificates=read_file(client_ca_file, "tls_client_ca_file"),
                                       require_client_auth=True)


@dataclass(frozen=True)
class ClientCredentials:
    """What one service presents to another: a bearer token and optional (mutual) TLS.
    Without ``tls`` the token travels as plain metadata, like the SDK's."""

    token: str | None = field(default=None, repr=False)  # never printed
    tls: bool = False
    ca_file: Path | None = None  # None with tls: the system's roots
    cert_file: Path | None = None  # with key_file: mutual TLS
    key_file: Path | None = None
    server_name: str | None = None  # overrides the name checked in the server's certificate

    def __post_init__(self) -> None:
        # ClientTls checks the certificate/key pairing and turns TLS on for certificate files.
        object.__setattr__(self, "tls", self._tls().tls)

    def _tls(self) -> ClientTls:
        return ClientTls(self.tls, self.ca_file, self.cert_file, self.key_file, self.server_name)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ClientCredentials:
        tls = ClientTls.from_env(environ)
        return cls(token=token_from_env(environ), tls=tls.tls, ca_file=tls.ca_file, cert_file=tls.cert_file,
                   key_file=tls.key_file, server_name=tls.server_name)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def call_metadata(self) -> tuple[tuple[str, str], ...]:
        """For a call to another service: the token, and the request id of the call
        being served, so one id follows a request through every service's logs."""
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        return ((("x-request-id", request_id),) if request_id else ()) + self.metadata()

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        if not self.tls:
            return None
        return grpc.ssl_channel_credentials(*self._tls().files())

    def channel(self, target: str, options: Sequence[tuple[str, object]] = ()) -> grpc.aio.Channel:
        """An asyncio channel to ``target`` with these credentials (the token goes per call: ``metadata()``)."""
        creds = self.channel_credentials()
        if creds is None:
            return grpc.aio.insecure_channel(target, options=list(options))
        extra = [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []
        return grpc.aio.secure_channel(target, creds, options=[*options, *extra])


__all__ = ["ClientCredentials", "server_credentials"]
