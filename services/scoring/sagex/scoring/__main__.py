"""`python -m sagex.scoring`: serve the scorers (what `sage serve scoring` runs)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from sagex.scoring.config import ScoringConfig
from sagex.scoring.server import serve
from sagex.server.cli import add_llm_flags, main_for, service_parser


def build_parser() -> argparse.ArgumentParser:
    parser = service_parser("scoring", "SAGE scoring service")
    parser.add_argument("--activation", action="append", default=[], metavar="HOST:PORT",
                        help="an activation replica (repeat for round robin; default 127.0.0.1:50051)")
    parser.add_argument("--database", help="SQLite file of operations and results (default: under ~/.cache/sagex)")
    parser.add_argument("--agent", help="the agent service that CompareExplainers asks for SAGE explanations")
    add_llm_flags(parser, "the LLM scorers")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    overrides: dict[str, object] = {}
    if args.activation:
        overrides["activation"] = tuple(args.activation)
    if args.agent:
        overrides["agent"] = args.agent
    if args.database:
        overrides["database"] = Path(args.database)
    return overrides


def main(argv: Sequence[str] | None = None) -> int:
    return main_for(build_parser(), "scoring", _overrides, ScoringConfig, serve, argv)


if __name__ == "__main__":
    raise SystemExit(main())
