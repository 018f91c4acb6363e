"""The scorer interface, the registry of scorers by name, and ``run_scorer``, which
turns every expected failure into an error status instead of an exception.

A scorer is built once from a ``Toolkit`` (the clients it may use) and then
scores any number of explanations:

    scorer = build_scorer("embedding", toolkit)
    result = await run_scorer(scorer, ScoringInput(explanation, data))
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import grpc
import openai
import structlog

from sagex.llm import Completion, LLMBackend, LLMMisconfigured, LLMUnavailable, MalformedAnswer, Usage
from sagex.remote.activation import ActivationClient, ActivationUnavailable
from sagex.scoring.embedder import Embedder
from sagex.scoring.errors import ScorerFailed
from sagex.scoring.heldout import FeatureData
from sagex.scoring.result import Metric, ScorerError, ScorerOutcome

log = structlog.get_logger(__name__)

T = TypeVar("T")

# (base_url, model) of endpoints that refused logprobs, for the rest of the process:
# later calls go without them instead of failing once more first.
_no_logprobs: set[tuple[str, str]] = set()


def refuses_logprobs(error: LLMUnavailable) -> bool:
    """The endpoint answered 400/422 to a request because of its logprobs or
    top_logprobs parameter (named in ``param`` or, by servers that leave ``param``
    empty, in the message)."""
    cause = error.__cause__
    if isinstance(cause, openai.APIStatusError):
        if cause.status_code not in (400, 422):
            return False
        if cause.param in ("logprobs", "top_logprobs"):
            return True
        body = cause.body if isinstance(cause.body, dict) else {}
        said = f"{body.get('message', '')} {cause.message}"
    else:
        if error.status not in (400, 422):
            return False
        said = error.message
    return "logprob" in said.lower()


@dataclass(frozen=True)
class ScoringInput:
    """One explanation of one feature, and that feature's shared data."""

    explanation: str
    data: FeatureData

    @property
    def seed(self) -> int:
        return self.data.seed


@dataclass(frozen=True)
class ScorerOutput:
    """What a scorer's ``score`` returns on success."""

    metrics: Sequence[Metric]
    details: Mapping[str, float | int | str] = field(default_factory=dict)


class Meter:
    """LLM usage of one scoring run, kept even when the run fails halfway."""

    def __init__(self) -> None:
        self.usage = Usage()

    def add(self, usage: Usage) -> None:
        self.usage = self.usage + usage


