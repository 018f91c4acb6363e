"""A real OpenAI-compatible server for tests: ``transformers serve`` on loopback.

It serves the embedded SmolLM2-135M folder on the CPU, offline. Requests must
name the model by its folder path (``TransformersServe.model``). The server
ignores ``response_format`` and ``logprobs``, so it exercises the real client
path and the prompt-only JSON fallback, not constrained decoding.

    transformers_serve = transformers_serve_fixture()   # in a test module

    async def test_x(transformers_serve: TransformersServe) -> None:
        LLMConfig(base_url=transformers_serve.base_url, model=transformers_serve.model)
"""

from __future__ import annotations

import os
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sagex.llm.local import ServerProcess


class TransformersServe(ServerProcess):
    """Context manager: start ``transformers serve <model_dir>``, wait for /health, stop on exit."""

    def __init__(self, model_dir: Path, *, startup_timeout_s: float = 120.0, extra_args: tuple[str, ...] = ()) -> None:
        self.model_dir = Path(model_dir)
        self.startup_timeout_s = startup_timeout_s
        self.extra_args = extra_args
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def model(self) -> str:
        """The model id requests must carry: the folder the server preloaded."""
        return str(self.model_dir)

    def __enter__(self) -> TransformersServe:
        self.port = _free_port()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
        command = [
            sys.executable, "-m", "transformers.cli.transformers", "serve", str(self.model_dir),
            "--host", "127.0.0.1", "--port", str(self.port), "--device", "cpu", "--log-level", "info",
            *self.extra_args,
        ]  # fmt: skip
        self._spawn(command, env)
        try:
            self._wait_healthy()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_healthy(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"transformers serve exited with code {self._proc.returncode} before becoming healthy "
                    f"(is the serving extra installed? pip install -r requirements.lock). Output:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.25)
        raise RuntimeError(
            f"transformers serve did not answer GET /health within {self.startup_timeout_s:g} s. "
            f"Output:\n{self.log_tail()}"
        )


def embedded_model_dir() -> Path:
    """The converted SmolLM2-135M-Instruct folder (converted once, about 50 s, if missing)."""
    from sagex.activation.assets.model import ensure_embedded_model

    return ensure_embedded_model()


def transformers_serve_fixture(
    model_dir: Callable[[], Path] = embedded_model_dir, **options: Any
) -> Callable[..., Iterator[TransformersServe]]:
    """A session-scoped pytest fixture running one server for all tests that use it.
    Assign it to a name in a test module or conftest; that name is the fixture's."""

    @pytest.fixture(scope="session")
    def transformers_serve() -> Iterator[TransformersServe]:
        with TransformersServe(model_dir(), **options) as server:
            yield server

    return transformers_serve


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
