"""`sage`: run SAGE's services and prepare its assets.

    sage serve activation [--port 50051] [--config sage.toml] [--sae ID=SOURCE[@HOOK] ...] [--no-embedded-sae]
    sage serve agent [--port 50052] [--activation HOST:PORT ...] [--llm-base-url URL --llm-model NAME]
    sage serve scoring [--port 50053] [--activation HOST:PORT ...] [--agent HOST:PORT] [--llm-base-url URL ...]
    sage serve all                 # = sage up: the three services, wired together
    sage steer SAE FEATURE "prompt" [--strength A | --target-kl KL] [--mode add|clamp]
    sage up [--port-base 50051]
    sage assets prepare            # convert the embedded model, build the corpus
    sage demo                      # the main job, end to end on the embedded default
    sage explain SAE 1,5,10-20 --watch   # the agent, as a batch job with live progress
    sage score SAE FEATURE "text"        # score one explanation
    sage mine SAE                        # build the exemplar indexes ahead of time (progress, ETA)
    sage eval SAE 1,5,10-20        # SAGE vs the single-pass baseline on the same held-out data
    sage report SAE 1,5,10-20      # explanations, probes and scores as one HTML file
    sage export SAE 1,5,10-20 --format neuronpedia,delphi --out export/
    sage llm serve [--port 8080] [--gguf FILE]   # llama.cpp's OpenAI-compatible server (make llm-setup)
    sage bench planted DIR --explainers heuristic,openai   # recovery of planted concepts (ground truth)

The services are separate distributions: `sage serve X` runs `python -m sagex.X`
and `sage assets` runs `python -m sagex.activation.assets`, so this CLI (and the SDK it
is built on) never imports torch, transformers or sae-lens.

explain, score, eval and report find the services through --agent/--activation/--scoring,
else $SAGE_AGENT/$SAGE_ACTIVATION/$SAGE_SCORING (as `sage up` prints them), else the local ports.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

SERVICES = ("activation", "agent", "scoring", "all")
# Where the client commands find each service: the flag, else $SAGE_<SERVICE> (what
# `sage up` tells users to set; the SDK reads the same), else the local port.
SERVICE_ENV = {"activation": ("SAGE_ACTIVATION", "127.0.0.1:50051"), "agent": ("SAGE_AGENT", "127.0.0.1:50052"),
               "scoring": ("SAGE_SCORING", "127.0.0.1:50053")}


def _address_help(service: str, what: str = "") -> str:
    env, local = SERVICE_ENV[service]
    return f"the {service} service{what} (default ${env}, else {local})"


def _resolve_addresses(args: argparse.Namespace) -> None:
    for service, (env, local) in SERVICE_ENV.items():
        if getattr(args, service, "") is None:
            setattr(args, service, os.environ.get(env) or local)


def _run_module(module: str, argv: list[str], folder: str) -> int:
    """Hand this process over to ``python -m module``: the services are separate distributions,
    so the CLI never imports them; it runs whichever is installed next to it."""
    try:
        installed = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        installed = False
    if not installed:
        raise SystemExit(f"sage: {module} is not installed in this environment; "
                         f"pip install ./{folder} (or `make setup` for everything)")
    os.execv(sys.executable, [sys.executable, "-m", module, *argv])


def cmd_serve(args: argparse.Namespace) -> int:
    if args.service == "all":
        from sagex.cli.up import up

        host = _flag_value(args.flags, "--host") or "127.0.0.1"
        config = _flag_value(args.flags, "--config")
        return up(host, 50051, config, _flag_value(args.flags, "--log-level") or "info")
    return _run_module(f"sagex.{args.service}", args.flags, f"services/{args.service}")


def _flag_value(flags: list[str], name: str) -> str | None:
    for i, flag in enumerate(flags):
        if flag == name and i + 1 < len(flags):
            return flags[i + 1]
        if flag.startswith(name + "="):
            return flag.split("=", 1)[1]
    return None


def cmd_assets(args: argparse.Namespace) -> int:
    return _run_module("sagex.activation.assets", [args.action, *args.flags], "services/activation")


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
    return score(args.scoring, args.sae, args.feature, args.text, scorers, args.seed, args.activation or None)


def cmd_mine(args: argparse.Namespace) -> int:
    from sagex.cli.mine import mine

    splits = [s.strip() for s in args.split.split(",") if s.strip()]
    unknown = set(splits) - {"exemplar", "heldout", "train"}
    if unknown or not splits:
        raise SystemExit(f"sage mine: --split takes exemplar, heldout or train (comma-separated), got {args.split!r}")
    return mine(args.activation, args.sae, splits)


def cmd_steer(args: argparse.Namespace) -> int:
    from sagex.cli.steer import steer

    if args.strength is not None and args.target_kl is not None:
        raise SystemExit("sage steer: give --strength or --target-kl, not both")
    target = args.target_kl if args.strength is None else None
    if args.strength is None and target is None:
        target = 1.0
    return steer(args.activation, args.sae, args.feature, args.prompts, args.strength, target, args.mode,
                 args.max_new_tokens, args.temperature, args.seed, args.top_k)


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
                  title=args.title, steer_target_kl=args.steer_kl)


def cmd_export(args: argparse.Namespace) -> int:
    from sagex.cli.evaluate import parse_features
    from sagex.cli.export import export

    try:
        features = parse_features(args.features)
    except ValueError as exc:
        raise SystemExit(f"sage export: {exc}") from None
    scorers = [s.strip() for s in args.scorers.split(",") if s.strip()]
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    return export(args.sae, features, formats, Path(args.out), agent=args.agent, activation=args.activation,
                  scoring=args.scoring, scorers=scorers, seed=args.seed, model_id=args.model_id, source=args.source)


def cmd_llm_serve(args: argparse.Namespace) -> int:
    return _run_module("sagex.llm.serve", args.flags, "services/common")


def cmd_bench(args: argparse.Namespace) -> int:
    return _run_module("sagex.bench", [args.bench, *args.flags], "clients/bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sage", description="SAGE: agentic explanations of SAE features")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a service on this machine (python -m sagex.SERVICE)",
                           description="Runs `python -m sagex.SERVICE FLAGS`; `sage serve SERVICE --help` lists "
                           "that service's flags. `all` is `sage up`.")
    serve.add_argument("service", choices=SERVICES)
    serve.add_argument("flags", nargs=argparse.REMAINDER, help="the service's flags")
    serve.set_defaults(func=cmd_serve)

    assets = sub.add_parser("assets", help="prepare the embedded default assets (python -m sagex.activation.assets)")
    assets.add_argument("action", choices=["prepare"])
    assets.add_argument("flags", nargs=argparse.REMAINDER, help="--extra FILE, --rebuild-corpus")
    assets.set_defaults(func=cmd_assets)

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
    explain.add_argument("--agent", help=_address_help("agent"))
    explain.add_argument("--policy", default="", help="symbolic or heuristic (no LLM), openai, or auto (symbolic, "
                         "then openai for what it cannot name); default: the server's")
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
    scorecmd.add_argument("--scoring", help=_address_help("scoring"))
    scorecmd.add_argument("--scorers", default="", help="comma-separated (default: the server's)")
    scorecmd.add_argument("--seed", type=int, default=0)
    scorecmd.add_argument("--activation", default=os.environ.get("SAGE_ACTIVATION", ""),
                          help="the activation service: show the held-out scan the scorers wait for "
                               "(default $SAGE_ACTIVATION; unset: not shown)")
    scorecmd.set_defaults(func=cmd_score)

    steercmd = sub.add_parser("steer", help="a feature's logit lens, and prompts continued with it pushed and without")
    steercmd.add_argument("sae")
    steercmd.add_argument("feature", type=int)
    steercmd.add_argument("prompts", nargs="*", help="prompts to continue (none: only the logit lens)")
    steercmd.add_argument("--strength", type=float, help="α (add) or the clamp value (default: --target-kl 1)")
    steercmd.add_argument("--target-kl", type=float, help="search α for this mean KL in nats (negative: against d_f)")
    steercmd.add_argument("--mode", choices=["add", "clamp"], default="add")
    steercmd.add_argument("--max-new-tokens", type=int, default=16)
    steercmd.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default)")
    steercmd.add_argument("--seed", type=int, default=0)
    steercmd.add_argument("--top-k", type=int, default=10, help="logit-lens tokens shown each way")
    steercmd.add_argument("--activation", help=_address_help("activation"))
    steercmd.set_defaults(func=cmd_steer)

    minecmd = sub.add_parser("mine", help="build an SAE's exemplar indexes ahead of time, with progress")
    minecmd.add_argument("sae", help="SAE id, as the activation service lists it")
    minecmd.add_argument("--split", default="exemplar,heldout",
                         help="corpus splits: exemplar (the agent's), heldout (the scorers'), train "
                              "(default %(default)s)")
    minecmd.add_argument("--activation", help=_address_help("activation"))
    minecmd.set_defaults(func=cmd_mine)

    evaluate = sub.add_parser("eval", help="compare explainers on the same held-out data (paper-style table)")
    evaluate.add_argument("sae", help="SAE id, as the activation service lists it")
    evaluate.add_argument("features", nargs="+", help="feature ids: 3, 1,5,9 or 10-20")
    evaluate.add_argument("--scoring", help=_address_help("scoring"))
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
    rep.add_argument("--agent", help=_address_help("agent"))
    rep.add_argument("--activation", help=_address_help("activation", ", for exemplars ('' leaves them out)"))
    rep.add_argument("--scoring", help=_address_help("scoring"))
    rep.add_argument("--scorers", default="embedding",
                     help="comma-separated; '' skips scoring (default %(default)s: needs no LLM)")
    rep.add_argument("--eval", help="eval.json from `sage eval`, for the comparison table and plot")
    rep.add_argument("--out", default="sage-report.html", help="the HTML file to write (default %(default)s)")
    rep.add_argument("--seed", type=int, default=0)
    rep.add_argument("--title", default="SAGE explanations")
    rep.add_argument("--steer-kl", type=float, help="also show neutral prompts steered at this KL in nats "
                     "(needs `sage serve activation --steering`)")
    rep.set_defaults(func=cmd_report)

    exp = sub.add_parser("export", help="explanations, scores and top activations as Neuronpedia uploads "
                         "and/or a delphi-style folder")
    exp.add_argument("sae", help="SAE id, as the activation service lists it")
    exp.add_argument("features", nargs="+", help="feature ids: 3, 1,5,9 or 10-20 (their newest explanations)")
    exp.add_argument("--format", default="neuronpedia,delphi", help="neuronpedia, delphi or both (default %(default)s)")
    exp.add_argument("--out", default="sage-export", help="folder; one subfolder per format (default %(default)s)")
    exp.add_argument("--agent", default="127.0.0.1:50052", help="the agent service (default %(default)s)")
    exp.add_argument("--activation", default="127.0.0.1:50051", help="the activation service (default %(default)s)")
    exp.add_argument("--scoring", default="127.0.0.1:50053", help="the scoring service (default %(default)s)")
    exp.add_argument("--scorers", default="embedding",
                     help="comma-separated; '' exports no scores (default %(default)s)")
    exp.add_argument("--seed", type=int, default=0)
    exp.add_argument("--model-id", default="", help="Neuronpedia model id (default: from the served model's name)")
    exp.add_argument("--source", default="",
                     help="Neuronpedia source id, {layer}-{set} (default: from the hook and SAE id)")
    exp.set_defaults(func=cmd_export)
    bench = sub.add_parser("bench", help="benchmarks against ground truth (python -m sagex.bench; needs the services)",
                           description="Runs `python -m sagex.bench BENCH FLAGS` (clients/bench); "
                           "`sage bench planted --help` lists its flags.")
    bench.add_argument("bench", choices=["planted"])
    bench.add_argument("flags", nargs=argparse.REMAINDER, help="the benchmark's flags")
    bench.set_defaults(func=cmd_bench)

    llm = sub.add_parser("llm", help="a local OpenAI-compatible LLM server (llama.cpp; python -m sagex.llm.serve)")
    llm_sub = llm.add_subparsers(dest="action", required=True)
    llm_serve = llm_sub.add_parser("serve", help="serve a GGUF model with llama.cpp on this machine (make llm-setup)",
                                   description="Runs `python -m sagex.llm.serve FLAGS`; `sage llm serve --help` "
                                   "lists them.", add_help=False)
    llm_serve.add_argument("flags", nargs=argparse.REMAINDER, help="the server's flags")
    llm_serve.set_defaults(func=cmd_llm_serve)

    demo = sub.add_parser("demo", help="run the main job end to end on the embedded default")
    demo.add_argument("--mining-tokens", type=int, default=60_000, help="corpus tokens scanned for exemplars")
    demo.add_argument("--out", default="sage-demo", help="folder for the report (default %(default)s)")
    demo.set_defaults(func=cmd_demo)
    return parser


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line. Commands that hand over to another module (serve, assets, bench,
    llm serve) pass their flags through unread in ``flags``; argparse sees a leading
    "--flag" of theirs as unknown, so those are put back in front."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        if not hasattr(args, "flags"):
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        args.flags = [*unknown, *args.flags]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.command != "serve":  # serve's --agent/--activation configure a server, not this client
        _resolve_addresses(args)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
