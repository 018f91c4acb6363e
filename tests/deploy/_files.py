"""The deploy/ files as data, for the offline deployment tests: a small
Dockerfile parser, the YAML documents, and the services' facts taken from the
code (ports, gRPC health names, config classes) rather than copied."""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
COMPOSE_GPU = DEPLOY / "compose.gpu.yaml"
K8S = DEPLOY / "k8s"
SERVICES = ("activation", "agent", "scoring")
UID = 10001  # the images' user; manifests and compose run as it too


@dataclass(frozen=True)
class ServiceFacts:
    name: str
    port: int  # the service's default port, from its config module
    health_name: str  # the gRPC health service name its server registers
    config_cls: type


def service_facts() -> dict[str, ServiceFacts]:
    """Imported from the services themselves, so a renamed service or a moved
    port fails these tests instead of silently breaking the probes."""
    from sagex.activation import config as activation_config
    from sagex.activation import server as activation_server
    from sagex.agent import config as agent_config
    from sagex.agent import server as agent_server
    from sagex.scoring import config as scoring_config
    from sagex.scoring import server as scoring_server

    return {
        "activation": ServiceFacts("activation", activation_config.DEFAULT_PORT, activation_server.SERVICE_NAME,
                                   activation_config.ActivationConfig),
        "agent": ServiceFacts("agent", agent_config.DEFAULT_PORT, agent_server.SERVICE_NAME, agent_config.AgentConfig),
        "scoring": ServiceFacts("scoring", scoring_config.DEFAULT_PORT, scoring_server.SERVICE_NAME,
                                scoring_config.ScoringConfig),
    }


def load_config(facts: ServiceFacts, path: Path) -> Any:
    """The real loader on a TOML file. The activation config checks that its
    model exists, which holds only inside the image, so the model is replaced."""
    overrides: dict[str, Any] = {"model": None} if facts.name == "activation" else {}
    return facts.config_cls.from_toml(path, **overrides)


# --- Dockerfile ----------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (KEYWORD, arguments)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def exec_form(self, keyword: str) -> list[str] | None:
        """CMD / ENTRYPOINT in exec (JSON) form; shell form is refused on purpose:
        with it, SIGTERM goes to /bin/sh and the server never drains."""
        value = self.last(keyword)
        if value is None:
            return None
        parsed = json.loads(value)
        assert isinstance(parsed, list) and all(isinstance(x, str) for x in parsed), f"{keyword} {value}"
        return parsed


def _logical_lines(text: str) -> Iterator[str]:
    """Instructions with their backslash continuations joined and comments dropped."""
    buffer = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if buffer and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        yield (buffer + line).strip()
        buffer = ""
    if buffer.strip():
        yield buffer.strip()


def parse_dockerfile(path: Path = DOCKERFILE) -> tuple[dict[str, str], dict[str, Stage]]:
    """(global ARGs before the first FROM, stages by name)."""
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in _logical_lines(path.read_text()):
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else f"stage{len(stages)}"
            current = stages[name] = Stage(name, words[0])
        elif current is None:
            assert keyword == "ARG", f"only ARG may precede FROM, got {line!r}"
            key, _, default = args.partition("=")
            global_args[key] = default
        else:
            current.instructions.append((keyword, args))
    return global_args, stages


def copy_sources(stage: Stage) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY without --from, in the build context."""
    out = []
    for args in stage.all("COPY"):
        words = shlex.split(args)
        if any(w.startswith("--from") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        out.append((words[:-1], words[-1]))
    return out


# --- YAML ----------------------------------------------------------------------


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def k8s_objects() -> list[dict[str, Any]]:
    """Every object kustomization.yaml applies, in order."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [doc for resource in kustomization["resources"] for doc in yaml_documents(K8S / resource)]


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def parse_serve(argv: list[str]) -> argparse.Namespace:
    """A deployed command line as the real programs read it: `sage serve SERVICE FLAGS` by the
    CLI, then FLAGS by that service's own parser (`python -m sagex.SERVICE`)."""
    from sagex.cli.main import build_parser

    outer = build_parser().parse_args(argv)
    assert outer.command == "serve", argv
    inner = importlib.import_module(f"sagex.{outer.service}.__main__").build_parser().parse_args(outer.flags)
    return argparse.Namespace(command=outer.command, service=outer.service, **vars(inner))
