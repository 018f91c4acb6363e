"""`sage bench planted`: how often does each explainer name the concept a planted
feature was built for?

Reads a folder made by ``python -m sagex.activation.planted build`` (``sae/`` and
``truth.json``), serves the SAE with the activation and agent services (started
here on free loopback ports, or the ones given), explains every planted and filler
feature with each explainer, judges each planted feature's explanation, and prints
one table; ``planted.json`` and ``planted.md`` go to ``--out``. The explanations
are written to ``explanations.json`` before any judging, so a judge that fails
loses nothing: rerun with ``--from-explanations``.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sagex.bench.explainers import Explained, ExplainerRun, run_policy, run_single_pass
from sagex.bench.judge import Judge, JudgeUnavailable, Target, flags_noise, judged_text
from sagex.bench.stats import wilson


class BenchError(RuntimeError):
    """The benchmark cannot run; the message says what to fix."""


@dataclass(frozen=True)
class BenchSettings:
    planted: Path
    explainers: tuple[str, ...] = ("heuristic",)
    sae_id: str = ""  # "": planted-<architecture>
    activation: str = ""  # "": start one here
    agent: str = ""  # "": start one here
    config: str = ""  # TOML for the services started here ([agent]; an [activation] table replaces mining_tokens)
    mining_tokens: int = 60_000
    max_rounds: int = 0
    concurrency: int = 4
    llm_base_url: str = ""
    llm_model: str = ""
    out: Path = Path("bench-planted")


@dataclass
class Truth:
    architecture: str
    hook_name: str
    concepts: str
    roles: dict[int, dict[str, object]] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: Path) -> Truth:
        path = folder / "truth.json"
        if not path.is_file() or not (folder / "sae" / "cfg.json").is_file():
            raise BenchError(f"{folder} is not a planted SAE folder (no truth.json or sae/cfg.json); build one: "
                             f"python -m sagex.activation.planted build --out {folder}")
        data = json.loads(path.read_text())
        return cls(data["architecture"], data["hook_name"], data.get("concepts", ""),
                   {int(k): v for k, v in data["features"].items()})


# --- what the explainers can see ------------------------------------------------------

MIN_MINING_TOKENS = 60_000
MAX_MINING_TOKENS = 400_000  # the activation service's default budget per split
MIN_POSITIVES = 5  # as the builder's observability count (sagex.activation.planted.observe)


def observability(folder: Path, compute: bool = True) -> dict[str, dict[str, Any]]:
    """The build's count of each planted concept in the exemplar split (build.json),
    computed first when the folder predates it (in its own process: it needs the tokenizer)."""
    path = folder / "build.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    if "observability" not in data and compute and path.is_file():
        cmd = [sys.executable, "-m", "sagex.activation.planted", "observe", str(folder)]
        if subprocess.run(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL).returncode:
            raise BenchError(f"could not count the planted concepts of {folder} in the exemplar split: {' '.join(cmd)}")
        data = json.loads(path.read_text())
    return dict(data.get("observability") or {})


def auto_mining_tokens(folder: Path) -> tuple[int, list[str]]:
    """The mining budget at which every planted concept occurs at least ``MIN_POSITIVES``
    times in the scanned part of the exemplar split (rounded up to 10,000 tokens; at least
    ``MIN_MINING_TOKENS``, at most ``MAX_MINING_TOKENS``), and the concepts that stay
    rarer than that even then (they count as misses; the table says so)."""
    counts = observability(folder)
    needs = {name: row.get("tokens_to_min") for name, row in counts.items()}
    reachable = [n for n in needs.values() if n is not None and n <= MAX_MINING_TOKENS]
    tokens = max([MIN_MINING_TOKENS, *(-(-n // 10_000) * 10_000 for n in reachable)])
    rare = sorted(name for name, n in needs.items() if n is None or n > MAX_MINING_TOKENS)
    return min(tokens, MAX_MINING_TOKENS), rare


def resolve_mining_tokens(folder: Path, value: str | int) -> int:
    """``value`` as a token count; "auto": ``auto_mining_tokens``."""
    if str(value) != "auto":
        try:
            return int(value)
        except ValueError:
            raise BenchError(f"--mining-tokens {value!r}: give a number of tokens or auto") from None
    tokens, rare = auto_mining_tokens(folder)
    note = f"; rarer than {MIN_POSITIVES} positives even then: {', '.join(rare)}" if rare else ""
    print(f"mining budget (auto): {tokens:,} tokens, so that each planted concept occurs in the scanned "
          f"exemplar split{note}", flush=True)
    return tokens


def observability_table(folder: Path, mining_tokens: int) -> str:
    """Per planted concept: its positives within the scanned tokens (by the concept's own rule)."""
    counts = observability(folder, compute=False)
    if not counts:
        return ""
    lines = [f"Observability: positive tokens of each planted concept in the first {mining_tokens:,} tokens of the "
             "exemplar split (the concept's own labelling rule; what the explainers can see at best).", "",
             "| concept | positives scanned | tokens to first | tokens to 5 |", "|---|---:|---:|---:|"]
    for name, row in counts.items():
        at = row.get("at", [])  # the build keeps the first 50 offsets
        seen = sum(1 for x in at if x <= mining_tokens)
        shown = f"≥{seen}" if seen == len(at) < row["positives"] else str(seen)
        lines.append(f"| {name} | {shown} | {row.get('tokens_to_first') or '-'} | {row.get('tokens_to_min') or '-'} |")
    return "\n".join(lines)


# --- services ----------------------------------------------------------------------


class Services:
    """The activation service (serving the planted SAE) and the agent, on free loopback
    ports, each its own process; stopped with SIGTERM on exit."""

    def __init__(self, settings: BenchSettings, sae_id: str, workdir: Path) -> None:
        self.settings, self.sae_id, self.workdir = settings, sae_id, workdir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.activation = settings.activation
        self.agent = settings.agent

    def __enter__(self) -> Services:
        from sagex.cli.demo import _free_port, _serve, _wait_serving
        from sagex.cli.up import SERVICES

        try:
            if not self.activation:
                config = self.settings.config
                if not config or "activation" not in tomllib.loads(Path(config).read_text()):
                    # No [activation] table of the user's: this bench's own mining budget.
                    config = str(self.workdir / "activation.toml")
                    Path(config).write_text(f"[activation]\nmax_mining_tokens = {self.settings.mining_tokens}\n")
                port = _free_port()
                self.activation = f"127.0.0.1:{port}"
                self._start(_serve, _wait_serving, SERVICES["activation"], self.activation,
                            ["activation", "--port", str(port), "--config", config,
                             "--sae", f"{self.sae_id}={self.settings.planted / 'sae'}"])
            if not self.agent:
                port = _free_port()
                self.agent = f"127.0.0.1:{port}"
                args = ["agent", "--port", str(port), "--activation", self.activation,
                        "--database", str(self.workdir / "agent.sqlite3")]
                if self.settings.config:
                    args += ["--config", self.settings.config]
                if self.settings.llm_base_url:
                    args += ["--llm-base-url", self.settings.llm_base_url]
                if self.settings.llm_model:
                    args += ["--llm-model", self.settings.llm_model]
                self._start(_serve, _wait_serving, SERVICES["agent"], self.agent, args)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self, serve, wait, service: str, address: str, args: list[str]) -> None:  # type: ignore[no-untyped-def]
        import grpc

        proc = serve(args)
        self.procs.append(proc)
        with grpc.insecure_channel(address) as channel:
            try:
                wait(channel, proc, service, timeout=600)
            except SystemExit as exc:
                raise BenchError(f"{service} did not start: {exc}") from None

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()