@dataclass(frozen=True)
class Toolkit:
    """The clients scorers may use. ``llm`` and ``embedder`` are optional: a scorer
    that needs a missing one reports FAILED_PRECONDITION."""

    activation: ActivationClient
    llm: LLMBackend | None = None
    embedder: Embedder | None = None
    llm_concurrency: int = 8  # LLM calls in flight per scorer run

    async def complete(self, llm: LLMBackend, messages: list[dict[str, str]], *, max_tokens: int,
                       top_logprobs: int | None) -> Completion:
        """``llm.complete``, asking for logprobs where the endpoint accepts them. An
        endpoint that refuses them is asked once more without, and remembered; the
        completion then has no logprobs and the scorers read the written answer."""
        key = (llm.base_url, llm.config.model)
        if top_logprobs is None or key in _no_logprobs:
            return await llm.complete(messages, max_tokens=max_tokens)
        try:
            return await llm.complete(messages, max_tokens=max_tokens, top_logprobs=top_logprobs)
        except LLMUnavailable as e:
            if not refuses_logprobs(e):
                raise
            if key not in _no_logprobs:
                _no_logprobs.add(key)
                log.warning("logprobs_unsupported", base_url=llm.base_url, model=llm.config.model, reason=e.message)
        return await llm.complete(messages, max_tokens=max_tokens)

    def need_llm(self, scorer: str) -> LLMBackend:
        if self.llm is None or not self.llm.config.model:
            raise ScorerFailed(grpc.StatusCode.FAILED_PRECONDITION,
                               f"the {scorer} scorer needs an LLM: set model (and base_url) in [scoring.llm]")
        return self.llm

    async def gather_limited(self, calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
        """Run calls concurrently, at most ``llm_concurrency`` at a time; results in
        order. The first failure cancels the calls still running and is raised."""
        gate = asyncio.Semaphore(self.llm_concurrency)

        async def one(call: Callable[[], Awaitable[T]]) -> T:
            async with gate:
                return await call()

        tasks = [asyncio.ensure_future(one(c)) for c in calls]
        if not tasks:
            return []
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        failed = [t.exception() for t in tasks if t in done and not t.cancelled() and t.exception() is not None]
        if failed:
            raise failed[0]  # type: ignore[misc]
        return [task.result() for task in tasks]


class Scorer(ABC):
    """Measures how well an explanation predicts a feature.

    ``score`` returns metrics or raises ScorerFailed (or a dependency's
    LLMUnavailable / MalformedAnswer / ActivationUnavailable); every LLM call's
    usage goes into ``meter``. Call it through ``run_scorer``."""

    name: ClassVar[str]

    @abstractmethod
    async def score(self, task: ScoringInput, meter: Meter) -> ScorerOutput: ...


ScorerFactory = Callable[[Toolkit, Any], Scorer]
_REGISTRY: dict[str, tuple[ScorerFactory, type]] = {}


def register(name: str, settings: type) -> Callable[[ScorerFactory], ScorerFactory]:
    """Register ``factory(toolkit, settings) -> Scorer`` under ``name``; ``settings``
    is the scorer's settings dataclass (its defaults are used when none is given)."""

    def add(factory: ScorerFactory) -> ScorerFactory:
        if name in _REGISTRY:
            raise ValueError(f"scorer {name!r} is already registered")
        _REGISTRY[name] = (factory, settings)
        return factory

    return add


def scorer_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def build_scorer(name: str, toolkit: Toolkit, settings: object | None = None) -> Scorer:
    _load_builtin()
    if name not in _REGISTRY:
        raise ValueError(f"unknown scorer {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    factory, settings_type = _REGISTRY[name]
    return factory(toolkit, settings if settings is not None else settings_type())


def _load_builtin() -> None:
    # The built-in scorers register themselves on import.
    from sagex.scoring.scorers import (  # noqa: F401
        detection,
        embedding,
        fuzzing,
        generative,
        intervention,
        output,
        predictive,
    )


async def run_scorer(scorer: Scorer, task: ScoringInput) -> ScorerOutcome:
    """Run one scorer; expected failures come back as ``ScorerOutcome.error``."""
    meter = Meter()
    try:
        scored = await scorer.score(task, meter)
    except ScorerFailed as e:
        error = ScorerError(e.code, e.message)
    except LLMMisconfigured as e:  # only a setting can fix it
        meter.add(e.usage)
        error = ScorerError(grpc.StatusCode.FAILED_PRECONDITION, f"the scoring LLM refuses the request: {e.message}")
    except LLMUnavailable as e:
        meter.add(e.usage)
        error = ScorerError(grpc.StatusCode.UNAVAILABLE, f"the scoring LLM is unavailable: {e.message}")
    except MalformedAnswer as e:
        meter.add(e.usage)
        error = ScorerError(grpc.StatusCode.FAILED_PRECONDITION,
                            f"the scoring LLM gave no usable answer after {e.attempts} attempt(s) ({e.reason}); "
                            "a stronger model is needed")
    except ActivationUnavailable as e:
        error = ScorerError(grpc.StatusCode.UNAVAILABLE, str(e))
    except grpc.aio.AioRpcError as e:
        error = ScorerError(e.code(), f"the activation service refused: {e.details()}")
    except Exception as e:  # a bug in this scorer: its result says so, the other scorers still report
        log.exception("scorer_crashed", scorer=scorer.name, feature=task.data.feature_id)
        error = ScorerError(grpc.StatusCode.INTERNAL, f"the {scorer.name} scorer failed ({type(e).__name__}: {e}); "
                                                      "please report it with the server log")
    else:
        return ScorerOutcome(scorer.name, tuple(scored.metrics), None, meter.usage, dict(scored.details))
    log.info("scorer_failed", scorer=scorer.name, feature=task.data.feature_id, code=error.code.name,
             reason=error.message)
    return ScorerOutcome(scorer.name, (), error, meter.usage)


__all__ = [
    "Meter",
    "ScorerOutput",
    "Scorer",
    "ScoringInput",
    "Toolkit",
    "build_scorer",
    "register",
    "run_scorer",
    "scorer_names",
]
