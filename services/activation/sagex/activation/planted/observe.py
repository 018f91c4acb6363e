"""Can an explainer observe each planted concept? The benchmark's explainers see only
exemplars mined from the first ``mining_tokens`` tokens of the corpus's exemplar split;
a concept that occurs there too rarely (month names in a corpus of code docs, fortunes
and the Bible) looks dead to every explainer, whatever its probe's quality. The build
counts, per concept, its positive tokens in the exemplar split in the miner's order
and records how many tokens a scan needs to meet ``MIN_POSITIVES`` of them; the
benchmark then scans at least that many (``sage bench planted --mining-tokens auto``)
and reports the counts beside the recovery table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sagex.activation.planted.concepts import POS, Concept, Doc

MIN_POSITIVES = 5  # positive tokens a scan must hold for a concept to count as observable
MAX_SCAN_TOKENS = 400_000  # the activation service's default mining budget per split


@dataclass(frozen=True)
class Observed:
    concept: str
    positives: int  # positive tokens in the scanned part of the exemplar split
    scanned_tokens: int
    tokens_to_first: int | None  # tokens of the split a scan needs to hold its first positive
    tokens_to_min: int | None  # ... to hold MIN_POSITIVES of them (None: the scanned part holds fewer)


def observe(tokenizer: Any, concepts: Sequence[Concept], corpus_dir: Path,
            max_tokens: int = MAX_SCAN_TOKENS) -> dict[str, dict[str, Any]]:
    """Per concept: its positives in the first ``max_tokens`` tokens of the exemplar split
    (documents in corpus order, as the miner reads them) and the scan length at which the
    first and the ``MIN_POSITIVES``-th occur; ``at`` lists the token offset of each positive."""
    from sagex.activation.assets.corpus import iter_documents

    at: dict[str, list[int]] = {c.name: [] for c in concepts}
    scanned = 0
    for doc in iter_documents(corpus_dir, "exemplar"):
        enc = tokenizer(doc.text, add_special_tokens=False, return_offsets_mapping=True)
        spans = [tuple(map(int, s)) for s in enc.offset_mapping][: max_tokens - scanned]
        if not spans:
            break
        tokenised = Doc(doc.text[: spans[-1][1]], tuple(spans))  # type: ignore[arg-type]
        for concept in concepts:
            labels = np.asarray(concept.label(tokenised), np.int8)
            at[concept.name] += [scanned + int(i) + 1 for i in np.flatnonzero(labels == POS)]
        scanned += len(spans)
        if scanned >= max_tokens:
            break
    out = {}
    for concept in concepts:
        offsets = at[concept.name]
        obs = Observed(concept.name, len(offsets), scanned, offsets[0] if offsets else None,
                       offsets[MIN_POSITIVES - 1] if len(offsets) >= MIN_POSITIVES else None)
        out[concept.name] = {**asdict(obs), "at": offsets[:50]}
    return out
