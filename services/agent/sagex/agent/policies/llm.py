"""The LLM policy: each SAGE step is one JSON-answering call to an OpenAI-compatible
model, built from the structured state. Hypotheses are designed and judged
concurrently, each in its own context. A malformed answer is re-asked with the
validator's message; a step that still fails fails the feature, with the reason."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import structlog

from sagex.agent.budget import CONCLUSION_RESERVE, Budget
from sagex.agent.policies import prompts
from sagex.agent.policies.base import BudgetSpent, StepFailed
from sagex.agent.state import (
    Conclusion,
    EvidenceItem,
    Expect,
    Hypothesis,
    Label,
    Probe,
    ProbeDraft,
    RunState,
    Status,
    Verdict,
)
from sagex.agent.steering import SteeringPrediction
from sagex.llm.backend import LLMBackend, MalformedAnswer, Usage

log = structlog.get_logger(__name__)

T = TypeVar("T")
MAX_PROBE_CHARS = 300
PROBES_PER_ROUND = 2


def _str(limit: int) -> dict[str, Any]:
    # maxLength is enforced by servers that turn the schema into a grammar (llama.cpp): a
    # small model otherwise fills one string up to the output-token limit, and the JSON is cut.
    return {"type": "string", "maxLength": limit}


_EXPECT = {"type": "string", "enum": ["fires", "silent"]}
_PROBE: dict[str, Any] = {"type": "object", "properties": {"text": _str(MAX_PROBE_CHARS), "expected": _EXPECT,
                                           "rationale": _str(200)},
          "required": ["text", "expected"]}
SCHEMAS: dict[str, dict[str, Any]] = {
    "steering": {"type": "object", "required": ["effect", "tokens"], "properties": {
        "effect": _str(300), "tokens": {"type": "array", "maxItems": 20, "items": _str(60)}}},
    "hypotheses": {"type": "object", "required": ["hypotheses"], "properties": {
        "observations": _str(300),
        "hypotheses": {"type": "array", "items": {"type": "object", "required": ["text", "is_control"],
                       "properties": {"text": _str(300), "is_control": {"type": "boolean"}}}}}},
    "probes": {"type": "object", "required": ["probes"], "properties": {"probes": {"type": "array", "items": _PROBE}}},
    "verdict": {"type": "object", "required": ["status", "reason"], "properties": {
        "status": {"type": "string", "enum": ["CONFIRMED", "REFUTED", "REFINED", "PENDING"]},
        "reason": _str(300), "refined_text": _str(300)}},
    "review": {"type": "object", "required": ["probes"], "properties": {
        "assessment": _str(300),
        "probes": {"type": "array", "items": {**_PROBE, "properties": {**_PROBE["properties"],
                                                                         "hypothesis_id": {"type": "integer"}},
                                              "required": ["hypothesis_id", "text", "expected"]}}}},
    "conclusion": {"type": "object", "required": ["description", "labels"], "properties": {
        "description": _str(300),
        "labels": {"type": "array", "maxItems": 5, "items": {"type": "object", "required": ["name", "description"],
                                                             "properties": {"name": _str(80),
                                                                            "description": _str(200)}}},
        "evidence": {"type": "array", "maxItems": 10, "items": {"type": "object", "properties": {
            "probe_id": {"type": "integer"}, "hypothesis_id": {"type": "integer"}, "supports": {"type": "boolean"}}}}}},
}


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object")
    return value


def _text(value: Any, field: str, limit: int = 2000) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f'"{field}" must be a non-empty string')
    if len(value) > limit:
        raise ValueError(f'"{field}" is {len(value)} characters; keep it under {limit}')
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from \ud800-style escapes
        raise ValueError(f'"{field}" is not valid Unicode text') from None
    return value.strip()


def _int(value: Any, field: str) -> int:
    if type(value) is not int:  # bool and 1.0 are not ids
        raise ValueError(f'"{field}" must be an integer, got {value!r}')
    return value


def _draft(item: Any, hid: int, where: str) -> ProbeDraft:
    item = _obj(item, where)
    text = _text(item.get("text"), f"{where}.text", MAX_PROBE_CHARS)
    expected = item.get("expected")
    if expected not in ("fires", "silent"):
        raise ValueError(f'{where}.expected must be "fires" or "silent", got {expected!r}')
    rationale = item.get("rationale") if isinstance(item.get("rationale"), str) else ""
    return ProbeDraft(hid, text, Expect(expected), rationale[:300])


async def _gather_within_budget(calls: list[Awaitable[T]]) -> list[T]:
    """Run per-hypothesis calls concurrently; keep what fit in the budget. Only
    when none fit does the refusal reach the loop (which then concludes)."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    kept = [r for r in results if not isinstance(r, BudgetSpent)]
    for r in kept:
        if isinstance(r, BaseException):
            raise r
    if not kept and results:
        raise next(r for r in results if isinstance(r, BudgetSpent))
    return kept  # type: ignore[return-value]


