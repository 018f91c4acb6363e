"""A THIRD development set of planted concepts, written after the explainer had been tuned on ``dev.py`` and
``dev2.py``, so that its first measurement is an untouched one: semantic word classes (time units, food,
emotions, occupations) and conjunctions, the word after 'and', 'a/an', 'to' or an opening quote, plural nouns and
comparative/superlative forms, the start of a paragraph or a list item, and the inside of a backtick code span or
a URL (inside square brackets was the first choice: its probe reached AUROC 0.785 only, so it could not be planted).
Like the other development sets it may be read and tuned against (the held-out set in ``heldout.py`` stays unread).

Each concept's templates hold positives beside hard negatives: a food noun beside another concrete noun in the
same slot, an emotion beside an ordinary adjective, "teacher" and "older" beside "river" and "never", a plural
noun beside a verb in -s, a paragraph start beside a line start, a list item beside a dash inside a line, backtick
code beside double quotes and parentheses, a URL beside a file path, so a probe cannot pass on a surface cue the
concept does not name.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from sagex.activation.planted.concepts import AMBIGUOUS, Concept, Doc, fill, state, tokens, words
from sagex.activation.planted.dev import ADJ, NAMES, NOUNS, PAST, VERBS
from sagex.activation.planted.dev2 import PREPOSITIONS, _after_class, _in_pool

TIME_UNITS = ("second", "seconds", "minute", "minutes", "hour", "hours", "day", "days", "week", "weeks", "month",
              "months", "year", "years", "decade", "decades", "century", "centuries", "fortnight", "millisecond",
              "milliseconds")
_TIME_AMBIGUOUS = {"second", "minute"}  # also an ordinal, an adjective ("a minute detail")
FOOD = ("bread", "wine", "milk", "meat", "honey", "cheese", "butter", "apple", "apples", "rice", "soup", "fruit",
        "figs", "grapes", "beer", "coffee", "tea", "cake", "bean", "beans", "egg", "eggs", "fish", "corn", "wheat",
        "flour", "pie", "sugar", "juice", "vinegar", "lentils", "olives", "barley", "pottage", "salad", "pizza",
        "spam", "banana", "bananas", "breakfast", "dinner", "supper", "lunch", "meal", "feast")
_FOOD_AMBIGUOUS = {"water", "oil", "salt", "fish", "corn", "spam", "tea"}  # not only food in this corpus
EMOTIONS = ("fear", "fears", "joy", "anger", "sorrow", "sorrows", "grief", "wrath", "shame", "happiness", "sadness",
            "delight", "despair", "anxiety", "jealousy", "envy", "disgust", "afraid", "angry", "glad", "sad", "happy",
            "joyful", "sorrowful", "ashamed", "anxious", "jealous", "fearful", "furious", "lonely", "grateful",
            "proud", "rejoice", "rejoiced", "mourn", "mourned", "weep", "wept")
_EMOTION_AMBIGUOUS = {"love", "loved", "hate", "hope", "pride", "content", "cross", "mad"}
OCCUPATIONS = ("priest", "priests", "doctor", "doctors", "teacher", "teachers", "soldier", "soldiers", "merchant",
               "merchants", "shepherd", "shepherds", "carpenter", "carpenters", "lawyer", "lawyers", "engineer",
               "engineers", "farmer", "farmers", "baker", "bakers", "nurse", "nurses", "scribe", "scribes",
               "fisherman", "fishermen", "sailor", "sailors", "programmer", "programmers", "developer", "developers",
               "physician", "physicians", "tailor", "potter", "smith", "clerk", "clerks", "banker", "bankers",
               "pilot", "pilots", "professor", "professors", "butler", "cook", "cooks", "maintainer", "maintainers")
_OCCUPATION_AMBIGUOUS = {"judge", "judges", "king", "kings", "queen", "servant", "servants", "cook", "smith",
                         "potter", "pilot", "nurse"}  # also a verb, a surname or a rank rather than a trade
CONJUNCTIONS = ("and", "but", "or", "nor", "because", "although", "though", "unless", "whereas", "whether", "if",
                "whilst")
_CONJ_AMBIGUOUS = {"yet", "so", "for", "since", "until", "till", "before", "after", "as", "that", "either",
                   "neither", "while", "once", "than", "lest"}  # also adverbs or prepositions
_OTHER_PEOPLE = ("man", "woman", "child", "friend", "neighbour", "stranger", "guest", "boy", "girl", "person")
_PLAIN_NOUNS = tuple(n for n in NOUNS if n not in OCCUPATIONS)
_OTHER_ABSTRACT = ("truth", "law", "power", "time", "reason", "order", "plan", "rule", "story", "answer")


def _member_unless(pool: tuple[str, ...], ambiguous: set[str]) -> Callable[[str, int], bool | None]:
    members = {p.lower() for p in pool}

    def pred(w: str, _s: int) -> bool | None:
        low = w.lower()
        if low in ambiguous:
            return None
        return low in members

    return pred


# --- lexical -------------------------------------------------------------------------


def _time_unit(doc: Doc) -> object:
    return words(doc, _member_unless(TIME_UNITS, _TIME_AMBIGUOUS))


def _time_templates(rng: random.Random) -> list[str]:
    frames = ["{name} {past} the {noun} for {num} {unit}s.", "It took a {unit} to {verb} the {noun}.",
              "Every {unit} the {noun} was {adj}.", "{name} {past} the {noun} for {num} {noun}s.",
              "The {adj} {noun} {past} the {noun}.", "After {num} {unit}s {name} {past} the {noun}.",
              "The first {noun} was {adj}; the second was {adj}."]
    slots = {"name": NAMES, "past": PAST, "noun": NOUNS, "num": ("two", "three", "ten", "5", "12", "forty"),
             "unit": ("minute", "hour", "day", "week", "month", "year", "decade"), "verb": VERBS, "adj": ADJ}
    return fill(rng, frames, slots, 60)


def _food(doc: Doc) -> object:
    return words(doc, _member_unless(FOOD, _FOOD_AMBIGUOUS))


def _food_templates(rng: random.Random) -> list[str]:
    frames = ["{name} ate the {food} by the {noun}.", "{name} carried the {noun} to the {noun}.",
              "They bought {food} and {food} at the {noun}.", "They bought a {noun} and a {noun} at the market.",
              "The {food} on the {noun} was {adj}.", "The {noun} on the {noun} was {adj}.",
              "{name} {past} some {food} for the {noun}."]
    slots = {"name": NAMES, "food": [f for f in FOOD if f not in _FOOD_AMBIGUOUS], "noun": _PLAIN_NOUNS,
             "adj": ADJ, "past": PAST}
    return fill(rng, frames, slots, 60)


def _emotion(doc: Doc) -> object:
    return words(doc, _member_unless(EMOTIONS, _EMOTION_AMBIGUOUS))


def _emotion_templates(rng: random.Random) -> list[str]:
    frames = ["{name} was {feel_adj} when the {noun} {past}.", "{name} was {adj} when the {noun} {past}.",
              "The {noun} filled them with {feel_noun}.", "The {noun} filled them with {thing}.",
              "Their {feel_noun} grew as the {noun} {past}.", "Their {thing} grew as the {noun} {past}.",
              "{name} felt {feel_adj} and {adj}."]
    slots = {"name": NAMES, "feel_adj": ("afraid", "angry", "glad", "sad", "happy", "ashamed", "anxious", "jealous",
             "joyful", "furious", "grateful", "lonely"), "feel_noun": ("fear", "joy", "anger", "sorrow", "grief",
             "shame", "despair", "delight", "envy", "disgust"), "adj": ADJ, "noun": NOUNS, "past": PAST,
             "thing": _OTHER_ABSTRACT}
    return fill(rng, frames, slots, 60)


def _occupation(doc: Doc) -> object:
    return words(doc, _member_unless(OCCUPATIONS, _OCCUPATION_AMBIGUOUS))


def _occupation_templates(rng: random.Random) -> list[str]:
    frames = ["The {job} {past} the {noun}.", "The {person} {past} the {noun}.", "{name} became a {job} in the {noun}.",
              "{name} met a {person} in the {noun}.", "Ask the {job} about the {adj} {noun}.",
              "Ask the {person} about the {adj} {noun}.", "Two {job}s and a {person} {past} the {noun}."]
    slots = {"job": [j for j in OCCUPATIONS if not j.endswith("s") and j not in _OCCUPATION_AMBIGUOUS],
             "person": _OTHER_PEOPLE, "name": NAMES, "past": PAST, "noun": _PLAIN_NOUNS, "adj": ADJ}
    return fill(rng, frames, slots, 60)


def _conjunction(doc: Doc) -> object:
    return words(doc, _member_unless(CONJUNCTIONS, _CONJ_AMBIGUOUS))


def _conjunction_templates(rng: random.Random) -> list[str]:
    frames = ["{name} {past} the {noun} {conj} the {noun} was {adj}.", "{name} {past} the {noun} {prep} the {noun}.",
              "The {noun} {conj} the {noun} were {adj}.", "{name} stayed home {conj} the {noun} was {adj}.",
              "{name} {past} it, {conj} {pron} {past} the {noun}.", "{pron} {past} the {adj} {noun} {prep} {name}."]
    slots = {"name": NAMES, "past": PAST, "noun": NOUNS, "adj": ADJ, "pron": ("he", "she", "they", "we"),
             "conj": ("and", "but", "or", "because", "although", "though", "unless", "whereas", "if", "whether"),
             "prep": [p for p in PREPOSITIONS if p not in _CONJ_AMBIGUOUS and p != "about"]}
    return fill(rng, frames, slots, 60)


# --- morphology ----------------------------------------------------------------------


def _plural_of(noun: str) -> str:
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    if noun.endswith(("s", "sh", "ch", "x")):
        return noun + "es"
    return noun + "s"


_COUNT_NOUNS = NOUNS + ("day", "year", "word", "thing", "book", "city", "friend", "name", "hand", "eye", "tree",
                        "stone", "field", "door", "student", "file", "function", "value", "line", "object", "class",
                        "module", "argument", "method", "item", "element", "character", "number", "string", "list",
                        "option", "error", "test", "version", "example", "user", "attribute", "parameter", "key",
                        "nation", "city", "prophet", "angel", "servant", "enemy", "gate", "wall", "cloud", "star")
PLURALS = tuple(sorted({_plural_of(n) for n in _COUNT_NOUNS} | {"men", "women", "children", "feet", "teeth", "mice",
                                                                "geese", "oxen", "people", "brethren"}))
_NOT_PLURAL = {"is", "was", "has", "does", "goes", "this", "his", "its", "us", "yes", "thus", "as", "always",
               "perhaps", "less", "unless", "across", "whereas", "series", "news", "returns", "contains", "takes",
               "makes", "gives", "says", "saith", "opens", "closes", "visits", "follows", "carries", "runs", "uses",
               "means", "sees", "knows", "comes", "seems", "yours", "ours", "theirs", "hers", "whose", "mathematics",
               "physics", "bus", "gas", "process", "class", "glass", "grass", "kiss", "loss", "boss", "chaos", "jesus",
               "moses", "besides", "sometimes", "towards", "afterwards", "upwards", "nevertheless", "else"}
_VERBS_S = ("opens", "closes", "visits", "follows", "carries", "returns", "contains", "takes", "makes", "gives")


def _plural(doc: Doc) -> object:
    plurals = set(PLURALS)

    def pred(w: str, _s: int) -> bool | None:
        low = w.lower()
        if low in plurals:
            return True
        if low in _NOT_PLURAL or not low.endswith("s") or low.endswith(("ss", "'s")):
            return False
        return None  # an -s word not in the lists: a plural noun or a verb, the word alone cannot tell

    return words(doc, pred)


def _plural_templates(rng: random.Random) -> list[str]:
    frames = ["The {plural} {past} the {noun}.", "{name} {verb_s} the {noun}.", "{name} {past} the {adj} {plural}.",
              "The {noun} {verb_s} the {plural}.", "This {noun} is {adj}; those {plural} are {adj}.",
              "{name} {past} a {noun} and two {plural}.", "{name} always {verb_s} it."]
    slots = {"plural": [_plural_of(n) for n in NOUNS] + ["men", "women", "children", "feet"], "noun": NOUNS,
             "past": PAST, "verb_s": _VERBS_S, "name": NAMES, "adj": ADJ}
    return fill(rng, frames, slots, 60)


def _degree_forms(base: str) -> tuple[str, str]:
    if base.endswith("y") and base[-2] not in "aeiou":
        return base[:-1] + "ier", base[:-1] + "iest"
    if base.endswith("e"):
        return base + "r", base + "st"
    if base in ("big", "hot", "wet", "thin", "fat", "sad", "red", "flat"):
        return base + base[-1] + "er", base + base[-1] + "est"
    return base + "er", base + "est"


_GRADABLE = ("old", "small", "bright", "quiet", "heavy", "narrow", "simple", "big", "long", "short", "tall",
             "young", "great", "strong", "dark", "large", "high", "low", "deep", "wide", "fast", "slow", "cold",
             "warm", "hard", "soft", "rich", "poor", "clean", "near", "happy", "easy", "early", "wise", "fair",
             "hot", "thin", "sad", "safe", "close", "full", "weak", "light", "clear", "late", "new", "few", "fine")
DEGREE_WORDS = tuple(sorted({f for b in _GRADABLE for f in _degree_forms(b)} | {"better", "best", "worse", "worst"}))
_DEGREE_AMBIGUOUS = {"more", "most", "less", "least", "further", "farther", "later", "latter", "finer", "closer",
                     "lighter", "elder", "eldest"}  # adverbs, determiners, or nouns as often as degree forms
_ER_EST_NOT_DEGREE = {"teacher", "farmer", "river", "letter", "water", "father", "mother", "brother", "sister",
                      "number", "order", "paper", "other", "another", "after", "never", "ever", "over", "under",
                      "however", "whether", "rather", "either", "neither", "together", "forest", "interest", "rest",
                      "west", "test", "honest", "request", "priest", "guest", "harvest", "power", "answer", "master",
                      "matter", "manner", "corner", "silver", "winter", "summer", "finger", "shoulder", "dinner",
                      "parameter", "user", "buffer", "server", "header", "filter", "register", "character", "error",
                      "earnest", "modest", "behest", "suggest", "protest", "contest", "digest"}


def _degree(doc: Doc) -> object:
    degree = set(DEGREE_WORDS)

    def pred(w: str, _s: int) -> bool | None:
        low = w.lower()
        if low in _DEGREE_AMBIGUOUS:
            return None
        if low in degree:
            return True
        if low in _ER_EST_NOT_DEGREE or not low.endswith(("er", "est")):
            return False
        return None  # an -er/-est word not in the lists: a degree form or a noun ("ladder", "forest")

    return words(doc, pred)


def _degree_templates(rng: random.Random) -> list[str]:
    frames = ["The {noun} was {comp} than the {noun}.", "The {noun} was {adj} and the {noun} was {adj}.",
              "{name} {past} the {sup} {noun} of all.", "The {er_noun} {past} the {adj} {noun}.",
              "{name} has never {past} the {noun}.", "It was the {sup} {noun}, and {name} was {comp}.",
              "The {er_noun} and the {er_noun} {past} it."]
    forms = [_degree_forms(b) for b in _GRADABLE if b not in ("few", "late", "close", "light", "fine")]
    slots = {"noun": _PLAIN_NOUNS, "comp": [c for c, _ in forms] + ["better", "worse"],
             "sup": [s for _, s in forms] + ["best", "worst"], "adj": ADJ, "name": NAMES, "past": PAST,
             "er_noun": ("teacher", "farmer", "river", "letter", "water", "father", "mother", "number", "paper",
                         "forest", "priest", "guest", "master", "corner", "winter", "dinner")}
    return fill(rng, frames, slots, 60)


# --- position ------------------------------------------------------------------------


def _first_char(d: Doc, i: int) -> int | None:
    """Where the token's first non-blank character is (None: a blank token)."""
    start, end = d.spans[i]
    tok = d.text[start:end]
    if not tok.strip():
        return None
    return start + len(tok) - len(tok.lstrip())


