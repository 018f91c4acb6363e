"""The on-disk exemplar index: the external sort gives the same feature view in any
number of passes, and a build killed between a block's files and its checkpoint
resumes to the same files as one that never stopped. Real files, no model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sagex.activation.index_store import TableWriter, WindowTokens, WindowWriter, read_items

D_SAE = 50


def _blocks(seed: int, n_blocks: int = 5, per_block: int = 13) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_blocks):
        feats, maxes = [], []
        for _ in range(per_block):
            f = np.sort(rng.choice(D_SAE, size=rng.integers(0, 12), replace=False)).astype(np.int32)
            feats.append(f)
            maxes.append(rng.choice([0.5, 1.0, 2.0, 3.5], size=len(f)).astype(np.float32))  # many ties
        out.append((feats, maxes))
    return out


def _build(root: Path, blocks: list[tuple[list[np.ndarray], list[np.ndarray]]], sort_budget: int) -> TableWriter:
    root.mkdir(parents=True, exist_ok=True)
    table = TableWriter(root, D_SAE)
    for n, (feats, maxes) in enumerate(blocks):
        table.state.fire_tokens += n
        table.append(feats, maxes, tokens_scanned=n)
    table.finish(sort_budget=sort_budget)
    return table


def _feature_view(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ptr = np.load(root / "feat_ptr.npy")
    return ptr, np.fromfile(root / "feat_win.i32", np.int32), np.fromfile(root / "feat_max.f32", np.float32)


def test_external_sort_in_many_passes_equals_a_brute_force_sort(tmp_path: Path) -> None:
    blocks = _blocks(0)
    _build(tmp_path / "one", blocks, sort_budget=1 << 20)
    _build(tmp_path / "many", blocks, sort_budget=7)  # a few features per pass
    one, many = _feature_view(tmp_path / "one"), _feature_view(tmp_path / "many")
    for a, b in zip(one, many, strict=True):
        np.testing.assert_array_equal(a, b)
    feats = [f for fs, _ in blocks for f in fs]
    maxes = [m for _, ms in blocks for m in ms]
    rows = np.repeat(np.arange(len(feats)), [len(f) for f in feats])
    f, m = np.concatenate(feats), np.concatenate(maxes)
    order = np.lexsort((rows, -m, f))
    ptr, win, mx = one
    np.testing.assert_array_equal(win, rows[order])
    np.testing.assert_array_equal(mx, m[order])
    np.testing.assert_array_equal(np.diff(ptr), np.bincount(f, minlength=D_SAE))


def test_a_build_killed_after_a_blocks_files_resumes_to_the_same_index(tmp_path: Path) -> None:
    blocks = _blocks(1)
    _build(tmp_path / "clean", blocks, sort_budget=1 << 20)
    root = tmp_path / "killed"
    root.mkdir()
    table = TableWriter(root, D_SAE)
    for n, (feats, maxes) in enumerate(blocks[:3]):
        table.state.fire_tokens += n
        table.append(feats, maxes, tokens_scanned=n)
    # Killed while writing block 4: its rows reached the files, its checkpoint did not.
    (root / "scan.npz").rename(root / "scan.keep")
    table.append(*blocks[3], tokens_scanned=3)
    (root / "scan.keep").replace(root / "scan.npz")
    resumed = TableWriter(root, D_SAE)
    assert resumed.state.windows_done == 3 * 13 and resumed.state.tokens_scanned == 2
    for n, (feats, maxes) in enumerate(blocks[3:], start=3):
        resumed.state.fire_tokens += n
        resumed.append(feats, maxes, tokens_scanned=n)
    resumed.finish()
    for name in ("win_count.i32", "win_feat.i32", "win_max.f32", "feat_win.i32", "feat_max.f32", "feat_ptr.npy"):
        assert (root / name).read_bytes() == (tmp_path / "clean" / name).read_bytes(), name
    with np.load(root / "stats.npz") as a, np.load(tmp_path / "clean" / "stats.npz") as b:
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])


def test_windows_are_read_back_by_offset(tmp_path: Path) -> None:
    writer = WindowWriter(tmp_path)
    windows = [tuple(range(i, i + 4 + i % 7)) for i in range(9000)]  # more than one buffered flush
    for i, w in enumerate(windows):
        writer.add(f"doc{i}:{i * 64}", w)
    writer.close()
    tokens = WindowTokens(tmp_path)
    assert len(tokens) == len(windows) and tokens[4321] == windows[4321] and tokens[-1] == windows[-1]
    assert tokens.block(100, 205) == windows[100:205] and list(tokens) == windows
    spread = [3, 17, 18, 4000, 8999]  # a shard's windows: scattered over the corpus
    assert tokens.select(spread) == [windows[i] for i in spread] and tokens.select([]) == []
    assert read_items(tmp_path / "lengths.i32", np.int32, 0, 3).tolist() == [4, 5, 6]
