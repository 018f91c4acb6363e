"""The agent's structured state: every prompt and every output is built from
this, never from a chat history."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from sagex.remote.activation import Exemplars, FeatureStats, LensTokens
from sagex.remote.traces import Trace


class Phase(enum.Enum):
    """Where a run is; the names match the AgentState enum of the API."""

    TRIAGE = "TRIAGE"
    READING_EXEMPLARS = "READING_EXEMPLARS"
    FORMING_HYPOTHESES = "FORMING_HYPOTHESES"
    TESTING = "TESTING"
    REVIEWING = "REVIEWING"
    CONCLUDING = "CONCLUDING"
    DONE = "DONE"
    FAILED = "FAILED"


class Status(enum.Enum):
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    REFUTED = "REFUTED"
    REFINED = "REFINED"

    @property
    def open(self) -> bool:
        return self in (Status.PENDING, Status.REFINED)


class Expect(enum.Enum):
    FIRES = "fires"
    SILENT = "silent"


@dataclass(frozen=True)
class FeatureView:
    """What the explainer may see of a feature: statistics and exemplar-split
    examples. Held-out data reserved for scoring never reaches this object."""

    sae_id: str
    feature_id: int
    stats: FeatureStats
    exemplars: Exemplars
    fire_fraction: float
    lens: LensTokens | None = None  # output side: tokens the decoder direction promotes/suppresses

    @property
    def scale(self) -> float:
        """G: the feature's maximum activation, the unit of every threshold."""
        top = max((t.max_activation for t in self.exemplars.top), default=0.0)
        return max(self.stats.max_activation, top)

    @property
    def fire_threshold(self) -> float:
        return self.fire_fraction * self.scale

    def fires(self, activation: float) -> bool:
        return self.scale > 0 and activation >= self.fire_threshold


@dataclass(frozen=True)
class Update:
    round: int
    status: Status
    reason: str
    text: str


@dataclass
class Hypothesis:
    id: int
    text: str
    is_control: bool
    status: Status = Status.PENDING
    history: list[str] = field(default_factory=list)  # earlier texts, oldest first
    updates: list[Update] = field(default_factory=list)
    # Policy-private facts the hypothesis was built from (e.g. the candidate token);
    # the heuristic policy reads them, prompts never show them.
    facts: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProbeDraft:
    hypothesis_id: int
    text: str
    expected: Expect
    rationale: str = ""
    # The characters of ``text`` the expectation is about (a minimal pair's swapped word);
    # None: anywhere in it. A policy that sets it reads the probe there.
    focus: tuple[int, int] | None = None


@dataclass(frozen=True)
class Probe:
    id: int
    round: int
    draft: ProbeDraft
    trace: Trace
    fire_threshold: float

    @property
    def activation(self) -> float:
        return self.trace.max_activation

    @property
    def fired(self) -> bool:
        return self.activation >= self.fire_threshold and self.activation > 0

    @property
    def as_expected(self) -> bool:
        return self.fired == (self.draft.expected is Expect.FIRES)


@dataclass(frozen=True)
class Verdict:
    hypothesis_id: int
    status: Status
    reason: str
    new_text: str = ""  # set with REFINED


@dataclass(frozen=True)
class Label:
    name: str
    description: str
    confidence: float = 0.0  # 0..1 from the probes' agreement; 0: the policy gives none


@dataclass(frozen=True)
class EvidenceItem:
    source: str
    activation: float
    hypothesis_id: int
    supports: bool


@dataclass(frozen=True)
class Conclusion:
    description: str
    labels: list[Label]
    evidence: list[EvidenceItem]


@dataclass
class RunState:
    view: FeatureView
    hypotheses: list[Hypothesis] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    round: int = 0
    reviews: int = 0
    # What an earlier policy found about this feature (the auto policy's symbolic pass),
    # shown to the LLM when the feature is routed on.
    findings: str = ""

    def hypothesis(self, hid: int) -> Hypothesis | None:
        return next((h for h in self.hypotheses if h.id == hid), None)

    def probes_of(self, hid: int) -> list[Probe]:
        return [p for p in self.probes if p.draft.hypothesis_id == hid]

    def apply(self, verdict: Verdict) -> Hypothesis | None:
        h = self.hypothesis(verdict.hypothesis_id)
        if h is None:
            return None
        if verdict.status is Status.REFINED and verdict.new_text and verdict.new_text != h.text:
            h.history.append(h.text)
            h.text = verdict.new_text
        h.status = verdict.status
        h.updates.append(Update(self.round, verdict.status, verdict.reason, h.text))
        return h
