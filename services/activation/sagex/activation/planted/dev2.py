"""A SECOND development set of planted concepts, mostly word classes (closed ones and
semantic ones) and previous-word contexts. Like ``dev.py`` it may be read and tuned against; it exists
so an explainer can be checked on concepts it was not first fitted to (the
held-out set in ``heldout.py`` stays unread).

Each concept's templates hold positives beside hard negatives: "to" as a
preposition beside the infinitive "to", "will" the modal beside "the will",
"no" beside "not", a pronoun beside the noun it stands for, digits beside number
words, so a probe cannot pass on a surface cue the concept does not name.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from sagex.activation.planted.concepts import Concept, Doc, fill, tokens, words
from sagex.activation.planted.dev import ADJ, NAMES, NOUNS, PAST, VERBS

PRONOUNS = ("i", "me", "you", "he", "him", "she", "her", "it", "we", "us", "they", "them")
MODALS = ("can", "could", "will", "would", "shall", "should", "may", "might", "must")
NEGATIONS = ("not", "no", "never", "nor", "none", "nothing", "nobody", "neither", "cannot")
FAMILY = ("father", "mother", "son", "daughter", "brother", "sister", "wife", "husband", "uncle", "aunt", "cousin",
          "grandfather", "grandmother", "nephew", "niece", "children", "child", "sons", "daughters", "brothers",
          "sisters", "fathers", "mothers", "parents", "parent", "wives")
PREPOSITIONS = ("in", "on", "at", "of", "from", "with", "by", "for", "into", "onto", "upon", "over", "under",
                "above", "below", "between", "among", "through", "across", "behind", "beside", "near", "toward",
                "towards", "without", "within", "against", "during", "after", "before", "around", "about")
COLOURS = ("red", "blue", "green", "yellow", "white", "black", "purple", "scarlet", "crimson", "grey", "gray",
           "brown", "orange", "pink", "violet", "golden")
BODY_PARTS = ("hand", "hands", "head", "heads", "eye", "eyes", "face", "faces", "heart", "foot", "feet", "arm", "arms",
              "mouth", "ear", "ears", "nose", "finger", "fingers", "neck", "shoulder", "shoulders", "knee", "knees",
              "tongue", "lips", "hair", "leg", "legs", "teeth", "tooth", "bones", "skin", "belly")
ANIMALS = ("horse", "horses", "dog", "dogs", "cat", "cats", "sheep", "lamb", "lambs", "goat", "goats", "ox", "oxen",
           "lion", "lions", "bird", "birds", "fish", "wolf", "wolves", "bear", "camel", "camels", "cattle", "eagle",
           "serpent", "snake", "mouse", "cow", "cows", "donkey", "ass", "dove", "doves", "bull", "bullock", "fox")
_MODAL_NOUN_BEFORE = re.compile(r"\b(the|a|his|her|my|your|their|our|its|free|good|ill|god's)\s+$", re.IGNORECASE)
_MONTH_BEFORE = re.compile(r"\b(in|of|since|until|by|early|late|last|next)\s+$", re.IGNORECASE)
_PREP_CONJ = {"after", "before", "since", "until", "about"}  # prepositions that also open clauses / are adverbs


# --- lexical -------------------------------------------------------------------------


def _pronoun(doc: Doc) -> object:
    def pred(w: str, s: int) -> bool | None:
        low = w.lower()
        if low == "i":
            return w == "I"
        if low == "us" and w == "US":
            return False
        return low in PRONOUNS

    return words(doc, pred)


def _pronoun_templates(rng: random.Random) -> list[str]:
    frames = ["{name} said {subj} would {verb} the {noun}.", "Then {subj} {past} {obj} by the {noun}.",
              "The {noun} was {adj} and {name} {past} it.", "I {past} the {noun} before you did.",
              "The {noun} and the {noun} were {adj}.", "{name} gave the {noun} to the {noun}.",
              "They {past} us a {adj} {noun}.", "This {noun} is {adj}; that {noun} is {adj}."]
    slots = {"name": NAMES, "subj": ("he", "she", "they", "we", "you", "it"), "obj": ("him", "her", "them", "us",
             "me", "it"), "verb": VERBS, "noun": NOUNS, "past": PAST, "adj": ADJ}
    return fill(rng, frames, slots, 60)


def _is_modal(text: str, w: str, s: int) -> bool | None:
    """Whether the word ``w`` at ``s`` is a modal verb, from the text before it (None: cannot tell)."""
    low = w.lower()
    if low not in MODALS:
        return False
    if low in ("will", "can", "may", "must", "might"):
        # Causal: only the words before tell the modal from the noun ("the will", "a can", "in May").
        before = text[max(0, s - 12): s]
        if _MODAL_NOUN_BEFORE.search(before) or (w == "May" and _MONTH_BEFORE.search(before)):
            return False
        if w[0].isupper() and low in ("may", "will") and s > 0 and text[s - 1] != "\n":
            before_stripped = text[:s].rstrip()
            if before_stripped and before_stripped[-1] not in ".!?\"":
                return None  # a name or a month mid-sentence
    return True


def _modal(doc: Doc) -> object:
    return words(doc, lambda w, s: _is_modal(doc.text, w, s))


def _modal_templates(rng: random.Random) -> list[str]:
    frames = ["{name} {modal} {verb} the {noun}.", "You {modal} {verb} it before the {noun} closes.",
              "The {noun} {modal} be {adj} tomorrow.", "{name} left a will and a {noun}.",
              "The {noun} opened in May.", "{name} {past} the {noun} and a can of paint.",
              "{name} {past} the {adj} {noun}.", "We {past} the {noun} in March."]
    slots = {"name": NAMES, "modal": MODALS, "verb": VERBS, "noun": NOUNS, "adj": ADJ, "past": PAST}
    return fill(rng, frames, slots, 60)


def _negation(doc: Doc) -> object:
    def pred(w: str, _s: int) -> bool | None:
        low = w.lower()
        if low.endswith("n't"):
            return True
        return low in NEGATIONS

    return words(doc, pred)


def _negation_templates(rng: random.Random) -> list[str]:
    frames = ["{name} did not {verb} the {noun}.", "There was no {noun} in the {noun}.",
              "{name} never {past} the {noun}.", "{name} {past} the {noun} and the {noun}.",
              "Nothing was {adj}, and nobody {past} it.", "The {noun} is now {adj}.",
              "{name} knows the {noun} is {adj}.", "Neither the {noun} nor the {noun} was {adj}."]
    slots = {"name": NAMES, "verb": VERBS, "noun": NOUNS, "adj": ADJ, "past": PAST}
    return fill(rng, frames, slots, 60)


def _family(doc: Doc) -> object:
    return words(doc, lambda w, _s: w.lower() in FAMILY)


def _family_templates(rng: random.Random) -> list[str]:
    frames = ["Her {kin} {past} the {noun}.", "{name} and his {kin} went to the {noun}.",
              "The {kin} of {name} was {adj}.", "The {noun} of {name} was {adj}.",
              "{name} {past} the {adj} {noun}.", "My {noun} and my {kin} are {adj}."]
    slots = {"kin": FAMILY, "name": NAMES, "past": PAST, "noun": NOUNS, "adj": ADJ}
    return fill(rng, frames, slots, 60)


def _preposition(doc: Doc) -> object:
    def pred(w: str, s: int) -> bool | None:
        low = w.lower()
        if low == "to":
            return None  # a preposition or the infinitive marker: only the next word tells
        if low not in PREPOSITIONS:
            return False
        return None if low in _PREP_CONJ else True

    return words(doc, pred)


def _preposition_templates(rng: random.Random) -> list[str]:
    frames = ["The {noun} {prep} the {noun} was {adj}.", "{name} {past} the {noun} {prep} the {noun}.",
              "{name} {past} the {adj} {noun}.", "The {adj} {noun} and the {noun} {past}.",
              "{prep} the {noun}, {name} {past} a {noun}."]
    slots = {"noun": NOUNS, "prep": PREPOSITIONS, "adj": ADJ, "name": NAMES, "past": PAST}
    return fill(rng, frames, slots, 60)


def _colour(doc: Doc) -> object:
    def pred(w: str, _s: int) -> bool | None:
        if w.lower() not in COLOURS:
            return False
        return None if w[0].isupper() else True  # "Green", "White", "Brown": also surnames

    return words(doc, pred)


def _body(doc: Doc) -> object:
    return words(doc, lambda w, _s: w.lower() in BODY_PARTS)


def _animal(doc: Doc) -> object:
    def pred(w: str, _s: int) -> bool | None:
        low = w.lower()
        if low not in ANIMALS:
            return False
        return None if low in ("bear", "fish", "ass", "bull") else True  # also verbs, or not only animals

    return words(doc, pred)


def _class_templates(rng: random.Random) -> list[str]:
    frames = ["The {colour} {noun} stood by the {animal}.", "{name} hurt {pron} {body} on the {noun}.",
              "A {animal} ran past the {adj} {noun}.", "{name} painted the {noun} {colour}.",
              "The {noun} was {adj} and the {noun} was {adj}.", "{name} raised {pron} {body} and {past} the {noun}.",
              "The {animal} and the {animal} {past} the {noun}.", "{name} {past} the {adj} {noun} today."]
    slots = {"colour": [c for c in COLOURS if c != "gray"], "noun": NOUNS, "animal": [a for a in ANIMALS
             if a not in ("bear", "fish", "ass", "bull")], "name": NAMES, "pron": ("his", "her", "their"),
             "body": BODY_PARTS, "adj": ADJ, "past": PAST}
    return fill(rng, frames, slots, 60)


# --- position ------------------------------------------------------------------------


def _second_word(doc: Doc) -> object:
    """The first token of a sentence's second word (after '.', '!' or '?' and one word)."""
    def rule(d: Doc, i: int) -> bool | None:
        start, end = d.spans[i]
        tok = d.text[start:end]
        stripped = tok.lstrip()
        if not stripped or not stripped[0].isalpha() or (start > 0 and d.text[start - 1].isalpha() and tok == stripped):
            return False  # not a word's first token
        before = d.text[: start + len(tok) - len(stripped)]
        if _ABBREV2.search(before):
            return None  # "Dr. Smith": a sentence may or may not start here
        m = re.search(r"(^|[.!?]\s+|\n)([A-Za-z']+)\s+$", before)
        if m is None:
            return False
        if m.group(1) == "" and m.start(2) == 0:
            return None  # the text's second word: the text may start mid-sentence
        return None if _ABBREV2.search(d.text[: m.start(2)]) else True

    return tokens(doc, rule)


