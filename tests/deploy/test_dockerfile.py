"""deploy/docker: the Dockerfile's targets match the services (ports, `sage serve`
commands the real CLI accepts, health names), run as a numeric non-root user,
copy only what the staged context holds; the entrypoint and the health check
script work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.deploy._files import (
    DEPLOY,
    ROOT,
    SERVICES,
    UID,
    Stage,
    copy_sources,
    parse_dockerfile,
    parse_serve,
    service_facts,
)

TARGETS = {"activation": "activation", "activation-cuda": "activation", "agent": "agent", "scoring": "scoring"}


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return parse_dockerfile()[1]


def test_base_image_is_a_build_arg_defaulting_to_the_offline_base() -> None:
    global_args, stages = parse_dockerfile()
    assert global_args["BASE_IMAGE"] == "sage-base:bookworm"
    assert next(iter(stages.values())).base == "${BASE_IMAGE}"


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_target_serves_its_service_on_its_port(stages: dict[str, Stage], target: str) -> None:
    service = TARGETS[target]
    facts = service_facts()[service]
    stage = stages[target]
    assert stage.all("EXPOSE") == [str(facts.port)]
    entrypoint, cmd = stage.exec_form("ENTRYPOINT"), stage.exec_form("CMD")
    assert entrypoint == ["sage-entrypoint"] and cmd is not None
    # The entrypoint execs `sage "$@"`: the CMD must be a command line the real CLI accepts.
    args = parse_serve(cmd)
    assert (args.command, args.service) == ("serve", service)
    assert args.port == facts.port
    assert args.host == "0.0.0.0"  # inside a container; compose and k8s pass their own
    assert args.config == f"/etc/sage/{service}.toml"
    # ... and the config it names is copied into the image at that path.
    assert any(dest == args.config for _, dest in copy_sources(stage))


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_healthcheck_asks_for_the_registered_health_name(stages: dict[str, Stage], target: str) -> None:
    facts = service_facts()[TARGETS[target]]
    check = stages[target].last("HEALTHCHECK")
    assert check is not None
    argv = check[check.index("CMD") + 3:].strip()
    assert argv.startswith("[")
    assert json.loads(argv) == ["sage-healthcheck", f"127.0.0.1:{facts.port}", facts.health_name]


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_images_run_as_a_numeric_non_root_user(stages: dict[str, Stage], target: str) -> None:
    # Numeric, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
    assert stages[target].last("USER") == f"{UID}:{UID}"


def test_every_copy_source_is_in_the_staged_context(stages: dict[str, Stage], tmp_path: Path) -> None:
    fake_wheel = tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    fake_wheel.write_bytes(b"not a wheel")
    context = tmp_path / "context"
    env = {**os.environ, "TORCH_WHEEL": str(fake_wheel)}
    subprocess.run([str(DEPLOY / "docker" / "stage-context.sh"), str(context)], check=True, env=env,
                   capture_output=True, timeout=120)
    assert (context / "wheels" / fake_wheel.name).is_file()
    for stage in stages.values():
        for sources, _ in copy_sources(stage):
            for source in sources:
                assert (context / source).exists(), f"{stage.name}: COPY {source} is not in the staged context"
    # The staged context holds no virtual environment, caches or build output.
    assert not (context / ".venv").exists()
    assert not list(context.rglob("__pycache__"))


def test_cpu_targets_never_build_the_cuda_stages(stages: dict[str, Stage]) -> None:
    """The classic builder builds every stage before its target: the CUDA stages come last."""
    names = list(stages)
    for target in SERVICES:
        assert names.index(target) < names.index("deps-cuda")


# --- entrypoint and health check -------------------------------------------------


def _entrypoint(tmp_path: Path, env: dict[str, str]) -> str:
    fake = tmp_path / "bin" / "sage"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text('#!/bin/sh\necho "args=$* key=${OPENAI_API_KEY:-unset}"\n')
    fake.chmod(0o755)
    run_env = {"PATH": f"{fake.parent}:/usr/bin:/bin", **env}
    result = subprocess.run(["sh", str(DEPLOY / "docker" / "entrypoint.sh"), "serve", "agent"], env=run_env,
                            capture_output=True, text=True, timeout=30, check=True)
    return result.stdout.strip()


def test_entrypoint_reads_the_api_key_from_its_file(tmp_path: Path) -> None:
    secret = tmp_path / "openai_api_key"
    secret.write_text("sk-test-123\n")
    assert _entrypoint(tmp_path, {"OPENAI_API_KEY_FILE": str(secret)}) == "args=serve agent key=sk-test-123"


def test_entrypoint_keeps_a_given_key_and_ignores_empty_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("")
    assert _entrypoint(tmp_path, {"OPENAI_API_KEY_FILE": str(empty)}) == "args=serve agent key=unset"
    secret = tmp_path / "key"
    secret.write_text("from-file")
    env = {"OPENAI_API_KEY": "from-env", "OPENAI_API_KEY_FILE": str(secret)}
    assert _entrypoint(tmp_path, env) == "args=serve agent key=from-env"


def test_healthcheck_script_reports_serving_and_not_serving() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    script = str(DEPLOY / "docker" / "healthcheck.py")
    try:
        servicer.set("svc", health_pb2.HealthCheckResponse.NOT_SERVING)
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)

        def check(*args: str) -> int:
            return subprocess.run([sys.executable, script, f"127.0.0.1:{port}", *args], capture_output=True,
                                  timeout=30).returncode

        assert check() == 0
        assert check("svc") == 1
        servicer.set("svc", health_pb2.HealthCheckResponse.SERVING)
        assert check("svc") == 0
        assert check("unknown") == 1  # NOT_FOUND
    finally:
        server.stop(None)
    assert subprocess.run([sys.executable, script], capture_output=True, timeout=30).returncode == 2


def test_shell_scripts_parse() -> None:
    for script in (DEPLOY / "docker" / "entrypoint.sh", DEPLOY / "docker" / "stage-context.sh",
                   DEPLOY / "base" / "build-base.sh"):
        shell = "sh" if script.name == "entrypoint.sh" else "bash"
        assert subprocess.run([shell, "-n", str(script)], capture_output=True).returncode == 0, script
        assert os.access(script, os.X_OK), f"{script.relative_to(ROOT)} is not executable"
