"""`python -m sagex.agent`: serve the SAGE agent (what `sage serve agent` runs)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from sagex.agent.config import AgentConfig
from sagex.agent.server import serve
from sagex.server.cli import add_llm_flags, main_for, service_parser


def build_parser() -> argparse.ArgumentParser:
    parser = service_parser("agent", "SAGE agent service")
    parser.add_argument("--activation", action="append", default=[], metavar="HOST:PORT",
                        help="an activation replica (repeat for round robin; default 127.0.0.1:50051)")
    parser.add_argument("--database", help="SQLite file of jobs and explanations (default: under ~/.cache/sagex)")
    add_llm_flags(parser, "the openai policy")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    overrides: dict[str, object] = {}
    if args.activation:
        overrides["activation"] = tuple(args.activation)
    if args.database:
        overrides["database"] = Path(args.database)
    return overrides


def main(argv: Sequence[str] | None = None) -> int:
    return main_for(build_parser(), "agent", _overrides, AgentConfig, serve, argv)


if __name__ == "__main__":
    raise SystemExit(main())
