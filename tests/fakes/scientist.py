"""A scripted LLM for the agent's steps: valid JSON for every SAGE step, derived
from the prompt as a model would, for tests and benchmarks that need the LLM
path to run end to end without a capable model. Served by FakeOpenAI."""

from __future__ import annotations

import json
import re
from typing import Any

# A field only one step's schema has, for requests that carry the schema without its
# name (json_object with "schema", as sent to llama.cpp's server).
_STEP_BY_FIELD = {"hypotheses": "hypotheses", "status": "verdict", "assessment": "review",
                  "description": "conclusion", "probes": "probes"}


def step(body: dict[str, Any]) -> str:
    """The step a request is for: the structured-output schema name the policy sent, or
    the step whose schema it sent without a name."""
    fmt = body.get("response_format", {})
    name = fmt.get("json_schema", {}).get("name", "")
    if name:
        return name
    fields = fmt.get("schema", {}).get("properties", {})
    return next((kind for field, kind in _STEP_BY_FIELD.items() if field in fields), "")


def scientist(body: dict[str, Any], settle_after: int = 1) -> str:
    """Valid answers; verdicts stay PENDING until a hypothesis has ``settle_after`` probes."""
    prompt = body["messages"][-1]["content"]
    name = step(body)
    if name == "hypotheses":
        return json.dumps({"observations": "peaks on one word", "hypotheses": [
            {"text": "Fires on the word 'the'.", "is_control": False},
            {"text": "Fires after punctuation.", "is_control": False},
            {"text": "Fires on capitalised words.", "is_control": False},
            {"text": "Silent on plain numbers.", "is_control": True}]})
    if name == "probes":
        hid = re.search(r"test H(\d+)", prompt).group(1)  # type: ignore[union-attr]
        n = prompt.count("- probe ")
        return json.dumps({"probes": [{"text": f"Probe {hid}.{n}: the cat sat on the mat.", "expected": "fires",
                                       "rationale": "contains the word"}]})
    if name == "verdict":
        probes = prompt.count("- probe ")
        status = "CONFIRMED" if probes >= settle_after else "PENDING"
        return json.dumps({"status": status, "reason": f"{probes} probes behaved as predicted", "refined_text": ""})
    if name == "review":
        return json.dumps({"assessment": "adequate", "probes": []})
    if name == "conclusion":
        return json.dumps({"description": "Fires on 'the'.", "labels": [{"name": "the", "description": "the word"}],
                           "evidence": [{"probe_id": 1, "hypothesis_id": 1, "supports": True}]})
    raise AssertionError(f"unexpected step {name!r}")
