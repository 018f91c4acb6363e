"""Concept labellers: causal, ambiguous where the text cannot tell, enough of every
kind, and user concepts from a JSONL file or an entry point (with clear errors)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest

from sagex.activation.planted.concepts import AMBIGUOUS, NEG, POS, Concept, Doc
from sagex.activation.planted.registry import ConceptError, jsonl_concept, select


def doc(text: str) -> Doc:
    """Word, space-word and punctuation pieces, like a BPE tokenizer's."""
    return Doc(text, tuple((m.start(), m.end()) for m in re.finditer(r" ?[A-Za-z]+| ?\d|\n|[^\sA-Za-z\d]| ", text)))


def labels_of(name: str, text: str) -> dict[str, int]:
    concept = next(c for c in select("all") if c.name == name)
    d = doc(text)
    return {d.token(i).strip() or repr(d.token(i)): int(v) for i, v in enumerate(concept.label(d))}


def test_sets_are_large_and_varied() -> None:
    dev, held = select("dev"), select("heldout")
    assert len(dev) >= 12 and len(held) >= 6
    assert {c.kind for c in dev} >= {"lexical", "morphology", "structural", "position", "context"}
    assert not {c.name for c in dev} & {c.name for c in held}
    assert len(select("all")) == len(dev) + len(held)


def test_every_labeller_is_causal() -> None:
    """A token's label never changes when text is appended after it."""
    rng = random.Random(0)
    for concept in select("all"):
        for text in concept.templates(rng)[:8]:
            full = doc(text)
            whole = concept.label(full)
            for cut in range(1, len(full)):
                if not full.token(cut)[:1].isspace() and full.token(cut) != "\n":
                    continue  # cut only between words: a prefix must not end inside a word
                prefix = Doc(text[: full.spans[cut][0]], full.spans[:cut])
                assert list(concept.label(prefix)) == list(whole[:cut]), (concept.name, text, cut)


def test_examples_of_labels() -> None:
    got = labels_of("month_name", "We met in May. May I go? It is March 3 and we march in June.")
    assert got["June"] == POS and got["march"] == NEG
    d = doc("We met in May. May I go?")
    month = next(c for c in select("dev") if c.name == "month_name").label(d)
    assert month[3] == POS and month[5] == AMBIGUOUS  # "in May" vs the modal "May I"
    parens = next(c for c in select("dev") if c.name == "inside_parentheses").label(doc("a (b c) d"))
    assert list(parens) == [NEG, NEG, AMBIGUOUS, POS, POS, AMBIGUOUS, NEG]  # a, " ", (, b, " c", ), " d"
    ly = labels_of("ly_adverb", "She only ran quickly with her family.")
    assert ly["quickly"] == POS and ly["only"] == NEG and ly["family"] == NEG
    after = labels_of("after_comma", "red, green")
    assert after["green"] == POS and after["red"] == NEG


def test_jsonl_concept(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"concept": "fruit", "description": "A fruit name.", "key_terms": ["fruits?"]}) + "\n"
                    + json.dumps({"text": "I ate an apple today", "spans": [[9, 14]]}) + "\n")
    concept = jsonl_concept(path)
    assert concept.name == "fruit" and concept.key_terms == ("fruits?",)
    d = doc("I ate an apple today")
    assert list(concept.label(d)) == [NEG, NEG, NEG, POS, NEG]
    assert set(concept.label(doc("unlabelled text"))) == {AMBIGUOUS}  # not in the file: unknown, not negative


@pytest.mark.parametrize(("lines", "message"), [
    ([{"text": "no concept here", "spans": []}], "names the concept"),
    ([{"concept": "x", "description": "d"}, {"text": "short", "spans": [[2, 40]]}], "outside the text"),
    ([{"concept": "x", "description": "d"}], "no labelled texts"),
    ([{"concept": "Bad Name", "description": "d", "text": "a b", "spans": []}], "lower_snake_case"),
])
def test_jsonl_concept_errors(tmp_path: Path, lines: list[dict], message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(ConceptError, match=message):
        jsonl_concept(path)


def marks_nothing() -> Concept:
    return Concept("never", "user", "Nothing at all.", (), lambda d: np.full(len(d), NEG, np.int8))


def test_entry_point_and_selection_errors() -> None:
    [never] = select("none", ["tests.bench.test_concepts:marks_nothing"])
    assert never.name == "never"
    with pytest.raises(ConceptError, match="module:function or a .jsonl"):
        select("dev", ["nonsense"])
    with pytest.raises(ConceptError, match="cannot load it"):
        select("dev", ["tests.bench.test_concepts:missing"])
    with pytest.raises(ConceptError, match="unique"):
        select("dev", ["tests.bench.test_concepts:marks_nothing", "tests.bench.test_concepts:marks_nothing"])
    with pytest.raises(ConceptError, match="choose one of"):
        select("everything")
