"""The activation service: model facts, per-token activations, exemplars."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence

import grpc

from sagex.api.activation.v1 import activation_service_pb2 as apb
from sagex.api.activation.v1 import activation_service_pb2_grpc as apb_grpc
from sagex.api.codec import assemble_texts
from sagex.sdk import _convert, _requests
from sagex.sdk._channel import ChannelConfig
from sagex.sdk.errors import SageError, from_rpc_error, from_status
from sagex.sdk.types import (
    FeatureEffects,
    FeatureExemplars,
    FeatureStatistics,
    MiningProgress,
    ModelInfo,
    SteerResult,
    TokenActivations,
)

MINING_TIMEOUT_S = 1800.0  # the first scan of a corpus builds the index
STEER_TIMEOUT_S = 600.0  # generation on a CPU server, with a target-KL search


def _assemble(texts: Sequence[str], features: Sequence[int], chunks: Sequence[apb.StreamActivationsResponse]
              ) -> list[TokenActivations]:
    """One batch's texts from its chunks; raises the batch's own error if it failed."""
    for msg in chunks:
        if msg.HasField("error"):
            raise from_status(msg.error)
    assembled = assemble_texts(chunks)
    return [TokenActivations(texts[i], tuple(a.tokens), frozenset(a.special), a.columns(features), tuple(a.spans))
            for i, a in sorted(assembled.items())]


def _split(batches: Sequence[Sequence[str]], features: Sequence[int],
           chunks: Sequence[apb.StreamActivationsResponse]) -> list[list[TokenActivations] | SageError]:
    """Per batch (batch ids are their indexes): its texts, or its own error."""
    by_batch: dict[int, list[apb.StreamActivationsResponse]] = {}
    for msg in chunks:
        by_batch.setdefault(int(msg.batch_id), []).append(msg)
    out: list[list[TokenActivations] | SageError] = []
    for i, texts in enumerate(batches):
        try:
            out.append(_assemble(texts, features, by_batch.get(i, [])))
        except SageError as exc:
            out.append(exc)
    return out


class Activation:
    def __init__(self, channel: grpc.Channel, config: ChannelConfig) -> None:
        self._stub = apb_grpc.ActivationServiceStub(channel)
        self._config = config

    def model_info(self) -> ModelInfo:
        """The model, its SAEs and the server's limits."""
        try:
            return _convert.model_info(self._stub.GetModelInfo(apb.GetModelInfoRequest(),
                                                               timeout=self._config.timeout_s,
                                                               metadata=self._config.metadata()))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def activations(self, sae: str, texts: Sequence[str], features: Sequence[int]) -> list[TokenActivations]:
        """Run ``texts`` through the model and SAE in one batch; the given features' activation per token."""
        request = _requests.activations(sae, texts, features)
        try:
            chunks = list(self._stub.StreamActivations(iter([request]), timeout=self._config.timeout_s,
                                                       metadata=self._config.metadata()))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return _assemble(texts, features, chunks)

    def activations_many(self, sae: str, batches: Sequence[Sequence[str]], features: Sequence[int]
                         ) -> list[list[TokenActivations] | SageError]:
        """Several batches on one stream (the server batches them with other callers' work).
        Each comes back as its texts or as its own error: a bad batch fails alone."""
        requests = [_requests.activations(sae, texts, features, batch_id=str(i)) for i, texts in enumerate(batches)]
        try:
            chunks = list(self._stub.StreamActivations(iter(requests), timeout=self._config.timeout_s,
                                                       metadata=self._config.metadata()))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return _split(batches, features, chunks)

    def statistics(self, sae: str, features: Sequence[int] = (), split: str = "exemplar"
                   ) -> dict[int, FeatureStatistics]:
        """Firing frequency, window frequency, maximum and mean activation per feature over a
        corpus split (every feature when ``features`` is empty). The first call on an SAE
        may wait while the server scans the corpus."""
        request = _requests.statistics(sae, features, split)
        try:
            return _convert.statistics(self._stub.GetFeatureStatistics(request, timeout=MINING_TIMEOUT_S,
                                                                       metadata=self._config.metadata()))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def exemplars(self, sae: str, features: Sequence[int], *, top_k: int = 10, bands: int = 0, per_band: int = 0,
                  non_activating: int = 0, seed: int = 0, split: str = "exemplar") -> Iterator[FeatureExemplars]:
        """Top-activating corpus windows per feature (plus quantile bands and silent windows)."""
        request = _requests.exemplars(sae, features, top_k, bands, per_band, non_activating, seed, split)
        call = self._stub.MineExemplars(request, timeout=MINING_TIMEOUT_S, metadata=self._config.metadata())
        try:
            for msg in call:
                yield _convert.exemplars(msg)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()  # a consumer that stops early ends the stream

    def effects(self, sae: str, features: Sequence[int], top_k: int = 20) -> list[FeatureEffects]:
        """The logit lens of each feature: promoted and suppressed tokens."""
        request = apb.GetFeatureEffectsRequest(sae_id=sae, feature_ids=list(features), top_k=top_k)
        try:
            return _convert.feature_effects(self._stub.GetFeatureEffects(
                request, timeout=self._config.timeout_s, metadata=self._config.metadata()))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def steer(self, sae: str, feature: int, prompts: Sequence[str], *, strength: float | None = None,
              target_kl: float | None = None, mode: str = "add", max_new_tokens: int = 16, temperature: float = 0.0,
              seed: int = 0, all_positions: bool = False) -> SteerResult:
        """Continue ``prompts`` with the feature pushed (α·d_f added, or clamped) and without.
        Give ``strength`` or ``target_kl`` (nats; the server searches α). Needs a server
        started with steering on (FailedPreconditionError otherwise)."""
        request = _requests.steer(sae, feature, prompts, strength, target_kl, mode, max_new_tokens, temperature,
                                  seed, all_positions)
        try:
            return _convert.steer_result(feature, self._stub.SteerGenerate(
                request, timeout=STEER_TIMEOUT_S, metadata=self._config.metadata()))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None


    def build_index(self, sae: str, split: str = "exemplar",
                    on_progress: Callable[[MiningProgress], None] | None = None,
                    interval_s: float = 1.0) -> MiningProgress:
        """Build (or join the build of, or read from the cache) the exemplar index of a corpus
        split, calling ``on_progress`` as it goes; returns the final, READY progress. A build
        once started goes on on the server even if this call is interrupted."""
        request = _requests.build_index(sae, split, interval_s)
        last: MiningProgress | None = None
        call = self._stub.BuildExemplarIndex(request, timeout=MINING_TIMEOUT_S, metadata=self._config.metadata())
        try:
            for msg in call:
                last = _convert.mining_progress(msg.progress)
                if on_progress is not None:
                    on_progress(last)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()
        assert last is not None and last.phase == "READY", "the stream ends with a READY message"
        return last


