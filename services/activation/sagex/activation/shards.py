"""Hash shards: the unit of work of every index build, and their merge.

An index has ``S`` shards: ``mining_shards`` (part of the cache key), fewer for a
small split so that each shard holds at least a block of windows to pack by length
(``ExemplarMiner.shard_count``, a function of the window count, so every replica
finds the same ``S``). A window belongs to shard ``j`` when a content hash of its token ids is
``j`` modulo ``S``: the same on every machine and for every replica, whatever else
the corpus holds. ``shard_of.u16`` in the index folder records every window's shard
(written with the windows, under the index lock).

A shard is mined on its own into ``<index>/shards/<j>-of-<S>/``: its windows (in
corpus order) in blocks, packed by length within a block, each batch one forward
pass of its own (``DynamicBatcher.submit(exclusive=True)``), with the same table
format and checkpoints as ``index_store.TableWriter``. So a window's activations,
and every number of the shard, are the same bits whoever mines it, alone or next
to other replicas, in one run or resumed after a crash. The merge interleaves the
shard tables back into corpus order and combines the statistics in shard order
(counts add, maxima take the maximum, float sums add in that fixed order), so one
server mining all ``S`` shards and ``n`` replicas sharing them write the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sagex.activation.index_store import TableWriter, WindowTokens, read_items

SHARD_DONE = "shard.json"
ASSIGNMENT = "shard_of.u16"
MAX_SHARDS = 4096
_WINDOWS_PER_CHUNK = 1 << 16
_KEEP = (SHARD_DONE, "build.lock")


def shard_of(window: Sequence[int], shards: int) -> int:
    """The shard of a window (its token ids, prefix included) among ``shards``."""
    digest = hashlib.blake2b(np.asarray(window, np.int64).tobytes(), digest_size=8, person=b"sagexshd").digest()
    return int.from_bytes(digest, "little") % shards


def shard_dir(root: Path, shard: int, shards: int) -> Path:
    return root / "shards" / f"{shard}-of-{shards}"


def check_shards(shards: int) -> None:
    if not 1 <= shards <= MAX_SHARDS:
        raise ValueError(f"mining_shards is {shards}: it must be between 1 and {MAX_SHARDS}")


def worker_shards(shards: int, worker: int, workers: int) -> list[int]:
    """The shards worker ``worker`` of ``workers`` takes: those equal to it modulo ``workers``."""
    if workers < 1 or not 0 <= worker < workers:
        raise ValueError(f"worker {worker} of {workers}: need workers >= 1 and 0 <= worker < workers")
    return list(range(worker, shards, workers))


def write_assignment(root: Path, tokens: WindowTokens, shards: int) -> np.ndarray:
    """Every window's shard, computed block by block and written atomically."""
    out = np.zeros(len(tokens), np.uint16)
    for lo in range(0, len(tokens), 4096):
        block = tokens.block(lo, min(lo + 4096, len(tokens)))
        out[lo : lo + len(block)] = [shard_of(w, shards) for w in block]
    tmp = root / (ASSIGNMENT + ".tmp")
    out.tofile(tmp)
    os.replace(tmp, root / ASSIGNMENT)
    return out


def read_assignment(root: Path, n_windows: int) -> np.ndarray | None:
    path = root / ASSIGNMENT
    if not path.is_file():
        return None
    out = np.fromfile(path, np.uint16)
    return out if len(out) == n_windows else None


def shard_complete(root: Path, shard: int, shards: int) -> bool:
    return (shard_dir(root, shard, shards) / SHARD_DONE).is_file()


def merge_shards(root: Path, shards: int, d_sae: int, assignment: np.ndarray) -> None:
    """Write the index in ``root`` from its ``shards`` complete shard tables; their
    window-major tables are removed after (the merged index holds the same rows)."""
    missing = [i for i in range(shards) if not shard_complete(root, i, shards)]
    if missing:
        raise ValueError(f"shards {missing} of {shards} are not built yet; build them before merging")
    n_windows = len(assignment)
    parts = []
    for i in range(shards):
        d = shard_dir(root, i, shards)
        wins = np.flatnonzero(assignment == i)
        counts = np.fromfile(d / "win_count.i32", np.int32)
        if len(wins) != len(counts):
            raise ValueError(f"shard {i} of {shards} in {d} is inconsistent: {len(wins)} windows, {len(counts)} rows")
        ptr = np.zeros(len(counts) + 1, np.int64)
        np.cumsum(counts, out=ptr[1:])
        parts.append((d, wins, counts, ptr))

    (root / "scan.npz").unlink(missing_ok=True)  # a merge is redone whole: it costs no scan
    table = TableWriter(root, d_sae)
    s = table.state
    for d, *_ in parts:  # shard order: the float sums add up the same way on every machine
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
    for d, *_ in parts:  # keep only each shard's completion mark (late replicas see it done) and lock
        for path in d.iterdir():
            if path.name not in _KEEP:
                path.unlink()


def _bounds(counts: np.ndarray) -> list[tuple[int, int]]:
    ends = np.cumsum(counts)
    return list(zip((ends - counts).tolist(), ends.tolist(), strict=True))
