"""`python -m sagex.scoring`: serve the scorers (what `sage serve scoring` runs)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from sagex.scoring.config import ScoringConfig
from sagex.scoring.server import serve
from sagex.server.cli import add_llm_flags, add_store_flags, main_for, service_parser, store_overrides


def build_parser() -> argparse.ArgumentParser:
    parser = service_parser("scoring", "SAGE scoring service")
    add_store_flags(parser, "operations and results")
    parser.add_argument("--agent", help="the agent service that CompareExplainers asks for SAGE explanations")
    add_llm_flags(parser, "the LLM scorers")
    return parser


def overrides(args: argparse.Namespace) -> dict[str, object]:
    out = store_overrides(args)
    if args.agent:
        out["agent"] = args.agent
    return out


def main(argv: Sequence[str] | None = None) -> int:
    return main_for(build_parser(), "scoring", overrides, ScoringConfig, serve, argv)


if __name__ == "__main__":
    raise SystemExit(main())
