"""`python -m sagex.activation.mine`: mine an exemplar index (or one shard of it) into the
mining cache without serving, e.g. one pod of a Kubernetes Indexed Job per shard:

    python -m sagex.activation.mine --shard "$JOB_COMPLETION_INDEX" --shards 8 --merge

Each run mines its shard (resuming a killed run from its last checkpoint); with
``--merge``, whichever run finds every shard complete merges them into the index the
activation service then reads from the shared cache. Without ``--shard`` and with
``--merge`` it only merges; with neither it builds the whole index in one process.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from sagex.activation.__main__ import model_overrides
from sagex.activation.assets.corpus import SPLITS
from sagex.activation.assets.paths import EMBEDDED_SAE_ID
from sagex.activation.config import ActivationConfig
from sagex.activation.mining import ExemplarMiner
from sagex.activation.server import build_runtime
from sagex.activation.shards import shard_complete
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
    p.add_argument("--shards", type=int, default=1, help="how many shards the split is cut into (default 1)")
    p.add_argument("--shard", type=int, help="mine only this shard, 0 <= SHARD < SHARDS")
    p.add_argument("--merge", action="store_true", help="merge the shards once all are complete")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def _config(args: argparse.Namespace) -> ActivationConfig:
    overrides: dict[str, Any] = model_overrides(args)
    return ActivationConfig.from_toml(Path(args.config), **overrides) if args.config else ActivationConfig(**overrides)


async def mine(miner: ExemplarMiner, sae: object, split: str, shards: int, shard: int | None, merge: bool) -> str:
    """Do what the flags ask; returns a one-line summary."""
    if shard is None and not merge:
        index = await miner.index(sae, split)  # type: ignore[arg-type]
        return f"index ready: {index.n_windows} windows in {index.root}"
    if shard is not None:
        folder = await miner.build_shard(sae, split, shard, shards)  # type: ignore[arg-type]
        if not merge:
            return f"shard {shard} of {shards} ready in {folder}"
        root = folder.parent.parent
        waiting = [i for i in range(shards) if not shard_complete(root, i, shards)]
        if waiting:
            return f"shard {shard} of {shards} ready; shards {waiting} still to come (the last one merges)"
    index = await miner.merge(sae, split, shards)  # type: ignore[arg-type]
    return f"index merged from {shards} shards: {index.n_windows} windows in {index.root}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    if args.shards < 1 or (args.shard is not None and not 0 <= args.shard < args.shards):
        raise SystemExit(f"sagex.activation.mine: --shard {args.shard} of --shards {args.shards}: "
                         "need --shards >= 1 and 0 <= --shard < --shards")
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
            print(asyncio.run(mine(runtime.miner, sae, args.split, args.shards, args.shard, args.merge)), flush=True)
        except ValueError as exc:
            raise SystemExit(f"sagex.activation.mine: {exc}") from None
    finally:
        runtime.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