def _paragraph_start(doc: Doc) -> object:
    """The first non-blank token after a blank line (two newlines with only spaces between)."""
    def rule(d: Doc, i: int) -> bool | None:
        first = _first_char(d, i)
        if first is None:
            return False
        before = d.text[:first]
        if not before.strip():
            return None  # the document's first token: the text may start mid-paragraph
        return bool(re.search(r"\n[ \t]*\n[ \t]*$", before))

    return tokens(doc, rule)


def _paragraph_templates(rng: random.Random) -> list[str]:
    sentences = ["The {noun} was {adj}.", "{name} {past} the {noun}.", "Then the {adj} {noun} {past} the {noun}.",
                 "Nobody {past} the {noun} that day.", "{name} and {name} {past} the {noun}."]
    slots = {"noun": NOUNS, "adj": ADJ, "name": NAMES, "past": PAST}
    out = []
    for _ in range(50):
        paragraphs = []
        for _ in range(rng.randint(2, 4)):
            lines = []
            for _ in range(rng.randint(1, 3)):  # wrapped lines: a newline that does not start a paragraph
                line = " ".join(rng.choice(sentences) for _ in range(rng.randint(1, 2)))
                lines.append(re.sub(r"\{(\w+)\}", lambda m: rng.choice(list(slots[m.group(1)])), line))
            paragraphs.append("\n".join(lines))
        out.append("\n\n".join(paragraphs))
    return out


