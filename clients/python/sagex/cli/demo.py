"""`sage demo`: the main job end to end on the embedded default.

Starts a real activation server and a SAGE agent on 127.0.0.1, each in its own
process, waits for both to report SERVING, triages the embedded SAE's features
from corpus statistics, mines exemplars for a sample of them, probes one with
new texts, has the agent explain the sample as one batch job (hypotheses,
probes, verdicts; heuristic policy, no LLM), prints what it found, and stops
both servers with SIGTERM. No network, GPU or API key needed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sagex.activation.assets.paths import EMBEDDED_SAE_ID
from sagex.api.activation.v1 import activation_service_pb2 as pb
from sagex.api.activation.v1 import activation_service_pb2_grpc as pb_grpc

SERVICE = "sagex.api.activation.v1.ActivationService"
AGENT_SERVICE = "sagex.api.agent.v1.AgentService"
SAMPLE = 8



def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_serving(channel: grpc.Channel, proc: subprocess.Popen[bytes], service: str = SERVICE,
                  timeout: float = 300) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{service} exited with code {proc.returncode}; see its log above")
        try:
            if health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status == 1:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{service} did not become ready in time")


def _serve(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "sagex.cli.main", "serve", *args, "--log-level", "warning"],
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})


def _context(ex: pb.MineExemplarsResponse, width: int = 4) -> str:
    e = ex
    texts = list(e.tokens.texts)
    i = e.max_token_index
    left = "".join(texts[max(0, i - width) : i]).replace("\n", " ")
    return f"{left}[[{texts[i]}]]".strip()[-40:]


def run_demo(mining_tokens: int = 60_000) -> int:
    port, agent_port = _free_port(), _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "demo.toml"
        config.write_text(f"[activation]\nmax_mining_tokens = {mining_tokens}\n")
        print(f"starting the activation server on 127.0.0.1:{port} (embedded SmolLM2-135M + TopK SAE) "
              f"and the SAGE agent on 127.0.0.1:{agent_port} ...")
        procs = [_serve(["activation", "--port", str(port), "--config", str(config)]),
                 _serve(["agent", "--port", str(agent_port), "--activation", f"127.0.0.1:{port}",
                         "--database", str(Path(tmp) / "agent.sqlite3")])]
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, \
                    grpc.insecure_channel(f"127.0.0.1:{agent_port}") as agent_channel:
                _wait_serving(channel, procs[0])
                _wait_serving(agent_channel, procs[1], AGENT_SERVICE)
                sample = _explore(pb_grpc.ActivationServiceStub(channel))
                _explain(agent_channel, sample)
        finally:
            for proc in reversed(procs):
                proc.send_signal(signal.SIGTERM)
            codes = [proc.wait(timeout=60) for proc in procs]
    print(f"\nservers stopped cleanly (exit codes {codes[0]}, {codes[1]}).")
    print(textwrap.dedent("""
        Next steps
          * your own model and SAE:  sage serve activation --model /path/to/hf-folder-or.gguf --sae my-sae=/path/to/saelens-folder
          * a config file:           sage serve activation --config sage.toml   ([activation] and [agent] tables; see README)
          * an LLM for the agent:    sage serve agent --llm-base-url http://127.0.0.1:8000/v1 --llm-model NAME
                                     (any OpenAI-compatible endpoint; the key comes from $OPENAI_API_KEY), then
                                     request policy "openai"
          * the scorers arrive with issue #5.
        """))
    return 0 if codes == [0, 0] else 1


def _explain(channel: grpc.Channel, features: list[int]) -> None:
    from google.longrunning import operations_pb2, operations_pb2_grpc

    from sagex.api.agent.v1 import agent_service_pb2 as apb
    from sagex.api.agent.v1 import agent_service_pb2_grpc as apb_grpc

    agent, ops = apb_grpc.AgentServiceStub(channel), operations_pb2_grpc.OperationsStub(channel)
    print(f"\nthe SAGE agent explains the {len(features)} sampled features (heuristic policy: hypotheses, "
          "probes, verdicts; no LLM) ...")
    start = time.perf_counter()
    op = agent.BatchExplainFeatures(apb.BatchExplainFeaturesRequest(
        sae_id=EMBEDDED_SAE_ID, feature_ids=features, concurrency=4, request_id=f"demo-{os.getpid()}"), timeout=60)
    meta = apb.BatchExplainFeaturesMetadata()
    while not op.done:
        op = ops.WaitOperation(operations_pb2.WaitOperationRequest(name=op.name, timeout=_seconds(2)), timeout=30)
        op.metadata.Unpack(meta)
        print(f"  {meta.done + meta.failed}/{meta.total} features done ({meta.failed} failed)", flush=True)
    if op.HasField("error"):
        raise SystemExit(f"the batch job failed: {op.error.message}")
    response = apb.BatchExplainFeaturesResponse()
    op.response.Unpack(response)
    print(f"  {len(features)} features in {time.perf_counter() - start:.1f}s\n")
    print(f"  {'feature':>7}  {'verdicts':<10} {'probes':>6}  {'stop':<10} labels / description")
    for name in response.explanations:
        ex = agent.GetExplanation(apb.GetExplanationRequest(name=name), timeout=30).explanation
        held = sum(h.status == apb.HYPOTHESIS_STATUS_CONFIRMED for h in ex.hypotheses)
        verdicts = f"{held}/{len(ex.hypotheses)} held" if ex.hypotheses else ex.triage_class or "-"
        labels = ", ".join(lb.name for lb in ex.labels) or "(no label)"
        print(f"  {ex.feature_id:>7}  {verdicts:<10} {len(ex.probes):>6}  {ex.stop_reason:<10} {labels}")
        print(f"  {'':>7}  {(ex.error.message or ex.description)[:150]}")


def _seconds(value: float):  # type: ignore[no-untyped-def]
    from google.protobuf import duration_pb2

    return duration_pb2.Duration(seconds=int(value))


def _explore(stub: pb_grpc.ActivationServiceStub) -> list[int]:
    """Model facts, triage from statistics, exemplars and one probe; returns the sampled features."""
    info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=30)
    sae = info.saes[0]
    print(f"model {info.model.name}: {info.model.loaded_layers} of {info.model.num_layers} layers loaded "
          f"(the LM stops at the hook), d_model {info.model.d_model}, device {info.model.device}")
    print(f"SAE {sae.id}: {sae.hook_name}, d_sae {sae.d_sae}, TopK k={sae.k}, encoder on {sae.encode_backend}")

    start = time.perf_counter()
    print("\ntriage: scanning the exemplar split of the corpus (cached after the first run) ...")
    stats = stub.GetFeatureStatistics(pb.GetFeatureStatisticsRequest(sae_id=sae.id), timeout=1800)
    freq = np.frombuffer(stats.firing_frequency, "<f4")
    wfreq = np.frombuffer(stats.window_frequency, "<f4")
    amax = np.frombuffer(stats.max_activation, "<f4")
    dead = int((freq == 0).sum())
    dense = int((wfreq > 0.5).sum())
    print(f"  {stats.tokens_scanned:,} tokens in {stats.windows_scanned:,} windows, {time.perf_counter() - start:.1f}s")
    print(f"  dead (never fired): {dead}   near-always-on (>50% of windows): {dense}   "
          f"live: {len(freq) - dead}")
    candidates = np.flatnonzero((wfreq > 0.002) & (wfreq < 0.2))
    rng = np.random.default_rng(0)
    sample = sorted(int(f) for f in rng.choice(candidates, size=min(SAMPLE, len(candidates)), replace=False))

    print(f"\ntop exemplars of {len(sample)} sampled live features (token in [[ ]] is the peak):")
    print(f"  {'feature':>7}  {'freq':>7}  {'max':>6}  top exemplars")
    mined = {r.feature_id: r for r in stub.MineExemplars(
        pb.MineExemplarsRequest(sae_id=sae.id, feature_ids=sample, top_k=3, seed=0), timeout=600)}
    for f in sample:
        shown = " | ".join(_context(e) for e in mined[f].top)
        print(f"  {f:>7}  {freq[f]:>7.4f}  {amax[f]:>6.2f}  {shown}")

    feature = max(sample, key=lambda f: mined[f].top[0].max_activation if mined[f].top else 0)
    peak = mined[feature].top[0]
    token = peak.tokens.texts[peak.max_token_index]
    probes = [f"A sentence that uses{token} in a new context.", "A control sentence about something else entirely."]
    print(f"\nprobing feature {feature} (peak token {token!r}) with new texts:")

    def requests():  # type: ignore[no-untyped-def]
        yield pb.StreamActivationsRequest(batch_id="probe", sae_id=sae.id, texts=probes,
                                          features=pb.FeatureIdSelection(feature_ids=[feature]))

    for msg in stub.StreamActivations(requests(), timeout=60):
        values = np.zeros(len(msg.tokens.ids), np.float32)
        offsets = np.frombuffer(msg.activations.row_offsets, "<u4")
        vals = np.frombuffer(msg.activations.values, "<f4")
        for t in range(len(values)):
            if offsets[t + 1] > offsets[t]:
                values[t] = vals[offsets[t]]
        shown = "".join(f"[[{t}]]({v:.1f})" if v > 0 else t for t, v in zip(msg.tokens.texts, values, strict=True))
        print(f"  max {values.max():5.2f}: {shown}")
    return sample
