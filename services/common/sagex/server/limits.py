"""A cap on the RPCs one server handles at once.

grpc.aio has ``maximum_concurrent_rpcs``, but it counts health checks too (a
busy server would fail its probes and be restarted for being busy) and answers
a bare "Concurrent RPC limit exceeded!". This interceptor exempts health and
answers RESOURCE_EXHAUSTED with the limit, what to do, and RetryInfo.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import grpc
import structlog
from grpc import aio

from sagex.server.errors import ResourceExhausted
from sagex.server.handlers import guarded

log = structlog.get_logger("sagex.limits")


class ConcurrencyLimitInterceptor(aio.ServerInterceptor):
    """At most ``limit`` calls in flight (streams count until they end); ``exempt`` methods are not counted."""

    def __init__(self, limit: int, exempt: frozenset[str] = frozenset(), retry_after_s: float = 1.0) -> None:
        if limit < 1:
            raise ValueError("max_concurrent_rpcs must be at least 1")
        self.limit = limit
        self.active = 0
        self._exempt = exempt
        self._retry_after_s = retry_after_s

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method in self._exempt:
            return handler
        method = handler_call_details.method

        @asynccontextmanager
        async def slot(context: aio.ServicerContext) -> AsyncIterator[None]:
            # Check and take the slot with no await in between: one event loop, no race.
            if self.active >= self.limit:
                log.warning("rpc_rejected_concurrency", method=method, limit=self.limit)
                status = ResourceExhausted(
                    f"the server is handling its limit of {self.limit} concurrent calls (max_concurrent_rpcs); "
                    "retry after a short backoff, or spread calls over more replicas",
                    retry_after_s=self._retry_after_s,
                ).to_status()
                await context.abort(status.code, status.details, status.trailing_metadata)
            self.active += 1
            try:
                yield
            finally:
                self.active -= 1

        return guarded(handler, slot)


__all__ = ["ConcurrencyLimitInterceptor"]
