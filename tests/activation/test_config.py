"""ActivationConfig: bad settings fail at start-up with a message naming each one."""

from __future__ import annotations

from pathlib import Path

import pytest

from sagex.activation.config import ActivationConfig

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "config" / "activation.example.toml"


def test_example_config_loads() -> None:
    config = ActivationConfig.from_toml(EXAMPLE)
    assert config.server.port == 50051 and config.server.host == "127.0.0.1"
    assert config.batch_token_budget == 4096


def test_every_problem_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        ActivationConfig(
            saes={"a/b": tmp_path / "missing"}, device="tpu", dtype="int8", max_top_k=0, batch_token_budget=10,
        )
    message = str(info.value)
    for expected in ("'a/b'", "is not a folder", "device", "dtype", "max_top_k", "batch_token_budget"):
        assert expected in message


def test_toml_paths_are_relative_to_the_file_and_unknown_keys_fail(tmp_path: Path) -> None:
    (tmp_path / "my-sae").mkdir()
    good = tmp_path / "good.toml"
    good.write_text('[activation]\nmax_top_k = 8\n[activation.saes]\nmine = "my-sae"\n')
    config = ActivationConfig.from_toml(good)
    assert config.saes == {"mine": tmp_path / "my-sae"} and config.max_top_k == 8
    bad = tmp_path / "bad.toml"
    bad.write_text("[activation]\nmax_topk = 8\n")
    with pytest.raises(ValueError, match="unknown activation settings.*max_topk"):
        ActivationConfig.from_toml(bad)


def test_limits_that_would_deadlock_or_never_admit_are_rejected() -> None:
    with pytest.raises(ValueError) as info:
        ActivationConfig(max_inflight_batches_per_stream=0, mining_batch_windows=0, max_queue_texts=10)
    message = str(info.value)
    assert "max_inflight_batches_per_stream" in message and "mining_batch_windows" in message
    assert "max_queue_texts" in message


def test_token_limits_beyond_the_models_positions_fail_at_start() -> None:
    from sagex.activation.engine import ActivationEngine

    with pytest.raises(ValueError, match="positions; lower them"):
        ActivationEngine(ActivationConfig(max_tokens_per_text=100_000, batch_token_budget=100_000))
