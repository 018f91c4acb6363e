"""The activation service: model facts, per-token activations, exemplars."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence

import grpc

from sagex.api.activation.v1 import activation_service_pb2 as apb
from sagex.api.activation.v1 import activation_service_pb2_grpc as apb_grpc
from sagex.sdk import _convert, _requests
from sagex.sdk._channel import ChannelConfig
from sagex.sdk.errors import from_rpc_error
from sagex.sdk.types import FeatureExemplars, MiningProgress, ModelInfo, TokenActivations

MINING_TIMEOUT_S = 1800.0  # the first scan of a corpus builds the index


def _assemble(texts: Sequence[str], features: Sequence[int], chunks: Sequence[apb.StreamActivationsResponse]
              ) -> list[TokenActivations]:
    import numpy as np

    tokens: dict[int, list[str]] = {}
    special: dict[int, set[int]] = {}
    values: dict[int, list[dict[int, np.ndarray]]] = {}
    for msg in chunks:
        i = msg.text_index
        tokens.setdefault(i, []).extend(msg.tokens.texts)
        special.setdefault(i, set()).update(p + msg.token_start for p in msg.tokens.special_positions)
        values.setdefault(i, []).append(_convert.dense(msg.activations, list(features)))
    return [TokenActivations(texts[i], tuple(tokens[i]), frozenset(special[i]),
                             {f: np.concatenate([c[f] for c in values[i]]) for f in features})
            for i in range(len(texts))]


class Activation:
    def __init__(self, channel: grpc.Channel, config: ChannelConfig) -> None:
        self._stub = apb_grpc.ActivationServiceStub(channel)
        self._config = config

    def model_info(self) -> ModelInfo:
        """The model, its SAEs and the server's limits."""
        try:
            return _convert.model_info(self._stub.GetModelInfo(apb.GetModelInfoRequest(), timeout=self._config.timeout_s,
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


    def build_index(self, sae: str, split: str = "exemplar", on_progress: Callable[[MiningProgress], None] | None = None,
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
