"""Exemplar mining and feature statistics over a corpus split.

One scan per (model, SAE, corpus, split) runs every window through the model and
SAE and keeps, per window, only the maximum of each feature that fired there (a
sparse window x feature table) plus per-feature token statistics. The corpus is
cut into windows once, streaming, onto disk, and every window is given to one of a
fixed number of hash shards (``shards``). Each shard is scanned on its own, a block
at a time (packed by length within the block, each batch one forward pass of its
own, a few in flight), appending the block's table to disk and checkpointing, so an
interrupted scan resumes at its last block and memory stays flat as the corpus
grows (``index_store`` has the file layout). Replicas sharing a cache share the
shards; the merge of the shard tables is the index, the same bytes however the
shards were shared. The index is cached under a key of the model, SAE and corpus
hashes and the scan's settings.

Queries read the index: the top-k windows of a feature, windows sampled from
quantile bands of its activating windows, and random windows where it never
fires, all reproducible by seed. Per-token traces of the chosen windows are
recomputed through the batcher, so they equal what StreamActivations returns.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import structlog
import torch

from sagex.activation.assets.corpus import iter_documents
from sagex.activation.encode import FeatureIds, SparseRows, Threshold
from sagex.activation.engine import WorkItem
from sagex.activation.index_store import (
    BuildLock,
    ScanState,
    TableWriter,
    WindowIds,
    WindowTokens,
    WindowWriter,
    is_complete,
    read_items,
    windows_complete,
)
from sagex.activation.sae import LoadedSae
from sagex.activation.shards import (
    ASSIGNMENT,
    SHARD_DONE,
    check_shards,
    merge_shards,
    read_assignment,
    shard_complete,
    shard_dir,
    worker_shards,
    write_assignment,
)
from sagex.server.errors import ResourceExhausted

log = structlog.get_logger(__name__)

Submit = Callable[[Sequence[WorkItem]], Awaitable[list[SparseRows]]]


class MiningIndex:
    """A complete index on disk (see ``index_store``): windows, the window-major table
    and the feature-major view. Only per-feature arrays and a few bytes per window are
    held in memory; windows, tokens and a feature's windows are read by offset."""

    def __init__(self, root: Path) -> None:
        self.root = root
        with np.load(root / "stats.npz") as z:
            self.fire_tokens = z["fire_tokens"].copy()  # int64 [d_sae]: (token, feature) activations > 0
            self.act_sum = z["act_sum"].copy()  # float64 [d_sae]
            self.act_max = z["act_max"].copy()  # float32 [d_sae]
            self.tokens_scanned = int(z["tokens_scanned"])
        self.tokens = WindowTokens(root)
        self.window_ids = WindowIds(root, len(self.tokens))  # "<doc id>:<token offset>"
        self.feat_ptr = np.load(root / "feat_ptr.npy")  # int64 [d_sae + 1] into the feature-major view
        counts = np.fromfile(root / "win_count.i32", np.int32)
        self.win_ptr = np.zeros(len(counts) + 1, np.int64)  # int64 [n_windows + 1] into win_feat / win_max
        np.cumsum(counts, out=self.win_ptr[1:])

    @property
    def n_windows(self) -> int:
        return len(self.tokens)

    @property
    def win_feat(self) -> np.ndarray:
        """The window-major table's feature ids (memory-mapped: for inspection and tests)."""
        return _mapped(self.root / "win_feat.i32", np.int32)

    @property
    def win_max(self) -> np.ndarray:
        return _mapped(self.root / "win_max.f32", np.float32)

    def activating(self, feature: int) -> tuple[np.ndarray, np.ndarray]:
        """The windows where ``feature`` fires and its maxima there, maxima descending (ties by window)."""
        lo, hi = int(self.feat_ptr[feature]), int(self.feat_ptr[feature + 1])
        return (read_items(self.root / "feat_win.i32", np.int32, lo, hi - lo).astype(np.int64),
                read_items(self.root / "feat_max.f32", np.float32, lo, hi - lo))


def _mapped(path: Path, dtype: type) -> np.ndarray:
    return np.memmap(path, dtype=dtype, mode="r") if path.stat().st_size else np.zeros(0, dtype)


