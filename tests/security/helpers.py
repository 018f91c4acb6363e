"""Helpers shared by the security and observability tests: cheap real servers on
loopback ports, test certificates made with the openssl CLI, a gate RPC that
stays in flight until released, and a scrape of the metrics endpoint."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
from grpc import aio
from prometheus_client.parser import text_string_to_metric_families

from sagex.agent.config import AgentConfig
from sagex.agent.server import build_runtime, services
from sagex.server.lifecycle import RunningServer, ServerOptions, Service, running_services

TOKEN = "sage-test-token-0123456789abcdef"
OTHER_TOKEN = "sage-test-token-fedcba9876543210"
GATE_METHOD = "/sagex.test.Gate/Hold"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_options(**changes: Any) -> ServerOptions:
    return replace(ServerOptions(port=0, drain_seconds=0.0, grace_seconds=1.0), **changes)


class Gate:
    """A unary RPC (bytes in, bytes out) that waits until ``release()``: a call held in flight."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self._open = asyncio.Event()

    def release(self) -> None:
        self._open.set()

    async def _hold(self, request: bytes, context: aio.ServicerContext) -> bytes:
        self.entered.set()
        await self._open.wait()
        return request

    def service(self) -> Service:
        handler = grpc.method_handlers_generic_handler(
            "sagex.test.Gate", {"Hold": grpc.unary_unary_rpc_method_handler(self._hold)})
        return Service("sagex.test.Gate", lambda server: server.add_generic_rpc_handlers((handler,)))


@asynccontextmanager
async def agent_server(tmp_path: Path, options: ServerOptions, activation: str = "127.0.0.1:1",
                       extra: tuple[Service, ...] = ()) -> AsyncIterator[RunningServer]:
    """A real agent server (store, jobs, operations) on loopback; cheap because
    nothing here calls the activation service unless a test asks the agent to."""
    config = AgentConfig(activation=(activation,), database=tmp_path / "agent.sqlite3", server=options)
    rt = build_runtime(config)
    await rt.start()
    async with running_services([*services(rt), *extra], options, on_stop=rt.close) as running:
        yield running


@dataclass(frozen=True)
class Certs:
    """PEM files: a CA, a server certificate for 127.0.0.1/localhost, a client
    certificate from the same CA, and a client certificate from another CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path

    def read(self, name: str) -> bytes:
        return getattr(self, name).read_bytes()


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _ca(root: Path, name: str) -> tuple[Path, Path]:
    key, cert = root / f"{name}.key", root / f"{name}.crt"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
             "-out", cert, "-days", "2", "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return cert, key


def _leaf(root: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    key, csr, cert, ext = (root / f"{name}.{s}" for s in ("key", "csr", "crt", "ext"))
    ext.write_text(extensions)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", csr,
             "-subj", f"/CN={name}")
    _openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial", "-out", cert, "-days", "2",
             "-extfile", ext)
    return cert, key


def make_certs(root: Path) -> Certs:
    root.mkdir(parents=True, exist_ok=True)
    ca, rogue_ca = _ca(root, "test-ca"), _ca(root, "rogue-ca")
    server = _leaf(root, "server", ca, "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                      "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
    client_ext = "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n"
    client = _leaf(root, "client", ca, client_ext)
    rogue = _leaf(root, "rogue", rogue_ca, client_ext)
    return Certs(ca[0], *server, *client, *rogue)


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of ``GET /metrics``, keyed by (sample name, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """One sample's value (0 when the series does not exist yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)