# --- running -----------------------------------------------------------------------


def explain_all(settings: BenchSettings, truth: Truth, sae_id: str) -> list[ExplainerRun]:
    from sagex.sdk import Sage

    features = sorted(truth.roles)
    runs: list[ExplainerRun] = []
    with tempfile.TemporaryDirectory(prefix="sage-bench-") as tmp, Services(settings, sae_id, Path(tmp)) as svc:
        with Sage(activation=svc.activation, agent=svc.agent, scoring=None) as sage:
            info = sage.activation.model_info()
            if sae_id not in {s.id for s in info.saes}:
                raise BenchError(f"the activation service at {svc.activation} does not serve {sae_id!r} "
                                 f"(it serves {', '.join(s.id for s in info.saes)}); pass --sae-id")
            print(f"mining exemplars of {sae_id} (first scan of this SAE, {settings.mining_tokens:,} tokens max) ...",
                  flush=True)
            start = time.perf_counter()
            next(iter(sage.activation.exemplars(sae_id, features[:1], top_k=1)), None)
            print(f"  {time.perf_counter() - start:.0f}s", flush=True)
            for name in settings.explainers:
                print(f"explaining {len(features)} features with {name} ...", flush=True)
                if name == "single_pass":
                    run = run_single_pass(sage, sae_id, features, settings.llm_base_url, settings.llm_model)
                else:
                    run = run_policy(sage, sae_id, features, name, max_rounds=settings.max_rounds,
                                     concurrency=settings.concurrency)
                shown = f"error: {run.error}" if run.error else f"{run.seconds:.0f}s"
                print(f"  {shown}", flush=True)
                runs.append(run)
                save_explanations(settings.out, truth, sae_id, runs)  # nothing lost if a later step fails
    return runs