@dataclass
class BuildProgress:
    """Where one index build stands; read by progress RPCs while the scan runs. A build
    mines hash shards (``shards``): those other replicas finished count as done, but
    not toward this build's rate."""

    sae_id: str
    split: str
    phase: str = "preparing"  # preparing (reading, tokenizing) | scanning | ready | failed
    windows_total: int = 0
    windows_done: int = 0
    tokens_total: int = 0  # tokens the scan computes (whole windows)
    tokens_done: int = 0
    resumed_tokens: int = 0  # done elsewhere: an interrupted build's checkpoint, another replica's shards
    shards_total: int = 0
    shards_done: int = 0
    shard: int | None = None  # the shard this process mines now
    shard_windows_total: int = 0
    shard_windows_done: int = 0
    error: str = ""
    started: float = field(default_factory=time.monotonic)
    scan_started: float = 0.0
    scan_ended: float = 0.0

    def start(self, windows: int, tokens: int, shards: int) -> None:
        self.phase, self.windows_total, self.tokens_total, self.shards_total = "scanning", windows, tokens, shards
        self.scan_started = time.monotonic()

    def skipped(self, windows: int, tokens: int) -> None:
        """Work done elsewhere (a checkpoint, another replica)."""
        self.windows_done += windows
        self.tokens_done += tokens
        self.resumed_tokens += tokens

    def shard_started(self, shard: int, windows: int, done: int) -> None:
        self.shard, self.shard_windows_total, self.shard_windows_done = shard, windows, done

    def advance(self, windows: int, tokens: int) -> None:
        self.windows_done += windows
        self.tokens_done += tokens
        self.shard_windows_done += windows

    def shard_finished(self) -> None:
        self.shards_done += 1
        self.shard = None

    def loaded(self, index: MiningIndex, shards: int) -> None:
        self.phase = "ready"
        self.shards_total = self.shards_done = shards
        self.windows_total = self.windows_done = index.n_windows
        self.tokens_total = self.tokens_done = int(index.tokens.offsets[-1])

    def finished(self) -> None:
        self.phase, self.scan_ended = "ready", time.monotonic()

    @property
    def scan_seconds(self) -> float:
        """Time in the scan itself (reading and tokenizing the corpus excluded)."""
        return (self.scan_ended or time.monotonic()) - self.scan_started if self.scan_started else 0.0

    def failed(self, error: str) -> None:
        self.phase, self.error = "failed", error

    @property
    def tokens_per_second(self) -> float:
        elapsed = time.monotonic() - self.scan_started
        fresh = self.tokens_done - self.resumed_tokens
        return fresh / elapsed if self.scan_started and elapsed > 0 and fresh > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        """None until a rate is known; 0 when done."""
        if self.phase == "ready":
            return 0.0
        rate = self.tokens_per_second
        return (self.tokens_total - self.tokens_done) / rate if rate > 0 else None


@dataclass(frozen=True)
class FeatureWindows:
    feature: int
    top: list[int]
    bands: list[tuple[float, float, list[int]]]
    random: list[int]
    activating_windows: int
    total_windows: int


def _key(model_key: str, sae: LoadedSae, corpus_hash: str, split: str, window: int, max_tokens: int,
         plan: str) -> str:
    # Bump the version whenever what an index holds changes meaning. ``plan`` (shards, batch
    # and block sizes, packing) fixes every forward batch, so it fixes the bits of the index.
    raw = f"{model_key}|{sae.content_hash}|{corpus_hash}|{split}|{window}|{max_tokens}|{plan}|v4"
    return hashlib.sha256(raw.encode()).hexdigest()[:20]


