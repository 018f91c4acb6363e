"""The agent's (and scoring's) client of the activation service.

Every call carries a deadline, the caller's request id and, when configured,
a bearer token; channels use TLS or mutual TLS when configured. Credentials
come from ``ClientCredentials`` (by default from $SAGE_TOKEN / $SAGE_TLS_*,
see ``sagex.server.credentials``). Calls go round robin over the configured
replicas; UNAVAILABLE (a replica down or draining) and RESOURCE_EXHAUSTED (a
full queue) move on to the next replica after a short backoff. Every call here
is a read, so retrying is safe.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc
import numpy as np
import structlog

from sagex.api.activation.v1 import activation_service_pb2 as pb
from sagex.api.activation.v1 import activation_service_pb2_grpc as pb_grpc
from sagex.api.common.v1 import types_pb2
from sagex.remote.traces import Trace
from sagex.server.credentials import ClientCredentials
from sagex.server.lifecycle import channel_options

log = structlog.get_logger(__name__)

T = TypeVar("T")
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})


@dataclass(frozen=True)
class FeatureStats:
    firing_frequency: float  # fraction of tokens
    window_frequency: float  # fraction of corpus windows with any activation
    max_activation: float
    mean_active_activation: float


@dataclass(frozen=True)
class Exemplars:
    top: list[Trace]
    bands: list[tuple[float, float, list[Trace]]]
    non_activating: list[Trace]
    activating_windows: int
    total_windows: int


@dataclass(frozen=True)
class SaeDescription:
    sae_id: str
    d_sae: int
    hook_name: str


class ActivationUnavailable(Exception):
    """No replica answered; the message names them and the last status."""


def dense_values(activations: types_pb2.SparseActivations, feature_id: int) -> np.ndarray:
    """One feature's value per token from a CSR chunk."""
    offsets = np.frombuffer(activations.row_offsets, "<u4")
    ids = np.frombuffer(activations.feature_ids, "<u4")
    vals = np.frombuffer(activations.values, "<f4")
    out = np.zeros(activations.num_tokens, np.float32)
    rows = np.repeat(np.arange(activations.num_tokens), np.diff(offsets))
    hit = ids == feature_id
    out[rows[hit]] = vals[hit]
    return out


def _mining_fraction(p: types_pb2.MiningProgress) -> float:
    if p.phase == types_pb2.MINING_PHASE_READY:
        return 1.0
    return p.tokens_done / p.tokens_total if p.tokens_total else 0.0


def _exemplar_trace(ex: types_pb2.Exemplar) -> Trace:
    return Trace.from_proto(ex.text, ex.tokens, np.frombuffer(ex.trace.values, "<f4"))


