"""Output side of the activation service on the embedded model and SAE, over real gRPC:
the logit lens against an independent transformers + sae-lens reference, steered
generation (strength 0 is a no-op, KL grows with strength, target-KL search), and
bad input (unknown feature, strength out of bounds, no full model, cancellation)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
import torch

from sagex.activation.assets.model import ensure_embedded_model
from sagex.activation.assets.paths import EMBEDDED_SAE_DIR, EMBEDDED_SAE_ID
from sagex.api.activation.v1 import activation_service_pb2 as pb

pytestmark = pytest.mark.asyncio(loop_scope="session")

PROMPTS = ["The explanation is simple:", "I think", "We"]  # GA25's neutral prompts
FEATURES = [100, 777, 2024]


@pytest.fixture(scope="module")
def reference() -> Any:
    """The unmodified transformers model and the sae-lens SAE, loaded independently of the service."""
    from sae_lens import SAE
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = ensure_embedded_model()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    sae = SAE.load_from_disk(str(EMBEDDED_SAE_DIR), device="cpu", dtype="float32")
    return model, AutoTokenizer.from_pretrained(folder), sae


def _steer(strength: float | None = None, **kw: Any) -> pb.SteerGenerateRequest:
    args: dict[str, Any] = {"sae_id": EMBEDDED_SAE_ID, "feature_id": FEATURES[0], "prompts": PROMPTS,
                            "max_new_tokens": 6}
    if strength is not None:
        args["strength"] = strength
    return pb.SteerGenerateRequest(**{**args, **kw})


# --- logit lens -----------------------------------------------------------------------


async def test_logit_lens_matches_transformers_and_sae_lens(stub, reference) -> None:  # type: ignore[no-untyped-def]
    """Served by a server whose LM is cut at layer 3: the head is kept anyway."""
    model, tok, sae = reference
    k = 20
    got = await stub.GetFeatureEffects(
        pb.GetFeatureEffectsRequest(sae_id=EMBEDDED_SAE_ID, feature_ids=FEATURES, top_k=k))
    assert [f.feature_id for f in got.features] == FEATURES
    special = sorted(set(tok.all_special_ids))
    worst = 0.0
    with torch.inference_mode():
        for f in got.features:
            ref = model.lm_head(model.model.norm(sae.W_dec[f.feature_id].float()))
            ref[special] = float("nan")
            order = torch.argsort(torch.nan_to_num(ref, nan=-1e30), descending=True)[:k]
            low = torch.argsort(torch.nan_to_num(ref, nan=1e30))[:k]
            assert [t.id for t in f.promoted] == order.tolist()
            assert [t.id for t in f.suppressed] == low.tolist()
            for t in [*f.promoted, *f.suppressed]:
                worst = max(worst, abs(t.value - float(ref[t.id])))
                assert t.text == tok.decode([t.id])
            assert f.promoted[0].value > f.promoted[-1].value > f.suppressed[-1].value > f.suppressed[0].value
            assert abs(f.decoder_norm - float(sae.W_dec[f.feature_id].norm())) < 1e-5
    print(f"logit lens max abs error vs transformers+sae-lens: {worst:.2e}")
    assert worst < 1e-4


async def test_effects_bad_input(stub) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetFeatureEffects(pb.GetFeatureEffectsRequest(sae_id=EMBEDDED_SAE_ID, feature_ids=[4608]))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "0..4607" in info.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetFeatureEffects(pb.GetFeatureEffectsRequest(sae_id=EMBEDDED_SAE_ID, feature_ids=[1], top_k=101))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "top_k" in info.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetFeatureEffects(pb.GetFeatureEffectsRequest(sae_id="nope", feature_ids=[1]))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


# --- steering -------------------------------------------------------------------------


async def test_server_without_full_model_says_how_to_enable(stub) -> None:  # type: ignore[no-untyped-def]
    info = await stub.GetModelInfo(pb.GetModelInfoRequest())
    assert not info.model.steering_enabled
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SteerGenerate(_steer(5.0))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "steering = true" in err.value.details()


async def test_strength_zero_is_byte_identical_to_unsteered(steer_server, reference) -> None:  # type: ignore[no-untyped-def]
    stub, *_ = steer_server
    info = await stub.GetModelInfo(pb.GetModelInfoRequest())
    assert info.model.steering_enabled
    for temperature, seed in [(0.0, 0), (0.9, 7)]:
        got = await stub.SteerGenerate(_steer(0.0, max_new_tokens=10, temperature=temperature, seed=seed))
        for c in got.completions:
            assert list(c.steered_ids) == list(c.unsteered_ids) and c.steered_text == c.unsteered_text
            assert len(c.unsteered_ids) > 0 and c.kl == 0.0
    # And the unsteered greedy run is what transformers' own generate writes (single prompt: no padding).
    model, tok, _ = reference
    got = await stub.SteerGenerate(_steer(0.0, prompts=[PROMPTS[0]], max_new_tokens=10))
    ids = tok(PROMPTS[0], return_tensors="pt").input_ids
    with torch.inference_mode():
        ref = model.generate(ids, max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id)
    new = ref[0, ids.shape[1]:].tolist()
    eos = tok.eos_token_id
    new = new[: new.index(eos) + 1] if eos in new else new
    assert list(got.completions[0].unsteered_ids) == new


async def test_kl_rises_with_strength(steer_server) -> None:  # type: ignore[no-untyped-def]
    stub, *_ = steer_server
    strengths = [0.0, 8.0, 16.0, 32.0, 64.0, 128.0]
    mean_kl = []
    for s in strengths:
        kls = []
        for f in FEATURES:
            got = await stub.SteerGenerate(_steer(s, feature_id=f, max_new_tokens=1))
            kls.append(got.mean_kl)
        mean_kl.append(sum(kls) / len(kls))
    print("mean KL by strength:", dict(zip(strengths, [round(k, 4) for k in mean_kl], strict=True)))
    assert mean_kl[0] == 0.0
    assert all(b > a for a, b in zip(mean_kl, mean_kl[1:], strict=False)), mean_kl
    assert mean_kl[-1] > 0.5


async def test_target_kl_search_and_clamp_mode(steer_server) -> None:  # type: ignore[no-untyped-def]
    stub, *_ = steer_server
    got = await stub.SteerGenerate(_steer(None, target_kl=1.0, max_new_tokens=4))
    assert got.target_reached and 0 < got.calibration_steps <= 12
    assert abs(got.mean_kl - 1.0) <= 0.1, got.mean_kl
    assert got.strength > 0
    against = await stub.SteerGenerate(_steer(None, target_kl=-1.0, max_new_tokens=1))
    assert against.strength < 0 and abs(against.mean_kl - 1.0) <= 0.1
    # Clamping to a large value moves the output; clamping to the value it already has (0 on
    # neutral prompts at the last token, for most features) barely does.
    big = await stub.SteerGenerate(_steer(200.0, mode=pb.STEER_MODE_CLAMP, max_new_tokens=1))
    assert big.mean_kl > 0.1


async def test_bad_steer_requests(steer_server) -> None:  # type: ignore[no-untyped-def]
    stub, *_ = steer_server
    cases = [
        (_steer(5.0, feature_id=4608), "feature_id", "0..4607"),
        (_steer(501.0), "strength", "500"),
        (_steer(float("nan")), "strength", "finite"),
        (_steer(None), "strength", "target_kl"),
        (_steer(None, target_kl=1.0, mode=pb.STEER_MODE_CLAMP), "target_kl", "ADD"),
        (_steer(None, target_kl=11.0), "target_kl", "10"),
        (_steer(5.0, max_new_tokens=49), "max_new_tokens", "48"),
        (_steer(5.0, temperature=3.0), "temperature", "2"),
        (_steer(5.0, prompts=[]), "prompts", "at least one"),
        (_steer(5.0, prompts=[""]), "prompts[0]", "empty"),  # whitespace is a prompt; nothing is not
    ]
    for request, field, hint in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.SteerGenerate(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, err.value.details())
        assert field in err.value.details() and hint in err.value.details(), err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SteerGenerate(_steer(5.0, sae_id="nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_cancelled_generation_frees_its_slot(steer_server) -> None:  # type: ignore[no-untyped-def]
    stub, runtime, _ = steer_server
    runner = runtime.output.runner
    stopped = runner.stats.stopped
    call = stub.SteerGenerate(_steer(20.0, prompts=PROMPTS * 4, max_new_tokens=48))
    for _ in range(600):  # wait until the worker holds it
        if runner.pending == 1:
            break
        await asyncio.sleep(0.05)
    assert runner.pending == 1
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    for _ in range(1200):  # the worker stops at its next forward pass
        if runner.pending == 0:
            break
        await asyncio.sleep(0.05)
    assert runner.pending == 0 and runner.stats.stopped == stopped + 1
    got = await stub.SteerGenerate(_steer(5.0, max_new_tokens=2))
    assert len(got.completions) == len(PROMPTS)


async def test_steering_lands_on_the_intended_positions(steer_server) -> None:  # type: ignore[no-untyped-def]
    """causal.md §5 check 2: positions edited per forward pass, counted by the hook."""
    stub, runtime, _ = steer_server
    lm = runtime.output.steerable
    prompts = ["I think", "The explanation is simple:"]
    tokens = [len((await stub.Tokenize(pb.TokenizeRequest(texts=[p]))).tokens[0].ids) for p in prompts]
    for positions, prefill in [(pb.STEER_POSITIONS_LAST_AND_GENERATED, len(prompts)),
                               (pb.STEER_POSITIONS_ALL, sum(tokens))]:
        lm.edited_positions.clear()
        await stub.SteerGenerate(_steer(8.0, prompts=prompts, max_new_tokens=4, positions=positions))
        # The unsteered run edits nothing; the steered run edits the prefill, then one token per row per step.
        assert lm.edited_positions == [prefill, len(prompts), len(prompts), len(prompts)], positions
