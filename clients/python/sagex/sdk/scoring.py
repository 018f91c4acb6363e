"""The scoring service: score an explanation; compare explainers on the same held-out data."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import json_format

from sagex.api.scoring.v1 import scoring_service_pb2 as pb
from sagex.api.scoring.v1 import scoring_service_pb2_grpc as pb_grpc
from sagex.sdk import _requests
from sagex.sdk._channel import ChannelConfig
from sagex.sdk.errors import SageError, from_rpc_error

SCORE_TIMEOUT_S = 1800.0
ProgressCallback = Callable[[int, int], None]  # (feature units done, total), as the operation reports them


@dataclass(frozen=True)
class Metric:
    name: str
    value: float  # NaN when undefined for this sample (n says why)
    n: int
    ci: tuple[float, float] | None = None  # 95% unless ``level`` says otherwise
    level: float = 0.95

    def __str__(self) -> str:
        if math.isnan(self.value):
            return f"{self.name}: undefined (n={self.n})"
        ci = f" [{self.ci[0]:.3f}, {self.ci[1]:.3f}]" if self.ci else ""
        return f"{self.name}: {self.value:.3f}{ci} (n={self.n})"


@dataclass(frozen=True)
class ScorerResult:
    scorer: str
    metrics: tuple[Metric, ...]
    error: str = ""  # why the scorer could not run, when it could not
    details: dict[str, str] = field(default_factory=dict)
    llm_calls: int = 0

    def metric(self, name: str) -> Metric:
        return next(m for m in self.metrics if m.name == name)


@dataclass(frozen=True)
class PairedDifference:
    metric: str
    a: str
    b: str
    difference: Metric
    p_value: float
    wins: int
    ties: int
    losses: int


@dataclass(frozen=True)
class Comparison:
    summaries: dict[str, dict[str, Metric]]  # explainer -> metric -> mean over features
    differences: tuple[PairedDifference, ...]
    skipped: tuple[tuple[str, int, str, str], ...]  # (explainer, feature, scorer, reason)
    raw: pb.CompareExplainersResponse | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> str:
        """The comparison as `sage eval` writes eval.json (``load_comparison`` reads it back)."""
        if self.raw is None:
            raise ValueError("this comparison was not built from a service response")
        return json.dumps(json_format.MessageToDict(self.raw), indent=2) + "\n"


def _metric(m: pb.Metric) -> Metric:
    ci = (m.ci.lower, m.ci.upper) if m.HasField("ci") else None
    return Metric(m.name, m.value, m.n, ci, m.ci.level if m.HasField("ci") else 0.95)


def _result(r: pb.ScorerResult) -> ScorerResult:
    return ScorerResult(r.scorer, tuple(_metric(m) for m in r.metrics), r.error.message if r.HasField("error") else "",
                        dict(r.details), r.llm_calls)


def _comparison(msg: pb.CompareExplainersResponse) -> Comparison:
    return Comparison(
        {s.explainer: {m.name: _metric(m) for m in s.metrics} for s in msg.summaries},
        tuple(PairedDifference(d.metric, d.explainer_a, d.explainer_b, _metric(d.difference), d.p_value, d.wins,
                               d.ties, d.losses) for d in msg.differences),
        tuple((s.explainer, s.feature_id, s.scorer, s.reason) for s in msg.skipped),
        raw=msg,
    )


def load_comparison(path: str | Path) -> Comparison:
    """A comparison saved by `sage eval` (its eval.json)."""
    try:
        data = json.loads(Path(path).read_text())
        msg = json_format.ParseDict(data, pb.CompareExplainersResponse(), ignore_unknown_fields=True)
    except (OSError, ValueError, json_format.ParseError) as exc:
        raise ValueError(f"{path}: not a comparison written by `sage eval` ({exc})") from None
    return _comparison(msg)


def _score_request(sae: str, feature: int, text: str, scorers: Sequence[str], seed: int) -> pb.ScoreExplanationRequest:
    return pb.ScoreExplanationRequest(
        explanation=pb.ExplanationToScore(sae_id=sae, feature_id=feature, text=text), scorers=list(scorers), seed=seed)


def _compare_request(sae: str, features: Sequence[int], explainers: Sequence[str], scorers: Sequence[str],
                     seed: int) -> pb.CompareExplainersRequest:
    return pb.CompareExplainersRequest(sae_id=sae, feature_ids=list(features), explainers=list(explainers),
                                       scorers=list(scorers), seed=seed, request_id=uuid.uuid4().hex)


def _progress(op: operations_pb2.Operation, on_progress: ProgressCallback | None) -> None:
    if on_progress is not None and op.HasField("metadata"):
        meta = pb.CompareExplainersMetadata()
        op.metadata.Unpack(meta)
        on_progress(meta.done, meta.total)


def _finished(op: operations_pb2.Operation) -> Comparison:
    if op.HasField("error"):
        raise SageError(f"{op.name}: {op.error.message}")
    response = pb.CompareExplainersResponse()
    op.response.Unpack(response)
    return _comparison(response)


class Scoring:
    def __init__(self, channel: grpc.Channel, config: ChannelConfig) -> None:
        self._stub = pb_grpc.ScoringServiceStub(channel)
        self._ops = operations_pb2_grpc.OperationsStub(channel)
        self._config = config

    def score(self, sae: str, feature: int, text: str, scorers: Sequence[str] = (), seed: int = 0
              ) -> list[ScorerResult]:
        """Score one explanation (empty ``scorers``: the server's defaults)."""
        try:
            response = self._stub.ScoreExplanation(_score_request(sae, feature, text, scorers, seed),
                                                   timeout=SCORE_TIMEOUT_S, metadata=self._config.metadata())
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return [_result(r) for r in response.results]

    def compare(self, sae: str, features: Sequence[int], explainers: Sequence[str] = ("sage", "single_pass"),
                scorers: Sequence[str] = (), seed: int = 0, timeout: float = 3600.0,
                on_progress: ProgressCallback | None = None) -> Comparison:
        """Explain ``features`` with each explainer and score all on the same held-out data;
        ``on_progress(done, total)`` after every wait while it runs."""
        try:
            op = self._stub.CompareExplainers(_compare_request(sae, features, explainers, scorers, seed),
                                              timeout=self._config.timeout_s, metadata=self._config.metadata())
            deadline = time.monotonic() + timeout
            while not op.done and time.monotonic() < deadline:
                op = self._ops.WaitOperation(_requests.wait(op.name, 10), timeout=60, metadata=self._config.metadata())
                _progress(op, on_progress)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        if not op.done:
            raise TimeoutError(f"{op.name} is still running")
        return _finished(op)


class AsyncScoring:
    def __init__(self, channel: grpc.aio.Channel, config: ChannelConfig) -> None:
        self._stub = pb_grpc.ScoringServiceStub(channel)
        self._ops = operations_pb2_grpc.OperationsStub(channel)
        self._config = config

    async def score(self, sae: str, feature: int, text: str, scorers: Sequence[str] = (), seed: int = 0
                    ) -> list[ScorerResult]:
        try:
            response = await self._stub.ScoreExplanation(_score_request(sae, feature, text, scorers, seed),
                                                         timeout=SCORE_TIMEOUT_S, metadata=self._config.metadata())
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return [_result(r) for r in response.results]

    async def compare(self, sae: str, features: Sequence[int], explainers: Sequence[str] = ("sage", "single_pass"),
                      scorers: Sequence[str] = (), seed: int = 0, timeout: float = 3600.0,
                      on_progress: ProgressCallback | None = None) -> Comparison:
        try:
            op = await self._stub.CompareExplainers(_compare_request(sae, features, explainers, scorers, seed),
                                                    timeout=self._config.timeout_s, metadata=self._config.metadata())
            deadline = time.monotonic() + timeout
            while not op.done and time.monotonic() < deadline:
                op = await self._ops.WaitOperation(_requests.wait(op.name, 10), timeout=60,
                                                   metadata=self._config.metadata())
                _progress(op, on_progress)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        if not op.done:
            raise TimeoutError(f"{op.name} is still running")
        return _finished(op)
