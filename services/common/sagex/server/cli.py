"""The command line every service shares: `python -m sagex.<service> [flags]`.

Each service's ``__main__`` adds its own flags and turns them into config overrides;
the server flags (bind address, auth, TLS, metrics, logging), reading ``--config`` and
starting the server are the same for all three and live here, once.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from sagex.server.logging import configure_logging

DEFAULT_PORTS = {"activation": 50051, "agent": 50052, "scoring": 50053}


C = TypeVar("C")


def service_parser(service: str, description: str) -> argparse.ArgumentParser:
    """A parser with the flags every service takes; the caller adds its own."""
    parser = argparse.ArgumentParser(prog=f"python -m sagex.{service}", description=description)
    parser.add_argument("--host", help="bind address (default: the config's, else 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help=f"port (default {DEFAULT_PORTS[service]})")
    parser.add_argument("--config", help=f"TOML file with an [{service}] table")
    parser.add_argument("--tokens-file", help="accepted bearer tokens, one per line; every RPC but health then "
                        "needs one (also $SAGE_AUTH_TOKENS)")
    parser.add_argument("--allow-unauthenticated", action="store_true",
                        help="serve a non-loopback --host with no tokens and no client certificates")
    parser.add_argument("--tls-cert", help="PEM certificate chain: TLS on (with --tls-key)")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument("--tls-client-ca", help="require client certificates signed by this CA (mutual TLS)")
    parser.add_argument("--metrics-port", type=int, help="Prometheus /metrics on this port (default: off)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-json", action="store_true", default=None, help="JSON logs even on a terminal")
    return parser


def add_store_flags(parser: argparse.ArgumentParser, stored: str) -> None:
    """The flags of a service that calls the activation service and keeps a database."""
    parser.add_argument("--activation", action="append", default=[], metavar="HOST:PORT",
                        help="an activation replica (repeat for round robin; default 127.0.0.1:50051)")
    parser.add_argument("--database", help=f"SQLite file of {stored} (default: under ~/.cache/sagex)")


def store_overrides(args: argparse.Namespace) -> dict[str, object]:
    overrides: dict[str, object] = {}
    if args.activation:
        overrides["activation"] = tuple(args.activation)
    if args.database:
        overrides["database"] = Path(args.database)
    return overrides


def add_llm_flags(parser: argparse.ArgumentParser, who: str) -> None:
    parser.add_argument("--llm-base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--llm-model", help=f"model name ({who})")


def build_config(service: str, cls: type[C], args: argparse.Namespace, overrides: Mapping[str, object]) -> C:
    """``cls`` from --config (or defaults) with the flags applied; mistakes exit with the reason."""
    try:
        config: Any = cls.from_toml(Path(args.config), **overrides) if args.config else cls(**overrides)  # type: ignore[attr-defined]
        llm = {k: v for k, v in (("base_url", getattr(args, "llm_base_url", None)),
                                 ("model", getattr(args, "llm_model", None))) if v}
        if llm:
            config = replace(config, llm=replace(config.llm, **llm))
    except (ValueError, OSError, TypeError) as exc:
        raise SystemExit(f"sagex.{service}: {exc}") from None
    server: dict[str, object] = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    for flag, option in (("tokens_file", "auth_tokens_file"), ("tls_cert", "tls_cert_file"),
                         ("tls_key", "tls_key_file"), ("tls_client_ca", "tls_client_ca_file")):
        if getattr(args, flag, None):
            server[option] = Path(getattr(args, flag))
    if args.metrics_port is not None:
        server["metrics_port"] = args.metrics_port
    if args.allow_unauthenticated:
        server["allow_unauthenticated"] = True
    try:
        return replace(config, server=replace(config.server, **server))  # type: ignore[no-any-return]
    except ValueError as exc:
        raise SystemExit(f"sagex.{service}: {exc}") from None


def run(service: str, serve: Callable[[C], Coroutine[Any, Any, None]], config: C,
        args: argparse.Namespace) -> int:
    configure_logging(args.log_level, json=args.log_json)
    try:
        asyncio.run(serve(config))
    except (ValueError, OSError) as exc:  # refused to start: bad tokens file, open on 0.0.0.0, port taken
        raise SystemExit(f"sagex.{service}: {exc}") from None
    return 0


def main_for(parser: argparse.ArgumentParser, service: str,
             overrides: Callable[[argparse.Namespace], dict[str, object]], config_cls: type[C],
             serve: Callable[[C], Coroutine[Any, Any, None]], argv: Sequence[str] | None) -> int:
    """The whole of a service's ``main``: parse, build the config, serve until stopped."""
    args = parser.parse_args(argv)
    return run(service, serve, build_config(service, config_cls, args, overrides(args)), args)
