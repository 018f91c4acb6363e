"""Fixtures shared by the suite: one embedded model loaded once per session, a
real gRPC server on a loopback port, and a small corpus for mining tests."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from sagex.activation.assets.paths import EMBEDDED_SAE_DIR, EMBEDDED_SAE_ID
from sagex.activation.config import ActivationConfig
from sagex.server.lifecycle import ServerOptions
from tests.builders import ARCHITECTURES, save_random_sae
from tests.fakes.transformers_server import transformers_serve_fixture

D_MODEL = 576  # the embedded SmolLM2-135M
RANDOM_SAE_HOOKS = {"standard": 1, "topk": 3, "jumprelu": 2, "gated": 3}

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "def parse(path):\n    return open(path).read()",
    "In the beginning God created the heaven and the earth.",
    "You will pass the exam if you keep passing the practice tests.",
]


# One real OpenAI-compatible server (transformers serve + SmolLM2) for every test that asks for it.
transformers_serve = transformers_serve_fixture()


@pytest.fixture(autouse=True)
def _fresh_llm_endpoints() -> Iterator[None]:
    """What the LLM backend learned about an endpoint is kept per base URL for the process;
    a later test's fake server may get the same port, so each test starts from nothing."""
    from sagex.llm import endpoint

    endpoint.forget_all()
    yield


@pytest.fixture(scope="session")
def llama_server() -> Iterator[Any]:
    """llama.cpp's server (llama-cpp-python) with the packaged SmolLM2-135M-Instruct GGUF,
    one for the session. Skips, saying why, where `make llm-setup` has not been run."""
    from sagex.llm.local import LlamaServer, LlamaServerOptions, missing

    reason = missing()
    if reason is not None:
        pytest.skip(reason)
    with LlamaServer(LlamaServerOptions(port=0, n_ctx=4096, n_threads=2)) as server:
        yield server


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def random_saes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("saes")
    return {
        f"rand-{arch}": save_random_sae(root / arch, arch, D_MODEL, 256, f"model.layers.{RANDOM_SAE_HOOKS[arch]}",
                                        seed=i)
        for i, arch in enumerate(ARCHITECTURES)
    }