class ActivationClient:
    def __init__(
        self,
        addresses: Sequence[str],
        timeout_s: float = 60.0,
        mining_timeout_s: float = 1800.0,
        attempts: int = 4,
        backoff_s: float = 0.2,
        credentials: ClientCredentials | None = None,
    ) -> None:
        """``credentials`` None reads them from the environment (``ClientCredentials.from_env``)."""
        if not addresses:
            raise ValueError("at least one activation address is required")
        self.addresses = list(addresses)
        self.timeout_s = timeout_s
        self.mining_timeout_s = mining_timeout_s
        self.attempts = max(attempts, len(self.addresses))
        self.backoff_s = backoff_s
        self.credentials = ClientCredentials.from_env() if credentials is None else credentials
        self._channels = [self.credentials.channel(a, channel_options()) for a in self.addresses]
        self._stubs = [pb_grpc.ActivationServiceStub(c) for c in self._channels]
        self._next = itertools.count()
        self._sae_cache: dict[str, SaeDescription] = {}

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return self.credentials.call_metadata()

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._channels))

    async def _call(self, what: str, fn: Callable[[pb_grpc.ActivationServiceStub], Awaitable[T]]) -> T:
        last: grpc.aio.AioRpcError | None = None
        for attempt in range(self.attempts):
            index = next(self._next) % len(self._stubs)
            try:
                return await fn(self._stubs[index])
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                    log.error("activation_unauthenticated", call=what, replica=self.addresses[index],
                              hint="set $SAGE_TOKEN or $SAGE_TOKEN_FILE of this service to a token the activation "
                                   "service accepts")
                if exc.code() not in RETRYABLE:
                    raise
                last = exc
                log.warning("activation_retry", call=what, replica=self.addresses[index], code=exc.code().name,
                            attempt=attempt + 1)
                await asyncio.sleep(self.backoff_s * (2**attempt) / len(self._stubs))
        assert last is not None
        raise ActivationUnavailable(
            f"{what}: no activation replica answered after {self.attempts} attempts "
            f"({', '.join(self.addresses)}); last status {last.code().name}: {last.details()}"
        )

    async def sae(self, sae_id: str) -> SaeDescription | None:
        """The SAE's shape, or None when the activation service does not serve it."""
        if sae_id not in self._sae_cache:
            info = await self._call("GetModelInfo", lambda s: s.GetModelInfo(pb.GetModelInfoRequest(),
                                                                            timeout=self.timeout_s,
                                                                            metadata=self._metadata()))
            for sae in info.saes:
                self._sae_cache[sae.id] = SaeDescription(sae.id, sae.d_sae, sae.hook_name)
        return self._sae_cache.get(sae_id)

    async def sae_ids(self) -> list[str]:
        await self.sae("")
        return sorted(self._sae_cache)

    async def statistics(self, sae_id: str, feature_ids: Sequence[int]) -> dict[int, FeatureStats]:
        request = pb.GetFeatureStatisticsRequest(sae_id=sae_id, feature_ids=feature_ids)
        resp = await self._call("GetFeatureStatistics",
                                lambda s: s.GetFeatureStatistics(request, timeout=self.mining_timeout_s,
                                                                   metadata=self._metadata()))
        cols = [np.frombuffer(getattr(resp, name), "<f4") for name in
                ("firing_frequency", "window_frequency", "max_activation", "mean_active_activation")]
        ids = np.frombuffer(resp.feature_ids, "<u4") if resp.feature_ids else np.asarray(feature_ids)
        return {int(f): FeatureStats(*(float(c[i]) for c in cols)) for i, f in enumerate(ids)}

    async def build_index(
        self, sae_id: str, split: int = types_pb2.CORPUS_SPLIT_EXEMPLAR,
        on_progress: Callable[[types_pb2.MiningProgress], None] | None = None,
    ) -> bool:
        """Wait until every replica has the exemplar index of ``split`` (each builds, joins
        a build or reads its cache), reporting the least advanced one. False when no
        replica could say (an older server, all unreachable): the index is then built
        by the first call that needs it, as before."""
        request = pb.BuildExemplarIndexRequest(sae_id=sae_id, split=split, interval_seconds=1.0)
        latest: dict[int, types_pb2.MiningProgress] = {}

        async def one(index: int) -> bool:
            try:
                async for resp in self._stubs[index].BuildExemplarIndex(
                        request, timeout=self.mining_timeout_s, metadata=self._metadata()):
                    latest[index] = resp.progress
                    if on_progress is not None:
                        on_progress(min(latest.values(), key=_mining_fraction))
                return True
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (*RETRYABLE, grpc.StatusCode.UNIMPLEMENTED):
                    raise
                log.warning("index_warmup_skipped", replica=self.addresses[index], code=exc.code().name,
                            details=exc.details())
                return False

        ready = await asyncio.gather(*(one(i) for i in range(len(self._stubs))))
        return any(ready)

    async def exemplars(
        self, sae_id: str, feature_id: int, *, top_k: int, bands: int, per_band: int, non_activating: int, seed: int,
        split: int = types_pb2.CORPUS_SPLIT_EXEMPLAR,
    ) -> Exemplars:
        """Exemplars of one feature. ``split`` is EXEMPLAR for explainers; only the
        scorers read HELDOUT, which explainers must never see."""
        request = pb.MineExemplarsRequest(
            sae_id=sae_id, feature_ids=[feature_id], split=split, top_k=top_k,
            quantile_bands=bands, per_band=per_band, random_non_activating=non_activating, seed=seed,
        )

        async def mine(stub: pb_grpc.ActivationServiceStub) -> pb.MineExemplarsResponse:
            async for resp in stub.MineExemplars(request, timeout=self.mining_timeout_s, metadata=self._metadata()):
                return resp
            raise ActivationUnavailable(f"MineExemplars returned nothing for feature {feature_id}")

        resp = await self._call("MineExemplars", mine)
        return Exemplars(
            top=[_exemplar_trace(e) for e in resp.top],
            bands=[(b.lower, b.upper, [_exemplar_trace(e) for e in b.exemplars]) for b in resp.bands],
            non_activating=[_exemplar_trace(e) for e in resp.random_non_activating],
            activating_windows=resp.activating_windows,
            total_windows=resp.total_windows,
        )

    async def run(self, sae_id: str, feature_id: int, texts: Sequence[str]) -> list[Trace]:
        """All texts in one batch; one trace per text, in order."""
        if not texts:
            return []
        request = pb.StreamActivationsRequest(
            batch_id="probes", sae_id=sae_id, texts=list(texts),
            features=pb.FeatureIdSelection(feature_ids=[feature_id]),
        )

        async def requests() -> AsyncIterator[pb.StreamActivationsRequest]:
            yield request

        async def stream(stub: pb_grpc.ActivationServiceStub) -> list[Trace]:
            tokens: dict[int, types_pb2.TokenSequence] = {}
            chunks: dict[int, list[np.ndarray]] = {}
            async for msg in stub.StreamActivations(requests(), timeout=self.timeout_s, metadata=self._metadata()):
                if msg.token_start == 0:
                    tokens[msg.text_index] = msg.tokens
                else:
                    tokens[msg.text_index].ids.extend(msg.tokens.ids)
                    tokens[msg.text_index].texts.extend(msg.tokens.texts)
                    tokens[msg.text_index].special_positions.extend(
                        p + msg.token_start for p in msg.tokens.special_positions)
                chunks.setdefault(msg.text_index, []).append(dense_values(msg.activations, feature_id))
                if msg.batch_complete:
                    break
            return [Trace.from_proto(texts[i], tokens[i], np.concatenate(chunks[i])) for i in range(len(texts))]

        return await self._call("StreamActivations", stream)
