"""Channel options in one place: TLS, token, several replicas with round robin,
retries of idempotent calls, keepalive and message limits."""

from __future__ import annotations

import ipaddress
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc

from sagex.api.credentials import ClientTls, token_from_env

# Reads and operation polling are idempotent; BatchExplainFeatures is too, because
# the SDK always sends a request_id (the server returns the first job for a repeat).
IDEMPOTENT = {
    "sagex.api.activation.v1.ActivationService": ["GetModelInfo", "Tokenize", "MineExemplars", "GetFeatureStatistics"],
    "sagex.api.agent.v1.AgentService": ["GetExplanation", "ListExplanations", "BatchExplainFeatures"],
    "google.longrunning.Operations": ["GetOperation", "ListOperations", "WaitOperation", "CancelOperation"],
}


@dataclass(frozen=True)
class ChannelConfig:
    """How the SDK talks to every service. ``token`` falls back to $SAGE_TOKEN_FILE
    (a file holding it), then $SAGE_TOKEN; ``from_env`` also reads TLS settings."""

    timeout_s: float = 60.0  # default deadline of every call; long calls take their own
    token: str | None = None
    tls: bool = False
    root_certificates: bytes | None = None
    private_key: bytes | None = None  # with certificate_chain: mutual TLS
    certificate_chain: bytes | None = None
    max_retries: int = 3
    keepalive_s: float = 60.0
    max_message_bytes: int = 64 * 1024 * 1024

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **overrides: object) -> ChannelConfig:
        """TLS from $SAGE_TLS (1/true: the system's roots), $SAGE_TLS_CA_FILE, and for
        mutual TLS $SAGE_TLS_CERT_FILE with $SAGE_TLS_KEY_FILE: the variables the
        services read for their own calls to each other (sagex.api.credentials)."""
        tls = ClientTls.from_env(environ)
        ca, key, cert = tls.files()
        values: dict[str, object] = {"tls": tls.tls, "root_certificates": ca, "private_key": key,
                                     "certificate_chain": cert}
        return cls(**{**values, **overrides})  # type: ignore[arg-type]

    def service_config(self) -> str:
        config: dict[str, object] = {"loadBalancingConfig": [{"round_robin": {}}]}
        if self.max_retries > 0:  # gRPC requires maxAttempts >= 2 in a retry policy
            config["methodConfig"] = [{
                "name": [{"service": service, "method": m} for service, methods in IDEMPOTENT.items() for m in methods],
                "retryPolicy": {"maxAttempts": min(self.max_retries + 1, 5), "initialBackoff": "0.2s",
                                "maxBackoff": "5s", "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]},
            }]
        return json.dumps(config)

    def options(self) -> list[tuple[str, object]]:
        return [
            ("grpc.service_config", self.service_config()),
            ("grpc.enable_retries", 1),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.keepalive_time_ms", int(self.keepalive_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 0),
        ]

    def credentials(self) -> grpc.ChannelCredentials | None:
        if not self.tls:
            return None
        return grpc.ssl_channel_credentials(self.root_certificates, self.private_key, self.certificate_chain)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Per call: a fresh request id (it follows the call through every service's
        logs) and the token, if any."""
        out = [("x-request-id", uuid.uuid4().hex)]
        token = self.token or token_from_env()
        if token:
            out.append(("authorization", f"Bearer {token}"))
        return tuple(out)


def target(addresses: str | Sequence[str]) -> str:
    """One gRPC target for one or several replicas ("host:port" each). Several
    replicas must be IP literals (balanced round robin); for host names give one
    DNS name that resolves to all of them ("dns:///activation:50051")."""
    if isinstance(addresses, str):
        addresses = [a.strip() for a in addresses.split(",") if a.strip()]
    if not addresses:
        raise ValueError("give at least one address, e.g. 127.0.0.1:50051")
    for a in addresses:
        host, sep, port = a.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ValueError(f"{a!r} is not host:port")
    if len(addresses) == 1:
        return addresses[0]
    for a in addresses:
        try:
            ipaddress.IPv4Address(a.rpartition(":")[0])
        except ValueError:
            raise ValueError(f"several replicas must be IPv4 literals ({a!r} is not); for host names use one DNS name "
                             "that resolves to every replica, e.g. dns:///activation:50051") from None
    return "ipv4:" + ",".join(addresses)


def sync_channel(addresses: str | Sequence[str], config: ChannelConfig) -> grpc.Channel:
    creds = config.credentials()
    t = target(addresses)
    return grpc.secure_channel(t, creds, config.options()) if creds else grpc.insecure_channel(t, config.options())


def async_channel(addresses: str | Sequence[str], config: ChannelConfig) -> grpc.aio.Channel:
    creds = config.credentials()
    t = target(addresses)
    return (grpc.aio.secure_channel(t, creds, config.options()) if creds
            else grpc.aio.insecure_channel(t, config.options()))
