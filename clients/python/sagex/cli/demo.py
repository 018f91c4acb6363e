"""`sage demo`: the main job end to end on the embedded default.

Starts a real activation server on 127.0.0.1 in its own process, waits for it
to report SERVING, triages the embedded SAE's features from corpus statistics,
mines exemplars for a sample of them, probes one with new texts, prints what it
found, and stops the server with SIGTERM. No network, GPU or API key needed.
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

from sagex.api.activation.v1 import activation_service_pb2 as pb
from sagex.api.activation.v1 import activation_service_pb2_grpc as pb_grpc

SERVICE = "sagex.api.activation.v1.ActivationService"
SAMPLE = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_serving(channel: grpc.Channel, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the activation server exited with code {proc.returncode}; see its log above")
        try:
            if health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=2).status == 1:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.5)
    raise SystemExit("the activation server did not become ready in time")


def _context(ex: pb.MineExemplarsResponse, width: int = 4) -> str:
    e = ex
    texts = list(e.tokens.texts)
    i = e.max_token_index
    left = "".join(texts[max(0, i - width) : i]).replace("\n", " ")
    return f"{left}[[{texts[i]}]]".strip()[-40:]


def run_demo(mining_tokens: int = 60_000) -> int:
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "demo.toml"
        config.write_text(f"[activation]\nmax_mining_tokens = {mining_tokens}\n")
        print(f"starting the activation server on 127.0.0.1:{port} (embedded SmolLM2-135M + TopK SAE) ...")
        proc = subprocess.Popen(
            [sys.executable, "-m", "sagex.cli.main", "serve", "activation", "--port", str(port), "--config", str(config),
             "--log-level", "warning"],
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                _wait_serving(channel, proc)
                _explore(pb_grpc.ActivationServiceStub(channel))
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
    print(f"\nserver stopped cleanly (exit code {code}).")
    print(textwrap.dedent("""
        Next steps
          * your own model and SAE:  sage serve activation --model /path/to/hf-folder-or.gguf --sae my-sae=/path/to/saelens-folder
          * a config file:           sage serve activation --config sage.toml   ([activation] table; see README)
          * the SAGE agent and the scorers (OpenAI-compatible endpoints) arrive with issues #4 and #5.
        """))
    return 0 if code == 0 else 1


def _explore(stub: pb_grpc.ActivationServiceStub) -> None:
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
