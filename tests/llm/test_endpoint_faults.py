"""What the backend learns about an endpoint, over real sockets against the fake:
llama.cpp's HTTP 500 for json_schema is a configuration answer (stepped down from
once, remembered by every call), endpoint-level failures fail later calls fast,
calls in flight are limited per endpoint and the limit is learned from timeouts,
and time queued in our own client is not charged to a run's clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sagex.llm import LLMBackend, LLMConfig, LLMUnavailable
from sagex.llm.clock import RunClock, use_clock
from sagex.llm.endpoint import Gate
from sagex.llm.errors import LLMMisconfigured
from tests.fakes.openai_server import FakeOpenAI, Reply

USER = [{"role": "user", "content": "Label this feature. Reply in JSON."}]
SCHEMA = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}


@pytest.fixture
def fakes() -> Iterator[Callable[..., FakeOpenAI]]:
    started: list[FakeOpenAI] = []

    def start(*args: Any, **kwargs: Any) -> FakeOpenAI:
        started.append(FakeOpenAI(*args, **kwargs).__enter__())
        return started[-1]

    yield start
    for fake in started:
        fake.__exit__(None, None, None)


def backend(url: str, section: str = "[agent.llm]", **config: Any) -> LLMBackend:
    config = {"model": "m", "max_retries": 2, "timeout_s": 10.0, **config}
    return LLMBackend(LLMConfig(base_url=url, **config), config_section=section)


def formats(fake: FakeOpenAI) -> list[str | None]:
    return [(b.get("response_format") or {}).get("type") for b in fake.requests]


# -- llama.cpp's HTTP 500 for json_schema ---------------------------------------------


async def test_llama_cpp_500_steps_down_once_for_concurrent_calls_and_sends_the_schema(
    fakes: Callable[..., FakeOpenAI],
) -> None:
    fake = fakes(lambda body: '{"label": "x"}', llama_cpp=True)
    async with backend(fake.base_url) as llm:
        answers = await asyncio.gather(*(llm.complete(USER, schema=SCHEMA) for _ in range(6)))
    assert all(a.text == '{"label": "x"}' for a in answers)
    # One json_schema request in all: not retried (a 500 that names response_format is no
    # transient fault), and the five concurrent calls waited for the answer instead of all trying.
    assert formats(fake) == ["json_schema"] + ["json_object"] * 6
    assert all(b["response_format"]["schema"] == SCHEMA for b in fake.requests[1:])  # llama.cpp's grammar


async def test_the_step_down_is_remembered_by_every_backend_on_the_endpoint(fakes: Callable[..., FakeOpenAI]) -> None:
    fake = fakes(lambda body: '{"label": "x"}', llama_cpp=True)
    async with backend(fake.base_url) as llm:
        await llm.complete(USER, schema=SCHEMA)
    async with backend(fake.base_url, "[scoring.llm]") as other:
        await other.complete(USER, schema=SCHEMA)
    assert formats(fake) == ["json_schema", "json_object", "json_object"]


async def test_an_explicit_mode_the_server_refuses_fails_fast_and_says_what_to_set(
    fakes: Callable[..., FakeOpenAI],
) -> None:
    fake = fakes(lambda body: '{"label": "x"}', llama_cpp=True)
    async with backend(fake.base_url, structured_output="json_schema") as llm:
        with pytest.raises(LLMMisconfigured, match=r"refuses response_format 'json_schema' \(HTTP 500.*"
                                                   r"Input should be 'text' or 'json_object'.*structured_output"):
            await llm.complete(USER, schema=SCHEMA)
    assert len(fake.requests) == 1  # no retries of a configuration answer


async def test_a_500_about_something_else_is_still_retried(fakes: Callable[..., FakeOpenAI]) -> None:
    answers = iter([Reply(status=500, error="out of memory", error_type="internal_server_error")])
    fake = fakes(lambda body: next(answers, '{"label": "x"}'), llama_cpp=True)
    async with backend(fake.base_url, structured_output="json_object") as llm:
        assert (await llm.complete(USER, schema=SCHEMA)).text == '{"label": "x"}'
    assert len(fake.requests) == 2


# -- endpoint-level failures fail later calls fast ---------------------------------------


async def test_an_unknown_model_is_asked_once_for_all_calls(fakes: Callable[..., FakeOpenAI]) -> None:
    fake = fakes(lambda body: Reply(status=404, error="The model `nope` does not exist"))
    async with backend(fake.base_url, model="nope") as llm:
        results = await asyncio.gather(*(llm.complete(USER) for _ in range(5)), return_exceptions=True)
        again = await asyncio.gather(llm.complete(USER), return_exceptions=True)
    for error in [*results, *again]:
        assert isinstance(error, LLMMisconfigured) and "check model 'nope'" in str(error)
    assert len(fake.requests) <= 5 and len(again) == 1
    sent = len(fake.requests)
    async with backend(fake.base_url, model="nope") as llm:
        with pytest.raises(LLMMisconfigured):
            await llm.complete(USER)
    assert len(fake.requests) == sent  # remembered: no request at all


async def test_a_server_that_keeps_failing_is_not_stormed(fakes: Callable[..., FakeOpenAI]) -> None:
    fake = fakes(lambda body: Reply(status=500, error="model failed to load", error_type="internal_server_error"))
    async with backend(fake.base_url, max_retries=2) as llm:
        with pytest.raises(LLMUnavailable, match="HTTP 500: model failed to load") as first:
            await llm.complete(USER)
        assert not isinstance(first.value, LLMMisconfigured)  # may pass: a job may retry later
        for _ in range(10):
            with pytest.raises(LLMUnavailable, match="HTTP 500: model failed to load"):
                await llm.complete(USER)
    assert len(fake.requests) == 3  # one call's retries; the ten after it sent nothing


async def test_a_refused_parameter_is_not_an_endpoint_failure(fakes: Callable[..., FakeOpenAI]) -> None:
    fake = fakes(lambda body: "ok", reject_logprobs=True)
    async with backend(fake.base_url) as llm:
        with pytest.raises(LLMUnavailable, match="HTTP 400"):
            await llm.complete(USER, top_logprobs=5)
        assert (await llm.complete(USER)).text == "ok"  # the next plain call is sent and answered


# -- calls in flight ----------------------------------------------------------------------


async def test_calls_in_flight_are_limited_per_endpoint(fakes: Callable[..., FakeOpenAI]) -> None:
    fake = fakes(lambda body: Reply("ok", delay_s=0.1))
    async with backend(fake.base_url, max_in_flight=2) as a, backend(fake.base_url, max_in_flight=2) as b:
        answers = await asyncio.gather(*(llm.complete(USER) for llm in [a, b] * 4))
    assert [x.text for x in answers] == ["ok"] * 8
    assert fake.peak_in_flight == 2  # two backends, one endpoint, one limit


async def test_timeouts_behind_other_calls_lower_the_limit_and_are_retried(fakes: Callable[..., FakeOpenAI]) -> None:
    # A server that answers one request at a time, 0.1 s each: of 14 calls sent at once the
    # last few wait on it past the 1 s timeout. Short answers against a long timeout leave
    # room for a busy machine: a retried call (limit lowered) waits at most a few answers.
    fake = fakes(lambda body: Reply("ok", delay_s=0.1), serial=True)
    async with backend(fake.base_url, timeout_s=1.0, max_retries=6, max_in_flight=14) as llm:
        answers = await asyncio.gather(*(llm.complete(USER) for _ in range(14)))
        limit = llm.endpoint().gate.limit
    assert [x.text for x in answers] == ["ok"] * 14
    assert limit < 14  # learned: the server queues


async def test_a_lone_call_that_times_out_is_not_retried(fakes: Callable[..., FakeOpenAI]) -> None:
    fake = fakes(lambda body: Reply("late", delay_s=0.6))
    async with backend(fake.base_url, timeout_s=0.2, max_retries=3) as llm:
        with pytest.raises(LLMUnavailable, match=r"within 0.2 s \(time spent waiting for a free slot"):
            await llm.complete(USER)
    assert len(fake.requests) == 1


# -- the run's clock ----------------------------------------------------------------------


async def test_time_queued_in_our_client_stops_the_runs_clock_and_its_deadline() -> None:
    gate = Gate(1)
    await gate.acquire()  # another run's call holds the only slot for 0.5 s

    async def other_run() -> None:
        await asyncio.sleep(0.5)
        gate.release()

    clock = RunClock()
    holder = asyncio.create_task(other_run())
    with use_clock(clock):
        async with asyncio.timeout(0.3) as deadline:  # shorter than the wait: it must not fire
            clock.bind(deadline)
            await gate.acquire()
            gate.release()
    await holder
    assert clock.paused_s >= 0.45
    assert clock.elapsed < time.monotonic() - clock.started - 0.45


async def test_the_deadline_still_fires_for_time_that_counts() -> None:
    gate = Gate(1)
    clock = RunClock()
    with pytest.raises(TimeoutError), use_clock(clock):
        async with asyncio.timeout(0.2) as deadline:
            clock.bind(deadline)
            await gate.acquire()  # free: no pause
            await asyncio.sleep(2)
    assert clock.paused_s == 0.0


async def test_a_run_with_a_call_sent_keeps_its_clock_running() -> None:
    from sagex.llm.clock import queued, sent

    clock = RunClock()
    with use_clock(clock), sent(), queued():  # one call at the server, another waiting: work goes on
        await asyncio.sleep(0.1)
    assert clock.paused_s == 0.0
