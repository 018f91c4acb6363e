"""deploy/config/<service>.example.toml: the annotated configs for running the
services on a host without containers load with the real config classes."""

from __future__ import annotations

import pytest

from tests.deploy._files import DEPLOY, SERVICES, load_config, service_facts


@pytest.mark.parametrize("name", SERVICES)
def test_host_example_configs_load(name: str) -> None:
    facts = service_facts()[name]
    config = load_config(facts, DEPLOY / "config" / f"{name}.example.toml")
    assert config.server.host == "127.0.0.1" and config.server.port == facts.port
