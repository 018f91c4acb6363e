"""Sharded index builds: which windows a shard holds, and the merge of shard tables.

A window belongs to shard ``i`` of ``n`` when a content hash of its token ids is
``i`` modulo ``n``: the same on every machine and for every replica, whatever else
the corpus holds. A shard build writes the window-major table of its windows (in
corpus order) with the same block format and checkpoints as a full build
(``index_store.TableWriter``) into ``<index>/shards/<i>-of-<n>/``, plus
``windows.i64`` (the global index of each of its windows). The merge interleaves
the shard tables back into corpus order and combines the statistics (counts add,
maxima take the maximum, sums add), then writes the feature-major view like a
full build, so the merged folder reads as one index.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sagex.activation.index_store import TableWriter, WindowTokens, read_items

SHARD_DONE = "shard.json"
_WINDOWS_PER_CHUNK = 1 << 16


def shard_of(window: Sequence[int], shards: int) -> int:
    """The shard of a window (its token ids, prefix included) among ``shards``."""
    digest = hashlib.blake2b(np.asarray(window, np.int64).tobytes(), digest_size=8, person=b"sagexshd").digest()
    return int.from_bytes(digest, "little") % shards


def shard_dir(root: Path, shard: int, shards: int) -> Path:
    return root / "shards" / f"{shard}-of-{shards}"


def check_shard(shard: int, shards: int) -> None:
    if shards < 1 or not 0 <= shard < shards:
        raise ValueError(f"shard {shard} of {shards}: need shards >= 1 and 0 <= shard < shards")


def shard_windows(tokens: WindowTokens, shard: int, shards: int) -> np.ndarray:
    """The global indices (ascending) of the windows in ``shard``, read block by block."""
    out = []
    for lo in range(0, len(tokens), 4096):
        block = tokens.block(lo, min(lo + 4096, len(tokens)))
        out.append(lo + np.flatnonzero([shard_of(w, shards) == shard for w in block]))
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)


def shard_complete(root: Path, shard: int, shards: int) -> bool:
    return (shard_dir(root, shard, shards) / SHARD_DONE).is_file()


def merge_shards(root: Path, shards: int, d_sae: int, n_windows: int) -> None:
    """Write the index in ``root`` from its ``shards`` complete shard tables."""
    missing = [i for i in range(shards) if not shard_complete(root, i, shards)]
    if missing:
        raise ValueError(f"shards {missing} of {shards} are not built yet; build them before merging")
    parts = []
    for i in range(shards):
        d = shard_dir(root, i, shards)
        wins = np.fromfile(d / "windows.i64", np.int64)
        counts = np.fromfile(d / "win_count.i32", np.int32)
        if len(wins) != len(counts):
            raise ValueError(f"shard {i} of {shards} in {d} is inconsistent: {len(wins)} windows, {len(counts)} rows")
        ptr = np.zeros(len(counts) + 1, np.int64)
        np.cumsum(counts, out=ptr[1:])
        parts.append((d, wins, counts, ptr))
    if sum(len(p[1]) for p in parts) != n_windows:
        raise ValueError(f"the shards hold {sum(len(p[1]) for p in parts)} windows, the split has {n_windows}")

    (root / "scan.npz").unlink(missing_ok=True)  # a merge is redone whole: it costs no scan
    table = TableWriter(root, d_sae)
    s = table.state
    for d, *_ in parts:
        with np.load(d / "scan.npz") as z:
            s.fire_tokens += z["fire_tokens"]
            s.act_sum += z["act_sum"]
            np.maximum(s.act_max, z["act_max"], out=s.act_max)
            s.tokens_scanned += int(z["tokens_scanned"])
    # Interleave by global window index, a chunk of windows at a time (memory stays flat).
    for lo in range(0, n_windows, _WINDOWS_PER_CHUNK):
        hi = min(lo + _WINDOWS_PER_CHUNK, n_windows)
        gidx, cnts, feats, maxes = [], [], [], []
        for d, wins, counts, ptr in parts:
            a, b = np.searchsorted(wins, [lo, hi])
            gidx.append(wins[a:b])
            cnts.append(counts[a:b])
            feats.append(read_items(d / "win_feat.i32", np.int32, int(ptr[a]), int(ptr[b] - ptr[a])))
            maxes.append(read_items(d / "win_max.f32", np.float32, int(ptr[a]), int(ptr[b] - ptr[a])))
        g, c = np.concatenate(gidx), np.concatenate(cnts).astype(np.int64)
        f, m = np.concatenate(feats), np.concatenate(maxes)
        order = np.argsort(g, kind="stable")
        if not np.array_equal(g[order], np.arange(lo, hi)):
            raise ValueError(f"the shards do not cover windows {lo}..{hi} exactly once")
        starts = np.cumsum(c) - c
        entry = np.concatenate([np.arange(starts[w], starts[w] + c[w]) for w in order]) if len(f) else \
            np.zeros(0, np.int64)
        table.append([f[entry[a:b]] for a, b in _bounds(c[order])], [m[entry[a:b]] for a, b in _bounds(c[order])],
                     s.tokens_scanned)
    table.finish()
    (root / "merged.json").write_text(json.dumps({"shards": shards}))


def _bounds(counts: np.ndarray) -> list[tuple[int, int]]:
    ends = np.cumsum(counts)
    return list(zip((ends - counts).tolist(), ends.tolist(), strict=True))
