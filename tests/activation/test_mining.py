"""Exemplar mining against a brute-force scan of the same windows, reproducibility
by seed, the disk cache, and statistics."""

from __future__ import annotations

import numpy as np
import pytest

from sagex.activation.assets.paths import EMBEDDED_SAE_ID
from sagex.activation.encode import Threshold
from sagex.activation.engine import WorkItem
from sagex.activation.mining import MiningIndex
from sagex.api.activation.v1 import activation_service_pb2 as pb

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
def brute_force(runtime):  # type: ignore[no-untyped-def]
    """Per-window feature maxima over non-special tokens, window by window, no index."""
    cache: dict[str, tuple[list[tuple[int, ...]], np.ndarray]] = {}

    def scan(index) -> np.ndarray:  # type: ignore[no-untyped-def]
        key = str(id(index))
        if key not in cache:
            engine = runtime.engine
            d_sae = engine.saes[EMBEDDED_SAE_ID].params.d_sae
            maxima = np.zeros((index.n_windows, d_sae), np.float32)
            for w, toks in enumerate(index.tokens):
                dense = engine.run([WorkItem(toks, EMBEDDED_SAE_ID, Threshold(0.0))])[0].to_dense(d_sae).numpy()
                keep = [i > 0 and t not in engine.lm.special_ids for i, t in enumerate(toks)]  # as documented
                maxima[w] = dense[keep].max(0)
            cache[key] = (index.tokens, maxima)
        return cache[key][1]

    return scan


async def _mine(stub, **kwargs) -> list[pb.MineExemplarsResponse]:  # type: ignore[no-untyped-def]
    return [r async for r in stub.MineExemplars(pb.MineExemplarsRequest(sae_id=EMBEDDED_SAE_ID, **kwargs))]


async def test_top_exemplars_match_brute_force(stub, runtime, brute_force) -> None:  # type: ignore[no-untyped-def]
    await _mine(stub, feature_ids=[0], top_k=1)  # builds the index
    index = await runtime.miner.index(runtime.engine.saes[EMBEDDED_SAE_ID], "exemplar")
    maxima = brute_force(index)
    busy = [int(f) for f in np.argsort(-(maxima > 0).sum(0))[:5]]
    responses = await _mine(stub, feature_ids=busy, top_k=5)
    for resp, feature in zip(responses, busy, strict=True):
        column = maxima[:, feature]
        assert resp.activating_windows == int((column > 0).sum())
        assert resp.total_windows == index.n_windows
        got = [index.window_ids.index(e.window_id) for e in resp.top]
        expected_values = np.sort(column)[::-1][: len(got)]
        np.testing.assert_allclose([column[w] for w in got], expected_values, rtol=1e-4, atol=1e-5)
        for e in resp.top:
            trace = np.frombuffer(e.trace.values, "<f4")
            assert len(trace) == len(e.tokens.ids) == len(e.tokens.texts)
            assert e.max_activation == pytest.approx(float(trace[1:].max()), rel=1e-5)
            assert e.max_token_index > 0 and trace[e.max_token_index] == pytest.approx(e.max_activation)
            assert e.text == runtime.engine.lm.decode(e.tokens.ids)
            assert e.max_activation == pytest.approx(float(column[index.window_ids.index(e.window_id)]), rel=1e-4)


async def test_bands_and_random_are_reproducible_and_correct(stub, runtime, brute_force) -> None:  # type: ignore[no-untyped-def]
    index = await runtime.miner.index(runtime.engine.saes[EMBEDDED_SAE_ID], "exemplar")
    maxima = brute_force(index)
    counts = (maxima > 0).sum(0)
    feature = int(np.argmin(np.abs(counts - index.n_windows / 2)))  # fires in about half the windows
    assert 0 < counts[feature] < index.n_windows - 8
    kwargs = {"feature_ids": [feature], "top_k": 2, "quantile_bands": 3, "per_band": 2, "random_non_activating": 4}
    a = (await _mine(stub, seed=7, **kwargs))[0]
    b = (await _mine(stub, seed=7, **kwargs))[0]
    c = (await _mine(stub, seed=8, **kwargs))[0]
    assert a == b, "same seed, same windows"
    assert [e.window_id for e in a.random_non_activating] != [e.window_id for e in c.random_non_activating]
    assert len(a.bands) == 3
    assert a.bands[0].upper <= a.bands[1].lower <= a.bands[2].lower
    for band in a.bands:
        for e in band.exemplars:
            assert band.lower - 1e-5 <= e.max_activation <= band.upper + 1e-5
    for e in a.random_non_activating:
        assert maxima[index.window_ids.index(e.window_id), feature] == 0
        assert not np.frombuffer(e.trace.values, "<f4").any()


