"""Hard budgets: every one of them can end the loop, and the reason is recorded."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

from sagex.llm.backend import Usage
from sagex.llm.clock import RunClock

# Share of the LLM budgets kept back so the conclusion can always be written.
CONCLUSION_RESERVE = 0.2


@dataclass(frozen=True)
class Budget:
    max_rounds: int = 4
    max_probes_per_hypothesis: int = 8
    max_llm_tokens: int = 60_000
    max_cost_usd: float = 0.50
    max_seconds: float = 600.0
    # Review steps after every hypothesis is settled; each may add probes.
    max_reviews: int = 1

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if not 1 <= self.max_rounds <= 30:
            out.append(("max_rounds", f"{self.max_rounds} is outside 1..30"))
        if not 1 <= self.max_probes_per_hypothesis <= 64:
            out.append(("max_probes_per_hypothesis", f"{self.max_probes_per_hypothesis} is outside 1..64"))
        if self.max_llm_tokens < 1_000:
            out.append(("max_llm_tokens", f"{self.max_llm_tokens} is below 1000, too few for one step"))
        if not math.isfinite(self.max_cost_usd) or self.max_cost_usd < 0:
            out.append(("max_cost_usd", "must be finite and >= 0"))
        if not 1 <= self.max_seconds <= 24 * 3600:  # also false for NaN
            out.append(("max_seconds", f"{self.max_seconds} is outside 1..86400"))
        if not 0 <= self.max_reviews <= 3:
            out.append(("max_reviews", f"{self.max_reviews} is outside 0..3"))
        return out

    def overlay(self, **changes: float | int) -> Budget:
        """This budget with the non-zero ``changes`` applied (0 means "server default")."""
        applied: dict[str, Any] = {k: v for k, v in changes.items() if v}
        return replace(self, **applied)


@dataclass
class Meter:
    """Spend of one feature's run against its budget."""

    budget: Budget
    started: float = field(default_factory=time.monotonic)
    usage: Usage = field(default_factory=Usage)
    clock: RunClock | None = None  # when given, its elapsed time (queueing in our client excluded) counts

    def add(self, usage: Usage) -> None:
        self.usage = self.usage + usage

    @property
    def elapsed(self) -> float:
        if self.clock is not None:
            return self.clock.elapsed
        return time.monotonic() - self.started

    def exhausted(self, reserve: float = 0.0) -> str | None:
        """The first budget spent (keeping ``reserve`` of the LLM budgets for the
        conclusion), or None. Rounds and probes are checked by the loop."""
        keep = 1.0 - reserve
        if self.usage.total_tokens >= self.budget.max_llm_tokens * keep:
            return "max_llm_tokens"
        if self.budget.max_cost_usd and self.usage.cost_usd >= self.budget.max_cost_usd * keep:
            return "max_cost_usd"
        if self.elapsed >= self.budget.max_seconds * keep:
            return "max_seconds"
        return None
