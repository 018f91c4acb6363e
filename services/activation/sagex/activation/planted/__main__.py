"""``python -m sagex.activation.planted build|verify|observe|concepts``: see ``sagex.activation.planted``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sagex.activation.planted.build import (
    ARCHITECTURES,
    BuildError,
    BuildSettings,
    add_observability,
    build,
    format_report,
    reverify,
)
from sagex.activation.planted.observe import MIN_POSITIVES
from sagex.activation.planted.registry import SETS, ConceptError, select


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (sae/, truth.json, build.json)")
    parser.add_argument("--arch", default="topk", choices=ARCHITECTURES)
    parser.add_argument("--concepts", default="dev", choices=SETS,
                        help="built-in set: dev (default), dev2 and dev3 (second and third development sets), "
                        "heldout (never tune against it), all (dev + heldout), none")
    parser.add_argument("--concept", action="append", default=[], metavar="MODULE:FUNCTION|FILE.jsonl",
                        help="add your own concepts (repeatable)")
    parser.add_argument("--hook", default="", help="hook name (default: the embedded SAE's, model.layers.3)")
    parser.add_argument("--model", default="", help="model folder or .gguf (default: the embedded SmolLM2)")
    parser.add_argument("--corpus-dir", default="", help="built corpus (default: ~/.cache/sagex/corpus)")
    parser.add_argument("--corpus-docs", type=int, default=400, help="corpus documents for the probes")
    parser.add_argument("--templates", type=int, default=40, help="templated documents per concept")
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens per document")
    parser.add_argument("--noise", type=int, default=6, help="noise fillers (random directions that fire)")
    parser.add_argument("--dead", type=int, default=6, help="dead fillers (never fire)")
    parser.add_argument("--k", type=int, default=8, help="TopK's k")
    parser.add_argument("--min-auroc", type=float, default=0.9, help="plant only probes at least this good")
    parser.add_argument("--seed", type=int, default=0)


def settings_from(args: argparse.Namespace) -> BuildSettings:
    return BuildSettings(architecture=args.arch, concepts=args.concepts, extra_concepts=tuple(args.concept),
                         hook_name=args.hook, model=args.model, corpus_dir=args.corpus_dir,
                         corpus_docs=args.corpus_docs, templates_per_concept=args.templates,
                         max_tokens=args.max_tokens, noise=args.noise, dead=args.dead, k=args.k,
                         min_auroc=args.min_auroc, seed=args.seed)


def run_build(args: argparse.Namespace) -> int:
    from sagex.server.logging import configure_logging

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no weight-loading bar in the report
    configure_logging("warning")
    try:
        settings = settings_from(args)
        concepts = select(settings.concepts, settings.extra_concepts)
        built = build(Path(args.out), settings, concepts)
    except (BuildError, ConceptError) as exc:
        print(f"planted build: {exc}", file=sys.stderr)
        return 2
    print(format_report(built))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sagex.activation.planted")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="probe concepts, plant them in an SAELens folder, verify it")
    add_build_arguments(b)
    v = sub.add_parser("verify", help="measure a built folder's features again on its test documents")
    v.add_argument("out", help="the folder given to build --out")
    o = sub.add_parser("observe", help="count a built folder's planted concepts in the exemplar split "
                       "(what the benchmark's explainers can see) and store the counts in its build.json")
    o.add_argument("out", help="the folder given to build --out")
    c = sub.add_parser("concepts", help="list a concept set (names, kinds, descriptions)")
    c.add_argument("--concepts", default="dev", choices=SETS)
    args = parser.parse_args(argv)
    if args.command == "concepts":
        for concept in select(args.concepts):
            print(f"{concept.name:<24} {concept.kind:<11} {concept.description}")
        return 0
    if args.command == "observe":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            counts = add_observability(Path(args.out))
        except (BuildError, ConceptError, FileNotFoundError) as exc:
            print(f"planted observe: {exc}", file=sys.stderr)
            return 2
        for name, row in counts.items():
            print(f"{name:<24} {row['positives']:>6} positives in {row['scanned_tokens']:,} tokens; "
                  f"{MIN_POSITIVES} within {row['tokens_to_min'] or 'never'}")
        return 0
    if args.command == "verify":
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        try:
            print(format_report(reverify(Path(args.out))))
        except (BuildError, ConceptError) as exc:
            print(f"planted verify: {exc}", file=sys.stderr)
            return 2
        return 0
    return run_build(args)


if __name__ == "__main__":
    raise SystemExit(main())
