"""`sage up` (and `sage serve all`): the three services on this machine, one
process each, wired to each other, shown with their health; Ctrl-C or SIGTERM
stops them all."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sagex.sdk._channel import ChannelConfig, sync_channel

SERVICES = {
    "activation": "sagex.api.activation.v1.ActivationService",
    "agent": "sagex.api.agent.v1.AgentService",
    "scoring": "sagex.api.scoring.v1.ScoringService",
}


def _status(address: str, service: str) -> str:
    # The environment's TLS settings (SAGE_TLS*), so a stack served with TLS shows as SERVING too.
    with sync_channel(address, ChannelConfig.from_env(max_retries=0)) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                                 timeout=2)
        except grpc.RpcError:
            return "STARTING"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def up(host: str, base_port: int, config: str | None, log_level: str, ready_timeout_s: float = 600.0) -> int:
    ports = {name: base_port + i for i, name in enumerate(SERVICES)}
    addr = {name: f"{host}:{port}" for name, port in ports.items()}
    wiring = {"activation": [], "agent": ["--activation", addr["activation"]],
              "scoring": ["--activation", addr["activation"], "--agent", addr["agent"]]}
    common = ["--host", host, "--log-level", log_level] + (["--config", config] if config else [])
    procs = {name: subprocess.Popen([sys.executable, "-m", f"sagex.{name}", "--port",
                                     str(ports[name]), *wiring[name], *common]) for name in SERVICES}
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    start = time.monotonic()
    pending = set(SERVICES)
    while pending and not stopping and time.monotonic() - start < ready_timeout_s:
        for name in sorted(pending):
            if procs[name].poll() is not None:
                print(f"  {name:<10} {addr[name]:<21} EXITED with code {procs[name].returncode}; see its log above",
                      flush=True)
                stop()
                break
            if _status(addr[name], SERVICES[name]) == "SERVING":
                pending.discard(name)
                print(f"  {name:<10} {addr[name]:<21} SERVING after {time.monotonic() - start:.1f}s", flush=True)
        time.sleep(0.5)
    if pending and not stopping:
        print(f"not ready after {ready_timeout_s:g}s: {', '.join(sorted(pending))}; stopping", flush=True)
        stop()
    if not stopping:
        print("all three services are up; point the SDK or the CLI at them (SAGE_ACTIVATION, SAGE_AGENT, "
              "SAGE_SCORING); Ctrl-C stops them", flush=True)
    codes = [proc.wait() for proc in procs.values()]
    failed = [code for code in codes if code != 0]
    return failed[0] if failed and not stopping else (1 if pending else 0)
