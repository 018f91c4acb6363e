"""The data a feature is scored on, fetched once per (feature, seed) and shared by
every scorer of a request.

* ``Reference``, from the EXEMPLAR split (what explainers see): the feature's top
  windows, G (its maximum) and tau = half the mean maximum of the top 10. Windows
  are de-duplicated by the miner and all have the same length, so tau and G are on
  the scale of one window of ``context_tokens`` tokens.
* ``HeldoutSample``, from the HELDOUT split (never shown to explainers): activating
  windows drawn by seed from activation-quantile bands (lowest band first) and
  windows where the feature never fires. Each keeps its real context and
  tokenisation; the per-token values are ground truth.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc
import numpy as np

from sagex.api.common.v1 import types_pb2
from sagex.remote.activation import ActivationClient
from sagex.remote.traces import Trace
from sagex.scoring.errors import ScorerFailed

REFERENCE_TOP_K = 10


@dataclass(frozen=True)
class HeldoutSpec:
    """How much held-out data to draw."""

    bands: int = 3  # activation-quantile bands of the activating windows (low, medium, high)
    per_band: int = 10  # windows drawn from each band
    non_activating: int = 30  # windows where the feature never fires
    min_activating: int = 6  # fewer: the scorers that need them refuse to run
    min_non_activating: int = 6

    def problems(self) -> list[str]:
        out = []
        if not 1 <= self.bands <= 10:
            out.append(f"bands: {self.bands} is outside 1..10")
        if not 1 <= self.per_band <= 50:
            out.append(f"per_band: {self.per_band} is outside 1..50")
        if not 0 <= self.non_activating <= 100:
            out.append(f"non_activating: {self.non_activating} is outside 0..100")
        if self.min_activating < 1 or self.min_non_activating < 0:
            out.append("min_activating must be >= 1 and min_non_activating >= 0")
        return out


@dataclass(frozen=True)
class Reference:
    top: tuple[Trace, ...]
    global_max: float  # G: the largest window maximum in the exemplar split
    tau: float  # half the mean maximum of the top windows
    context_tokens: int  # length of the windows behind tau and G

    @property
    def n_top(self) -> int:
        return len(self.top)


@dataclass(frozen=True)
class HeldoutSample:
    activating: tuple[Trace, ...]
    band_of: tuple[int, ...]  # band index of each activating window, 0 = lowest
    non_activating: tuple[Trace, ...]
    activating_windows: int  # held-out windows where the feature fires
    total_windows: int

    @property
    def texts(self) -> list[str]:
        return [t.text for t in (*self.activating, *self.non_activating)]

    @property
    def labels(self) -> np.ndarray:
        return np.array([True] * len(self.activating) + [False] * len(self.non_activating))

    def subset(self, per_band: int, non_activating: int, seed: int) -> HeldoutSample:
        """At most ``per_band`` windows of each band and ``non_activating`` silent
        ones, drawn by seed (a smaller sample for the costlier scorers)."""
        rng = np.random.default_rng([seed, 1])
        keep: list[int] = []
        for band in sorted(set(self.band_of)):
            members = [i for i, b in enumerate(self.band_of) if b == band]
            keep += sorted(rng.choice(members, size=min(per_band, len(members)), replace=False).tolist())
        silent = sorted(rng.choice(len(self.non_activating), size=min(non_activating, len(self.non_activating)),
                                   replace=False).tolist())
        return HeldoutSample(
            tuple(self.activating[i] for i in keep), tuple(self.band_of[i] for i in keep),
            tuple(self.non_activating[i] for i in silent), self.activating_windows, self.total_windows,
        )


class FeatureData:
    """Reference and held-out sample of one feature, each fetched on first use and
    shared by concurrent scorers."""

    def __init__(self, activation: ActivationClient, sae_id: str, feature_id: int, spec: HeldoutSpec,
                 seed: int) -> None:
        self.activation = activation
        self.sae_id = sae_id
        self.feature_id = feature_id
        self.spec = spec
        self.seed = seed
        self._reference: asyncio.Task[Reference] | None = None
        self._heldout: asyncio.Task[HeldoutSample] | None = None

    async def reference(self) -> Reference:
        """Raises ScorerFailed for a dead feature."""
        if self._reference is None:
            self._reference = asyncio.ensure_future(self._fetch_reference())
        return await asyncio.shield(self._reference)

    async def heldout(self) -> HeldoutSample:
        if self._heldout is None:
            self._heldout = asyncio.ensure_future(self._fetch_heldout())
        return await asyncio.shield(self._heldout)

    async def checked_heldout(self, *, need_non_activating: bool = True) -> HeldoutSample:
        """The sample, or ScorerFailed when it is too small to score on."""
        sample = await self.heldout()
        spec = self.spec
        short = []
        if len(sample.activating) < spec.min_activating:
            short.append(f"{len(sample.activating)} activating (need {spec.min_activating}; the feature fires in "
                         f"{sample.activating_windows} of {sample.total_windows} held-out windows)")
        if need_non_activating and len(sample.non_activating) < spec.min_non_activating:
            short.append(f"{len(sample.non_activating)} non-activating (need {spec.min_non_activating})")
        if short:
            raise ScorerFailed(grpc.StatusCode.FAILED_PRECONDITION,
                               f"too few held-out examples for feature {self.feature_id}: {', '.join(short)}")
        return sample

    async def _fetch_reference(self) -> Reference:
        ex = await self.activation.exemplars(
            self.sae_id, self.feature_id, top_k=REFERENCE_TOP_K, bands=0, per_band=0, non_activating=0,
            seed=self.seed, split=types_pb2.CORPUS_SPLIT_EXEMPLAR,
        )
        maxima = [t.max_activation for t in ex.top]
        if not maxima or max(maxima) <= 0:
            raise ScorerFailed(grpc.StatusCode.FAILED_PRECONDITION,
                               f"feature {self.feature_id} of {self.sae_id} never fires in the exemplar split "
                               f"({ex.total_windows} windows): a dead feature has nothing to explain")
        return Reference(
            top=tuple(ex.top), global_max=float(max(maxima)), tau=float(np.mean(maxima) / 2),
            context_tokens=max(len(t.tokens) for t in ex.top),
        )

    async def _fetch_heldout(self) -> HeldoutSample:
        spec = self.spec
        ex = await self.activation.exemplars(
            self.sae_id, self.feature_id, top_k=1, bands=spec.bands, per_band=spec.per_band,
            non_activating=spec.non_activating, seed=self.seed, split=types_pb2.CORPUS_SPLIT_HELDOUT,
        )
        activating = [(i, t) for i, (_, _, traces) in enumerate(ex.bands) for t in traces]
        return HeldoutSample(
            activating=tuple(t for _, t in activating), band_of=tuple(i for i, _ in activating),
            non_activating=tuple(ex.non_activating), activating_windows=ex.activating_windows,
            total_windows=ex.total_windows,
        )


__all__ = ["FeatureData", "HeldoutSample", "HeldoutSpec", "Reference"]
