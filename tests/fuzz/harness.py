"""Running generated calls against a live server and judging the answers.

A ``Call`` is one generated RPC: the method (from the service descriptor), the
request (a list of requests for client streams), a deadline, an optional
``x-request-id`` and, for server streams, how many responses to read before
cancelling. ``execute`` sends it over a real channel with a multicallable built
from the descriptor, so every method of a service can be called the same way.

The property (``judge``): a call never ends INTERNAL, UNKNOWN or UNIMPLEMENTED,
every non-OK status has a message, every ``google.rpc.Status`` inside an OK
response (an operation's or an explanation's error) obeys the same rules, and
every call ends by its deadline. DEADLINE_EXCEEDED and CANCELLED are fine: the
fuzzer uses short deadlines to keep expensive requests bounded.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog
from google.longrunning import operations_pb2
from google.protobuf.descriptor import Descriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.rpc import code_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

BAD_CODES = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNIMPLEMENTED})
# grpc's asyncio client, not the server: when a server ends a bidirectional call (say, with
# INVALID_ARGUMENT for a bad batch) while the client is still writing requests, the failed
# write replaces the server's status with INTERNAL "Internal error from Core". Counted under
# this name; a real INTERNAL from our servers says "quote request id" and is logged by the
# server at error level, which ErrorLog catches.
CLIENT_WRITE_RACE = "INTERNAL_CLIENT_WRITE_RACE"
BAD_EMBEDDED = frozenset({code_pb2.INTERNAL, code_pb2.UNKNOWN, code_pb2.UNIMPLEMENTED})
HANG_GRACE_S = 15.0  # a call still open this long after its deadline is a hang
MAX_RESPONSES = 2_000  # a server stream is cut off here (and cancelled)
CLIENT_CANCELLED = "CANCELLED_BY_CLIENT"  # we cancelled a stream on purpose (not a server status)


@dataclass(frozen=True)
class Call:
    method: MethodDescriptor
    request: Any  # a message or raw bytes, or a list of them for client-streaming methods
    timeout: float
    request_id: str | None = None
    cancel_after: int | None = None  # server streams: cancel after reading this many responses

    @property
    def rpc(self) -> str:
        return self.method.name

    def describe(self, limit: int = 600) -> str:
        """The call in protobuf text format, runs of a repeated piece written ``[piece ×n]``."""
        reqs = self.request if isinstance(self.request, list) else [self.request]
        body = " | ".join(f"bytes:{r.hex()}" if isinstance(r, bytes) else " ".join(str(r).split())
                          for r in reqs) or "<no messages>"
        opts = f"timeout={self.timeout}s request_id={self.request_id!r} cancel_after={self.cancel_after}"
        text = _compact(f"{self.method.full_name}({body}) {opts}")
        return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


_RUN = re.compile(r"(.{1,48}?)\1{4,}", re.DOTALL)


def _compact(text: str) -> str:
    return _RUN.sub(lambda m: f"[{m.group(1)} ×{len(m.group(0)) // len(m.group(1))}]", text)


@dataclass
class Outcome:
    call: Call
    code: str  # a grpc.StatusCode name, or CLIENT_CANCELLED
    message: str
    responses: list[Message] = field(default_factory=list)
    seconds: float = 0.0
    problem: str | None = None


def multicallable(channel: grpc.aio.Channel, method: MethodDescriptor) -> Any:
    path = f"/{method.containing_service.full_name}/{method.name}"
    response = GetMessageClass(method.output_type)
    kind = {(False, False): channel.unary_unary, (False, True): channel.unary_stream,
            (True, False): channel.stream_unary, (True, True): channel.stream_stream}
    factory = kind[(method.client_streaming, method.server_streaming)]
    # Raw bytes (the byte-level pass) go out as they are.
    return factory(path, request_serializer=lambda m: m if isinstance(m, bytes) else m.SerializeToString(),
                   response_deserializer=response.FromString)


async def execute(channel: grpc.aio.Channel, call: Call) -> Outcome:
    """Send ``call`` and collect its answer (never raises for a status)."""
    method = call.method
    metadata = (("x-request-id", call.request_id),) if call.request_id is not None else None
    start = time.perf_counter()
    responses: list[Message] = []
    code, message = "OK", ""
    stub = multicallable(channel, method)
    request = list(call.request) if method.client_streaming else call.request
    try:
        if not method.server_streaming:
            responses.append(await stub(request, timeout=call.timeout, metadata=metadata))
        else:
            stream = stub(request, timeout=call.timeout, metadata=metadata)
            limit = MAX_RESPONSES if call.cancel_after is None else call.cancel_after
            if limit > 0:
                async for response in stream:
                    responses.append(response)
                    if len(responses) >= limit:
                        break
            if stream.cancel():  # stopped reading early: we hang up
                code = CLIENT_CANCELLED
            else:
                status = await stream.code()
                code, message = status.name, await stream.details() or ""
    except grpc.aio.AioRpcError as exc:
        code, message = exc.code().name, exc.details() or ""
        if method.client_streaming and code == "INTERNAL" and message == "Internal error from Core":
            code = CLIENT_WRITE_RACE
    return Outcome(call, code, message, responses, time.perf_counter() - start)


def embedded_statuses(msg: Message) -> Iterable[tuple[str, status_pb2.Status]]:
    """Every google.rpc.Status set inside ``msg`` (operation and explanation errors), with its path."""
    if isinstance(msg, status_pb2.Status):
        yield "", msg
        return
    for f, value in msg.ListFields():
        if f.message_type is None:
            continue
        items = value.values() if f.message_type.GetOptions().map_entry else value if f.is_repeated else [value]
        for i, item in enumerate(items):
            if isinstance(item, Message):
                where = f"{f.name}[{i}]" if f.is_repeated else f.name
                for path, status in embedded_statuses(item):
                    yield f"{where}.{path}".rstrip("."), status


def judge(outcome: Outcome) -> str | None:
    """What is wrong with this answer, or None."""
    if outcome.code in {c.name for c in BAD_CODES}:
        return f"{outcome.code}: {outcome.message!r}"
    if outcome.code not in ("OK", CLIENT_CANCELLED) and not outcome.message.strip():
        return f"{outcome.code} without a message"
    if "metadata size exceeds" in outcome.message:  # the server's error was too big for the client to read
        return f"error status too large to deliver: {outcome.message!r}"
    for response in outcome.responses:
        for path, status in embedded_statuses(response):
            if status.code in BAD_EMBEDDED:
                return f"response {path} is {code_pb2.Code.Name(status.code)}: {status.message!r}"
            if status.code != code_pb2.OK and not status.message.strip():
                return f"response {path} has status {status.code} without a message"
    return None


async def run_call(channel: grpc.aio.Channel, call: Call) -> Outcome:
    """``execute`` under a hang guard, judged."""
    try:
        outcome = await asyncio.wait_for(execute(channel, call), call.timeout + HANG_GRACE_S)
    except TimeoutError:
        outcome = Outcome(call, "HANG", f"no answer {HANG_GRACE_S:.0f}s after the deadline",
                          seconds=call.timeout + HANG_GRACE_S)
        outcome.problem = outcome.message
        return outcome
    outcome.problem = judge(outcome)
    return outcome


FollowUp = Callable[[grpc.aio.Channel, Outcome], Awaitable[list[Outcome]]]


async def cancel_created_operations(channel: grpc.aio.Channel, outcome: Outcome) -> list[Outcome]:
    """A batch request that started an operation: cancel it at once (bounded work) and read
    it back; both answers are judged like any other."""
    if outcome.code != "OK" or outcome.call.method.containing_service.full_name == "google.longrunning.Operations":
        return []
    ops = [r for r in outcome.responses if isinstance(r, operations_pb2.Operation) and r.name]
    service = operations_pb2.DESCRIPTOR.services_by_name["Operations"]
    out = []
    for op in ops:
        for method, request in ((service.methods_by_name["CancelOperation"],
                                 operations_pb2.CancelOperationRequest(name=op.name)),
                                (service.methods_by_name["GetOperation"],
                                 operations_pb2.GetOperationRequest(name=op.name))):
            out.append(await run_call(channel, Call(method, request, timeout=30.0)))
    return out


class ErrorLog:
    """Every structlog event at error level or above while active: our servers log a bug
    that way (rpc_internal_error, feature_crashed, batch_failed, operation_failed, ...),
    also where no client sees it (a background job). For servers in this process."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self._processors: list[Any] | None = None

    def __enter__(self) -> ErrorLog:
        self._processors = structlog.get_config()["processors"]
        self._processors.insert(0, self._record)  # in place: loggers already made share this list
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._processors is not None
        self._processors.remove(self._record)

    def _record(self, logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        if method in ("error", "exception", "critical", "fatal"):
            error = event.get("exc_info")
            what = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else ""
            method_name = event.get("method") or structlog.contextvars.get_contextvars().get("method", "?")
            self.events.append(f"{event.get('event')} in {method_name} {what}".strip())
        return event


@dataclass
class Tally:
    """Answers per RPC and status code, and every problem with its call."""

    service: str
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    problems: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    calls: int = 0
    alive: str | None = None  # None: not checked; "" alive; otherwise why not
    server_errors: list[str] = field(default_factory=list)  # from ErrorLog

    def add(self, outcome: Outcome) -> None:
        self.calls += 1
        self.counts[(outcome.call.rpc, outcome.code)] += 1
        if outcome.problem is not None:
            self.problems.append(outcome)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.server_errors and self.alive in (None, "")

    def rpcs(self) -> list[str]:
        return sorted({rpc for rpc, _ in self.counts})


async def run_calls(channel: grpc.aio.Channel, calls: Sequence[Call], tally: Tally, concurrency: int = 1,
                    follow_up: FollowUp | None = cancel_created_operations,
                    progress: Callable[[Tally], None] | None = None) -> Tally:
    """Every call (``concurrency`` at a time), its follow-ups, all into ``tally``."""
    start = time.perf_counter()
    queue = list(reversed(calls))

    async def worker() -> None:
        while queue:
            outcome = await run_call(channel, queue.pop())
            tally.add(outcome)
            if follow_up is not None:
                for extra in await follow_up(channel, outcome):
                    tally.add(extra)
            if progress is not None:
                progress(tally)

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    tally.seconds += time.perf_counter() - start
    return tally


async def check_alive(channel: grpc.aio.Channel, services: Sequence[str],
                      valid: Callable[[grpc.aio.Channel], Awaitable[None]]) -> str:
    """"" when the server answers health SERVING for "" and ``services`` and ``valid``
    succeeds; otherwise what failed."""
    health = health_pb2_grpc.HealthStub(channel)
    try:
        for name in ("", *services):
            resp = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
            if resp.status != health_pb2.HealthCheckResponse.SERVING:
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
                return f"health of {name or 'the server'!r} is {status}"
        await valid(channel)
    except grpc.aio.AioRpcError as exc:
        return f"{exc.code().name}: {exc.details()}"
    except (AssertionError, TimeoutError) as exc:
        return f"a valid request failed: {exc!r}"
    return ""


def request_class(descriptor: Descriptor) -> type[Message]:
    return GetMessageClass(descriptor)


__all__ = ["BAD_CODES", "CLIENT_CANCELLED", "CLIENT_WRITE_RACE", "Call", "ErrorLog", "Outcome", "Tally",
           "cancel_created_operations", "check_alive", "embedded_statuses", "execute", "judge", "multicallable",
           "run_call", "run_calls"]
