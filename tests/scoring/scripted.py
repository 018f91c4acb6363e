"""Scripted LLM behaviour for the FakeOpenAI server: a "reader" that believes the
explanation literally. Given 'the word "all"' it writes texts with "all",
predicts 10 on "all" tokens and 0 elsewhere, and says yes to texts (or marked
spans) containing "all", with logprobs like a confident model's when asked."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from tests.fakes.openai_server import Reply

WORD = re.compile(r'the word "([^"]+)"')

# Natural texts per feature word: (matching, contrasting). Contrasting texts say
# nearly the same thing without the word.
TEXTS: dict[str, tuple[list[str], list[str]]] = {
    "all": (
        ["We all went to the beach after lunch.", "Not all birds can fly.", "She read all of the letters twice.",
         "All the lights in the house were off.", "He gave all his money to charity.",
         "The test checks all files in the folder.", "Is that all you wanted to say?",
         "Once all tasks finish, the program exits."],
        ["We went to the beach after lunch.", "Some birds cannot fly.", "She read the letters twice.",
         "The lights in the house were off.", "He gave his money to charity.",
         "The test checks the files in the folder.", "Is that what you wanted to say?",
         "Once the tasks finish, the program exits."],
    ),
    "numbers": (
        ["The invoice lists 42 items at 3.50 each.", "Call me at 555 0199 after 6.", "In 1998 the town had 812 people.",
         "Add 7 and 15 to get 22.", "Chapter 12 starts on page 301.", "The score was 3 to 1 at halftime."],
        ["The invoice lists several items.", "Call me in the evening.", "Back then the town was small.",
         "Add the two values together.", "The chapter starts later in the book.", "The home team led at halftime."],
    ),
}


def user_text(body: dict[str, Any]) -> str:
    return [m["content"] for m in body["messages"] if m["role"] == "user"][0]


def target_of(body: dict[str, Any]) -> str:
    match = WORD.search(user_text(body))
    return match.group(1).lower() if match else ""


def _digit_logprobs(values: list[int], confident: float = 0.9) -> list[tuple[str, float, list[tuple[str, float]]]]:
    """Tokens spelling "[v1, v2, ...]" with alternatives at every value."""
    out: list[tuple[str, float, list[tuple[str, float]]]] = [("[", 0.0, [("[", 0.0)])]
    for i, v in enumerate(values):
        if i:
            out.append((", ", 0.0, [(", ", 0.0)]))
        other = "0" if v else "1"
        top = [(str(v), math.log(confident)), (other, math.log(1 - confident))]
        out.append((str(v), top[0][1], top))
    out.append(("]", 0.0, [("]", 0.0)]))
    return out


def answer(values: list[int | None], logprobs: bool) -> Reply:
    text = "[" + ", ".join("null" if v is None else str(v) for v in values) + "]"
    if not logprobs or any(v is None for v in values):
        lps = None
        if logprobs:  # "null" entries: spell them as single tokens without alternatives
            lps = [("[", 0.0, [("[", 0.0)])]
            for i, v in enumerate(values):
                if i:
                    lps.append((", ", 0.0, [(", ", 0.0)]))
                lps += _digit_logprobs([v])[1:-1] if v is not None else [("null", 0.0, [("null", 0.0)])]
            lps.append(("]", 0.0, [("]", 0.0)]))
        return Reply(content=text, logprobs=lps)
    return Reply(content=text, logprobs=_digit_logprobs([int(v) for v in values]))


def generative(body: dict[str, Any]) -> Reply:
    word = target_of(body) or "numbers"
    matching, contrasting = TEXTS.get(word, TEXTS["numbers"])
    return Reply(content=json.dumps({
        "matching": [{"text": t, "target": word} for t in matching],
        "contrast_description": f"the same sentences without the word {word}",
        "contrasting": contrasting,
    }))


def simulator(logprobs: bool = True, missing_at: int | None = None) -> Callable[[dict[str, Any]], Reply]:
    """Predicts 10 on tokens equal to the explained word, else 0."""

    def handler(body: dict[str, Any]) -> Reply:
        word = target_of(body)
        tokens = [json.loads(line.split("\t", 1)[1]) for line in user_text(body).splitlines()
                  if re.match(r"^\d+\t", line)]
        values: list[int | None] = [10 if word and tok.strip().lower() == word else 0 for tok in tokens]
        if missing_at is not None and missing_at < len(values):
            values[missing_at] = None
        return answer(values, logprobs and body.get("logprobs", False))

    return handler


def examples_of(body: dict[str, Any]) -> list[str]:
    return re.findall(r"Example \d+:\n(.*?)(?=\n\nExample \d+:|\n\nFor each example)", user_text(body), re.DOTALL)


def classifier(logprobs: bool = True) -> Callable[[dict[str, Any]], Reply]:
    """Detection: yes when the text has the word; fuzzing: yes when a marked span has it."""

    def handler(body: dict[str, Any]) -> Reply:
        word = target_of(body)
        marked = "marked <<like this>>" in body["messages"][0]["content"]
        values: list[int | None] = []
        for text in examples_of(body):
            where = " ".join(re.findall(r"<<(.*?)>>", text, re.DOTALL)) if marked else text
            values.append(int(bool(word) and re.search(rf"\b{re.escape(word)}\b", where, re.IGNORECASE) is not None))
        return answer(values, logprobs and body.get("logprobs", False))

    return handler
