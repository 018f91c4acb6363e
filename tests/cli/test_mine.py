"""`sage mine` and the scan progress `sage score` and `sage explain --watch` show, as a
user runs them (subprocesses), against a real activation server with an empty
mining cache (the conftest's slow_mining, so every scan lasts a few seconds)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from sagex.activation.assets.paths import EMBEDDED_SAE_ID
from sagex.scoring.config import ScoringConfig
from sagex.scoring.server import running_scoring_server
from sagex.server.lifecycle import ServerOptions
from tests.cli.test_explain_and_score import sage_cli

pytestmark = pytest.mark.asyncio(loop_scope="session")

BAR = re.compile(r"\[[#.]{30}\] +\d+% [\d,]+/[\d,]+ tokens(, \d+/\d+ shards done)?, [\d,]+ tok/s, ETA \d+:\d\d")


async def test_mine_shows_a_bar_with_rate_and_eta_then_reads_the_cache(slow_mining: Any) -> None:
    async with slow_mining(0.2) as server:
        code, out, err = await sage_cli("mine", EMBEDDED_SAE_ID, "--split", "exemplar", "--activation", server.address)
        assert code == 0, err
        lines = out.splitlines()
        assert any(BAR.search(x) for x in lines), out
        # This split is cut into several hash shards; the bar says how many are done.
        assert any(re.search(r", \d+/\d+ shards done", x) for x in lines), out
        assert lines[-1].startswith(f"mining {EMBEDDED_SAE_ID} / exemplar split: ready (") and "built)" in lines[-1]
        code, out, err = await sage_cli("mine", EMBEDDED_SAE_ID, "--split", "exemplar", "--activation", server.address)
        assert code == 0, err
        assert out.splitlines() == [lines[-1].replace("built)", "read from the cache)")]
        code, _, err = await sage_cli("mine", "no-such-sae", "--activation", server.address)
        assert code != 0 and "no-such-sae" in err
        code, _, err = await sage_cli("mine", EMBEDDED_SAE_ID, "--split", "nope", "--activation", server.address)
        assert code != 0 and "--split" in err


async def test_score_shows_the_heldout_scan_it_waits_for(slow_mining: Any, token_features: dict[int, str],
                                                         tmp_path: Any) -> None:
    feature, word = next((f, w) for f, w in token_features.items() if len(w) >= 5)
    async with slow_mining(0.2) as server:
        config = ScoringConfig(activation=(server.address,), default_scorers=("embedding",),
                               database=tmp_path / "scoring.sqlite3",
                               server=ServerOptions(port=0, drain_seconds=0.0, grace_seconds=1.0))
        async with running_scoring_server(config) as (scoring, _):
            code, out, err = await sage_cli("score", EMBEDDED_SAE_ID, str(feature), f'the word "{word}"',
                                            "--scoring", f"127.0.0.1:{scoring.port}", "--activation", server.address)
    assert code == 0, err
    assert out.startswith("embedding   auroc: ")  # the result alone on stdout
    assert any(BAR.search(x) and "/ heldout split" in x for x in err.splitlines()), err
    assert f"mining {EMBEDDED_SAE_ID} / heldout split: ready (" in err