async def test_statistics_match_brute_force(stub, runtime, brute_force, activation_config) -> None:  # type: ignore[no-untyped-def]
    index = await runtime.miner.index(runtime.engine.saes[EMBEDDED_SAE_ID], "exemplar")
    maxima = brute_force(index)
    stats = await stub.GetFeatureStatistics(pb.GetFeatureStatisticsRequest(sae_id=EMBEDDED_SAE_ID))
    assert stats.windows_scanned == index.n_windows
    np.testing.assert_allclose(np.frombuffer(stats.max_activation, "<f4"), maxima.max(0), rtol=1e-4, atol=1e-5)
    window_freq = np.frombuffer(stats.window_frequency, "<f4")
    np.testing.assert_allclose(window_freq, (maxima > 0).mean(0), rtol=1e-5, atol=1e-6)
    freq = np.frombuffer(stats.firing_frequency, "<f4")
    assert freq.sum() > 0 and (freq <= window_freq + 1e-6).all()
    # The index was written to the cache and reloads to the same table.
    cached = [p for p in activation_config.mining_cache_dir.iterdir() if (p / "complete.json").is_file()]
    assert cached
    reloaded = MiningIndex(index.root)
    assert reloaded.window_ids == index.window_ids and reloaded.tokens == index.tokens
    np.testing.assert_array_equal(reloaded.win_max, index.win_max)
    np.testing.assert_array_equal(reloaded.feat_ptr, index.feat_ptr)


