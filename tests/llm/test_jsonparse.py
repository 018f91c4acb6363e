from __future__ import annotations

import pytest

from sagex.llm.jsonparse import extract_json


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ("  [1, 2]\n", [1, 2]),
        ('```json\n{"a": 1}\n```', {"a": 1}),
        ('```\n{"a": 1}\n```', {"a": 1}),
        ('Here you go:\n```json\n{"a": [1, {"b": 2}]}\n```\nHope that helps!', {"a": [1, {"b": 2}]}),
        ('Sure! The answer is {"a": 1} as requested.', {"a": 1}),
        ('{"a": 1}\n\nExplanation: the value is 1.', {"a": 1}),
        ('{"a": 1} {"a": 2}', {"a": 1}),
        (
            '{"s": "braces } and { and ] inside", "t": {"u": "[x"}}',
            {"s": "braces } and { and ] inside", "t": {"u": "[x"}},
        ),
        ('prefix {"s": "escaped \\" quote }", "n": 2} suffix', {"s": 'escaped " quote }', "n": 2}),
        ('{"a": [1, 2,], "b": 3,}', {"a": [1, 2], "b": 3}),
        ('{not json} then {"a": 1}', {"a": 1}),
    ],
)
def test_extracts(text: str, expected: object) -> None:
    assert extract_json(text) == expected


def test_prefers_the_type_the_schema_asks_for() -> None:
    text = 'See note [1]. Answer: {"label": "x"}'
    assert extract_json(text) == [1]
    assert extract_json(text, prefer=dict) == {"label": "x"}
    assert extract_json("[1, 2]", prefer=dict) == [1, 2]  # nothing better: the caller's validator decides


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("I cannot answer that.", "no JSON object or array"),
        ('{"a": 1, "b": [2, 3', "never closed"),
        ("{'a': 1}", "invalid JSON"),
        ('{"a": tru}', "invalid JSON"),
    ],
)
def test_reasons(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        extract_json(text)
