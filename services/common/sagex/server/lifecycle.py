"""Building, running and draining an asyncio gRPC server.

Health: "" (the whole server) and each service name stay NOT_SERVING until the
``ready`` callback has run (models loaded and warmed): that is readiness.
Liveness is ``grpc.health.v1.Health`` (``LIVENESS``), SERVING once the port is
bound, so a probe can tell a process still loading from a dead one. On
SIGTERM/SIGINT every service turns NOT_SERVING, a short drain lets load
balancers notice, then in-flight calls get ``grace`` seconds.

Every call passes, in order: metrics (counts every answer, refusals included),
token auth, the concurrency cap, then request ids in logs and errors as
statuses. Health is exempt from auth and from the cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import grpc
import structlog
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from sagex.server.auth import TokenAuthInterceptor, TokenSet, check_exposure, load_tokens
from sagex.server.credentials import server_credentials
from sagex.server.interceptors import ServerInterceptor
from sagex.server.limits import ConcurrencyLimitInterceptor
from sagex.server.metrics import MetricsEndpoint, MetricsInterceptor
from sagex.server.reflection import enable_reflection

log = structlog.get_logger(__name__)

HEALTH_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
# The health name that is SERVING as soon as the port is bound (liveness probes).
LIVENESS = health.SERVICE_NAME


@dataclass(frozen=True)
class ServerOptions:
    """Network, security and limit options every service shares (the
    ``[<service>.server]`` table of its TOML file, where relative paths are
    relative to the file).

    Auth (``sagex.server.auth``): tokens from ``auth_tokens_file`` and
    ``$SAGE_AUTH_TOKENS``; with any configured, every RPC but health needs
    ``authorization: Bearer <token>``. With none, the server refuses to bind a
    non-loopback host unless client certificates are required or
    ``allow_unauthenticated`` is set.
    """

    host: str = "127.0.0.1"
    port: int = 0  # 0 picks a free port (tests)
    max_message_bytes: int = 16 * 1024 * 1024  # each way; a larger message is RESOURCE_EXHAUSTED
    max_concurrent_rpcs: int | None = None  # calls in flight (health exempt); more are RESOURCE_EXHAUSTED
    reflection: bool = True
    drain_seconds: float = 0.5
    grace_seconds: float = 5.0
    auth_tokens_file: Path | None = None  # one token per line, '#' comments; read once at start
    allow_unauthenticated: bool = False  # serve a non-loopback host with no tokens and no client certificates
    tls_cert_file: Path | None = None  # PEM chain; with tls_key_file turns TLS on
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None  # requires client certificates signed by this CA (mutual TLS)
    metrics_port: int | None = None  # Prometheus GET /metrics on host:metrics_port; None or 0: off

    def __post_init__(self) -> None:
        for name in ("auth_tokens_file", "tls_cert_file", "tls_key_file", "tls_client_ca_file"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        problems = []
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            problems.append("tls_cert_file and tls_key_file: give both or neither")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            problems.append("tls_client_ca_file: mutual TLS needs the server's own tls_cert_file and tls_key_file")
        if not 0 <= self.port <= 65535:
            problems.append(f"port: {self.port} is outside 0..65535")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            problems.append(f"metrics_port: {self.metrics_port} is outside 0..65535 (0 or unset: off)")
        if self.metrics_port and self.metrics_port == self.port:
            problems.append("metrics_port: must differ from port")
        if self.max_message_bytes < 1024:
            problems.append(f"max_message_bytes: {self.max_message_bytes} is below 1024")
        if self.max_concurrent_rpcs is not None and self.max_concurrent_rpcs < 1:
            problems.append("max_concurrent_rpcs: must be at least 1 (unset: no limit)")
        if problems:
            raise ValueError("invalid server options: " + "; ".join(problems))

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    @classmethod
    def from_table(cls, table: Mapping[str, Any], base: Path, where: str) -> ServerOptions:
        """From a ``[<service>.server]`` TOML table: unknown keys are refused with the
        known ones listed, and relative file paths are relative to the TOML file."""
        known = {f.name for f in fields(cls)}
        unknown = set(table) - known
        if unknown:
            raise ValueError(f"{where}: unknown settings {sorted(unknown)}; known: {sorted(known)}")
        paths = ("auth_tokens_file", "tls_cert_file", "tls_key_file", "tls_client_ca_file")
        return cls(**{k: base / v if k in paths and v else v for k, v in table.items()})

    def grpc_options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.so_reuseport", 0),
            # Clients reconnect periodically, so new replicas get traffic after a scale-out.
            ("grpc.max_connection_age_ms", 30 * 60 * 1000),
            ("grpc.max_connection_age_grace_ms", 60 * 1000),
            # Clients ping every 60 s (SDK keepalive) during long silent calls such as a first
            # mining scan; the default 5-minute floor answered them with GOAWAY "too_many_pings",
            # which failed MineExemplars after about three minutes.
            ("grpc.http2.min_ping_interval_without_data_ms", 30 * 1000),
        ]


@dataclass
class Service:
    """One servicer to mount: ``register(server)`` adds it, ``name`` is its full
    proto name for health and reflection."""

    name: str
    register: Callable[[aio.Server], None]


@dataclass
class RunningServer:
    server: aio.Server
    port: int
    health: health.aio.HealthServicer
    services: Sequence[Service] = field(default_factory=list)
    metrics: MetricsEndpoint | None = None  # metrics.port: where GET /metrics answers
    auth: str = "none"  # how callers are authenticated: none, tokens, mtls or tokens+mtls

    async def set_ready(self, ready: bool = True) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for svc in self.services:
            await self.health.set(svc.name, status)
        await self.health.set("", status)  # the whole server is ready when every service is

    async def stop(self, options: ServerOptions) -> None:
        try:
            await self.health.enter_graceful_shutdown()
            await asyncio.sleep(options.drain_seconds)
            await self.server.stop(options.grace_seconds)
        finally:
            if self.metrics is not None:
                await asyncio.to_thread(self.metrics.close)


def _interceptors(options: ServerOptions, tokens: TokenSet) -> list[aio.ServerInterceptor]:
    chain: list[aio.ServerInterceptor] = []
    if options.metrics_port:
        chain.append(MetricsInterceptor())
    if len(tokens):
        chain.append(TokenAuthInterceptor(tokens, exempt=HEALTH_METHODS))
    if options.max_concurrent_rpcs is not None:
        chain.append(ConcurrencyLimitInterceptor(options.max_concurrent_rpcs, exempt=HEALTH_METHODS))
    chain.append(ServerInterceptor(quiet_methods=HEALTH_METHODS))
    return chain


async def _start(services: Sequence[Service], options: ServerOptions, tokens: TokenSet,
                 credentials: grpc.ServerCredentials | None) -> tuple[aio.Server, health.aio.HealthServicer, int]:
    """Build, bind and start the aio server: the server, its health servicer and the bound port."""
    server = aio.server(interceptors=_interceptors(options, tokens), options=options.grpc_options())
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for svc in services:
        svc.register(server)
        await health_servicer.set(svc.name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    if options.reflection:
        enable_reflection([svc.name for svc in services] + [health.SERVICE_NAME], server)
    address = f"{options.host}:{options.port}"
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind {address}")
    await server.start()
    return server, health_servicer, port


async def start_server(services: Sequence[Service], options: ServerOptions) -> RunningServer:
    """Start a server with the services (NOT_SERVING until ``set_ready``).

    Raises ValueError for unreadable tokens or certificates and for an open
    server on a non-loopback host; OSError when a port cannot be bound."""
    tokens = load_tokens(options.auth_tokens_file)
    auth = check_exposure(options.host, options.port, tokens, options.tls_client_ca_file is not None,
                          options.allow_unauthenticated)
    credentials = server_credentials(options.tls_cert_file, options.tls_key_file, options.tls_client_ca_file)
    metrics = MetricsEndpoint(options.host, options.metrics_port) if options.metrics_port else None
    try:
        server, health_servicer, port = await _start(services, options, tokens, credentials)
    except BaseException:
        if metrics is not None:
            metrics.close()
        raise
    await health_servicer.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
    log.info("server_started", host=options.host, port=port, services=[s.name for s in services], auth=auth,
             tls="mutual" if options.tls_client_ca_file else options.tls,
             metrics_port=metrics.port if metrics else None)
    return RunningServer(server, port, health_servicer, services, metrics, auth)


@contextlib.asynccontextmanager
async def running_services(
    services: Sequence[Service], options: ServerOptions, on_stop: Callable[[], Awaitable[None]] | None = None
) -> AsyncIterator[RunningServer]:
    """Serve ``services`` (ready at once) until the block ends, then drain, stop
    and run ``on_stop``: the in-process form of serve_until_signal (tests, benchmarks)."""
    running = await start_server(services, options)
    try:
        await running.set_ready()
        yield running
    finally:
        await running.stop(options)
        if on_stop is not None:
            await on_stop()


async def serve_until_signal(
    services: Sequence[Service],
    options: ServerOptions,
    ready: Callable[[], Awaitable[None]] | None = None,
    on_stop: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run until SIGTERM/SIGINT, then drain and stop."""
    running = await start_server(services, options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        try:
            await ready()
        except BaseException:  # refused to load (a bad SAE, say): stop cleanly so only the reason is printed
            await running.stop(options)
            raise
    await running.set_ready()
    log.info("server_ready", port=running.port)
    await stop.wait()
    log.info("server_stopping")
    await running.stop(options)
    if on_stop is not None:
        await on_stop()
    log.info("server_stopped")


def channel_options(max_message_bytes: int = 16 * 1024 * 1024) -> list[tuple[str, object]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        # A DNS name of a headless Service resolves to every replica; round robin
        # spreads calls over them (the default, pick_first, would use one).
        ("grpc.lb_policy_name", "round_robin"),
    ]


__all__ = ["LIVENESS", "RunningServer", "Service", "ServerOptions", "channel_options", "running_services",
           "serve_until_signal", "start_server"]