def save_explanations(out: Path, truth: Truth, sae_id: str, runs: Sequence[ExplainerRun]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "explanations.json"
    data = {"sae_id": sae_id, "architecture": truth.architecture, "hook_name": truth.hook_name,
            "concepts": truth.concepts, "roles": {str(k): v for k, v in truth.roles.items()},
            "runs": [asdict(r) for r in runs]}
    tmp = path.with_suffix(".partial")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)
    return path


def load_explanations(path: Path) -> tuple[Truth, str, list[ExplainerRun]]:
    data = json.loads(path.read_text())
    truth = Truth(data["architecture"], data["hook_name"], data.get("concepts", ""),
                  {int(k): v for k, v in data["roles"].items()})
    runs = [ExplainerRun(r["explainer"], [Explained(**f) for f in r["features"]], r["seconds"], r["error"])
            for r in data["runs"]]
    return truth, data["sae_id"], runs


# --- judging and the table ---------------------------------------------------------


@dataclass
class Row:
    explainer: str
    group: str  # "planted" or a concept kind
    recovered: int
    n: int
    low: float
    high: float


def judge_runs(truth: Truth, runs: Sequence[ExplainerRun], judge: Judge) -> dict[str, list[dict[str, object]]]:
    """Per explainer, one record per feature with its role, the judged text and the verdict."""
    out: dict[str, list[dict[str, object]]] = {}
    for run in runs:
        records = []
        items, where = [], []
        for ex in run.features:
            role = truth.roles.get(ex.feature_id, {"role": "unknown"})
            rec: dict[str, object] = {"feature": ex.feature_id, **{k: role.get(k) for k in ("role", "concept", "kind")},
                                      "description": ex.description, "labels": ex.labels, "error": ex.error,
                                      "triage_class": ex.triage_class}
            if role["role"] == "planted" and not ex.error:
                text = judged_text(ex.labels, ex.description)
                rec["judged_text"] = text
                items.append((text, Target(str(role["concept"]), str(role["description"]),
                                           tuple(role.get("key_terms", ())))))  # type: ignore[arg-type]
                where.append(rec)
            if role["role"] == "planted":
                rec["names_concept"] = False
            elif role["role"] == "noise":
                rec["flagged_noise"] = flags_noise(ex.labels, ex.description, bool(ex.error))
            elif role["role"] == "dead":
                rec["triaged_dead"] = ex.triage_class == "dead"
            records.append(rec)
        for rec, verdict in zip(where, judge.judge(items), strict=True):
            rec["names_concept"] = verdict.names_it
            rec["judge_reason"] = verdict.reason
        out[run.explainer] = records
    return out


