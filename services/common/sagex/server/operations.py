"""Shared rules of the google.longrunning Operations surface the agent and scoring serve."""

from __future__ import annotations

from google.longrunning import operations_pb2
from grpc import aio

from sagex.server.errors import InvalidArgument

MAX_WAIT_S = 600.0


def wait_seconds(request: operations_pb2.WaitOperationRequest, context: aio.ServicerContext,
                 max_wait_s: float = MAX_WAIT_S) -> float:
    """How long a WaitOperation may block: the request's timeout (none: ``max_wait_s``),
    capped by ``max_wait_s`` and ending half a second before the caller's deadline.
    Plain arithmetic on the Duration: ToTimedelta overflows on the huge ones clients send."""
    timeout = request.timeout.seconds + request.timeout.nanos / 1e9 if request.HasField("timeout") else max_wait_s
    if timeout < 0:
        raise InvalidArgument.one("timeout", "must be >= 0")
    remaining = context.time_remaining()
    if remaining is not None:
        timeout = min(timeout, max(remaining - 0.5, 0.0))  # answer before the caller's deadline
    return min(timeout, max_wait_s)
