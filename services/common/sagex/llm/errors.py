"""Errors of the LLM backend. Messages say what to fix."""

from __future__ import annotations

from sagex.llm.types import Usage


class LLMError(Exception):
    """Base of everything the backend raises on purpose."""


class LLMUnavailable(LLMError):
    """The endpoint cannot answer: unreachable, refusing the key, erroring after
    the client's retries, or rejecting the request.

    ``usage`` is what was already spent before the failure (e.g. earlier
    attempts of ``ask_json``), so budgets stay exact; ``status`` is the HTTP
    status when the server answered at all.
    """

    def __init__(self, message: str, *, status: int | None = None, usage: Usage | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.usage = usage or Usage()


class LLMMisconfigured(LLMUnavailable):
    """The endpoint refuses what we are configured to send (bad key, unknown model,
    a request option it rejects however often it is asked). Retrying cannot help:
    callers fail fast and point at the setting to fix."""


class MalformedAnswer(LLMError):
    """The model kept answering output that could not be parsed or validated."""

    def __init__(self, reason: str, usage: Usage, attempts: int, last_text: str) -> None:
        super().__init__(f"no valid answer after {attempts} attempt(s): {reason}")
        self.reason = reason
        self.usage = usage
        self.attempts = attempts
        self.last_text = last_text
