"""Which concepts a run uses: the development set, the held-out set, and the user's
own (a Python entry point ``module:function`` returning concepts, or a JSONL file
of texts with labelled character spans)."""

from __future__ import annotations

import importlib
import json
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from sagex.activation.planted.concepts import AMBIGUOUS, NEG, POS, Concept, Doc

SETS = ("dev", "dev2", "dev3", "heldout", "all", "none")


class ConceptError(ValueError):
    """A concept (or a file of them) cannot be used; the message says what to fix."""


def select(which: str, extra: Sequence[str] = ()) -> list[Concept]:
    """The built-in set ``which`` plus every ``extra`` (``module:function`` or a ``.jsonl`` path)."""
    if which not in SETS:
        raise ConceptError(f"--concepts {which!r}: choose one of {', '.join(SETS)}")
    out: list[Concept] = []
    if which in ("dev", "all"):
        from sagex.activation.planted.dev import CONCEPTS

        out += CONCEPTS
    if which == "dev2":  # a second development set (not part of "all", which stays dev + held-out)
        from sagex.activation.planted.dev2 import CONCEPTS as DEV2

        out += DEV2
    if which == "dev3":  # a third development set, measured untouched before any explainer work on it
        from sagex.activation.planted.dev3 import CONCEPTS as DEV3

        out += DEV3
    if which in ("heldout", "all"):
        from sagex.activation.planted.heldout import CONCEPTS as HELDOUT

        out += HELDOUT
    for spec in extra:
        out += _load_extra(spec)
    names = [c.name for c in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConceptError(f"concept names must be unique; repeated: {', '.join(dupes)}")
    if not out:
        raise ConceptError("no concepts selected: use --concepts dev|dev2|dev3|heldout|all or add --concept")
    return out


def _load_extra(spec: str) -> list[Concept]:
    if spec.endswith(".jsonl"):
        return [jsonl_concept(Path(spec))]
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ConceptError(f"--concept {spec!r}: give module:function or a .jsonl file")
    try:
        made = getattr(importlib.import_module(module), attr)()
    except (ImportError, AttributeError) as exc:
        raise ConceptError(f"--concept {spec!r}: cannot load it ({exc})") from exc
    concepts = [made] if isinstance(made, Concept) else list(made) if isinstance(made, Iterable) else []
    if not concepts or not all(isinstance(c, Concept) for c in concepts):
        raise ConceptError(f"--concept {spec!r}: the function must return a Concept or a list of them")
    return concepts


def jsonl_concept(path: Path) -> Concept:
    """One concept from a JSONL file. Each line: ``{"text": ..., "spans": [[start, end], ...]}``
    (positive character spans; optional ``"ambiguous"`` spans). The concept's own fields
    (``"concept"``, ``"description"``, optional ``"kind"`` and ``"key_terms"``) appear on
    at least one line. Tokens overlapping a positive span are positive (the span's last
    token; earlier ones ambiguous); tokens of texts not in the file are unlabelled."""
    if not path.is_file():
        raise ConceptError(f"{path}: no such file")
    meta: dict[str, object] = {}
    texts: dict[str, tuple[list[tuple[int, int]], list[tuple[int, int]]]] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            for key in ("concept", "description", "kind", "key_terms"):
                if key in row:
                    if key in meta and meta[key] != row[key]:
                        raise ConceptError(f"{path}:{n}: {key} differs from an earlier line")
                    meta[key] = row[key]
            if "text" in row:
                spans = [(int(a), int(b)) for a, b in row.get("spans", [])]
                ambiguous = [(int(a), int(b)) for a, b in row.get("ambiguous", [])]
                text = str(row["text"])
                bad = [s for s in spans + ambiguous if not 0 <= s[0] < s[1] <= len(text)]
                if bad:
                    raise ConceptError(f"{path}:{n}: span {bad[0]} is outside the text (length {len(text)})")
                texts[text] = (spans, ambiguous)
        except (json.JSONDecodeError, TypeError, ValueError) as exc:
            if isinstance(exc, ConceptError):
                raise
            raise ConceptError(f"{path}:{n}: expected a JSON object with text and spans ({exc})") from exc
    if "concept" not in meta or "description" not in meta:
        raise ConceptError(f"{path}: no line names the concept and its description "
                           '({"concept": "my_concept", "description": "..."})')
    if not texts:
        raise ConceptError(f"{path}: no labelled texts")

    def label(doc: Doc) -> np.ndarray:
        if doc.text not in texts:
            return np.full(len(doc), AMBIGUOUS, np.int8)
        spans, ambiguous = texts[doc.text]
        labels = np.full(len(doc), NEG, np.int8)
        for group, value in ((ambiguous, AMBIGUOUS), (spans, POS)):
            for a, b in group:
                hit = [i for i, (s, e) in enumerate(doc.spans) if s < b and e > a]
                if hit:
                    labels[hit] = AMBIGUOUS
                    labels[hit[-1]] = value
        return labels

    def templates(_rng: random.Random) -> list[str]:
        return list(texts)

    try:
        return Concept(str(meta["concept"]), str(meta.get("kind", "user")), str(meta["description"]),
                       tuple(str(t) for t in meta.get("key_terms", ())), label, templates)  # type: ignore[attr-defined]
    except ValueError as exc:
        raise ConceptError(f"{path}: {exc}") from exc
