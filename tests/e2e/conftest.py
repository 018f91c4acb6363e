"""The containerised stack: images built from deploy/docker/Dockerfile with
testcontainers, the three services started as containers on the host network,
bound to 127.0.0.1, configured by the same files compose mounts.

Runs only with SAGE_E2E=1 (`make test-e2e`), and skips, saying why, when no
Docker engine answers or the offline base image cannot be had. No image is ever
pulled: the base is built from Debian packages (deploy/base/build-base.sh) and
testcontainers' Ryuk reaper, whose image would come from a registry, is off;
the fixtures remove what they start.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sagex.activation.server import SERVICE_NAME as ACTIVATION_SERVICE
from sagex.agent.server import SERVICE_NAME as AGENT_SERVICE
from sagex.scoring.server import SERVICE_NAME as SCORING_SERVICE

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DEFAULT_BASE = "sage-base:bookworm"
BASE_IMAGE = os.environ.get("SAGE_E2E_BASE_IMAGE", DEFAULT_BASE)
BUILD_NETWORK = os.environ.get("SAGE_E2E_BUILD_NETWORK", "host")
TARGETS = ("activation", "agent", "scoring")
HEALTH = {"activation": ACTIVATION_SERVICE, "agent": AGENT_SERVICE, "scoring": SCORING_SERVICE}
READY_TIMEOUT_S = {"activation": 600.0, "agent": 180.0, "scoring": 300.0}
MINING_TOKENS = 60_000  # corpus tokens per split: enough for exemplars, quick on two cores
TIMINGS: dict[str, float] = {}  # printed at the end of the session


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: builds the Docker images and runs the stack in containers "
                                       "(SAGE_E2E=1, make test-e2e; needs a Docker engine)")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TIMINGS:
        terminalreporter.write_sep("-", "containerised stack timings")
        for what, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{what:<40} {seconds:8.1f} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    if os.environ.get("SAGE_E2E") != "1":
        pytest.skip("containerised end-to-end tests build images and start containers: run them with "
                    "SAGE_E2E=1 (make test-e2e)")
    import docker

    try:
        client = docker.from_env(timeout=3600)
        client.ping()
    except Exception as exc:  # no socket, no permission, daemon down: all mean "no engine here"
        pytest.skip(f"no Docker engine reachable: docker.from_env() failed ({type(exc).__name__}: {exc})")
    from testcontainers.core.config import testcontainers_config

    testcontainers_config.ryuk_disabled = True  # its image would have to be pulled
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image(docker_client: Any) -> str:
    import docker

    try:
        docker_client.images.get(BASE_IMAGE)
        return BASE_IMAGE
    except docker.errors.ImageNotFound:
        pass
    if BASE_IMAGE != DEFAULT_BASE:
        pytest.skip(f"base image {BASE_IMAGE} is not present, and no registry can be assumed to have it")
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        pytest.skip(f"base image {BASE_IMAGE} is missing and building it needs root and debootstrap "
                    "(apt-get install debootstrap; make base-image)")
    start = time.monotonic()
    subprocess.run([str(DEPLOY / "base" / "build-base.sh"), BASE_IMAGE], check=True, timeout=1800)
    TIMINGS[f"build {BASE_IMAGE}"] = time.monotonic() - start
    return BASE_IMAGE


@pytest.fixture(scope="session")
def images(docker_client: Any, base_image: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """sage-<target>:e2e for each target, built from the real Dockerfile (cached layers make reruns quick)."""
    import docker
    from testcontainers.core.image import DockerImage

    context = tmp_path_factory.mktemp("docker-context")
    subprocess.run([str(DEPLOY / "docker" / "stage-context.sh"), str(context)], check=True, timeout=600,
                   capture_output=True)
    tags = {}
    for target in TARGETS:
        tag = f"sage-{target}:e2e"
        start = time.monotonic()
        image = DockerImage(path=context, tag=tag, dockerfile_path="deploy/docker/Dockerfile", clean_up=False,
                            docker_client_kw={"timeout": 3600}, target=target, buildargs={"BASE_IMAGE": base_image},
                            network_mode=BUILD_NETWORK, forcerm=True, timeout=3600)
        try:
            image.build()
        except docker.errors.BuildError as exc:
            log = "".join(str(chunk.get("stream", chunk.get("error", ""))) for chunk in exc.build_log)
            pytest.fail(f"docker build --target {target} failed: {exc.msg}\n{log[-4000:]}")
        TIMINGS[f"build {tag}"] = time.monotonic() - start
        tags[target] = tag
    return tags


@dataclass
class Stack:
    token: str
    ports: dict[str, int]
    metrics_ports: dict[str, int]
    workdir: Path
    images: dict[str, str]
    volumes: dict[str, str]
    containers: dict[str, Any] = field(default_factory=dict)

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)


def _config(service: str, stack: Stack) -> Path:
    """deploy/docker/config/<service>.toml (what compose mounts) with this run's
    metrics port, token auth on, and a smaller mining scan."""
    text = (DEPLOY / "docker" / "config" / f"{service}.toml").read_text()
    text, found = re.subn(r"(?m)^metrics_port = \d+", f"metrics_port = {stack.metrics_ports[service]}", text)
    assert found == 1, f"deploy/docker/config/{service}.toml should set metrics_port once; update tests/e2e"
    edits = {
        '# auth_tokens_file = "/run/secrets/auth_tokens"': 'auth_tokens_file = "/run/secrets/auth_tokens"',
    }
    if service == "activation":
        edits["max_mining_tokens = 400000"] = f"max_mining_tokens = {MINING_TOKENS}"
    for old, new in edits.items():
        assert old in text, f"deploy/docker/config/{service}.toml no longer has {old!r}; update tests/e2e"
        text = text.replace(old, new)
    path = stack.workdir / f"{service}.toml"
    path.write_text(text)
    path.chmod(0o644)  # read by uid 10001 through the bind mount
    return path


def _wait_ready(stack: Stack, service: str) -> None:
    container = stack.containers[service]
    deadline = time.monotonic() + READY_TIMEOUT_S[service]
    start = time.monotonic()
    with grpc.insecure_channel(stack.address(service)) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            container.get_wrapped_container().reload()
            if container.get_wrapped_container().status == "exited":
                logs = container.get_wrapped_container().logs(tail=60).decode(errors="replace")
                pytest.fail(f"the {service} container exited before it was ready:\n{logs}")
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(service=HEALTH[service]), timeout=2).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    TIMINGS[f"{service} ready after start"] = time.monotonic() - start
                    return
            except grpc.RpcError:
                pass
            time.sleep(1.0)
    logs = container.get_wrapped_container().logs(tail=60).decode(errors="replace")
    pytest.fail(f"{service} not SERVING after {READY_TIMEOUT_S[service]:.0f}s:\n{logs}")


def start_service(stack: Stack, service: str) -> Any:
    """One service's container, hardened as in deploy/compose.yaml, ready when returned."""
    from testcontainers.core.container import DockerContainer

    command = ["serve", service, "--host", "127.0.0.1", "--port", str(stack.ports[service]),
               "--config", f"/etc/sage/{service}.toml", "--log-json"]
    if service in ("agent", "scoring"):
        command += ["--activation", stack.address("activation")]
    if service == "scoring":
        command += ["--agent", stack.address("agent")]
    container = (
        DockerContainer(stack.images[service])
        .with_command(command)
        .with_name(f"sage-e2e-{service}-{uuid.uuid4().hex[:8]}")
        .with_volume_mapping(str(_config(service, stack)), f"/etc/sage/{service}.toml", "ro")
        .with_volume_mapping(str(stack.workdir / "auth_tokens"), "/run/secrets/auth_tokens", "ro")
        .with_volume_mapping(stack.volumes["cache"], "/var/cache/sagex", "rw")
        .with_tmpfs_mount("/tmp")
        .with_kwargs(network="host", user="10001:10001", read_only=True, cap_drop=["ALL"],
                     security_opt=["no-new-privileges:true"])
    )
    if service in ("agent", "scoring"):
        container = (container
                     .with_volume_mapping(str(stack.workdir / "sage_token"), "/run/secrets/sage_token", "ro")
                     .with_env("SAGE_TOKEN_FILE", "/run/secrets/sage_token"))
    if service == "agent":
        container = container.with_volume_mapping(stack.volumes["agent"], "/var/lib/sage", "rw")
    container.start()
    stack.containers[service] = container
    _wait_ready(stack, service)
    return container


