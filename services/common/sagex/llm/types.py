"""What one chat completion gives back: text, token counts, cost, logprobs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Usage:
    """Tokens and money spent; adds up over calls so budgets can sum attempts."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0
    cached_calls: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
            calls=self.calls + other.calls,
            cached_calls=self.cached_calls + other.cached_calls,
        )

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...]  # alternatives at this position, (token, logprob), most likely first


@dataclass(frozen=True)
class Completion:
    text: str
    usage: Usage  # of this one call: calls=1, and cached_calls=1 when served from the cache
    model: str  # as the server reported it
    finish_reason: str
    logprobs: tuple[TokenLogprob, ...] | None  # None when the endpoint returned none
    cached: bool
