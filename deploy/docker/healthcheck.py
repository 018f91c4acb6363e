#!/opt/venv/bin/python
"""sage-healthcheck HOST:PORT [SERVICE]: exit 0 when the gRPC health service of
HOST:PORT reports SERVICE (default "", the whole server) as SERVING, else 1.

The images' HEALTHCHECK and compose's healthcheck use it; Kubernetes probes gRPC
health natively and does not need it.
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(__doc__, file=sys.stderr)
        return 2
    address, service = argv[0], (argv[1] if len(argv) == 2 else "")
    request = health_pb2.HealthCheckRequest(service=service)
    try:
        with grpc.insecure_channel(address) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(request, timeout=3).status
    except grpc.RpcError as exc:
        print(f"{address} {service or '(server)'}: {exc.code().name}", file=sys.stderr)  # type: ignore[attr-defined]
        return 1
    print(f"{address} {service or '(server)'}: {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}")
    return 0 if status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
