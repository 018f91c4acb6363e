"""The exemplar index on disk, in flat files read by offset, so memory stays flat as
a corpus grows: what a build holds at once is one block of windows, the per-feature
statistics (d_sae numbers) and a few bytes per window.

One directory per index (``<cache>/<key>/``):

* ``tokens.i32`` and ``ids.s32`` with ``lengths.i32``: every window's token ids and
  its id ("<doc id>:<token offset>", fixed width), in corpus order; ``windows.json``
  marks them complete (the corpus pass is redone if it is missing);
* ``win_feat.i32``, ``win_max.f32``, ``win_count.i32``: the window-major table, per
  window the features that fired and their maxima (ascending feature id), appended
  block by block; ``scan.npz`` (windows done and the statistics so far) is the
  checkpoint a resumed build starts from, and the files are cut back to it;
* ``feat_ptr.npy``, ``feat_win.i32``, ``feat_max.f32``: the feature-major view (per
  feature, its windows by maximum descending, ties by window), written by an
  external sort in feature ranges that fit ``sort_budget`` entries;
* ``complete.json``: written last; an index without it is still being built.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

ID_WIDTH = 32
COMPLETE = "complete.json"
_CHUNK = 1 << 22  # entries per read while transposing


def _append(path: Path, array: np.ndarray) -> None:
    with open(path, "ab") as f:
        f.write(np.ascontiguousarray(array).tobytes())


def read_items(path: Path, dtype: npt.DTypeLike, start: int, count: int) -> np.ndarray:
    """``count`` items from item ``start``: a plain read, never a mapping (no resident pages left behind)."""
    itemsize = np.dtype(dtype).itemsize
    with open(path, "rb") as f:
        data = os.pread(f.fileno(), count * itemsize, start * itemsize)
    return np.frombuffer(data, dtype=dtype, count=len(data) // itemsize)


def _save_npz(path: Path, **arrays: object) -> None:
    """An ``.npz`` that ``np.load`` reads, with the same bytes for the same arrays
    (``np.savez`` stamps the time into the zip): indexes built apart compare byte for byte."""
    tmp = path.with_name(path.name + ".tmp.npz")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            with z.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(value), allow_pickle=False)
    tmp.replace(path)  # atomic: a crash leaves the old checkpoint or the new one


class BuildLock:
    """An exclusive lock on one index directory (``flock``, so it dies with its holder):
    ``async with BuildLock(root):`` waits off the event loop until no one else builds it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._fd = -1

    async def __aenter__(self) -> BuildLock:
        self.root.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.root / "build.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return self
                except BlockingIOError:
                    await asyncio.sleep(0.5)  # polled: a blocked thread could not be cancelled
        except BaseException:
            os.close(self._fd)
            raise

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def try_acquire(self) -> bool:
        """Take the lock if no one holds it (never waits); ``release`` it after."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.root / "build.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            os.close(self._fd)
            self._fd = -1
            return False

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


# --- windows --------------------------------------------------------------------------


class WindowWriter:
    """Appends windows (token ids and ids) in corpus order, buffered."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        for name in ("tokens.i32", "ids.s32", "lengths.i32", "windows.json"):
            (root / name).unlink(missing_ok=True)
        self._tokens: list[Sequence[int]] = []
        self._ids: list[str] = []
        self.count = 0
        self.total_tokens = 0

    def add(self, window_id: str, tokens: Sequence[int]) -> None:
        if len(window_id.encode()) > ID_WIDTH:
            raise ValueError(f"window id {window_id!r} is longer than {ID_WIDTH} bytes")
        self._tokens.append(tokens)
        self._ids.append(window_id)
        self.count += 1
        self.total_tokens += len(tokens)
        if len(self._ids) >= 4096:
            self.flush()

    def flush(self) -> None:
        if not self._ids:
            return
        _append(self.root / "tokens.i32", np.fromiter((t for w in self._tokens for t in w), np.int32))
        _append(self.root / "lengths.i32", np.fromiter(map(len, self._tokens), np.int32, len(self._tokens)))
        _append(self.root / "ids.s32", np.array([i.encode() for i in self._ids], dtype=f"S{ID_WIDTH}"))
        self._tokens, self._ids = [], []

    def close(self) -> None:
        self.flush()
        (self.root / "windows.json").write_text(json.dumps({"windows": self.count, "tokens": self.total_tokens}))


