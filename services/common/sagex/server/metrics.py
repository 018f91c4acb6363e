"""Prometheus metrics: per-RPC counters and latencies, served on a metrics port.

One registry per process, prometheus_client's default: a deployed process runs
exactly one service (``sage up`` starts one process each), so nothing needs a
``service`` label, and the domain metrics (``sagex_activation_*`` next to the
batcher, ``sagex_llm_*`` next to the LLM backend) land in the same place
without being handed a registry. The RPC series carry ``grpc_service`` (which
names the service anyway) and ``grpc_method``, with the names and labels of
go-grpc-prometheus so existing dashboards work. Several servers in one process
(tests) share the series; tests compare before and after a call.

The metrics port serves plain HTTP on the gRPC host (``GET /metrics``): counts
and latencies only, no request content, no tokens.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from wsgiref.simple_server import WSGIServer

import grpc
import prometheus_client
from grpc import aio

from sagex.server.handlers import guarded, rpc_type

REGISTRY = prometheus_client.REGISTRY

# From a Tokenize call (milliseconds) to a first mining scan (up to the 30 min mining deadline).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

_LABELS = ("grpc_type", "grpc_service", "grpc_method")
STARTED = prometheus_client.Counter("grpc_server_started_total", "RPCs started on the server.", _LABELS,
                                    registry=REGISTRY)
HANDLED = prometheus_client.Counter("grpc_server_handled_total", "RPCs completed on the server, by status code.",
                                    (*_LABELS, "grpc_code"), registry=REGISTRY)
LATENCY = prometheus_client.Histogram("grpc_server_handling_seconds", "Time from start to status of an RPC.",
                                      _LABELS, buckets=LATENCY_BUCKETS, registry=REGISTRY)
IN_FLIGHT = prometheus_client.Gauge("grpc_server_in_flight", "RPCs being handled now.", _LABELS, registry=REGISTRY)


def split_method(full: str) -> tuple[str, str]:
    """"/pkg.Service/Method" -> ("pkg.Service", "Method")."""
    service, _, method = full.lstrip("/").rpartition("/")
    return service or "unknown", method or full


def _code(context: aio.ServicerContext, exc: BaseException | None) -> str:
    code = context.code()  # set by abort() or set_code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if exc is None:
        return "OK"
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "CANCELLED"
    return "UNKNOWN"  # what grpc answers for an exception that escapes a handler


class MetricsInterceptor(aio.ServerInterceptor):
    """Counts every call the server answers (including refusals by later
    interceptors: put it first) by method and status code, and times it."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        labels = (rpc_type(handler), *split_method(handler_call_details.method))

        @asynccontextmanager
        async def observe(context: aio.ServicerContext) -> AsyncIterator[None]:
            STARTED.labels(*labels).inc()
            in_flight = IN_FLIGHT.labels(*labels)
            in_flight.inc()
            start = time.perf_counter()
            error: BaseException | None = None
            try:
                yield
            except BaseException as exc:
                error = exc
                raise
            finally:
                in_flight.dec()
                LATENCY.labels(*labels).observe(time.perf_counter() - start)
                HANDLED.labels(*labels, _code(context, error)).inc()

        return guarded(handler, observe)


class MetricsEndpoint:
    """``GET /metrics`` on ``host:port`` from a daemon thread (prometheus_client's WSGI server)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host.strip("[]")
        self._httpd: WSGIServer
        self._thread: threading.Thread
        self._httpd, self._thread = prometheus_client.start_http_server(port, addr=self.host, registry=REGISTRY)
        self.port = int(self._httpd.server_address[1])

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


__all__ = ["HANDLED", "IN_FLIGHT", "LATENCY", "REGISTRY", "STARTED", "MetricsEndpoint", "MetricsInterceptor",
           "split_method"]
