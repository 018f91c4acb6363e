"""The one path by which SAGE talks to an LLM: any OpenAI-compatible chat endpoint.

Hosted APIs, vLLM, llama.cpp and ``transformers serve`` differ in what they
accept, so the backend adapts instead of assuming: structured output steps down
json_schema -> json_object (with the schema, which llama.cpp and vLLM enforce by
grammar) -> none when the endpoint rejects ``response_format`` (a 400/422, or the
HTTP 500 with which llama.cpp's server answers a type it does not know), and the
token limit moves to ``max_completion_tokens`` when ``max_tokens`` is refused.

What the process learns about an endpoint is shared by every call and backend
(:mod:`sagex.llm.endpoint`): the accepted modes, a limit on calls in flight
(lowered when calls time out behind each other), and endpoint-level failures,
which later calls within a cooldown report at once instead of sending requests
that fail the same way. Transient failures (connection errors, 408/409/429/5xx)
are retried here, honouring Retry-After; what is left becomes LLMUnavailable, or
LLMMisconfigured when only a setting can fix it, with a message that says which.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import openai
import structlog
from openai import AsyncOpenAI

from sagex.llm import metrics
from sagex.llm.cache import ResponseCache, StoredReply, request_key
from sagex.llm.clock import sent
from sagex.llm.endpoint import Endpoint, endpoint
from sagex.llm.errors import LLMError, LLMMisconfigured, LLMUnavailable, MalformedAnswer
from sagex.llm.jsonparse import extract_json
from sagex.llm.types import Completion, TokenLogprob, Usage

__all__ = [
    "Completion",
    "LLMBackend",
    "LLMConfig",
    "LLMError",
    "LLMMisconfigured",
    "LLMUnavailable",
    "MalformedAnswer",
    "TokenLogprob",
    "Usage",
]

log = structlog.get_logger(__name__)

T = TypeVar("T")

STRUCTURED_MODES = ("json_schema", "json_object", "none")  # strongest first: the downgrade order
MAX_TOP_LOGPROBS = 20  # the OpenAI API's limit
MAX_BACKOFF_S = 30.0


@dataclass(frozen=True)
class LLMConfig:
    base_url: str | None = None  # None: $OPENAI_BASE_URL, else the openai default
    model: str = ""  # required to call; sent exactly as given
    api_key_env: str = "OPENAI_API_KEY"  # a missing key sends "none": local servers need none
    temperature: float = 0.0
    seed: int | None = 0
    max_output_tokens: int = 1024
    reasoning_effort: str | None = None  # passed through when set
    timeout_s: float = 120.0
    max_retries: int = 3  # retries with backoff of connection errors, 408/409/429/5xx and queued timeouts
    structured_output: str = "auto"  # json_schema | json_object | none | auto (json_schema, stepping down)
    # Our calls in flight to one base URL, across all features and backends of the process;
    # more wait in our client (not counted against timeouts or budgets). A server that
    # answers one request at a time (llama.cpp's default) wants 1; lowered at run time
    # when calls time out while others were in flight.
    max_in_flight: int = 8
    cache_dir: Path | None = None  # on-disk response cache; None disables it
    prompt_usd_per_mtok: float = 0.0
    completion_usd_per_mtok: float = 0.0

    def __post_init__(self) -> None:
        if self.cache_dir is not None and not isinstance(self.cache_dir, Path):
            object.__setattr__(self, "cache_dir", Path(self.cache_dir))
        problems = [f"{name}: {why}" for name, why in self._problems()]
        if problems:
            raise ValueError("invalid LLM config: " + "; ".join(problems))

    def _problems(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            out.append(
                ("base_url", f"{self.base_url!r} must start with http:// or https:// (e.g. http://127.0.0.1:8000/v1)")
            )
        if not self.api_key_env:
            out.append(("api_key_env", "must name an environment variable"))
        if not 0.0 <= self.temperature <= 2.0:
            out.append(("temperature", f"{self.temperature} is outside [0, 2]"))
        if self.max_output_tokens < 1:
            out.append(("max_output_tokens", f"{self.max_output_tokens} must be at least 1"))
        if self.reasoning_effort is not None and not self.reasoning_effort.strip():
            out.append(("reasoning_effort", "must be a level such as 'low' or 'high', or unset"))
        if not self.timeout_s > 0:
            out.append(("timeout_s", f"{self.timeout_s} must be positive"))
        if self.max_retries < 0:
            out.append(("max_retries", f"{self.max_retries} must be 0 or more"))
        if not 1 <= self.max_in_flight <= 1024:
            out.append(("max_in_flight", f"{self.max_in_flight} is outside 1..1024"))
        if self.structured_output not in (*STRUCTURED_MODES, "auto"):
            out.append(
                ("structured_output", f"{self.structured_output!r} is not one of auto, {', '.join(STRUCTURED_MODES)}")
            )
        for name in ("prompt_usd_per_mtok", "completion_usd_per_mtok"):
            if getattr(self, name) < 0:
                out.append((name, f"{getattr(self, name)} must not be negative"))
        return out

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.prompt_usd_per_mtok + completion_tokens * self.completion_usd_per_mtok) / 1e6


@dataclass(frozen=True)
class _Request:
    """Everything that determines the answer; also the cache key's content."""

    body: dict[str, Any]

    @property
    def key(self) -> str:
        return request_key(self.body)


