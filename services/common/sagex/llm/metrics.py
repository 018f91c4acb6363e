"""Prometheus counters of LLM use: calls, tokens and money, by model.

Only calls that reached the endpoint count tokens and cost (replies from the
response cache are counted as calls with ``result="cached"`` and cost nothing
here, though budgets charge them as the original run did). The ``model`` label
is the name requested, which comes from configuration, so its values are few.
"""

from __future__ import annotations

import prometheus_client

from sagex.llm.types import Usage
from sagex.server.metrics import REGISTRY

CALLS = prometheus_client.Counter("sagex_llm_requests_total", "Chat completions asked for, by result "
                                  "(ok, cached, error).", ("model", "result"), registry=REGISTRY)
PROMPT_TOKENS = prometheus_client.Counter("sagex_llm_prompt_tokens_total", "Prompt tokens sent to the endpoint.",
                                          ("model",), registry=REGISTRY)
COMPLETION_TOKENS = prometheus_client.Counter("sagex_llm_completion_tokens_total",
                                              "Completion tokens received from the endpoint.", ("model",),
                                              registry=REGISTRY)
COST_USD = prometheus_client.Counter("sagex_llm_cost_usd_total", "Cost of the endpoint's calls in US dollars, "
                                     "at the configured prices per million tokens.", ("model",), registry=REGISTRY)


def record(model: str, usage: Usage, *, cached: bool) -> None:
    if cached:
        CALLS.labels(model, "cached").inc()
        return
    CALLS.labels(model, "ok").inc()
    PROMPT_TOKENS.labels(model).inc(usage.prompt_tokens)
    COMPLETION_TOKENS.labels(model).inc(usage.completion_tokens)
    COST_USD.labels(model).inc(usage.cost_usd)


def record_error(model: str) -> None:
    CALLS.labels(model, "error").inc()


__all__ = ["record", "record_error"]
