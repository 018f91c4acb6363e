"""`sage mine SAE`: build the exemplar indexes ahead of time, with a progress bar;
the same bar for the scan `sage explain` and `sage score` wait for."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TextIO

import grpc

from sagex.sdk import MiningProgress, Sage, SageError, UnavailableError


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def mining_line(p: MiningProgress, width: int = 30) -> str:
    """One line: the split, a bar, tokens done, tokens/s and the ETA."""
    what = f"mining {p.sae_id} / {p.split} split"
    if p.phase == "PREPARING":
        return f"{what}: reading and tokenizing the corpus"
    if p.phase == "READY":
        how = "read from the cache" if p.cached else "built"
        return f"{what}: ready ({p.windows_total:,} windows, {p.tokens_total:,} tokens, {how})"
    filled = int(width * p.fraction)
    rate = f", {p.tokens_per_second:,.0f} tok/s" if p.tokens_per_second else ""
    eta = f", ETA {_duration(p.eta_seconds)}" if p.eta_seconds is not None else ", ETA --"
    resumed = " (resumed)" if p.resumed else ""
    shards = f", {p.shards_done}/{p.shards_total} shards done" if p.shards_total > 1 else ""
    return (f"{what}: [{'#' * filled}{'.' * (width - filled)}] {p.fraction:4.0%} "
            f"{p.tokens_done:,}/{p.tokens_total:,} tokens{shards}{rate}{eta}{resumed}")


class MiningBar:
    """Redrawn in place on a terminal; elsewhere (logs, pipes) printed at most every
    ``every_s`` seconds, and whenever the phase changes or the rate becomes known."""

    def __init__(self, stream: TextIO, every_s: float = 10.0) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.every_s = every_s
        self._last_state: tuple[str, bool] = ("", False)
        self._last_print = 0.0

    def __call__(self, p: MiningProgress) -> None:
        line = mining_line(p)
        if self.tty:
            print(f"\r\x1b[2K{line}", end="\n" if p.phase == "READY" else "", flush=True, file=self.stream)
            return
        now = time.monotonic()
        state = (p.phase, p.tokens_per_second > 0)
        if state != self._last_state or now - self._last_print >= self.every_s:
            print(line, flush=True, file=self.stream)
            self._last_state, self._last_print = state, now


def warm(sage: Sage, sae: str, split: str) -> None:
    """Wait for one index with a bar on stderr (stdout stays the command's result);
    a server that cannot say (unreachable, older) is left to build it on first use."""
    try:
        sage.activation.build_index(sae, split, on_progress=MiningBar(sys.stderr))
    except UnavailableError:
        print(f"note: the activation service is not reachable, so the {split} exemplar scan (if any) is not shown",
              file=sys.stderr)
    except SageError as exc:
        if exc.code == grpc.StatusCode.UNIMPLEMENTED:
            return
        raise


def mine(activation: str, sae: str, splits: Sequence[str], interval_s: float = 1.0) -> int:
    with Sage(activation=activation, agent=None, scoring=None) as sage:
        for split in splits:
            try:
                sage.activation.build_index(sae, split, on_progress=MiningBar(sys.stdout),
                                            interval_s=interval_s)
            except UnavailableError:
                raise SystemExit(f"sage mine: cannot reach the activation service at {activation}; start it with "
                                 "`sage serve activation` (or `sage serve all`)") from None
            except SageError as exc:
                raise SystemExit(f"sage mine: {exc.message}") from None
    return 0