class LLMBackend:
    """Chat completions against one OpenAI-compatible endpoint, with caching,
    structured-output negotiation and JSON answers validated by the caller.

    A ``client`` passed in is used as is (its base URL, key, timeout and retries
    win over the config's) and stays open on ``aclose``: its owner closes it.
    """

    def __init__(self, config: LLMConfig, client: AsyncOpenAI | None = None, *, config_section: str = "[agent.llm]"):
        self.config = config
        # Where the settings live in the user's config file, for error messages.
        self._section = config_section
        self._owns_client = client is None
        own = client or AsyncOpenAI(
            base_url=config.base_url,
            api_key=os.environ.get(config.api_key_env) or "none",
            timeout=config.timeout_s,
        )
        # Retries are ours (_send), so that a configuration error is never retried, a
        # timeout can lower the endpoint's limit, and no retry waits holding a slot.
        self._retries = client.max_retries if client is not None else config.max_retries
        self._timeout_s = float(own.timeout) if isinstance(own.timeout, int | float) else config.timeout_s
        self._root = own
        self._client = own.with_options(max_retries=0)
        self.base_url = str(own.base_url).rstrip("/")
        self._cache = ResponseCache(config.cache_dir) if config.cache_dir is not None else None

    async def __aenter__(self) -> LLMBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._root.close()

    def endpoint(self, model: str | None = None) -> Endpoint:
        """What the process has learned about this backend's endpoint for ``model``."""
        return endpoint(self.base_url, model or self.config.model, self.config.max_in_flight)

    async def complete(
        self,
        messages: list[dict[str, str]],
        *,
        schema: dict | None = None,
        schema_name: str = "answer",
        max_tokens: int | None = None,
        top_logprobs: int | None = None,
        model: str | None = None,
    ) -> Completion:
        """One non-streaming chat completion. With ``schema``, structured output is
        requested in the strongest mode the endpoint accepts."""
        model = model or self.config.model
        if not model:
            raise LLMUnavailable(f"no model configured: set model in {self._section}")
        limit = self.config.max_output_tokens if max_tokens is None else max_tokens
        if limit < 1:
            raise ValueError(f"max_tokens must be at least 1, got {limit}")
        if top_logprobs is not None and not 0 <= top_logprobs <= MAX_TOP_LOGPROBS:
            raise ValueError(f"top_logprobs must be in [0, {MAX_TOP_LOGPROBS}], got {top_logprobs}")

        modes = self._modes(model) if schema is not None else ["none"]
        requests = [
            self._request(messages, model, limit, top_logprobs, _response_format(m, schema, schema_name)) for m in modes
        ]
        if self._cache is not None:
            # Any mode's record will do: an earlier process may have stepped down already.
            for request in requests:
                stored = self._cache.get(request.key)
                if stored is not None:
                    return self._completion(stored, model, cached=True)

        state = self.endpoint(model)
        # Until the endpoint has accepted a mode, one call at a time finds out which:
        # concurrent calls would all send the same refused request first.
        probing = schema is not None and self.config.structured_output == "auto" and not state.structured_known
        if probing:
            await state.probe.acquire()
        try:
            if probing and state.structured_known:  # learned while this call waited
                modes = self._modes(model)
                requests = requests[len(requests) - len(modes) :]
            return await self._first_accepted(state, model, modes, requests, structured=schema is not None)
        finally:
            if probing:
                state.probe.release()

    async def _first_accepted(
        self, state: Endpoint, model: str, modes: list[str], requests: list[_Request], *, structured: bool
    ) -> Completion:
        """The completion of the first of ``requests`` (one per mode, strongest first)
        that the endpoint accepts."""
        broken = state.broken_message()
        if broken is not None:
            metrics.record_error(model)
            raise LLMMisconfigured(broken) if state.broken_permanent else LLMUnavailable(broken)
        for i, (mode, request) in enumerate(zip(modes, requests, strict=True)):
            try:
                response = await self._send(state, request.body)
            except openai.APIStatusError as e:
                if mode != "none" and _rejects_response_format(e):
                    log.info(
                        "structured_output_rejected",
                        base_url=self.base_url,
                        model=model,
                        mode=mode,
                        status=e.status_code,
                        message=_server_message(e),
                    )
                    if i + 1 < len(modes):
                        # Remembered at once, so concurrent and later calls skip it.
                        state.reject_structured(STRUCTURED_MODES.index(mode) + 1)
                        continue
                    metrics.record_error(model)
                    raise LLMMisconfigured(
                        f"{self.base_url} refuses response_format {mode!r} (HTTP {e.status_code}: "
                        f"{' '.join(_server_message(e).split())[:300]}); "
                        f"set structured_output = \"auto\" in {self._section}",
                        status=e.status_code,
                    ) from e
                raise self._unavailable(e, model, state) from e
            except openai.OpenAIError as e:
                raise self._unavailable(e, model, state) from e
            state.mark_working()
            if structured:
                state.structured_known = True
            if i > 0:
                log.info("structured_output_downgraded", base_url=self.base_url, model=model, mode=mode)
            stored = _stored_reply(response, model)
            if self._cache is not None:
                self._cache.put(request.key, request.body, stored)
            return self._completion(stored, model, cached=False)
        raise AssertionError("unreachable: the last mode either returns or raises")  # pragma: no cover

    async def ask_json(
        self,
        messages: list[dict[str, str]],
        parse: Callable[[Any], T],
        *,
        schema: dict,
        schema_name: str = "answer",
        attempts: int = 3,
        max_tokens: int | None = None,
        model: str | None = None,
        on_usage: Callable[[Usage], None] | None = None,
    ) -> tuple[T, Usage]:
        """Ask for JSON and validate it with ``parse``, which raises ValueError with a
        readable message on a bad object. Bad replies are re-asked with that message,
        up to ``attempts`` calls in all; usage is summed over them. ``on_usage`` hears
        each call's usage as it returns, so a caller cut off mid-way (a time budget)
        still knows what the calls before were.

        Raises MalformedAnswer when every attempt failed; never makes up an answer.
        Other exceptions from ``parse`` propagate: they are bugs, not bad answers.
        """
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        kinds: dict[str, type[dict[Any, Any]] | type[list[Any]]] = {"object": dict, "array": list}
        prefer = kinds.get(str(schema.get("type")))
        limit = self.config.max_output_tokens if max_tokens is None else max_tokens
        conversation = list(messages)
        spent = Usage()
        reason, text = "", ""
        for _ in range(attempts):
            try:
                completion = await self.complete(
                    conversation, schema=schema, schema_name=schema_name, max_tokens=limit, model=model
                )
            except LLMUnavailable as e:
                if on_usage is not None:
                    on_usage(e.usage)
                e.usage = spent + e.usage
                raise
            spent += completion.usage
            if on_usage is not None:
                on_usage(completion.usage)
            text = completion.text
            try:
                return parse(_extract(completion, prefer, limit)), spent
            except ValueError as e:
                reason = str(e) or type(e).__name__
            log.info("llm_answer_rejected", reason=reason, finish_reason=completion.finish_reason)
            conversation = [
                *conversation,
                # Keep user/assistant turns alternating: some chat templates refuse two user turns in a row.
                {"role": "assistant", "content": text if text.strip() else "(no answer)"},
                {"role": "user", "content": _reask(reason)},
            ]
        raise MalformedAnswer(reason, spent, attempts, text)

    # -- internals ---------------------------------------------------------------

    def _modes(self, model: str) -> list[str]:
        if self.config.structured_output != "auto":
            return [self.config.structured_output]
        return list(STRUCTURED_MODES[self.endpoint(model).structured_floor :])

    def _request(
        self,
        messages: list[dict[str, str]],
        model: str,
        limit: int,
        top_logprobs: int | None,
        response_format: dict[str, Any] | None,
    ) -> _Request:
        cfg = self.config
        body: dict[str, Any] = {
            "model": model,
            "messages": [dict(m) for m in messages],
            "temperature": cfg.temperature,
            "max_tokens": limit,  # sent as max_completion_tokens where the endpoint wants that (_create)
        }
        if cfg.seed is not None:
            body["seed"] = cfg.seed
        if cfg.reasoning_effort is not None:
            body["reasoning_effort"] = cfg.reasoning_effort
        if response_format is not None:
            body["response_format"] = response_format
        if top_logprobs is not None:
            body["logprobs"] = True
            body["top_logprobs"] = top_logprobs
        return _Request(body)

    async def _send(self, state: Endpoint, body: dict[str, Any]) -> Any:
        """One request through the endpoint's gate, retried on transient faults.

        A timeout while other calls were in flight means the server queued ours
        behind them: the endpoint's limit is lowered and the call retried. A lone
        call that times out is not retried (it would only wait as long again)."""
        failures = 0
        while True:
            kwargs = dict(body)
            kwargs[state.token_param] = kwargs.pop("max_tokens")
            await state.gate.acquire()
            company = state.gate.in_flight - 1
            try:
                with sent():
                    return await self._client.chat.completions.create(**kwargs)
            except openai.BadRequestError as e:
                # Newer OpenAI models refuse max_tokens and name the parameter in the error.
                if state.token_param == "max_tokens" and e.param == "max_tokens":
                    state.token_param = "max_completion_tokens"
                    continue
                raise
            except openai.APITimeoutError:
                if company == 0 or failures >= self._retries:
                    raise
                if state.gate.lower(company):
                    log.warning("llm_in_flight_lowered", base_url=self.base_url, limit=state.gate.limit,
                                timeout_s=self._timeout_s)
                failures += 1
                continue
            except openai.APIStatusError as e:
                if failures >= self._retries or not _transient(e) or (
                    body.get("response_format") is not None and _rejects_response_format(e)
                ):
                    raise
                wait = _retry_after(e, failures)
            except openai.APIConnectionError:
                if failures >= self._retries:
                    raise
                wait = _retry_after(None, failures)
            finally:
                state.gate.release()
            failures += 1
            await asyncio.sleep(wait)

    def _completion(self, stored: StoredReply, model: str, *, cached: bool) -> Completion:
        """The caller's view of a reply; counted in the metrics under the requested ``model``."""
        usage = Usage(
            prompt_tokens=stored.prompt_tokens,
            completion_tokens=stored.completion_tokens,
            cost_usd=self.config.cost_usd(stored.prompt_tokens, stored.completion_tokens),
            calls=1,
            cached_calls=int(cached),
        )
        metrics.record(model, usage, cached=cached)
        logprobs = (
            None
            if stored.logprobs is None
            else tuple(TokenLogprob(t, lp, tuple((a, alp) for a, alp in top)) for t, lp, top in stored.logprobs)
        )
        return Completion(stored.text, usage, stored.model, stored.finish_reason, logprobs, cached)

    def _unavailable(self, e: openai.OpenAIError, model: str, state: Endpoint) -> LLMUnavailable:
        """The error for ``e``; an endpoint-level one is also remembered on ``state``."""
        error = self._describe(e, model)
        if isinstance(error, LLMMisconfigured):
            state.mark_broken(error.message, permanent=True)
        elif (isinstance(e, openai.APIConnectionError) and not isinstance(e, openai.APITimeoutError)
              or isinstance(e, openai.APIStatusError) and e.status_code >= 500):
            state.mark_broken(error.message)
        return error

    def _describe(self, e: openai.OpenAIError, model: str) -> LLMUnavailable:
        metrics.record_error(model)
        url, section, retries = self.base_url, self._section, self._retries
        if isinstance(e, openai.APITimeoutError):
            return LLMUnavailable(
                f"no answer from {url} within {self._timeout_s:g} s (time spent waiting for a free slot in "
                f"our own client not counted); check the server, or raise timeout_s or lower max_in_flight "
                f"in {section}"
            )
        if isinstance(e, openai.APIConnectionError):
            return LLMUnavailable(
                f"cannot reach {url}: {_root_cause(e)}; start the server or set base_url in {section}"
            )
        if isinstance(e, openai.APIStatusError):
            status, said = e.status_code, _server_message(e)
            if isinstance(e, openai.AuthenticationError | openai.PermissionDeniedError):
                hint = f"put a valid API key in ${self.config.api_key_env} (api_key_env in {section})"
                return LLMMisconfigured(f"{url} answered HTTP {status}: {said}; {hint}", status=status)
            elif isinstance(e, openai.NotFoundError):
                hint = f"check model {model!r} and base_url (usually ending in /v1) in {section}"
                return LLMMisconfigured(f"{url} answered HTTP {status}: {said}; {hint}", status=status)
            elif isinstance(e, openai.RateLimitError):
                hint = f"rate-limited even after {retries} retries; lower concurrency or raise max_retries in {section}"
            elif status >= 500:
                hint = f"the server kept failing after {retries} retries; check its logs"
            else:
                hint = f"the request was refused; check the settings in {section}"
            return LLMUnavailable(f"{url} answered HTTP {status}: {said}; {hint}", status=status)
        return LLMUnavailable(f"unusable response from {url}: {e}")