class AsyncActivation:
    def __init__(self, channel: grpc.aio.Channel, config: ChannelConfig) -> None:
        self._stub = apb_grpc.ActivationServiceStub(channel)
        self._config = config

    async def model_info(self) -> ModelInfo:
        """The model, its SAEs and the server's limits."""
        try:
            return _convert.model_info(await self._stub.GetModelInfo(
                apb.GetModelInfoRequest(), timeout=self._config.timeout_s, metadata=self._config.metadata()))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    async def activations(self, sae: str, texts: Sequence[str], features: Sequence[int]) -> list[TokenActivations]:
        """Run ``texts`` through the model and SAE in one batch; the given features' activation per token."""
        request = _requests.activations(sae, texts, features)
        try:
            call = self._stub.StreamActivations(iter([request]), timeout=self._config.timeout_s,
                                                metadata=self._config.metadata())
            chunks = [msg async for msg in call]
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return _assemble(texts, features, chunks)

    async def activations_many(self, sae: str, batches: Sequence[Sequence[str]], features: Sequence[int]
                               ) -> list[list[TokenActivations] | SageError]:
        """Several batches on one stream; each comes back as its texts or as its own error."""
        requests = [_requests.activations(sae, texts, features, batch_id=str(i)) for i, texts in enumerate(batches)]
        try:
            call = self._stub.StreamActivations(iter(requests), timeout=self._config.timeout_s,
                                                metadata=self._config.metadata())
            chunks = [msg async for msg in call]
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return _split(batches, features, chunks)

    async def statistics(self, sae: str, features: Sequence[int] = (), split: str = "exemplar"
                         ) -> dict[int, FeatureStatistics]:
        """Firing frequency, window frequency, maximum and mean activation per feature."""
        request = _requests.statistics(sae, features, split)
        try:
            return _convert.statistics(await self._stub.GetFeatureStatistics(
                request, timeout=MINING_TIMEOUT_S, metadata=self._config.metadata()))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    async def exemplars(self, sae: str, features: Sequence[int], *, top_k: int = 10, bands: int = 0,
                        per_band: int = 0, non_activating: int = 0, seed: int = 0, split: str = "exemplar"
                        ) -> list[FeatureExemplars]:
        """Top-activating corpus windows per feature (plus quantile bands and silent windows)."""
        request = _requests.exemplars(sae, features, top_k, bands, per_band, non_activating, seed, split)
        try:
            return [_convert.exemplars(msg) async for msg in self._stub.MineExemplars(
                request, timeout=MINING_TIMEOUT_S, metadata=self._config.metadata())]
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    async def effects(self, sae: str, features: Sequence[int], top_k: int = 20) -> list[FeatureEffects]:
        """The logit lens of each feature: promoted and suppressed tokens."""
        request = apb.GetFeatureEffectsRequest(sae_id=sae, feature_ids=list(features), top_k=top_k)
        try:
            return _convert.feature_effects(await self._stub.GetFeatureEffects(
                request, timeout=self._config.timeout_s, metadata=self._config.metadata()))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    async def steer(self, sae: str, feature: int, prompts: Sequence[str], *, strength: float | None = None,
              target_kl: float | None = None, mode: str = "add", max_new_tokens: int = 16, temperature: float = 0.0,
              seed: int = 0, all_positions: bool = False) -> SteerResult:
        """Continue ``prompts`` with the feature pushed (α·d_f added, or clamped) and without.
        Give ``strength`` or ``target_kl`` (nats; the server searches α). Needs a server
        started with steering on (FailedPreconditionError otherwise)."""
        request = _requests.steer(sae, feature, prompts, strength, target_kl, mode, max_new_tokens, temperature,
                                  seed, all_positions)
        try:
            return _convert.steer_result(feature, await self._stub.SteerGenerate(
                request, timeout=STEER_TIMEOUT_S, metadata=self._config.metadata()))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    async def build_index(
        self, sae: str, split: str = "exemplar",
        on_progress: Callable[[MiningProgress], None | Awaitable[None]] | None = None, interval_s: float = 1.0,
    ) -> MiningProgress:
        """Build (or join, or read from the cache) the exemplar index of a corpus split; see
        ``Activation.build_index``."""
        request = _requests.build_index(sae, split, interval_s)
        last: MiningProgress | None = None
        try:
            async for msg in self._stub.BuildExemplarIndex(request, timeout=MINING_TIMEOUT_S,
                                                           metadata=self._config.metadata()):
                last = _convert.mining_progress(msg.progress)
                if on_progress is not None:
                    maybe = on_progress(last)
                    if maybe is not None:
                        await maybe
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        assert last is not None and last.phase == "READY", "the stream ends with a READY message"
        return last
