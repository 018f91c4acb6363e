"""Explainers the benchmark can run. Any name is an agent policy (``heuristic``,
``openai``, and whatever policy the agent service offers later), run as one batch job
through the SDK; ``single_pass`` is the scoring service's one-call baseline, run here
from the same exemplars the agent sees, and needs an LLM endpoint."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from sagex.sdk import Options, Sage
from sagex.sdk.errors import SageError


@dataclass
class Explained:
    feature_id: int
    description: str = ""
    labels: list[tuple[str, str]] = field(default_factory=list)
    triage_class: str = ""
    error: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


@dataclass
class ExplainerRun:
    explainer: str
    features: list[Explained]
    seconds: float
    error: str = ""  # the explainer could not run at all (unknown policy, no LLM)


def run_policy(sage: Sage, sae: str, features: Sequence[int], policy: str, *, max_rounds: int = 0,
               concurrency: int = 4, timeout_s: float = 7200.0) -> ExplainerRun:
    start = time.perf_counter()
    try:
        job = sage.agent.explain_many(sae, list(features), Options(policy=policy, max_rounds=max_rounds),
                                      concurrency=concurrency)
        explanations = job.result(timeout=timeout_s)
    except (SageError, TimeoutError) as exc:
        return ExplainerRun(policy, [], time.perf_counter() - start, f"{type(exc).__name__}: {exc}")
    seconds = time.perf_counter() - start
    out = [Explained(e.feature_id, e.description, [(lb.name, lb.description) for lb in e.labels], e.triage_class,
                     e.error, e.usage.prompt_tokens, e.usage.completion_tokens, e.usage.cost_usd)
           for e in explanations]
    return ExplainerRun(policy, out, seconds)


def run_single_pass(sage: Sage, sae: str, features: Sequence[int], base_url: str, model: str,
                    usd_per_mtok: tuple[float, float] = (0.0, 0.0)) -> ExplainerRun:
    """The scoring service's single-pass baseline on the agent's exemplars (top 10 of the exemplar split)."""
    if not base_url or not model:
        return ExplainerRun("single_pass", [], 0.0, "single_pass needs an LLM: give --llm-base-url and --llm-model")
    import numpy as np

    from sagex.llm import LLMBackend, LLMConfig, LLMError
    from sagex.remote.traces import Trace
    from sagex.scoring.baseline import SinglePassExplainer

    backend = LLMBackend(LLMConfig(base_url=base_url, model=model, prompt_usd_per_mtok=usd_per_mtok[0],
                                   completion_usd_per_mtok=usd_per_mtok[1]), config_section="--llm-base-url")
    explainer = SinglePassExplainer(backend)
    start = time.perf_counter()
    out = []
    for fx in sage.activation.exemplars(sae, list(features), top_k=10):
        traces = [Trace(e.text, (), e.tokens, frozenset(), np.asarray(e.values, np.float32)) for e in fx.top]
        item = Explained(fx.feature_id)
        try:
            result = asyncio.run(explainer.explain(traces))
            item.description = result.text
            item.labels = [(result.text, "")]
            item.prompt_tokens, item.completion_tokens = result.usage.prompt_tokens, result.usage.completion_tokens
            item.cost_usd = result.usage.cost_usd
        except ValueError as exc:  # a dead feature: nothing to explain from
            item.triage_class, item.description = "dead", f"Dead feature: {exc}"
        except LLMError as exc:
            item.error = f"{type(exc).__name__}: {exc}"
        out.append(item)
    return ExplainerRun("single_pass", out, time.perf_counter() - start)
