"""Documents for the probes: a seeded sample of the project's corpus plus each
concept's templated documents, tokenised exactly as the activation service does,
split into train and test by document."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sagex.activation.lm import TruncatedLM
from sagex.activation.planted.concepts import AMBIGUOUS, Concept, Doc

TEST_PERCENT = 30


@dataclass(frozen=True)
class Sample:
    doc: Doc
    ids: tuple[int, ...]  # with the model's prefix (BOS or nothing)
    offset: int  # len(prefix): hidden state row of content token i is offset + i
    split: str  # "train" | "test"
    source: str  # "corpus" or "template:<concept>"


def split_of(text: str) -> str:
    bucket = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % 100
    return "test" if bucket < TEST_PERCENT else "train"


def tokenize(lm: TruncatedLM, text: str, max_tokens: int) -> tuple[Doc, tuple[int, ...]]:
    enc = lm.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc.input_ids)[:max_tokens]
    spans = [tuple(map(int, s)) for s in enc.offset_mapping][:max_tokens]
    end = spans[-1][1] if spans else 0
    doc = Doc(text[:end], tuple(spans))  # type: ignore[arg-type]
    return doc, (*lm.prefix, *ids)


def corpus_texts(corpus_dir: Path, count: int, seed: int) -> list[str]:
    from sagex.activation.assets.corpus import load_documents

    docs = load_documents(corpus_dir, "train")  # the exemplar and held-out splits stay untouched
    rng = random.Random(seed)
    return [d.text for d in rng.sample(docs, min(count, len(docs)))]


def build_samples(lm: TruncatedLM, concepts: Sequence[Concept], corpus: Sequence[str], seed: int,
                  max_tokens: int = 128, templates_per_concept: int | None = None) -> list[Sample]:
    rng = random.Random(seed)
    sources: list[tuple[str, str]] = [("corpus", t) for t in corpus]
    for concept in concepts:
        made = concept.templates(rng)
        sources += [(f"template:{concept.name}", t) for t in made[:templates_per_concept]]
    out, seen = [], set()
    for source, text in sources:
        if text in seen or not text.strip():
            continue
        seen.add(text)
        doc, ids = tokenize(lm, text, max_tokens)
        if len(doc) >= 2:
            out.append(Sample(doc, ids, len(lm.prefix), split_of(text), source))
    return out


def labels_for(concept: Concept, samples: Sequence[Sample]) -> list[np.ndarray]:
    """Per sample, the concept's labels; position 0 of the sequence (the attention sink,
    which SAEs are trained without) is always ambiguous."""
    out = []
    for s in samples:
        lab = np.asarray(concept.label(s.doc), np.int8)
        if lab.shape != (len(s.doc),):
            raise ValueError(f"concept {concept.name}: its labeller returned {lab.shape[0] if lab.ndim else 0} "
                             f"labels for {len(s.doc)} tokens")
        if s.offset == 0:
            lab = lab.copy()
            lab[0] = AMBIGUOUS
        out.append(lab)
    return out


def hidden_states(lm: TruncatedLM, layer: int, samples: Sequence[Sample], batch_tokens: int = 4096
                  ) -> list[np.ndarray]:
    """Residual stream at ``layer`` for every content token of every sample (float32)."""
    out: list[np.ndarray | None] = [None] * len(samples)
    order = sorted(range(len(samples)), key=lambda i: len(samples[i].ids))
    batch: list[int] = []

    def flush() -> None:
        states = lm.hidden_states([samples[i].ids for i in batch])[layer]
        for i, h in zip(batch, states, strict=True):
            out[i] = h[samples[i].offset:].float().cpu().numpy()
        batch.clear()

    for i in order:
        if batch and (len(batch) + 1) * len(samples[i].ids) > batch_tokens:
            flush()
        batch.append(i)
    if batch:
        flush()
    return out  # type: ignore[return-value]
