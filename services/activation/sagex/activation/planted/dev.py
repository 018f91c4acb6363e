"""The DEVELOPMENT concepts of the planted benchmark: explainer developers may read,
tune against and discuss these. The held-out set lives in ``heldout.py`` and must
not be read by anyone working on an explainer.

Every concept comes with templated documents that hold positives next to hard
negatives (the modal "may" beside the month "May", digits beside number words,
"only"/"family" beside -ly adverbs, a closed parenthesis before the token), so a
probe cannot pass by keying on a surface cue the concept does not name.
"""

from __future__ import annotations

import random
import re

from sagex.activation.planted.concepts import AMBIGUOUS, Concept, Doc, fill, state, tokens, word_set, words

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
_MODAL_MONTHS = {"May", "March", "August"}  # also a verb, an adjective
NUMBER_WORDS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
                "thirteen", "fifteen", "twenty", "thirty", "forty", "fifty", "hundred", "thousand", "million")
QUESTION_WORDS = ("who", "what", "when", "where", "why", "how", "which", "whom", "whose")
_LY_NOT_ADVERB = {"only", "family", "early", "holy", "apply", "reply", "supply", "july", "italy", "belly", "bully",
                  "lily", "rally", "ally", "fly", "jelly", "fully", "assembly", "anomaly", "butterfly",
                  "monopoly", "multiply", "comply", "imply", "ply", "rely", "sly", "dally", "tally", "folly"}
_LY_ADJECTIVE = {"friendly", "lovely", "likely", "ugly", "silly", "lonely", "elderly", "costly", "deadly", "lively",
                 "orderly", "daily", "weekly", "monthly", "yearly", "hourly", "early", "kindly", "only", "manly",
                 "worldly", "godly", "ungodly", "heavenly", "earthly", "bodily", "curly", "chilly", "hilly", "oily",
                 "jolly", "wily", "timely", "unlikely", "holy", "smelly", "woolly", "cowardly"}
_ING_NOT_VERB = {"thing", "nothing", "something", "anything", "everything", "string", "strings", "spring", "during",
                 "king", "ring", "sing", "bring", "wing", "sting", "swing", "ceiling", "morning", "evening",
                 "darling", "pudding", "lightning", "offspring", "duckling", "herring", "awning", "viking"}
_ED_NOT_VERB = {"need", "seed", "speed", "bed", "red", "shed", "feed", "breed", "hundred", "indeed", "proceed",
                "succeed", "exceed", "bleed", "embed", "sacred", "naked", "wicked", "kindred", "creed", "greed",
                "weed", "steed", "deed", "reed", "heed", "freed", "agreed", "sled", "fled", "led", "wed", "bred",
                "sped", "shred", "bled", "fed", "aged", "beloved", "learned", "blessed", "crooked", "ragged",
                "rugged", "wretched", "dogged", "jagged", "hatred", "ed", "ned", "ted", "fred", "med", "ped"}

NOUNS = ("garden", "letter", "river", "window", "market", "teacher", "village", "report", "ship", "table",
         "bridge", "farmer", "doctor", "house", "lamp", "song", "road", "horse", "queen", "engine")
VERBS = ("open", "close", "visit", "paint", "clean", "watch", "carry", "follow", "answer", "count")
PAST = ("opened", "closed", "visited", "painted", "cleaned", "watched", "carried", "followed", "answered",
        "counted", "walked", "jumped", "laughed", "finished", "started", "wanted", "needed", "played")
ING = ("opening", "closing", "visiting", "painting", "cleaning", "watching", "carrying", "following",
       "answering", "counting", "walking", "reading", "writing", "running", "singing", "building")
ADVERBS = ("quickly", "slowly", "quietly", "carefully", "suddenly", "gently", "rarely", "clearly", "badly",
           "happily", "easily", "loudly", "softly", "firmly", "openly", "nearly")
ADJ = ("old", "small", "bright", "quiet", "green", "heavy", "narrow", "famous", "simple", "empty")
NAMES = ("Anna", "Tom", "Maria", "Peter", "Ruth", "David", "Sarah", "James", "Leah", "Omar")


