"""What the SDK returns: frozen dataclasses, never raw protobuf messages
(each keeps its message as ``raw`` for anything not surfaced here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sagex.api.codec import counted_positions


@dataclass(frozen=True)
class SaeInfo:
    id: str
    hook_name: str
    d_sae: int
    architecture: str
    k: int
    tl_hook_name: str = ""  # the resolved point's TransformerLens name ("" when it has none)
    hf_hook_name: str = ""  # its HF module path and side, e.g. "model.layers.3.mlp.output"
    convention: str = ""  # "hf", "transformer_lens(unprocessed)", "transformer_lens(<flags>)"
    source: str = ""  # folder or release id the server loaded it from
    kind: str = "sae"  # "sae" or "transcoder"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    num_layers: int
    loaded_layers: int
    d_model: int
    device: str
    saes: tuple[SaeInfo, ...]


@dataclass(frozen=True)
class TokenEffect:
    token_id: int
    text: str
    value: float  # logit-lens value


@dataclass(frozen=True)
class FeatureEffects:
    """Output side of a feature: the tokens its decoder direction promotes and suppresses
    through the final norm and unembedding (the logit lens)."""

    feature_id: int
    promoted: tuple[TokenEffect, ...]  # highest first
    suppressed: tuple[TokenEffect, ...]  # lowest first
    decoder_norm: float


@dataclass(frozen=True)
class SteeredText:
    prompt: str
    unsteered: str
    steered: str
    kl: float  # nats, KL(unsteered || steered) of the first generated token


@dataclass(frozen=True)
class SteerResult:
    feature_id: int
    strength: float  # the α used (calibrated when a target KL was asked)
    mean_kl: float
    completions: tuple[SteeredText, ...]
    target_reached: bool = False


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
    shards_done: int = 0  # hash shards complete, by this server or another replica
    shards_total: int = 0  # 0 from a server that does not say

    @property
    def fraction(self) -> float:
        return 1.0 if self.phase == "READY" else self.tokens_done / max(self.tokens_total, 1)


@dataclass(frozen=True)
class TokenActivations:
    """One text: its tokens and, per requested feature, the activation at every token."""

    text: str
    tokens: tuple[str, ...]  # each token's span of ``text``: they join back into it
    special_positions: frozenset[int]
    activations: dict[int, np.ndarray] = field(compare=False)  # feature id -> float32[len(tokens)]
    spans: tuple[tuple[int, int], ...] = ()  # (start, end) character offsets of each token in ``text``

    def max(self, feature: int) -> float:
        """Maximum over non-special tokens after position 0, the service's rule for exemplars."""
        values = self.activations[feature]
        keep = counted_positions(len(self.tokens), self.special_positions)
        return float(values[keep].max()) if keep else 0.0


@dataclass(frozen=True)
class FeatureStatistics:
    """One feature over a corpus split (``Activation.statistics``): what triage reads."""

    feature_id: int
    firing_frequency: float  # fraction of scanned tokens where the feature is > 0
    window_frequency: float  # fraction of corpus windows where it fires at least once
    max_activation: float
    mean_active_activation: float  # mean over the tokens where it fires
    tokens_scanned: int
    windows_scanned: int


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
    confidence: float = 0.0  # 0..1 from the probes' agreement; 0: the policy gives none


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
