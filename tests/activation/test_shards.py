"""Sharded index builds: two replicas each mine one shard of 2 onto a shared cache
folder (one is killed mid-scan and resumes), the shards are merged, and the merged
index equals one server's full build: the same windows in the same order, the same
features per window, the same exemplar picks and firing counts; maxima and sums
equal within float tolerance (the forward pass may round differently when a window
shares its batch with other windows)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from sagex.activation.assets.paths import EMBEDDED_SAE_ID
from sagex.activation.shards import shard_dir, shard_of


def test_shard_of_is_a_stable_content_hash() -> None:
    windows = [tuple(range(k, k + 9)) for k in range(200)]
    for n in (1, 2, 3, 7):
        assigned = [shard_of(w, n) for w in windows]
        assert set(assigned) == set(range(n)), "every shard gets windows"
        assert assigned == [shard_of(list(w), n) for w in windows], "a function of the token ids alone"
    # Pinned: a shard must not move between machines, Python versions or releases.
    assert [shard_of((1, 2, 3, 4), 1000), shard_of((50256, 7, 7, 7, 7), 1000)] == PINNED


PINNED = [203, 68]


@pytest.mark.asyncio(loop_scope="session")
async def test_two_replicas_build_shards_that_merge_into_the_full_index(runtime, activation_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sagex.activation.mining import ExemplarMiner

    sae = runtime.engine.saes[EMBEDDED_SAE_ID]
    counts = {"a": 0, "b": 0}

    def replica(name: str, cache, die_after: int | None = None) -> ExemplarMiner:  # type: ignore[no-untyped-def]
        async def submit(items):  # type: ignore[no-untyped-def]
            counts[name] += 1
            if die_after is not None and counts[name] > die_after:
                raise RuntimeError("replica killed")
            return await runtime.batcher.submit(items)

        return ExemplarMiner(
            submit, runtime.engine.lm.content_ids, activation_config.corpus_dir, cache, "test-model",
            window_tokens=32, max_tokens=3000, batch_windows=4, special_ids=runtime.engine.lm.special_ids,
            checkpoint_every=2,
        )

    shared = tmp_path / "shared"
    killed, ok = await asyncio.gather(replica("a", shared, die_after=5).build_shard(sae, "exemplar", 0, 2),
                                      replica("b", shared).build_shard(sae, "exemplar", 1, 2),
                                      return_exceptions=True)
    assert isinstance(killed, RuntimeError) and not isinstance(ok, BaseException)
    [key] = list(shared.iterdir())
    partial = shard_dir(key, 0, 2)
    assert not (partial / "shard.json").is_file()
    with np.load(partial / "scan.npz") as ckpt:
        assert int(ckpt["windows_done"]) == 2 * 2 * 4, "two checkpoints of 2 batches of 4 were saved"
    with pytest.raises(ValueError, match=r"shards \[0\] of 2 are not built"):
        await replica("b", shared).merge(sae, "exemplar", 2)

    counts["a"] = 0
    await replica("a", shared).build_shard(sae, "exemplar", 0, 2)  # resumes
    shard0 = np.fromfile(partial / "windows.i64", np.int64)
    assert counts["a"] == -(-(len(shard0) - 16) // 4), "the resumed shard scan skips its checkpointed windows"
    merged = await replica("a", shared).merge(sae, "exemplar", 2)
    full = await replica("b", tmp_path / "full").index(sae, "exemplar")

    shard1 = np.fromfile(shard_dir(key, 1, 2) / "windows.i64", np.int64)
    assert len(shard0) and len(shard1) and len(shard0) + len(shard1) == full.n_windows
    assert merged.window_ids == full.window_ids and merged.tokens == full.tokens
    np.testing.assert_array_equal(merged.win_ptr, full.win_ptr)
    np.testing.assert_array_equal(merged.win_feat, full.win_feat)
    np.testing.assert_allclose(merged.win_max, full.win_max, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(merged.feat_ptr, full.feat_ptr)
    np.testing.assert_array_equal(merged.fire_tokens, full.fire_tokens)
    np.testing.assert_allclose(merged.act_sum, full.act_sum, rtol=1e-6)
    np.testing.assert_allclose(merged.act_max, full.act_max, rtol=1e-5, atol=1e-6)
    assert merged.tokens_scanned == full.tokens_scanned
    busy = [int(f) for f in np.argsort(-np.diff(full.feat_ptr))[:8]]
    for feature in busy:
        a = ExemplarMiner.pick(merged, feature, top_k=5, bands=3, per_band=2, n_random=3, seed=1)
        b = ExemplarMiner.pick(full, feature, top_k=5, bands=3, per_band=2, n_random=3, seed=1)
        assert a == b or ((a.top, a.random, a.activating_windows) == (b.top, b.random, b.activating_windows)
                          and [w for *_, w in a.bands] == [w for *_, w in b.bands])
    print("max |merged - full| window maximum:", float(np.abs(merged.win_max - full.win_max).max()),
          "bytes identical:", np.array_equal(merged.win_max, full.win_max))


def test_the_mine_command_builds_shards_and_the_last_one_merges(mining_corpus, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """What each pod of the Indexed Job runs (deploy/k8s/mining-job.yaml), as real processes."""
    import subprocess
    import sys

    from sagex.activation.mining import MiningIndex

    config = tmp_path / "activation.toml"
    config.write_text(f'[activation]\ncorpus_dir = "{mining_corpus}"\nmining_cache_dir = "{tmp_path / "cache"}"\n'
                      "max_mining_tokens = 1200\nwindow_tokens = 32\nmining_batch_windows = 4\n")

    def mine(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sagex.activation.mine", "--config", str(config), "--shards", "2",
                               "--log-level", "warning", *flags], capture_output=True, text=True, timeout=240)

    first = mine("--shard", "1", "--merge")
    assert first.returncode == 0, first.stderr
    assert "shards [0] still to come" in first.stdout
    early = mine("--merge")
    assert early.returncode != 0 and "shards [0] of 2 are not built yet" in early.stderr
    bad = mine("--shard", "2")
    assert bad.returncode != 0 and "0 <= --shard < --shards" in bad.stderr
    last = mine("--shard", "0", "--merge")
    assert last.returncode == 0, last.stderr
    assert "index merged from 2 shards" in last.stdout
    [root] = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    index = MiningIndex(root)
    assert (root / "complete.json").is_file() and index.n_windows > 0
    assert index.tokens_scanned > 0 and int(index.fire_tokens.sum()) > 0
