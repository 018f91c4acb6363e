"""GetFeatureEffects and SteerGenerate: validation and thin glue over ``effects`` and
``steering``. Mixed into ActivationServicer, which provides ``engine``, ``config`` and
``output``."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from grpc import aio

from sagex.activation.config import ActivationConfig
from sagex.activation.effects import OutputHeadError, logit_lens
from sagex.activation.outputside import OutputSide
from sagex.activation.sae import LoadedSae
from sagex.activation.steering import Mode, Positions, Steer
from sagex.activation.validation import check_feature_ids, check_texts, check_token_counts, lookup_sae
from sagex.api.activation.v1 import activation_service_pb2 as pb
from sagex.server.errors import FailedPrecondition, FieldViolation, InvalidArgument, Unavailable

MAX_EFFECT_TOP_K = 100
DEFAULT_EFFECT_TOP_K = 20
DEFAULT_NEW_TOKENS = 16
MAX_TARGET_KL = 10.0
MAX_TEMPERATURE = 2.0
STEER_TIMEOUT_S = 600.0
STEERING_DISABLED = (
    "steered generation is off on this server: it needs the full model in memory. Start the activation "
    "service with steering enabled (`steering = true` under [activation] in its TOML config, or "
    "ActivationConfig(steering=True))"
)


@dataclass(frozen=True)
class SteerQuery:
    sae: LoadedSae
    feature: int
    mode: Mode
    strength: float | None
    target_kl: float | None
    prompts: list[str]
    max_new_tokens: int
    temperature: float
    seed: int
    positions: Positions


def validate_effects(req: pb.GetFeatureEffectsRequest, saes: dict[str, LoadedSae], config: ActivationConfig,
                     ) -> tuple[LoadedSae, list[int], int]:
    sae = lookup_sae(saes, req.sae_id)
    problems = check_feature_ids(list(req.feature_ids), sae, config, "feature_ids")
    if req.top_k > MAX_EFFECT_TOP_K:
        problems.append(FieldViolation("top_k", f"must be 0..{MAX_EFFECT_TOP_K}, got {req.top_k}"))
    if problems:
        raise InvalidArgument(problems)
    return sae, list(req.feature_ids), req.top_k or DEFAULT_EFFECT_TOP_K


def validate_steer(req: pb.SteerGenerateRequest, saes: dict[str, LoadedSae], config: ActivationConfig) -> SteerQuery:
    sae = lookup_sae(saes, req.sae_id)
    problems = check_feature_ids([req.feature_id], sae, config, "feature_id")
    mode: Mode = "clamp" if req.mode == pb.STEER_MODE_CLAMP else "add"
    if req.mode not in (pb.STEER_MODE_UNSPECIFIED, pb.STEER_MODE_ADD, pb.STEER_MODE_CLAMP):
        problems.append(FieldViolation("mode", f"unknown mode {req.mode}; use ADD or CLAMP"))
    which = req.WhichOneof("strength_setting")
    strength = target = None
    if which is None:
        problems.append(FieldViolation("strength", "set strength or target_kl"))
    elif which == "strength":
        strength = req.strength
        if not math.isfinite(strength) or abs(strength) > config.max_steer_strength:
            problems.append(FieldViolation(
                "strength", f"must be finite with |strength| <= {config.max_steer_strength:g}, got {strength}"))
    else:
        target = req.target_kl
        if not math.isfinite(target) or not 0 < abs(target) <= MAX_TARGET_KL:
            problems.append(FieldViolation(
                "target_kl", f"must be 0 < |target_kl| <= {MAX_TARGET_KL:g} nats, got {target}"))
        if mode == "clamp":
            problems.append(FieldViolation("target_kl", "target_kl searches an additive strength; use mode ADD"))
    if not req.prompts:
        problems.append(FieldViolation("prompts", "send at least one prompt"))
    if len(req.prompts) > config.max_steer_prompts:
        problems.append(FieldViolation("prompts", f"{len(req.prompts)} prompts; at most {config.max_steer_prompts}"))
    problems += check_texts(list(req.prompts)[: config.max_steer_prompts], config, "prompts")
    if req.max_new_tokens > config.max_steer_new_tokens:
        problems.append(FieldViolation(
            "max_new_tokens",
            f"must be 0..{config.max_steer_new_tokens} (0 uses {DEFAULT_NEW_TOKENS}), got {req.max_new_tokens}"))
    if not 0 <= req.temperature <= MAX_TEMPERATURE:  # also rejects NaN
        problems.append(FieldViolation(
            "temperature", f"must be 0..{MAX_TEMPERATURE:g} (0 is greedy), got {req.temperature}"))
    if req.positions not in (pb.STEER_POSITIONS_UNSPECIFIED, pb.STEER_POSITIONS_LAST_AND_GENERATED,
                             pb.STEER_POSITIONS_ALL):
        problems.append(FieldViolation("positions", f"unknown positions {req.positions}"))
    if problems:
        raise InvalidArgument(problems)
    return SteerQuery(
        sae, req.feature_id, mode, strength, target, list(req.prompts),
        req.max_new_tokens or min(DEFAULT_NEW_TOKENS, config.max_steer_new_tokens), float(req.temperature),
        int(req.seed), "all" if req.positions == pb.STEER_POSITIONS_ALL else "last_and_generated",
    )


class OutputRpcs:
    """The two output-side RPCs; the servicer supplies ``engine``, ``config`` and ``_output``."""

    config: ActivationConfig
    _output: OutputSide | None

    @property
    def output(self) -> OutputSide:
        self.engine  # type: ignore[attr-defined]  # UNAVAILABLE while loading  # noqa: B018
        if self._output is None:
            raise Unavailable("the output side is still loading; retry shortly", retry_after_s=2.0)
        return self._output

    async def GetFeatureEffects(
        self, request: pb.GetFeatureEffectsRequest, context: aio.ServicerContext
    ) -> pb.GetFeatureEffectsResponse:
        engine = self.engine  # type: ignore[attr-defined]
        sae, ids, k = validate_effects(request, engine.saes, self.config)
        out = self.output
        try:
            lenses = await asyncio.to_thread(
                logit_lens, out.head, out.decoder, sae.id, ids, k, frozenset(engine.lm.special_ids))
        except OutputHeadError as exc:  # an SAE served from a format whose decoder is not read here
            raise FailedPrecondition(str(exc)) from None
        texts = engine.lm.tokenizer.batch_decode
        method = "W_U · final_norm(d_f)" + (f", softcap {out.head.softcap:g}" if out.head.softcap else "")
        features = []
        for lens in lenses:
            up = texts([[e.token_id] for e in lens.promoted])
            down = texts([[e.token_id] for e in lens.suppressed])
            features.append(pb.FeatureEffects(
                feature_id=lens.feature_id, decoder_norm=lens.decoder_norm,
                promoted=[pb.TokenEffect(id=e.token_id, text=t, value=e.value)
                          for e, t in zip(lens.promoted, up, strict=True)],
                suppressed=[pb.TokenEffect(id=e.token_id, text=t, value=e.value)
                            for e, t in zip(lens.suppressed, down, strict=True)],
            ))
        return pb.GetFeatureEffectsResponse(features=features, method=method + "; special tokens excluded")

    async def SteerGenerate(
        self, request: pb.SteerGenerateRequest, context: aio.ServicerContext
    ) -> pb.SteerGenerateResponse:
        engine = self.engine  # type: ignore[attr-defined]
        query = validate_steer(request, engine.saes, self.config)
        out = self.output
        if out.steerable is None or out.runner is None:
            raise FailedPrecondition(STEERING_DISABLED)
        sae = query.sae
        if sae.hook_key != out.steerable.steerable_hook(sae.hook_layer) or sae.transform != "none" or sae.kind != "sae":
            raise FailedPrecondition(
                f"SAE {sae.id!r} reads {sae.tl_hook_name or sae.hook_name} ({sae.kind}, transform {sae.transform}); "
                "steering edits the residual stream after a decoder layer, so it is served for SAEs on "
                "blocks.L.hook_resid_post (model.layers.L output) with no basis transform")
        ids = await asyncio.to_thread(engine.tokenize, query.prompts)
        check_token_counts(ids, self.config, "prompts")
        try:
            direction = out.decoder.rows(query.sae.id, [query.feature])[0]
        except OutputHeadError as exc:
            raise FailedPrecondition(str(exc)) from None
        steer = Steer(
            layer=query.sae.hook_layer, direction=direction, mode=query.mode,
            strength=query.strength if query.strength is not None else math.copysign(1.0, query.target_kl or 1.0),
            positions=query.positions, params=query.sae.params, feature=query.feature,
        )
        lm = out.steerable

        def work(watch):  # type: ignore[no-untyped-def]
            calibration = None
            s = steer
            if query.target_kl is not None:
                calibration = lm.calibrate(ids, steer, abs(query.target_kl), watch)
                s = Steer(**{**steer.__dict__, "strength": calibration.strength})
            return s, calibration, lm.steer(ids, s, query.max_new_tokens, query.temperature, query.seed, watch)

        remaining = context.time_remaining()
        timeout = STEER_TIMEOUT_S if remaining is None else max(0.0, min(remaining, STEER_TIMEOUT_S))
        used, calibration, conts = await out.runner.run(work, timeout)
        decode = engine.lm.decode
        completions = [
            pb.SteerCompletion(
                prompt=p, unsteered_text=decode(c.unsteered_ids), steered_text=decode(c.steered_ids),
                unsteered_ids=c.unsteered_ids, steered_ids=c.steered_ids, kl=c.kl,
            )
            for p, c in zip(query.prompts, conts, strict=True)
        ]
        return pb.SteerGenerateResponse(
            completions=completions, strength=used.strength, mean_kl=sum(c.kl for c in conts) / len(conts),
            target_reached=bool(calibration and calibration.reached),
            calibration_steps=calibration.steps if calibration else 0,
        )
