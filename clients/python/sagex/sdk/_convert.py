"""Protobuf messages to SDK types (pure functions)."""

from __future__ import annotations

from typing import Any

import numpy as np
from google.longrunning import operations_pb2

from sagex.api.activation.v1 import activation_service_pb2 as apb
from sagex.api.agent.v1 import agent_service_pb2 as pb
from sagex.api.common.v1 import types_pb2
from sagex.sdk import types as t


def _floats(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, "<f4").copy()


def model_info(msg: apb.GetModelInfoResponse) -> t.ModelInfo:
    saes = tuple(t.SaeInfo(s.id, s.hook_name, s.d_sae, apb.SaeArchitecture.Name(s.architecture)
                           .removeprefix("SAE_ARCHITECTURE_").lower(), s.k, s.tl_hook_name, s.hf_hook_name,
                           s.convention, s.source, s.kind or "sae") for s in msg.saes)
    m = msg.model
    return t.ModelInfo(m.name, m.num_layers, m.loaded_layers, m.d_model, m.device, saes)


def statistics(msg: apb.GetFeatureStatisticsResponse) -> dict[int, t.FeatureStatistics]:
    ids = np.frombuffer(msg.feature_ids, "<u4")
    columns = [np.frombuffer(getattr(msg, name), "<f4") for name in
               ("firing_frequency", "window_frequency", "max_activation", "mean_active_activation")]
    firing, windows, peak, mean = columns
    return {int(f): t.FeatureStatistics(int(f), float(firing[i]), float(windows[i]), float(peak[i]), float(mean[i]),
                                        msg.tokens_scanned, msg.windows_scanned) for i, f in enumerate(ids)}


def exemplar(e: types_pb2.Exemplar) -> t.Exemplar:
    return t.Exemplar(e.window_id, e.text, tuple(e.tokens.texts), _floats(e.trace.values), e.max_activation,
                      e.max_token_index)


def exemplars(msg: apb.MineExemplarsResponse) -> t.FeatureExemplars:
    return t.FeatureExemplars(
        msg.feature_id, tuple(exemplar(e) for e in msg.top),
        tuple((b.lower, b.upper, tuple(exemplar(e) for e in b.exemplars)) for b in msg.bands),
        tuple(exemplar(e) for e in msg.random_non_activating),
    )


def _status(value: pb.HypothesisStatus.ValueType) -> str:
    return pb.HypothesisStatus.Name(value).removeprefix("HYPOTHESIS_STATUS_")


def hypothesis(h: pb.Hypothesis) -> t.Hypothesis:
    return t.Hypothesis(h.id, h.text, h.is_control, _status(h.status), tuple(h.history),
                        tuple(t.HypothesisUpdate(u.round, _status(u.status), u.reason, u.text) for u in h.updates))


def probe(p: pb.Probe) -> t.Probe:
    expected = pb.ExpectedOutcome.Name(p.expected).removeprefix("EXPECTED_OUTCOME_").lower()
    return t.Probe(p.id, p.hypothesis_id, p.round, p.text, expected, tuple(p.tokens.texts), _floats(p.trace.values),
                   p.max_activation, p.fire_threshold, p.as_expected, p.rationale)


def usage(u: pb.Usage) -> t.Usage:
    return t.Usage(u.prompt_tokens, u.completion_tokens, u.cost_usd, u.llm_calls)


def explanation(e: pb.Explanation) -> t.Explanation:
    import grpc

    code = ""
    if e.HasField("error"):
        code = next((c.name for c in grpc.StatusCode if c.value[0] == e.error.code), str(e.error.code))
    return t.Explanation(
        e.name, e.sae_id, e.feature_id, e.description,
        tuple(t.Label(lb.name, lb.description, lb.confidence) for lb in e.labels),
        tuple(t.Evidence(v.source, v.activation, v.hypothesis_id, v.supports) for v in e.evidence),
        tuple(hypothesis(h) for h in e.hypotheses), tuple(probe(p) for p in e.probes), e.policy, e.triage_class,
        e.stop_reason, e.rounds, e.max_activation, usage(e.usage), e.error.message, code, raw=e,
    )


def event(msg: pb.ExplainFeatureResponse) -> t.AgentEvent:
    kind = msg.WhichOneof("event")
    if kind == "state":
        return t.AgentEvent(state=pb.AgentState.Name(msg.state).removeprefix("AGENT_STATE_"))
    if kind == "hypothesis":
        return t.AgentEvent(hypothesis=hypothesis(msg.hypothesis))
    if kind == "probe":
        return t.AgentEvent(probe=probe(msg.probe))
    return t.AgentEvent(explanation=explanation(msg.explanation))


def progress(op: operations_pb2.Operation) -> t.JobProgress:
    meta = pb.BatchExplainFeaturesMetadata()
    op.metadata.Unpack(meta)
    running = tuple(t.FeatureProgress(f.feature_id, pb.AgentState.Name(f.state).removeprefix("AGENT_STATE_"),
                                      f.hypotheses, f.probes, f.round) for f in meta.running)
    return t.JobProgress(op.name, meta.total, meta.done, meta.failed, usage(meta.usage), op.done,
                         op.error.message if op.HasField("error") else "", running,
                         mining_progress(meta.mining) if meta.HasField("mining") else None)


def feature_effects(msg: apb.GetFeatureEffectsResponse) -> list[t.FeatureEffects]:
    def toks(effects: Any) -> tuple[t.TokenEffect, ...]:
        return tuple(t.TokenEffect(e.id, e.text, e.value) for e in effects)

    return [t.FeatureEffects(f.feature_id, toks(f.promoted), toks(f.suppressed), f.decoder_norm) for f in msg.features]


def steer_result(feature: int, msg: apb.SteerGenerateResponse) -> t.SteerResult:
    return t.SteerResult(
        feature, msg.strength, msg.mean_kl,
        tuple(t.SteeredText(c.prompt, c.unsteered_text, c.steered_text, c.kl) for c in msg.completions),
        msg.target_reached,
    )


def mining_progress(msg: types_pb2.MiningProgress) -> t.MiningProgress:
    return t.MiningProgress(
        sae_id=msg.sae_id, split=types_pb2.CorpusSplit.Name(msg.split).removeprefix("CORPUS_SPLIT_").lower(),
        phase=types_pb2.MiningPhase.Name(msg.phase).removeprefix("MINING_PHASE_"), windows_done=msg.windows_done,
        windows_total=msg.windows_total, tokens_done=msg.tokens_done, tokens_total=msg.tokens_total,
        tokens_per_second=msg.tokens_per_second, eta_seconds=msg.eta_seconds if msg.HasField("eta_seconds") else None,
        resumed=msg.resumed, cached=msg.cached, shards_done=msg.shards_done, shards_total=msg.shards_total,
    )
