"""A live view of the features a batch job is explaining right now: state,
hypotheses formed, probes run and the round, fed by the same events a stream
sends. In memory only: a resumed feature starts over, and so does its view."""

from __future__ import annotations

import threading

from sagex.agent import convert
from sagex.agent.loop import Emit
from sagex.agent.state import Hypothesis, Phase, Probe
from sagex.api.agent.v1 import agent_service_pb2 as pb
from sagex.api.common.v1 import types_pb2


class LiveProgress:
    def __init__(self) -> None:
        self._jobs: dict[str, dict[int, pb.FeatureProgress]] = {}
        self._hypotheses: dict[tuple[str, int], set[int]] = {}
        self._lock = threading.Lock()  # ``running`` is read off the event loop, with the operation's metadata
        self._mining: dict[str, types_pb2.MiningProgress] = {}

    def mining(self, job_id: str, progress: types_pb2.MiningProgress | None) -> None:
        """The exemplar index the job waits for (None: not waiting)."""
        if progress is None:
            self._mining.pop(job_id, None)
        else:
            self._mining[job_id] = progress

    def mining_of(self, job_id: str) -> types_pb2.MiningProgress | None:
        return self._mining.get(job_id)

    def watch(self, job_id: str, feature_id: int) -> Emit:
        """An ``emit`` for one feature's run that keeps its entry up to date."""
        entry = pb.FeatureProgress(feature_id=feature_id, state=convert.phase(Phase.TRIAGE))
        with self._lock:
            self._jobs.setdefault(job_id, {})[feature_id] = entry
            seen = self._hypotheses.setdefault((job_id, feature_id), set())

        async def emit(event: object) -> None:
            if isinstance(event, Phase):
                entry.state = convert.phase(event)
            elif isinstance(event, Hypothesis):
                seen.add(event.id)
                entry.hypotheses = len(seen)
            elif isinstance(event, Probe):
                entry.probes += 1
                entry.round = max(entry.round, event.round)

        return emit

    def finished(self, job_id: str, feature_id: int) -> None:
        with self._lock:
            self._jobs.get(job_id, {}).pop(feature_id, None)
            self._hypotheses.pop((job_id, feature_id), None)
            if not self._jobs.get(job_id, True):
                del self._jobs[job_id]

    def running(self, job_id: str) -> list[pb.FeatureProgress]:
        with self._lock:
            entries = list(self._jobs.get(job_id, {}).values())
        return sorted(entries, key=lambda e: e.feature_id)
