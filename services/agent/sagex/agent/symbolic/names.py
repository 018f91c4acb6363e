"""Plain-English names and descriptions of predicate keys ("tag:NNS" -> "plural nouns")."""

from __future__ import annotations

from sagex.agent.symbolic import closed, resources

UPOS = {
    "NOUN": "nouns", "PROPN": "proper nouns", "VERB": "verbs", "AUX": "auxiliary verbs", "ADJ": "adjectives",
    "ADV": "adverbs", "ADP": "prepositions", "DET": "determiners", "PRON": "pronouns", "NUM": "numbers",
    "CCONJ": "coordinating conjunctions", "SCONJ": "subordinating conjunctions", "PART": "particles",
    "INTJ": "interjections", "PUNCT": "punctuation marks", "SYM": "symbols", "X": "other tokens",
}
PENN = {
    "NN": "singular nouns", "NNS": "plural nouns", "NNP": "singular proper nouns", "NNPS": "plural proper nouns",
    "VB": "base-form verbs", "VBD": "past-tense verbs", "VBG": "-ing verb forms", "VBN": "past participles",
    "VBP": "present-tense verbs", "VBZ": "third-person singular present verbs", "JJ": "adjectives",
    "JJR": "comparative adjectives", "JJS": "superlative adjectives", "RB": "adverbs", "RBR": "comparative adverbs",
    "RBS": "superlative adverbs", "CD": "cardinal numbers", "DT": "determiners", "IN": "prepositions",
    "PRP": "personal pronouns", "PRP$": "possessive pronouns", "MD": "modal verbs", "CC": "coordinating conjunctions",
    "WDT": "wh-determiners", "WP": "wh-pronouns", "WRB": "wh-adverbs", "TO": "the word 'to'",
    "UH": "interjections", "POS": "possessive endings", "EX": "existential 'there'", "RP": "verb particles",
    "-LRB-": "opening brackets", "-RRB-": "closing brackets", "``": "opening quotes", "''": "closing quotes",
    ",": "commas", ".": "sentence-final punctuation", ":": "colons and dashes", "HYPH": "hyphens",
}
MORPH = {
    "Number=Plur": "plural words", "Number=Sing": "singular words", "Tense=Past": "past-tense words",
    "Tense=Pres": "present-tense words", "Person=1": "first-person words", "Person=2": "second-person words",
    "Person=3": "third-person words", "Degree=Cmp": "comparative forms", "Degree=Sup": "superlative forms",
    "Degree=Pos": "plain (positive-degree) adjectives", "VerbForm=Ger": "gerunds", "VerbForm=Inf": "infinitives",
    "VerbForm=Part": "participles", "VerbForm=Fin": "finite verbs",
}
SUPERSENSE = {
    "noun.time": "words for times and periods", "noun.person": "words for people", "noun.location": "words for places",
    "noun.artifact": "words for man-made objects", "noun.animal": "animal words", "noun.food": "food and drink words",
    "noun.body": "body-part words", "noun.plant": "plant words", "noun.quantity": "units and quantities",
    "noun.communication": "words about communication", "noun.act": "words for actions",
    "noun.feeling": "words for feelings", "noun.group": "words for groups", "noun.state": "words for states",
    "noun.attribute": "words for qualities", "noun.event": "words for events", "noun.process": "words for processes",
    "noun.substance": "words for substances", "noun.object": "words for natural objects",
    "noun.phenomenon": "words for natural phenomena", "noun.cognition": "words for ideas and knowledge",
    "noun.possession": "words about money and possessions", "noun.relation": "words for relations",
    "noun.shape": "words for shapes", "noun.motive": "words for motives", "noun.Tops": "very general nouns",
    "verb.motion": "verbs of motion", "verb.communication": "verbs of speaking and writing",
    "verb.cognition": "verbs of thinking", "verb.perception": "verbs of perceiving", "verb.emotion": "verbs of feeling",
    "verb.possession": "verbs of having and giving", "verb.change": "verbs of change",
    "verb.creation": "verbs of making", "verb.consumption": "verbs of eating and using",
    "verb.contact": "verbs of touching and hitting", "verb.social": "verbs of social activity",
    "verb.competition": "verbs of competing", "verb.stative": "verbs of being", "verb.body": "verbs about the body",
    "verb.weather": "weather verbs", "adj.all": "descriptive adjectives",
    "adj.pert": "relational adjectives", "adj.ppl": "participial adjectives", "adv.all": "adverbs",
}
ENTITY = {
    "PERSON": "names of people", "GPE": "names of countries, cities and states", "ORG": "names of organisations",
    "DATE": "dates", "TIME": "times of day", "CARDINAL": "numbers", "ORDINAL": "ordinal numbers",
    "MONEY": "amounts of money", "PERCENT": "percentages", "NORP": "nationalities and groups",
    "LOC": "names of places", "FAC": "names of buildings and facilities", "PRODUCT": "product names",
    "EVENT": "names of events", "WORK_OF_ART": "titles of works", "LAW": "names of laws", "LANGUAGE": "languages",
    "QUANTITY": "measured quantities",
}
FIXED = {
    "cap:title": "capitalised words", "cap:upper": "all-caps words", "cap:lower": "lowercase words",
    "cap:mixed": "mixed-case words", "spell:digit": "numbers written in digits",
    "spell:has_digit": "tokens containing digits", "spell:punct": "punctuation",
    "spell:letters": "words spelled in letters",
    "spell:word_start": "word-initial tokens", "spell:continuation": "word-continuation pieces (inside a word)",
    "len:short": "short words (up to 3 letters)", "len:medium": "medium-length words", "len:long":
        "long words (8 letters or more)",
    "in:paren": "text inside parentheses", "in:bracket": "text inside square brackets",
    "in:brace": "text inside curly braces", "in:quote": "text inside quotation marks",
    "in:code": "text inside code (between backticks or in a fenced block)", "in:comment": "text inside code comments",
    "in:url": "text inside a URL (web address)", "depth:2": "text nested two or more brackets deep",
    "at:line_start": "the first word of a line", "at:line_end": "the last token of a line",
    "at:sent_start": "the first word of a sentence", "at:para_start": "the first word of a paragraph",
    "at:text_start": "the first word of a text", "list:item": "text in list items",
    "list:marker": "list bullets and item numbers",
}
# Positions one word on, in the words people use for them.
PREV_NAMES = {"at:sent_start": "the second word of a sentence (right after its first word)",
              "at:line_start": "the second word of a line (right after its first word)"}