def _sentence_starts(text: str, start: int) -> bool:
    before = text[:start].rstrip()
    return not before or before[-1] in ".!?\n" or text[:start].endswith("\n")


# --- lexical -------------------------------------------------------------------------


def _month(doc: Doc) -> object:
    def pred(w: str, s: int) -> bool | None:
        if w not in MONTHS:
            return False
        if w in _MODAL_MONTHS:
            # Causal: only the words before tell the month from the verb ("in May" vs "May I").
            before = doc.text[max(0, s - 7): s].lower()
            return True if re.search(r"\b(in|of|since|until|early|late|last|next|by) $", before) else None
        return True

    return words(doc, pred)


def _month_templates(rng: random.Random) -> list[str]:
    frames = ["The {noun} opened in {month} {day}.", "The {noun} was built by {month} {day}.",
              "{name} wrote the {noun} in {month}.", "Rent is due on {day} {month} each year.",
              "In {month} the {noun} was quiet.",
              "You may {verb} the {noun} now.", "{name} may {verb} it later.", "They march to the {noun}.",
              "Soldiers march slowly past the {noun}.", "It may be an {adj} {noun}.", "We might {verb} the {noun}."]
    slots = {"noun": NOUNS, "month": MONTHS, "day": [str(d) for d in range(1, 29)], "name": NAMES, "verb": VERBS,
             "adj": ADJ}
    return fill(rng, frames, slots, 60)


def _number_word(doc: Doc) -> object:
    return words(doc, lambda w, _s: w.lower() in NUMBER_WORDS or (None if w.lower() == "one" else False))


def _number_templates(rng: random.Random) -> list[str]:
    frames = ["{name} bought {num} {noun}s.", "There were {num} {noun}s by the road.", "{name} bought {digit} {noun}s.",
              "There were {digit} {noun}s by the road.", "{name} bought some {noun}s.", "About {num} people came.",
              "About {digit} people came.", "Many {noun}s were {adj}.", "It took {num} days to {verb} the {noun}."]
    slots = {"name": NAMES, "num": NUMBER_WORDS, "digit": [str(n) for n in (2, 3, 5, 7, 12, 40, 100, 1000)],
             "noun": NOUNS, "adj": ADJ, "verb": VERBS}
    return fill(rng, frames, slots, 60)


def _digits(doc: Doc) -> object:
    def rule(d: Doc, i: int) -> bool | None:
        tok = d.token(i).strip()
        if not tok:
            return False
        if tok.isdigit():
            return True
        return None if any(c.isdigit() for c in tok) else False

    return tokens(doc, rule)


def _question_word(doc: Doc) -> object:
    return words(doc, word_set(QUESTION_WORDS))


def _question_templates(rng: random.Random) -> list[str]:
    frames = ["{q} did {name} {verb} the {noun}?", "Ask {name} {q} the {noun} was moved.", "{name} knows {q} to go.",
              "Then {name} went to the {noun}.", "The {noun} is there, and {name} is here.",
              "This {noun} is {adj}.", "That was the {adj} {noun}."]
    slots = {"q": [q.capitalize() if rng.random() < 0.5 else q for q in QUESTION_WORDS], "name": NAMES,
             "verb": VERBS, "noun": NOUNS, "adj": ADJ}
    return fill(rng, frames, slots, 50)


# --- morphology ----------------------------------------------------------------------


def _ly(doc: Doc) -> object:
    def pred(w: str, _s: int) -> bool | None:
        low = w.lower()
        if not low.endswith("ly") or low in _LY_NOT_ADVERB or len(low) < 5:
            return False
        return None if low in _LY_ADJECTIVE else True

    return words(doc, pred)


def _ly_templates(rng: random.Random) -> list[str]:
    frames = ["{name} {past} the {noun} {adv}.", "The {noun} moved {adv} toward the {noun}.",
              "{name} {adv} {past} the {noun}.", "Only the {noun} was {adj}.", "The family {past} the {noun}.",
              "Please reply to the {noun} and apply early.", "They supply the {noun} with a {adj} lamp.",
              "The {adj} {noun} stood in the {noun}."]
    slots = {"name": NAMES, "past": PAST, "noun": NOUNS, "adv": ADVERBS, "adj": ADJ}
    return fill(rng, frames, slots, 60)


