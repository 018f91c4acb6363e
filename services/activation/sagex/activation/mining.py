"""Exemplar mining and feature statistics over a corpus split.

One scan per (model, SAE, corpus, split) runs every window through the shared
batcher and keeps, per window, only the maximum of each feature that fired
there (a sparse window x feature table) plus per-feature token statistics.
Memory is bounded by ``max_mining_tokens``; the index is cached on disk under a
key of the model, SAE and corpus hashes, and the scan checkpoints as it goes,
so an interrupted scan resumes where it stopped.

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

from sagex.activation.assets.corpus import load_documents
from sagex.activation.encode import FeatureIds, SparseRows, Threshold
from sagex.activation.engine import WorkItem
from sagex.activation.sae import LoadedSae
from sagex.server.errors import ResourceExhausted

log = structlog.get_logger(__name__)

Submit = Callable[[Sequence[WorkItem]], Awaitable[list[SparseRows]]]


@dataclass
class MiningIndex:
    """Windows of one split and the sparse table of per-window feature maxima."""

    window_ids: list[str]  # "<doc id>:<token offset>"
    tokens: list[tuple[int, ...]]
    win_ptr: np.ndarray  # int64 [n_windows + 1] into win_feat / win_max
    win_feat: np.ndarray  # int32
    win_max: np.ndarray  # float32
    fire_tokens: np.ndarray  # int64 [d_sae]: (token, feature) activations > 0
    act_sum: np.ndarray  # float64 [d_sae]
    act_max: np.ndarray  # float32 [d_sae]
    tokens_scanned: int
    # Transposed view, built on load: feature -> (windows, maxima), maxima descending.
    feat_ptr: np.ndarray | None = None
    feat_win: np.ndarray | None = None
    feat_max: np.ndarray | None = None

    @property
    def n_windows(self) -> int:
        return len(self.window_ids)

    def finish(self) -> MiningIndex:
        rows = np.repeat(np.arange(self.n_windows, dtype=np.int64), np.diff(self.win_ptr))
        # Sort by feature, then by maximum descending, then window id ascending (stable ties).
        order = np.lexsort((rows, -self.win_max, self.win_feat))
        d_sae = len(self.fire_tokens)
        self.feat_win = rows[order]
        self.feat_max = self.win_max[order]
        self.feat_ptr = np.zeros(d_sae + 1, dtype=np.int64)
        self.feat_ptr[1:] = np.cumsum(np.bincount(self.win_feat, minlength=d_sae))
        return self

    def activating(self, feature: int) -> tuple[np.ndarray, np.ndarray]:
        assert self.feat_ptr is not None and self.feat_win is not None and self.feat_max is not None
        lo, hi = self.feat_ptr[feature], self.feat_ptr[feature + 1]
        return self.feat_win[lo:hi], self.feat_max[lo:hi]


@dataclass
class BuildProgress:
    """Where one index build stands; read by progress RPCs while the scan runs."""

    sae_id: str
    split: str
    phase: str = "preparing"  # preparing (reading, tokenizing) | scanning | ready | failed
    windows_total: int = 0
    windows_done: int = 0
    tokens_total: int = 0  # tokens the scan computes (whole windows)
    tokens_done: int = 0
    resumed_tokens: int = 0  # done by an earlier, interrupted build (not part of this one's rate)
    error: str = ""
    started: float = field(default_factory=time.monotonic)
    scan_started: float = 0.0
    scan_ended: float = 0.0

    def start(self, windows: int, tokens: int) -> None:
        self.phase, self.windows_total, self.tokens_total = "scanning", windows, tokens
        self.scan_started = time.monotonic()

    def resumed(self, windows: int, tokens: int) -> None:
        self.windows_done, self.tokens_done, self.resumed_tokens = windows, tokens, tokens

    def advance(self, windows: int, tokens: int) -> None:
        self.windows_done += windows
        self.tokens_done += tokens

    def loaded(self, index: MiningIndex) -> None:
        self.phase = "ready"
        self.windows_total = self.windows_done = index.n_windows
        self.tokens_total = self.tokens_done = sum(map(len, index.tokens))

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


def _key(model_key: str, sae: LoadedSae, corpus_hash: str, split: str, window: int, max_tokens: int) -> str:
    # Bump the version whenever what an index holds changes meaning.
    raw = f"{model_key}|{sae.content_hash}|{corpus_hash}|{split}|{window}|{max_tokens}|v2"
    return hashlib.sha256(raw.encode()).hexdigest()[:20]


class ExemplarMiner:
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
        checkpoint_every: int = 20,
        pack_by_length: bool = True,
        inflight_batches: int = 2,
    ) -> None:
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
        self._checkpoint_every = checkpoint_every  # batches between saved partial indexes
        self._pack = pack_by_length  # False: batches in corpus order (the reference for tests and benchmarks)
        self._inflight = max(1, inflight_batches)
        self._progress: dict[str, BuildProgress] = {}
        self._indexes: dict[str, MiningIndex] = {}
        self._building: dict[str, asyncio.Task[MiningIndex]] = {}
        self.corpus_hash = json.loads((corpus_dir / "manifest.json").read_text())["hash"]

    def _key(self, sae: LoadedSae, split: str) -> str:
        return _key(self._model_key, sae, self.corpus_hash, split, self._window, self._max_tokens)

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
        return key in self._indexes or (self._cache_root / f"{key}.pt").is_file()

    # --- building ----------------------------------------------------------------

    def _windows(self, split: str) -> tuple[list[str], list[tuple[int, ...]]]:
        ids: list[str] = []
        toks: list[tuple[int, ...]] = []
        seen: set[tuple[int, ...]] = set()
        budget = self._max_tokens
        for doc in load_documents(self._corpus_dir, split):
            doc_tokens = self._tokenize(doc.text)
            for off in range(0, len(doc_tokens), self._window):
                window = self._prefix + tuple(doc_tokens[off : off + self._window])
                if len(window) < 4 or window in seen:  # drop stubs and repeated windows
                    continue
                seen.add(window)
                ids.append(f"{doc.id}:{off}")
                toks.append(window)
                budget -= len(window)
                if budget <= 0:
                    return ids, toks
        return ids, toks

    async def _load_or_build(self, key: str, sae: LoadedSae, split: str) -> MiningIndex:
        path = self._cache_root / f"{key}.pt"
        progress = self._progress[key] = BuildProgress(sae.id, split)
        if path.is_file():
            index = await asyncio.to_thread(lambda: _load(path).finish())
            progress.loaded(index)
            return index
        window_ids, tokens = await asyncio.to_thread(self._windows, split)
        if not tokens:
            raise ValueError(f"corpus split {split!r} is empty")
        d_sae = sae.params.d_sae
        plan = scan_plan([len(t) for t in tokens], self._batch, self._pack)
        order = [w for batch in plan for w in batch]  # the windows in scan order
        progress.start(len(tokens), sum(map(len, tokens)))
        # Results per window, by its corpus-order index; a checkpoint holds the scan order's prefix.
        feats: list[np.ndarray | None] = [None] * len(tokens)
        maxes: list[np.ndarray | None] = [None] * len(tokens)
        partial = self._cache_root / f"{key}.partial.pt"
        state = await asyncio.to_thread(_load, partial) if partial.is_file() else None
        done_batches = 0
        if state is not None and _is_prefix(state, order, window_ids, plan):
            done_batches = _batches_covering(plan, state.n_windows)
            for n, w in enumerate(order[: state.n_windows]):
                lo, hi = state.win_ptr[n], state.win_ptr[n + 1]
                feats[w], maxes[w] = state.win_feat[lo:hi], state.win_max[lo:hi]
            fire, total, amax, scanned = state.fire_tokens, state.act_sum, state.act_max, state.tokens_scanned
            progress.resumed(state.n_windows, sum(len(tokens[w]) for w in order[: state.n_windows]))
            log.info("mining_resumed", key=key, windows=state.n_windows, of=len(tokens))
        else:
            fire = np.zeros(d_sae, np.int64)
            total = np.zeros(d_sae, np.float64)
            amax = np.zeros(d_sae, np.float32)
            scanned = 0
        log.info("mining_started", key=key, sae=sae.id, split=split, windows=len(tokens), batches=len(plan))
        special = np.fromiter(self._special, dtype=np.int64, count=len(self._special))

        def absorb(batch: list[int], rows_list: list[SparseRows]) -> int:
            per_window, n_tokens = _batch_maxima([tokens[w] for w in batch], rows_list, d_sae, special,
                                                 fire, total, amax)
            for w, (f, m) in zip(batch, per_window, strict=True):
                feats[w], maxes[w] = f, m
            return n_tokens

        def snapshot(n_batches: int) -> MiningIndex:
            n = sum(len(b) for b in plan[:n_batches])
            done = order[:n]
            return _assemble([window_ids[w] for w in done], [tokens[w] for w in done],
                             [feats[w] for w in done], [maxes[w] for w in done], fire, total, amax, scanned)

        # Several batches in flight: the next forward runs while this one's maxima are folded in.
        inflight: deque[tuple[list[int], asyncio.Future[list[SparseRows]]]] = deque()

        async def absorb_next() -> int:
            batch, fut = inflight.popleft()
            kept = await asyncio.to_thread(absorb, batch, await fut)
            progress.advance(len(batch), sum(len(tokens[w]) for w in batch))
            return kept

        absorbed = done_batches
        try:
            for batch in plan[done_batches:]:
                items = [WorkItem(tokens[w], sae.id, Threshold(0.0)) for w in batch]
                inflight.append((batch, asyncio.ensure_future(self._submit_patiently(items))))
                if len(inflight) < self._inflight:
                    continue
                scanned += await absorb_next()
                absorbed += 1
                if (absorbed - done_batches) % self._checkpoint_every == 0:
                    await asyncio.to_thread(_save, partial, snapshot(absorbed))
            while inflight:
                scanned += await absorb_next()
                absorbed += 1
        finally:
            for _, fut in inflight:
                fut.cancel()
        index = _assemble(window_ids, tokens, feats, maxes, fire, total, amax, scanned)  # type: ignore[arg-type]
        path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(_save, path, index)
        partial.unlink(missing_ok=True)
        log.info("mining_done", key=key, windows=index.n_windows, tokens=scanned)
        index = await asyncio.to_thread(index.finish)
        progress.finished()
        return index

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
                chosen = rng.choice(part, size=min(per_band, len(part)), replace=False) if per_band else []
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

    async def traces(self, index: MiningIndex, sae: LoadedSae, feature: int, windows: Sequence[int]) -> list[np.ndarray]:
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


def scan_plan(lengths: Sequence[int], batch_windows: int, pack: bool = True, block_batches: int = 64) -> list[list[int]]:
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


def _batches_covering(plan: list[list[int]], n_windows: int) -> int:
    """How many leading batches of ``plan`` hold exactly ``n_windows`` windows (-1: none)."""
    total = 0
    for n, batch in enumerate(plan):
        if total == n_windows:
            return n
        total += len(batch)
    return len(plan) if total == n_windows else -1


def _is_prefix(state: MiningIndex, order: list[int], window_ids: list[str], plan: list[list[int]]) -> bool:
    """A checkpoint is usable when it holds exactly the first batches of this scan."""
    n = state.n_windows
    return (_batches_covering(plan, n) >= 0 and n <= len(order)
            and state.window_ids == [window_ids[w] for w in order[:n]])


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


def _assemble(window_ids, tokens, feats, maxes, fire, total, amax, scanned) -> MiningIndex:  # type: ignore[no-untyped-def]
    lengths = np.fromiter((len(f) for f in feats), np.int64, len(feats))
    ptr = np.zeros(len(lengths) + 1, np.int64)
    ptr[1:] = np.cumsum(lengths)
    return MiningIndex(
        list(window_ids), list(tokens), ptr,
        np.concatenate(feats).astype(np.int32) if feats else np.zeros(0, np.int32),
        np.concatenate(maxes).astype(np.float32) if maxes else np.zeros(0, np.float32),
        fire.copy(), total.copy(), amax.copy(), int(scanned),
    )


def _save(path: Path, index: MiningIndex) -> None:
    flat = np.fromiter((t for w in index.tokens for t in w), dtype=np.int32)
    lengths = np.array([len(w) for w in index.tokens], dtype=np.int64)
    payload = {
        "window_ids": "\n".join(index.window_ids), "flat": flat, "lengths": lengths,
        "win_ptr": index.win_ptr, "win_feat": index.win_feat, "win_max": index.win_max,
        "fire_tokens": index.fire_tokens, "act_sum": index.act_sum, "act_max": index.act_max,
        "tokens_scanned": index.tokens_scanned,
    }
    tmp = path.with_suffix(".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(tmp, **{k: (np.array(v) if not isinstance(v, np.ndarray) else v) for k, v in payload.items()})
    Path(f"{tmp}.npz").rename(path)  # atomic: a crash never leaves a half index


def _load(path: Path) -> MiningIndex:
    with np.load(path, allow_pickle=False) as z:
        lengths = z["lengths"]
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        flat = z["flat"].tolist()
        tokens = [tuple(flat[bounds[i] : bounds[i + 1]]) for i in range(len(lengths))]
        ids = str(z["window_ids"]).split("\n") if len(lengths) else []
        return MiningIndex(
            ids, tokens, z["win_ptr"], z["win_feat"], z["win_max"], z["fire_tokens"], z["act_sum"],
            z["act_max"], int(z["tokens_scanned"]),
        )
