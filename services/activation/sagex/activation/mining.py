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
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
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
        self._indexes: dict[str, MiningIndex] = {}
        self._building: dict[str, asyncio.Task[MiningIndex]] = {}
        self.corpus_hash = json.loads((corpus_dir / "manifest.json").read_text())["hash"]

    async def index(self, sae: LoadedSae, split: str) -> MiningIndex:
        """The index for (sae, split), built on first use. Concurrent callers share
        one build; a caller that gives up does not stop it."""
        key = _key(self._model_key, sae, self.corpus_hash, split, self._window, self._max_tokens)
        if key in self._indexes:
            return self._indexes[key]
        task = self._building.get(key)
        if task is None:
            task = asyncio.ensure_future(self._load_or_build(key, sae, split))
            self._building[key] = task
            task.add_done_callback(lambda _t: self._building.pop(key, None))
        index = await asyncio.shield(task)
        self._indexes[key] = index
        return index

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
        if path.is_file():
            return await asyncio.to_thread(lambda: _load(path).finish())
        window_ids, tokens = await asyncio.to_thread(self._windows, split)
        if not tokens:
            raise ValueError(f"corpus split {split!r} is empty")
        d_sae = sae.params.d_sae
        partial = self._cache_root / f"{key}.partial.pt"
        state = await asyncio.to_thread(_load, partial) if partial.is_file() else None
        if state is not None and state.window_ids == window_ids[: state.n_windows]:
            done = state.n_windows
            feats, maxes, counts = [state.win_feat], [state.win_max], [np.diff(state.win_ptr)]
            fire, total, amax, scanned = state.fire_tokens, state.act_sum, state.act_max, state.tokens_scanned
            log.info("mining_resumed", key=key, windows=done, of=len(tokens))
        else:
            done, feats, maxes, counts = 0, [], [], []
            fire = np.zeros(d_sae, np.int64)
            total = np.zeros(d_sae, np.float64)
            amax = np.zeros(d_sae, np.float32)
            scanned = 0
        log.info("mining_started", key=key, sae=sae.id, split=split, windows=len(tokens))
        batches = 0
        for start in range(done, len(tokens), self._batch):
            chunk = tokens[start : start + self._batch]
            rows_list = await self._submit_patiently([WorkItem(t, sae.id, Threshold(0.0)) for t in chunk])

            def absorb(chunk: list[tuple[int, ...]] = chunk, rows_list: list[SparseRows] = rows_list) -> int:
                n_tokens = 0
                for window, rows in zip(chunk, rows_list, strict=True):
                    f, m, n_tok = self._window_maxima(window, rows, d_sae, fire, total, amax)
                    feats.append(f)
                    maxes.append(m)
                    counts.append(np.array([len(f)]))
                    n_tokens += n_tok
                return n_tokens

            scanned += await asyncio.to_thread(absorb)
            batches += 1
            if batches % self._checkpoint_every == 0:
                n = start + len(chunk)
                snapshot = _assemble(window_ids[:n], tokens[:n], feats, maxes, counts, fire, total, amax, scanned)
                await asyncio.to_thread(_save, partial, snapshot)
        index = _assemble(window_ids, tokens, feats, maxes, counts, fire, total, amax, scanned)
        path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(_save, path, index)
        partial.unlink(missing_ok=True)
        log.info("mining_done", key=key, windows=index.n_windows, tokens=scanned)
        return await asyncio.to_thread(index.finish)

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

    def _window_maxima(
        self, window: tuple[int, ...], rows: SparseRows, d_sae: int,
        fire: np.ndarray, total: np.ndarray, amax: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, int]:
        # Position 0 carries the attention-sink outlier (or BOS); SAEs are trained without it.
        keep = torch.tensor([i > 0 and t not in self._special for i, t in enumerate(window)])
        lengths = rows.row_offsets.diff()
        entry_keep = torch.repeat_interleave(keep, lengths)
        fids = rows.feature_ids[entry_keep].long()
        vals = rows.values[entry_keep]
        per_feature = torch.zeros(d_sae).scatter_reduce_(0, fids, vals, "amax", include_self=True)
        np.add.at(fire, fids.numpy(), 1)
        np.add.at(total, fids.numpy(), vals.double().numpy())
        np.maximum(amax, per_feature.numpy(), out=amax)
        active = per_feature.nonzero().squeeze(1)
        return active.numpy().astype(np.int32), per_feature[active].numpy(), int(keep.sum())

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


def _assemble(window_ids, tokens, feats, maxes, counts, fire, total, amax, scanned) -> MiningIndex:  # type: ignore[no-untyped-def]
    lengths = np.concatenate(counts) if counts else np.zeros(0, np.int64)
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
