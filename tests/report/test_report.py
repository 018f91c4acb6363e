"""`sage report` on real services: the agent explains features over the session's
activation server, the scoring service scores them (embedding, no LLM) and
compares SAGE with the single-pass baseline (whose one LLM call goes to a fake
OpenAI server on a socket); the page is checked as HTML and in Debian's chromium."""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from sagex.agent.config import AgentConfig
from sagex.agent.server import running_agent_server
from sagex.llm import LLMConfig
from sagex.report import Report, collect, render, write
from sagex.report.heatmap import shade
from sagex.scoring.config import ScoringConfig
from sagex.scoring.server import running_scoring_server
from sagex.sdk import Sage
from sagex.server.lifecycle import ServerOptions
from tests.agent.conftest import SAE
from tests.fakes.openai_server import FakeOpenAI, Reply

pytestmark = pytest.mark.asyncio(loop_scope="session")
CHROMIUM = shutil.which("chromium")


@dataclass
class Stack:
    activation: str
    agent: str
    scoring: str
    report: Report
    html: Path


def baseline_llm(words: dict[int, str]) -> Any:
    """The single-pass baseline's one call: name the word the prompt's exemplars peak on."""

    def handler(body: dict[str, Any]) -> Reply:
        prompt = body["messages"][-1]["content"]
        word = next((w for w in words.values() if f"<<{w}>>" in prompt or w in prompt), "text")
        return Reply(content=f"Explanation: the word {word!r}")

    return handler


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(server: Any, token_features: dict[int, str], tmp_path_factory: pytest.TempPathFactory
                ) -> AsyncIterator[Stack]:
    tmp = tmp_path_factory.mktemp("report")
    activation = f"127.0.0.1:{server.port}"
    quick = ServerOptions(port=0, drain_seconds=0.0, grace_seconds=1.0)
    features = list(token_features)[:3]
    with FakeOpenAI(baseline_llm(token_features)) as fake:
        async with running_agent_server(AgentConfig(activation=(activation,), database=tmp / "agent.sqlite3",
                                                    server=quick)) as (agent, _):
            scoring_config = ScoringConfig(activation=(activation,), agent=f"127.0.0.1:{agent.port}",
                                           llm=LLMConfig(base_url=fake.base_url, model="fake", max_retries=0),
                                           database=tmp / "scoring.sqlite3", server=quick)
            async with running_scoring_server(scoring_config) as (scoring, _):
                addresses = (activation, f"127.0.0.1:{agent.port}", f"127.0.0.1:{scoring.port}")

                def build() -> Report:
                    with Sage(*addresses) as sage:
                        # skip_triage: the full loop, so the page has hypotheses, rounds and verdicts.
                        from sagex.sdk import Options

                        explanations = sage.agent.explain_many(SAE, features, Options(skip_triage=True, max_rounds=2),
                                                               concurrency=3).result()
                        comparison = sage.scoring.compare(SAE, features, ["sage", "single_pass"], ["embedding"])
                        return collect(sage, explanations, scorers=["embedding"], comparison=comparison,
                                       title="report test", notes=["embedding only"])

                report = await asyncio.to_thread(build)
                yield Stack(*addresses, report, write(report, tmp / "report.html"))


class Spans(HTMLParser):
    """data-act values of the token spans, grouped by the probe row or exemplar that holds them."""

    def __init__(self) -> None:
        super().__init__()
        self.groups: dict[str, list[float]] = {}
        self._current: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section" and a.get("data-feature"):
            self._feature = a["data-feature"]
        if tag == "tr" and a.get("data-probe"):
            self._current = [f"probe:{self._feature}:{a['data-probe']}"]
        if tag == "div" and a.get("data-window"):
            self._current = [f"window:{self._feature}:{a['data-window']}"]
        if tag == "span" and "tok" in (a.get("class") or "").split():
            self.groups.setdefault(self._current[0], []).append(float(a["data-act"]))  # type: ignore[arg-type]


def expected_groups(report: Report) -> dict[str, np.ndarray]:
    out = {}
    for fr in report.features:
        for p in fr.explanation.probes:
            out[f"probe:{fr.feature_id}:{p.id}"] = p.values
        for e in fr.exemplars.top if fr.exemplars else ():
            out[f"window:{fr.feature_id}:{e.window_id}"] = e.values
    return out


