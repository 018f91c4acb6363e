"""Predictive accuracy (SAGE, after OpenAI's explain-simulate-score): an LLM reads the
explanation and predicts the feature's activation, 0-10, on every token of held-out
windows; the score is Pearson r between the predictions and 10·a/G.

* Held-out texts: ``per_band`` windows from each activation-quantile band plus
  ``non_activating`` silent windows (a seeded subset of the shared held-out sample),
  each with its real context and tokenisation.
* One call per text simulates the whole sequence: the tokens are listed with their
  index and the model answers a JSON array of integers, one per token.
* Read-out: with logprobs, each prediction is the expected value over the digit
  tokens at its position; without them ("auto" falls back, "logprobs" refuses) the
  written integer. A token with no readable prediction is missing, never 0.
* Truth: 10·a_t/G over content tokens (special tokens and position 0 excluded), G
  the feature's maximum in the exemplar split; not clipped.
* r is pooled over all predicted tokens; its 95 % interval resamples whole texts
  (tokens of one text are not independent). n counts tokens.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import numpy as np

from sagex.llm import LLMBackend
from sagex.remote.traces import Trace
from sagex.scoring.errors import ScorerFailed
from sagex.scoring.readout import read_array
from sagex.scoring.result import Metric
from sagex.scoring.scorers.base import Meter, Scorer, ScorerOutput, ScoringInput, Toolkit, register
from sagex.scoring.stats import bootstrap_ci, pearson

READOUTS = ("auto", "logprobs", "sampled")
SCALE = range(11)

SYSTEM = (
    "You simulate one feature of a language model. Given an explanation of what the feature responds to, you "
    "predict how strongly it activates on each token of a text, as an integer from 0 (not at all) to 10 (as "
    "strongly as it ever does). Most tokens of most texts are 0. Answer with a JSON array of integers only."
)


@dataclass(frozen=True)
class PredictiveSettings:
    per_band: int = 3  # held-out windows per quantile band
    non_activating: int = 6  # silent held-out windows
    readout: str = "auto"  # auto: logprobs when the endpoint gives them, else written integers
    top_logprobs: int = 20
    attempts: int = 2  # calls per text when the answer has the wrong number of entries

    def __post_init__(self) -> None:
        if self.readout not in READOUTS:
            raise ValueError(f"predictive.readout: {self.readout!r} is not one of {READOUTS}")
        if self.per_band < 1 or self.non_activating < 0 or self.attempts < 1:
            raise ValueError("predictive: per_band >= 1, non_activating >= 0 and attempts >= 1 are required")


@dataclass(frozen=True)
class Simulation:
    predictions: list[float | None]  # one per shown token
    from_logprobs: list[bool]
    aligned: bool  # False: no attempt gave one entry per token


def prompt(explanation: str, tokens: list[str]) -> str:
    listing = "\n".join(f"{i}\t{json.dumps(tok)}" for i, tok in enumerate(tokens))
    return (
        f"Explanation of the feature: {explanation}\n\n"
        f"The text, one token per line (index, then the token as a JSON string):\n{listing}\n\n"
        f"Reply with a JSON array of exactly {len(tokens)} integers from 0 to 10: the i-th is the feature's "
        "activation on token i."
    )


class PredictiveScorer(Scorer):
    name = "predictive"

    def __init__(self, toolkit: Toolkit, settings: PredictiveSettings) -> None:
        self.toolkit = toolkit
        self.settings = settings

    async def score(self, task: ScoringInput, meter: Meter) -> ScorerOutput:
        llm = self.toolkit.need_llm(self.name)
        reference = await task.data.reference()
        sample = (await task.data.checked_heldout()).subset(self.settings.per_band, self.settings.non_activating,
                                                            task.seed)
        traces = [*sample.activating, *sample.non_activating]
        sims = await self.toolkit.gather_limited(
            [functools.partial(self._simulate, llm, task.explanation, t, meter) for t in traces])

        truth, pred, from_lp, text_of, missing = [], [], [], [], []
        for i, (trace, sim) in enumerate(zip(traces, sims, strict=True)):
            content = set(trace.content_positions)
            for k, position in enumerate(_shown(trace)):
                if position not in content:
                    continue
                p = sim.predictions[k]
                missing.append(p is None)
                text_of.append(i)
                truth.append(10.0 * float(trace.values[position]) / reference.global_max)
                pred.append(math.nan if p is None else p)
                from_lp.append(sim.from_logprobs[k])
        y, yhat = np.array(truth), np.array(pred)
        texts, miss, lp = np.array(text_of), np.array(missing), np.array(from_lp)
        have = ~miss
        if have.sum() < 2:
            raise ScorerFailed(grpc.StatusCode.FAILED_PRECONDITION,
                               f"the simulator gave usable predictions for {int(have.sum())} of {len(y)} tokens")

        def r(idx: np.ndarray) -> float:
            keep = idx[have[idx]]
            return pearson(y[keep], yhat[keep])

        def share(mask: np.ndarray, among: np.ndarray) -> Callable[[np.ndarray], float]:
            return lambda idx: float(mask[idx][among[idx]].mean()) if among[idx].any() else math.nan

        everyone = np.ones(len(y), bool)
        seed = task.seed
        metrics = [
            Metric("pearson_r", pearson(y[have], yhat[have]), bootstrap_ci(r, len(y), seed=seed, clusters=texts),
                   int(have.sum())),
            Metric("missing_rate", float(miss.mean()),
                   bootstrap_ci(share(miss, everyone), len(y), seed=seed, clusters=texts), len(y)),
            Metric("logprob_fraction", float(lp[have].mean()),
                   bootstrap_ci(share(lp, have), len(y), seed=seed, clusters=texts), int(have.sum())),
        ]
        details = {
            "global_max": reference.global_max, "texts": len(traces), "activating_texts": len(sample.activating),
            "non_activating_texts": len(sample.non_activating), "tokens": len(y),
            "misaligned_texts": sum(not s.aligned for s in sims),
            "readout": "logprobs" if lp[have].all() else ("sampled" if not lp[have].any() else "mixed"),
        }
        return ScorerOutput(metrics, details)

    async def _simulate(self, llm: LLMBackend, explanation: str, trace: Trace, meter: Meter) -> Simulation:
        tokens = [trace.tokens[i] for i in _shown(trace)]
        want_lp = self.settings.readout != "sampled"
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt(explanation, tokens)}]
        for _ in range(self.settings.attempts):
            completion = await self.toolkit.complete(llm, messages, max_tokens=4 * len(tokens) + 32,
                                                     top_logprobs=self.settings.top_logprobs if want_lp else None)
            meter.add(completion.usage)
            if self.settings.readout == "logprobs" and completion.logprobs is None:
                raise ScorerFailed(grpc.StatusCode.FAILED_PRECONDITION,
                                   f"{llm.base_url} returned no logprobs (or refuses them) and predictive.readout "
                                   "is 'logprobs'; use an endpoint with logprobs or readout 'auto' "
                                   "(written integers)")
            entries = read_array(completion.text, completion.logprobs if want_lp else None, SCALE)
            if entries is not None and len(entries) == len(tokens):
                return Simulation([e.expected for e in entries], [e.distribution is not None for e in entries], True)
            got = "no JSON array" if entries is None else f"{len(entries)} entries"
            messages = [*messages, {"role": "assistant", "content": completion.text or "(no answer)"},
                        {"role": "user", "content": f"Your reply had {got}; the text has {len(tokens)} tokens. "
                                                    f"Reply with a JSON array of exactly {len(tokens)} integers."}]
        return Simulation([None] * len(tokens), [False] * len(tokens), False)


def _shown(trace: Trace) -> list[int]:
    """Positions shown to the simulator: every non-special token, in order."""
    return [i for i in range(len(trace.tokens)) if i not in trace.special]


@register("predictive", PredictiveSettings)
def _build(toolkit: Toolkit, settings: PredictiveSettings) -> PredictiveScorer:
    return PredictiveScorer(toolkit, settings)


__all__ = ["PredictiveScorer", "PredictiveSettings", "prompt"]
