"""HELD-OUT concepts of the planted benchmark.

DO NOT READ THIS FILE IF YOU WORK ON AN EXPLAINER (a policy, a prompt, a
heuristic, a judge). These concepts exist to measure explainers on features
nobody tuned against; once an explainer's author has looked at them, the
held-out numbers of that explainer mean nothing. Run them only through
``--concepts heldout`` (or ``all``) and report the numbers; do not quote the
concepts, their templates or their key terms in issues or prompts.
"""

from __future__ import annotations

import random

from sagex.activation.planted.concepts import AMBIGUOUS, Concept, Doc, fill, state, tokens, word_set, words
from sagex.activation.planted.dev import ADJ, NAMES, NOUNS, PAST, VERBS

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
COLOURS = ("red", "blue", "green", "yellow", "black", "white", "purple", "orange", "brown", "grey", "gray", "pink",
           "scarlet", "crimson", "violet")
UN_WORDS = ("unhappy", "unable", "unknown", "unusual", "unlikely", "unfair", "unclear", "undone", "unseen",
            "unexpected", "unlike", "unkind", "unwise", "unsure", "untrue", "unclean", "unholy", "unjust",
            "unequal", "unfit", "unpaid", "unsafe", "unused", "unwilling", "unbroken", "uncertain")
UN_NEGATIVES = ("under", "until", "unit", "united", "universe", "union", "unique", "uncle", "universal", "unto",
                "understand", "understood", "undertake", "university", "unify")


def _weekday_templates(rng: random.Random) -> list[str]:
    frames = ["{name} will {verb} the {noun} on {day}.", "Every {day} the {noun} was {adj}.",
              "On the {ord} day the {noun} was {adj}.", "{name} came back the next day.",
              "The {noun} opens daily at nine.", "Sundays and {day}s are quiet."]
    slots = {"name": NAMES, "verb": VERBS, "noun": NOUNS, "day": WEEKDAYS, "adj": ADJ,
             "ord": ("first", "second", "third", "last")}
    return fill(rng, frames, slots, 50)


def _colour_templates(rng: random.Random) -> list[str]:
    frames = ["The {colour} {noun} stood by the {noun}.", "{name} painted the {noun} {colour}.",
              "The {adj} {noun} stood by the {noun}.", "{name} read the {noun} and {past} it.",
              "A {colour} and {colour} {noun}."]
    slots = {"colour": COLOURS, "noun": NOUNS, "name": NAMES, "adj": ADJ, "past": PAST}
    return fill(rng, frames, slots, 50)


def _un_templates(rng: random.Random) -> list[str]:
    frames = ["The {noun} was {un}.", "{name} felt {un} about the {noun}.", "{name} sat under the {noun}.",
              "Wait until the {noun} is ready.", "The union built a unique {noun}.", "{name} was {adj} and {un}."]
    slots = {"noun": NOUNS, "un": UN_WORDS, "name": NAMES, "adj": ADJ}
    return fill(rng, frames, slots, 50)


def _inside_brackets(doc: Doc) -> object:
    def inside(before: str) -> bool | None:
        depth = 0
        for ch in before:
            depth = depth + 1 if ch == "[" else max(0, depth - 1) if ch == "]" else depth
        return depth > 0

    labels = state(doc, inside)
    for i in range(len(doc)):
        if any(c in doc.token(i) for c in "[]"):
            labels[i] = AMBIGUOUS
    return labels


def _brackets_templates(rng: random.Random) -> list[str]:
    frames = ["The {noun} [a {adj} {noun}] was {past}.", "items = [{n}, {n}, {n}] and the {noun}.",
              "{name} [sic] {past} the {noun}.", "The {noun} (a {adj} {noun}) was {past}.",
              "The {noun} was {adj} and {past}."]
    slots = {"noun": NOUNS, "adj": ADJ, "past": PAST, "name": NAMES, "n": [str(i) for i in range(1, 30)]}
    return fill(rng, frames, slots, 50)


def _after_of(doc: Doc) -> object:
    return tokens(doc, lambda d, i: i > 0 and d.token(i - 1).strip().lower() == "of")


def _of_templates(rng: random.Random) -> list[str]:
    frames = ["The {noun} of the {noun} was {adj}.", "A box of {noun}s sat near the {noun}.",
              "{name} went off to the {noun}.", "Most of {name}'s {noun}s were {adj}.", "The {noun} for the {noun}."]
    slots = {"noun": NOUNS, "adj": ADJ, "name": NAMES}
    return fill(rng, frames, slots, 50)


def _capitalised(doc: Doc) -> object:
    def rule(d: Doc, i: int) -> bool | None:
        start, end = d.spans[i]
        tok = d.text[start:end]
        stripped = tok.lstrip()
        if not stripped or not stripped[0].isalpha():
            return False
        first = start + len(tok) - len(stripped)
        if first > 0 and d.text[first - 1].isalpha():
            return False
        before = d.text[:first].rstrip()
        if not before or before[-1] in ".!?\n:\"'":
            return None  # sentence starts are capitalised anyway
        if stripped == "I" or stripped.isupper() and len(stripped) > 1:
            return None
        return stripped[0].isupper()

    return tokens(doc, rule)


def _capital_templates(rng: random.Random) -> list[str]:
    frames = ["Yesterday {name} met {name} near the {noun}.", "The {noun} was {adj}. The {noun} was {past}.",
              "We visited {place} with {name}.", "the {adj} {noun} and the {noun} {past}."]
    slots = {"name": NAMES, "noun": NOUNS, "adj": ADJ, "past": PAST,
             "place": ("Paris", "London", "Cairo", "Lima", "Oslo", "Rome")}
    return fill(rng, frames, slots, 50)


CONCEPTS: tuple[Concept, ...] = (
    Concept("weekday_name", "lexical", "The name of a day of the week (Monday ... Sunday).",
            (r"days? of the week", r"\bweekdays?\b", r"\bweekday names?"), lambda d: words(d, word_set(WEEKDAYS, True)),
            _weekday_templates),
    Concept("colour_word", "lexical", "A colour word (red, blue, green ...).", (r"\bcolou?rs?\b",),
            lambda d: words(d, word_set(COLOURS)), _colour_templates),
    Concept("un_prefix", "morphology", "A word with the negating prefix un- (unhappy, unknown).",
            (r"\bun-", r"prefix ['\"]?un", r"negat(ive|ing|ion) prefix", r"negated adjectives?"),
            lambda d: words(d, lambda w, _s: True if w.lower() in UN_WORDS else
                            (False if w.lower() in UN_NEGATIVES or not w.lower().startswith("un") else None)),
            _un_templates),
    Concept("inside_square_brackets", "structural", "Any token inside square brackets (after '[' before ']').",
            (r"square brackets?", r"\bbrackets?\b", r"\blists?\b"), _inside_brackets, _brackets_templates),
    Concept("after_of", "context", "The token right after the word 'of'.",
            (r"after (the word )?['\"]?of\b", r"follow(s|ing)? ['\"]?of\b", r"\bof\b.*object"), _after_of,
            _of_templates),
    Concept("capitalised_word", "position", "A capitalised word that does not start a sentence (a proper name).",
            (r"capitali[sz]ed", r"proper (names?|nouns?)", r"upper-?case"), _capitalised, _capital_templates),
)
