"""Probe sentences built without an LLM: a word in fresh contexts, minimal pairs
that swap one word, and neutral controls. Each call takes a ``salt`` (the round)
so a hypothesis tested again meets new sentences."""

from __future__ import annotations

import re

# Frames around a word: (before, after). The word carries its own leading space.
FRAMES = [
    ("I wrote down", " again yesterday."),
    ("Nobody expected", " to matter so much."),
    ("In the old report,", " was mentioned twice."),
    ("She paused and said", " quietly."),
    ("Here is a short list:", ", and a few more."),
    ("We argued about", " until midnight."),
    ("The teacher underlined", " in red ink."),
    ("Later that week", " came up again."),
]

NEUTRAL = [
    "The weather was mild and the streets were quiet this morning.",
    "He poured a cup of coffee and opened the window.",
    "Our meeting moved to Thursday afternoon at three.",
    "The train left the station a few minutes late.",
    "She planted tomatoes along the fence behind the house.",
    "Please close the door when you leave the room.",
]

# Words that stand in for a tested word in a minimal pair, by character class.
SUBSTITUTES = {
    "number": [" seven", " many"],
    "punctuation": [" and", " then"],
    "capitalized word": [" Paris", " Monday"],
    "lowercase word": [" table", " garden"],
    "newline": [" then", " and"],
    "whitespace": [" then", " and"],
}

CLASS_MEMBERS = {
    "number": [" 42", " 1987", " 3", " 250"],
    "punctuation": [";", ":", "!", "?"],
    "capitalized word": [" London", " Tuesday", " Maria", " Amazon"],
    "lowercase word": [" river", " window", " quickly", " seven"],
    "newline": ["\n", "\n\n"],
    "whitespace": ["  ", "\t"],
}


def as_word(word: str) -> str:
    """Give a bare word a leading space so frames read naturally."""
    return word if not word[:1].isalnum() else " " + word


def in_frames(word: str, count: int, salt: int) -> list[str]:
    w = as_word(word)
    return [FRAMES[(salt * count + i) % len(FRAMES)][0] + w + FRAMES[(salt * count + i) % len(FRAMES)][1]
            for i in range(count)]


def neutral(count: int, salt: int, avoid: str = "") -> list[str]:
    """Neutral sentences without the word ``avoid`` (matched as a whole word)."""
    word = re.compile(rf"\b{re.escape(avoid.strip())}\b", re.IGNORECASE) if avoid.strip() else None
    pool = [t for t in NEUTRAL if word is None or not word.search(t)] or NEUTRAL
    return [pool[(salt * count + i) % len(pool)] for i in range(count)]


def substitute(context: str, token: str, cls: str, salt: int, replacement: str = "") -> str:
    """``context`` with the word holding its last ``token`` swapped for a neutral word
    (the whole word, so a sub-word token does not leave half a word behind)."""
    options = [s for s in SUBSTITUTES.get(cls, [" thing"]) if s.strip().lower() != token.strip().lower()]
    replacement = replacement or (options[salt % len(options)] if options else " thing")
    at = context.rfind(token)
    if at < 0:
        return context
    start, end = at, at + len(token)
    if token[:1].isalnum():
        while start > 0 and context[start - 1].isalnum():
            start -= 1
    while end < len(context) and context[end].isalnum():
        end += 1
    if start > 0 and context[start - 1].isspace() and replacement[:1].isspace():
        start -= 1
    return context[:start] + replacement + context[end:]
