"""`python -m sagex.activation`: serve the model and SAEs (what `sage serve activation` runs)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from sagex.activation.config import ActivationConfig
from sagex.activation.formats import SaeSource
from sagex.activation.server import serve
from sagex.server.cli import main_for, service_parser


def parse_saes(values: Sequence[str]) -> dict[str, str | SaeSource]:
    """``ID=SOURCE`` or ``ID=SOURCE@HOOK``; SOURCE is a folder or a release id ``release/sae_id``."""
    saes: dict[str, str | SaeSource] = {}
    for value in values:
        sae_id, sep, source = value.partition("=")
        if not sep or not sae_id or not source:
            raise SystemExit(f"--sae expects ID=SOURCE[@HOOK], got {value!r}")
        source, at, hook = source.rpartition("@") if "@" in source else (source, "", "")
        saes[sae_id] = SaeSource(source, hook or None) if at else source
    return saes


def build_parser() -> argparse.ArgumentParser:
    parser = service_parser("activation", "SAGE activation service")
    parser.add_argument("--model", help="local transformers folder or .gguf file (default: embedded SmolLM2)")
    parser.add_argument("--sae", action="append", default=[], metavar="ID=SOURCE[@HOOK]",
                        help="serve this SAE too (adds to the config's and the embedded one): a folder (SAELens, "
                        "sparsify, Gemma Scope params.npz) or a SAELens release id release/sae_id from the HF cache; "
                        "@HOOK names the hook (TransformerLens or HF module path)")
    parser.add_argument("--no-embedded-sae", action="store_true",
                        help="do not serve the embedded SAE alongside the embedded model")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--mining-cache-dir", help="where exemplar indexes are cached and checkpointed "
                        "(default ~/.cache/sagex/mining, or $SAGEX_CACHE_DIR/mining)")
    parser.add_argument("--steering", action="store_true",
                        help="load the full model so SteerGenerate (`sage steer`) is served (costs memory)")
    return parser


def model_overrides(args: argparse.Namespace) -> dict[str, object]:
    """--model, --device and --mining-cache-dir: what every command that loads the model takes."""
    out: dict[str, object] = {}
    if args.model:
        out["model"] = Path(args.model)
    if args.device:
        out["device"] = args.device
    if args.mining_cache_dir:
        out["mining_cache_dir"] = Path(args.mining_cache_dir)
    return out


def overrides(args: argparse.Namespace) -> dict[str, object]:
    out = model_overrides(args)
    if args.no_embedded_sae:
        out["embedded_sae"] = False
    if args.steering:
        out["steering"] = True
    if args.sae:  # --sae adds to the config's SAEs (and to the embedded one), never replaces them
        try:
            base = ActivationConfig.from_toml(Path(args.config)) if args.config else None
        except (ValueError, OSError, TypeError) as exc:
            raise SystemExit(f"sagex.activation: {exc}") from None
        out["saes"] = {**(base.saes if base else {}), **parse_saes(args.sae)}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    return main_for(build_parser(), "activation", overrides, ActivationConfig, serve, argv)


if __name__ == "__main__":
    raise SystemExit(main())
