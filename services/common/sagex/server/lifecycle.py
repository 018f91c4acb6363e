"""Building, running and draining an asyncio gRPC server.

Health: "" (liveness) is SERVING once the port is bound; each service name stays
NOT_SERVING until its ``ready`` callback has run (models loaded and warmed),
which is readiness. On SIGTERM/SIGINT every service turns NOT_SERVING, a short
drain lets load balancers notice, then in-flight calls get ``grace`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import structlog
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from sagex.server.interceptors import ServerInterceptor

log = structlog.get_logger(__name__)

HEALTH_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})


@dataclass(frozen=True)
class ServerOptions:
    """Network options every service shares."""

    host: str = "127.0.0.1"
    port: int = 0  # 0 picks a free port (tests)
    max_message_bytes: int = 16 * 1024 * 1024
    max_concurrent_rpcs: int | None = None
    reflection: bool = True
    drain_seconds: float = 0.5
    grace_seconds: float = 5.0

    def grpc_options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.so_reuseport", 0),
            # Clients reconnect periodically, so new replicas get traffic after a scale-out.
            ("grpc.max_connection_age_ms", 30 * 60 * 1000),
            ("grpc.max_connection_age_grace_ms", 60 * 1000),
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

    async def set_ready(self, ready: bool = True) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for svc in self.services:
            await self.health.set(svc.name, status)

    async def stop(self, options: ServerOptions) -> None:
        await self.health.enter_graceful_shutdown()
        await asyncio.sleep(options.drain_seconds)
        await self.server.stop(options.grace_seconds)


async def start_server(services: Sequence[Service], options: ServerOptions) -> RunningServer:
    """Start a server with the services (NOT_SERVING until ``set_ready``)."""
    server = aio.server(
        interceptors=[ServerInterceptor(quiet_methods=HEALTH_METHODS)],
        options=options.grpc_options(),
        maximum_concurrent_rpcs=options.max_concurrent_rpcs,
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for svc in services:
        svc.register(server)
        await health_servicer.set(svc.name, health_pb2.HealthCheckResponse.NOT_SERVING)
    if options.reflection:
        names = [svc.name for svc in services] + [health.SERVICE_NAME, reflection.SERVICE_NAME]
        reflection.enable_server_reflection(names, server)
    port = server.add_insecure_port(f"{options.host}:{options.port}")
    if port == 0:
        raise OSError(f"cannot bind {options.host}:{options.port}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    log.info("server_started", host=options.host, port=port, services=[s.name for s in services])
    return RunningServer(server, port, health_servicer, services)


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
        await ready()
    await running.set_ready()
    log.info("server_ready", port=running.port)
    await stop.wait()
    log.info("server_stopping")
    await running.stop(options)
    if on_stop is not None:
        await on_stop()
    log.info("server_stopped")


def channel_options(max_message_bytes: int = 16 * 1024 * 1024) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]


__all__ = ["RunningServer", "Service", "ServerOptions", "channel_options", "running_services", "serve_until_signal",
           "start_server"]