_ABBREV2 = re.compile(r"\b(Mr|Mrs|Dr|St|e\.g|i\.e|etc|vs|No)\.\s*$")


def _second_templates(rng: random.Random) -> list[str]:
    frames = ["The {noun} was {adj}. {name} {past} it.", "{name} {past} the {noun}. Then the {noun} was {adj}.",
              "Is the {noun} {adj}? Yes, the {noun} is {adj}.", "Dr. {name} {past} the {noun} and the {noun}.",
              "Old {noun}s {past} slowly. A {adj} {noun} {past} the {noun}!"]
    slots = {"noun": NOUNS, "adj": ADJ, "name": NAMES, "past": PAST}
    return fill(rng, frames, slots, 60)


# --- context -------------------------------------------------------------------------


def _in_pool(pool: tuple[str, ...], skip: frozenset[str] = frozenset()) -> Callable[[str, str, int], bool | None]:
    members = {p.lower() for p in pool}
    return lambda _text, word, _s: None if word.lower() in skip else word.lower() in members


def _after_class(member: Callable[[str, str, int], bool | None]) -> object:
    """The token right after a word for which ``member(text, word, start)`` holds (the token that starts the
    next word); ambiguous where ``member`` cannot tell."""

    def label(doc: Doc) -> object:
        def rule(d: Doc, i: int) -> bool | None:
            if i == 0 or not d.token(i - 1)[-1:].isalpha():
                return False  # the previous token does not end a word
            tok = d.token(i)
            if not tok.strip() or tok[:1].isalpha() or tok[:1] == "'":
                return False  # blank, or this token goes on with the same word
            # The previous word: the letter run ending where the previous token ends (its pieces may be several).
            m = re.search(r"[A-Za-z]+$", d.text[: d.spans[i - 1][1]])
            return member(d.text, m.group(), m.start()) if m else False

        return tokens(doc, rule)

    return label


