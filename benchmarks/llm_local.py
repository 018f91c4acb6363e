"""The openai policy end to end against a real local model server, in one run.

llama.cpp's OpenAI-compatible server (llama-cpp-python, `make llm-setup`) serves the
packaged SmolLM2-135M-Instruct GGUF on loopback; the activation service serves the
embedded SAE; an agent server explains N live features with the openai policy as one
batch job (triage skipped, so every feature goes through the LLM loop), with the
job's default 4 features at once against a server that answers one request at a
time (max_in_flight = 1: the rest wait in our client, off the features' clocks).

Prints a table and writes benchmarks/results/llm_local_cpu_<machine>.{md,json}: how
many features finished with no failed step, the failures by reason, LLM calls,
tokens and seconds per feature. A 135M model writes poor explanations: this
measures that the path works, not what it says.

    python benchmarks/llm_local.py [--features 10] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import duration_pb2

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from _machine import describe

from sagex.activation.assets.paths import EMBEDDED_SAE_ID
from sagex.activation.config import ActivationConfig
from sagex.activation.server import running_activation_server
from sagex.agent.budget import Budget
from sagex.agent.config import AgentConfig, ExemplarConfig
from sagex.agent.server import running_agent_server
from sagex.api.agent.v1 import agent_service_pb2 as pb
from sagex.api.agent.v1 import agent_service_pb2_grpc as pb_grpc
from sagex.llm import endpoint
from sagex.llm.backend import STRUCTURED_MODES, LLMConfig
from sagex.llm.local import LlamaServer, LlamaServerOptions, missing, packaged_gguf
from sagex.server.lifecycle import ServerOptions, channel_options

RESULTS = Path(__file__).parent / "results"
MINING_TOKENS = 60_000  # the demo's scan, cached after the first run
LEAN_EXEMPLARS = ExemplarConfig(top_k=5, bands=2, per_band=1, non_activating=2)


async def live_features(port: int, n: int) -> list[int]:
    import numpy as np

    from sagex.api.activation.v1 import activation_service_pb2 as apb
    from sagex.api.activation.v1 import activation_service_pb2_grpc as apb_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=channel_options()) as channel:
        stats = await apb_grpc.ActivationServiceStub(channel).GetFeatureStatistics(
            apb.GetFeatureStatisticsRequest(sae_id=EMBEDDED_SAE_ID), timeout=1800)
    wfreq = np.frombuffer(stats.window_frequency, "<f4")
    live = np.flatnonzero((wfreq > 0.005) & (wfreq < 0.2))
    return [int(f) for f in np.random.default_rng(0).choice(live, size=n, replace=False)]


async def run_job(agent_port: int, features: list[int], budget: pb.Budget, max_minutes: float,
                  ) -> tuple[list[pb.Explanation], float, bool]:
    """The job's explanations; at ``max_minutes`` the job is cancelled and the features
    finished by then are reported (the third value says so)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{agent_port}", options=channel_options()) as channel:
        agent, ops = pb_grpc.AgentServiceStub(channel), operations_pb2_grpc.OperationsStub(channel)
        start = time.perf_counter()
        op = await agent.BatchExplainFeatures(pb.BatchExplainFeaturesRequest(
            sae_id=EMBEDDED_SAE_ID, feature_ids=features, skip_triage=True, budget=budget,
            policy=pb.PolicySpec(policy="openai")))
        deadline = start + max_minutes * 60
        done = op
        while not done.done and time.perf_counter() < deadline:
            wait = max(1, min(60, int(deadline - time.perf_counter())))
            done = await ops.WaitOperation(operations_pb2.WaitOperationRequest(
                name=op.name, timeout=duration_pb2.Duration(seconds=wait)), timeout=wait + 30)
        cut = not done.done
        if cut:
            await ops.CancelOperation(operations_pb2.CancelOperationRequest(name=op.name))
        elapsed = time.perf_counter() - start
        listed = await agent.ListExplanations(pb.ListExplanationsRequest(sae_id=EMBEDDED_SAE_ID,
                                                                         feature_ids=features, page_size=1000))
    return list(listed.explanations), elapsed, cut