class WindowTokens(Sequence[tuple[int, ...]]):
    """The token ids of every window, read from disk by offset."""

    def __init__(self, root: Path) -> None:
        self._path = root / "tokens.i32"
        self.lengths = np.fromfile(root / "lengths.i32", np.int32) if (root / "lengths.i32").is_file() \
            else np.zeros(0, np.int32)
        self.offsets = np.zeros(len(self.lengths) + 1, np.int64)
        np.cumsum(self.lengths, out=self.offsets[1:])

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> tuple[int, ...]:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        return tuple(read_items(self._path, np.int32, int(self.offsets[i]), int(self.lengths[i])).tolist())

    def block(self, lo: int, hi: int) -> list[tuple[int, ...]]:
        flat = read_items(
            self._path, np.int32, int(self.offsets[lo]), int(self.offsets[hi] - self.offsets[lo])
        ).tolist()
        bounds = (self.offsets[lo : hi + 1] - self.offsets[lo]).tolist()
        return [tuple(flat[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def select(self, ids: Sequence[int]) -> list[tuple[int, ...]]:
        """The windows ``ids`` (ascending): one read of the span they lie in, and only
        those windows made into tuples (a shard's windows are spread over the corpus)."""
        if not len(ids):
            return []
        base = int(self.offsets[ids[0]])
        flat = read_items(self._path, np.int32, base, int(self.offsets[ids[-1] + 1]) - base)
        starts = (self.offsets[ids] - base).tolist()
        ends = (self.offsets[np.asarray(ids) + 1] - base).tolist()
        return [tuple(flat[a:b].tolist()) for a, b in zip(starts, ends, strict=True)]

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        for lo in range(0, len(self), 4096):
            yield from self.block(lo, min(lo + 4096, len(self)))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Sequence) and len(self) == len(other)
                and all(a == tuple(b) for a, b in zip(self, other, strict=True)))

    __hash__ = None  # type: ignore[assignment]


class WindowIds(Sequence[str]):
    """Every window's id, read from disk by offset."""

    def __init__(self, root: Path, count: int) -> None:
        self._path = root / "ids.s32"
        self._count = count

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i: int) -> str:  # type: ignore[override]
        if not -self._count <= i < self._count:
            raise IndexError(i)
        return bytes(read_items(self._path, f"S{ID_WIDTH}", i % self._count, 1)[0]).decode()

    def all(self) -> list[str]:
        return [bytes(x).decode() for x in read_items(self._path, f"S{ID_WIDTH}", 0, self._count)]

    def index(self, value: str, start: int = 0, stop: int | None = None) -> int:  # type: ignore[override]
        hits = np.flatnonzero(read_items(self._path, f"S{ID_WIDTH}", 0, self._count) == value.encode())
        hits = hits[(hits >= start) & (hits < (self._count if stop is None else stop))]
        if not len(hits):
            raise ValueError(f"{value!r} is not a window id")
        return int(hits[0])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and len(self) == len(other) and self.all() == list(other)

    __hash__ = None  # type: ignore[assignment]


# --- the window x feature table --------------------------------------------------------


@dataclass
class ScanState:
    """What a build has folded in so far: a checkpoint."""

    windows_done: int
    fire_tokens: np.ndarray  # int64 [d_sae]: (token, feature) activations > 0
    act_sum: np.ndarray  # float64 [d_sae]
    act_max: np.ndarray  # float32 [d_sae]
    tokens_scanned: int