def summarise(truth: Truth, runs: Sequence[ExplainerRun], judged: dict[str, list[dict[str, object]]]
              ) -> list[dict[str, object]]:
    kinds = sorted({str(r["kind"]) for r in truth.roles.values() if r["role"] == "planted"})
    summary = []
    for run in runs:
        recs = judged.get(run.explainer, [])
        planted = [r for r in recs if r["role"] == "planted"]
        noise = [r for r in recs if r["role"] == "noise"]
        dead = [r for r in recs if r["role"] == "dead"]
        n = max(len(run.features), 1)
        row: dict[str, object] = {
            "explainer": run.explainer, "error": run.error, "features": len(run.features),
            "failed": sum(bool(r["error"]) for r in recs),
            "noise_flagged": [sum(bool(r.get("flagged_noise")) for r in noise), len(noise)],
            "dead_triaged": [sum(bool(r.get("triaged_dead")) for r in dead), len(dead)],
            "llm_tokens_per_feature": sum(f.prompt_tokens + f.completion_tokens for f in run.features) / n,
            "seconds_per_feature": run.seconds / n,
            "usd_per_feature": sum(f.cost_usd for f in run.features) / n,
            "groups": {},
        }
        for group in ["planted", *kinds]:
            members = [r for r in planted if group == "planted" or r["kind"] == group]
            k = sum(bool(r["names_concept"]) for r in members)
            low, high = wilson(k, len(members))
            row["groups"][group] = {"recovered": k, "n": len(members), "rate": k / len(members) if members else None,  # type: ignore[index]
                                    "ci95": [round(low, 3), round(high, 3)]}
        summary.append(row)
    return summary


def _rate(g: dict[str, Any]) -> str:
    if not g["n"]:
        return "-"
    lo, hi = g["ci95"]
    return f"{g['recovered']}/{g['n']} {g['rate']:.2f} [{lo:.2f}, {hi:.2f}]"


