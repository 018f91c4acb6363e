"""Domain objects to API messages. The only module of the agent that builds
protobuf messages from run state."""

from __future__ import annotations

from google.protobuf import timestamp_pb2
from google.rpc import status_pb2

from sagex.agent.explainer import Outcome
from sagex.agent.state import Expect, Hypothesis, Phase, Probe, Status
from sagex.api.agent.v1 import agent_service_pb2 as pb
from sagex.llm.backend import Usage

STATUS = {
    Status.PENDING: pb.HYPOTHESIS_STATUS_PENDING,
    Status.CONFIRMED: pb.HYPOTHESIS_STATUS_CONFIRMED,
    Status.REFUTED: pb.HYPOTHESIS_STATUS_REFUTED,
    Status.REFINED: pb.HYPOTHESIS_STATUS_REFINED,
}
EXPECT = {Expect.FIRES: pb.EXPECTED_OUTCOME_FIRES, Expect.SILENT: pb.EXPECTED_OUTCOME_SILENT}


def phase(p: Phase) -> pb.AgentState.ValueType:
    return pb.AgentState.Value(f"AGENT_STATE_{p.value}")


def hypothesis(h: Hypothesis) -> pb.Hypothesis:
    return pb.Hypothesis(
        id=h.id, text=h.text, is_control=h.is_control, status=STATUS[h.status], history=h.history,
        updates=[pb.HypothesisUpdate(round=u.round, status=STATUS[u.status], reason=u.reason, text=u.text)
                 for u in h.updates],
    )


def probe(p: Probe, feature_id: int) -> pb.Probe:
    tokens, trace = p.trace.to_proto(feature_id)
    return pb.Probe(
        hypothesis_id=p.draft.hypothesis_id, round=p.round, text=p.draft.text, expected=EXPECT[p.draft.expected],
        tokens=tokens, trace=trace, max_activation=p.activation, as_expected=p.as_expected, id=p.id,
        rationale=p.draft.rationale, fire_threshold=p.fire_threshold,
    )


def usage(u: Usage) -> pb.Usage:
    return pb.Usage(prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens, cost_usd=u.cost_usd,
                    llm_calls=u.calls)


def event(e: object, feature_id: int) -> pb.ExplainFeatureResponse:
    if isinstance(e, Phase):
        return pb.ExplainFeatureResponse(state=phase(e))
    if isinstance(e, Hypothesis):
        return pb.ExplainFeatureResponse(hypothesis=hypothesis(e))
    if isinstance(e, Probe):
        return pb.ExplainFeatureResponse(probe=probe(e, feature_id))
    raise TypeError(f"not an agent event: {e!r}")


def explanation(o: Outcome, name: str, created: timestamp_pb2.Timestamp) -> pb.Explanation:
    spec = o.spec
    msg = pb.Explanation(
        name=name, sae_id=spec.sae_id, feature_id=spec.feature_id, triage_class=o.triage_class,
        usage=usage(o.usage), policy=o.policy, create_time=created, stop_reason=o.stop_reason,
        elapsed_seconds=o.elapsed, max_activation=o.max_activation,
    )
    if o.state is not None:
        msg.rounds = o.state.round
        msg.hypotheses.extend(hypothesis(h) for h in o.state.hypotheses)
        msg.probes.extend(probe(p, spec.feature_id) for p in o.state.probes)
    if o.conclusion is not None:
        msg.description = o.conclusion.description
        msg.labels.extend(pb.Label(name=lb.name, description=lb.description, confidence=lb.confidence)
                          for lb in o.conclusion.labels)
        msg.evidence.extend(pb.Evidence(source=e.source, activation=e.activation, hypothesis_id=e.hypothesis_id,
                                        supports=e.supports) for e in o.conclusion.evidence)
    if o.error_code is not None:
        msg.error.CopyFrom(status_pb2.Status(code=o.error_code.value[0], message=o.error))
    return msg