_LIST_MARKER = re.compile(r"(?:^|\n)[ \t]*(?:[-*+\u2022]|\d{1,3}[.)])[ \t]+$")


def _list_item_start(doc: Doc) -> object:
    """The first word of a bulleted or numbered list item (the word after '- ', '* ' or '1. ' at a line's start)."""
    def rule(d: Doc, i: int) -> bool | None:
        first = _first_char(d, i)
        if first is None:
            return False
        before = d.text[:first]
        marker = _LIST_MARKER.search(before)
        if marker is None:
            return False
        if "\n" not in before:
            return None  # at the document's start: the text may begin mid-line
        return True if d.text[first].isalpha() else None  # a code span or a number opening the item

    return tokens(doc, rule)


def _list_templates(rng: random.Random) -> list[str]:
    items = ["{adj} {noun}s for the {noun}", "{verb} the {noun} first", "{name} and the {noun}",
             "the {noun} - {adj} and {adj}", "{past} {num} times"]
    prose = ["The {noun} - a {adj} one - was {past}.", "{name} {past} {num} - {num} {noun}s.",
             "Version {num}. The {noun} was {adj}.", "{name} {past} the {noun}:"]
    slots = {"adj": ADJ, "noun": NOUNS, "verb": VERBS, "name": NAMES, "past": PAST,
             "num": [str(n) for n in range(2, 9)]}
    out = []
    for _ in range(50):
        lines = [rng.choice(prose)]
        numbered = rng.random() < 0.4
        for k in range(rng.randint(2, 4)):
            marker = f"{k + 1}." if numbered else rng.choice("-*")
            lines.append(f"{marker} {rng.choice(items)}")
        lines.append(rng.choice(prose))
        out.append(re.sub(r"\{(\w+)\}", lambda m: rng.choice(list(slots[m.group(1)])), "\n".join(lines)))
    return out


