"""The client side's environment, read once for everyone who calls a SAGE service.

The SDK, the CLI and the services calling each other (agent and scoring to
activation, scoring to agent) all take their token and TLS settings from the same
variables, so they are read here and nowhere else:

=========================  ======================================================
``SAGE_TOKEN``             bearer token sent as ``authorization`` metadata
``SAGE_TOKEN_FILE``        a file holding the token (a mounted secret); wins over
                           ``SAGE_TOKEN``
``SAGE_TLS``               ``1``/``true``: TLS with the system's root certificates
``SAGE_TLS_CA_FILE``       CA bundle to verify servers with (implies TLS)
``SAGE_TLS_CERT_FILE``     client certificate chain for mutual TLS (with the key)
``SAGE_TLS_KEY_FILE``      its private key
``SAGE_TLS_SERVER_NAME``   the name to verify in server certificates, when the
                           address is an IP the certificate does not list
=========================  ======================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ClientTls", "read_file", "token_from_env"]


def read_file(path: Path, setting: str) -> bytes:
    """A credentials file's bytes; a clear ValueError naming the setting when unreadable."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{setting}: cannot read {path}: {exc.strerror}") from None


def token_from_env(environ: Mapping[str, str] = os.environ) -> str | None:
    """The bearer token: the file named by $SAGE_TOKEN_FILE, else $SAGE_TOKEN. Read at
    each call by long-lived clients, so a rotated secret takes effect without a restart."""
    if environ.get("SAGE_TOKEN_FILE"):
        return read_file(Path(environ["SAGE_TOKEN_FILE"]), "$SAGE_TOKEN_FILE").decode().strip() or None
    return environ.get("SAGE_TOKEN") or None


@dataclass(frozen=True)
class ClientTls:
    """Whether and how a client speaks TLS; certificate files imply TLS."""

    tls: bool = False
    ca_file: Path | None = None  # None with tls: the system's roots
    cert_file: Path | None = None  # with key_file: mutual TLS
    key_file: Path | None = None
    server_name: str | None = None  # overrides the name checked in the server's certificate

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("client TLS: both a certificate and its key ($SAGE_TLS_CERT_FILE and "
                             "$SAGE_TLS_KEY_FILE): give both or neither")
        if self.ca_file is not None or self.cert_file is not None:
            object.__setattr__(self, "tls", True)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ClientTls:
        def path(var: str) -> Path | None:
            return Path(environ[var]) if environ.get(var) else None

        return cls(tls=(environ.get("SAGE_TLS") or "").strip().lower() in ("1", "true", "yes", "on"),
                   ca_file=path("SAGE_TLS_CA_FILE"), cert_file=path("SAGE_TLS_CERT_FILE"),
                   key_file=path("SAGE_TLS_KEY_FILE"), server_name=environ.get("SAGE_TLS_SERVER_NAME") or None)

    def files(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """(root certificates, private key, certificate chain), as grpc.ssl_channel_credentials takes them."""
        return (read_file(self.ca_file, "TLS CA file") if self.ca_file else None,
                read_file(self.key_file, "TLS key file") if self.key_file else None,
                read_file(self.cert_file, "TLS certificate file") if self.cert_file else None)
