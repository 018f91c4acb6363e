"""Assembly of the activation server: engine, batcher, miner, servicer, health."""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import structlog

from sagex.activation.assets.corpus import build_corpus
from sagex.activation.assets.fingerprint import folder_fingerprint
from sagex.activation.assets.paths import cache_dir
from sagex.activation.batcher import DynamicBatcher
from sagex.activation.config import ActivationConfig
from sagex.activation.engine import ActivationEngine
from sagex.activation.mining import ExemplarMiner
from sagex.activation.outputside import OutputSide
from sagex.activation.servicer import ActivationServicer
from sagex.api.activation.v1 import activation_service_pb2, activation_service_pb2_grpc
from sagex.server.lifecycle import RunningServer, Service, serve_until_signal, start_server

log = structlog.get_logger(__name__)

SERVICE_NAME = activation_service_pb2.DESCRIPTOR.services_by_name["ActivationService"].full_name


@dataclass
class ActivationRuntime:
    engine: ActivationEngine
    batcher: DynamicBatcher
    miner: ExemplarMiner
    output: OutputSide | None = None

    def close(self) -> None:
        self.batcher.close()
        if self.output is not None:
            self.output.close()


def _model_key(engine: ActivationEngine) -> str:
    """Weights and the facts that change activations (dtype, BOS): the mining cache key."""
    lm = engine.lm
    weights = folder_fingerprint(lm.model_dir, cache_dir() / "model-fingerprints.json")
    raw = f"{weights}|{lm.architecture}|{lm.dtype}|{lm.prepend_bos}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def build_runtime(config: ActivationConfig) -> ActivationRuntime:
    """Load everything (slow: model and SAEs) and warm it up. Runs off the event loop."""
    engine = ActivationEngine(config)
    batcher = DynamicBatcher(engine.run, config.batch_token_budget, config.max_queue_texts)
    batcher.start()
    corpus_dir = config.corpus_dir or cache_dir() / "corpus"
    if not (corpus_dir / "manifest.json").is_file():
        build_corpus(corpus_dir)
    miner = ExemplarMiner(
        submit=functools.partial(batcher.submit, exclusive=True),  # a mining batch runs alone: same bits anywhere
        tokenize=engine.lm.content_ids,
        corpus_dir=Path(corpus_dir),
        cache_root=config.mining_cache_dir or cache_dir() / "mining",
        model_key=_model_key(engine),
        window_tokens=config.window_tokens,
        max_tokens=config.max_mining_tokens,
        batch_windows=config.mining_batch_windows,
        special_ids=engine.lm.special_ids,
        prefix=engine.lm.prefix,
        shards=config.mining_shards,
        checkpoint_every=config.mining_block_batches,
    )
    lm = engine.lm
    eos = lm.tokenizer.eos_token_id
    output = OutputSide.build(config, lm.model_dir, engine.device, lm.dtype, lm.pad_id, [] if eos is None else [eos])
    engine.warmup()
    return ActivationRuntime(engine, batcher, miner, output)


def activation_service(servicer: ActivationServicer) -> Service:
    return Service(SERVICE_NAME,
                   lambda server: activation_service_pb2_grpc.add_ActivationServiceServicer_to_server(servicer, server))


@asynccontextmanager
async def running_activation_server(
    config: ActivationConfig, runtime: ActivationRuntime | None = None
) -> AsyncIterator[tuple[RunningServer, ActivationRuntime]]:
    """Start a server on ``config.server`` (port 0 picks one), ready when yielded.
    A given ``runtime`` is reused and left open (tests share one model)."""
    servicer = ActivationServicer(config)
    running = await start_server([activation_service(servicer)], config.server)
    rt = runtime
    try:
        if rt is None:
            rt = await asyncio.to_thread(build_runtime, config)
        servicer.attach(rt.engine, rt.batcher, rt.miner, rt.output)
        await running.set_ready()
        yield running, rt
    finally:
        await running.stop(config.server)
        if runtime is None and rt is not None:  # we built it, we close it
            rt.close()


async def serve(config: ActivationConfig) -> None:
    """Run the activation server until SIGTERM/SIGINT."""
    servicer = ActivationServicer(config)
    holder: list[ActivationRuntime] = []

    async def ready() -> None:
        rt = await asyncio.to_thread(build_runtime, config)
        holder.append(rt)
        servicer.attach(rt.engine, rt.batcher, rt.miner, rt.output)

    async def on_stop() -> None:
        for rt in holder:
            rt.close()

    await serve_until_signal([activation_service(servicer)], config.server, ready=ready, on_stop=on_stop)