# Supersenses whose WordNet hypernyms turn technical ("placental", "angiosperm"): a class
# under one of them is named with the everyday class too.
EVERYDAY = ("noun.animal", "noun.plant", "noun.food", "noun.body", "noun.person")
TAG_FAMILY = {"W": "wh-words (who, which, what, when, where, how)", "NN": "nouns", "VB": "verbs",
              "JJ": "adjectives", "RB": "adverbs", "PR": "pronouns"}
# Words the names show by their class as well: "a comma" reads better than "the word ','".
WORD_CLASS = {",": "a comma", ".": "a period", ":": "a colon", ";": "a semicolon", "!": "an exclamation mark",
              "?": "a question mark", "(": "an opening parenthesis", ")": "a closing parenthesis",
              "[": "an opening square bracket", "]": "a closing square bracket", "{": "an opening brace",
              "}": "a closing brace", '"': "a quotation mark", "'": "an apostrophe", "-": "a hyphen",
              "the": "the article 'the'", "a": "the article 'a'", "an": "the article 'an'", "\n": "a line break"}
KIND = {"after": "context", "tok": "lexical", "word": "lexical", "lemma": "lexical", "stem": "lexical",
        "pos": "grammar", "tag": "grammar", "morph": "grammar", "cls": "lexical", "ss": "meaning", "hyp": "meaning",
        "ent": "meaning", "cap": "spelling", "tags": "grammar", "spell": "spelling", "len": "spelling",
        "suffix": "lexical", "prefix": "lexical", "in": "structure", "depth": "structure", "at": "structure",
        "list": "structure", "prev": "context"}


def kind(key: str) -> str:
    return KIND.get(key.split(":", 1)[0], "other")


def _shown(value: str) -> str:
    if not value.strip():
        return "newline" if "\n" in value else "whitespace"
    return f"'{value}'"


def _synset_words(name: str) -> str:
    return resources.wordnet().synset(name).lemma_names()[0].replace("_", " ")