def stop_service(stack: Stack, service: str, timeout_s: int = 30) -> int:
    """SIGTERM, as compose and Kubernetes send it; the exit code; the container removed."""
    container = stack.containers.pop(service)
    wrapped = container.get_wrapped_container()
    wrapped.stop(timeout=timeout_s)
    code = int(wrapped.wait(timeout=timeout_s + 30)["StatusCode"])
    if code != 0:
        print(wrapped.logs(tail=40).decode(errors="replace"))
    container.stop()
    return code


@pytest.fixture(scope="session")
def stack(docker_client: Any, images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("stack")
    workdir.chmod(0o755)
    run = uuid.uuid4().hex[:8]
    token = secrets.token_hex(32)
    s = Stack(token=token, ports={t: free_port() for t in TARGETS}, metrics_ports={t: free_port() for t in TARGETS},
              workdir=workdir, images=images,
              volumes={"cache": f"sage-e2e-cache-{run}", "agent": f"sage-e2e-agent-{run}"})
    for name, content in (("auth_tokens", f"# accepted by every server\n{token}\n"), ("sage_token", token + "\n")):
        (workdir / name).write_text(content)
        (workdir / name).chmod(0o644)
    try:
        for service in TARGETS:
            start_service(s, service)
        yield s
    finally:
        for service in reversed(list(s.containers)):
            try:
                stop_service(s, service, timeout_s=10)
            except Exception as exc:  # a cleanup failure must not hide the test's own
                print(f"cleanup of {service} failed: {exc}")
        for volume in s.volumes.values():
            try:
                docker_client.volumes.get(volume).remove(force=True)
            except Exception as exc:
                print(f"cleanup of volume {volume} failed: {exc}")