def _ing(doc: Doc) -> object:
    def pred(w: str, _s: int) -> bool | None:
        low = w.lower()
        return low.endswith("ing") and len(low) >= 6 and low not in _ING_NOT_VERB

    return words(doc, pred)


def _ing_templates(rng: random.Random) -> list[str]:
    frames = ["{name} was {ing} the {noun}.", "After {ing} the {noun}, {name} slept.", "The {noun} kept {ing}.",
              "Nothing was left in the morning.", "Everything in the {noun} was {adj}.",
              "During the evening the king found a string.", "{name} will {verb} the {noun}.",
              "{name} {past} the {noun}."]
    slots = {"name": NAMES, "ing": ING, "noun": NOUNS, "adj": ADJ, "verb": VERBS, "past": PAST}
    return fill(rng, frames, slots, 60)


def _ed(doc: Doc) -> object:
    def pred(w: str, _s: int) -> bool | None:
        low = w.lower()
        return low.endswith("ed") and len(low) >= 5 and low not in _ED_NOT_VERB

    return words(doc, pred)


def _ed_templates(rng: random.Random) -> list[str]:
    frames = ["Yesterday {name} {past} the {noun}.", "The {noun} was {past} twice.", "{name} {past} and left.",
              "Indeed a hundred {noun}s need a red bed.", "They proceed to feed the {noun}.",
              "Today {name} will {verb} the {noun}.", "{name} can {verb} the {adj} {noun}."]
    slots = {"name": NAMES, "past": PAST, "noun": NOUNS, "verb": VERBS, "adj": ADJ}
    return fill(rng, frames, slots, 60)


# --- structural ----------------------------------------------------------------------


def _inside_parens(doc: Doc) -> object:
    def inside(before: str) -> bool | None:
        depth = 0
        for ch in before:
            depth = depth + 1 if ch == "(" else max(0, depth - 1) if ch == ")" else depth
        return depth > 0

    labels = state(doc, inside)
    for i in range(len(doc)):  # the brackets themselves: opening/closing, neither in nor out
        if any(c in doc.token(i) for c in "()"):
            labels[i] = AMBIGUOUS
    return labels


def _parens_templates(rng: random.Random) -> list[str]:
    frames = ["The {noun} (a {adj} {noun} near the {noun}) was {past}.", "{name} {past} the {noun} (twice).",
              "We {verb} the {noun} (see the {noun} below) and then the {noun}.",
              "The {noun} was {adj} and the {noun} was {adj}.", "{name} said the {noun} was {adj} (really) today.",
              "Call f(x, y) before g(z) and the {noun}."]
    slots = {"noun": NOUNS, "adj": ADJ, "past": PAST, "name": NAMES, "verb": VERBS}
    return fill(rng, frames, slots, 60)


def _inside_quotes(doc: Doc) -> object:
    labels = state(doc, lambda before: before.count('"') % 2 == 1)
    for i in range(len(doc)):
        if '"' in doc.token(i):
            labels[i] = AMBIGUOUS
    return labels


def _quotes_templates(rng: random.Random) -> list[str]:
    frames = ['{name} said, "The {noun} is {adj} today." Then {name} left.',
              '"Please {verb} the {noun}," {name} said quietly.', 'The sign read "{adj} {noun}" in red.',
              "{name} said that the {noun} was {adj}.", "The {noun} near the {noun} was {adj}.",
              'He wrote "{verb} it" and the {noun} {past}.']
    slots = {"name": NAMES, "noun": NOUNS, "adj": ADJ, "verb": VERBS, "past": PAST}
    return fill(rng, frames, slots, 60)


def _inside_comment(doc: Doc) -> object:
    def inside(before: str) -> bool | None:
        line = before[before.rfind("\n") + 1:]
        return "#" in line

    labels = state(doc, inside)
    for i in range(len(doc)):
        if "#" in doc.token(i):
            labels[i] = AMBIGUOUS
    return labels