def table(summary: Sequence[dict[str, Any]]) -> str:
    """One Markdown table: per explainer, recovery overall and per concept kind (95% Wilson
    intervals), noise fillers flagged, dead fillers triaged, failures, cost per feature."""
    if not summary:
        return "(no explainer ran)"
    groups = list(summary[0]["groups"])
    head = (["explainer", *(f"recovered: {g}" if g == "planted" else g for g in groups), "noise flagged",
             "dead triaged", "failed", "LLM tokens/feature", "s/feature", "$/feature"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in summary:
        if row["error"]:
            lines.append(f"| {row['explainer']} | did not run: {row['error']} |" + " |" * (len(head) - 2))
            continue
        nf, nn = row["noise_flagged"]
        df, dn = row["dead_triaged"]
        cells = [str(row["explainer"]), *(_rate(row["groups"][g]) for g in groups),
                 f"{nf}/{nn}", f"{df}/{dn}", str(row["failed"]), f"{row['llm_tokens_per_feature']:.0f}",
                 f"{row['seconds_per_feature']:.1f}", f"{row['usd_per_feature']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.machine()}, Python {platform.python_version()}"


def make_judge(kind: str, base_url: str = "", model: str = "", threshold: float | None = None) -> Judge:
    from sagex.bench.judge import DEFAULT_THRESHOLD, LLMJudge, OfflineJudge

    if kind == "offline":
        return OfflineJudge(DEFAULT_THRESHOLD if threshold is None else threshold)
    if kind == "llm":
        if not base_url or not model:
            raise BenchError("--judge llm needs --judge-base-url and --judge-model")
        judge = LLMJudge(base_url, model)
        try:
            judge.check()
        except JudgeUnavailable as exc:
            raise BenchError(f"{exc}; nothing was explained yet (or use --judge offline)") from None
        return judge
    raise BenchError(f"--judge {kind!r}: choose offline or llm")


def report(settings: BenchSettings, truth: Truth, sae_id: str, runs: Sequence[ExplainerRun], judge: Judge,
           started: float) -> str:
    judged = judge_runs(truth, runs, judge)
    summary = summarise(truth, runs, judged)
    text = table(summary)
    roles = [r["role"] for r in truth.roles.values()]
    header = (f"Planted SAE {sae_id}: {truth.architecture}, hook {truth.hook_name}, concepts {truth.concepts!r}; "
              f"{roles.count('planted')} planted, {roles.count('noise')} noise and {roles.count('dead')} dead "
              f"features; judge: {judge.name}. Machine: {machine()}.")
    data = {"sae_id": sae_id, "architecture": truth.architecture, "hook_name": truth.hook_name,
            "concepts": truth.concepts, "judge": judge.name, "machine": machine(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seconds": round(time.time() - started, 1),
            "settings": {k: str(v) for k, v in asdict(settings).items()}, "summary": summary, "features": judged}
    settings.out.mkdir(parents=True, exist_ok=True)
    (settings.out / "planted.json").write_text(json.dumps(data, indent=1) + "\n")
    per_feature = ["| explainer | feature | role | concept | verdict | judged text |", "|---|---:|---|---|---|---|"]
    for name, recs in judged.items():
        for r in recs:
            verdict = ("names it" if r.get("names_concept") else "misses") if r["role"] == "planted" else (
                ("flagged" if r.get("flagged_noise") else "not flagged") if r["role"] == "noise" else
                ("triaged" if r.get("triaged_dead") else "not triaged"))
            shown = str(r.get("judged_text") or r["error"] or r["description"]).replace("|", "\\|").replace("\n", " ")
            per_feature.append(f"| {name} | {r['feature']} | {r['role']} | {r.get('concept') or ''} | {verdict} | "
                               f"{shown[:160]} |")
    # The counts are of the embedded corpus: not shown for services mining another one.
    own_corpus = settings.activation or (settings.config and "activation" in tomllib.loads(
        Path(settings.config).read_text()))
    seen = "" if own_corpus or settings.mining_tokens <= 0 else observability_table(settings.planted,
                                                                                   settings.mining_tokens)
    (settings.out / "planted.md").write_text(
        f"# Planted-feature benchmark\n\n{header}\n\nRecovery: share of planted features whose explanation names "
        f"the concept (95% Wilson interval).\n\n{text}\n\n" + (f"{seen}\n\n" if seen else "")
        + "## Per feature\n\n" + "\n".join(per_feature) + "\n")
    return f"{header}\n\n{text}"


def run(settings: BenchSettings, judge_kind: str = "offline", judge_base_url: str = "", judge_model: str = "",
        from_explanations: Path | None = None) -> int:
    started = time.time()
    try:
        judge = make_judge(judge_kind, judge_base_url, judge_model)  # an unreachable judge fails before the run
        if from_explanations is not None:
            truth, sae_id, runs = load_explanations(from_explanations)
        else:
            truth = Truth.load(settings.planted)
            sae_id = settings.sae_id or f"planted-{truth.architecture}"
            runs = explain_all(settings, truth, sae_id)
        try:
            print("\n" + report(settings, truth, sae_id, runs, judge, started))
        except JudgeUnavailable as exc:
            kept = from_explanations or settings.out / "explanations.json"
            raise BenchError(f"{exc}; the explanations are saved in {kept}: rerun with --from-explanations "
                             f"{kept} and a working judge") from None
    except (BenchError, JudgeUnavailable) as exc:
        print(f"sage bench planted: {exc}", file=sys.stderr)
        return 2
    print(f"\nwrote {settings.out / 'planted.md'} and {settings.out / 'planted.json'}")
    return 0
