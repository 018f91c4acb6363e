"""The report's output side: logit-lens tokens and steered beside unsteered text,
gathered through the SDK from a real activation server with steering on."""

from __future__ import annotations

import asyncio
from html.parser import HTMLParser
from typing import Any

import pytest

from sagex.activation.assets.paths import EMBEDDED_SAE_ID
from sagex.api.agent.v1 import agent_service_pb2 as pb
from sagex.report import collect, render
from sagex.report.collect import NEUTRAL_PROMPTS
from sagex.sdk import Sage
from sagex.sdk._convert import explanation

pytestmark = pytest.mark.asyncio(loop_scope="session")


class _Cells(HTMLParser):
    """Text of every <td> in rows of class steer-row, and of every logit-lens chip."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.chips: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        cls = dict(attrs).get("class") or ""
        if tag == "tr" and "steer-row" in cls:
            self.rows.append([])
        elif tag == "td" and self.rows and self._in is None:
            self.rows[-1].append("")
            self._in = "td"
        elif tag == "span" and cls.startswith("lt "):
            self.chips.append("")
            self._in = "chip"

    def handle_endtag(self, tag: str) -> None:
        if (tag == "td" and self._in == "td") or (tag == "span" and self._in == "chip"):
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "td":
            self.rows[-1][-1] += data
        elif self._in == "chip":
            self.chips[-1] += data


async def test_report_shows_lens_and_steered_text(steer_server: Any) -> None:
    _, _, port = steer_server
    ex = explanation(pb.Explanation(name="explanations/x", sae_id=EMBEDDED_SAE_ID, feature_id=100,
                                    description="test feature"))

    def work() -> Any:
        with Sage(activation=f"127.0.0.1:{port}", agent=None, scoring=None) as sage:
            report = collect(sage, [ex], scorers=(), top_k=2, steer_target_kl=1.0)
            return report, sage.activation.effects(EMBEDDED_SAE_ID, [100], top_k=10)[0]

    report, lens = await asyncio.to_thread(work)
    fr = report.features[0]
    assert fr.steering is not None and fr.steering.target_reached
    cells = _Cells()
    cells.feed(render(report))
    assert [c[0] for c in cells.rows] == list(NEUTRAL_PROMPTS)
    for row, c in zip(cells.rows, fr.steering.completions, strict=True):
        assert row[1:3] == [c.unsteered, c.steered]
    assert any(row[1] != row[2] for row in cells.rows), "at KL 1 some continuation must change"
    shown = [chip.rsplit(" ", 1)[0] for chip in cells.chips]
    assert shown == [e.text for e in lens.promoted] + [e.text for e in lens.suppressed]
