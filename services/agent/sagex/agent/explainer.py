"""One feature, start to finish: statistics and exemplars, triage, the loop, the
conclusion. Every failure ends in an Outcome that says why; nothing is made up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc
import structlog

from sagex.agent.budget import Budget, Meter
from sagex.agent.config import AgentConfig
from sagex.agent.loop import Emit, run_loop, run_probes
from sagex.agent.policies.base import Policy, StepFailed
from sagex.agent.state import Conclusion, EvidenceItem, FeatureView, Phase, RunState
from sagex.agent.triage import triage
from sagex.llm.backend import LLMMisconfigured, LLMUnavailable, Usage
from sagex.llm.clock import RunClock, use_clock
from sagex.remote.activation import ActivationClient, ActivationUnavailable
from sagex.remote.traces import Trace

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RunSpec:
    sae_id: str
    feature_id: int
    policy: str
    model: str
    budget: Budget
    num_hypotheses: int
    skip_triage: bool = False


@dataclass
class Outcome:
    spec: RunSpec
    policy: str
    state: RunState | None
    conclusion: Conclusion | None = None
    stop_reason: str = ""
    triage_class: str = ""
    usage: Usage = Usage()
    elapsed: float = 0.0
    error_code: grpc.StatusCode | None = None
    error: str = ""

    @property
    def failed(self) -> bool:
        return self.error_code is not None

    @property
    def max_activation(self) -> float:
        return self.state.view.scale if self.state is not None else 0.0


PolicyFactory = Callable[[RunSpec], Policy]


async def _noop(_: object) -> None:
    return None


class Explainer:
    def __init__(self, config: AgentConfig, activation: ActivationClient, make_policy: PolicyFactory) -> None:
        self.config = config
        self.activation = activation
        self.make_policy = make_policy

    async def view(self, sae_id: str, feature_id: int) -> FeatureView:
        ex = self.config.exemplars
        stats, exemplars = await asyncio.gather(
            self.activation.statistics(sae_id, [feature_id]),
            self.activation.exemplars(sae_id, feature_id, top_k=ex.top_k, bands=ex.bands, per_band=ex.per_band,
                                      non_activating=ex.non_activating, seed=ex.seed),
        )
        return FeatureView(sae_id, feature_id, stats[feature_id], exemplars, self.config.fire_fraction)

    async def explain(self, spec: RunSpec, emit: Emit = _noop) -> Outcome:
        started = time.monotonic()
        policy = self.make_policy(spec)
        outcome = Outcome(spec, policy.name, None)
        deadline = asyncio.timeout(spec.budget.max_seconds)
        # Time the feature's LLM calls only wait for a free slot in our own client is
        # not the feature's: the clock stops then, and pushes the deadline back.
        clock = RunClock(started)
        try:
            with use_clock(clock):
                async with deadline:
                    clock.bind(deadline)
                    await self._run(spec, policy, outcome, emit, clock)
        except TimeoutError:
            if deadline.expired():
                self._fail(outcome, grpc.StatusCode.DEADLINE_EXCEEDED,
                           f"the wall-clock budget of {spec.budget.max_seconds:g}s ran out before a conclusion",
                           "max_seconds")
            else:  # a socket or client timeout inside, not our budget
                self._fail(outcome, grpc.StatusCode.UNAVAILABLE, "a call timed out", "unavailable")
        except StepFailed as exc:
            self._fail(outcome, grpc.StatusCode.ABORTED, str(exc), "step_failed")
        except LLMMisconfigured as exc:  # only a setting can fix it: jobs do not retry it
            self._fail(outcome, grpc.StatusCode.FAILED_PRECONDITION, str(exc), "llm_misconfigured")
        except (LLMUnavailable, ActivationUnavailable) as exc:
            self._fail(outcome, grpc.StatusCode.UNAVAILABLE, str(exc), "unavailable")
        except grpc.aio.AioRpcError as exc:
            self._fail(outcome, exc.code(), f"activation service: {exc.details()}", "activation_error")
        except Exception as exc:  # a bug: this feature fails visibly, the job goes on
            log.exception("feature_crashed", sae_id=spec.sae_id, feature=spec.feature_id)
            self._fail(outcome, grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}: {exc}); "
                       "please report it with the server log", "internal_error")
        outcome.usage = policy.usage()
        outcome.elapsed = time.monotonic() - started
        await emit(Phase.FAILED if outcome.failed else Phase.DONE)
        log.info("feature_explained", sae_id=spec.sae_id, feature=spec.feature_id, policy=policy.name,
                 stop=outcome.stop_reason, triage=outcome.triage_class, failed=outcome.failed,
                 seconds=round(outcome.elapsed, 2), tokens=outcome.usage.total_tokens)
        return outcome

    @staticmethod
    def _fail(outcome: Outcome, code: grpc.StatusCode, message: str, stop: str) -> None:
        outcome.error_code, outcome.error, outcome.stop_reason = code, message, stop
        outcome.conclusion = None

    async def _run(self, spec: RunSpec, policy: Policy, outcome: Outcome, emit: Emit, clock: RunClock) -> None:
        await emit(Phase.TRIAGE)
        view = await self.view(spec.sae_id, spec.feature_id)
        state = RunState(view)
        outcome.state = state

        async def run(texts: Sequence[str]) -> list[Trace]:
            return await self.activation.run(spec.sae_id, spec.feature_id, texts)

        if self.config.triage.enabled and not spec.skip_triage and await self._triaged(state, outcome, run, emit):
            return
        await emit(Phase.READING_EXEMPLARS)
        meter = Meter(spec.budget, clock=clock)  # the clock of the whole feature, mining included
        result = await run_loop(state, policy, run, meter, spec.num_hypotheses, emit)
        outcome.stop_reason = result.stop_reason
        await emit(Phase.CONCLUDING)
        outcome.conclusion = await policy.conclude(state)

    async def _triaged(
        self, state: RunState, outcome: Outcome, run: Callable[[Sequence[str]], Awaitable[list[Trace]]], emit: Emit
    ) -> bool:
        found = triage(state.view, self.config.triage)
        if found is None:
            return False
        probes = await run_probes(state, found.checks, run, emit) if found.checks else []
        if not found.verified(probes):
            # The failed checks stay in the record (hypothesis 0: triage's claim).
            log.info("triage_rejected", feature=state.view.feature_id, kind=found.kind)
            return False
        outcome.triage_class = found.kind
        outcome.stop_reason = "triage"
        evidence = [EvidenceItem(p.draft.text, p.activation, 0, p.as_expected) for p in probes]
        outcome.conclusion = Conclusion(found.description, found.labels, evidence)
        return True