# --- structural ----------------------------------------------------------------------


def _inside_backticks(doc: Doc) -> object:
    """Tokens inside an inline code span: after an odd number of backtick runs (` or ``, as in Markdown and
    reStructuredText); the backticks' own tokens are ambiguous."""
    labels = state(doc, lambda before: len(re.findall(r"`+", before)) % 2 == 1)
    for i in range(len(doc)):
        if "`" in doc.token(i):
            labels[i] = AMBIGUOUS
    return labels


def _backticks_templates(rng: random.Random) -> list[str]:
    frames = ["Call `{verb}_{noun}()` before the {noun}.", "The ``{noun}`` argument is {adj}.",
              "Use :func:`{noun}.{verb}` to {verb} the {noun}.", 'The "{adj} {noun}" was {past} by {name}.',
              "The {noun} ({adj} {noun}) was {past}.", "Set ``{noun} = {n}`` in the {noun} file.",
              "{name} {past} the {adj} {noun} twice."]
    slots = {"noun": NOUNS, "adj": ADJ, "past": PAST, "name": NAMES, "verb": VERBS, "n": [str(n) for n in range(12)]}
    return fill(rng, frames, slots, 60)


_URL_OPEN = re.compile(r"(?:https?://|www\.)(\S*)$")
_URL_PARTIAL = re.compile(r"(?:^|[\s(<\"'])(?:https?:?/?/?|www)$")


