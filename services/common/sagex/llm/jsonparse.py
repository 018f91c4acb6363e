"""Tolerant extraction of one JSON value from a model's reply.

Models wrap JSON in code fences, put prose around it or add trailing commas,
even when asked for JSON only. We take what is clearly meant and say precisely
why when there is nothing to take: that reason goes back to the model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)```", re.DOTALL)
_CLOSER = {"{": "}", "[": "]"}


def extract_json(text: str, prefer: type[dict] | type[list] | None = None) -> Any:
    """Return the JSON value the reply means, or raise ValueError with a reason.

    Tries, in order: the whole reply, the inside of each ``` fence, then every
    balanced top-level ``{...}`` / ``[...]`` in the text (brackets inside JSON
    strings do not count). Among parsed candidates the first of type ``prefer``
    wins (e.g. ``dict`` when the schema asks for an object, so a stray ``[1]`` in
    the prose is skipped); otherwise the first one parsed.
    """
    stripped = text.strip()
    if not stripped:
        raise ValueError("the reply is empty")
    first: list[Any] = []
    errors: list[str] = []
    for source in (stripped, *(m.group(1) for m in _FENCE.finditer(stripped))):
        try:
            value = _loads(source.strip())
        except ValueError:
            continue
        if prefer is None or isinstance(value, prefer):
            return value
        first.append(value)
    unclosed: int | None = None
    for start, candidate in _candidates(stripped):
        if candidate is None:
            unclosed = start if unclosed is None else unclosed
            continue
        try:
            value = _loads(candidate)
        except ValueError as e:
            errors.append(f"{e} (in the JSON starting at character {start})")
            continue
        if prefer is None or isinstance(value, prefer):
            return value
        first.append(value)
    if first:
        return first[0]
    if errors:
        raise ValueError(f"invalid JSON: {errors[0]}")
    if unclosed is not None:
        raise ValueError(f"the JSON starting at character {unclosed} is never closed (was the output cut off?)")
    raise ValueError("the reply contains no JSON object or array")


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        repaired = _drop_trailing_commas(text)
        if repaired == text:
            raise ValueError(e.msg + f" at line {e.lineno} column {e.colno}") from None
        try:
            return json.loads(repaired)
        except json.JSONDecodeError:
            raise ValueError(e.msg + f" at line {e.lineno} column {e.colno}") from None


def _candidates(text: str) -> Iterator[tuple[int, str | None]]:
    """Yield (start, text) of each balanced bracket run outside JSON strings;
    (start, None) for a run that is still open at the end of the text."""
    i = 0
    while i < len(text):
        if text[i] not in _CLOSER:
            i += 1
            continue
        end = _balanced_end(text, i)
        if end == -1:
            yield i, None
            i += 1
            continue
        if end is None:
            i += 1  # mismatched brackets: not JSON here, look further in
            continue
        yield i, text[i : end + 1]
        # A candidate that fails to parse may still contain one that does.
        i = end + 1 if _parses(text[i : end + 1]) else i + 1


def _outside_strings(text: str, start: int = 0) -> Iterator[tuple[int, str, bool]]:
    """(index, character, inside a JSON string) from ``start`` on; quotes and
    escapes inside strings are tracked so brackets in them are not structure."""
    in_string = escaped = False
    for i in range(start, len(text)):
        c = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
            yield i, c, True
            continue
        if c == '"':
            in_string = True
        yield i, c, in_string


def _balanced_end(text: str, start: int) -> int | None:
    """Index of the bracket closing text[start]; None on a mismatch, -1 if never closed."""
    stack = [_CLOSER[text[start]]]
    for i, c, in_string in _outside_strings(text, start + 1):
        if in_string:
            continue
        if c in _CLOSER:
            stack.append(_CLOSER[c])
        elif c in "}]":
            if c != stack.pop():
                return None
            if not stack:
                return i
    return -1


def _parses(text: str) -> bool:
    try:
        _loads(text)
    except ValueError:
        return False
    return True


def _drop_trailing_commas(text: str) -> str:
    """Remove commas directly before a closing bracket, outside strings."""
    out: list[str] = []
    for _, c, in_string in _outside_strings(text):
        if not in_string and c in "}]":
            while out and out[-1].isspace():
                out.pop()
            if out and out[-1] == ",":
                out.pop()
        out.append(c)
    return "".join(out)
