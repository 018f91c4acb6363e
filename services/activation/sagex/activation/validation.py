"""Request validation: every client mistake becomes INVALID_ARGUMENT (or NOT_FOUND)
with one field violation per problem, each saying what to fix."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sagex.activation.config import ActivationConfig
from sagex.activation.encode import FeatureIds, Selection, Threshold, TopK
from sagex.activation.sae import LoadedSae
from sagex.api.activation.v1 import activation_service_pb2 as pb
from sagex.api.common.v1 import types_pb2
from sagex.server.errors import FieldViolation, InvalidArgument, NotFound

SPLITS = {
    types_pb2.CORPUS_SPLIT_UNSPECIFIED: "exemplar",
    types_pb2.CORPUS_SPLIT_TRAIN: "train",
    types_pb2.CORPUS_SPLIT_EXEMPLAR: "exemplar",
    types_pb2.CORPUS_SPLIT_HELDOUT: "heldout",
}


MAX_BATCH_ID_CHARS = 128


@dataclass(frozen=True)
class Limits:
    config: ActivationConfig
    vocab_size: int


def lookup_sae(saes: dict[str, LoadedSae], sae_id: str) -> LoadedSae:
    if not sae_id:
        raise InvalidArgument.one("sae_id", f"required; configured SAEs: {', '.join(sorted(saes))}")
    sae = saes.get(sae_id)
    if sae is None:
        raise NotFound("sae", sae_id, f"configured SAEs: {', '.join(sorted(saes))}")
    return sae


def check_texts(texts: Sequence[str], config: ActivationConfig, field: str = "texts") -> list[FieldViolation]:
    problems = []
    if len(texts) > config.max_texts_per_batch:
        problems.append(FieldViolation(
            field, f"{len(texts)} texts; send at most {config.max_texts_per_batch} per batch"))
    for i, text in enumerate(texts):
        if not text:  # whitespace is text: " " is a token like any other
            problems.append(FieldViolation(f"{field}[{i}]", "empty text; send at least one character"))
        elif len(text) > config.max_chars_per_text:
            problems.append(
                FieldViolation(f"{field}[{i}]", f"{len(text)} characters; the limit is {config.max_chars_per_text}")
            )
    return problems


def check_token_counts(ids: Sequence[Sequence[int]], config: ActivationConfig, field: str) -> None:
    problems = [
        FieldViolation(f"{field}[{i}]", f"{len(t)} tokens; the limit is {config.max_tokens_per_text}, split the text")
        for i, t in enumerate(ids)
        if len(t) > config.max_tokens_per_text
    ]
    problems += [FieldViolation(f"{field}[{i}]", "text has no tokens") for i, t in enumerate(ids) if not t]
    if problems:
        raise InvalidArgument(problems)


def check_feature_ids(
    ids: Sequence[int], sae: LoadedSae, config: ActivationConfig, field: str, limit: int | None = None
) -> list[FieldViolation]:
    limit = config.max_feature_ids if limit is None else limit
    problems = []
    if not ids:
        problems.append(FieldViolation(field, "list at least one feature id"))
    if len(ids) > limit:
        problems.append(FieldViolation(field, f"{len(ids)} ids; at most {limit}"))
    bad = sorted({i for i in ids if i >= sae.params.d_sae})
    if bad:
        problems.append(
            FieldViolation(field, f"ids {bad[:5]} out of range: SAE {sae.id!r} has features 0..{sae.params.d_sae - 1}")
        )
    if len(set(ids)) != len(ids):
        problems.append(FieldViolation(field, "ids must be distinct"))
    return problems


def validate_tokenize(req: pb.TokenizeRequest, config: ActivationConfig) -> list[str]:
    problems = check_texts(req.texts, config)
    if not req.texts:
        problems.append(FieldViolation("texts", "send at least one text"))
    if problems:
        raise InvalidArgument(problems)
    return list(req.texts)


@dataclass(frozen=True)
class ActivationBatch:
    batch_id: str
    sae: LoadedSae
    texts: list[str] | None
    token_ids: list[list[int]] | None
    selection: Selection


def validate_batch(req: pb.StreamActivationsRequest, saes: dict[str, LoadedSae], limits: Limits) -> ActivationBatch:
    config = limits.config
    sae = lookup_sae(saes, req.sae_id)
    problems: list[FieldViolation] = []
    if len(req.batch_id) > MAX_BATCH_ID_CHARS:
        problems.append(FieldViolation("batch_id", f"at most {MAX_BATCH_ID_CHARS} characters"))
    if bool(req.texts) == bool(req.token_ids):
        problems.append(FieldViolation("texts", "set exactly one of texts and token_ids, with at least one prompt"))
    problems += check_texts(req.texts, config)
    token_ids = [list(t.ids) for t in req.token_ids] if req.token_ids else None
    if token_ids is not None:
        if len(token_ids) > config.max_texts_per_batch:
            problems.append(FieldViolation("token_ids", f"at most {config.max_texts_per_batch} prompts per batch"))
        for i, ids in enumerate(token_ids):
            bad = [t for t in ids if not 0 <= t < limits.vocab_size]
            if bad:
                problems.append(FieldViolation(
                    f"token_ids[{i}]", f"ids {bad[:3]} outside the vocabulary 0..{limits.vocab_size - 1}"))
    selection: Selection | None = None
    kind = req.WhichOneof("selection")
    if kind is None:
        problems.append(FieldViolation("selection", "set one of features, top_k or threshold"))
    elif kind == "features":
        ids = list(req.features.feature_ids)
        problems += check_feature_ids(ids, sae, config, "features.feature_ids")
        selection = FeatureIds(tuple(sorted(ids)))
    elif kind == "top_k":
        if not 1 <= req.top_k.k <= config.max_top_k:
            problems.append(FieldViolation("top_k.k", f"must be 1..{config.max_top_k}, got {req.top_k.k}"))
        selection = TopK(req.top_k.k)
    else:
        value = req.threshold.min_activation
        if not value >= 0 or value == float("inf"):  # also rejects NaN
            problems.append(FieldViolation("threshold.min_activation", f"must be a finite number >= 0, got {value}"))
        selection = Threshold(value)
    if problems:
        raise InvalidArgument(problems)
    assert selection is not None
    return ActivationBatch(req.batch_id, sae, list(req.texts) or None, token_ids, selection)


@dataclass(frozen=True)
class MineQuery:
    sae: LoadedSae
    feature_ids: list[int]
    split: str
    top_k: int
    bands: int
    per_band: int
    random: int
    seed: int


def validate_mine(req: pb.MineExemplarsRequest, saes: dict[str, LoadedSae], config: ActivationConfig) -> MineQuery:
    sae = lookup_sae(saes, req.sae_id)
    problems = check_feature_ids(list(req.feature_ids), sae, config, "feature_ids")
    bounds = {"top_k": 100, "quantile_bands": 10, "per_band": 50, "random_non_activating": 100}
    for name, hi in bounds.items():
        if getattr(req, name) > hi:
            problems.append(FieldViolation(name, f"must be 0..{hi}, got {getattr(req, name)}"))
    if req.split not in SPLITS:
        problems.append(FieldViolation("split", f"unknown split {req.split}"))
    if problems:
        raise InvalidArgument(problems)
    return MineQuery(
        sae, list(req.feature_ids), SPLITS[req.split], req.top_k or 10, req.quantile_bands, req.per_band,
        req.random_non_activating, req.seed,
    )


def validate_stats(
    req: pb.GetFeatureStatisticsRequest, saes: dict[str, LoadedSae], config: ActivationConfig
) -> tuple[LoadedSae, str, list[int]]:
    sae = lookup_sae(saes, req.sae_id)
    ids = list(req.feature_ids)
    # Statistics are cheap per feature, so any number up to d_sae may be asked for.
    problems = check_feature_ids(ids, sae, config, "feature_ids", limit=sae.params.d_sae) if ids else []
    if req.split not in SPLITS:
        problems.append(FieldViolation("split", f"unknown split {req.split}"))
    if problems:
        raise InvalidArgument(problems)
    return sae, SPLITS[req.split], ids or list(range(sae.params.d_sae))


def validate_build(
    req: pb.BuildExemplarIndexRequest, saes: dict[str, LoadedSae]
) -> tuple[LoadedSae, str, float]:
    sae = lookup_sae(saes, req.sae_id)
    problems: list[FieldViolation] = []
    if req.split not in SPLITS:
        problems.append(FieldViolation("split", f"unknown split {req.split}"))
    interval = req.interval_seconds or 1.0
    if not 0.1 <= interval <= 60:  # also rejects NaN
        problems.append(FieldViolation("interval_seconds", f"must be 0.1..60 (or 0 for 1), got {req.interval_seconds}"))
    if problems:
        raise InvalidArgument(problems)
    return sae, SPLITS[req.split], interval