def _response_format(mode: str, schema: dict | None, name: str) -> dict[str, Any] | None:
    if schema is None or mode == "none":
        return None
    if mode == "json_object":
        # "schema" is how llama.cpp's and vLLM's servers take a schema for json_object
        # (enforced by grammar); hosted APIs reach this mode only after refusing json_schema.
        return {"type": "json_object", "schema": schema}
    # strict=False: strict mode demands additionalProperties=false and all-required
    # schemas, which callers' schemas need not follow.
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": False}}


def _rejects_response_format(e: openai.APIStatusError) -> bool:
    """The endpoint refused the request's ``response_format``: a 400/422 that names
    it, or names no parameter at all (local servers rarely fill ``param``); or a
    5xx whose message names it. llama.cpp's server (llama-cpp-python) answers
    json_schema with HTTP 500 and its request validator's complaint
    ("... 'response_format', 'type') ... Input should be 'text' or 'json_object'")."""
    if e.status_code in (400, 422):
        return e.param is None or str(e.param).startswith("response_format")
    if e.status_code >= 500:
        said = f"{_server_message(e)} {e.param or ''}".lower()
        return "response_format" in said or ("json_object" in said and "input should be" in said)
    return False


def _transient(e: openai.APIStatusError) -> bool:
    return e.status_code in (408, 409, 429) or e.status_code >= 500


