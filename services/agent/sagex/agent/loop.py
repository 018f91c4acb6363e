"""The SAGE loop for one feature: hypotheses, rounds of probes, verdicts,
review, conclusion. The policy proposes; this module enforces the budgets, runs
every round's probes in one activation batch and records everything."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from sagex.agent.budget import CONCLUSION_RESERVE, Budget, Meter
from sagex.agent.policies.base import BudgetSpent, Policy, StepFailed
from sagex.agent.state import Hypothesis, Phase, Probe, ProbeDraft, RunState, Verdict
from sagex.remote.traces import Trace

RunProbes = Callable[[Sequence[str]], Awaitable[list[Trace]]]
Emit = Callable[[object], Awaitable[None]]


@dataclass(frozen=True)
class LoopResult:
    stop_reason: str


async def run_probes(state: RunState, drafts: Sequence[ProbeDraft], run: RunProbes, emit: Emit) -> list[Probe]:
    traces = await run([d.text for d in drafts])
    probes = [Probe(len(state.probes) + i + 1, state.round, d, t, state.view.fire_threshold)
              for i, (d, t) in enumerate(zip(drafts, traces, strict=True))]
    state.probes.extend(probes)
    for p in probes:
        await emit(p)
    return probes


def _trim(state: RunState, drafts: Sequence[ProbeDraft], left: dict[int, int]) -> list[ProbeDraft]:
    """Keep drafts for known hypotheses within their probe budgets, without repeats."""
    seen = {(p.draft.hypothesis_id, p.draft.text) for p in state.probes}
    out = []
    for d in drafts:
        key = (d.hypothesis_id, d.text)
        if left.get(d.hypothesis_id, 0) > 0 and key not in seen and d.text.strip():
            seen.add(key)
            left[d.hypothesis_id] -= 1
            out.append(d)
    return out


async def _apply(state: RunState, verdicts: Sequence[Verdict], emit: Emit) -> None:
    for v in verdicts:
        h = state.apply(v)
        if h is not None:
            await emit(h)


def _check_hypotheses(hyps: list[Hypothesis], count: int) -> None:
    # Fewer than asked is allowed (a small model's answer, trimmed of extra controls
    # rather than padded with made-up hypotheses); at least one besides the control.
    controls = sum(h.is_control for h in hyps)
    if not 2 <= len(hyps) <= count or controls != 1:
        raise StepFailed("hypothesize", f"need 2 to {count} hypotheses with exactly one control; got {len(hyps)} "
                         f"with {controls} controls")
    if len({h.id for h in hyps}) != len(hyps):
        raise StepFailed("hypothesize", "hypothesis ids are not unique")


async def run_loop(
    state: RunState, policy: Policy, run: RunProbes, meter: Meter, num_hypotheses: int, emit: Emit
) -> LoopResult:
    """Test until every hypothesis is settled and reviewed, or a budget ends it."""
    try:
        return await _test(state, policy, run, meter, num_hypotheses, emit)
    except BudgetSpent as spent:
        if not state.hypotheses:  # not even the hypotheses fit: nothing to conclude from
            raise StepFailed("hypothesize", f"the {spent.reason} budget ran out before hypotheses were formed")\
                from None
        return LoopResult(spent.reason)


async def _test(
    state: RunState, policy: Policy, run: RunProbes, meter: Meter, num_hypotheses: int, emit: Emit
) -> LoopResult:
    budget: Budget = meter.budget

    def spent() -> str | None:
        meter.usage = policy.usage()
        return meter.exhausted(reserve=CONCLUSION_RESERVE)

    await emit(Phase.FORMING_HYPOTHESES)
    hyps = await policy.hypothesize(state, num_hypotheses)
    _check_hypotheses(hyps, num_hypotheses)
    state.hypotheses = hyps
    for h in hyps:
        await emit(h)
    left = {h.id: budget.max_probes_per_hypothesis for h in hyps}

    await emit(Phase.TESTING)
    while True:
        if reason := spent():
            return LoopResult(reason)
        open_ = [h for h in state.hypotheses if h.status.open and left[h.id] > 0]
        if state.round >= budget.max_rounds:
            return LoopResult("max_rounds" if open_ or state.reviews < budget.max_reviews else "converged")
        if open_:
            drafts = await policy.design(state, open_, dict(left))
        else:
            if any(h.status.open for h in state.hypotheses):
                return LoopResult("max_probes")
            if state.reviews >= budget.max_reviews:
                return LoopResult("converged")
            state.reviews += 1
            await emit(Phase.REVIEWING)
            drafts = await policy.review(state, dict(left))
            if not drafts:
                return LoopResult("converged")
        drafts = _trim(state, drafts, left)
        if not drafts:
            # The policy has nothing new to ask: testing cannot make progress.
            return LoopResult("converged" if not open_ else "no_new_probes")
        state.round += 1
        new = await run_probes(state, drafts, run, emit)
        tested = {p.draft.hypothesis_id for p in new}
        await _apply(state, await policy.judge(state, [h for h in state.hypotheses if h.id in tested], new), emit)
        if state.reviews and not open_:
            await emit(Phase.TESTING)
