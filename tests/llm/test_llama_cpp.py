"""The backend against llama.cpp's real server (llama-cpp-python, make llm-setup) with
the packaged SmolLM2-135M-Instruct GGUF: the json_schema request it answers with HTTP
500 is stepped down from once, the schema is enforced by its grammar, and logprobs
come back for the predictive scorer."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from sagex.llm import LLMBackend, LLMConfig, LLMMisconfigured
from sagex.llm.local import LlamaServer

pytestmark = pytest.mark.slow

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
          "required": ["city", "population"]}
ASK = [{"role": "system", "content": "Answer in JSON."},
       {"role": "user", "content": "Which city is the capital of France, and how many people live there?"}]


def config(server: LlamaServer, **kwargs: Any) -> LLMConfig:
    return LLMConfig(**{"base_url": server.base_url, "model": server.model, "timeout_s": 120.0, "max_retries": 1,
                        "max_in_flight": 1, **kwargs})


async def test_json_schema_steps_down_to_a_grammar_once(llama_server: LlamaServer) -> None:
    async with LLMBackend(config(llama_server)) as llm:
        answers = await asyncio.gather(*(llm.complete(ASK, schema=SCHEMA, max_tokens=48) for _ in range(3)))
        state = llm.endpoint()
    assert state.structured_known and state.structured_floor == 1  # json_object, with the schema
    for answer in answers:
        if answer.finish_reason == "stop":  # the grammar makes whatever the model writes fit the schema
            obj = json.loads(answer.text)
            assert isinstance(obj["city"], str) and isinstance(obj["population"], int)
        assert answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0


async def test_an_explicit_json_schema_fails_fast_with_the_servers_reason(llama_server: LlamaServer) -> None:
    async with LLMBackend(config(llama_server, structured_output="json_schema")) as llm:
        with pytest.raises(LLMMisconfigured, match=r"refuses response_format 'json_schema' \(HTTP 500.*"
                                                   r"'text' or 'json_object'.*structured_output = \"auto\""):
            await llm.complete(ASK, schema=SCHEMA, max_tokens=8)


async def test_logprobs_come_back(llama_server: LlamaServer) -> None:
    async with LLMBackend(config(llama_server)) as llm:
        answer = await llm.complete([{"role": "user", "content": "Count: 1, 2, 3,"}], max_tokens=4, top_logprobs=5)
    assert answer.logprobs is not None and len(answer.logprobs) == answer.usage.completion_tokens
    for position in answer.logprobs:
        assert position.logprob <= 0.0 and 1 <= len(position.top) <= 5
