"""google.longrunning.Operations over the operations engine: one servicer for every
service that has long-running requests (the agent's batch jobs, scoring's batches)."""

from __future__ import annotations

from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import empty_pb2
from grpc import aio

from sagex.server.errors import FailedPrecondition, InvalidArgument, NotFound, shown
from sagex.server.operations import PREFIX, Operations, wait_seconds


def page_size(requested: int, default: int = 50, limit: int = 500) -> int:
    """A list call's page size: 0 means the default, anything above the limit is capped."""
    if requested < 0:
        raise InvalidArgument.one("page_size", "must be >= 0")
    return min(requested or default, limit)


def stale_request(request_id: str) -> InvalidArgument:
    """A request_id reused for a different request (the store raised StaleRequest)."""
    return InvalidArgument.one("request_id", f"{request_id!r} was already used for a different request; "
                                             "use a new key")


def operation_id(name: str) -> str:
    if not name.startswith(PREFIX) or len(name) == len(PREFIX):
        raise InvalidArgument.one("name", f"{shown(name)!r} is not an operation name; expected 'operations/<id>'")
    return name[len(PREFIX):]


class OperationsServicer(operations_pb2_grpc.OperationsServicer):
    """AIP-151 operations. ``retention_setting`` names the setting that keeps finished
    operations, for the hint of NOT_FOUND (e.g. "retention_hours in [scoring]")."""

    def __init__(self, operations: Operations, retention_setting: str) -> None:
        self.operations = operations
        self.retention_setting = retention_setting

    def _not_found(self, name: str) -> NotFound:
        hours = self.operations.retention_s / 3600
        return NotFound("operation", name, f"it was deleted, or it finished more than {hours:g} hours ago "
                                           f"({self.retention_setting}); list them with ListOperations")

    async def _get(self, name: str) -> operations_pb2.Operation:
        try:
            return await self.operations.get(operation_id(name))
        except KeyError:
            raise self._not_found(name) from None

    async def GetOperation(self, request: operations_pb2.GetOperationRequest, context: aio.ServicerContext
                           ) -> operations_pb2.Operation:
        return await self._get(request.name)

    async def ListOperations(self, request: operations_pb2.ListOperationsRequest, context: aio.ServicerContext
                             ) -> operations_pb2.ListOperationsResponse:
        if request.filter:
            raise InvalidArgument.one("filter", "filters are not supported; leave it empty")
        try:
            ops, token = await self.operations.list(page_size(request.page_size), request.page_token)
        except KeyError:
            raise InvalidArgument.one("page_token", "not a token this server issued (or its operation was "
                                                    "deleted); start again without one") from None
        return operations_pb2.ListOperationsResponse(operations=ops, next_page_token=token)

    async def CancelOperation(self, request: operations_pb2.CancelOperationRequest, context: aio.ServicerContext
                              ) -> empty_pb2.Empty:
        try:
            await self.operations.cancel(operation_id(request.name))
        except KeyError:
            raise self._not_found(request.name) from None
        return empty_pb2.Empty()

    async def DeleteOperation(self, request: operations_pb2.DeleteOperationRequest, context: aio.ServicerContext
                              ) -> empty_pb2.Empty:
        try:
            deleted = await self.operations.delete(operation_id(request.name))
        except KeyError:
            raise self._not_found(request.name) from None
        if not deleted:
            raise FailedPrecondition(f"{request.name} is still running; cancel it first")
        return empty_pb2.Empty()

    async def WaitOperation(self, request: operations_pb2.WaitOperationRequest, context: aio.ServicerContext
                            ) -> operations_pb2.Operation:
        await self._get(request.name)
        timeout = wait_seconds(request, context)
        try:
            return await self.operations.wait(operation_id(request.name), timeout)
        except KeyError:  # deleted while waiting
            raise self._not_found(request.name) from None


__all__ = ["OperationsServicer", "operation_id", "page_size", "stale_request"]
