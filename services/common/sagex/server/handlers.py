"""Wrapping an RPC method handler of any of the four kinds in one guard.

aio interceptors see the method name and metadata, not the messages; to act
around the call (count it, limit it, refuse it) they return a new handler of
the same kind whose body runs the original inside a guard. The guard is an
async context manager entered with the call's context: raising (or aborting)
before it yields refuses the call without running the handler, and it sees how
the call ended, as an exception or not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import grpc
from grpc import aio

Guard = Callable[[aio.ServicerContext], AbstractAsyncContextManager[None]]


def rpc_type(handler: grpc.RpcMethodHandler) -> str:
    """The Prometheus ``grpc_type`` label: unary, client_stream, server_stream or bidi_stream."""
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    if handler.response_streaming:
        return "server_stream"
    return "unary"


def guarded(handler: grpc.RpcMethodHandler, guard: Guard) -> grpc.RpcMethodHandler:
    """``handler`` with its body run inside ``guard(context)``."""
    if handler.unary_unary or handler.stream_unary:
        inner = handler.unary_unary or handler.stream_unary

        async def unary_response(request: Any, context: aio.ServicerContext) -> Any:
            async with guard(context):
                return await inner(request, context)

        factory = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
        return factory(unary_response, handler.request_deserializer, handler.response_serializer)

    inner_stream = handler.unary_stream or handler.stream_stream

    async def stream_response(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
        async with guard(context):
            async for response in inner_stream(request, context):
                yield response

    factory = grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
    return factory(stream_response, handler.request_deserializer, handler.response_serializer)


def refusing(guard: Guard) -> grpc.RpcMethodHandler:
    """A unary handler that only runs ``guard`` (which must abort): the answer to a
    method the server does not have, when the caller may not learn that either."""

    async def refuse(request: bytes, context: aio.ServicerContext) -> bytes:
        async with guard(context):
            pass
        raise AssertionError("the guard of a refusing handler must abort")

    return grpc.unary_unary_rpc_method_handler(refuse)


__all__ = ["Guard", "guarded", "refusing", "rpc_type"]