@pytest.fixture(scope="session")
def mining_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small corpus (user file only, no Debian packages) so mining tests are quick."""
    from sagex.activation.assets.corpus import build_corpus, pydoc_topics

    root = tmp_path_factory.mktemp("corpus")
    texts = [t for t in pydoc_topics() if len(t) > 200][:160]
    source = root / "texts.jsonl"
    import json

    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    # With Debian sources off the corpus is stdlib docstrings, pydoc topics and this
    # file (whose texts duplicate pydoc topics and are dropped): small and quick to mine.
    build_corpus(root / "built", extra=[source], use_debian=False)
    return root / "built"


@pytest.fixture(scope="session")
def activation_config(
    random_saes: dict[str, Path], mining_corpus: Path, tmp_path_factory: pytest.TempPathFactory
) -> ActivationConfig:
    return ActivationConfig(
        mining_cache_dir=tmp_path_factory.mktemp("mining"),
        saes={EMBEDDED_SAE_ID: EMBEDDED_SAE_DIR, **random_saes},
        corpus_dir=mining_corpus,
        max_mining_tokens=6000,
        window_tokens=32,
        server=ServerOptions(port=0, drain_seconds=0.0, grace_seconds=1.0),
    )


@pytest.fixture(scope="session")
def runtime(activation_config: ActivationConfig) -> Iterator[object]:
    from sagex.activation.server import build_runtime

    rt = build_runtime(activation_config)
    yield rt
    rt.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def server(activation_config: ActivationConfig, runtime: object) -> AsyncIterator[object]:
    from sagex.activation.server import running_activation_server

    async with running_activation_server(activation_config, runtime) as (running, _):  # type: ignore[arg-type]
        yield running


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def steer_server(mining_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Any, Any]]:
    """A second activation server, with steering on (the shared one has it off): (stub, runtime, port)."""
    from sagex.activation.server import running_activation_server
    from sagex.api.activation.v1 import activation_service_pb2_grpc as pb_grpc
    from sagex.server.lifecycle import channel_options

    config = ActivationConfig(
        saes={EMBEDDED_SAE_ID: EMBEDDED_SAE_DIR}, corpus_dir=mining_corpus,
        mining_cache_dir=tmp_path_factory.mktemp("steer-mining"), max_mining_tokens=6000, window_tokens=32,
        steering=True, max_steer_new_tokens=48, max_steer_strength=500.0,
        server=ServerOptions(port=0, drain_seconds=0.0, grace_seconds=1.0),
    )
    async with running_activation_server(config) as (running, runtime):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}", options=channel_options()) as channel:
            yield pb_grpc.ActivationServiceStub(channel), runtime, running.port


@pytest_asyncio.fixture(loop_scope="session")
async def stub(server: object) -> AsyncIterator[object]:
    from sagex.api.activation.v1 import activation_service_pb2_grpc as pb_grpc
    from sagex.server.lifecycle import channel_options

    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=channel_options()) as channel:  # type: ignore[attr-defined]
        yield pb_grpc.ActivationServiceStub(channel)



@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def session_stub(server: object) -> AsyncIterator[object]:
    from sagex.api.activation.v1 import activation_service_pb2_grpc as pb_grpc
    from sagex.server.lifecycle import channel_options

    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=channel_options()) as channel:  # type: ignore[attr-defined]
        yield pb_grpc.ActivationServiceStub(channel)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def token_features(session_stub: Any) -> dict[int, str]:
    """Features whose top exemplar-split windows nearly all peak on one word
    (measured, not assumed): feature id -> that word. At least four."""
    from collections import Counter

    import numpy as np

    from sagex.activation.assets.paths import EMBEDDED_SAE_ID
    from sagex.api.activation.v1 import activation_service_pb2 as apb

    stats = await session_stub.GetFeatureStatistics(apb.GetFeatureStatisticsRequest(sae_id=EMBEDDED_SAE_ID))
    wfreq = np.frombuffer(stats.window_frequency, "<f4")
    candidates = [int(f) for f in np.flatnonzero((wfreq > 0.01) & (wfreq < 0.3))][:120]
    found: dict[int, str] = {}
    request = apb.MineExemplarsRequest(sae_id=EMBEDDED_SAE_ID, feature_ids=candidates, top_k=10)
    async for resp in session_stub.MineExemplars(request):
        peaks = Counter(e.tokens.texts[e.max_token_index].strip().lower() for e in resp.top)
        token, count = peaks.most_common(1)[0] if peaks else ("", 0)
        if len(resp.top) >= 8 and count >= 0.8 * len(resp.top) and len(token) >= 2 and token.isalpha():
            found[resp.feature_id] = token
    assert len(found) >= 4, f"only {len(found)} clearly token-level features in the test corpus"
    return found


class SlowMining:
    """An activation server (the session's model) whose miner has an empty cache and
    whose scan pauses ``pause_s`` per batch, one batch at a time: a build lasts at
    least batches x pause_s on any machine, long enough to be watched."""

    def __init__(self, address: str, miner: Any, counts: dict[str, int], pause_s: float) -> None:
        self.address, self.miner, self.counts, self.pause_s = address, miner, counts, pause_s

    def progress(self, runtime: Any, split: str = "exemplar") -> Any:
        return self.miner.progress(runtime.engine.saes[EMBEDDED_SAE_ID], split)


@pytest.fixture
def slow_mining(runtime: Any, activation_config: ActivationConfig, tmp_path: Path) -> Any:
    """``async with slow_mining(pause_s) as server:`` a SlowMining server (batches of 4 windows of 32 tokens,
    blocks of 4 batches, 3000 tokens per split)."""
    import asyncio
    from contextlib import asynccontextmanager
    from dataclasses import replace

    from sagex.activation.mining import ExemplarMiner
    from sagex.activation.server import ActivationRuntime, running_activation_server

    @asynccontextmanager
    async def start(pause_s: float) -> AsyncIterator[SlowMining]:
        counts = {"batches": 0}
        lock = asyncio.Lock()
        holder: list[Any] = []

        async def submit(items):  # type: ignore[no-untyped-def]
            builds = holder[0]._progress.values()  # any build of this miner
            if any(p.phase == "scanning" for p in builds):  # only scans are slow, not traces and probes
                counts["batches"] += 1
                async with lock:
                    await asyncio.sleep(pause_s)
            return await runtime.batcher.submit(items, exclusive=True)

        miner = ExemplarMiner(
            submit, runtime.engine.lm.content_ids, activation_config.corpus_dir, tmp_path / "mining", "test-model",
            window_tokens=32, max_tokens=3000, batch_windows=4, special_ids=runtime.engine.lm.special_ids,
            checkpoint_every=4,  # blocks of 16 windows: a few hash shards, as a large split has
        )
        holder.append(miner)
        config = replace(activation_config, mining_cache_dir=tmp_path / "mining")
        rt = ActivationRuntime(runtime.engine, runtime.batcher, miner, runtime.output)
        async with running_activation_server(config, rt) as (running, _):
            yield SlowMining(f"127.0.0.1:{running.port}", miner, counts, pause_s)

    return start
