"""Domain errors and their gRPC form (google.rpc.Status with rich details).

Plain Python raises these; the interceptor turns them into statuses, so business
code never touches a ServicerContext. Messages say what to fix.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

# A status travels in HTTP/2 trailers (percent-encoded message, base64 details), and
# clients drop trailers beyond 8 KiB, losing the error. Whatever a request makes an
# error say, these caps (UTF-8 bytes) keep it deliverable: at most about 6 KiB.
MAX_MESSAGE_BYTES = 768
MAX_VIOLATIONS = 8
MAX_FIELD_BYTES = 128
MAX_DESCRIPTION_BYTES = 256
ECHO_CHARS = 64


def shown(value: str, limit: int = ECHO_CHARS) -> str:
    """``value`` as an error may quote it: at most ``limit`` characters, saying how long it was."""
    return value if len(value) <= limit else f"{value[:limit]}... ({len(value):,} characters)"


def clipped(text: str, max_bytes: int) -> str:
    """``text`` cut to ``max_bytes`` of UTF-8 at a character boundary, marked when cut."""
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    return data[: max_bytes - 4].decode(errors="ignore") + " ..."


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class ServiceError(Exception):
    """An error the caller can act on; carries its gRPC code."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def details(self) -> list[any_pb2.Any]:
        return []

    def to_proto(self) -> status_pb2.Status:
        """The google.rpc.Status, details included (for a status inside a response)."""
        status = status_pb2.Status(code=self.code.value[0], message=clipped(self.message, MAX_MESSAGE_BYTES))
        status.details.extend(self.details())
        return status

    def to_status(self) -> grpc.Status:
        return rpc_status.to_status(self.to_proto())


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: Iterable[FieldViolation]) -> None:
        self.violations = list(violations)
        head = "; ".join(f"{v.field}: {v.description}" for v in self.violations[:MAX_VIOLATIONS])
        more = len(self.violations) - MAX_VIOLATIONS
        super().__init__(head + (f"; and {more:,} more" if more > 0 else ""))

    @classmethod
    def one(cls, field: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field, description)])

    def details(self) -> list[any_pb2.Any]:
        bad = error_details_pb2.BadRequest()
        for v in self.violations[:MAX_VIOLATIONS]:
            bad.field_violations.add(field=clipped(v.field, MAX_FIELD_BYTES),
                                     description=clipped(v.description, MAX_DESCRIPTION_BYTES))
        if len(self.violations) > MAX_VIOLATIONS:
            bad.field_violations.add(field="", description=f"and {len(self.violations) - MAX_VIOLATIONS:,} more")
        return [_pack(bad)]


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, resource_type: str, name: str, hint: str = "") -> None:
        self.resource_type, self.name = resource_type, name
        super().__init__(f"{resource_type} {shown(name)!r} not found" + (f"; {hint}" if hint else ""))

    def details(self) -> list[any_pb2.Any]:
        return [_pack(error_details_pb2.ResourceInfo(resource_type=self.resource_type, resource_name=shown(self.name)))]


class _Retryable(ServiceError):
    def __init__(self, message: str, retry_after_s: float = 0.5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def details(self) -> list[any_pb2.Any]:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(self.retry_after_s * 1000))
        return [_pack(error_details_pb2.RetryInfo(retry_delay=delay))]


class ResourceExhausted(_Retryable):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(_Retryable):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ServiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(ServiceError):
    code = grpc.StatusCode.CANCELLED


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


def internal_proto(request_id: str) -> status_pb2.Status:
    """What a client sees for a bug: no stack trace, a request id to quote."""
    return status_pb2.Status(
        code=code_pb2.INTERNAL, message=f"internal error; quote request id {request_id} when reporting it"
    )


def internal_status(request_id: str) -> grpc.Status:
    return rpc_status.to_status(internal_proto(request_id))
