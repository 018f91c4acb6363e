"""Typed errors: one class per gRPC status code, with the google.rpc details decoded.

    try:
        client.agent.explain("my-sae", 10**9)
    except sagex.sdk.InvalidArgumentError as e:
        print(e.field_violations)   # [("feature_id", "feature ids [...] are out of range; ...")]
"""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


class SageError(Exception):
    """Base of everything the SDK raises for a failed call."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, *, request_id: str = "", field_violations: list[tuple[str, str]] | None = None,
                 retry_after_s: float | None = None, resource: tuple[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id  # the x-request-id the server logged the call under
        self.field_violations = field_violations or []
        self.retry_after_s = retry_after_s
        self.resource = resource  # (type, name) of a missing resource

    def __str__(self) -> str:
        suffix = f" (request id {self.request_id})" if self.request_id else ""
        return f"{self.code.name}: {self.message}{suffix}"


class InvalidArgumentError(SageError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFoundError(SageError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(SageError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPreconditionError(SageError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhaustedError(SageError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class UnavailableError(SageError):
    """The service cannot be reached or is not ready; safe to retry later."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(SageError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class CancelledError(SageError):
    code = grpc.StatusCode.CANCELLED


class AbortedError(SageError):
    code = grpc.StatusCode.ABORTED


class UnauthenticatedError(SageError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(SageError):
    code = grpc.StatusCode.PERMISSION_DENIED


class InternalError(SageError):
    code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[SageError]] = {
    cls.code: cls for cls in (
        InvalidArgumentError, NotFoundError, AlreadyExistsError, FailedPreconditionError, ResourceExhaustedError,
        UnavailableError, DeadlineExceededError, CancelledError, AbortedError, UnauthenticatedError,
        PermissionDeniedError, InternalError,
    )
}


def from_rpc_error(exc: grpc.RpcError) -> SageError:
    """The typed error for a failed call, with BadRequest, RetryInfo and ResourceInfo decoded."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN  # type: ignore[union-attr]
    message = exc.details() if hasattr(exc, "details") else str(exc)  # type: ignore[union-attr]
    request_id = ""
    try:
        metadata = [*(exc.initial_metadata() or ()), *(exc.trailing_metadata() or ())]  # type: ignore[union-attr]
        request_id = next((str(v) for k, v in metadata if k == "x-request-id"), "")
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    except (AttributeError, ValueError):
        status = None
    return _typed(code, message, status, request_id)


def from_status(status: status_pb2.Status, request_id: str = "") -> SageError:
    """The typed error for a google.rpc.Status carried in a response (a failed batch of
    StreamActivations, an operation's error), details decoded as for a failed call."""
    code = next((c for c in grpc.StatusCode if c.value[0] == status.code), grpc.StatusCode.UNKNOWN)
    return _typed(code, status.message, status, request_id)


def _typed(code: grpc.StatusCode, message: str, status: status_pb2.Status | None, request_id: str) -> SageError:
    violations: list[tuple[str, str]] = []
    retry_after = None
    resource = None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            retry_after = info.retry_delay.seconds + info.retry_delay.nanos / 1e9
        elif detail.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
            res = error_details_pb2.ResourceInfo()
            detail.Unpack(res)
            resource = (res.resource_type, res.resource_name)
    cls = _BY_CODE.get(code, SageError)
    error = cls(message or code.name, request_id=request_id, field_violations=violations, retry_after_s=retry_after,
                resource=resource)
    if cls is SageError:
        error.code = code
    return error