def _comment_templates(rng: random.Random) -> list[str]:
    lines = ["x = {n}  # the {adj} {noun}", "total += {n}  # count the {noun}s", "# {verb} the {noun} first",
             "def {verb}_{noun}(items):", "    return len(items) + {n}", "for item in {noun}s:",
             "    print(item)  # show the {noun}", "result = {verb}({noun}, {n})", "if {noun} is None:",
             "    # nothing to {verb} here", "    return None"]
    slots = {"n": [str(n) for n in range(1, 40)], "adj": ADJ, "noun": NOUNS, "verb": VERBS}
    out = []
    for _ in range(50):
        chosen = [rng.choice(lines) for _ in range(6)]
        out.append("\n".join(re.sub(r"\{(\w+)\}", lambda m: rng.choice(list(slots[m.group(1)])), ln)
                             for ln in chosen))
    return out


# --- position ------------------------------------------------------------------------


_ABBREV = re.compile(r"\b(Mr|Mrs|Dr|St|e\.g|i\.e|etc|vs|No)\.\s*$")


def _sentence_start(doc: Doc) -> object:
    def rule(d: Doc, i: int) -> bool | None:
        start, end = d.spans[i]
        tok = d.text[start:end]
        stripped = tok.lstrip()
        if not stripped or not stripped[0].isalpha():
            return False
        first = start + len(tok) - len(stripped)
        if first > 0 and d.text[first - 1].isalpha():
            return False  # inside a word
        before = d.text[:first].rstrip()
        if not before:
            return None  # the document's first word: position 0 has no context
        if before[-1] in ".!?":
            return None if _ABBREV.search(d.text[:first]) or before.endswith("...") else True
        return False

    return tokens(doc, rule)


def _line_start(doc: Doc) -> object:
    def rule(d: Doc, i: int) -> bool | None:
        start, end = d.spans[i]
        tok = d.text[start:end]
        if not tok.strip():
            return False
        first = start + len(tok) - len(tok.lstrip())
        line = d.text[: first]
        if "\n" not in line:
            return False if line.strip() else None
        return not line[line.rfind("\n") + 1:].strip()

    return tokens(doc, rule)


def _line_templates(rng: random.Random) -> list[str]:
    out = []
    for _ in range(50):
        rows = []
        for _ in range(rng.randint(3, 6)):
            words_ = [rng.choice(NOUNS + ADJ + VERBS) for _ in range(rng.randint(3, 8))]
            rows.append(" ".join(words_))
        out.append("\n".join(rows))
    return out


def _sentence_templates(rng: random.Random) -> list[str]:
    frames = ["The {noun} was {adj}. {name} {past} it.", "{name} {past} the {noun}. Then the {noun} was {adj}.",
              "Is the {noun} {adj}? Yes, the {noun} is {adj}.", "Dr. {name} {past} the {noun} and the {noun}.",
              "The {adj} {noun}, the {adj} {noun} and the {noun} stood there."]
    slots = {"noun": NOUNS, "adj": ADJ, "name": NAMES, "past": PAST}
    return fill(rng, frames, slots, 60)


# --- context -------------------------------------------------------------------------


def _after_word(word: str) -> object:
    def label(doc: Doc) -> object:
        def rule(d: Doc, i: int) -> bool | None:
            return i > 0 and d.token(i - 1).strip().lower() == word

        return tokens(doc, rule)

    return label


def _after_comma(doc: Doc) -> object:
    return tokens(doc, lambda d, i: i > 0 and d.token(i - 1).strip() == ",")


def _context_templates(rng: random.Random) -> list[str]:
    frames = ["{name} {past} the {noun}, the {noun} and a {noun}.", "This {noun}, that {noun}, a {adj} {noun}.",
              "The {adj} {noun} saw a {noun}; {name} saw the {noun}.", "Then, {name} {past} this {noun}.",
              "A {noun}, {adj} and {adj}, {past} the {noun}."]
    slots = {"name": NAMES, "past": PAST, "noun": NOUNS, "adj": ADJ}
    return fill(rng, frames, slots, 60)


