"""The server interceptor: request ids in logs, domain errors as rich statuses.

Servicers raise ``ServiceError``; this maps it to its status with details. Any
other exception is a bug: it is logged with its traceback and answered INTERNAL
with the request id, never with the traceback.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog
from grpc import aio

from sagex.server.errors import ServiceError, internal_status

log = structlog.get_logger("sagex.rpc")

REQUEST_ID_KEY = "x-request-id"


def _request_id(details: grpc.HandlerCallDetails) -> str:
    for key, value in details.invocation_metadata or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and 0 < len(value) <= 128:
            return value
    return uuid.uuid4().hex


class ServerInterceptor(aio.ServerInterceptor):
    """Binds ``request_id`` and ``method`` for structlog and maps errors to statuses."""

    def __init__(self, quiet_methods: frozenset[str] = frozenset()) -> None:
        self._quiet = quiet_methods

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method in self._quiet:
            return handler
        method = handler_call_details.method
        request_id = _request_id(handler_call_details)

        async def enter(context: aio.ServicerContext) -> float:
            structlog.contextvars.clear_contextvars()
            structlog.contextvars.bind_contextvars(request_id=request_id, method=method)
            await context.send_initial_metadata(((REQUEST_ID_KEY, request_id),))
            return time.perf_counter()

        async def fail(context: aio.ServicerContext, exc: Exception, start: float) -> None:
            if isinstance(exc, ServiceError):
                status = exc.to_status()
                log.info("rpc_error", code=exc.code.name, message=exc.message, ms=_ms(start))
            else:
                status = internal_status(request_id)
                log.error("rpc_internal_error", exc_info=exc, ms=_ms(start))
            await context.abort(status.code, status.details, status.trailing_metadata)

        if handler.unary_unary or handler.stream_unary:
            inner = handler.unary_unary or handler.stream_unary

            async def unary_response(request: Any, context: aio.ServicerContext) -> Any:
                start = await enter(context)
                try:
                    response = await inner(request, context)
                except Exception as exc:  # noqa: BLE001 - mapped to a status in fail()
                    await fail(context, exc, start)
                    raise  # unreachable: abort raises
                log.debug("rpc_ok", ms=_ms(start))
                return response

            factory = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
            return factory(unary_response, handler.request_deserializer, handler.response_serializer)

        inner_stream = handler.unary_stream or handler.stream_stream

        async def stream_response(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            start = await enter(context)
            try:
                async for response in inner_stream(request, context):
                    yield response
            except Exception as exc:  # noqa: BLE001 - mapped to a status in fail()
                await fail(context, exc, start)
            log.debug("rpc_ok", ms=_ms(start))

        factory = grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
        return factory(stream_response, handler.request_deserializer, handler.response_serializer)


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)
