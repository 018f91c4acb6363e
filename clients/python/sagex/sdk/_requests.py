"""Request messages from SDK arguments (shared by the sync and async clients)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from google.longrunning import operations_pb2
from google.protobuf import duration_pb2

from sagex.api.activation.v1 import activation_service_pb2 as apb
from sagex.api.agent.v1 import agent_service_pb2 as pb
from sagex.api.common.v1 import types_pb2

SPLITS = {"exemplar": types_pb2.CORPUS_SPLIT_EXEMPLAR, "heldout": types_pb2.CORPUS_SPLIT_HELDOUT,
          "train": types_pb2.CORPUS_SPLIT_TRAIN}


def activations(sae: str, texts: Sequence[str], features: Sequence[int], batch_id: str = ""
                ) -> apb.StreamActivationsRequest:
    # per_batch_errors: a failed batch comes back as its own status and the stream goes on.
    return apb.StreamActivationsRequest(batch_id=batch_id or uuid.uuid4().hex[:8], sae_id=sae, texts=list(texts),
                                        features=apb.FeatureIdSelection(feature_ids=list(features)),
                                        per_batch_errors=True)


def statistics(sae: str, features: Sequence[int], split: str) -> apb.GetFeatureStatisticsRequest:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    return apb.GetFeatureStatisticsRequest(sae_id=sae, feature_ids=list(features), split=SPLITS[split])


def exemplars(sae: str, features: Sequence[int], top_k: int, bands: int, per_band: int, non_activating: int,
              seed: int, split: str) -> apb.MineExemplarsRequest:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    return apb.MineExemplarsRequest(sae_id=sae, feature_ids=list(features), top_k=top_k, quantile_bands=bands,
                                    per_band=per_band, random_non_activating=non_activating, seed=seed,
                                    split=SPLITS[split])


def build_index(sae: str, split: str, interval_s: float) -> apb.BuildExemplarIndexRequest:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    return apb.BuildExemplarIndexRequest(sae_id=sae, split=SPLITS[split], interval_seconds=interval_s)


def policy(name: str, model: str, num_hypotheses: int) -> pb.PolicySpec:
    return pb.PolicySpec(policy=name, model=model, num_hypotheses=num_hypotheses)


def budget(max_rounds: int, max_probes_per_hypothesis: int, max_llm_tokens: int, max_cost_usd: float,
           max_seconds: float) -> pb.Budget:
    return pb.Budget(max_rounds=max_rounds, max_probes_per_hypothesis=max_probes_per_hypothesis,
                     max_llm_tokens=max_llm_tokens, max_cost_usd=max_cost_usd, max_seconds=max_seconds)


def wait(name: str, seconds: float) -> operations_pb2.WaitOperationRequest:
    seconds = max(0.0, seconds)
    return operations_pb2.WaitOperationRequest(
        name=name, timeout=duration_pb2.Duration(seconds=int(seconds), nanos=int(seconds % 1 * 1e9)))


def steer(sae: str, feature: int, prompts: Sequence[str], strength: float | None, target_kl: float | None,
          mode: str, max_new_tokens: int, temperature: float, seed: int, all_positions: bool
          ) -> apb.SteerGenerateRequest:
    if (strength is None) == (target_kl is None):
        raise ValueError("give exactly one of strength and target_kl")
    modes = {"add": apb.STEER_MODE_ADD, "clamp": apb.STEER_MODE_CLAMP}
    if mode not in modes:
        raise ValueError(f"mode must be add or clamp, got {mode!r}")
    setting = {"strength": strength} if strength is not None else {"target_kl": target_kl}
    positions = apb.STEER_POSITIONS_ALL if all_positions else apb.STEER_POSITIONS_LAST_AND_GENERATED
    return apb.SteerGenerateRequest(sae_id=sae, feature_id=feature, prompts=list(prompts), mode=modes[mode],
                                    max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                                    positions=positions, **setting)
