"""The SDK and `sage steer` reach GetFeatureEffects and SteerGenerate on real servers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sagex.activation.assets.paths import EMBEDDED_SAE_ID
from sagex.cli.main import main
from sagex.sdk import AsyncSage, FailedPreconditionError, InvalidArgumentError, Sage

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_sdk_effects_and_steer(steer_server: Any) -> None:
    _, _, port = steer_server
    async with AsyncSage(activation=f"127.0.0.1:{port}", agent=None, scoring=None) as sage:
        (lens,) = await sage.activation.effects(EMBEDDED_SAE_ID, [100], top_k=5)
        assert lens.feature_id == 100 and len(lens.promoted) == len(lens.suppressed) == 5
        assert lens.promoted[0].value > lens.suppressed[0].value
        result = await sage.activation.steer(EMBEDDED_SAE_ID, 100, ["I think"], strength=0.0, max_new_tokens=4)
        assert result.completions[0].steered == result.completions[0].unsteered and result.mean_kl == 0.0
        tuned = await sage.activation.steer(EMBEDDED_SAE_ID, 100, ["I think", "We"], target_kl=1.0, max_new_tokens=2)
        assert tuned.target_reached and abs(tuned.mean_kl - 1.0) <= 0.1
        with pytest.raises(InvalidArgumentError) as err:
            await sage.activation.steer(EMBEDDED_SAE_ID, 100, ["I think"], strength=1e6)
        assert any(field == "strength" for field, _ in err.value.field_violations)


async def test_sync_sdk_without_steering_is_failed_precondition(server: Any) -> None:
    def work() -> str:
        with Sage(activation=f"127.0.0.1:{server.port}", agent=None, scoring=None) as sage:
            assert sage.activation.effects(EMBEDDED_SAE_ID, [7])[0].promoted
            with pytest.raises(FailedPreconditionError) as err:
                sage.activation.steer(EMBEDDED_SAE_ID, 7, ["I think"], strength=3.0)
            return err.value.message

    assert "steering = true" in await asyncio.to_thread(work)


async def test_cli_steer_prints_lens_and_both_texts(steer_server: Any, capsys: pytest.CaptureFixture[str]) -> None:
    _, _, port = steer_server
    args = ["steer", EMBEDDED_SAE_ID, "100", "I think", "--strength", "64", "--max-new-tokens", "6",
            "--activation", f"127.0.0.1:{port}"]
    assert await asyncio.to_thread(main, args) == 0
    out = capsys.readouterr().out
    assert "promotes:" in out and "suppresses:" in out
    assert "unsteered: " in out and "steered:   " in out and "strength 64" in out


async def test_cli_steer_without_steering_says_how_to_enable(server: Any) -> None:
    args = ["steer", EMBEDDED_SAE_ID, "100", "I think", "--activation", f"127.0.0.1:{server.port}"]
    with pytest.raises(SystemExit) as exc:
        await asyncio.to_thread(main, args)
    assert "--steering" in str(exc.value)
