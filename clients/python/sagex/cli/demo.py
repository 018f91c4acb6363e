"""`sage demo`: the main job end to end on the embedded default.

Starts the activation server, the SAGE agent and the scoring service on
127.0.0.1, each in its own process, waits for each to report SERVING, triages
the embedded SAE's features from corpus statistics, mines exemplars for a
sample of them, probes one with new texts, has the agent explain the sample as
one batch job (hypotheses, probes, verdicts; symbolic policy: tagger, WordNet
and structure predicates, no LLM), scores the explanations on held-out data,
prints a summary table, writes the HTML
report, and stops the servers with SIGTERM. No network, GPU or API key needed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sagex.api.activation.v1 import activation_service_pb2 as pb
from sagex.api.activation.v1 import activation_service_pb2_grpc as pb_grpc
from sagex.api.codec import dense_column
from sagex.api.common.v1 import types_pb2
from sagex.cli.up import SERVICES
from sagex.report import Report, collect, write
from sagex.sdk import Explanation, JobProgress, Sage

SERVICE = SERVICES["activation"]
SAMPLE = 8

# Printed after the demo. The commands line up in a column, so the widest lines are split here.
NEXT_STEPS = (
    "\n"
    "Next steps\n"
    "  * your own model and SAE:  sage serve activation --model /path/to/hf-folder-or.gguf "
    "--sae my-sae=/path/to/saelens-folder\n"
    "  * a config file:           sage serve activation --config sage.toml   "
    "([activation], [agent], [scoring]; see README)\n"
    "  * an LLM for the agent:    sage serve agent --llm-base-url http://127.0.0.1:8000/v1 --llm-model NAME\n"
    "                             (any OpenAI-compatible endpoint; the key comes from $OPENAI_API_KEY), then\n"
    "                             `sage explain SAE 1-20 --policy openai --watch`\n"
    "  * the LLM scorers:         sage serve scoring --llm-base-url URL --llm-model NAME (generative, predictive,\n"
    "                             detection, fuzzing), then `sage eval SAE 1-20` and "
    "`sage report SAE 1-20 --eval eval/eval.json`\n"
)



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
    service, *flags = args
    return subprocess.Popen([sys.executable, "-m", f"sagex.{service}", *flags, "--log-level", "warning"],
                            env={**os.environ, "HF_HUB_OFFLINE": "1",
                                 "HF_HUB_DISABLE_PROGRESS_BARS": "1"})  # no weight-loading bars in the demo's output


def _context(ex: types_pb2.Exemplar, width: int = 4) -> str:
    e = ex
    texts = list(e.tokens.texts)
    i = e.max_token_index
    left = "".join(texts[max(0, i - width) : i]).replace("\n", " ")
    return f"{left}[[{texts[i]}]]".strip()[-40:]


def run_demo(mining_tokens: int = 60_000, out: Path = Path("sage-demo")) -> int:
    ports = {name: _free_port() for name in ("activation", "agent", "scoring")}
    addr = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "demo.toml"
        config.write_text(f"[activation]\nmax_mining_tokens = {mining_tokens}\n")
        print("starting on 127.0.0.1: the activation server (embedded SmolLM2-135M + TopK SAE) "
              f"on :{ports['activation']}, the SAGE agent on :{ports['agent']} "
              f"and the scoring service on :{ports['scoring']} ...")
        procs = [_serve(["activation", "--port", str(ports["activation"]), "--config", str(config)]),
                 _serve(["agent", "--port", str(ports["agent"]), "--activation", addr["activation"],
                         "--database", str(Path(tmp) / "agent.sqlite3")]),
                 _serve(["scoring", "--port", str(ports["scoring"]), "--activation", addr["activation"],
                         "--agent", addr["agent"], "--database", str(Path(tmp) / "scoring.sqlite3")])]
        try:
            for (name, service), proc in zip(SERVICES.items(), procs, strict=True):
                with grpc.insecure_channel(addr[name]) as channel:
                    _wait_serving(channel, proc, service)
            with grpc.insecure_channel(addr["activation"]) as channel:
                sae_id, sample = _explore(pb_grpc.ActivationServiceStub(channel))
            with Sage(activation=addr["activation"], agent=addr["agent"], scoring=addr["scoring"]) as sage:
                explanations = _explain(sage, sae_id, sample)
                result = _score(sage, explanations)
            path = write(result, out / "report.html")
            print(f"\nreport: {path.resolve()} (one self-contained HTML file; open it in a browser)")
        finally:
            for proc in reversed(procs):
                proc.send_signal(signal.SIGTERM)
            codes = [proc.wait(timeout=60) for proc in procs]
    print(f"\nservers stopped cleanly (exit codes {', '.join(map(str, codes))}).")
    print(NEXT_STEPS)
    return 0 if codes == [0, 0, 0] else 1


def _explain(sage: Sage, sae_id: str, features: list[int]) -> list[Explanation]:
    print(f"\nthe SAGE agent explains the {len(features)} sampled features (triage, then hypotheses, probes and "
          "verdicts; symbolic policy: tagger, WordNet and structure predicates, no LLM) ...")
    start = time.perf_counter()
    job = sage.agent.explain_many(sae_id, features, concurrency=4)
    shown: set[tuple[int, int]] = set()

    def progress(p: JobProgress) -> None:
        if (p.done, p.failed) not in shown:
            shown.add((p.done, p.failed))
            print(f"  {p.done + p.failed}/{p.total} features done ({p.failed} failed)", flush=True)

    job.wait(on_progress=progress)
    explanations = job.result()
    print(f"  {len(features)} features in {time.perf_counter() - start:.1f}s")
    return explanations


def _score(sage: Sage, explanations: list[Explanation]) -> Report:
    print("\nscoring each explanation on held-out corpus windows (embedding AUROC: does the explanation's "
          "embedding rank activating windows above silent ones; needs no LLM) ...")
    start = time.perf_counter()
    report = collect(sage, explanations, scorers=["embedding"], title="SAGE demo: the embedded SmolLM2 SAE",
                     notes=["policy: symbolic (no LLM)", "scorers: embedding (all-MiniLM-L6-v2, offline)"])
    print(f"  scored in {time.perf_counter() - start:.1f}s\n")
    print(f"  {'feature':>7}  {'outcome':<20} {'probes ok':>9}  {'embedding AUROC [95% CI]':<28} labels / description")
    for fr in report.features:
        ex = fr.explanation
        held = sum(h.status == "CONFIRMED" for h in ex.hypotheses)
        outcome = ex.error_code or (f"triage {ex.triage_class}" if ex.triage_class
                                    else f"{held}/{len(ex.hypotheses)} confirmed")
        auroc = next((r for r in fr.scores if r.scorer == "embedding"), None)
        shown = (str(auroc.metrics[0]).removeprefix("auroc: ") if auroc and auroc.metrics and not auroc.error
                 else (auroc.error if auroc else fr.score_error) or "-")
        labels = ", ".join(lb.name for lb in ex.labels) or "(no label)"
        ok = sum(p.as_expected for p in ex.probes)
        print(f"  {ex.feature_id:>7}  {outcome:<20} {f'{ok}/{len(ex.probes)}':>9}  {shown[:28]:<28} {labels}")
        print(f"  {'':>7}  {(ex.error or ex.description)[:150]}")
    return report


def _explore(stub: pb_grpc.ActivationServiceStub) -> tuple[str, list[int]]:
    """Model facts, triage from statistics, exemplars and one probe; returns the SAE and sampled features."""
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
        values = dense_column(msg.activations, feature)
        shown = "".join(f"[[{t}]]({v:.1f})" if v > 0 else t for t, v in zip(msg.tokens.texts, values, strict=True))
        print(f"  max {values.max():5.2f}: {shown}")
    return sae.id, sample