CONCEPTS: tuple[Concept, ...] = (
    Concept("month_name", "lexical", "The name of a calendar month (January, May, September ...).",
            (r"\bmonths?\b", r"\bcalendar\b"), _month, _month_templates),  # type: ignore[arg-type]
    Concept("number_word", "lexical", "A number written out as a word (three, twenty, hundred), not in digits.",
            (r"number words?", r"numerals? (written|spelled)", r"(spelled|written)[- ]out numbers?",
             r"\bnumber names?\b", r"\bcardinal"), _number_word, _number_templates),  # type: ignore[arg-type]
    Concept("digit_number", "lexical", "A digit of a number written in numerals (0-9).",
            (r"\bdigits?\b", r"\bnumerals?\b", r"numbers? (written )?in digits", r"\bnumeric"), _digits,  # type: ignore[arg-type]
            _number_templates),
    Concept("question_word", "lexical", "A question word (who, what, when, where, why, how, which).",
            (r"question words?", r"\binterrogative", r"\bwh-?words?"), _question_word,  # type: ignore[arg-type]
            _question_templates),
    Concept("ly_adverb", "morphology", "An adverb ending in -ly (quickly, carefully).",
            (r"\badverbs?\b", r"-ly\b", r"\bly\b"), _ly, _ly_templates),  # type: ignore[arg-type]
    Concept("ing_verb", "morphology", "A verb form ending in -ing (a present participle or gerund: running).",
            (r"-ing\b", r"\bing\b", r"\bgerunds?\b", r"present participles?", r"progressive"), _ing,  # type: ignore[arg-type]
            _ing_templates),
    Concept("ed_verb", "morphology", "A past-tense or past-participle verb ending in -ed (walked, opened).",
            (r"-ed\b", r"\bed\b", r"past[- ]tense", r"past participles?"), _ed, _ed_templates),  # type: ignore[arg-type]
    Concept("inside_parentheses", "structural", "Any token inside an open pair of parentheses (after '(' and "
            "before its ')').", (r"parenthes[ie]s", r"parenthetical", r"round brackets?", r"brackets?"),
            _inside_parens, _parens_templates),  # type: ignore[arg-type]
    Concept("inside_quotes", "structural", "Any token inside double quotation marks (quoted speech or text).",
            (r"quot(e|es|ed|ation)", r"direct speech", r"\bdialogue\b"), _inside_quotes,  # type: ignore[arg-type]
            _quotes_templates),
    Concept("inside_code_comment", "structural", "Any token of a code comment, after '#' on the same line.",
            (r"\bcomments?\b", r"#"), _inside_comment, _comment_templates),  # type: ignore[arg-type]
    Concept("sentence_start", "position", "The first word of a sentence (after '.', '!' or '?').",
            (r"(start|begin|beginning|first word|opening)s? (of|to|in) (a |the |each |every |new )*sentences?",
             r"sentence[- ](initial|start|opening)", r"after (a |the )?(full stop|period)"),
            _sentence_start, _sentence_templates),  # type: ignore[arg-type]
    Concept("line_start", "position", "The first token of a line (right after a newline).",
            (r"(start|begin|beginning|first (word|token))s? (of|to|on|in) (a |the |each |every |new )*lines?",
             r"line[- ](initial|start)", r"after (a |the )?(newline|line break)"), _line_start, _line_templates),  # type: ignore[arg-type]
    Concept("after_the", "context", "The token right after the word 'the' (what the definite article introduces).",
            (r"after (the word |the article )?['\"]?the\b['\"]?", r"definite article", r"follow(s|ing)? ['\"]?the\b"),
            _after_word("the"), _context_templates),  # type: ignore[arg-type]
    Concept("after_comma", "context", "The token right after a comma.",
            (r"after (a )?commas?", r"follow(s|ing)? (a )?commas?"), _after_comma,  # type: ignore[arg-type]
            _context_templates),
)