def name(key: str) -> str:
    """A short plain-English name of the tokens ``key`` holds on."""
    head, _, value = key.partition(":")
    if head == "prev":
        return PREV_NAMES.get(value) or f"tokens right after {_singular(name(value))}"
    if head == "after":
        if value == "sentence_end":
            return "tokens right after a period, '!' or '?' (as at the start of a sentence)"
        return f"tokens right after {WORD_CLASS.get(value, _shown(value))}"
    if key in FIXED:
        return FIXED[key]
    if head == "tok":
        return f"the token {_shown(value)}"
    if head in ("word", "lemma", "tok") and value in WORD_CLASS:
        return WORD_CLASS[value]
    if head == "tags":
        return TAG_FAMILY.get(value, f"{value}* words")
    if head == "word":
        return f"the word '{value}'"
    if head == "lemma":  # a word with no WordNet entry (a function word) has no other forms
        return f"forms of the word '{value}'" if resources.wordnet().synsets(value) else f"the word '{value}'"
    if head == "stem":
        return f"the word family '{value}-'"
    if head == "suffix":
        return f"words ending in -{value}"
    if head == "prefix":
        return f"words starting with {value}-"
    if head == "pos":
        return UPOS.get(value, f"{value} tokens")
    if head == "tag":
        return PENN.get(value, f"{value}-tagged words")
    if head == "morph":
        return MORPH.get(value, value.replace("=", " "))
    if head == "ss":
        return SUPERSENSE.get(value, value.replace(".", " ") + " words")
    if head == "hyp":
        words = _synset_words(value)
        # A taxonomic class ("placental", "vertebrate") read with the everyday class it falls in.
        lex = resources.wordnet().synset(value).lexname()
        everyday = SUPERSENSE.get(lex, "") if lex in EVERYDAY else ""
        plain = ("people" if lex == "noun.person" else everyday.split()[0].split("-")[0]) if everyday else ""
        return f"{words} words" + (f" ({everyday})" if everyday and plain not in words else "")
    if head == "ent":
        return ENTITY.get(value, f"{value} entities")
    if head == "cls":
        return closed.name(value)
    return key


def _singular(phrase: str) -> str:
    """'past-tense verbs' -> 'a past-tense verb'; names that are not plurals stay."""
    if phrase.startswith(("the ", "text ", "forms ", "a ", "an ")):
        return phrase
    words = phrase.split(" ")
    for i, w in enumerate(words):
        if w.endswith("s") and not w.endswith("ss") and w not in ("words",) or w == "words":
            words[i] = w[:-1] if not w.endswith("ies") else w[:-3] + "y"
            break
    phrase = " ".join(words)
    return ("an " if phrase[:1].lower() in "aeio" else "a ") + phrase


# Conjunctions of morphological features that grammar has one name for.
MORPH_PAIRS = {
    frozenset({"morph:VerbForm=Part", "morph:Tense=Pres"}): "-ing verb forms (present participles)",
    frozenset({"morph:VerbForm=Part", "morph:Tense=Past"}): "past participles (-ed/-en forms)",
    frozenset({"morph:VerbForm=Fin", "morph:Tense=Past"}): "past-tense verbs",
    frozenset({"morph:Number=Plur", "pos:NOUN"}): "plural nouns",
    frozenset({"pos:NUM", "spell:letters"}): "number words (numbers written out in letters)",
    frozenset({"tag:CD", "spell:letters"}): "number words (numbers written out in letters)",
}


# Where a model token sits in its word: said as a note on the other predicate.
PIECE_NOTES = {"spell:word_start": "at the start of a word", "spell:continuation": "inside a word"}


def conjunction_name(keys: tuple[str, ...]) -> str:
    if len(keys) == 1:
        return name(keys[0])
    if frozenset(keys) in MORPH_PAIRS:
        return MORPH_PAIRS[frozenset(keys)]
    first, second = keys
    if second in PIECE_NOTES:
        return f"{name(first)} ({PIECE_NOTES[second]})"
    if second.startswith("prev:"):
        return f"{name(first)} right after {_singular(name(second[5:]))}"
    if second.startswith("after:"):
        return f"{name(first)} {name(second).removeprefix('tokens ')}"
    if kind(second) == "structure":
        return f"{name(first)} ({name(second)})"
    if name(first).startswith("the "):  # one position or word: "the first word of a paragraph"
        return f"{name(first)}, when it is {_singular(name(second))}"
    return f"{name(first)} that are also {name(second)}"


def definition(key: str) -> str:
    """A gloss for meaning keys (WordNet's definition); empty for the others."""
    head, _, value = key.partition(":")
    if head == "hyp":
        return resources.wordnet().synset(value).definition()
    return ""
