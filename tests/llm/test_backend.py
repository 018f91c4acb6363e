"""The LLM backend over real sockets against the fake OpenAI server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import openai
import pytest

from sagex.llm import Completion, LLMBackend, LLMConfig, LLMUnavailable, MalformedAnswer, TokenLogprob, Usage
from tests.fakes.openai_server import FakeOpenAI, Reply, scripted

USER = [{"role": "user", "content": "Label this feature. Reply in JSON."}]
SCHEMA = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}


def parse_label(obj: Any) -> str:
    if not isinstance(obj, dict) or not isinstance(obj.get("label"), str):
        raise ValueError('expected an object with a string "label"')
    if not obj["label"].strip():
        raise ValueError('"label" must not be empty')
    return obj["label"]


@pytest.fixture
def fake_factory() -> Iterator[Callable[..., FakeOpenAI]]:
    started: list[FakeOpenAI] = []

    def start(*args: Any, **kwargs: Any) -> FakeOpenAI:
        fake = FakeOpenAI(*args, **kwargs).__enter__()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.__exit__(None, None, None)


@asynccontextmanager
async def backend_for(url: str, **config: Any) -> AsyncIterator[LLMBackend]:
    config = {"model": "test-model", "max_retries": 0, "timeout_s": 10.0, **config}
    async with LLMBackend(LLMConfig(base_url=url, **config)) as backend:
        yield backend


# -- config and value types ----------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": 2.5}, "temperature"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"max_retries": -1}, "max_retries"),
        ({"structured_output": "xml"}, "structured_output"),
        ({"base_url": "127.0.0.1:8000/v1"}, "base_url"),
        ({"prompt_usd_per_mtok": -1.0}, "prompt_usd_per_mtok"),
        ({"api_key_env": ""}, "api_key_env"),
        ({"reasoning_effort": " "}, "reasoning_effort"),
    ],
)
def test_config_rejects(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        LLMConfig(**kwargs)


def test_config_lists_every_problem_and_takes_a_str_cache_dir(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="temperature.*max_retries"):
        LLMConfig(temperature=3.0, max_retries=-1)
    assert LLMConfig(cache_dir=str(tmp_path)).cache_dir == tmp_path  # type: ignore[arg-type]


def test_usage_adds_up() -> None:
    total = Usage(10, 5, 0.5, 1, 0) + Usage(1, 2, 0.25, 1, 1)
    assert total == Usage(11, 7, 0.75, 2, 1)
    assert total.total_tokens == 18


async def test_needs_a_model(fake_factory: Callable[..., FakeOpenAI]) -> None:
    fake = fake_factory()
    async with backend_for(fake.base_url, model="") as backend:
        with pytest.raises(LLMUnavailable, match=r"no model configured: set model in \[agent.llm\]"):
            await backend.complete(USER)
    assert fake.requests == []


# -- requests and structured output --------------------------------------------


async def test_plain_request_carries_the_settings(fake_factory: Callable[..., FakeOpenAI]) -> None:
    fake = fake_factory(scripted("hello"))
    async with backend_for(
        fake.base_url, model="org/Model-1.5B", temperature=0.7, seed=42, max_output_tokens=77, reasoning_effort="low"
    ) as backend:
        completion = await backend.complete(USER)
    assert completion.text == "hello" and completion.finish_reason == "stop" and not completion.cached
    (body,) = fake.requests
    assert body["model"] == "org/Model-1.5B"  # exactly as given
    assert body["messages"] == USER
    assert (body["temperature"], body["seed"], body["max_tokens"], body["reasoning_effort"]) == (0.7, 42, 77, "low")
    assert "response_format" not in body and "logprobs" not in body


async def test_schema_is_sent_as_json_schema(fake_factory: Callable[..., FakeOpenAI]) -> None:
    fake = fake_factory(scripted('{"label": "x"}'))
    async with backend_for(fake.base_url) as backend:
        await backend.complete(USER, schema=SCHEMA, schema_name="label", max_tokens=12)
    (body,) = fake.requests
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "label", "schema": SCHEMA, "strict": False},
    }
    assert body["max_tokens"] == 12


async def test_rejected_response_format_steps_down_and_is_remembered(fake_factory: Callable[..., FakeOpenAI]) -> None:
    fake = fake_factory(lambda body: '{"label": "x"}', reject_response_format={"json_schema"})
    async with backend_for(fake.base_url) as backend:
        first = await backend.complete(USER, schema=SCHEMA)
        await backend.complete(USER, schema=SCHEMA)
    assert first.text == '{"label": "x"}'
    formats = [body["response_format"]["type"] for body in fake.requests]
    assert formats == ["json_schema", "json_object", "json_object"]  # the second call skips the rejected mode


async def test_steps_down_to_no_response_format_for_every_backend_of_the_process(
    fake_factory: Callable[..., FakeOpenAI],
) -> None:
    fake = fake_factory(lambda body: '{"label": "x"}', reject_response_format=True)
    async with backend_for(fake.base_url) as backend:
        await backend.complete(USER, schema=SCHEMA)
    async with backend_for(fake.base_url) as another:
        await another.complete(USER, schema=SCHEMA)
    formats = [body.get("response_format", {}).get("type") for body in fake.requests]
    assert formats == ["json_schema", "json_object", None, None]


async def test_an_explicit_mode_does_not_step_down(fake_factory: Callable[..., FakeOpenAI]) -> None:
    fake = fake_factory(lambda body: "{}", reject_response_format=True)
    async with backend_for(fake.base_url, structured_output="json_object") as backend:
        with pytest.raises(LLMUnavailable, match="HTTP 400.*response_format") as err:
            await backend.complete(USER, schema=SCHEMA)
    assert err.value.status == 400
    assert len(fake.requests) == 1


async def test_a_400_about_something_else_is_an_error_not_a_downgrade(fake_factory: Callable[..., FakeOpenAI]) -> None:
    fake = fake_factory(scripted(Reply(status=400, error="context length exceeded", error_param="messages")))
    async with backend_for(fake.base_url) as backend:
        with pytest.raises(LLMUnavailable, match="context length exceeded"):
            await backend.complete(USER, schema=SCHEMA)
    assert len(fake.requests) == 1


async def test_moves_the_token_limit_to_max_completion_tokens_when_told(
    fake_factory: Callable[..., FakeOpenAI],
) -> None:
    def newer_openai_model(body: dict[str, Any]) -> str | Reply:
        if "max_tokens" in body:
            return Reply(status=400, error="Unsupported parameter: 'max_tokens'", error_param="max_tokens")
        return "ok"

    fake = fake_factory(newer_openai_model)
    async with backend_for(fake.base_url) as backend:
        assert (await backend.complete(USER, max_tokens=9)).text == "ok"
        await backend.complete(USER, max_tokens=9)
    assert [("max_tokens" in b, b.get("max_completion_tokens")) for b in fake.requests] == [
        (True, None),
        (False, 9),
        (False, 9),
    ]


# -- ask_json --------------------------------------------------------------------


async def test_ask_json_reasks_with_the_validators_message(fake_factory: Callable[..., FakeOpenAI]) -> None:
    fake = fake_factory(
        scripted(
            Reply('{"label": ""}', prompt_tokens=100, completion_tokens=5),
            Reply('```json\n{"label": "negation prefixes"}\n```', prompt_tokens=130, completion_tokens=9),
        )
    )
    async with backend_for(fake.base_url) as backend:
        label, usage = await backend.ask_json(USER, parse_label, schema=SCHEMA)
    assert label == "negation prefixes"
    assert usage == Usage(prompt_tokens=230, completion_tokens=14, calls=2)
    second = fake.requests[1]["messages"]
    assert second[: len(USER)] == USER
    assert second[-2] == {"role": "assistant", "content": '{"label": ""}'}
    assert second[-1]["role"] == "user"
    assert '"label" must not be empty' in second[-1]["content"]
    assert "JSON only" in second[-1]["content"]


async def test_ask_json_quotes_the_parse_error_of_unparsable_replies(fake_factory: Callable[..., FakeOpenAI]) -> None:
    fake = fake_factory(scripted("I think it is about cats.", 'Sure: {"label": "cats"} -- done'))
    async with backend_for(fake.base_url) as backend:
        label, usage = await backend.ask_json(USER, parse_label, schema=SCHEMA)
    assert (label, usage.calls) == ("cats", 2)
    assert "no JSON object or array" in fake.requests[1]["messages"][-1]["content"]


async def test_ask_json_gives_up_without_inventing_an_answer(fake_factory: Callable[..., FakeOpenAI]) -> None:
    garbage = [Reply(f"garbage {i}", prompt_tokens=10, completion_tokens=2) for i in range(4)]
    fake = fake_factory(scripted(*garbage))
    async with backend_for(fake.base_url, prompt_usd_per_mtok=1e6) as backend:
        with pytest.raises(MalformedAnswer) as err:
            await backend.ask_json(USER, parse_label, schema=SCHEMA, attempts=3)
    assert len(fake.requests) == 3
    assert err.value.attempts == 3
    assert err.value.last_text == "garbage 2"
    assert err.value.usage == Usage(prompt_tokens=30, completion_tokens=6, cost_usd=30.0, calls=3)
    assert "no JSON" in err.value.reason and "3 attempt" in str(err.value)


async def test_an_empty_reply_at_the_token_limit_says_so(fake_factory: Callable[..., FakeOpenAI]) -> None:
    fake = fake_factory(scripted(Reply(None, finish_reason="length", completion_tokens=64)))
    async with backend_for(fake.base_url) as backend:
        with pytest.raises(MalformedAnswer, match=r"output-token limit \(64 tokens\)") as err:
            await backend.ask_json(USER, parse_label, schema=SCHEMA, attempts=1, max_tokens=64)
    assert err.value.usage.completion_tokens == 64 and err.value.last_text == ""


async def test_a_cut_off_json_reply_mentions_the_limit(fake_factory: Callable[..., FakeOpenAI]) -> None:
    fake = fake_factory(scripted(Reply('{"label": "neg', finish_reason="length"), '{"label": "negation"}'))
    async with backend_for(fake.base_url) as backend:
        label, _ = await backend.ask_json(USER, parse_label, schema=SCHEMA)
    assert label == "negation"
    reask = fake.requests[1]["messages"][-1]["content"]
    assert "never closed" in reask and "output-token limit" in reask


async def test_ask_json_counts_spent_usage_into_a_later_outage(fake_factory: Callable[..., FakeOpenAI]) -> None:
    fake = fake_factory(scripted(Reply("nope", prompt_tokens=10, completion_tokens=1), Reply(status=503)))
    async with backend_for(fake.base_url) as backend:
        with pytest.raises(LLMUnavailable, match="HTTP 503") as err:
            await backend.ask_json(USER, parse_label, schema=SCHEMA)
    assert err.value.usage == Usage(prompt_tokens=10, completion_tokens=1, calls=1)


# -- transport errors -------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 429])
async def test_transient_errors_are_retried_by_the_client(fake_factory: Callable[..., FakeOpenAI], status: int) -> None:
    fake = fake_factory(scripted(Reply(status=status), "recovered"))
    async with backend_for(fake.base_url, max_retries=2) as backend:
        assert (await backend.complete(USER)).text == "recovered"
    assert len(fake.requests) == 2


async def test_persistent_server_errors_become_unavailable(fake_factory: Callable[..., FakeOpenAI]) -> None:
    fake = fake_factory(lambda body: Reply(status=500, error="CUDA out of memory"))
    async with backend_for(fake.base_url, max_retries=2) as backend:
        with pytest.raises(LLMUnavailable, match="HTTP 500: CUDA out of memory.*after 2 retries") as err:
            await backend.complete(USER)
    assert err.value.status == 500
    assert len(fake.requests) == 3


async def test_connection_refused_names_the_url() -> None:
    from tests.fakes.openai_server import closed_port_url

    url = closed_port_url()
    async with backend_for(url) as backend:
        with pytest.raises(LLMUnavailable) as err:
            await backend.complete(USER)
    assert str(err.value).startswith(f"cannot reach {url}: connection refused")
    assert "base_url" in str(err.value)


async def test_bad_key_is_not_retried(fake_factory: Callable[..., FakeOpenAI], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAGEX_TEST_KEY", raising=False)
    fake = fake_factory(lambda body: Reply(status=401, error="Incorrect API key provided", error_type="auth"))
    async with backend_for(fake.base_url, max_retries=3, api_key_env="SAGEX_TEST_KEY") as backend:
        with pytest.raises(LLMUnavailable, match=r"HTTP 401: Incorrect API key.*\$SAGEX_TEST_KEY") as err:
            await backend.complete(USER)
    assert err.value.status == 401
    assert len(fake.requests) == 1


async def test_slow_server_times_out(fake_factory: Callable[..., FakeOpenAI]) -> None:
    fake = fake_factory(scripted(Reply("late", delay_s=1.0)))
    async with backend_for(fake.base_url, timeout_s=0.2) as backend:
        with pytest.raises(LLMUnavailable, match="no answer from .* within 0.2 s.*timeout_s"):
            await backend.complete(USER)


async def test_unknown_model_points_at_the_config(fake_factory: Callable[..., FakeOpenAI]) -> None:
    fake = fake_factory(scripted(Reply(status=404, error="model 'nope' does not exist")))
    async with backend_for(fake.base_url, model="nope") as backend:
        with pytest.raises(LLMUnavailable, match="HTTP 404.*check model 'nope' and base_url"):
            await backend.complete(USER)


async def test_error_words_in_an_answer_are_just_an_answer(fake_factory: Callable[..., FakeOpenAI]) -> None:
    fake = fake_factory(scripted("Error: connection refused (HTTP 500)"))
    async with backend_for(fake.base_url) as backend:
        assert (await backend.complete(USER)).text == "Error: connection refused (HTTP 500)"


# -- cache --------------------------------------------------------------------------


async def test_cache_replays_from_disk(fake_factory: Callable[..., FakeOpenAI], tmp_path: Path) -> None:
    fake = fake_factory(lambda body: Reply('{"label": "x"}', prompt_tokens=50, completion_tokens=7))
    async with backend_for(fake.base_url, cache_dir=tmp_path, prompt_usd_per_mtok=2.0) as backend:
        first = await backend.complete(USER, schema=SCHEMA)
        again = await backend.complete(USER, schema=SCHEMA)
    assert len(fake.requests) == 1
    assert not first.cached and again.cached
    assert again.text == first.text and again.finish_reason == first.finish_reason
    assert again.usage == Usage(
        prompt_tokens=50, completion_tokens=7, cost_usd=first.usage.cost_usd, calls=1, cached_calls=1
    )
    (record,) = list(tmp_path.rglob("*.json"))
    assert len(record.parent.name) == 2 and len(record.stem) == 62
    assert json.loads(record.read_text())["request"]["model"] == "test-model"

    # The key ignores where the answer came from: another endpoint with the same cache answers nothing.
    other = fake_factory(scripted())
    async with backend_for(other.base_url, cache_dir=tmp_path) as backend:
        assert (await backend.complete(USER, schema=SCHEMA)).cached
    assert other.requests == []


@pytest.mark.parametrize(
    ("config", "call"),
    [
        ({"temperature": 0.5}, {}),
        ({"seed": 7}, {}),
        ({}, {"messages": [{"role": "user", "content": "something else"}]}),
        ({}, {"max_tokens": 5}),
        ({}, {"top_logprobs": 3}),
        ({}, {"schema": None}),
        ({}, {"model": "other-model"}),
    ],
)
async def test_cache_misses_when_anything_that_shapes_the_answer_changes(
    fake_factory: Callable[..., FakeOpenAI], tmp_path: Path, config: dict[str, Any], call: dict[str, Any]
) -> None:
    fake = fake_factory(lambda body: "{}")
    async with backend_for(fake.base_url, cache_dir=tmp_path) as backend:
        await backend.complete(USER, schema=SCHEMA)
    async with backend_for(fake.base_url, cache_dir=tmp_path, **config) as backend:
        kwargs = {"messages": USER, "schema": SCHEMA, **call}
        assert not (await backend.complete(**kwargs)).cached
    assert len(fake.requests) == 2


async def test_corrupt_cache_records_are_replaced(fake_factory: Callable[..., FakeOpenAI], tmp_path: Path) -> None:
    fake = fake_factory(lambda body: "fresh")
    async with backend_for(fake.base_url, cache_dir=tmp_path) as backend:
        await backend.complete(USER)
        (record,) = list(tmp_path.rglob("*.json"))
        for junk in ('{"reply": {"text": 1', '{"reply": {"text": "x"}}', "[]"):
            record.write_text(junk)
            assert not (await backend.complete(USER)).cached
        assert (await backend.complete(USER)).cached
    assert len(fake.requests) == 4
    assert not list(tmp_path.rglob("*.tmp"))


async def test_a_downgraded_answer_is_found_in_the_cache_by_a_fresh_process(
    fake_factory: Callable[..., FakeOpenAI], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sagex.llm import endpoint

    fake = fake_factory(lambda body: '{"label": "x"}', reject_response_format={"json_schema"})
    async with backend_for(fake.base_url, cache_dir=tmp_path) as backend:
        await backend.complete(USER, schema=SCHEMA)
    endpoint.forget_all()  # as if the process restarted
    async with backend_for(fake.base_url, cache_dir=tmp_path) as backend:
        assert (await backend.complete(USER, schema=SCHEMA)).cached
    assert len(fake.requests) == 2  # the rejected json_schema attempt and the json_object one


# -- accounting and logprobs -----------------------------------------------------------


async def test_cost_comes_from_prices(fake_factory: Callable[..., FakeOpenAI]) -> None:
    fake = fake_factory(scripted(Reply("ok", prompt_tokens=1000, completion_tokens=500)))
    async with backend_for(fake.base_url, prompt_usd_per_mtok=1.0, completion_usd_per_mtok=2.0) as backend:
        usage = (await backend.complete(USER)).usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.calls, usage.cached_calls) == (1000, 500, 1, 0)
    assert usage.cost_usd == pytest.approx(0.002)


async def test_missing_usage_counts_zero(fake_factory: Callable[..., FakeOpenAI]) -> None:
    fake = fake_factory(scripted(Reply("ok", usage=False)))
    async with backend_for(fake.base_url, prompt_usd_per_mtok=1.0) as backend:
        completion = await backend.complete(USER)
    assert completion.text == "ok" and completion.usage == Usage(calls=1)


async def test_logprobs_are_parsed_when_returned(fake_factory: Callable[..., FakeOpenAI]) -> None:
    logprobs = [("Yes", -0.1, [("Yes", -0.1), ("No", -2.4)]), (".", -0.01, [(".", -0.01)])]
    fake = fake_factory(scripted(Reply("Yes.", logprobs=logprobs), "Yes."))
    async with backend_for(fake.base_url) as backend:
        with_logprobs = await backend.complete(USER, top_logprobs=2)
        without = await backend.complete(USER, top_logprobs=2)  # endpoint ignores the request (transformers serve)
    assert fake.requests[0]["logprobs"] is True and fake.requests[0]["top_logprobs"] == 2
    assert with_logprobs.logprobs == (
        TokenLogprob("Yes", -0.1, (("Yes", -0.1), ("No", -2.4))),
        TokenLogprob(".", -0.01, ((".", -0.01),)),
    )
    assert without.logprobs is None


async def test_logprobs_survive_the_cache(fake_factory: Callable[..., FakeOpenAI], tmp_path: Path) -> None:
    fake = fake_factory(scripted(Reply("A", logprobs=[("A", -0.5, [("A", -0.5), ("B", -1.0)])])))
    async with backend_for(fake.base_url, cache_dir=tmp_path) as backend:
        first = await backend.complete(USER, top_logprobs=2)
        again = await backend.complete(USER, top_logprobs=2)
    assert again.cached and again.logprobs == first.logprobs is not None


async def test_concurrent_calls_share_one_client(fake_factory: Callable[..., FakeOpenAI]) -> None:
    fake = fake_factory()  # echoes the last user message
    async with backend_for(fake.base_url) as backend:
        results: list[Completion] = await asyncio.gather(
            *(backend.complete([{"role": "user", "content": f"n{i}"}]) for i in range(8))
        )
    assert [c.text for c in results] == [f"n{i}" for i in range(8)]
    assert len(fake.requests) == 8


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"max_tokens": 0}, "max_tokens"), ({"top_logprobs": 21}, "top_logprobs")]
)
async def test_call_arguments_are_checked(
    fake_factory: Callable[..., FakeOpenAI], kwargs: dict[str, Any], message: str
) -> None:
    fake = fake_factory()
    async with backend_for(fake.base_url) as backend:
        with pytest.raises(ValueError, match=message):
            await backend.complete(USER, **kwargs)


async def test_an_injected_client_is_used_and_left_open(fake_factory: Callable[..., FakeOpenAI]) -> None:
    fake = fake_factory(scripted("one", "two"))
    client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="k", max_retries=0)
    async with LLMBackend(LLMConfig(model="m"), client) as backend:
        assert backend.base_url == fake.base_url
        assert (await backend.complete(USER)).text == "one"
    assert not client.is_closed()
    async with LLMBackend(LLMConfig(model="m"), client) as backend:
        assert (await backend.complete(USER)).text == "two"
    await client.close()