async def test_the_report_carries_every_measured_value(stack: Stack) -> None:
    report = stack.report
    assert [fr.feature_id for fr in report.features] == [fr.explanation.feature_id for fr in report.features]
    for fr in report.features:
        ex = fr.explanation
        assert not ex.failed and ex.hypotheses and ex.probes and any(h.updates for h in ex.hypotheses)
        assert fr.exemplars is not None and fr.exemplars.top
        [embedding] = fr.scores
        assert embedding.scorer == "embedding" and embedding.metrics[0].name == "auroc"
    parser = Spans()
    parser.feed(stack.html.read_text())
    expected = expected_groups(report)
    assert set(parser.groups) == set(expected)
    for key, values in expected.items():
        # float32 -> shortest repr -> float32 is exact.
        assert np.array_equal(np.float32(parser.groups[key]), values), key
    assert any(v > 0 for vs in parser.groups.values() for v in vs)
    page = stack.html.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page) and "<link" not in page  # opens offline
    for fr in report.features:
        for h in fr.explanation.hypotheses:
            for u in h.updates:
                assert f'data-round="{u.round}"' in page and u.status in page


async def test_comparison_section_plots_each_paired_difference(stack: Stack) -> None:
    comparison = stack.report.comparison
    assert comparison is not None and set(comparison.summaries) == {"sage", "single_pass"}
    page = stack.html.read_text()
    finite = [d for d in comparison.differences if math.isfinite(d.difference.value)]
    assert finite, comparison
    for d in finite:
        assert f'data-metric="{d.metric}" data-mean="{d.difference.value!r}"' in page


async def test_rendering_escapes_untrusted_text(stack: Stack) -> None:
    from dataclasses import replace

    fr = stack.report.features[0]
    evil = replace(fr.explanation, description='<script>alert("x")</script> & "quotes"')
    page = render(replace(stack.report, features=(replace(fr, explanation=evil),)))
    assert '<script>alert("x")</script>' not in page and "&lt;script&gt;alert(" in page


class LabelItems(HTMLParser):
    """(feature, data-confidence, text) of every label item of the feature sections."""

    def __init__(self) -> None:
        super().__init__()
        self.items: list[list[str]] = []
        self._feature = ""
        self._in = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section" and a.get("data-feature"):
            self._feature = a["data-feature"] or ""
        if tag == "li" and "data-confidence" in a:
            self.items.append([self._feature, a["data-confidence"] or "", ""])
            self._in = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "li":
            self._in = False

    def handle_data(self, data: str) -> None:
        if self._in:
            self.items[-1][2] += data


async def test_each_label_shows_its_confidence(stack: Stack) -> None:
    from dataclasses import replace

    from sagex.sdk.types import Label

    parser = LabelItems()
    parser.feed(stack.html.read_text())
    expected = [(str(fr.feature_id), lb) for fr in stack.report.features for lb in fr.explanation.labels]
    assert expected and len(parser.items) == len(expected)
    for (feature, label), (seen_feature, value, text) in zip(expected, parser.items, strict=True):
        assert seen_feature == feature and float(value) == label.confidence
        assert label.name in text
        assert (f"confidence {label.confidence:.2f}" if label.confidence > 0 else "no confidence given") in text
    assert any(lb.confidence > 0 for _, lb in expected)  # the symbolic policy gives one from its probes
    # A policy that gives no confidence is said so, not shown as zero confidence.
    fr = stack.report.features[0]
    bare = replace(fr.explanation, labels=(Label("plural nouns", "Fires on plural nouns."),))
    page = render(replace(stack.report, features=(replace(fr, explanation=bare),)))
    assert 'data-confidence="0.0"' in page and "no confidence given" in page and "confidence 0.00" not in page


BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"]