def _retry_after(e: openai.APIStatusError | None, failures: int) -> float:
    """The server's Retry-After (ms or s) when it sends one, else exponential backoff with jitter."""
    headers = e.response.headers if e is not None else {}
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return min(MAX_BACKOFF_S, max(0.0, float(value) * scale))
            except ValueError:
                pass
    return min(MAX_BACKOFF_S, 0.5 * 2**failures) * (0.75 + random.random() / 2)


def _stored_reply(response: Any, requested_model: str) -> StoredReply:
    choices = getattr(response, "choices", None) or []
    if not choices:
        raise LLMUnavailable(f"the endpoint returned no choices for model {requested_model!r}")
    choice = choices[0]
    message = getattr(choice, "message", None)
    usage = getattr(response, "usage", None)  # some servers omit it: count 0 rather than fail
    return StoredReply(
        text=(getattr(message, "content", None) or "") if message is not None else "",
        model=getattr(response, "model", None) or requested_model,
        finish_reason=getattr(choice, "finish_reason", None) or "unknown",
        prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        logprobs=_logprobs(getattr(choice, "logprobs", None)),
    )


def _logprobs(raw: Any) -> list[tuple[str, float, list[tuple[str, float]]]] | None:
    content = getattr(raw, "content", None) if raw is not None else None
    if content is None:
        return None
    return [
        (t.token, float(t.logprob), [(a.token, float(a.logprob)) for a in (getattr(t, "top_logprobs", None) or [])])
        for t in content
    ]


