"""What a policy decides. The loop owns state, budgets and the activation
service; a policy only reads state and proposes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sagex.agent.state import Conclusion, Hypothesis, Probe, ProbeDraft, RunState, Verdict
from sagex.llm.backend import Usage


class StepFailed(Exception):
    """A policy step could not produce a valid answer; the feature is recorded as
    failed with this reason (never filled in with a made-up answer)."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason


class BudgetSpent(Exception):
    """A policy refused to start an LLM call because a budget is spent; the loop
    stops testing and concludes. ``reason`` names the budget ("max_llm_tokens")."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Policy(Protocol):
    name: str

    def usage(self) -> Usage:
        """LLM spend so far of this policy instance (one instance per feature run)."""
        ...

    async def hypothesize(self, state: RunState, count: int) -> list[Hypothesis]:
        """``count`` competing hypotheses, exactly one of them a control."""
        ...

    async def design(self, state: RunState, hypotheses: Sequence[Hypothesis], probes_left: dict[int, int]) -> list[
            ProbeDraft]:
        """Probes for each given hypothesis, at most ``probes_left[id]`` each."""
        ...

    async def judge(self, state: RunState, hypotheses: Sequence[Hypothesis], new: Sequence[Probe]) -> list[Verdict]:
        """A verdict for each given hypothesis from its probes (``new`` are this round's)."""
        ...

    async def review(self, state: RunState, probes_left: dict[int, int]) -> list[ProbeDraft]:
        """Extra probes that could overturn a settled verdict, or none."""
        ...

    async def conclude(self, state: RunState) -> Conclusion:
        ...