def _in_browser(stack: Stack, shot: Path) -> dict[str, Any]:
    """Everything playwright does, on one thread: its sync API refuses a thread with a running event loop."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            return _look(browser.new_page(viewport={"width": 1280, "height": 900}), stack, shot)
        finally:
            browser.close()


def _look(page: Any, stack: Stack, shot: Path) -> dict[str, Any]:
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.on("request", lambda r: problems.append(f"fetch: {r.url}") if not r.url.startswith(("file:", "data:"))
            else None)
    page.goto(stack.html.as_uri())
    page.screenshot(path=str(shot), full_page=True)
    fr = stack.report.features[0]
    probe = max(fr.explanation.probes, key=lambda p: p.max_activation)
    row = page.locator(f'section[data-feature="{fr.feature_id}"] tr[data-probe="{probe.id}"] span.tok')
    acts = row.evaluate_all("spans => spans.map(s => parseFloat(s.dataset.act))")
    colours = row.evaluate_all("spans => spans.map(s => getComputedStyle(s).backgroundColor)")
    # The index links to the feature and sorts by a score column.
    page.click(f'table.index a[href="#f-{fr.feature_id}"]')
    hash_after_click = page.evaluate("location.hash")
    page.click("table.index th:nth-child(6)")  # feature, label, outcome, confidence, probes, then the scores
    page.click("table.index th:nth-child(6)")
    sorted_scores = page.locator("table.index tbody tr td:nth-child(6)").evaluate_all(
        "cells => cells.map(c => parseFloat(c.dataset.v))")
    page.fill("#filter", "no such label anywhere")
    visible_rows = page.locator("table.index tbody tr:visible").count()
    forest_rows = page.locator("svg.forest g.row").count()
    return {"problems": problems, "acts": acts, "values": probe.values, "colours": colours,
            "hash": hash_after_click, "sorted": sorted_scores, "visible": visible_rows, "forest": forest_rows}


async def test_the_page_renders_in_chromium(stack: Stack, tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (`make test` installs it with apt-get)")
    shot = tmp_path / "report.png"
    seen = await asyncio.to_thread(_in_browser, stack, shot)
    assert seen["problems"] == []
    assert np.array_equal(np.float32(seen["acts"]), seen["values"])
    fr = stack.report.features[0]
    for colour, value in zip(seen["colours"], seen["values"], strict=True):
        # Each token is shaded by its share of the feature's scale, as the page says.
        assert alpha(colour) == pytest.approx(shade(float(value), fr.scale()), abs=0.006), (colour, value)
    assert any(v > 0 for v in seen["values"])
    assert seen["hash"] == f"#f-{stack.report.features[0].feature_id}"
    assert seen["sorted"] == sorted(seen["sorted"], reverse=True) or seen["sorted"] == sorted(seen["sorted"])
    assert seen["visible"] == 0
    assert seen["forest"] == sum(math.isfinite(d.difference.value) for d in stack.report.comparison.differences)
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width == 1280 and height > 2000  # the whole page: index, comparison, three features


def alpha(colour: str) -> float:
    """The alpha of a computed background colour: rgb(255, 110, 0) is opaque, transparent is 0."""
    m = re.fullmatch(r"rgba?\((\d+), (\d+), (\d+)(?:, ([\d.]+))?\)", colour)
    assert m, colour
    if m.group(4) is None:
        return 1.0
    a = float(m.group(4))
    assert a == 0 or m.groups()[:3] == ("255", "110", "0"), colour
    return a


def _sage(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sagex.cli.main", *args], capture_output=True, text=True,
                          timeout=600)


async def test_sage_report_cli(stack: Stack, tmp_path: Path) -> None:
    features = ",".join(str(fr.feature_id) for fr in stack.report.features)
    eval_json = tmp_path / "eval.json"
    from google.protobuf import json_format

    from sagex.api.scoring.v1 import scoring_service_pb2 as spb

    eval_json.write_text(json.dumps(json_format.MessageToDict(spb.CompareExplainersResponse())))
    out = tmp_path / "cli.html"
    done = await asyncio.to_thread(_sage, "report", SAE, features, "--agent", stack.agent, "--activation",
                                   stack.activation, "--scoring", stack.scoring, "--scorers", "", "--eval",
                                   str(eval_json), "--out", str(out))
    assert done.returncode == 0, done.stderr
    page = out.read_text()
    for fr in stack.report.features:
        # The newest explanation of each feature: the comparison's own SAGE run, made after the fixture's.
        assert f'id="f-{fr.feature_id}"' in page
    assert "not scored" in page and 'id="eval"' in page


async def test_sage_report_says_what_to_fix(stack: Stack, tmp_path: Path) -> None:
    nothing = await asyncio.to_thread(_sage, "report", SAE)
    assert nothing.returncode != 0 and "give feature ids" in nothing.stderr
    unknown = await asyncio.to_thread(_sage, "report", SAE, "4000", "--agent", stack.agent, "--scorers", "")
    assert unknown.returncode != 0 and "sage explain" in unknown.stderr
    down = await asyncio.to_thread(_sage, "report", SAE, "1", "--agent", "127.0.0.1:9", "--scorers", "")
    assert down.returncode != 0 and "cannot reach the agent service" in down.stderr
    bad_eval = tmp_path / "eval.json"
    bad_eval.write_text("{not json")
    broken = await asyncio.to_thread(_sage, "report", SAE, "1", "--eval", str(bad_eval))
    assert broken.returncode != 0 and "not a comparison written by `sage eval`" in broken.stderr