def _after_colon(doc: Doc) -> object:
    return tokens(doc, lambda d, i: i > 0 and d.token(i - 1).rstrip().endswith(":") and d.token(i).strip() != "")


def _after_digit(doc: Doc) -> object:
    def rule(d: Doc, i: int) -> bool | None:
        if i == 0:
            return False
        prev = d.token(i - 1).strip()
        if not prev or not prev[-1].isdigit():
            return False
        tok = d.token(i)
        if tok[:1].isdigit() or tok[:1] in ".,":
            return None  # the number goes on ("1,000", "3.5", digit-by-digit tokens)
        return tok.strip() != ""

    return tokens(doc, rule)


def _context_templates(rng: random.Random) -> list[str]:
    frames = ["{name} {past} the {noun} {prep} the {noun}.", "He {modal} {verb} {num} {noun}s: the {adj} ones.",
              "We {past} it; they {past} {num} {noun}s.", "Note: the {noun} was {adj}.",
              "{name} {modal} {verb} the {noun} {prep} {num} days.", "The {adj} {noun} {past} a {noun}.",
              "Time: {num} hours {prep} the {noun}.", "She {past} him a {noun}."]
    slots = {"name": NAMES, "past": PAST, "noun": NOUNS, "prep": PREPOSITIONS[:16], "adj": ADJ, "modal": MODALS,
             "verb": VERBS, "num": [str(n) for n in (2, 3, 5, 7, 12, 40, 100, 365)]}
    return fill(rng, frames, slots, 60)


