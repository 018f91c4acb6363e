"""The local llama.cpp server's launcher and `sage llm serve`'s refusals (fast: no
server is started; tests/llm/test_llama_cpp.py drives the real one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sagex.cli.main import main
from sagex.llm.local import LlamaServerOptions, missing, packaged_gguf
from sagex.llm.serve import main as serve_main


def test_the_packaged_gguf_is_found_without_importing_its_package() -> None:
    gguf = packaged_gguf()
    assert gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and gguf.stat().st_size > 50_000_000


def test_the_command_serves_the_gguf_under_its_alias_on_loopback(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    command = LlamaServerOptions(gguf=gguf, alias="mine", n_ctx=2048, n_threads=3).command(8123)
    assert command[1:3] == ["-m", "sagex.llm.llama_main"]  # llama-cpp-python's server behind the AMX guard
    flags = dict(zip(command[3::2], command[4::2], strict=True))
    assert flags["--model"] == str(gguf) and flags["--model_alias"] == "mine"
    assert flags["--host"] == "127.0.0.1" and flags["--port"] == "8123"
    assert flags["--n_ctx"] == "2048" and flags["--n_threads"] == "3"


def test_serve_refuses_a_public_address_without_public() -> None:
    with pytest.raises(SystemExit) as refused:
        serve_main(["--host", "0.0.0.0"])
    reason = missing()
    assert (reason or "0.0.0.0 is not loopback") in str(refused.value)


def test_serve_says_what_to_do_about_a_missing_model(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as refused:
        serve_main(["--gguf", str(tmp_path / "nope.gguf")])
    reason = missing()
    assert (reason or "nope.gguf is not a file; give the path of a .gguf model") in str(refused.value)


def test_sage_llm_serve_hands_its_flags_to_the_server_module() -> None:
    """The CLI (torch-free, no server kit) passes `sage llm serve`'s flags on unread."""
    from sagex.cli.main import parse

    args = parse(["llm", "serve", "--host", "0.0.0.0", "--port", "9"])
    assert (args.action, args.flags) == ("serve", ["--host", "0.0.0.0", "--port", "9"])
    with pytest.raises(SystemExit):  # a command that takes no pass-through flags still refuses unknown ones
        main(["demo", "--no-such-flag"])
