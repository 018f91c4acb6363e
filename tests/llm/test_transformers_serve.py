"""The backend against a real OpenAI-compatible server: transformers serve + SmolLM2-135M on CPU.

The model is far too small to be relied on for valid JSON, so ask_json may end
in either a parsed answer or MalformedAnswer; what must never happen is a
crash, a hang or a made-up answer.
"""

from __future__ import annotations

from typing import Any

from sagex.llm import LLMBackend, LLMConfig, MalformedAnswer
from tests.fakes.transformers_server import TransformersServe


def _config(server: TransformersServe) -> LLMConfig:
    return LLMConfig(base_url=server.base_url, model=server.model, timeout_s=60.0, max_retries=0)


async def test_complete(transformers_serve: TransformersServe) -> None:
    async with LLMBackend(_config(transformers_serve)) as backend:
        completion = await backend.complete(
            [{"role": "user", "content": "What is the capital of France? Answer in one word."}], max_tokens=8
        )
    assert completion.usage.prompt_tokens > 0 and 0 < completion.usage.completion_tokens <= 8
    assert completion.text.strip()
    assert completion.finish_reason in ("stop", "length")
    assert completion.logprobs is None  # transformers serve ignores logprobs


async def test_ask_json(transformers_serve: TransformersServe) -> None:
    def parse(obj: Any) -> str:
        if not isinstance(obj, dict) or not isinstance(obj.get("city"), str) or not obj["city"].strip():
            raise ValueError('expected {"city": "<name>"}')
        return obj["city"]

    messages = [
        {"role": "system", "content": 'Answer with JSON only, exactly like {"city": "Rome"}.'},
        {"role": "user", "content": "Which city is the capital of France?"},
    ]
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    async with LLMBackend(_config(transformers_serve)) as backend:
        try:
            city, usage = await backend.ask_json(messages, parse, schema=schema, attempts=2, max_tokens=16)
        except MalformedAnswer as e:
            assert e.attempts == 2 and e.usage.calls == 2 and e.usage.total_tokens > 0
        else:
            assert city.strip() and 1 <= usage.calls <= 2 and usage.completion_tokens > 0
