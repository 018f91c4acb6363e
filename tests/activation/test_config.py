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


def test_mining_shards_and_a_mining_batch_that_is_not_one_forward_pass_are_rejected() -> None:
    with pytest.raises(ValueError) as info:
        ActivationConfig(mining_shards=0, mining_block_batches=0)
    assert "mining_shards: must be > 0" in str(info.value) and "mining_block_batches" in str(info.value)
    with pytest.raises(ValueError, match="mining_shards: must be <= 4096"):
        ActivationConfig(mining_shards=5000)
    with pytest.raises(ValueError,
                       match=r"mining_batch_windows \* \(window_tokens \+ 1\) must be <= batch_token_budget"):
        ActivationConfig(mining_batch_windows=128, window_tokens=64, batch_token_budget=4096)
    assert ActivationConfig(mining_batch_windows=63, window_tokens=64, batch_token_budget=4096).mining_shards == 8


def test_token_limits_beyond_the_models_positions_fail_at_start() -> None:
    from sagex.activation.engine import ActivationEngine

    with pytest.raises(ValueError, match="positions; lower them"):
        ActivationEngine(ActivationConfig(max_tokens_per_text=100_000, batch_token_budget=100_000))


def test_saes_add_to_the_embedded_one_unless_told_otherwise(tmp_path: Path) -> None:
    from sagex.activation.__main__ import build_parser, overrides
    from sagex.activation.assets.paths import EMBEDDED_SAE_ID
    from sagex.activation.config import ActivationConfig
    from sagex.activation.formats import SaeSource
    from sagex.server.cli import build_config

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "model").mkdir()

    def served(*argv: str) -> dict[str, SaeSource]:
        args = build_parser().parse_args(list(argv))
        return build_config("activation", ActivationConfig, args, overrides(args)).served_saes()

    assert set(served("--sae", f"a={tmp_path / 'a'}")) == {EMBEDDED_SAE_ID, "a"}
    assert set(served("--sae", f"a={tmp_path / 'a'}", "--no-embedded-sae")) == {"a"}
    # the embedded SAE only fits the embedded model
    assert set(served("--model", str(tmp_path / "model"), "--sae", f"a={tmp_path / 'a'}")) == {"a"}
    hooked = served("--sae", f"a={tmp_path / 'a'}@blocks.2.hook_mlp_out")["a"]
    assert hooked == SaeSource(str(tmp_path / "a"), "blocks.2.hook_mlp_out")
    release = served("--sae", "jb=gpt2-small-res-jb/blocks.8.hook_resid_pre")["jb"]
    assert release.source == "gpt2-small-res-jb/blocks.8.hook_resid_pre" and release.hook is None
    # --sae adds to the TOML's SAEs too
    toml = tmp_path / "sage.toml"
    toml.write_text('[activation]\n[activation.saes]\nb = "b"\n')
    assert set(served("--config", str(toml), "--sae", f"a={tmp_path / 'a'}")) == {EMBEDDED_SAE_ID, "a", "b"}


def test_toml_sae_entries_take_a_hook_and_release_ids(tmp_path: Path) -> None:
    from sagex.activation.formats import SaeSource

    (tmp_path / "npz").mkdir()
    toml = tmp_path / "sage.toml"
    toml.write_text(
        '[activation]\nembedded_sae = false\n[activation.saes]\n'
        'raw = { source = "npz", hook = "model.layers.4" }\n'
        'jb = "gpt2-small-res-jb/blocks.8.hook_resid_pre"\n'
    )
    config = ActivationConfig.from_toml(toml)
    assert config.served_saes() == {
        "raw": SaeSource(str(tmp_path / "npz"), "model.layers.4"),
        "jb": SaeSource("gpt2-small-res-jb/blocks.8.hook_resid_pre"),
    }
    bad = tmp_path / "bad.toml"
    bad.write_text('[activation]\n[activation.saes]\nx = { path = "npz" }\n')
    with pytest.raises(ValueError, match=r"saes.x: expected \{ source"):
        ActivationConfig.from_toml(bad)
    with pytest.raises(ValueError, match="configure at least one SAE"):
        ActivationConfig(embedded_sae=False)
