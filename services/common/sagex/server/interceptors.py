"""The server interceptor: request ids in logs, domain errors as rich statuses,
malformed request bytes as INVALID_ARGUMENT.

Servicers raise ``ServiceError``; this maps it to its status with details. Any
other exception is a bug: it is logged with its traceback and answered INTERNAL
with the request id, never with the traceback.

Request bytes that do not parse (invalid UTF-8 in a string field, a truncated
message, a broken length) would otherwise fail inside grpc before any handler
or interceptor runs (UNKNOWN with the Python exception on unary calls, INTERNAL
on streams) and before the token is checked. The deserializer of every method
is replaced by one that hands on a ``Malformed`` marker instead of raising; the
handler, run after auth and the other guards, answers it INVALID_ARGUMENT
naming the field at fault (``sagex.server.wire``).
"""

from __future__ import annotations

import inspect
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog
from google.protobuf.message import DecodeError
from grpc import aio

from sagex.server.errors import InvalidArgument, ServiceError, internal_status
from sagex.server.wire import find_problem

log = structlog.get_logger("sagex.rpc")

REQUEST_ID_KEY = "x-request-id"


def _request_id(details: grpc.HandlerCallDetails) -> str:
    for key, value in details.invocation_metadata or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and 0 < len(value) <= 128:
            return value
    return uuid.uuid4().hex


class Malformed:
    """Handed to the handler instead of a request whose bytes did not parse."""

    def __init__(self, error: InvalidArgument) -> None:
        self.error = error


def malformed_request(message_class: Any, data: bytes, exc: Exception) -> InvalidArgument:
    """INVALID_ARGUMENT for bytes that are not a valid ``message_class``, naming the field at fault."""
    descriptor = getattr(message_class, "DESCRIPTOR", None)
    kind = descriptor.full_name if descriptor is not None else "request"
    problem = find_problem(descriptor, data) if descriptor is not None else None
    if problem is None:
        return InvalidArgument.one("request", f"the bytes are not a valid {kind} message ({exc})")
    return InvalidArgument.one(problem.field or "request", f"{problem.description} (in a {kind} message)")


def tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserializer`` that returns ``Malformed`` rather than raising on bad bytes."""
    if deserializer is None:
        return None
    message_class = getattr(deserializer, "__self__", None)  # generated code passes Type.FromString

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, ValueError, TypeError) as exc:
            return Malformed(malformed_request(message_class, data, exc))

    return parse


def _parsed(request: Any) -> Any:
    if isinstance(request, Malformed):
        raise request.error
    return request


async def _parsed_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """The stream's requests; the first malformed one ends the call INVALID_ARGUMENT,
    saying which message of the stream it was."""
    number = 0
    async for request in requests:
        number += 1
        if isinstance(request, Malformed):
            error = request.error
            raise InvalidArgument([type(v)(v.field, f"message {number} of the stream: {v.description}")
                                   for v in error.violations])
        yield request


def _checked(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """``handler`` with tolerant parsing and malformed requests answered INVALID_ARGUMENT,
    nothing else (quiet methods: health)."""
    deserializer = tolerant(handler.request_deserializer)

    async def abort(context: aio.ServicerContext, error: InvalidArgument) -> None:
        status = error.to_status()
        await context.abort(status.code, status.details, status.trailing_metadata)

    if handler.unary_unary:
        inner = handler.unary_unary

        async def unary(request: Any, context: aio.ServicerContext) -> Any:
            if isinstance(request, Malformed):
                await abort(context, request.error)
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(unary, deserializer, handler.response_serializer)
    if handler.unary_stream and inspect.isasyncgenfunction(handler.unary_stream):
        inner_stream = handler.unary_stream

        async def stream(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            if isinstance(request, Malformed):
                await abort(context, request.error)
            async for response in inner_stream(request, context):
                yield response

        return grpc.unary_stream_rpc_method_handler(stream, deserializer, handler.response_serializer)
    if handler.unary_stream:  # one that writes with context.write (health's Watch)
        inner_write = handler.unary_stream

        async def writes(request: Any, context: aio.ServicerContext) -> None:
            if isinstance(request, Malformed):
                await abort(context, request.error)
            await inner_write(request, context)

        return grpc.unary_stream_rpc_method_handler(writes, deserializer, handler.response_serializer)
    return handler  # no client-streaming quiet method exists


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
        if handler is None:
            return handler
        if handler_call_details.method in self._quiet:
            return _checked(handler)
        deserializer = tolerant(handler.request_deserializer)
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
                    parsed = _parsed_stream(request) if handler.stream_unary else _parsed(request)
                    response = await inner(parsed, context)
                except Exception as exc:  # mapped to a status in fail()
                    await fail(context, exc, start)
                    raise  # unreachable: abort raises
                log.debug("rpc_ok", ms=_ms(start))
                return response

            factory = (grpc.unary_unary_rpc_method_handler if handler.unary_unary
                       else grpc.stream_unary_rpc_method_handler)
            return factory(unary_response, deserializer, handler.response_serializer)

        inner_stream = handler.unary_stream or handler.stream_stream

        async def stream_response(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            start = await enter(context)
            try:
                parsed = _parsed_stream(request) if handler.stream_stream else _parsed(request)
                async for response in inner_stream(parsed, context):
                    yield response
            except Exception as exc:  # mapped to a status in fail()
                await fail(context, exc, start)
            log.debug("rpc_ok", ms=_ms(start))

        factory = (grpc.unary_stream_rpc_method_handler if handler.unary_stream
                   else grpc.stream_stream_rpc_method_handler)
        return factory(stream_response, deserializer, handler.response_serializer)


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)
