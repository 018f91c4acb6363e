"""ScoringConfig: the one configuration object of the scoring service.

Prefer a scoring LLM (``llm``) from a different model family than the explainers'
so a model does not grade its own writing.
"""

from __future__ import annotations

import tomllib
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from sagex.llm import LLMConfig
from sagex.scoring.baseline import BaselineSettings
from sagex.scoring.heldout import HeldoutSpec
from sagex.scoring.scorers.detection import DetectionSettings
from sagex.scoring.scorers.embedding import EmbeddingSettings
from sagex.scoring.scorers.fuzzing import FuzzingSettings
from sagex.scoring.scorers.generative import GenerativeSettings
from sagex.scoring.scorers.intervention import InterventionSettings
from sagex.scoring.scorers.output import OutputSettings
from sagex.scoring.scorers.predictive import PredictiveSettings
from sagex.server.lifecycle import ServerOptions
from sagex.server.paths import cache_dir

DEFAULT_PORT = 50053
# Output-side scorers are opt-in: intervention needs an activation server with steering on.
DEFAULT_SCORERS = ("generative", "predictive", "detection", "fuzzing", "embedding")
SCORERS = (*DEFAULT_SCORERS, "intervention", "output")
EXPLAINERS = ("single_pass", "sage")


@dataclass(frozen=True)
class ScoringConfig:
    """Everything the scoring service needs; validated on construction.

    ``activation`` lists activation-service replicas ("host:port"). ``agent`` is the
    agent service that CompareExplainers asks for "sage" explanations (None: only
    the built-in single-pass baseline can be compared). ``database`` is the SQLite
    file of the long-running operations (None: ``scoring/scoring.sqlite3`` in the
    cache dir); finished operations are kept ``retention_hours``."""

    activation: tuple[str, ...] = ("127.0.0.1:50051",)
    agent: str | None = None
    database: Path | None = None
    retention_hours: float = 168.0  # finished operations (and their results) are deleted this long after
    llm: LLMConfig = field(default_factory=LLMConfig)
    default_scorers: tuple[str, ...] = DEFAULT_SCORERS  # when a request names none
    heldout: HeldoutSpec = field(default_factory=HeldoutSpec)
    generative: GenerativeSettings = field(default_factory=GenerativeSettings)
    predictive: PredictiveSettings = field(default_factory=PredictiveSettings)
    detection: DetectionSettings = field(default_factory=DetectionSettings)
    fuzzing: FuzzingSettings = field(default_factory=FuzzingSettings)
    embedding: EmbeddingSettings = field(default_factory=EmbeddingSettings)
    intervention: InterventionSettings = field(default_factory=InterventionSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    baseline: BaselineSettings = field(default_factory=BaselineSettings)
    embedding_device: str = "cpu"
    max_explanation_chars: int = 1000  # one cap for every explainer's text (longer requests are refused)
    llm_concurrency: int = 8  # LLM calls in flight per scorer run
    batch_concurrency: int = 4  # explanations of one batch scored at once
    max_batch: int = 1000  # explanations (or features) per long-running request
    activation_timeout_s: float = 60.0
    mining_timeout_s: float = 1800.0
    agent_timeout_s: float = 1800.0
    server: ServerOptions = field(default_factory=lambda: ServerOptions(port=DEFAULT_PORT))

    def __post_init__(self) -> None:
        problems = []
        if not self.activation or any(":" not in a for a in self.activation):
            problems.append(f"activation: give one or more host:port addresses, got {list(self.activation)}")
        if self.agent is not None and ":" not in self.agent:
            problems.append(f"agent: {self.agent!r} is not host:port")
        unknown = [s for s in self.default_scorers if s not in SCORERS]
        if unknown or not self.default_scorers:
            problems.append(f"default_scorers: {unknown or 'empty'}; choose from {', '.join(SCORERS)}")
        problems += [f"heldout.{p}" for p in self.heldout.problems()]
        if self.baseline.max_chars > self.max_explanation_chars:
            problems.append("baseline.max_chars must not exceed max_explanation_chars")
        if not 1 <= self.llm_concurrency <= 256 or not 1 <= self.batch_concurrency <= 64:
            problems.append("llm_concurrency (1..256) and batch_concurrency (1..64) out of range")
        if self.max_explanation_chars < 10 or self.max_batch < 1:
            problems.append("max_explanation_chars must be >= 10 and max_batch >= 1")
        if min(self.activation_timeout_s, self.mining_timeout_s, self.agent_timeout_s) <= 0:
            problems.append("timeouts must be > 0")
        if not self.retention_hours > 0:
            problems.append(f"retention_hours: {self.retention_hours} must be > 0")
        if problems:
            raise ValueError("invalid scoring config: " + "; ".join(problems))

    def settings_of(self, scorer: str) -> Any:
        return getattr(self, scorer)

    def database_path(self) -> Path:
        return self.database if self.database is not None else cache_dir() / "scoring" / "scoring.sqlite3"

    @classmethod
    def from_toml(cls, path: Path, **overrides: Any) -> ScoringConfig:
        """Read ``[scoring]`` and its sub-tables (llm, heldout, one per scorer,
        baseline, server). Relative paths are relative to the file."""
        data = dict(tomllib.loads(Path(path).read_text()).get("scoring", {}))
        if isinstance(data.get("database"), str):
            data["database"] = Path(path).parent / data["database"]
        if "llm" in data and "cache_dir" in data["llm"]:
            data["llm"] = {**data["llm"], "cache_dir": Path(path).parent / data["llm"]["cache_dir"]}
        for key in ("activation", "default_scorers"):
            if isinstance(data.get(key), str | list):
                data[key] = tuple([data[key]] if isinstance(data[key], str) else data[key])
        config = _build(cls, data, f"{path}: [scoring]", Path(path).parent)
        return replace(config, **overrides) if overrides else config

    def with_server(self, **changes: Any) -> ScoringConfig:
        return replace(self, server=replace(self.server, **changes))


def _build(cls: type, data: dict[str, Any], where: str, base: Path) -> Any:
    """A dataclass from a TOML table, nested tables becoming nested dataclasses;
    unknown keys are refused with the known ones listed; ``base`` is the TOML
    file's folder, which relative paths in [scoring.server] are relative to."""
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ValueError(f"{where}: unknown settings {sorted(unknown)}; known: {sorted(known)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        kind = hints[key]
        if kind is ServerOptions and isinstance(value, dict):
            kwargs[key] = ServerOptions.from_table(value, base, f"{where}.{key}")
        elif is_dataclass(kind) and isinstance(value, dict):
            kwargs[key] = _build(kind, value, f"{where}.{key}", base)  # type: ignore[arg-type]
        else:
            kwargs[key] = value
    return cls(**kwargs)


__all__ = ["DEFAULT_PORT", "DEFAULT_SCORERS", "EXPLAINERS", "SCORERS", "ScoringConfig"]
