"""`python -m sagex.activation.mine`: mine an exemplar index (or some of its hash shards)
into the mining cache without serving, e.g. one pod of a Kubernetes Indexed Job each:

    python -m sagex.activation.mine --worker "$JOB_COMPLETION_INDEX" --workers 4 --merge

An index has up to ``mining_shards`` hash shards (the service config's setting; fewer
for a small split, at least one block of windows each). Worker I of N mines the shards j
with j % N == I (resuming a killed run from its last checkpoint, skipping shards already
complete); with ``--merge``, whichever run finds every shard complete merges them into
the index the activation service then reads from the shared cache. ``--merge`` alone
only merges; with neither flag the run mines every shard no one else holds (sharing the
work with any other run or server on the same cache), then merges. The result is the
same bytes however the shards were shared.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from sagex.activation.__main__ import model_overrides
from sagex.activation.assets.corpus import SPLITS
from sagex.activation.assets.paths import EMBEDDED_SAE_ID
from sagex.activation.config import ActivationConfig
from sagex.activation.mining import BuildProgress, ExemplarMiner
from sagex.activation.sae import LoadedSae
from sagex.activation.server import build_runtime
from sagex.activation.shards import worker_shards
from sagex.server.logging import configure_logging

log = structlog.get_logger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sagex.activation.mine", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="TOML file with an [activation] table (the service's own)")
    p.add_argument("--model", help="local transformers folder or .gguf file (default: embedded SmolLM2)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--mining-cache-dir", help="the (shared) mining cache folder")
    p.add_argument("--sae", default=EMBEDDED_SAE_ID, help="the served SAE id to mine (default: %(default)s)")
    p.add_argument("--split", default="exemplar", choices=SPLITS, help="corpus split (default: %(default)s)")
    p.add_argument("--workers", type=int, default=1, help="how many workers share the shards (default 1)")
    p.add_argument("--worker", type=int, help="mine only the shards j with j %% WORKERS == WORKER")
    p.add_argument("--merge", action="store_true", help="merge the shards once all are complete")
    p.add_argument("--progress-seconds", type=float, default=10.0,
                   help="print progress (windows, tokens/s, ETA) this often; 0: never (default %(default)s)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def _config(args: argparse.Namespace) -> ActivationConfig:
    overrides: dict[str, Any] = model_overrides(args)
    return ActivationConfig.from_toml(Path(args.config), **overrides) if args.config else ActivationConfig(**overrides)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def progress_line(p: BuildProgress) -> str:
    """Windows, tokens/s and ETA of this run's shards, and where the current shard stands."""
    rate = p.tokens_per_second
    eta = p.eta_seconds
    here = f"; shard {p.shard}: {p.shard_windows_done}/{p.shard_windows_total} windows" if p.shard is not None else ""
    return (f"mining {p.sae_id}/{p.split}: {p.shards_done}/{p.shards_total} shards, "
            f"{p.windows_done}/{p.windows_total} windows, {p.tokens_done}/{p.tokens_total} tokens, "
            f"{rate:,.0f} tok/s, ETA {'--' if eta is None else _clock(eta)}{here}")


async def _report(miner: ExemplarMiner, sae: LoadedSae, split: str, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        p = miner.progress(sae, split)
        if p is not None and p.phase == "scanning":
            print(progress_line(p), flush=True)


async def mine(miner: ExemplarMiner, sae: LoadedSae, split: str, workers: int, worker: int | None, merge: bool,
               progress_s: float = 0.0) -> str:
    """Do what the flags ask; returns a one-line summary."""
    reporter = asyncio.ensure_future(_report(miner, sae, split, progress_s)) if progress_s > 0 else None
    try:
        return await _mine(miner, sae, split, workers, worker, merge)
    finally:
        if reporter is not None:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter


async def _mine(miner: ExemplarMiner, sae: LoadedSae, split: str, workers: int, worker: int | None,
                merge: bool) -> str:
    if worker is None and not merge:
        index = await miner.index(sae, split)
        return f"index ready: {index.n_windows} windows in {index.root}"
    if worker is not None:
        root = await miner.build_shards(sae, split, worker, workers)
        n = miner.shards_of(sae, split) or miner.max_shards
        mine = worker_shards(n, worker, workers)
        if not merge:
            return f"shards {mine} of {n} ready in {root}"
        waiting = miner.shards_missing(sae, split)
        if waiting:
            return f"shards {mine} of {n} ready; shards {waiting} still to come (the last worker merges)"
    index = await miner.merge(sae, split)
    return f"index merged from {miner.shard_count(index.n_windows)} shards: {index.n_windows} windows in {index.root}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    if args.workers < 1 or (args.worker is not None and not 0 <= args.worker < args.workers):
        raise SystemExit(f"sagex.activation.mine: --worker {args.worker} of --workers {args.workers}: "
                         "need --workers >= 1 and 0 <= --worker < --workers")
    try:
        config = _config(args)
    except (ValueError, OSError, TypeError) as exc:
        raise SystemExit(f"sagex.activation.mine: {exc}") from None
    runtime = build_runtime(config)
    try:
        sae = runtime.engine.saes.get(args.sae)
        if sae is None:
            raise SystemExit(f"sagex.activation.mine: no SAE {args.sae!r}; served: {sorted(runtime.engine.saes)}")
        try:
            print(asyncio.run(mine(runtime.miner, sae, args.split, args.workers, args.worker, args.merge,
                                   args.progress_seconds)), flush=True)
        except ValueError as exc:
            raise SystemExit(f"sagex.activation.mine: {exc}") from None
    finally:
        runtime.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