async def test_interrupted_scan_resumes_from_its_checkpoint(runtime, activation_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A build that dies mid-shard resumes that shard at its last checkpoint, and the
    index is the same bits as an uninterrupted build's."""
    from sagex.activation.mining import ExemplarMiner

    sae = runtime.engine.saes[EMBEDDED_SAE_ID]
    calls = {"n": 0}

    async def flaky_submit(items):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] > 7:
            raise RuntimeError("replica died")
        return await runtime.batcher.submit(items, exclusive=True)

    def miner(submit, cache):  # type: ignore[no-untyped-def]
        return ExemplarMiner(
            submit, runtime.engine.lm.content_ids, activation_config.corpus_dir, cache, "test-model",
            window_tokens=32, max_tokens=3000, batch_windows=4, special_ids=runtime.engine.lm.special_ids,
            checkpoint_every=3, shards=2,
        )

    with pytest.raises(RuntimeError, match="replica died"):
        await miner(flaky_submit, tmp_path / "a").index(sae, "exemplar")
    [partial] = list((tmp_path / "a").iterdir())
    assert not (partial / "complete.json").is_file()
    with np.load(partial / "shards" / "0-of-2" / "scan.npz") as ckpt:
        assert int(ckpt["windows_done"]) == 6 * 4, "two checkpoints of 3 batches were saved"

    counted = {"n": 0}

    async def counting_submit(items):  # type: ignore[no-untyped-def]
        counted["n"] += 1
        return await runtime.batcher.submit(items, exclusive=True)

    resumed = await miner(counting_submit, tmp_path / "a").index(sae, "exemplar")
    fresh = await miner(lambda items: runtime.batcher.submit(items, exclusive=True), tmp_path / "b").index(
        sae, "exemplar")
    per_shard = np.bincount(np.fromfile(partial / "shard_of.u16", np.uint16), minlength=2)
    assert counted["n"] == sum(-(-int(n) // 4) for n in per_shard) - 6, "the resumed scan skips checkpointed batches"
    assert (partial / "complete.json").is_file()
    assert resumed.window_ids == fresh.window_ids
    for name in ("win_count.i32", "win_feat.i32", "win_max.f32", "feat_win.i32", "feat_max.f32", "feat_ptr.npy",
                 "stats.npz"):
        assert (resumed.root / name).read_bytes() == (fresh.root / name).read_bytes(), name


async def test_length_packed_scan_equals_the_corpus_order_scan(runtime, activation_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Packing windows by length changes only which windows share a forward pass:
    the index (window maxima, statistics) and every pick from it stay the same,
    while the padded tokens the model computes drop."""
    from sagex.activation.mining import ExemplarMiner

    sae = runtime.engine.saes[EMBEDDED_SAE_ID]
    seen: dict[bool, list[list[int]]] = {True: [], False: []}

    def miner(pack: bool):  # type: ignore[no-untyped-def]
        async def submit(items):  # type: ignore[no-untyped-def]
            seen[pack].append([len(it.ids) for it in items])
            return await runtime.batcher.submit(items, exclusive=True)

        return ExemplarMiner(
            submit, runtime.engine.lm.content_ids, activation_config.corpus_dir, tmp_path / str(pack), "test-model",
            window_tokens=32, max_tokens=4000, batch_windows=8, special_ids=runtime.engine.lm.special_ids,
            pack_by_length=pack, shards=1,  # one shard: packing alone (a shard packs only its own windows)
        )

    packed = await miner(True).index(sae, "exemplar")
    plain = await miner(False).index(sae, "exemplar")
    assert packed.window_ids == plain.window_ids and packed.tokens == plain.tokens
    np.testing.assert_array_equal(packed.win_ptr, plain.win_ptr)
    np.testing.assert_array_equal(packed.win_feat, plain.win_feat)
    np.testing.assert_allclose(packed.win_max, plain.win_max, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(packed.fire_tokens, plain.fire_tokens)
    np.testing.assert_allclose(packed.act_sum, plain.act_sum, rtol=1e-5)
    np.testing.assert_allclose(packed.act_max, plain.act_max, rtol=1e-5, atol=1e-6)
    assert packed.tokens_scanned == plain.tokens_scanned
    busy = [int(f) for f in np.argsort(-np.diff(packed.feat_ptr))[:8]]
    for feature in busy:
        a = ExemplarMiner.pick(packed, feature, top_k=5, bands=3, per_band=2, n_random=3, seed=1)
        b = ExemplarMiner.pick(plain, feature, top_k=5, bands=3, per_band=2, n_random=3, seed=1)
        assert (a.top, a.random, a.activating_windows) == (b.top, b.random, b.activating_windows)
        assert [w for *_, w in a.bands] == [w for *_, w in b.bands]

    def padding(batches: list[list[int]]) -> float:
        return 1 - sum(map(sum, batches)) / sum(len(b) * max(b) for b in batches)

    assert sorted(map(sum, seen[True])) != sorted(map(sum, seen[False])), "the two scans batched differently"
    assert padding(seen[True]) < 0.05 and padding(seen[True]) < padding(seen[False]) / 2


async def test_replicas_sharing_a_cache_volume_share_the_build(runtime, activation_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two miners (two replicas) on one cache folder: each claims shards the other does
    not hold, every batch runs once in all, and both read the same index."""
    import asyncio

    from sagex.activation.mining import ExemplarMiner

    sae = runtime.engine.saes[EMBEDDED_SAE_ID]
    counts = {"a": 0, "b": 0}

    def replica(name: str) -> ExemplarMiner:
        async def submit(items):  # type: ignore[no-untyped-def]
            counts[name] += 1
            await asyncio.sleep(0.05)  # slow enough that both replicas find shards to claim
            return await runtime.batcher.submit(items, exclusive=True)

        return ExemplarMiner(
            submit, runtime.engine.lm.content_ids, activation_config.corpus_dir, tmp_path / "shared", "test-model",
            window_tokens=32, max_tokens=2000, batch_windows=4, special_ids=runtime.engine.lm.special_ids, shards=4,
            checkpoint_every=2,  # blocks of 8 windows: the small split still gets its 4 shards
        )

    a, b = await asyncio.gather(replica("a").index(sae, "exemplar"), replica("b").index(sae, "exemplar"))
    per_shard = np.bincount(np.fromfile(a.root / "shard_of.u16", np.uint16), minlength=4)
    assert len(per_shard) == 4
    assert sum(counts.values()) == sum(-(-int(n) // 4) for n in per_shard), counts
    assert min(counts.values()) > 0, f"both replicas mined: {counts}"
    assert a.window_ids == b.window_ids
    np.testing.assert_array_equal(a.feat_ptr, b.feat_ptr)
    np.testing.assert_array_equal(a.activating(int(np.argmax(np.diff(a.feat_ptr))))[0],
                                  b.activating(int(np.argmax(np.diff(b.feat_ptr))))[0])


async def test_a_build_under_interactive_load_writes_a_quiet_builds_bytes(runtime, activation_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The server's mining batches run alone (``exclusive``): interactive requests of a long
    text all through a build change no bit of the index (merged into one forward pass, a
    window would be padded to the long text and round differently)."""
    import asyncio

    from sagex.activation.mining import ExemplarMiner

    sae = runtime.engine.saes[EMBEDDED_SAE_ID]
    long = tuple(runtime.engine.tokenize(["word " * 200])[0])

    def miner(cache):  # type: ignore[no-untyped-def]
        return ExemplarMiner(  # the submit the server wires (server.build_runtime)
            runtime.miner._submit, runtime.engine.lm.content_ids, activation_config.corpus_dir, cache, "test-model",
            window_tokens=32, max_tokens=4000, batch_windows=4, special_ids=runtime.engine.lm.special_ids,
            checkpoint_every=2, shards=4,
        )

    quiet = await miner(tmp_path / "quiet").index(sae, "exemplar")
    stop = asyncio.Event()

    async def traffic() -> int:
        sent = 0
        while not stop.is_set():
            await runtime.batcher.submit([WorkItem(long, EMBEDDED_SAE_ID, Threshold(0.0))])
            sent += 1
        return sent

    # Eight callers: requests wait in the queue next to the scan's batches (with the server's
    # submit made non-exclusive, about ten batches merge and this test fails).
    users = [asyncio.ensure_future(traffic()) for _ in range(8)]
    busy = await miner(tmp_path / "busy").index(sae, "exemplar")
    stop.set()
    assert min(await asyncio.gather(*users)) > 0
    files = sorted(p.relative_to(quiet.root) for p in quiet.root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(busy.root) for p in busy.root.rglob("*") if p.is_file())
    assert [f for f in files if (quiet.root / f).read_bytes() != (busy.root / f).read_bytes()] == []
