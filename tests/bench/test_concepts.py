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


def labels_of(name: str, text: str, concepts: str = "all") -> dict[str, int]:
    """Concept ``name`` of set ``concepts``: each token of ``text`` (stripped) -> its label."""
    concept = next(c for c in select(concepts) if c.name == name)
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


def test_the_cli_stays_light() -> None:
    """`sage bench planted` is wired into the CLI without importing torch or the services: the
    CLI hands over to `python -m sagex.bench`, whose parser reads the benchmark's flags."""
    import subprocess
    import sys

    code = ("import sys; from sagex.cli.main import build_parser; "
            "args = build_parser().parse_args(['bench', 'planted', 'dir', '--explainers', 'heuristic,symbolic']); "
            "assert (args.bench, args.flags) == ('planted', ['dir', '--explainers', 'heuristic,symbolic']); "
            "from sagex.bench.__main__ import build_parser as bench; "
            "assert bench().parse_args(['planted', *args.flags]).explainers == 'heuristic,symbolic'; "
            "assert 'torch' not in sys.modules and 'sagex.bench.planted' not in sys.modules, 'heavy import'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def dev2_labels(name: str, text: str) -> dict[str, int]:
    return labels_of(name, text, "dev2")


def _templated_and_causal(concepts: list[Concept], rng: random.Random) -> None:
    """Each concept's templates give 40+ texts with positives, and its labels are causal: a
    token's label on a prefix of a text is its label on the whole text."""
    for concept in concepts:
        texts = concept.templates(rng)
        assert len(texts) >= 40, concept.name
        assert sum(POS in concept.label(doc(t)) for t in texts) >= 10, concept.name
        for text in texts[:6]:
            full = doc(text)
            whole = concept.label(full)
            for cut in range(1, len(full)):
                if not full.token(cut)[:1].isspace() and full.token(cut) != "\n":
                    continue
                prefix = Doc(text[: full.spans[cut][0]], full.spans[:cut])
                assert list(concept.label(prefix)) == list(whole[:cut]), (concept.name, text, cut)


def test_dev2_is_registered_varied_and_causal() -> None:
    dev2, dev = select("dev2"), select("dev")
    assert len(dev2) >= 8 and {c.kind for c in dev2} >= {"lexical", "context"}
    assert not {c.name for c in dev2} & {c.name for c in dev}
    assert len(select("all")) == len(dev) + len(select("heldout"))  # "all" stays dev + held-out
    _templated_and_causal(dev2, random.Random(1))


def test_dev2_labels_a_sample_sentence() -> None:
    text = "She said we will not go to the will of her father: 3 days in May."
    got = dev2_labels("personal_pronoun", text)
    assert got["She"] == POS and got["we"] == POS and got["her"] == POS and got["father"] == NEG
    got = dev2_labels("modal_verb", "She said we will not go.")
    assert got["will"] == POS and got["not"] == NEG and dev2_labels("modal_verb", "I read the will.")["will"] == NEG
    got = dev2_labels("negation_word", "We will not go, nor can we; I don't know.")
    assert got["not"] == POS and got["nor"] == POS and got["t"] == POS and got["go"] == NEG
    got = dev2_labels("family_term", text)
    assert got["father"] == POS and got["days"] == NEG
    got = dev2_labels("preposition", "Go to the house of her father in May.")
    assert got["of"] == POS and got["in"] == POS and got["to"] == AMBIGUOUS and got["house"] == NEG
    got = dev2_labels("after_preposition", "Go to the house of her father in May.")
    assert got["her"] == POS and got["May"] == POS and got["the"] == AMBIGUOUS and got["father"] == NEG
    got = dev2_labels("after_modal", "We should go and they must stay.")
    assert got["go"] == POS and got["stay"] == POS and got["they"] == NEG
    assert dev2_labels("after_modal", "They left the will open.")["open"] == NEG  # "the will": a noun
    got = dev2_labels("after_pronoun", "Then they left the house.")
    assert got["left"] == POS and got["house"] == NEG
    got = dev2_labels("after_colon", "Note: it is 3 days.")
    assert got["it"] == POS and got["is"] == NEG
    got = dev2_labels("colour_word", "The red horse and Mr Green saw blue eyes.")
    assert got["red"] == POS and got["blue"] == POS and got["Green"] == AMBIGUOUS and got["horse"] == NEG
    got = dev2_labels("animal_word", "The red horse and a bear saw a fish.")
    assert got["horse"] == POS and got["bear"] == AMBIGUOUS and got["red"] == NEG
    got = dev2_labels("body_part", "He raised his hands to his head.")
    assert got["hands"] == POS and got["head"] == POS and got["raised"] == NEG
    got = dev2_labels("second_word", "He went home. The old man sat. Dr. Smith came in.")
    assert got["old"] == POS and got["went"] == AMBIGUOUS and got["man"] == NEG and got["Smith"] == AMBIGUOUS
    got = dev2_labels("after_digit", "It took 12 days and 3.5 hours.")
    assert got["days"] == POS and got["hours"] == POS and got["It"] == NEG


def dev3_labels(name: str, text: str) -> dict[str, int]:
    return labels_of(name, text, "dev3")


def test_dev3_is_new_varied_and_causal() -> None:
    dev3 = select("dev3")
    assert len(dev3) >= 14 and {c.kind for c in dev3} == {"lexical", "morphology", "position", "structural",
                                                          "context"}
    assert not {c.name for c in dev3} & {c.name for c in [*select("dev"), *select("dev2")]}
    for concept in dev3:
        assert all(re.compile(term, re.IGNORECASE) for term in concept.key_terms), concept.name
    _templated_and_causal(dev3, random.Random(2))


def test_dev3_labels_sample_sentences() -> None:
    text = "For two days and a year the priest ate bread in fear, but the river was older than the farmer."
    got = dev3_labels("time_unit", text)
    assert got["days"] == POS and got["year"] == POS and got["two"] == NEG
    got = dev3_labels("food_word", text)
    assert got["bread"] == POS and got["river"] == NEG
    got = dev3_labels("emotion_word", text)
    assert got["fear"] == POS and got["older"] == NEG
    got = dev3_labels("occupation_word", text)
    assert got["priest"] == POS and got["farmer"] == POS and got["river"] == NEG
    got = dev3_labels("conjunction", text)
    assert got["and"] == POS and got["but"] == POS and got["For"] == AMBIGUOUS and got["in"] == NEG
    got = dev3_labels("degree_form", text)
    assert got["older"] == POS and got["river"] == NEG and got["farmer"] == NEG
    got = dev3_labels("plural_noun", "The gardens and children opens it; this bus runs.")
    assert got["gardens"] == POS and got["children"] == POS and got["opens"] == NEG and got["this"] == NEG
    got = dev3_labels("after_and", text)
    assert got["a"] == POS and got["year"] == NEG
    got = dev3_labels("after_indefinite_article", "A man saw an apple and a pear in Plan A today.")
    assert got["man"] == POS and got["apple"] == POS and got["pear"] == POS and got["today"] == AMBIGUOUS
    got = dev3_labels("after_to", "We want to go to Rome.")
    assert got["go"] == POS and got["Rome"] == POS and got["want"] == NEG
    got = dev3_labels("after_open_quote", 'He said "go home" and left.')
    assert got["go"] == POS and got["home"] == NEG and got["and"] == NEG
    got = dev3_labels("paragraph_start", "First line.\nSecond line.\n\nThird line.")
    assert got["Second"] == NEG and got["Third"] == POS and got["First"] == AMBIGUOUS
    got = dev3_labels("list_item_start", "Steps - two:\n- open the door\n2. close it")
    assert got["open"] == POS and got["close"] == POS and got["two"] == NEG and got["door"] == NEG
    got = dev3_labels("inside_backticks", 'Call `ab` or ``cd`` and "ef" today.')
    assert got["ab"] == POS and got["cd"] == POS and got["ef"] == NEG and got["today"] == NEG and got["`"] == AMBIGUOUS
    got = dev3_labels("inside_url", "Go to https://docs.python.org/x now, not /usr/lib.")
    assert got["docs"] == POS and got["python"] == POS and got["now"] == NEG and got["usr"] == NEG
