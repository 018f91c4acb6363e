"""AgentConfig: the one configuration object of the agent service."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from sagex.agent.budget import Budget
from sagex.agent.triage import TriageConfig
from sagex.llm.backend import LLMConfig
from sagex.server.lifecycle import ServerOptions

DEFAULT_PORT = 50052
POLICIES = ("heuristic", "symbolic", "openai", "auto")
LLM_POLICIES = ("openai", "auto")  # need an LLM model name


@dataclass(frozen=True)
class ExemplarConfig:
    """What the explainer is shown: top exemplars plus quantile and silent contrast windows."""

    top_k: int = 10
    bands: int = 3
    per_band: int = 2
    non_activating: int = 4
    seed: int = 0


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent service needs; validated on construction.

    ``activation`` lists activation-service replicas ("host:port"); calls go round
    robin and fail over. ``database`` is the SQLite file (None: in the cache dir).
    """

    activation: tuple[str, ...] = ("127.0.0.1:50051",)
    database: Path | None = None
    llm: LLMConfig = field(default_factory=LLMConfig)
    default_policy: str = "symbolic"
    budget: Budget = field(default_factory=Budget)
    num_hypotheses: int = 4  # control included
    # policy "auto": a symbolic label scoring below this on fresh windows goes to the LLM
    auto_threshold: float = 0.5
    fire_fraction: float = 0.2  # an activation counts as firing at this fraction of the feature's max
    exemplars: ExemplarConfig = field(default_factory=ExemplarConfig)
    triage: TriageConfig = field(default_factory=TriageConfig)
    # Output side: a steering probe per feature when the activation service steers.
    steering_probe: bool = True
    steer_target_kl: float = 1.0  # nats, first generated token
    default_concurrency: int = 4  # features of one job explained at once
    max_concurrent_features: int = 16  # across all jobs and streams
    max_features_per_job: int = 10_000
    retention_hours: float = 168.0  # finished jobs are deleted this long after (their explanations stay)
    activation_timeout_s: float = 60.0
    mining_timeout_s: float = 1800.0  # the first mining scan of a corpus is slow
    server: ServerOptions = field(default_factory=lambda: ServerOptions(port=DEFAULT_PORT))

    def __post_init__(self) -> None:
        problems = []
        if not self.activation or any(":" not in a for a in self.activation):
            problems.append(f"activation: give one or more host:port addresses, got {list(self.activation)}")
        if self.default_policy not in POLICIES:
            problems.append(f"default_policy: {self.default_policy!r} is not one of {POLICIES}")
        if self.default_policy in LLM_POLICIES and not self.llm.model:
            problems.append(f"llm.model: the {self.default_policy} policy needs a model name")
        problems += [f"budget.{f}: {why}" for f, why in self.budget.problems()]
        problems += self.triage.problems()
        if not 0 < self.steer_target_kl <= 10:
            problems.append(f"steer_target_kl: {self.steer_target_kl} is outside (0, 10] nats")
        if not 3 <= self.num_hypotheses <= 8:
            problems.append(f"num_hypotheses: {self.num_hypotheses} is outside 3..8")
        if not 0 <= self.auto_threshold <= 1:
            problems.append("auto_threshold: must be in [0, 1]")
        if not 0 < self.fire_fraction < 1:
            problems.append("fire_fraction: must be in (0, 1)")
        if not 1 <= self.exemplars.top_k <= 50:
            problems.append("exemplars.top_k: must be in 1..50")
        if not 1 <= self.default_concurrency <= 64 or not 1 <= self.max_concurrent_features <= 256:
            problems.append("default_concurrency (1..64) and max_concurrent_features (1..256) out of range")
        if not self.retention_hours > 0:
            problems.append(f"retention_hours: {self.retention_hours} must be > 0")
        if self.activation_timeout_s <= 0 or self.mining_timeout_s <= 0:
            problems.append("activation_timeout_s and mining_timeout_s: must be > 0")
        if problems:
            raise ValueError("invalid agent config: " + "; ".join(problems))

    @classmethod
    def from_toml(cls, path: Path, **overrides: Any) -> AgentConfig:
        """Read ``[agent]`` and its sub-tables (llm, budget, triage, exemplars, server).
        Relative paths are relative to the file."""
        data = dict(tomllib.loads(Path(path).read_text()).get("agent", {}))
        base = Path(path).parent
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{path}: unknown agent settings {sorted(unknown)}; known: {sorted(known)}")
        nested = {"llm": LLMConfig, "budget": Budget, "triage": TriageConfig, "exemplars": ExemplarConfig}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key == "server":
                kwargs[key] = ServerOptions.from_table(value, base, f"{path}: [agent.server]")
            elif key in nested:
                names = {f.name for f in fields(nested[key])}
                if set(value) - names:
                    raise ValueError(f"{path}: unknown [agent.{key}] settings {sorted(set(value) - names)}; "
                                     f"known: {sorted(names)}")
                if key == "llm" and "cache_dir" in value:
                    value = {**value, "cache_dir": base / value["cache_dir"]}
                kwargs[key] = nested[key](**value)
            elif key == "database":
                kwargs[key] = base / value
            elif key == "activation":
                kwargs[key] = tuple([value] if isinstance(value, str) else value)
            else:
                kwargs[key] = value
        return cls(**{**kwargs, **overrides})

    def with_server(self, **changes: Any) -> AgentConfig:
        return replace(self, server=replace(self.server, **changes))
