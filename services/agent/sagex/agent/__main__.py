"""`python -m sagex.agent`: serve the SAGE agent (what `sage serve agent` runs)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from sagex.agent.config import AgentConfig
from sagex.agent.server import serve
from sagex.server.cli import add_llm_flags, add_store_flags, main_for, service_parser, store_overrides


def build_parser() -> argparse.ArgumentParser:
    parser = service_parser("agent", "SAGE agent service")
    add_store_flags(parser, "jobs and explanations")
    add_llm_flags(parser, "the openai policy")
    return parser


def overrides(args: argparse.Namespace) -> dict[str, object]:
    return store_overrides(args)


def main(argv: Sequence[str] | None = None) -> int:
    return main_for(build_parser(), "agent", overrides, AgentConfig, serve, argv)


if __name__ == "__main__":
    raise SystemExit(main())