class TableWriter:
    """The window-major table, appended one block of windows (in corpus order) at a time."""

    def __init__(self, root: Path, d_sae: int) -> None:
        self.root = root
        self.d_sae = d_sae
        self.state = self._resume() or ScanState(0, np.zeros(d_sae, np.int64), np.zeros(d_sae, np.float64),
                                                 np.zeros(d_sae, np.float32), 0)

    def _resume(self) -> ScanState | None:
        ckpt = self.root / "scan.npz"
        if not ckpt.is_file():
            for name in ("win_feat.i32", "win_max.f32", "win_count.i32"):
                (self.root / name).unlink(missing_ok=True)
            return None
        with np.load(ckpt) as z:
            state = ScanState(int(z["windows_done"]), z["fire_tokens"].copy(), z["act_sum"].copy(),
                              z["act_max"].copy(), int(z["tokens_scanned"]))
        if len(state.fire_tokens) != self.d_sae:
            (self.root / "scan.npz").unlink()
            return self._resume()
        # Cut the files back to the checkpoint: a block appended after it is redone.
        counts = np.fromfile(self.root / "win_count.i32", np.int32)[: state.windows_done]
        entries = int(counts.sum(dtype=np.int64))
        for name, itemsize, keep in (("win_count.i32", 4, state.windows_done), ("win_feat.i32", 4, entries),
                                     ("win_max.f32", 4, entries)):
            with open(self.root / name, "r+b") as f:
                f.truncate(keep * itemsize)
        return state

    def append(self, feats: Sequence[np.ndarray], maxes: Sequence[np.ndarray], tokens_scanned: int) -> None:
        """One block's windows (corpus order); the statistics in ``self.state`` already include them."""
        _append(self.root / "win_count.i32", np.fromiter(map(len, feats), np.int32, len(feats)))
        if feats:
            _append(self.root / "win_feat.i32", np.concatenate(feats).astype(np.int32))
            _append(self.root / "win_max.f32", np.concatenate(maxes).astype(np.float32))
        s = self.state
        s.windows_done += len(feats)
        s.tokens_scanned = tokens_scanned
        _save_npz(self.root / "scan.npz", windows_done=s.windows_done, fire_tokens=s.fire_tokens, act_sum=s.act_sum,
                  act_max=s.act_max, tokens_scanned=s.tokens_scanned)

    def finish(self, sort_budget: int = 1 << 23) -> None:
        """The feature-major view by an external sort, then the completion mark."""
        counts = np.fromfile(self.root / "win_count.i32", np.int32)
        total = int(counts.sum(dtype=np.int64))
        feat_counts = np.zeros(self.d_sae, np.int64)
        for start in range(0, total, _CHUNK):
            feat_counts += np.bincount(read_items(self.root / "win_feat.i32", np.int32, start, _CHUNK),
                                       minlength=self.d_sae)
        feat_ptr = np.zeros(self.d_sae + 1, np.int64)
        np.cumsum(feat_counts, out=feat_ptr[1:])
        for name in ("feat_win.i32", "feat_max.f32"):
            (self.root / name).unlink(missing_ok=True)
        window_of_entry_start = np.zeros(len(counts) + 1, np.int64)
        np.cumsum(counts, out=window_of_entry_start[1:])
        lo = 0
        while lo < self.d_sae:  # features [lo, hi) whose entries fit the budget together
            hi = int(np.searchsorted(feat_ptr, feat_ptr[lo] + max(sort_budget, 1), side="right")) - 1
            hi = min(max(hi, lo + 1), self.d_sae)
            wins, feats, vals = [], [], []
            for start in range(0, total, _CHUNK):
                f = read_items(self.root / "win_feat.i32", np.int32, start, _CHUNK)
                keep = np.flatnonzero((f >= lo) & (f < hi))
                if len(keep):
                    v = read_items(self.root / "win_max.f32", np.float32, start, _CHUNK)
                    wins.append((np.searchsorted(window_of_entry_start, start + keep, side="right") - 1)
                                .astype(np.int32))
                    feats.append(f[keep])
                    vals.append(v[keep])
            if wins:
                w, f, v = np.concatenate(wins), np.concatenate(feats), np.concatenate(vals)
                order = np.lexsort((w, -v, f))  # by feature, then maximum descending, then window (stable ties)
                _append(self.root / "feat_win.i32", w[order])
                _append(self.root / "feat_max.f32", v[order])
            lo = hi
        np.save(self.root / "feat_ptr.npy", feat_ptr)
        s = self.state
        _save_npz(self.root / "stats.npz", fire_tokens=s.fire_tokens, act_sum=s.act_sum, act_max=s.act_max,
                  tokens_scanned=s.tokens_scanned, windows=s.windows_done)
        (self.root / COMPLETE).write_text(json.dumps({"windows": s.windows_done, "entries": total}))


def windows_complete(root: Path) -> dict[str, int] | None:
    marker = root / "windows.json"
    return json.loads(marker.read_text()) if marker.is_file() else None


def is_complete(root: Path) -> bool:
    return (root / COMPLETE).is_file()