def _inside_url(doc: Doc) -> object:
    """Tokens of a web address after its 'http://', 'https://' or 'www.' (until whitespace)."""
    def rule(d: Doc, i: int) -> bool | None:
        start, end = d.spans[i]
        tok = d.text[start:end]
        if not tok or tok[0].isspace():
            return False  # a new word: any address before it has ended
        before = d.text[:start]
        m = _URL_OPEN.search(before)
        if m is None:
            return None if _URL_PARTIAL.search(before) else False
        if re.search(r"[)>\"'\]]", m.group(1)):
            return None  # a bracket or quote may have closed the address
        return True

    return tokens(doc, rule)


def _url_templates(rng: random.Random) -> list[str]:
    frames = ["See https://www.{site}.org/{noun}/{verb}.html for the {noun}.",
              "The {noun} lives at /usr/lib/{noun}/{n}.",
              "Visit http://{site}.com/{noun}s?id={n} today.", "Open the file {noun}_{n}.txt in the {noun}.",
              "The http {noun} and the www {noun} are {adj}.", "Docs: www.{site}.net/{noun} and the {noun}.",
              "{name} mailed {noun}@{site}.com about the {noun}."]
    slots = {"site": ("python", "example", "docs", "wiki", "archive", "news"), "noun": NOUNS, "verb": VERBS,
             "n": [str(n) for n in range(1, 99)], "adj": ADJ, "name": NAMES}
    return fill(rng, frames, slots, 60)


