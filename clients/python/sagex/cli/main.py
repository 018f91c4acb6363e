"""`sage`: run SAGE's services and prepare its assets.

    sage serve activation [--port 50051] [--config sage.toml] [--sae ID=FOLDER ...]
    sage serve agent [--port 50052] [--activation HOST:PORT ...] [--llm-base-url URL --llm-model NAME]
    sage serve all
    sage assets prepare            # convert the embedded model, build the corpus
    sage demo                      # the main job, end to end on the embedded default

Heavy imports (torch, transformers, sae-lens) happen inside the subcommands
that need them, so `sage --help` answers at once.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

SERVICES = ("activation", "agent", "scoring", "all")
NOT_BUILT = {
    "scoring": "the scoring service is not built yet (issue #5)",
}


def _parse_sae(values: list[str]) -> dict[str, Path]:
    saes = {}
    for value in values:
        sae_id, sep, folder = value.partition("=")
        if not sep or not sae_id or not folder:
            raise SystemExit(f"--sae expects ID=FOLDER, got {value!r}")
        saes[sae_id] = Path(folder)
    return saes


def _activation_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from sagex.activation.config import ActivationConfig

    overrides = {}
    if args.sae:
        overrides["saes"] = _parse_sae(args.sae)
    if args.model:
        overrides["model"] = Path(args.model)
    if args.device:
        overrides["device"] = args.device
    try:
        config = ActivationConfig.from_toml(Path(args.config), **overrides) if args.config else ActivationConfig(**overrides)
    except (ValueError, OSError) as exc:
        raise SystemExit(f"sage serve activation: {exc}") from None
    server = {"host": args.host}
    if args.port is not None:
        server["port"] = args.port
    return replace(config, server=replace(config.server, **server))


def _agent_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from sagex.agent.config import AgentConfig

    overrides: dict[str, object] = {}
    if args.activation:
        overrides["activation"] = tuple(args.activation)
    if args.database:
        overrides["database"] = Path(args.database)
    try:
        config = AgentConfig.from_toml(Path(args.config), **overrides) if args.config else AgentConfig(**overrides)
        llm = {k: v for k, v in (("base_url", args.llm_base_url), ("model", args.llm_model)) if v}
        if llm:
            config = replace(config, llm=replace(config.llm, **llm))
    except (ValueError, OSError) as exc:
        raise SystemExit(f"sage serve agent: {exc}") from None
    server = {"host": args.host}
    if args.port is not None:
        server["port"] = args.port
    return replace(config, server=replace(config.server, **server))


def cmd_serve(args: argparse.Namespace) -> int:
    from sagex.server.logging import configure_logging

    configure_logging(args.log_level, json=args.log_json)
    if args.service in NOT_BUILT:
        print(f"sage serve {args.service}: {NOT_BUILT[args.service]}", file=sys.stderr)
        return 2
    if args.service == "all":
        for name, why in NOT_BUILT.items():
            print(f"sage serve all: skipping {name}: {why}", file=sys.stderr)
    if args.service == "agent":
        from sagex.agent.server import serve as serve_agent

        asyncio.run(serve_agent(_agent_config(args)))
        return 0
    from sagex.activation.server import serve

    asyncio.run(serve(_activation_config(args)))
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

    return run_demo(mining_tokens=args.mining_tokens)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sage", description="SAGE: agentic explanations of SAE features")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a service on this machine")
    serve.add_argument("service", choices=SERVICES)
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 50051 activation, 50052 agent)")
    serve.add_argument("--config", help="TOML file with an [activation] or [agent] table")
    serve.add_argument("--model", help="local transformers folder or .gguf file (default: embedded SmolLM2)")
    serve.add_argument("--sae", action="append", default=[], metavar="ID=FOLDER", help="allowlist an SAELens folder")
    serve.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    serve.add_argument("--activation", action="append", default=[], metavar="HOST:PORT",
                       help="agent: an activation replica (repeat for round robin; default 127.0.0.1:50051)")
    serve.add_argument("--database", help="agent: SQLite file for jobs and explanations")
    serve.add_argument("--llm-base-url", help="agent: OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    serve.add_argument("--llm-model", help="agent: model name for the openai policy")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--log-json", action="store_true", default=None, help="JSON logs even on a terminal")
    serve.set_defaults(func=cmd_serve)

    assets = sub.add_parser("assets", help="prepare the embedded default assets")
    assets_sub = assets.add_subparsers(dest="action", required=True)
    prepare = assets_sub.add_parser("prepare", help="convert the packaged model and build the corpus")
    prepare.add_argument("--extra", action="append", default=[], help="add a .txt or .jsonl file to the corpus")
    prepare.add_argument("--rebuild-corpus", action="store_true")
    prepare.set_defaults(func=cmd_assets)

    demo = sub.add_parser("demo", help="run the main job end to end on the embedded default")
    demo.add_argument("--mining-tokens", type=int, default=60_000, help="corpus tokens scanned for exemplars")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
