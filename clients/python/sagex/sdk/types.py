"""What the SDK returns: frozen dataclasses, never raw protobuf messages
(each keeps its message as ``raw`` for anything not surfaced here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SaeInfo:
    id: str
    hook_name: str
    d_sae: int
    architecture: str
    k: int


@dataclass(frozen=True)
class ModelInfo:
    name: str
    num_layers: int
    loaded_layers: int
    d_model: int
    device: str
    saes: tuple[SaeInfo, ...]


@dataclass(frozen=True)
class MiningProgress:
    """Where an exemplar-index build stands (``Activation.build_index``)."""

    sae_id: str
    split: str  # exemplar, heldout or train
    phase: str  # PREPARING, SCANNING or READY
    windows_done: int
    windows_total: int
    tokens_done: int
    tokens_total: int
    tokens_per_second: float
    eta_seconds: float | None  # None until a rate is known
    resumed: bool  # continued from an interrupted build's checkpoint
    cached: bool  # read from the cache: nothing was scanned

    @property
    def fraction(self) -> float:
        return 1.0 if self.phase == "READY" else self.tokens_done / max(self.tokens_total, 1)


@dataclass(frozen=True)
class TokenActivations:
    """One text: its tokens and, per requested feature, the activation at every token."""

    text: str
    tokens: tuple[str, ...]
    special_positions: frozenset[int]
    activations: dict[int, np.ndarray] = field(compare=False)  # feature id -> float32[len(tokens)]

    def max(self, feature: int) -> float:
        """Maximum over non-special tokens after position 0, the service's rule for exemplars."""
        values = self.activations[feature]
        keep = [i for i in range(len(self.tokens)) if i not in self.special_positions and i > 0]
        return float(values[keep].max()) if keep else 0.0


@dataclass(frozen=True)
class Exemplar:
    window_id: str
    text: str
    tokens: tuple[str, ...]
    values: np.ndarray = field(compare=False)  # float32 per token; equality uses the rest
    max_activation: float = 0.0
    max_token_index: int = 0


@dataclass(frozen=True)
class FeatureExemplars:
    feature_id: int
    top: tuple[Exemplar, ...]
    bands: tuple[tuple[float, float, tuple[Exemplar, ...]], ...]
    non_activating: tuple[Exemplar, ...]


@dataclass(frozen=True)
class HypothesisUpdate:
    round: int
    status: str
    reason: str
    text: str


@dataclass(frozen=True)
class Hypothesis:
    id: int
    text: str
    is_control: bool
    status: str  # PENDING | CONFIRMED | REFUTED | REFINED
    history: tuple[str, ...] = ()
    updates: tuple[HypothesisUpdate, ...] = ()


@dataclass(frozen=True)
class Probe:
    id: int
    hypothesis_id: int
    round: int
    text: str
    expected: str  # fires | silent
    tokens: tuple[str, ...]
    values: np.ndarray = field(compare=False)  # float32 per token; equality uses the rest
    max_activation: float = 0.0
    fire_threshold: float = 0.0
    as_expected: bool = False
    rationale: str = ""


@dataclass(frozen=True)
class Label:
    name: str
    description: str


@dataclass(frozen=True)
class Evidence:
    source: str
    activation: float
    hypothesis_id: int
    supports: bool


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    llm_calls: int = 0


@dataclass(frozen=True)
class Explanation:
    name: str
    sae_id: str
    feature_id: int
    description: str
    labels: tuple[Label, ...]
    evidence: tuple[Evidence, ...]
    hypotheses: tuple[Hypothesis, ...]
    probes: tuple[Probe, ...]
    policy: str
    triage_class: str
    stop_reason: str
    rounds: int
    max_activation: float
    usage: Usage
    error: str = ""  # set when the feature could not be explained
    error_code: str = ""
    raw: Any = field(default=None, repr=False, compare=False)

    @property
    def failed(self) -> bool:
        return bool(self.error_code)


@dataclass(frozen=True)
class AgentEvent:
    """One event of a streamed explanation: exactly one field is set."""

    state: str | None = None
    hypothesis: Hypothesis | None = None
    probe: Probe | None = None
    explanation: Explanation | None = None


@dataclass(frozen=True)
class FeatureProgress:
    """A feature a job is explaining right now."""

    feature_id: int
    state: str  # TRIAGE | READING_EXEMPLARS | FORMING_HYPOTHESES | TESTING | REVIEWING | CONCLUDING | ...
    hypotheses: int
    probes: int
    round: int


@dataclass(frozen=True)
class JobProgress:
    name: str
    total: int
    done: int
    failed: int
    usage: Usage
    finished: bool
    error: str = ""
    running: tuple[FeatureProgress, ...] = ()  # live, while the job runs
    mining: MiningProgress | None = None  # the exemplar index the job waits for before its features start

    @property
    def remaining(self) -> int:
        return self.total - self.done - self.failed