class ExemplarMiner:
    """Builds, caches and queries exemplar indexes. ``submit`` must run its items as one
    forward pass of their own (``DynamicBatcher.submit(..., exclusive=True)``): the miner
    forms every batch itself, from one hash shard's windows, so the index is the same
    bits whichever replica mines which shard (see ``shards``)."""

    def __init__(
        self,
        submit: Submit,
        tokenize: Callable[[str], list[int]],
        corpus_dir: Path,
        cache_root: Path,
        model_key: str,
        window_tokens: int,
        max_tokens: int,
        batch_windows: int,
        special_ids: set[int],
        prefix: tuple[int, ...] = (),
        checkpoint_every: int = 64,
        pack_by_length: bool = True,
        inflight_batches: int = 2,
        shards: int = 8,
    ) -> None:
        check_shards(shards)
        self._submit = submit
        self._tokenize = tokenize
        self._corpus_dir = corpus_dir
        self._cache_root = cache_root
        self._model_key = model_key
        self._window = window_tokens
        self._max_tokens = max_tokens
        self._batch = batch_windows
        self._special = special_ids
        self._prefix = prefix  # BOS when the model uses one: every window starts alike
        # Batches per block: the scan packs windows by length within a block and checkpoints after each.
        self._checkpoint_every = checkpoint_every
        self._pack = pack_by_length  # False: batches in corpus order (the reference for tests and benchmarks)
        self._inflight = max(1, inflight_batches)
        self.max_shards = shards
        self._progress: dict[str, BuildProgress] = {}
        self._indexes: dict[str, MiningIndex] = {}
        self._building: dict[str, asyncio.Task[MiningIndex]] = {}
        self.corpus_hash = json.loads((corpus_dir / "manifest.json").read_text())["hash"]

    def _key(self, sae: LoadedSae, split: str) -> str:
        plan = f"s{self.max_shards}|b{self._batch}|k{self._checkpoint_every}|{'packed' if self._pack else 'ordered'}"
        return _key(self._model_key, sae, self.corpus_hash, split, self._window, self._max_tokens, plan)

    def root(self, sae: LoadedSae, split: str) -> Path:
        """The index's folder in the cache."""
        return self._cache_root / self._key(sae, split)

    async def index(self, sae: LoadedSae, split: str) -> MiningIndex:
        """The index for (sae, split), built on first use. Concurrent callers share
        one build; a caller that gives up does not stop it."""
        key = self._key(sae, split)
        if key in self._indexes:
            return self._indexes[key]
        task = self._building.get(key)
        if task is None:
            task = asyncio.ensure_future(self._load_or_build(key, sae, split))
            self._building[key] = task
            task.add_done_callback(lambda t: self._build_ended(key, t))
        index = await asyncio.shield(task)
        self._indexes[key] = index
        return index

    def _build_ended(self, key: str, task: asyncio.Task[MiningIndex]) -> None:
        self._building.pop(key, None)
        progress = self._progress.get(key)
        if progress is not None and not task.cancelled() and task.exception() is not None:
            progress.failed(str(task.exception()))

    def progress(self, sae: LoadedSae, split: str) -> BuildProgress | None:
        """The build's progress; None when no build of (sae, split) has started in this process."""
        return self._progress.get(self._key(sae, split))

    def cached(self, sae: LoadedSae, split: str) -> bool:
        """Whether the index is in memory or in the cache (reading it costs no scan)."""
        key = self._key(sae, split)
        return key in self._indexes or is_complete(self._cache_root / key)

    # --- building: every build mines hash shards, then merges them (see ``shards``) ---

    async def _load_or_build(self, key: str, sae: LoadedSae, split: str) -> MiningIndex:
        root = self._cache_root / key
        progress = self._progress[key] = BuildProgress(sae.id, split)
        if not is_complete(root):
            # Replicas sharing a cache volume share the build: each claims the shards no one
            # holds, waits for the rest, and whichever comes first merges; a replica that
            # dies drops its shard's lock and the next one resumes that shard.
            await self._mine_shards(key, root, sae, split, lambda n: list(range(n)), progress)
            await self._merge(root, sae, split)
            log.info("mining_done", key=key, windows=progress.windows_total, tokens=progress.tokens_total)
        index = await asyncio.to_thread(MiningIndex, root)
        progress.loaded(index, self.shard_count(index.n_windows))
        progress.finished()
        return index

    async def build_shards(self, sae: LoadedSae, split: str, worker: int = 0, workers: int = 1) -> Path:
        """Mine the shards of worker ``worker`` of ``workers`` (shard j when j % workers ==
        worker), resuming any checkpoint and skipping complete ones. Returns the index folder."""
        worker_shards(self.max_shards, worker, workers)  # checks the numbers before any work
        key = self._key(sae, split)
        root = self._cache_root / key
        progress = self._progress[key] = BuildProgress(sae.id, split)
        if not is_complete(root):
            await self._mine_shards(key, root, sae, split, lambda n: worker_shards(n, worker, workers), progress)
        progress.finished()
        return root

    def shard_count(self, n_windows: int) -> int:
        """The index's shards: ``max_shards``, fewer when the split is small, so that each
        shard holds at least one block of windows to pack by length (a function of the
        windows alone: every replica finds the same number)."""
        return max(1, min(self.max_shards, n_windows // (self._batch * self._checkpoint_every)))

    def shards_of(self, sae: LoadedSae, split: str) -> int | None:
        """How many shards the index has; None until its windows are cut."""
        cut = windows_complete(self.root(sae, split))
        return None if cut is None else self.shard_count(cut["windows"])

    def shards_missing(self, sae: LoadedSae, split: str) -> list[int]:
        root = self.root(sae, split)
        n = self.shards_of(sae, split)
        if n is None:
            return list(range(self.max_shards))
        return [] if is_complete(root) else [j for j in range(n) if not shard_complete(root, j, n)]

    async def merge(self, sae: LoadedSae, split: str) -> MiningIndex:
        """The index from its complete shards (what one full build would hold);
        the cached index when it is already complete."""
        key = self._key(sae, split)
        root = self._cache_root / key
        await self._merge(root, sae, split)
        index = await asyncio.to_thread(MiningIndex, root)
        self._indexes[key] = index
        return index

    async def _merge(self, root: Path, sae: LoadedSae, split: str) -> None:
        async with BuildLock(root):
            if not is_complete(root):
                tokens, assignment = await asyncio.to_thread(self._windows, root, split)
                await asyncio.to_thread(merge_shards, root, self.shard_count(len(tokens)), sae.params.d_sae,
                                        assignment)

    def _windows(self, root: Path, split: str) -> tuple[WindowTokens, np.ndarray]:
        """Every window of the split, in corpus order, written to disk as it is cut (the
        corpus is read once, streaming), and each window's shard; reused when an earlier
        build wrote them all. Call it holding the index's BuildLock."""
        if windows_complete(root) is None:
            (root / ASSIGNMENT).unlink(missing_ok=True)
            writer = WindowWriter(root)
            seen: set[bytes] = set()  # 8-byte digests: a repeated window is dropped
            budget = self._max_tokens
            for doc in iter_documents(self._corpus_dir, split):
                doc_tokens = self._tokenize(doc.text)
                for off in range(0, len(doc_tokens), self._window):
                    window = self._prefix + tuple(doc_tokens[off : off + self._window])
                    digest = hashlib.blake2b(np.asarray(window, np.int64).tobytes(), digest_size=8).digest()
                    if len(window) < 4 or digest in seen:  # drop stubs and repeated windows
                        continue
                    seen.add(digest)
                    writer.add(f"{doc.id}:{off}", window)
                    budget -= len(window)
                    if budget <= 0:
                        break
                if budget <= 0:
                    break
            writer.close()
        tokens = WindowTokens(root)
        assignment = read_assignment(root, len(tokens))
        if assignment is None:
            assignment = write_assignment(root, tokens, self.shard_count(len(tokens)))
        return tokens, assignment

    async def _mine_shards(self, key: str, root: Path, sae: LoadedSae, split: str,
                           select: Callable[[int], list[int]], progress: BuildProgress) -> None:
        """Mine the shards ``select(shard count)`` of the index: each one no one else holds,
        then wait for the others."""
        async with BuildLock(root):  # the windows: cut once, by whichever replica comes first
            tokens, assignment = await asyncio.to_thread(self._windows, root, split)
        if not len(tokens):
            raise ValueError(f"corpus split {split!r} is empty")
        n = self.shard_count(len(tokens))
        shards = select(n)
        windows = np.bincount(assignment, minlength=n)
        lengths = np.bincount(assignment, weights=tokens.lengths, minlength=n).astype(np.int64)
        progress.start(int(windows[shards].sum()), int(lengths[shards].sum()), len(shards))
        log.info("mining_started", key=key, sae=sae.id, split=split, windows=progress.windows_total,
                 shards=f"{len(shards)} of {n}")
        pending = list(shards)
        while pending:
            for j in list(pending):
                folder = shard_dir(root, j, n)
                lock = BuildLock(folder)
                if not shard_complete(root, j, n):
                    if not lock.try_acquire():
                        continue  # another replica mines it: take the next one, look again later
                    try:
                        if not shard_complete(root, j, n):
                            await self._mine_shard(key, folder, tokens, np.flatnonzero(assignment == j), sae, j, n,
                                                   progress)
                            pending.remove(j)
                            continue
                    finally:
                        lock.release()
                progress.skipped(int(windows[j]), int(lengths[j]))  # done by another replica
                progress.shard_finished()
                pending.remove(j)
            if pending:
                await asyncio.sleep(0.5)

    async def _mine_shard(self, key: str, folder: Path, tokens: WindowTokens, mine: np.ndarray, sae: LoadedSae,
                          shard: int, shards: int, progress: BuildProgress) -> None:
        """One shard: its windows in blocks, checkpointed after each (see ``shards``)."""
        d_sae = sae.params.d_sae
        table = await asyncio.to_thread(TableWriter, folder, d_sae)
        state = table.state
        for name in ("win_count.i32", "win_feat.i32", "win_max.f32"):
            (folder / name).touch()  # an empty shard is a shard too
        if not len(mine):
            table.append([], [], 0)
        progress.shard_started(shard, len(mine), state.windows_done)
        if state.windows_done:
            progress.skipped(state.windows_done, int(tokens.lengths[mine[: state.windows_done]].sum()))
            log.info("shard_resumed", key=key, shard=shard, windows=state.windows_done, of=len(mine))
        special = np.fromiter(self._special, dtype=np.int64, count=len(self._special))
        block = self._batch * self._checkpoint_every
        scanned = state.tokens_scanned
        for lo in range(state.windows_done, len(mine), block):
            ids = mine[lo : lo + block].tolist()
            windows = await asyncio.to_thread(tokens.select, ids)
            feats, maxes, kept = await self._scan_block(windows, sae, d_sae, special, state, progress)
            scanned += kept
            await asyncio.to_thread(table.append, feats, maxes, scanned)  # and checkpoint
        (folder / SHARD_DONE).write_text(json.dumps({"windows": len(mine), "tokens": scanned}))
        progress.shard_finished()
        log.info("shard_done", key=key, shard=shard, shards=shards, windows=len(mine))

    async def _scan_block(
        self, windows: list[tuple[int, ...]], sae: LoadedSae, d_sae: int, special: np.ndarray, state: ScanState,
        progress: BuildProgress,
    ) -> tuple[list[np.ndarray], list[np.ndarray], int]:
        """One block of windows through the model and SAE: per window (in the block's
        order) its features and maxima; the statistics in ``state`` are updated."""
        plan = scan_plan([len(t) for t in windows], self._batch, self._pack, block_batches=self._checkpoint_every)
        feats: list[np.ndarray] = [np.zeros(0, np.int32)] * len(windows)
        maxes: list[np.ndarray] = [np.zeros(0, np.float32)] * len(windows)

        def absorb(batch: list[int], rows_list: list[SparseRows]) -> int:
            per_window, n_tokens = _batch_maxima([windows[w] for w in batch], rows_list, d_sae, special,
                                                 state.fire_tokens, state.act_sum, state.act_max)
            for w, (f, m) in zip(batch, per_window, strict=True):
                feats[w], maxes[w] = f, m
            return n_tokens

        # Several batches in flight: the next forward runs while this one's maxima are folded in.
        inflight: deque[tuple[list[int], asyncio.Future[list[SparseRows]]]] = deque()
        kept = 0

        async def absorb_next() -> int:
            batch, fut = inflight.popleft()
            n = await asyncio.to_thread(absorb, batch, await fut)
            progress.advance(len(batch), sum(len(windows[w]) for w in batch))
            return n

        try:
            for batch in plan:
                items = [WorkItem(windows[w], sae.id, Threshold(0.0)) for w in batch]
                inflight.append((batch, asyncio.ensure_future(self._submit_patiently(items))))
                if len(inflight) >= self._inflight:
                    kept += await absorb_next()
            while inflight:
                kept += await absorb_next()
        finally:
            for _, fut in inflight:
                fut.cancel()
        return feats, maxes, kept

    async def _submit_patiently(self, items: Sequence[WorkItem]) -> list[SparseRows]:
        """Background work yields to interactive traffic: a full queue means wait and
        retry, not abandon a scan that other callers are waiting for."""
        delay = 0.05
        while True:
            try:
                return await self._submit(items)
            except ResourceExhausted as exc:
                await asyncio.sleep(max(delay, exc.retry_after_s))
                delay = min(delay * 2, 5.0)

    # --- queries -------------------------------------------------------------------

    @staticmethod
    def pick(index: MiningIndex, feature: int, top_k: int, bands: int, per_band: int, n_random: int,
             seed: int) -> FeatureWindows:
        wins, maxima = index.activating(feature)
        rng = np.random.default_rng([seed, feature])
        top = [int(w) for w in wins[:top_k]]
        band_list: list[tuple[float, float, list[int]]] = []
        if bands and len(wins):
            ascending = np.arange(len(wins))[::-1]  # maxima are stored descending
            for part in np.array_split(ascending, bands):
                if len(part) == 0:
                    continue
                chosen: Sequence[int] | np.ndarray = (
                    rng.choice(part, size=min(per_band, len(part)), replace=False) if per_band else []
                )
                band_list.append(
                    (float(maxima[part].min()), float(maxima[part].max()), [int(wins[i]) for i in sorted(chosen)])
                )
        random: list[int] = []
        if n_random:
            silent = np.ones(index.n_windows, dtype=bool)
            silent[wins] = False
            candidates = np.flatnonzero(silent)
            if len(candidates):
                random = sorted(int(w) for w in rng.choice(candidates, min(n_random, len(candidates)), replace=False))
        return FeatureWindows(feature, top, band_list, random, len(wins), index.n_windows)

    async def traces(
        self, index: MiningIndex, sae: LoadedSae, feature: int, windows: Sequence[int]
    ) -> list[np.ndarray]:
        """Dense per-token activations of ``feature`` in each window."""
        if not windows:
            return []
        items = [WorkItem(index.tokens[w], sae.id, FeatureIds((feature,))) for w in windows]
        rows: list[SparseRows] = []
        for start in range(0, len(items), self._batch):  # bounded admission, like the scan
            rows += await self._submit_patiently(items[start : start + self._batch])
        out = []
        for w, r in zip(windows, rows, strict=True):
            dense = np.zeros(len(index.tokens[w]), np.float32)
            token_of_entry = np.repeat(np.arange(r.num_rows), r.row_offsets.diff().numpy())
            dense[token_of_entry] = r.values.numpy()
            out.append(dense)
        return out


def scan_plan(
    lengths: Sequence[int], batch_windows: int, pack: bool = True, block_batches: int = 64
) -> list[list[int]]:
    """The order of the scan: batches of window indices.

    Packed, windows are sorted by length (longest first, ties in corpus order) within
    blocks of ``block_batches`` batches, so a batch's windows are nearly equal in
    length and padding almost vanishes; the blocks keep the order local, so a scan
    can stream. Unpacked, batches follow corpus order (today's reference).
    """
    n = len(lengths)
    if not pack:
        return [list(range(lo, min(lo + batch_windows, n))) for lo in range(0, n, batch_windows)]
    plan: list[list[int]] = []
    block = batch_windows * block_batches
    for lo in range(0, n, block):
        ids = sorted(range(lo, min(lo + block, n)), key=lambda w: -lengths[w])
        plan += [ids[i : i + batch_windows] for i in range(0, len(ids), batch_windows)]
    return plan


def _batch_maxima(
    windows: Sequence[tuple[int, ...]], rows_list: Sequence[SparseRows], d_sae: int, special: np.ndarray,
    fire: np.ndarray, total: np.ndarray, amax: np.ndarray,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], int]:
    """Per window: the features that fired (ascending) and their maxima; the feature
    statistics are updated in place. Returns them and the number of tokens counted.
    One vectorised pass per batch: the scan must keep up with the forward pass."""
    lens = np.fromiter(map(len, windows), np.int64, len(windows))
    tok = np.fromiter(itertools.chain.from_iterable(windows), np.int64, int(lens.sum()))
    pos = np.arange(len(tok)) - np.repeat(np.cumsum(lens) - lens, lens)
    # Position 0 carries the attention-sink outlier (or BOS); SAEs are trained without it.
    keep = (pos > 0) & ~np.isin(tok, special)
    nnz = np.concatenate([r.row_offsets.diff().numpy() for r in rows_list])
    entry_keep = np.repeat(keep, nnz)
    fids = np.concatenate([r.feature_ids.numpy() for r in rows_list]).astype(np.int64)[entry_keep]
    vals = np.concatenate([r.values.numpy() for r in rows_list])[entry_keep]
    win = np.repeat(np.repeat(np.arange(len(windows), dtype=np.int64), lens), nnz)[entry_keep]
    dense = torch.zeros(len(windows) * d_sae).scatter_reduce_(
        0, torch.from_numpy(win * d_sae + fids), torch.from_numpy(vals), "amax", include_self=True
    ).view(len(windows), d_sae).numpy()
    fire += np.bincount(fids, minlength=d_sae)
    total += np.bincount(fids, weights=vals.astype(np.float64), minlength=d_sae)
    np.maximum(amax, dense.max(axis=0), out=amax)
    out = []
    for row in dense:
        active = np.flatnonzero(row)
        out.append((active.astype(np.int32), row[active]))
    return out, int(keep.sum())
