"""ActivationService over gRPC: validation, then the engine, batcher and miner.

No torch here beyond what packing needs; errors are raised as ServiceError and
turned into statuses by the server interceptor.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import numpy as np
import structlog
from grpc import aio

from sagex.activation.batcher import DynamicBatcher
from sagex.activation.config import ActivationConfig
from sagex.activation.engine import ActivationEngine, WorkItem
from sagex.activation.lm import Tokenized
from sagex.activation.mining import BuildProgress, ExemplarMiner, MiningIndex
from sagex.activation.output_rpc import OutputRpcs
from sagex.activation.outputside import OutputSide
from sagex.activation.packing import text_responses, tokens_to_proto
from sagex.activation.sae import LoadedSae
from sagex.activation.validation import (
    MAX_BATCH_ID_CHARS,
    ActivationBatch,
    Limits,
    check_token_counts,
    validate_batch,
    validate_build,
    validate_mine,
    validate_stats,
    validate_tokenize,
)
from sagex.api.activation.v1 import activation_service_pb2 as pb
from sagex.api.activation.v1 import activation_service_pb2_grpc as pb_grpc
from sagex.api.codec import counted_positions
from sagex.api.common.v1 import types_pb2
from sagex.server.errors import DeadlineExceeded, InvalidArgument, ResourceExhausted, ServiceError, Unavailable

log = structlog.get_logger(__name__)

ARCH = {
    "standard": pb.SAE_ARCHITECTURE_STANDARD,
    "topk": pb.SAE_ARCHITECTURE_TOPK,
    "jumprelu": pb.SAE_ARCHITECTURE_JUMPRELU,
    "gated": pb.SAE_ARCHITECTURE_GATED,
}
# Without a client deadline, a request may wait this long for the model.
DEFAULT_TIMEOUT_S = 300.0
MINING_TIMEOUT_S = 3600.0


def _timeout(context: aio.ServicerContext, default: float) -> float:
    remaining = context.time_remaining()
    return default if remaining is None else max(0.0, min(remaining, default))


class ActivationServicer(OutputRpcs, pb_grpc.ActivationServiceServicer):
    """Mounted before the model loads (so health can say NOT_SERVING); every RPC
    answers UNAVAILABLE until ``attach`` has run."""

    def __init__(self, config: ActivationConfig) -> None:
        self.config = config
        self._engine: ActivationEngine | None = None
        self._output: OutputSide | None = None

    def attach(
        self, engine: ActivationEngine, batcher: DynamicBatcher, miner: ExemplarMiner, output: OutputSide | None = None
    ) -> None:
        self.batcher = batcher
        self.miner = miner
        self._output = output
        self.limits = Limits(self.config, engine.lm.vocab_size)
        self._engine = engine

    @property
    def engine(self) -> ActivationEngine:
        if self._engine is None:
            raise Unavailable("the model and SAEs are still loading; retry shortly", retry_after_s=2.0)
        return self._engine

    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: aio.ServicerContext
    ) -> pb.GetModelInfoResponse:
        lm = self.engine.lm
        tok = lm.tokenizer
        specials = [
            pb.SpecialToken(role=role, id=int(getattr(tok, f"{role}_token_id")),
                            text=str(getattr(tok, f"{role}_token")))
            for role in ("bos", "eos", "pad", "unk")
            if getattr(tok, f"{role}_token_id", None) is not None
        ]
        c = self.config
        return pb.GetModelInfoResponse(
            model=pb.ModelInfo(
                name=lm.name, architecture=lm.architecture, num_layers=lm.num_layers, loaded_layers=lm.loaded_layers,
                d_model=lm.d_model, vocab_size=lm.vocab_size, dtype=str(lm.dtype).removeprefix("torch."),
                device=str(self.engine.device), prepends_bos=lm.prepend_bos, special_tokens=specials,
                steering_enabled=self._output is not None and self._output.steerable is not None,
            ),
            saes=[self._sae_info(s) for s in self.engine.saes.values()],
            limits=pb.ServerLimits(
                max_texts_per_batch=c.max_texts_per_batch, max_chars_per_text=c.max_chars_per_text,
                max_tokens_per_text=c.max_tokens_per_text, max_feature_ids=c.max_feature_ids,
                max_top_k=c.max_top_k, max_response_bytes=c.max_response_bytes,
            ),
        )

    def _sae_info(self, sae: LoadedSae) -> pb.SaeInfo:
        return pb.SaeInfo(
            id=sae.id, hook_name=sae.hook_name, hook_layer=max(sae.hook_layer, 0), d_in=sae.params.d_in,
            d_sae=sae.params.d_sae, architecture=ARCH[sae.architecture], k=sae.params.k, dtype=sae.dtype,
            encode_backend=self.engine.encode_backend, content_hash=sae.content_hash,
            tl_hook_name=sae.tl_hook_name, hf_hook_name=sae.hf_hook_name, convention=sae.convention,
            transform=sae.transform, format=sae.format, source=sae.source, kind=sae.kind,
            hook_name_out=sae.hook_name_out,
        )

    async def Tokenize(self, request: pb.TokenizeRequest, context: aio.ServicerContext) -> pb.TokenizeResponse:
        texts = validate_tokenize(request, self.config)
        toks = await asyncio.to_thread(self.engine.describe_texts, texts)
        return pb.TokenizeResponse(tokens=[tokens_to_proto(t) for t in toks])

    # --- streaming activations ------------------------------------------------------

    async def StreamActivations(
        self, request_iterator: AsyncIterator[pb.StreamActivationsRequest], context: aio.ServicerContext
    ) -> AsyncIterator[pb.StreamActivationsResponse]:
        out: asyncio.Queue[pb.StreamActivationsResponse | BaseException | None] = asyncio.Queue(maxsize=64)
        slots = asyncio.Semaphore(self.config.max_inflight_batches_per_stream)
        inflight: set[str] = set()
        tasks: set[asyncio.Task[None]] = set()

        async def failed(batch_id: str, exc: ServiceError) -> None:
            """A batch that asked for per_batch_errors fails alone; the stream goes on."""
            log.info("batch_error", batch_id=batch_id, code=exc.code.name, message=exc.message)
            await out.put(pb.StreamActivationsResponse(batch_id=batch_id, batch_complete=True, error=exc.to_proto()))

        async def run_batch(batch: ActivationBatch, toks: list[Tokenized], per_batch: bool) -> None:
            try:
                items = [WorkItem(tuple(t.ids), batch.sae.id, batch.selection) for t in toks]
                rows = await self.batcher.submit(items, timeout=_timeout(context, DEFAULT_TIMEOUT_S))
                last = len(toks) - 1
                for i, (t, r) in enumerate(zip(toks, rows, strict=True)):
                    for msg in text_responses(batch.batch_id, i, t, r, self.config.max_response_bytes):
                        msg.batch_complete = i == last and msg.text_complete
                        await out.put(msg)  # a slow reader throttles us here
            except ServiceError as exc:
                await (failed(batch.batch_id, exc) if per_batch else out.put(exc))
            except Exception as exc:  # a bug ends the stream (INTERNAL, logged)
                await out.put(exc)
            finally:
                inflight.discard(batch.batch_id)
                slots.release()

        async def prepare(req: pb.StreamActivationsRequest) -> tuple[ActivationBatch, list[Tokenized]]:
            batch = validate_batch(req, self.engine.saes, self.limits)
            if batch.token_ids:
                toks = [self.engine.describe(t) for t in batch.token_ids]
            else:
                # Tokenizing up to 256 long texts takes long enough to stall other streams; the
                # Rust tokenizer releases the GIL, so a thread keeps the event loop responsive.
                toks = await asyncio.to_thread(self.engine.describe_texts, batch.texts or [])
            check_token_counts([t.ids for t in toks], self.config, "texts" if batch.texts else "token_ids")
            return batch, toks

        async def read_requests() -> None:
            try:
                async for req in request_iterator:
                    if req.batch_id in inflight:  # always ends the stream: its answer could not be told apart
                        raise InvalidArgument.one("batch_id", f"{req.batch_id!r} is already in flight on this stream")
                    try:
                        batch, toks = await prepare(req)
                    except ServiceError as exc:
                        # An over-long batch_id is not echoed back: that error ends the stream.
                        if not req.per_batch_errors or len(req.batch_id) > MAX_BATCH_ID_CHARS:
                            raise
                        await failed(req.batch_id, exc)
                        continue
                    await slots.acquire()  # bounded in-flight batches per stream: backpressure on the client
                    inflight.add(batch.batch_id)
                    task = asyncio.create_task(run_batch(batch, toks, req.per_batch_errors))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if tasks:
                    await asyncio.gather(*list(tasks), return_exceptions=True)
                await out.put(None)
            except Exception as exc:  # ends the stream with this error
                # (CancelledError is not caught: after a cancel nobody reads `out`, and a
                # put on a full queue would never return.)
                await out.put(exc)

        reader = asyncio.create_task(read_requests())
        try:
            while True:
                item = await out.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            # Client gone, cancelled or failed: stop reading and drop queued work.
            reader.cancel()
            for task in list(tasks):
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(reader, *tasks, return_exceptions=True)

    # --- mining -------------------------------------------------------------------

    async def MineExemplars(
        self, request: pb.MineExemplarsRequest, context: aio.ServicerContext
    ) -> AsyncIterator[pb.MineExemplarsResponse]:
        query = validate_mine(request, self.engine.saes, self.config)
        index = await self._index(query.sae, query.split, context)
        for feature in query.feature_ids:
            picked = self.miner.pick(index, feature, query.top_k, query.bands, query.per_band, query.random, query.seed)
            windows = picked.top + [w for _, _, ws in picked.bands for w in ws] + picked.random
            traces = dict(zip(windows, await self.miner.traces(index, query.sae, feature, windows), strict=True))
            made = {w: self._exemplar(index, feature, w, traces[w]) for w in windows}
            yield pb.MineExemplarsResponse(
                feature_id=feature,
                top=[made[w] for w in picked.top],
                bands=[pb.QuantileBand(lower=lo, upper=hi, exemplars=[made[w] for w in ws])
                       for lo, hi, ws in picked.bands],
                random_non_activating=[made[w] for w in picked.random],
                activating_windows=picked.activating_windows,
                total_windows=picked.total_windows,
            )

    def _exemplar(self, index: MiningIndex, feature: int, window: int, trace: np.ndarray) -> types_pb2.Exemplar:
        tok = self.engine.describe(index.tokens[window])
        counted = counted_positions(len(trace), tok.special_positions)
        peak = counted[int(np.argmax(trace[counted]))] if counted else 0
        return types_pb2.Exemplar(
            window_id=index.window_ids[window],
            text=self.engine.lm.decode(index.tokens[window]),
            tokens=tokens_to_proto(tok),
            trace=types_pb2.FeatureTrace(feature_id=feature, values=trace.astype("<f4").tobytes()),
            max_activation=float(max(trace[peak], 0.0)) if counted else 0.0,
            max_token_index=peak,
        )

    async def _index(self, sae: LoadedSae, split: str, context: aio.ServicerContext) -> MiningIndex:
        timeout = _timeout(context, MINING_TIMEOUT_S)
        if timeout <= 0:
            raise DeadlineExceeded("the deadline passed before the exemplar index was read")
        try:
            return await asyncio.wait_for(self.miner.index(sae, split), timeout)
        except TimeoutError:
            raise ResourceExhausted(
                f"the exemplar index for SAE {sae.id!r} / {split} is still being built; it continues in the "
                "background, retry later", retry_after_s=30.0,
            ) from None

    async def GetFeatureStatistics(
        self, request: pb.GetFeatureStatisticsRequest, context: aio.ServicerContext
    ) -> pb.GetFeatureStatisticsResponse:
        sae, split, ids = validate_stats(request, self.engine.saes, self.config)
        index = await self._index(sae, split, context)
        sel = np.asarray(ids, dtype=np.int64)
        fire = index.fire_tokens[sel]
        mean = np.divide(index.act_sum[sel], fire, out=np.zeros(len(sel)), where=fire > 0)
        window_counts = np.diff(index.feat_ptr)[sel] if index.feat_ptr is not None else np.zeros(len(sel))
        return pb.GetFeatureStatisticsResponse(
            feature_ids=sel.astype("<u4").tobytes(),
            firing_frequency=(fire / max(index.tokens_scanned, 1)).astype("<f4").tobytes(),
            max_activation=index.act_max[sel].astype("<f4").tobytes(),
            mean_active_activation=mean.astype("<f4").tobytes(),
            window_frequency=(window_counts / max(index.n_windows, 1)).astype("<f4").tobytes(),
            tokens_scanned=index.tokens_scanned,
            windows_scanned=index.n_windows,
        )

    async def BuildExemplarIndex(
        self, request: pb.BuildExemplarIndexRequest, context: aio.ServicerContext
    ) -> AsyncIterator[pb.BuildExemplarIndexResponse]:
        sae, split, interval = validate_build(request, self.engine.saes)
        cached = self.miner.cached(sae, split)
        # The build is shared and shielded: this call leaving (or its deadline) never stops it.
        build = asyncio.ensure_future(self.miner.index(sae, split))
        try:
            while True:
                done, _ = await asyncio.wait({build}, timeout=interval)
                if done:
                    build.result()  # a failed build ends the stream with its error
                    break
                progress = self.miner.progress(sae, split)
                if progress is not None:
                    yield pb.BuildExemplarIndexResponse(progress=_progress_message(progress, request.split, cached))
        finally:
            if not build.done():
                build.cancel()  # only this caller's wait: index() shields the build itself
        progress = self.miner.progress(sae, split)
        final = (_progress_message(progress, request.split, cached) if progress is not None
                 else types_pb2.MiningProgress(sae_id=sae.id, split=request.split, cached=cached))
        final.phase = types_pb2.MINING_PHASE_READY
        final.eta_seconds = 0.0
        yield pb.BuildExemplarIndexResponse(progress=final)


_PHASES = {"preparing": types_pb2.MINING_PHASE_PREPARING, "scanning": types_pb2.MINING_PHASE_SCANNING,
           "ready": types_pb2.MINING_PHASE_READY}


def _progress_message(
    p: BuildProgress, split: types_pb2.CorpusSplit.ValueType, cached: bool
) -> types_pb2.MiningProgress:
    msg = types_pb2.MiningProgress(
        sae_id=p.sae_id, split=split or types_pb2.CORPUS_SPLIT_EXEMPLAR,
        phase=_PHASES.get(p.phase, types_pb2.MINING_PHASE_UNSPECIFIED), windows_done=p.windows_done,
        windows_total=p.windows_total, tokens_done=p.tokens_done, tokens_total=p.tokens_total,
        tokens_per_second=p.tokens_per_second, resumed=p.resumed_tokens > 0, cached=cached,
        shards_done=p.shards_done, shards_total=p.shards_total,
    )
    eta = p.eta_seconds
    if eta is not None:
        msg.eta_seconds = eta
    return msg
