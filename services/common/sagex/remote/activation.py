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
from google.rpc import status_pb2

from sagex.api.activation.v1 import activation_service_pb2 as pb
from sagex.api.activation.v1 import activation_service_pb2_grpc as pb_grpc
from sagex.api.codec import assemble_texts
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


@dataclass(frozen=True)
class LensTokens:
    """A feature's logit lens: (token text, value) promoted (highest first) and suppressed (lowest first)."""

    feature_id: int
    promoted: list[tuple[str, float]]
    suppressed: list[tuple[str, float]]


@dataclass(frozen=True)
class Steered:
    prompt: str
    unsteered: str
    steered: str
    kl: float


@dataclass(frozen=True)
class SteerOutcome:
    feature_id: int
    strength: float
    mean_kl: float
    target_reached: bool
    completions: list[Steered]


class ActivationUnavailable(Exception):
    """No replica answered; the message names them and the last status."""


def batch_error(status: status_pb2.Status) -> grpc.aio.AioRpcError:
    """A batch's own status (``per_batch_errors``) as the error a failed call raises, details
    included, so retries and error handling treat both alike."""
    code = next((c for c in grpc.StatusCode if c.value[0] == status.code), grpc.StatusCode.UNKNOWN)
    trailing = grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString()))
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, details=status.message)


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
        self._steering: bool | None = None

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
            self._steering = info.model.steering_enabled
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
        self, sae_id: str, split: types_pb2.CorpusSplit.ValueType = types_pb2.CORPUS_SPLIT_EXEMPLAR,
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
        split: types_pb2.CorpusSplit.ValueType = types_pb2.CORPUS_SPLIT_EXEMPLAR,
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
            features=pb.FeatureIdSelection(feature_ids=[feature_id]), per_batch_errors=True,
        )

        async def requests() -> AsyncIterator[pb.StreamActivationsRequest]:
            yield request

        async def stream(stub: pb_grpc.ActivationServiceStub) -> list[Trace]:
            messages = []
            async for msg in stub.StreamActivations(requests(), timeout=self.timeout_s, metadata=self._metadata()):
                if msg.HasField("error"):
                    raise batch_error(msg.error)
                messages.append(msg)
                if msg.batch_complete:
                    break
            assembled = assemble_texts(messages)
            return [Trace(texts[i], tuple(a.token_ids), tuple(a.tokens), frozenset(a.special),
                          a.columns([feature_id])[feature_id])
                    for i, a in sorted(assembled.items())]

        return await self._call("StreamActivations", stream)

    async def can_steer(self) -> bool:
        """Whether the activation service serves SteerGenerate (it was started with steering on)."""
        if self._steering is None:
            await self.sae("")
        return bool(self._steering)

    async def effects(self, sae_id: str, feature_ids: Sequence[int], top_k: int = 20) -> dict[int, LensTokens]:
        """The logit lens of each feature (GetFeatureEffects)."""
        request = pb.GetFeatureEffectsRequest(sae_id=sae_id, feature_ids=list(feature_ids), top_k=top_k)
        resp = await self._call("GetFeatureEffects", lambda s: s.GetFeatureEffects(
            request, timeout=self.timeout_s, metadata=self._metadata()))
        return {f.feature_id: LensTokens(f.feature_id, [(t.text, t.value) for t in f.promoted],
                                         [(t.text, t.value) for t in f.suppressed]) for f in resp.features}

    async def steer(
        self, sae_id: str, feature_id: int, prompts: Sequence[str], *, strength: float | None = None,
        target_kl: float | None = None, max_new_tokens: int = 16, temperature: float = 0.0, seed: int = 0,
        timeout_s: float = 600.0,
    ) -> SteerOutcome:
        """Steered and unsteered continuations (SteerGenerate): give ``strength`` or ``target_kl``.
        A server without steering answers FAILED_PRECONDITION (raised as grpc.aio.AioRpcError)."""
        setting = {"strength": strength} if strength is not None else {"target_kl": target_kl}
        request = pb.SteerGenerateRequest(
            sae_id=sae_id, feature_id=feature_id, prompts=list(prompts), mode=pb.STEER_MODE_ADD,
            max_new_tokens=max_new_tokens, temperature=temperature, seed=seed, **setting,
        )
        resp = await self._call("SteerGenerate", lambda s: s.SteerGenerate(
            request, timeout=timeout_s, metadata=self._metadata()))
        return SteerOutcome(feature_id, resp.strength, resp.mean_kl, resp.target_reached, [
            Steered(c.prompt, c.unsteered_text, c.steered_text, c.kl) for c in resp.completions])