# --- context -------------------------------------------------------------------------


def _is_indefinite_article(text: str, w: str, s: int) -> bool | None:
    if w in ("a", "an", "An"):
        return True
    if w == "A":  # at a sentence's start the article; elsewhere often a letter ("type A", "Plan A")
        before = text[:s].rstrip()
        return True if not before or before[-1] in ".!?\n\"" else None
    return False


def _after_open_quote(doc: Doc) -> object:
    """The token right after an opening double quote (the quoted text's first token)."""
    def rule(d: Doc, i: int) -> bool | None:
        if i == 0 or not d.token(i - 1).rstrip().endswith('"'):
            return False
        tok = d.token(i)
        if not tok.strip() or '"' in tok:
            return False
        opening = d.text[: d.spans[i - 1][1]].count('"') % 2 == 1  # an odd count: the last quote opened
        return opening and not tok[:1].isspace()

    return tokens(doc, rule)


def _context_templates(rng: random.Random) -> list[str]:
    frames = ["{name} {past} a {noun} and {past} an {anoun}.", "{name} wanted to {verb} the {noun} and the {noun}.",
              '{name} said, "{verb} the {noun}," and {past} it.', "The {noun} went to {name} and to the {noun}.",
              'The sign read "{adj} {noun}" and "{adj} {noun}".', "An {anoun} and a {noun} {past} the {noun}.",
              "{name} {past} the {adj} {noun}; {name} {past} one {noun}."]
    slots = {"name": NAMES, "past": PAST, "noun": NOUNS, "anoun": ("engine", "old house", "empty table", "apple",
             "answer"), "verb": [v.capitalize() for v in VERBS] + list(VERBS), "adj": ADJ}
    return fill(rng, frames, slots, 60)


