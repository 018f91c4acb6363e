"""`python -m sagex.activation`: serve the model and SAEs (what `sage serve activation` runs)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from sagex.activation.config import ActivationConfig
from sagex.activation.server import serve
from sagex.server.cli import main_for, service_parser


def parse_saes(values: Sequence[str]) -> dict[str, Path]:
    saes = {}
    for value in values:
        sae_id, sep, folder = value.partition("=")
        if not sep or not sae_id or not folder:
            raise SystemExit(f"--sae expects ID=FOLDER, got {value!r}")
        saes[sae_id] = Path(folder)
    return saes


def build_parser() -> argparse.ArgumentParser:
    parser = service_parser("activation", "SAGE activation service")
    parser.add_argument("--model", help="local transformers folder or .gguf file (default: embedded SmolLM2)")
    parser.add_argument("--sae", action="append", default=[], metavar="ID=FOLDER", help="allowlist an SAELens folder")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    overrides: dict[str, object] = {}
    if args.sae:
        overrides["saes"] = parse_saes(args.sae)
    if args.model:
        overrides["model"] = Path(args.model)
    if args.device:
        overrides["device"] = args.device
    return overrides


def main(argv: Sequence[str] | None = None) -> int:
    return main_for(build_parser(), "activation", _overrides, ActivationConfig, serve, argv)


if __name__ == "__main__":
    raise SystemExit(main())
