"""`sage eval`: explain features with several explainers, score them all on the
same held-out data and seeds (the scoring service's CompareExplainers), and print
the paper-style table; also written as Markdown and JSON."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import duration_pb2, json_format

from sagex.api.scoring.v1 import scoring_service_pb2 as pb
from sagex.api.scoring.v1 import scoring_service_pb2_grpc as pb_grpc


def parse_features(specs: Sequence[str]) -> list[int]:
    """ "3", "1,5,9" and "10-20" (inclusive), in any mix; duplicates dropped, order kept."""
    out: list[int] = []
    for spec in specs:
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            lo, sep, hi = part.partition("-")
            if not lo.isdigit() or (sep and not hi.isdigit()):
                raise ValueError(f"{part!r} is not a feature id or a range like 10-20")
            first, last = int(lo), int(hi) if sep else int(lo)
            if last < first:
                raise ValueError(f"{part!r}: the range ends before it starts")
            out += [f for f in range(first, last + 1) if f not in out]
    if not out:
        raise ValueError("give at least one feature id")
    return out


def _fmt(m: pb.Metric) -> str:
    if math.isnan(m.value):
        return f"undefined (n={m.n})"
    ci = f" [{m.ci.lower:.3f}, {m.ci.upper:.3f}]" if m.HasField("ci") else " [no CI]"
    return f"{m.value:.3f}{ci} (n={m.n})"


def render(response: pb.CompareExplainersResponse) -> str:
    explainers = [s.explainer for s in response.summaries]
    by = {s.explainer: {m.name: m for m in s.metrics} for s in response.summaries}
    metrics = sorted({name for s in response.summaries for name in by[s.explainer]})
    lines = ["| metric | " + " | ".join(explainers) + " |", "|---|" + "---|" * len(explainers)]
    for name in metrics:
        cells = [_fmt(by[e][name]) if name in by[e] else "-" for e in explainers]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| metric | a - b | mean difference [95% CI] (n) | p | wins / ties / losses |", "|---|---|---|---:|---|"]
    for d in response.differences:
        lines.append(f"| {d.metric} | {d.explainer_a} - {d.explainer_b} | {_fmt(d.difference)} | {d.p_value:.3f} | "
                     f"{d.wins} / {d.ties} / {d.losses} |")
    if response.skipped:
        lines += ["", "Left out of the means:"]
        lines += [f"- {s.explainer}, feature {s.feature_id}" + (f", {s.scorer}" if s.scorer else "") + f": {s.reason}"
                  for s in response.skipped]
    return "\n".join(lines) + "\n"


def run_eval(address: str, sae: str, features: list[int], explainers: list[str], scorers: list[str], seed: int,
             out: Path, timeout_s: float = 3600.0) -> int:
    with grpc.insecure_channel(address) as channel:
        scoring, ops = pb_grpc.ScoringServiceStub(channel), operations_pb2_grpc.OperationsStub(channel)
        try:
            op = scoring.CompareExplainers(pb.CompareExplainersRequest(
                sae_id=sae, feature_ids=features, explainers=explainers, scorers=scorers, seed=seed,
                request_id=uuid.uuid4().hex), timeout=60)
        except grpc.RpcError as exc:
            raise SystemExit(_explain_error(exc, address)) from None
        meta = pb.CompareExplainersMetadata()
        deadline = time.monotonic() + timeout_s
        while not op.done and time.monotonic() < deadline:
            op = ops.WaitOperation(operations_pb2.WaitOperationRequest(
                name=op.name, timeout=duration_pb2.Duration(seconds=5)), timeout=60)
            op.metadata.Unpack(meta)
            print(f"  {meta.done}/{meta.total} features explained and scored", flush=True)
    if not op.done:
        raise SystemExit(f"sage eval: {op.name} is still running after {timeout_s:g}s")
    if op.HasField("error"):
        raise SystemExit(f"sage eval: the comparison failed: {op.error.message}")
    response = pb.CompareExplainersResponse()
    op.response.Unpack(response)
    table = render(response)
    print("\n" + table)
    out.mkdir(parents=True, exist_ok=True)
    header = f"# Explainer comparison\n\nSAE {sae}, {len(features)} features, scorers {', '.join(scorers)}, seed {seed}\n\n"
    (out / "eval.md").write_text(header + table)
    (out / "eval.json").write_text(json.dumps(json_format.MessageToDict(response), indent=2) + "\n")
    print(f"written: {out / 'eval.md'} and {out / 'eval.json'}")
    return 0


def _explain_error(exc: grpc.RpcError, address: str) -> str:
    code = exc.code()  # type: ignore[attr-defined]
    if code == grpc.StatusCode.UNAVAILABLE:
        return (f"sage eval: cannot reach the scoring service at {address}; start it with "
                "`sage serve scoring --agent 127.0.0.1:50052` (and the activation and agent services)")
    return f"sage eval: {code.name}: {exc.details()}"  # type: ignore[attr-defined]
