"""The single-pass baseline explainer, in the style of OpenAI's token-activation-pair
explainer (Neuronpedia's ``oai_token-act-pair``): the feature's top exemplar-split
windows with every token's activation, scaled to 0-10 by the largest activation
shown, go into one prompt; one short explanation comes back.

It sees exactly what the SAGE agent starts from (exemplar split, never held-out
data), so the two are scored on equal terms. With a response cache configured on
the LLM backend (temperature 0, fixed seed) the baseline is generated once and
replayed from then on, never regenerated behind the user's back.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sagex.llm import LLMBackend, MalformedAnswer, Usage
from sagex.remote.traces import Trace

SYSTEM = (
    "We study features of a sparse autoencoder trained on a language model's activations. Each feature looks for "
    "some particular thing in a short text. Look at the tokens where the feature activates and say in one short "
    "phrase what it is looking for. Do not list examples."
)
_LABEL = re.compile(r"^\s*(explanation|answer|the main thing (this|the) (feature|neuron) does is find)\s*[:\-]?\s*",
                    re.IGNORECASE)


@dataclass(frozen=True)
class BaselineSettings:
    top_k: int = 10  # windows shown
    max_chars: int = 300  # explanation length cap, the same for every explainer that is compared
    max_tokens: int = 80
    attempts: int = 2  # calls when the reply holds no usable phrase

    def __post_init__(self) -> None:
        if not 1 <= self.top_k <= 50 or self.max_chars < 10 or self.max_tokens < 1 or self.attempts < 1:
            raise ValueError("baseline: top_k in 1..50, max_chars >= 10, max_tokens >= 1 and attempts >= 1")


@dataclass(frozen=True)
class BaselineExplanation:
    text: str
    usage: Usage
    model: str
    windows_shown: int


def _tok(token: str) -> str:
    return token.replace("\n", "\\n").replace("\t", "\\t")


def prompt(traces: Sequence[Trace]) -> str:
    """Each window as token<TAB>activation lines, then its non-zero tokens again."""
    scale = max((t.max_activation for t in traces), default=0.0) or 1.0
    blocks = []
    for n, trace in enumerate(traces, 1):
        pairs = [(trace.tokens[i], round(10 * max(float(trace.values[i]), 0.0) / scale))
                 for i in range(len(trace.tokens)) if i not in trace.special]
        listing = "\n".join(f"{_tok(tok)}\t{act}" for tok, act in pairs)
        nonzero = "\n".join(f"{_tok(tok)}\t{act}" for tok, act in pairs if act > 0)
        blocks.append(f"Text {n}, token<TAB>activation (0-10):\n<start>\n{listing}\n<end>\n"
                      f"The same, non-zero activations only:\n<start>\n{nonzero}\n<end>")
    return ("\n\n".join(blocks) + "\n\nIn one short phrase, what does this feature look for? Reply with the "
            "phrase only.")


def parse_explanation(text: str, max_chars: int) -> str:
    """The first non-empty line, without labels or quotes; ValueError if none."""
    for line in text.splitlines():
        line = _LABEL.sub("", line.strip().strip("*")).strip().strip("*").strip()  # **Answer:** phrase
        if len(line) >= 2 and line[0] == line[-1] and line[0] in "\"'`":  # quoted whole
            line = line[1:-1].strip()
        if line:
            return line[:max_chars].rstrip()
    raise ValueError("the reply holds no explanation")


class SinglePassExplainer:
    name = "single_pass"

    def __init__(self, llm: LLMBackend, settings: BaselineSettings | None = None) -> None:
        self.llm = llm
        self.settings = settings or BaselineSettings()

    async def explain(self, exemplars: Sequence[Trace]) -> BaselineExplanation:
        """Explain from the top exemplar-split windows (highest first). Raises
        LLMUnavailable, or MalformedAnswer when no reply holds a phrase."""
        shown = [t for t in exemplars if t.max_activation > 0][: self.settings.top_k]
        if not shown:
            raise ValueError("no activating exemplars to explain from (a dead feature)")
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt(shown)}]
        spent, last = Usage(), ""
        for _ in range(self.settings.attempts):
            completion = await self.llm.complete(messages, max_tokens=self.settings.max_tokens)
            spent += completion.usage
            last = completion.text
            try:
                text = parse_explanation(completion.text, self.settings.max_chars)
            except ValueError:
                messages = [*messages, {"role": "assistant", "content": completion.text or "(no answer)"},
                            {"role": "user", "content": "Reply with one short phrase describing the feature."}]
                continue
            return BaselineExplanation(text, spent, completion.model, len(shown))
        raise MalformedAnswer("the reply holds no explanation", spent, self.settings.attempts, last)


__all__ = ["BaselineExplanation", "BaselineSettings", "SinglePassExplainer", "parse_explanation", "prompt"]