CONCEPTS: tuple[Concept, ...] = (
    Concept("personal_pronoun", "lexical", "A personal pronoun (I, you, he, she, it, we, they, me, him, her, us, "
            "them).", (r"\bpronouns?\b",), _pronoun, _pronoun_templates),  # type: ignore[arg-type]
    Concept("modal_verb", "lexical", "A modal auxiliary verb (can, could, will, would, shall, should, may, might, "
            "must).", (r"\bmodals?\b", r"\bauxiliar(y|ies)\b"), _modal, _modal_templates),  # type: ignore[arg-type]
    Concept("negation_word", "lexical", "A word of negation (not, no, never, nor, none, nothing, -n't).",
            (r"\bnegat(ion|ive|ions|ing)\b", r"\bnegations?\b", r"\bdenial"), _negation,  # type: ignore[arg-type]
            _negation_templates),
    Concept("family_term", "lexical", "A word for a family member or relative (father, sister, son, wife ...).",
            (r"\bfamily\b", r"\bkinship\b", r"\brelatives?\b", r"\brelations?\b"), _family,  # type: ignore[arg-type]
            _family_templates),
    Concept("preposition", "lexical", "A preposition (in, on, at, of, from, with, by, for, under ...).",
            (r"\bprepositions?\b", r"\bprepositional\b"), _preposition, _preposition_templates),  # type: ignore[arg-type]
    Concept("colour_word", "lexical", "A colour word (red, blue, green, white, scarlet ...).",
            (r"\bcolou?rs?\b", r"\bhues?\b"), _colour, _class_templates),  # type: ignore[arg-type]
    Concept("body_part", "lexical", "A word for a part of the body (hand, eye, heart, head, foot ...).",
            (r"body[- ]parts?", r"parts? of the body", r"\banatom"), _body, _class_templates),  # type: ignore[arg-type]
    Concept("animal_word", "lexical", "A word for an animal (horse, sheep, lion, bird ...).",
            (r"\banimals?\b", r"\bcreatures?\b", r"\bbeasts?\b"), _animal, _class_templates),  # type: ignore[arg-type]
    Concept("second_word", "position", "The second word of a sentence (the word right after its first word).",
            (r"second word", r"after the first word", r"word (right )?after (a |the )?sentence[- ](start|opening)",
             r"after the first word of a sentence"), _second_word, _second_templates),  # type: ignore[arg-type]
    Concept("after_preposition", "context", "The token right after a preposition (what in, on, of, with ... "
            "introduces).", (r"after (a |the )?prepositions?", r"follow(s|ing)? (a |the )?prepositions?",
                             r"object of (a |the )?preposition"),
            _after_class(_in_pool(PREPOSITIONS, frozenset(_PREP_CONJ | {"to"}))), _context_templates),  # type: ignore[arg-type]
    Concept("after_modal", "context", "The token right after a modal verb (the verb that can, will, should ... "
            "govern).", (r"after (a |the )?modal", r"follow(s|ing)? (a |the )?modal", r"after (an )?auxiliar"),
            _after_class(_is_modal), _context_templates),  # type: ignore[arg-type]
    Concept("after_pronoun", "context", "The token right after a personal pronoun (often the verb of its clause).",
            (r"after (a |the )?(personal |subject )?pronouns?", r"follow(s|ing)? (a |the )?pronouns?"),
            _after_class(_in_pool(PRONOUNS, frozenset({"i", "us"}))), _context_templates),  # type: ignore[arg-type]
    Concept("after_colon", "context", "The token right after a colon.",
            (r"after (a |the )?colons?", r"follow(s|ing)? (a |the )?colons?"), _after_colon,  # type: ignore[arg-type]
            _context_templates),
    Concept("after_digit", "context", "The token right after a number written in digits (what the number counts "
            "or measures).", (r"after (a |the )?(number|digit|numeral)s?", r"follow(s|ing)? (a |the )?"
                              r"(number|digit|numeral)s?", r"\bunits?\b"), _after_digit,  # type: ignore[arg-type]
            _context_templates),
)