def _extract(completion: Completion, prefer: type[dict] | type[list] | None, limit: int) -> Any:
    cut = completion.finish_reason == "length"
    if not completion.text.strip():
        if cut:
            raise ValueError(
                f"the reply is empty: the output-token limit ({limit} tokens) was hit before any answer; "
                "raise max_output_tokens"
            )
        raise ValueError("the reply is empty")
    try:
        return extract_json(completion.text, prefer)
    except ValueError as e:
        if cut:
            raise ValueError(f"{e}; the reply was cut off at the output-token limit ({limit} tokens)") from None
        raise


def _reask(reason: str) -> str:
    return (
        f"Your previous reply could not be used: {reason}.\n"
        "Reply again with the corrected JSON only, with no other text."
    )


def _server_message(e: openai.APIStatusError) -> str:
    body = e.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    if isinstance(body, str) and body:
        return body[:300]
    return e.message


def _root_cause(e: BaseException) -> str:
    """The most specific reason in the exception chain: the OS error when there is
    one ("connection refused" reads better than httpx's "All connection attempts failed")."""
    seen: set[int] = set()
    innermost: BaseException = e
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno is not None:
            return os.strerror(cur.errno).lower()
        innermost = cur
        cur = cur.__cause__ or cur.__context__
    return str(innermost) or type(innermost).__name__
