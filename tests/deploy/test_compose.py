"""deploy/compose.yaml: host networking bound to 127.0.0.1, commands the real CLI
accepts, mounted configs the real loaders accept, health checks on the names the
servers register, secrets as files, named volumes for state, non-root and
read-only containers. Validated against the compose schema when a package on
this machine ships it (Debian's docker-compose), structurally always."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy._files import COMPOSE, COMPOSE_GPU, DEPLOY, SERVICES, UID, load_config, parse_serve, service_facts

# Where Debian's docker-compose package (1.29) keeps the compose-spec JSON schema.
COMPOSE_SCHEMA = Path("/usr/lib/python3/dist-packages/compose/config/compose_spec.json")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> source (a host path or a volume name) of short-syntax volumes."""
    out = {}
    for entry in service.get("volumes", []):
        source, target, *_ = entry.split(":")
        out[target] = source
    return out


@pytest.mark.skipif(not COMPOSE_SCHEMA.is_file(), reason=f"no compose schema on this machine ({COMPOSE_SCHEMA}: "
                    "apt-get install docker-compose)")
def test_compose_files_match_the_compose_schema() -> None:
    import jsonschema

    schema = json.loads(COMPOSE_SCHEMA.read_text())
    for path in (COMPOSE, COMPOSE_GPU):
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)


def test_the_three_services_on_the_host_network(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == set(SERVICES)
    for name, service in compose["services"].items():
        assert service["network_mode"] == "host", name
        assert "ports" not in service, f"{name}: ports are meaningless with host networking"


@pytest.mark.parametrize("name", SERVICES)
def test_command_binds_loopback_on_the_service_port(compose: dict[str, Any], name: str) -> None:
    facts = service_facts()[name]
    service = compose["services"][name]
    assert service["image"].startswith(f"sage-{name}:")
    args = parse_serve(service["command"])
    assert (args.command, args.service) == ("serve", name)
    assert args.host == "127.0.0.1"
    assert args.port == facts.port
    health = service["healthcheck"]["test"]
    assert health == ["CMD", "sage-healthcheck", f"127.0.0.1:{facts.port}", facts.health_name]


@pytest.mark.parametrize("name", SERVICES)
def test_config_is_mounted_read_only_and_loads(compose: dict[str, Any], name: str) -> None:
    facts = service_facts()[name]
    service = compose["services"][name]
    config_path = parse_serve(service["command"]).config
    entries = [v for v in service["volumes"] if v.split(":")[1] == config_path]
    assert len(entries) == 1 and entries[0].endswith(":ro"), entries
    source = (COMPOSE.parent / entries[0].split(":")[0]).resolve()
    assert source.is_file() and source.is_relative_to(DEPLOY)
    config = load_config(facts, source)
    # On one machine the services find each other on loopback, at the ports the commands use.
    ports = {n: parse_serve(s["command"]).port for n, s in compose["services"].items()}
    if name in ("agent", "scoring"):
        assert list(config.activation) == [f"127.0.0.1:{ports['activation']}"]
    if name == "scoring":
        assert config.agent == f"127.0.0.1:{ports['agent']}"


def test_metrics_ports_do_not_collide_on_the_host(compose: dict[str, Any]) -> None:
    taken: list[int] = []
    for name, service in compose["services"].items():
        args = parse_serve(service["command"])
        config_source = COMPOSE.parent / _mounts(service)[args.config]
        server = load_config(service_facts()[name], config_source).server
        taken += [args.port] + ([server.metrics_port] if server.metrics_port else [])
    assert len(taken) == len(set(taken)), taken


@pytest.mark.parametrize("name", SERVICES)
def test_containers_are_hardened(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    assert service["user"] == f"{UID}:{UID}"
    assert service["read_only"] is True
    assert "/tmp" in service["tmpfs"]
    assert service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]


def test_state_lives_in_named_volumes(compose: dict[str, Any]) -> None:
    volumes = set(compose["volumes"])
    agent = compose["services"]["agent"]
    database = load_config(service_facts()["agent"], COMPOSE.parent / _mounts(agent)["/etc/sage/agent.toml"]).database
    assert _mounts(agent)[str(Path(database).parent)] in volumes  # the SQLite file
    for name in SERVICES:  # $SAGEX_CACHE_DIR: mining index, caches, scoring's operations; the root FS is read-only
        assert _mounts(compose["services"][name])["/var/cache/sagex"] in volumes


def test_secrets_are_files_and_never_inline(compose: dict[str, Any]) -> None:
    for name, spec in compose["secrets"].items():
        assert set(spec) == {"file"}, name
        assert (COMPOSE.parent / spec["file"]).resolve().parent == DEPLOY / "secrets"
    ignore = (DEPLOY / "secrets" / ".gitignore").read_text().split()
    assert ignore[0] == "*", "deploy/secrets/ must keep real secrets out of git"
    for name, service in compose["services"].items():
        for secret in service.get("secrets", []):
            assert secret in compose["secrets"], f"{name}: unknown secret {secret}"
        for variable, value in (service.get("environment") or {}).items():
            # Only pointers to the mounted files travel in the environment.
            assert variable.endswith("_FILE") and str(value).startswith("/run/secrets/"), (name, variable)
            assert Path(value).name in service["secrets"], (name, variable)


def test_start_order_waits_for_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["agent"]["depends_on"] == {"activation": {"condition": "service_healthy"}}
    assert services["scoring"]["depends_on"] == {"activation": {"condition": "service_healthy"},
                                                 "agent": {"condition": "service_healthy"}}


def test_gpu_override_reserves_a_gpu_for_the_cuda_image() -> None:
    override = yaml.safe_load(COMPOSE_GPU.read_text())
    activation = override["services"]["activation"]
    assert activation["image"].startswith("sage-activation-cuda:")
    devices = activation["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    config = _mounts(activation)["/etc/sage/activation.toml"]
    assert load_config(service_facts()["activation"], COMPOSE_GPU.parent / config).device == "cuda"

