"""One feature, start to finish: statistics and exemplars, triage, the loop, the
conclusion. Every failure ends in an Outcome that says why; nothing is made up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

import grpc
import structlog

from sagex.agent import steering
from sagex.agent.budget import Budget, Meter
from sagex.agent.config import AgentConfig
from sagex.agent.loop import Emit, RunProbes, run_loop, run_probes
from sagex.agent.policies.base import BudgetSpent, Policy, StepFailed
from sagex.agent.policies.symbolic import SymbolicPolicy
from sagex.agent.state import Conclusion, EvidenceItem, FeatureView, Phase, ProbeDraft, RunState
from sagex.agent.symbolic.resources import ResourceMissing, serial
from sagex.agent.symbolic.scoring import sibling_checks
from sagex.agent.triage import triage
from sagex.api.common.v1 import types_pb2
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
    llm_usage: Usage | None = None  # auto: the routed LLM pass's spend (the symbolic pass spends none)
    route_score: float | None = None  # auto: the symbolic label's F1 on fresh windows
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
OUTPUT_SIDE_MARGIN_S = 2.0  # kept back from the feature's budget so the conclusion is always stored
MIN_STEERING_S = 10.0  # below this, a steering probe is not started


def _siblings(view: FeatureView, token: str) -> list[ProbeDraft]:
    try:
        return serial(sibling_checks, view.exemplars.top, token, view.fire_threshold)
    except ResourceMissing:
        return []  # no tagger: no single-token claim from triage; the loop's policy decides


MiningWatch = Callable[[types_pb2.MiningProgress], None]


async def _noop(_: object) -> None:
    return None


class Explainer:
    def __init__(self, config: AgentConfig, activation: ActivationClient, make_policy: PolicyFactory) -> None:
        self.config = config
        self.activation = activation
        self.make_policy = make_policy
        self._warm: dict[str, asyncio.Task[bool]] = {}  # sae id -> the wait for its exemplar index
        self._watchers: dict[str, list[MiningWatch]] = {}

    async def warm(self, sae_id: str, on_progress: MiningWatch | None = None) -> None:
        """Wait until the exemplar index of ``sae_id`` is ready on the activation service.
        Shared by every feature and job of the SAE, and done before a feature's clock
        starts: the corpus scan is the service's one-off cost, not any feature's."""
        task = self._warm.get(sae_id)
        if task is not None and task.done() and (task.cancelled() or task.exception() or not task.result()):
            task = None  # failed or skipped last time: try again
        if task is None:
            self._watchers[sae_id] = []

            def report(p: types_pb2.MiningProgress) -> None:
                for watch in list(self._watchers.get(sae_id, ())):
                    watch(p)

            task = asyncio.ensure_future(self.activation.build_index(sae_id, on_progress=report))
            self._warm[sae_id] = task
        if task.done():
            return
        if on_progress is not None:
            self._watchers.setdefault(sae_id, []).append(on_progress)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the features then meet the problem themselves, within their budgets
            log.warning("index_warmup_failed", sae_id=sae_id, error=str(exc))
        finally:
            if on_progress is not None and on_progress in self._watchers.get(sae_id, []):
                self._watchers[sae_id].remove(on_progress)

    async def view(self, sae_id: str, feature_id: int) -> FeatureView:
        ex = self.config.exemplars
        stats, exemplars, lens = await asyncio.gather(
            self.activation.statistics(sae_id, [feature_id]),
            self.activation.exemplars(sae_id, feature_id, top_k=ex.top_k, bands=ex.bands, per_band=ex.per_band,
                                      non_activating=ex.non_activating, seed=ex.seed),
            steering.effects(self.activation, sae_id, feature_id),
        )
        return FeatureView(sae_id, feature_id, stats[feature_id], exemplars, self.config.fire_fraction, lens)

    async def explain(self, spec: RunSpec, emit: Emit = _noop) -> Outcome:
        await self.warm(spec.sae_id)  # before the clock starts: shared mining is no feature's time
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
        outcome.usage = outcome.llm_usage if outcome.llm_usage is not None else policy.usage()
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
            await self._output_side(spec, policy, state, outcome, clock)
            return
        await emit(Phase.READING_EXEMPLARS)
        meter = Meter(spec.budget, clock=clock)  # the clock of the whole feature (after shared mining)
        result = await run_loop(state, policy, run, meter, spec.num_hypotheses, emit)
        outcome.stop_reason = result.stop_reason
        await emit(Phase.CONCLUDING)
        outcome.conclusion = await policy.conclude(state)
        if spec.policy == "auto":
            await self._route(spec, policy, outcome, run, emit, clock)
        assert outcome.state is not None
        await self._output_side(spec, policy, outcome.state, outcome, clock)

    async def _route(self, spec: RunSpec, symbolic: Policy, outcome: Outcome, run: RunProbes, emit: Emit,
                     clock: RunClock) -> None:
        """``auto``: keep the symbolic label when it predicts firing on fresh windows
        (another draw of bands and silent windows); otherwise hand the feature, with
        what the symbolic pass found, to the LLM policy."""
        state, conclusion = outcome.state, outcome.conclusion
        assert state is not None and conclusion is not None and isinstance(symbolic, SymbolicPolicy)
        view, ex = state.view, self.config.exemplars
        fresh = await self.activation.exemplars(spec.sae_id, spec.feature_id, top_k=ex.top_k, bands=ex.bands,
                                                per_band=ex.per_band * 2, non_activating=ex.non_activating * 2,
                                                seed=ex.seed + 1)
        seen = {t.text for t in view.exemplars.top} | {t.text for _, _, ts in view.exemplars.bands for t in ts} | \
            {t.text for t in view.exemplars.non_activating}
        others = [t for _, _, ts in fresh.bands for t in ts if t.text not in seen] + \
            [t for t in fresh.non_activating if t.text not in seen]
        outcome.route_score = await asyncio.to_thread(symbolic.route_score, [], others, view.fire_threshold)
        if outcome.route_score >= self.config.auto_threshold:
            outcome.policy = "auto:symbolic"
            return
        llm = self.make_policy(replace(spec, policy="openai"))
        routed = RunState(view, findings=SymbolicPolicy.findings(state, conclusion))
        outcome.state, outcome.policy = routed, "auto:openai"
        await emit(Phase.READING_EXEMPLARS)
        try:
            result = await run_loop(routed, llm, run, Meter(spec.budget, clock=clock), spec.num_hypotheses,
                                    emit)
            outcome.stop_reason = result.stop_reason
            await emit(Phase.CONCLUDING)
            outcome.conclusion = await llm.conclude(routed)
        finally:
            outcome.llm_usage = llm.usage()

    async def _output_side(self, spec: RunSpec, policy: Policy, state: RunState, outcome: Outcome,
                           clock: RunClock) -> None:
        """What the feature does: the logit lens, and a steering probe of the policy's predicted
        effect (policies without ``predict_steering`` test the logit lens itself). The probe
        only uses what is left of the feature's wall-clock budget, and nothing on the output
        side can fail a feature that has its conclusion."""
        assert outcome.conclusion is not None
        probe: steering.SteeringProbe | str | None = None
        left = spec.budget.max_seconds - clock.elapsed - OUTPUT_SIDE_MARGIN_S
        if self.config.steering_probe and left < MIN_STEERING_S:
            probe = f"only {max(left, 0):.0f}s of the wall-clock budget left"
        elif self.config.steering_probe:
            try:
                async with asyncio.timeout(left):
                    probe = await self._steering_probe(spec, policy, state, left)
            except TimeoutError:
                probe = "the wall-clock budget ran out during the steering probe"
            except (ActivationUnavailable, grpc.aio.AioRpcError, LLMUnavailable) as exc:
                probe = f"the steering probe could not run ({exc})"
        outcome.conclusion = steering.with_output_side(outcome.conclusion, state.view.lens, probe)

    async def _steering_probe(self, spec: RunSpec, policy: Policy, state: RunState, left: float
                              ) -> steering.SteeringProbe | str:
        if not await self.activation.can_steer():
            return "the activation service does not steer (start it with --steering)"
        predict = getattr(policy, "predict_steering", None)
        try:
            prediction = await predict(state) if predict else steering.lens_prediction(state.view.lens)
        except (StepFailed, BudgetSpent) as exc:
            return f"no prediction ({exc})"
        if prediction is None:
            return "nothing to predict (the logit lens has no word tokens)"
        return await steering.run_probe(self.activation, spec.sae_id, spec.feature_id, prediction,
                                        self.config.steer_target_kl, timeout_s=left)

    async def _triaged(
        self, state: RunState, outcome: Outcome, run: Callable[[Sequence[str]], Awaitable[list[Trace]]], emit: Emit
    ) -> bool:
        # Off the event loop: the sibling probes tag texts (and may load the tagger first).
        found = await asyncio.to_thread(triage, state.view, self.config.triage, _siblings)
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
