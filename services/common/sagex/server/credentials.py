"""TLS for servers, and the credentials a service presents when it calls another.

Server: ``tls_cert_file`` + ``tls_key_file`` turn TLS on; ``tls_client_ca_file``
also requires every client to present a certificate signed by that CA (mutual
TLS). Files are read once at start (a rolling restart rotates them).

Client (the agent and scoring calling activation): ``ClientCredentials``, read
from the environment by default, so a deployment adds credentials without a
config change and the same variables serve the SDK:

=====================  ======================================================
``SAGE_TOKEN``         bearer token sent as ``authorization`` metadata
``SAGE_TOKEN_FILE``    a file holding the token (a mounted secret); wins over
                       ``SAGE_TOKEN``
``SAGE_TLS``           ``1``/``true``: TLS with the system's root certificates
``SAGE_TLS_CA_FILE``   CA bundle to verify servers with (implies TLS)
``SAGE_TLS_CERT_FILE`` client certificate chain for mutual TLS (with the key)
``SAGE_TLS_KEY_FILE``  its private key
``SAGE_TLS_SERVER_NAME`` the name to verify in server certificates, when the
                       address is an IP the certificate does not list
=====================  ======================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import structlog


def _read(path: Path, setting: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{setting}: cannot read {path}: {exc.strerror}") from None


def server_credentials(cert_file: Path | None, key_file: Path | None,
                       client_ca_file: Path | None) -> grpc.ServerCredentials | None:
    """TLS server credentials (mutual TLS with a client CA), or None for plaintext."""
    if cert_file is None or key_file is None:
        return None
    pair = (_read(key_file, "tls_key_file"), _read(cert_file, "tls_cert_file"))
    if client_ca_file is None:
        return grpc.ssl_server_credentials([pair])
    return grpc.ssl_server_credentials([pair], root_certificates=_read(client_ca_file, "tls_client_ca_file"),
                                       require_client_auth=True)


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


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
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("client TLS: give both a certificate and its key, or neither")
        if self.ca_file is not None or self.cert_file is not None:
            object.__setattr__(self, "tls", True)  # certificate files only make sense over TLS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ClientCredentials:
        token = environ.get("SAGE_TOKEN") or None
        if environ.get("SAGE_TOKEN_FILE"):
            token = _read(Path(environ["SAGE_TOKEN_FILE"]), "$SAGE_TOKEN_FILE").decode().strip() or None
        paths = {name: Path(environ[var]) if environ.get(var) else None for name, var in
                 (("ca_file", "SAGE_TLS_CA_FILE"), ("cert_file", "SAGE_TLS_CERT_FILE"),
                  ("key_file", "SAGE_TLS_KEY_FILE"))}
        return cls(token=token, tls=_flag(environ.get("SAGE_TLS")),
                   server_name=environ.get("SAGE_TLS_SERVER_NAME") or None, **paths)

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
        return grpc.ssl_channel_credentials(
            _read(self.ca_file, "TLS CA file") if self.ca_file else None,
            _read(self.key_file, "TLS key file") if self.key_file else None,
            _read(self.cert_file, "TLS certificate file") if self.cert_file else None,
        )

    def channel(self, target: str, options: Sequence[tuple[str, object]] = ()) -> grpc.aio.Channel:
        """An asyncio channel to ``target`` with these credentials (the token goes per call: ``metadata()``)."""
        creds = self.channel_credentials()
        if creds is None:
            return grpc.aio.insecure_channel(target, options=list(options))
        extra = [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []
        return grpc.aio.secure_channel(target, creds, options=[*options, *extra])


__all__ = ["ClientCredentials", "server_credentials"]