class LLMPolicy:
    name = "openai"

    def __init__(self, backend: LLMBackend, model: str, budget: Budget, attempts: int = 3) -> None:
        self.backend = backend
        self.model = model
        self.budget = budget
        self.attempts = attempts
        self._usage = Usage()
        self._inflight = 0  # tokens claimed by calls under way
        self.spent: str | None = None  # the budget that refused a call, once one has
        # Every call's messages and answer, for audits and for comparing prompt
        # sizes with a whole-history design (benchmarks/agent.py).
        self.transcript: list[tuple[list[dict[str, str]], str]] = []

    def usage(self) -> Usage:
        return self._usage

    def _estimate(self, prompt: str) -> int:
        """Tokens the next call will likely cost: the mean of past calls, or a
        rough count of the prompt plus the output limit before the first."""
        if self._usage.calls:
            return self._usage.total_tokens // self._usage.calls
        return len(prompt) // 3 + self.backend.config.max_output_tokens // 2

    def _cut_off(self, messages: list[dict[str, str]]) -> Usage:
        """A call whose answer never came: one call, its prompt tokens estimated (about 3
        characters a token), no completion tokens."""
        tokens = sum(len(m["content"]) for m in messages) // 3
        return Usage(prompt_tokens=tokens, cost_usd=self.backend.config.cost_usd(tokens, 0), calls=1)

    def _reserve(self, step: str, prompt: str) -> int:
        """Claim budget for one call, or refuse it. All steps but the conclusion
        stop at 1 - CONCLUSION_RESERVE of the budgets, so the conclusion can
        always be written; calls in flight count, so concurrent steps cannot
        overshoot together."""
        share = 1.0 if step == "conclude" else 1.0 - CONCLUSION_RESERVE
        estimate = self._estimate(prompt)
        reason = self.spent
        if self._usage.total_tokens + self._inflight + estimate > self.budget.max_llm_tokens * share:
            reason = reason or "max_llm_tokens"
        price = self.backend.config.cost_usd(estimate, 0)
        if self.budget.max_cost_usd and self._usage.cost_usd + price > self.budget.max_cost_usd * share:
            reason = reason or "max_cost_usd"
        if reason and step == "conclude":
            if self._usage.total_tokens < self.budget.max_llm_tokens:  # try: the estimate may be pessimistic
                reason = None
            else:
                raise StepFailed(step, f"the {reason} budget was spent before the conclusion could be written")
        if reason:
            self.spent = reason
            raise BudgetSpent(reason)
        self._inflight += estimate
        return estimate

    async def _ask(self, step: str, prompt: str, schema: str, parse: Callable[[Any], T]) -> T:
        claimed = self._reserve(step, prompt)
        try:
            return await self._call(step, prompt, schema, parse)
        finally:
            self._inflight -= claimed

    async def _call(self, step: str, prompt: str, schema: str, parse: Callable[[Any], T]) -> T:
        messages = [{"role": "system", "content": prompts.SYSTEM}, {"role": "user", "content": prompt}]
        answers: list[Any] = []

        def keep(obj: Any) -> T:
            answers.append(obj)
            return parse(obj)

        def spend(usage: Usage) -> None:  # every call as it returns, rejected answers included
            self._usage = self._usage + usage

        try:
            value, _ = await self.backend.ask_json(messages, keep, schema=SCHEMAS[schema], schema_name=schema,
                                                   attempts=self.attempts, model=self.model, on_usage=spend)
        except MalformedAnswer as exc:
            raise StepFailed(step, f"the model gave no valid answer in {exc.attempts} attempts: {exc.reason}") \
                from None
        except asyncio.CancelledError:
            # Cut off in flight (the wall-clock budget ended the feature): the endpoint has the
            # prompt and may bill it, so the call counts, with its prompt's estimated tokens.
            self._usage = self._usage + self._cut_off(messages)
            raise
        self.transcript.append((messages, json.dumps(answers[-1]) if answers else ""))
        return value

    # -- steps --------------------------------------------------------------------

    async def hypothesize(self, state: RunState, count: int) -> list[Hypothesis]:
        def parse(obj: Any) -> list[Hypothesis]:
            items = _obj(obj, "the answer").get("hypotheses")
            want = f'"hypotheses" must be a list of exactly {count} items, exactly one of them the control'
            if not isinstance(items, list) or not items:
                raise ValueError(want)
            drafts = []
            for i, item in enumerate(items):
                item = _obj(item, f"hypotheses[{i}]")
                drafts.append((_text(item.get("text"), f"hypotheses[{i}].text", 500), item.get("is_control") is True))
            controls = [d for d in drafts if d[1]]
            real = [d for d in drafts if not d[1]]
            if not controls:
                raise ValueError(f'{want} ("is_control": true); none is marked')
            if not real:
                raise ValueError(f"{want}; all {len(controls)} are marked as controls, so none says where the "
                                 "feature fires")
            # Small models often mark several controls. A control claims where the feature is
            # silent, so an extra one cannot stand in for a hypothesis: the first is kept and
            # the others dropped; nothing is rewritten. Fewer hypotheses than asked are tested
            # as they are; extras beyond the requested count are dropped, never the control.
            if len(controls) > 1 or len(real) < count - 1:
                log.info("hypotheses_trimmed", asked=count, hypotheses=len(real), controls=len(controls))
            kept = real[: count - 1] + controls[:1]
            return [Hypothesis(i, text, control) for i, (text, control) in enumerate(kept, 1)]

        return await self._ask("hypothesize", prompts.hypothesize(state, count), "hypotheses", parse)

    async def design(self, state: RunState, hypotheses: Sequence[Hypothesis], probes_left: dict[int, int]) -> list[
            ProbeDraft]:
        async def one(h: Hypothesis) -> list[ProbeDraft]:
            limit = min(PROBES_PER_ROUND, probes_left.get(h.id, 0))
            done = {p.draft.text for p in state.probes_of(h.id)}

            def parse(obj: Any) -> list[ProbeDraft]:
                items = _obj(obj, "the answer").get("probes")
                if not isinstance(items, list) or not items:
                    raise ValueError('"probes" must be a non-empty list')
                drafts = [_draft(item, h.id, f"probes[{i}]") for i, item in enumerate(items[:limit])]
                if all(d.text in done for d in drafts):
                    raise ValueError("every probe repeats an earlier one; write new texts")
                return drafts

            return await self._ask(f"design H{h.id}", prompts.design(state, h, limit), "probes", parse)

        results = await _gather_within_budget([one(h) for h in hypotheses])
        return [d for drafts in results for d in drafts]

    async def judge(self, state: RunState, hypotheses: Sequence[Hypothesis], new: Sequence[Probe]) -> list[Verdict]:
        async def one(h: Hypothesis) -> Verdict:
            mine = [p for p in new if p.draft.hypothesis_id == h.id]

            def parse(obj: Any) -> Verdict:
                obj = _obj(obj, "the answer")
                status = obj.get("status")
                if status not in ("CONFIRMED", "REFUTED", "REFINED", "PENDING"):
                    raise ValueError(f'"status" must be CONFIRMED, REFUTED, REFINED or PENDING, got {status!r}')
                reason = _text(obj.get("reason"), "reason")
                refined = obj.get("refined_text") if isinstance(obj.get("refined_text"), str) else ""
                if status == "REFINED" and not refined.strip():
                    raise ValueError('a REFINED verdict needs the corrected hypothesis in "refined_text"')
                return Verdict(h.id, Status(status), reason, refined.strip()[:500])

            return await self._ask(f"judge H{h.id}", prompts.judge(state, h, mine), "verdict", parse)

        return await _gather_within_budget([one(h) for h in hypotheses])

    async def review(self, state: RunState, probes_left: dict[int, int]) -> list[ProbeDraft]:
        known = {h.id for h in state.hypotheses}

        def parse(obj: Any) -> list[ProbeDraft]:
            items = _obj(obj, "the answer").get("probes")
            if not isinstance(items, list):
                raise ValueError('"probes" must be a list (empty when no more testing is needed)')
            drafts = []
            for i, item in enumerate(items):
                hid = _int(_obj(item, f"probes[{i}]").get("hypothesis_id"), f"probes[{i}].hypothesis_id")
                if hid not in known:
                    raise ValueError(f"probes[{i}].hypothesis_id {hid!r} is not one of {sorted(known)}")
                drafts.append(_draft(item, hid, f"probes[{i}]"))
            return drafts

        return await self._ask("review", prompts.review(state, probes_left), "review", parse)

    async def conclude(self, state: RunState) -> Conclusion:
        probes = {p.id: p for p in state.probes}

        def parse(obj: Any) -> Conclusion:
            obj = _obj(obj, "the answer")
            description = _text(obj.get("description"), "description")
            labels_raw = obj.get("labels")
            if not isinstance(labels_raw, list):
                raise ValueError('"labels" must be a list')
            labels = [Label(_text(_obj(x, f"labels[{i}]").get("name"), f"labels[{i}].name", 120),
                            _text(x.get("description"), f"labels[{i}].description", 600))
                      for i, x in enumerate(labels_raw)]
            evidence = []
            for i, item in enumerate(obj.get("evidence") or []):
                item = _obj(item, f"evidence[{i}]")
                p = probes.get(_int(item.get("probe_id"), f"evidence[{i}].probe_id"))
                if p is None:
                    # A citation of a probe that does not exist (small models invent numbers) is
                    # dropped: the evidence kept is only ever a measured probe, nothing is made up.
                    log.info("evidence_dropped", probe_id=item.get("probe_id"), probes=len(probes))
                    continue
                # The activation is the measured one, never a number the model wrote.
                evidence.append(EvidenceItem(p.draft.text, p.activation, p.draft.hypothesis_id,
                                             bool(item.get("supports", p.as_expected))))
            return Conclusion(description, labels, evidence)

        return await self._ask("conclude", prompts.conclude(state), "conclusion", parse)

    async def predict_steering(self, state: RunState) -> SteeringPrediction | None:
        """The model's prediction of what amplifying the feature makes the model write."""

        def parse(obj: Any) -> SteeringPrediction:
            obj = _obj(obj, "the answer")
            effect = _text(obj.get("effect"), "effect", 300)
            raw = obj.get("tokens")
            words = tuple(dict.fromkeys(w.strip().lower() for w in raw if isinstance(w, str) and w.strip().isalpha())) \
                if isinstance(raw, list) else ()
            if not 1 <= len(words) <= 20:
                raise ValueError('"tokens" must list 1 to 20 single lowercase words')
            return SteeringPrediction(effect, words, 0, "the model's prediction")

        return await self._ask("predict_steering", prompts.predict_steering(state), "steering", parse)