async def main(n_features: int, rounds: int, max_minutes: float) -> dict[str, object]:
    reason = missing()
    if reason is not None:
        raise SystemExit(reason)
    options = LlamaServerOptions(port=0, n_ctx=4096, n_threads=min(4, os.cpu_count() or 1))
    act_config = ActivationConfig(max_mining_tokens=MINING_TOKENS, server=ServerOptions(port=0, drain_seconds=0))
    with LlamaServer(options) as llama:
        async with running_activation_server(act_config) as (act, _):
            features = await live_features(act.port, n_features)
            with tempfile.TemporaryDirectory() as tmp:
                llm = LLMConfig(base_url=llama.base_url, model=llama.model, max_in_flight=1, timeout_s=600,
                                max_retries=1, max_output_tokens=256)
                # Lean prompts and few steps: a CPU shared by many processes answers slowly.
                config = AgentConfig(activation=(f"127.0.0.1:{act.port}",), database=Path(tmp) / "bench.sqlite3",
                                     llm=llm, num_hypotheses=3, exemplars=LEAN_EXEMPLARS,
                                     budget=Budget(max_rounds=rounds, max_probes_per_hypothesis=2, max_reviews=0,
                                                   max_seconds=1800),
                                     server=ServerOptions(port=0, drain_seconds=0))
                async with running_agent_server(config) as (agent, _):
                    explanations, elapsed, cut = await run_job(agent.port, features, pb.Budget(max_rounds=rounds),
                                                               max_minutes)
                state = endpoint.endpoint(llama.base_url, llama.model, 1)
    gguf = options.gguf or packaged_gguf()
    ok = [e for e in explanations if not e.HasField("error")]
    failures = collections.Counter(f"{e.stop_reason}: {e.error.message[:90]}" for e in explanations
                                   if e.HasField("error"))
    tokens = [e.usage.prompt_tokens + e.usage.completion_tokens for e in explanations]
    calls = [e.usage.llm_calls for e in explanations]
    seconds = [e.elapsed_seconds for e in explanations]
    return {
        "machine": describe(),
        "date": time.strftime("%Y-%m-%d"),
        "server": f"llama-cpp-python {_llama_version()} server, {gguf.name}, n_ctx {options.n_ctx}, "
                  f"{options.n_threads} threads",
        "workload": (f"{n_features} live features of {EMBEDDED_SAE_ID} (seed 0), triage skipped, openai policy, "
                     f"3 hypotheses, {rounds} testing round(s) of up to 2 probes each, no review, 5 top exemplars; "
                     "one batch job (4 features at once, max_in_flight 1)"
                     + (f"; cancelled after {max_minutes:g} min, {len(explanations)} features finished by then"
                        if cut else "")),
        "features": len(explanations),
        "finished_no_failed_step": len(ok),
        "finished_share": len(ok) / max(1, len(explanations)),
        "failures": dict(failures),
        "structured_output_used": STRUCTURED_MODES[state.structured_floor] if state.structured_known else "unknown",
        "in_flight_limit_at_end": state.gate.limit,
        "llm_calls_per_feature": statistics.mean(calls),
        "llm_tokens_per_feature": statistics.mean(tokens),
        "llm_tokens_per_feature_median": statistics.median(tokens),
        "seconds_per_feature_wall": statistics.mean(seconds),
        "job_seconds_per_feature": elapsed / max(1, len(explanations)),
        "job_seconds": elapsed,
        "examples": [{"feature": e.feature_id, "description": e.description[:160], "stop": e.stop_reason}
                     for e in ok[:5]],
    }


def _llama_version() -> str:
    from importlib.metadata import version

    return version("llama_cpp_python")


def render(r: dict[str, object]) -> str:
    failures = r["failures"] or {"(none)": 0}
    return "\n".join([
        "# The openai policy against a real local model server (llama.cpp), CPU", "",
        f"Machine: {r['machine']}  ", f"Date: {r['date']}  ", f"Server: {r['server']}  ",
        f"Workload: {r['workload']}", "",
        "| measure | value |", "|---|---:|",
        f"| features finished with no failed step | {r['finished_no_failed_step']} of {r['features']} "
        f"({r['finished_share']:.0%}) |",
        f"| structured output the backend settled on | {r['structured_output_used']} |",
        f"| LLM calls per feature (mean) | {r['llm_calls_per_feature']:.1f} |",
        f"| LLM tokens per feature (mean / median) | {r['llm_tokens_per_feature']:,.0f} / "
        f"{r['llm_tokens_per_feature_median']:,.0f} |",
        f"| seconds per feature, start to end (mean; includes waiting for the one-request-at-a-time server) | "
        f"{r['seconds_per_feature_wall']:.1f} |",
        f"| seconds per feature, whole job / features | {r['job_seconds_per_feature']:.1f} |",
        "", "| failures (stop reason: message) | features |", "|---|---:|",
        *[f"| {k} | {v} |" for k, v in failures.items()],  # type: ignore[union-attr]
        "", "Examples (a 135M model: the path is what is measured, not the quality):", "",
        *[f"- feature {x['feature']}: {x['description']!r} ({x['stop']})" for x in r["examples"]],  # type: ignore
        "",
    ])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--max-minutes", type=float, default=120, help="cancel the job then; report what finished")
    args = parser.parse_args()
    result = asyncio.run(main(args.features, args.rounds, args.max_minutes))
    text = render(result)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    name = f"llm_local_cpu_{platform.machine()}_{os.cpu_count()}cpu"
    (RESULTS / f"{name}.md").write_text(text)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