CONCEPTS: tuple[Concept, ...] = (
    Concept("time_unit", "lexical", "A word for a unit of time (minute, hour, day, week, month, year, century).",
            (r"\bunits? of time\b", r"\btime[- ]units?\b", r"\btime (periods?|intervals?|spans?|words?)\b",
             r"periods? of time", r"\bdurations?\b", r"\btemporal units?\b", r"\bmeasures? of time\b"),
            _time_unit, _time_templates),  # type: ignore[arg-type]
    Concept("food_word", "lexical", "A word for a food or drink (bread, wine, milk, honey, cheese, soup ...).",
            (r"\bfoods?\b", r"\bdrinks?\b", r"\bbeverages?\b", r"\bedibles?\b", r"\bmeals?\b", r"\bfoodstuffs?\b",
             r"\bnutriments?\b", r"\bnourishment\b", r"\bcuisine\b", r"\bgroceries\b"), _food,  # type: ignore[arg-type]
            _food_templates),
    Concept("emotion_word", "lexical", "A word naming an emotion or feeling (fear, joy, anger, sorrow, glad, "
            "afraid ...).", (r"\bemotions?\b", r"\bemotional\b", r"\bfeelings?\b", r"\bmoods?\b", r"\bsentiments?\b",
                             r"\baffective\b", r"\bpassions?\b"), _emotion, _emotion_templates),  # type: ignore[arg-type]
    Concept("occupation_word", "lexical", "A word for a person's occupation or trade (priest, doctor, soldier, "
            "teacher, merchant ...).", (r"\boccupations?\b", r"\boccupational\b", r"\bprofessions?\b",
                                        r"\bprofessionals?\b", r"\bjobs?\b", r"\btrades(people|men|man)?\b",
                                        r"\bvocations?\b", r"\bworkers?\b", r"\bcareers?\b"),
            _occupation, _occupation_templates),  # type: ignore[arg-type]
    Concept("conjunction", "lexical", "A conjunction joining words or clauses (and, but, or, because, although, "
            "if, unless ...).", (r"\bconjunctions?\b", r"\bconjunctive\b", r"\bconnectives?\b",
                                 r"\bcoordinat(ing|or|ors)\b", r"\bsubordinat(ing|or|ors)\b"),
            _conjunction, _conjunction_templates),  # type: ignore[arg-type]
    Concept("plural_noun", "morphology", "A noun in the plural (gardens, letters, children, cities).",
            (r"\bplurals?\b", r"\bplurali[sz]ed\b"), _plural, _plural_templates),  # type: ignore[arg-type]
    Concept("degree_form", "morphology", "A comparative or superlative form (older, smaller, better, largest, best).",
            (r"\bcomparatives?\b", r"\bsuperlatives?\b", r"-er\b.*-est\b", r"\bdegrees? of comparison\b"),
            _degree, _degree_templates),  # type: ignore[arg-type]
    Concept("paragraph_start", "position", "The first token of a paragraph (right after a blank line).",
            (r"(start|begin|beginning|first (word|token)|opening)s? (of|to|in) (a |the |each |every |new )*"
             r"paragraphs?", r"paragraph[- ](initial|start|opening)", r"after (a |the )?(blank|empty) lines?",
             r"after (a |the )?(double newline|paragraph break)"), _paragraph_start,  # type: ignore[arg-type]
            _paragraph_templates),
    Concept("list_item_start", "position", "The first word of a bulleted or numbered list item (after '- ', '* ' "
            "or '1. ' at the start of a line).", (r"\blist items?\b", r"\bitems? (of|in) (a |the )?lists?\b",
                                                  r"\bbullet", r"\bnumbered lists?\b", r"\benumerat",
                                                  r"\blist (entr(y|ies)|markers?)\b"),
            _list_item_start, _list_templates),  # type: ignore[arg-type]
    Concept("inside_backticks", "structural", "Any token inside an inline code span between backticks (`code` or "
            "``code``, as in Markdown or reStructuredText).", (r"back-?ticks?", r"\bbackquotes?\b", r"\binline code\b",
                                                             r"\bcode (spans?|literals?)\b"),
            _inside_backticks, _backticks_templates),  # type: ignore[arg-type]
    Concept("inside_url", "structural", "Any token of a web address (URL), after its 'http://', 'https://' or "
            "'www.'.", (r"\burls?\b", r"\bweb ?(addresses|address|links?|sites?|pages?)\b", r"\bhyperlinks?\b",
                        r"\bdomain names?\b"), _inside_url,  # type: ignore[arg-type]
            _url_templates),
    Concept("after_and", "context", "The token right after the word 'and' (what the conjunction joins on).",
            (r"after (the word |the conjunction |the token )?['\"\u2018\u201c]?and\b",
             r"follow(s|ing)? (the word )?['\"\u2018\u201c]?and\b"),
            _after_class(_in_pool(("and",))), _context_templates),  # type: ignore[arg-type]
    Concept("after_indefinite_article", "context", "The token right after the indefinite article 'a' or 'an' "
            "(usually the noun or adjective it introduces).",
            (r"\bindefinite articles?\b", r"after (the (word|article|token) )?['\"\u2018\u201c]an?['\"\u2019\u201d]",
             r"follow(s|ing)? (the (word|article) )?['\"\u2018\u201c]an?['\"\u2019\u201d]"),
            _after_class(_is_indefinite_article), _context_templates),  # type: ignore[arg-type]
    Concept("after_to", "context", "The token right after the word 'to' (an infinitive verb or the object of 'to').",
            (r"after (the word |the token |the particle |the preposition )?['\"\u2018\u201c]?to\b",
             r"follow(s|ing)? (the word )?['\"\u2018\u201c]?to\b", r"\binfinitives?\b"),
            _after_class(_in_pool(("to",))), _context_templates),  # type: ignore[arg-type]
    Concept("after_open_quote", "context", "The token right after an opening double quotation mark (the first "
            "token of the quoted text).",
            (r"after (an? |the )?(opening |open |left )?(double )?quot(e|es|ation)",
             r"follow(s|ing)? (an? |the )?(opening |open )?(double )?quot", r"\bopening quot",
             r"(start|beginning|first (word|token))s? (of|in) (a |the )?(quot(e|ation|ed)|direct speech)"),
            _after_open_quote, _context_templates),  # type: ignore[arg-type]
)
