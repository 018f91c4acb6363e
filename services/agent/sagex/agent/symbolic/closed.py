"""Closed word classes of English that neither the tagger's tags nor WordNet's
hierarchy name: negation words, subject and object pronouns, demonstratives,
quantifiers, degree adverbs, reflexives, articles, subordinating conjunctions. WordNet has no entries for most function
words, and a Penn tag lumps "not" with every adverb, so a feature that fires on
"not", "never" and "nor" would otherwise read as "adverbs after a lowercase word".

Each class is a complete list (closed classes are small), so it serves both as a
predicate ("cls:NAME") and as the fresh members its probes swap in."""

from __future__ import annotations

# name -> (plain-English name, members in lowercase). Members are whole words as the tagger
# splits them ("n't" of "don't", "not" of "cannot").
CLASSES: dict[str, tuple[str, tuple[str, ...]]] = {
    "negation": ("negation words (not, no, never, nor)",
                 ("not", "n't", "no", "never", "nor", "none", "nothing", "nobody", "neither", "nowhere", "noone")),
    "subject_pronoun": ("subject pronouns (I, you, he, she, we, they)",
                        ("i", "you", "he", "she", "it", "we", "they", "thou", "ye")),
    "object_pronoun": ("object pronouns (me, him, her, us, them)",
                       ("me", "you", "him", "her", "it", "us", "them", "thee")),
    "reflexive": ("reflexive pronouns (myself, themselves)",
                  ("myself", "yourself", "himself", "herself", "itself", "ourselves", "yourselves", "themselves",
                   "oneself")),
    "demonstrative": ("demonstratives (this, that, these, those)", ("this", "that", "these", "those")),
    "quantifier": ("quantifiers (all, some, many, every, each)",
                   ("all", "some", "any", "every", "each", "many", "much", "few", "several", "most", "both",
                    "either", "enough", "more", "less", "fewer")),
    "article": ("articles (a, an, the)", ("a", "an", "the")),
    "indefinite_article": ("indefinite articles (a, an)", ("a", "an")),
    "subordinator": ("subordinating conjunctions (because, although, if, while)",
                     ("because", "although", "though", "if", "unless", "while", "whereas", "whether", "since",
                      "until", "once", "lest")),
    "degree": ("degree adverbs (very, too, quite, rather)",
               ("very", "too", "so", "quite", "rather", "extremely", "really", "fairly", "somewhat", "highly",
                "slightly", "almost", "nearly", "completely", "totally", "entirely", "barely", "hardly")),
}
_BY_WORD: dict[str, list[str]] = {}
for _name, (_, _words) in CLASSES.items():
    for _w in _words:
        _BY_WORD.setdefault(_w, []).append(_name)


def classes_of(word: str) -> list[str]:
    """The closed classes ``word`` belongs to (case-insensitive), as "cls:NAME" keys."""
    return [f"cls:{c}" for c in _BY_WORD.get(word.lower(), ())]


def name(value: str) -> str:
    return CLASSES[value][0] if value in CLASSES else f"{value} words"


def members(value: str) -> list[str]:
    """The class's members as they are written on their own (the "n't" piece left out)."""
    return [w if w != "i" else "I" for w in CLASSES.get(value, ("", ()))[1] if w.isalpha()]
