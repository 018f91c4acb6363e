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

    def to_status(self) -> grpc.Status:
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        status.details.extend(self.details())
        return rpc_status.to_status(status)


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: Iterable[FieldViolation]) -> None:
        self.violations = list(violations)
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in self.violations))

    @classmethod
    def one(cls, field: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field, description)])

    def details(self) -> list[any_pb2.Any]:
        bad = error_details_pb2.BadRequest()
        for v in self.violations:
            bad.field_violations.add(field=v.field, description=v.description)
        return [_pack(bad)]


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, resource_type: str, name: str, hint: str = "") -> None:
        self.resource_type, self.name = resource_type, name
        super().__init__(f"{resource_type} {name!r} not found" + (f"; {hint}" if hint else ""))

    def details(self) -> list[any_pb2.Any]:
        return [_pack(error_details_pb2.ResourceInfo(resource_type=self.resource_type, resource_name=self.name))]


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


def internal_status(request_id: str) -> grpc.Status:
    """What a client sees for a bug: no stack trace, a request id to quote."""
    status = status_pb2.Status(
        code=code_pb2.INTERNAL, message=f"internal error; quote request id {request_id} when reporting it"
    )
    return rpc_status.to_status(status)
