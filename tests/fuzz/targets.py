"""What the fuzzer sends to each service: every method of every service it serves,
request strategies from the descriptors, and hints that make them semi-valid.

The hints come from ``Facts`` read off the running servers (SAE ids, their sizes,
dead and live features, the vocabulary) and ``Known`` names made in a short setup
(operations, explanations, page tokens), so a good share of generated requests
pass validation and reach the real work. Deadlines are short and budgets small,
so that work stays bounded.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
import numpy as np
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import duration_pb2
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

from sagex.api.activation.v1 import activation_service_pb2 as apb
from sagex.api.activation.v1 import activation_service_pb2_grpc as apb_grpc
from sagex.api.agent.v1 import agent_service_pb2 as gpb
from sagex.api.agent.v1 import agent_service_pb2_grpc as gpb_grpc
from sagex.api.scoring.v1 import scoring_service_pb2 as spb
from sagex.api.scoring.v1 import scoring_service_pb2_grpc as spb_grpc
from tests.fuzz.harness import Call, ErrorLog, Tally, check_alive, run_calls
from tests.fuzz.strategies import (
    Hints,
    draw_examples,
    id_lists,
    messages,
    mutants,
    near_range,
    one_of_names,
    seed_of,
    strings,
    weighted,
)

OPERATIONS = operations_pb2.DESCRIPTOR.services_by_name["Operations"]
SERVICES: dict[str, tuple[ServiceDescriptor, ...]] = {
    "activation": (apb.DESCRIPTOR.services_by_name["ActivationService"],),
    "agent": (gpb.DESCRIPTOR.services_by_name["AgentService"], OPERATIONS),
    "scoring": (spb.DESCRIPTOR.services_by_name["ScoringService"], OPERATIONS),
}

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "def parse(path):\n    return open(path).read()",
    "In the beginning God created the heaven and the earth.",
    "You will pass the exam if you keep passing the practice tests.",
    "Paris is the capital of France.",
    "x = [i * i for i in range(10)]",
    "She said: \"don't go there\", and left.",
    "1, 2, 3, 4, 5, 6, 7, 8, 9, 10",
]
EXPLANATIONS = ['the word "the"', "closing brackets in Python code", "numbers in a list", "capital cities",
                "text about", "x"]


@dataclass(frozen=True)
class Facts:
    """What the activation server serves, read once before fuzzing."""

    saes: dict[str, int]  # id -> d_sae
    main_sae: str  # the SAE most requests aim at
    vocab_size: int
    limits: apb.ServerLimits
    dead: tuple[int, ...]  # features of main_sae that never fire on the exemplar split (cheap to explain)
    live: tuple[int, ...]  # features that fire in a few percent of windows


@dataclass(frozen=True)
class Known:
    """Names that exist on the fuzzed server, made by its setup."""

    operations: tuple[str, ...] = ()  # finished or cancelled, kept for the whole run
    deletable: tuple[str, ...] = ()  # finished, for DeleteOperation (the others stay)
    explanations: tuple[str, ...] = ()
    page_tokens: tuple[str, ...] = ()


async def read_facts(channel: grpc.aio.Channel, main_sae: str) -> Facts:
    """Model info and the main SAE's statistics (which also builds its exemplar index)."""
    stub = apb_grpc.ActivationServiceStub(channel)
    info = await stub.GetModelInfo(apb.GetModelInfoRequest(), timeout=60)
    stats = await stub.GetFeatureStatistics(apb.GetFeatureStatisticsRequest(sae_id=main_sae), timeout=1800)
    wfreq = np.frombuffer(stats.window_frequency, "<f4")
    live = np.flatnonzero((wfreq > 0.01) & (wfreq < 0.3))[:64]
    return Facts(
        saes={s.id: s.d_sae for s in info.saes}, main_sae=main_sae, vocab_size=info.model.vocab_size,
        limits=info.limits, dead=tuple(int(f) for f in np.flatnonzero(wfreq == 0)[:64]),
        live=tuple(int(f) for f in live),
    )


# ---------------------------------------------------------------------------------------------
# hints


def _features(facts: Facts) -> st.SearchStrategy[int]:
    d = facts.saes[facts.main_sae]
    options = [(3, near_range(d))]
    if facts.dead:
        options.append((3, st.sampled_from(facts.dead)))
    if facts.live:
        options.append((1, st.sampled_from(facts.live)))
    return weighted(*options)


def _feature_lists(facts: Facts, max_items: int, limit: int | None = None) -> st.SearchStrategy[list[int]]:
    sizes = sorted(set(facts.saes.values()))
    near = st.sampled_from(sizes).flatmap(lambda d: id_lists(d, max_items, limit))
    cheap = st.lists(_features(facts), min_size=1, max_size=max_items, unique=True)
    return weighted((2, near), (3, cheap))


def _texts(max_items: int = 4) -> st.SearchStrategy[list[str]]:
    one = weighted((5, st.sampled_from(TEXTS)), (1, strings()),
                   (1, st.sampled_from(TEXTS).map(lambda t: t * 40)))
    return st.lists(one, min_size=1, max_size=max_items)


def _sae_ids(facts: Facts) -> st.SearchStrategy[str]:
    return weighted((4, st.just(facts.main_sae)), (2, one_of_names(sorted(facts.saes))))


def _names(known: Sequence[str], prefix: str) -> st.SearchStrategy[str]:
    made_up = st.builds(lambda h: f"{prefix}{h}", st.text("0123456789abcdef", min_size=1, max_size=32))
    return weighted((4, one_of_names(known, noise=made_up)) if known else (1, made_up), (2, made_up),
                    (1, st.sampled_from([prefix, prefix.rstrip("/"), f"{prefix}/", f"{prefix}\x00"])))


def _page_tokens(known: Sequence[str]) -> st.SearchStrategy[str]:
    forged = st.builds(lambda when, name: base64.urlsafe_b64encode(f"{when}|{name}".encode()).decode(),
                       st.sampled_from(["1e999", "nan", "-inf", "0", "1700000000.5", "x", ""]), strings(16))
    options = [(2, forged), (1, st.binary(max_size=24).map(lambda b: base64.urlsafe_b64encode(b).decode())),
               (2, st.just(""))]
    if known:
        options.append((3, st.sampled_from(list(known))))
    return weighted(*options)


def _durations() -> st.SearchStrategy[duration_pb2.Duration]:
    seconds = st.sampled_from([0, 1, 2, -1, 600, 10**10, 2**62, -(2**62)])
    nanos = st.sampled_from([0, 1, 500_000_000, 999_999_999, 10**9, -1, -(10**9)])
    return st.builds(lambda s, n: duration_pb2.Duration(seconds=s, nanos=n), seconds, nanos)


def _operation_hints(known: Known) -> dict[str, st.SearchStrategy]:
    return {
        "google.longrunning.GetOperationRequest.name": _names(known.operations, "operations/"),
        "google.longrunning.CancelOperationRequest.name": _names(known.operations, "operations/"),
        "google.longrunning.DeleteOperationRequest.name": _names(known.deletable, "operations/"),
        "google.longrunning.WaitOperationRequest.name": _names(known.operations, "operations/"),
        "google.longrunning.WaitOperationRequest.timeout": _durations(),
        "google.longrunning.ListOperationsRequest.filter": st.sampled_from(["", "", "done = true"]),
        "google.longrunning.ListOperationsRequest.page_token": _page_tokens(known.page_tokens),
        "page_size": st.sampled_from([0, 1, 2, 50, 500, 501, -1, 2**31 - 1, -(2**31)]),
    }


def activation_hints(facts: Facts) -> Hints:
    limits = facts.limits
    return Hints(
        values={
            "sae_id": _sae_ids(facts),
            "batch_id": st.sampled_from(["", "b0", "b1", "b2", "x" * 128, "x" * 129]),
            "sagex.api.activation.v1.TokenIds.ids": near_range(facts.vocab_size),
            "sagex.api.activation.v1.TopKSelection.k": near_range(limits.max_top_k + 1, slack=2),
            "sagex.api.activation.v1.ThresholdSelection.min_activation": st.floats(0, 10, width=32),
            "sagex.api.activation.v1.MineExemplarsRequest.top_k": weighted((4, st.integers(0, 5)),
                                                                          (1, near_range(101, slack=2))),
            "quantile_bands": weighted((4, st.integers(0, 3)), (1, near_range(11, slack=2))),
            "per_band": weighted((4, st.integers(0, 3)), (1, near_range(51, slack=2))),
            "random_non_activating": weighted((4, st.integers(0, 5)), (1, near_range(101, slack=2))),
            "split": st.sampled_from([0, 1, 2, 3]),
        },
        lists={
            "texts": _texts(),
            "sagex.api.activation.v1.TokenIds.ids": st.lists(near_range(facts.vocab_size), min_size=1, max_size=12),
            "sagex.api.activation.v1.FeatureIdSelection.feature_ids": _feature_lists(facts, 8, limits.max_feature_ids),
            "sagex.api.activation.v1.MineExemplarsRequest.feature_ids": _feature_lists(facts, 2),
            "sagex.api.activation.v1.GetFeatureEffectsRequest.feature_ids": _feature_lists(facts, 4),
            "sagex.api.activation.v1.GetFeatureStatisticsRequest.feature_ids":
                weighted((1, st.just([])), (3, _feature_lists(facts, 40))),
            "token_ids": st.lists(messages(apb.TokenIds.DESCRIPTOR, Hints(
                lists={"ids": st.lists(near_range(facts.vocab_size), min_size=1, max_size=12)})), max_size=3),
        },
    )


def _policy_and_budget() -> dict[str, st.SearchStrategy]:
    return {
        "sagex.api.agent.v1.PolicySpec.policy": st.sampled_from(["", "heuristic", "openai", "Heuristic", "llm"]),
        "sagex.api.agent.v1.PolicySpec.model": st.sampled_from(["", "", "fuzz-model", "gpt-x"]),
        "num_hypotheses": st.sampled_from([0, 3, 4, 8, 2, 9, 2**32 - 1]),
        "max_rounds": st.sampled_from([0, 1, 1, 2, 30, 31]),
        "max_probes_per_hypothesis": st.sampled_from([0, 1, 2, 64, 65]),
        "max_llm_tokens": st.sampled_from([0, 999, 1000, 2**63, 2**64 - 1]),
        "max_cost_usd": st.sampled_from([0.0, 0.01, -1.0, float("nan"), float("inf"), 1e308]),
        "max_seconds": st.sampled_from([0.0, 0.5, 1.0, 2.0, 86400.0, 86401.0, float("nan"), float("-inf"), -1.0]),
    }


def agent_hints(facts: Facts, known: Known) -> Hints:
    return Hints(
        values={
            "sae_id": _sae_ids(facts),
            "feature_id": _features(facts),
            "sagex.api.agent.v1.GetExplanationRequest.name": _names(known.explanations, "explanations/"),
            "sagex.api.agent.v1.ListExplanationsRequest.page_token": _page_tokens(known.page_tokens),
            "request_id": st.sampled_from(["", "", "r1", "r2", "x" * 128, "x" * 129, "tab\there"]),
            "concurrency": st.sampled_from([0, 1, 2, 64, 65]),
            **_policy_and_budget(),
            **_operation_hints(known),
        },
        lists={
            "sagex.api.agent.v1.BatchExplainFeaturesRequest.feature_ids": _feature_lists(facts, 3),
            "sagex.api.agent.v1.ListExplanationsRequest.feature_ids": _feature_lists(facts, 5, 1000),
        },
    )


def scoring_hints(facts: Facts, known: Known) -> Hints:
    scorers = ["generative", "predictive", "detection", "fuzzing", "embedding"]
    return Hints(
        values={
            "sae_id": _sae_ids(facts),
            "feature_id": _features(facts),
            "sagex.api.scoring.v1.ExplanationToScore.text": weighted((4, st.sampled_from(EXPLANATIONS)),
                                                                     (1, strings())),
            "explanation_name": st.sampled_from(["", *known.explanations[:2], "explanations/x/1/y"]),
            "request_id": st.sampled_from(["", "", "r1", "r2", "x" * 128, "x" * 129]),
            **_operation_hints(known),
        },
        lists={
            "scorers": weighted((1, st.just([])), (4, st.lists(one_of_names(scorers), max_size=3)),
                                (3, st.just(["embedding"]))),
            "explainers": st.lists(one_of_names(["single_pass", "sage"]), max_size=3),
            "sagex.api.scoring.v1.BatchScoreExplanationsRequest.explanations": st.lists(
                messages(spb.ExplanationToScore.DESCRIPTOR, Hints(values={
                    "sae_id": _sae_ids(facts), "feature_id": _features(facts),
                    "text": weighted((4, st.sampled_from(EXPLANATIONS)), (1, strings()))})), max_size=3),
            "sagex.api.scoring.v1.CompareExplainersRequest.feature_ids": _feature_lists(facts, 2),
        },
    )


# ---------------------------------------------------------------------------------------------
# calls

# Deadlines (seconds, weight). Expensive methods get short ones: their work is cancelled at the deadline.
QUICK = ((3, 5.0), (2, 1.0), (1, 0.05))  # Hypothesis favours earlier options: the usual case goes first
EXPENSIVE = ((3, 3.0), (2, 1.0), (1, 0.05))
EXPENSIVE_METHODS = {"BuildExemplarIndex", "ExplainFeature", "MineExemplars", "ScoreExplanation", "SteerGenerate",
                     "StreamActivations", "WaitOperation"}


def _deadlines(method: MethodDescriptor) -> st.SearchStrategy[float]:
    table = EXPENSIVE if method.name in EXPENSIVE_METHODS else QUICK
    return weighted(*((w, st.just(t)) for w, t in table))


REQUEST_IDS = st.one_of(st.none(), st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=140))


def seeds(service: str, facts: Facts, known: Known) -> dict[str, list[Message]]:
    """Valid requests per method name, for ``mutants`` to start from."""
    sae = facts.main_sae
    dead = list(facts.dead[:2]) or [0]
    live = list(facts.live[:2]) or [1]
    ops = list(known.operations) or ["operations/none"]
    one_second = duration_pb2.Duration(seconds=1)
    operations = {
        "GetOperation": [operations_pb2.GetOperationRequest(name=n) for n in ops],
        "CancelOperation": [operations_pb2.CancelOperationRequest(name=n) for n in ops],
        "DeleteOperation": [operations_pb2.DeleteOperationRequest(name=n) for n in known.deletable or ops],
        "WaitOperation": [operations_pb2.WaitOperationRequest(name=n, timeout=one_second) for n in ops],
        "ListOperations": [operations_pb2.ListOperationsRequest(page_size=2),
                           *(operations_pb2.ListOperationsRequest(page_token=t) for t in known.page_tokens)],
    }
    if service == "activation":
        other = next((s for s in facts.saes if s != sae), sae)
        base = {"batch_id": "b0", "sae_id": sae, "texts": TEXTS[:2]}
        return {
            "GetModelInfo": [apb.GetModelInfoRequest()],
            "Tokenize": [apb.TokenizeRequest(texts=TEXTS[:3])],
            "StreamActivations": [
                apb.StreamActivationsRequest(**base, top_k=apb.TopKSelection(k=4)),
                apb.StreamActivationsRequest(**base, features=apb.FeatureIdSelection(feature_ids=live + dead)),
                apb.StreamActivationsRequest(**base, threshold=apb.ThresholdSelection(min_activation=0.5)),
                apb.StreamActivationsRequest(batch_id="b1", sae_id=sae, token_ids=[apb.TokenIds(ids=[1, 504, 3, 99])],
                                             top_k=apb.TopKSelection(k=2)),
                apb.StreamActivationsRequest(batch_id="b2", sae_id=other, texts=TEXTS[3:4],
                                             top_k=apb.TopKSelection(k=3)),
            ],
            "MineExemplars": [apb.MineExemplarsRequest(sae_id=sae, feature_ids=live[:1], top_k=3, quantile_bands=2,
                                                       per_band=1, random_non_activating=2, seed=7),
                              apb.MineExemplarsRequest(sae_id=sae, feature_ids=dead[:1])],
            "GetFeatureStatistics": [apb.GetFeatureStatisticsRequest(sae_id=sae, feature_ids=live + dead),
                                     apb.GetFeatureStatisticsRequest(sae_id=sae)],
            "GetFeatureEffects": [apb.GetFeatureEffectsRequest(sae_id=sae, feature_ids=live + dead, top_k=5)],
            "SteerGenerate": [apb.SteerGenerateRequest(sae_id=sae, feature_id=live[0], prompts=TEXTS[:2], strength=4.0,
                                                       max_new_tokens=2),
                              apb.SteerGenerateRequest(sae_id=sae, feature_id=live[0], prompts=TEXTS[:1], target_kl=1.0,
                                                       max_new_tokens=1)],
            "BuildExemplarIndex": [apb.BuildExemplarIndexRequest(sae_id=sae, interval_seconds=0.5)],
        }
    if service == "agent":
        return {
            "ExplainFeature": [gpb.ExplainFeatureRequest(sae_id=sae, feature_id=f) for f in dead] + [
                gpb.ExplainFeatureRequest(sae_id=sae, feature_id=live[0], budget=gpb.Budget(max_rounds=1))],
            "BatchExplainFeatures": [gpb.BatchExplainFeaturesRequest(sae_id=sae, feature_ids=dead)],
            "GetExplanation": [gpb.GetExplanationRequest(name=n) for n in known.explanations or ["explanations/x"]],
            "ListExplanations": [gpb.ListExplanationsRequest(sae_id=sae, page_size=2), gpb.ListExplanationsRequest(),
                                 *(gpb.ListExplanationsRequest(page_token=t) for t in known.page_tokens)],
            **operations,
        }
    explanation = spb.ExplanationToScore(sae_id=sae, feature_id=live[0], text=EXPLANATIONS[0])
    return {
        "ScoreExplanation": [spb.ScoreExplanationRequest(explanation=explanation, scorers=["embedding"])],
        "BatchScoreExplanations": [spb.BatchScoreExplanationsRequest(explanations=[explanation],
                                                                     scorers=["embedding"])],
        "CompareExplainers": [spb.CompareExplainersRequest(sae_id=sae, feature_ids=live[:1],
                                                           explainers=["single_pass", "sage"], scorers=["embedding"])],
        **operations,
    }


def calls(method: MethodDescriptor, hints: Hints, valid: Sequence[Message] = ()) -> st.SearchStrategy[Call]:
    """Generated calls of one method: request(s), deadline, request id, when to hang up.
    With ``valid`` requests, two thirds of the requests are their mutants."""
    request = messages(method.input_type, hints)
    if valid:
        request = weighted((2, mutants(valid, hints)), (1, request))
    if method.client_streaming:  # random sequences of messages, now and then none at all
        request = st.lists(request, max_size=4)
    cancel = st.one_of(st.none(), st.none(), st.integers(0, 3)) if method.server_streaming else st.none()
    return st.builds(Call, st.just(method), request, _deadlines(method), REQUEST_IDS, cancel)


def methods(service: str) -> list[MethodDescriptor]:
    return [m for svc in SERVICES[service] for m in svc.methods]


def hints_for(service: str, facts: Facts, known: Known) -> Hints:
    if service == "activation":
        return activation_hints(facts)
    return agent_hints(facts, known) if service == "agent" else scoring_hints(facts, known)


def generate(service: str, facts: Facts, known: Known, total: int, seed: int = 0,
             weights: dict[str, int] | None = None) -> list[Call]:
    """About ``total`` calls spread over the service's methods (by ``weights``, default
    even), interleaved so that concurrent runs mix methods. Deterministic per seed."""
    hints = hints_for(service, facts, known)
    valid = seeds(service, facts, known)
    ms = methods(service)
    weights = weights or {}
    shares = {m.full_name: weights.get(m.name, 1) for m in ms}
    scale = total / sum(shares.values())
    lists = [draw_examples(calls(m, hints, valid.get(m.name, ())), max(1, round(shares[m.full_name] * scale)),
                           seed_of(m.full_name, seed)) for m in ms]
    out: list[Call] = []
    for i in range(max(len(x) for x in lists)):
        out += [x[i] for x in lists if i < len(x)]
    return out


# ---------------------------------------------------------------------------------------------
# setup and "still alive" checks


async def agent_setup(channel: grpc.aio.Channel, facts: Facts) -> Known:
    """A finished job (dead features: triage only), a cancelled one, three finished ones to
    delete, their explanations and a page token."""
    agent, ops = gpb_grpc.AgentServiceStub(channel), operations_pb2_grpc.OperationsStub(channel)
    dead = list(facts.dead[:3]) or [0]
    done = await agent.BatchExplainFeatures(gpb.BatchExplainFeaturesRequest(
        sae_id=facts.main_sae, feature_ids=dead, request_id="fuzz-setup-done"), timeout=60)
    await ops.WaitOperation(operations_pb2.WaitOperationRequest(
        name=done.name, timeout=duration_pb2.Duration(seconds=120)), timeout=130)
    live = list(facts.live[:2]) or [1]
    cancelled = await agent.BatchExplainFeatures(gpb.BatchExplainFeaturesRequest(
        sae_id=facts.main_sae, feature_ids=live, skip_triage=True, request_id="fuzz-setup-cancelled"), timeout=60)
    await ops.CancelOperation(operations_pb2.CancelOperationRequest(name=cancelled.name), timeout=60)
    deletable = []
    for i in range(3):
        op = await agent.BatchExplainFeatures(gpb.BatchExplainFeaturesRequest(
            sae_id=facts.main_sae, feature_ids=dead[:1], request_id=f"fuzz-setup-deletable-{i}"), timeout=60)
        deletable.append(op.name)
        await ops.WaitOperation(operations_pb2.WaitOperationRequest(
            name=op.name, timeout=duration_pb2.Duration(seconds=120)), timeout=130)
    listed = await agent.ListExplanations(gpb.ListExplanationsRequest(page_size=1), timeout=30)
    page = await ops.ListOperations(operations_pb2.ListOperationsRequest(page_size=1), timeout=30)
    return Known(operations=(done.name, cancelled.name), deletable=tuple(deletable),
                 explanations=tuple(e.name for e in listed.explanations),
                 page_tokens=tuple(t for t in (listed.next_page_token, page.next_page_token) if t))


async def agent_alive(channel: grpc.aio.Channel, facts: Facts) -> None:
    """A whole ExplainFeature on a dead feature (agent, store and activation server all answer)."""
    agent = gpb_grpc.AgentServiceStub(channel)
    feature = facts.dead[0] if facts.dead else 0
    last = None
    async for event in agent.ExplainFeature(gpb.ExplainFeatureRequest(sae_id=facts.main_sae, feature_id=feature),
                                            timeout=120):
        last = event
    assert last is not None and last.HasField("explanation"), last
    assert not last.explanation.HasField("error"), last.explanation.error


async def activation_alive(channel: grpc.aio.Channel, facts: Facts) -> None:
    stub = apb_grpc.ActivationServiceStub(channel)
    request = apb.StreamActivationsRequest(batch_id="alive", sae_id=facts.main_sae, texts=TEXTS[:2],
                                           top_k=apb.TopKSelection(k=4))
    got = [r async for r in stub.StreamActivations([request], timeout=60)]
    assert got and got[-1].batch_complete, got


async def scoring_setup(channel: grpc.aio.Channel, facts: Facts) -> Known:
    """Five finished batches (the embedding scorer: no LLM), two kept and three to delete,
    and a page token."""
    scoring, ops = spb_grpc.ScoringServiceStub(channel), operations_pb2_grpc.OperationsStub(channel)
    feature = facts.live[0] if facts.live else 0
    explanation = spb.ExplanationToScore(sae_id=facts.main_sae, feature_id=feature, text=EXPLANATIONS[0])
    done = await scoring.BatchScoreExplanations(spb.BatchScoreExplanationsRequest(
        explanations=[explanation], scorers=["embedding"], request_id="fuzz-setup-done"), timeout=60)
    await ops.WaitOperation(operations_pb2.WaitOperationRequest(
        name=done.name, timeout=duration_pb2.Duration(seconds=300)), timeout=310)
    ran = [done.name]
    for seed in range(1, 5):
        op = await scoring.BatchScoreExplanations(spb.BatchScoreExplanationsRequest(
            explanations=[explanation], scorers=["embedding"], seed=seed), timeout=60)
        await ops.WaitOperation(operations_pb2.WaitOperationRequest(
            name=op.name, timeout=duration_pb2.Duration(seconds=300)), timeout=310)
        ran.append(op.name)
    page = await ops.ListOperations(operations_pb2.ListOperationsRequest(page_size=1), timeout=30)
    return Known(operations=tuple(ran[:2]), deletable=tuple(ran[2:]),
                 page_tokens=tuple(t for t in [page.next_page_token] if t))


async def scoring_alive(channel: grpc.aio.Channel, facts: Facts) -> None:
    scoring = spb_grpc.ScoringServiceStub(channel)
    feature = facts.live[0] if facts.live else 0
    response = await scoring.ScoreExplanation(spb.ScoreExplanationRequest(
        explanation=spb.ExplanationToScore(sae_id=facts.main_sae, feature_id=feature, text=EXPLANATIONS[0]),
        scorers=["embedding"]), timeout=300)
    assert len(response.results) == 1, response


def health_names(service: str) -> tuple[str, ...]:
    return tuple(svc.full_name for svc in SERVICES[service])


ALIVE = {"activation": activation_alive, "agent": agent_alive, "scoring": scoring_alive}


async def fuzz(service: str, channel: grpc.aio.Channel, facts: Facts, known: Known, total: int, seed: int = 0,
               concurrency: int = 1, weights: dict[str, int] | None = None,
               progress: Callable[[Tally], None] | None = None) -> Tally:
    """Generate about ``total`` calls for ``service``, run them, then check that the
    server still answers health and a valid request."""
    calls_ = generate(service, facts, known, total, seed, weights)
    with ErrorLog() as errors:
        tally = await run_calls(channel, calls_, Tally(service), concurrency, progress=progress)
        tally.alive = await check_alive(channel, health_names(service), lambda ch: ALIVE[service](ch, facts))
    tally.server_errors = errors.events
    return tally


__all__ = ["EXPLANATIONS", "Facts", "Known", "SERVICES", "TEXTS", "activation_alive", "agent_alive", "agent_setup",
           "calls", "fuzz", "generate", "health_names", "hints_for", "methods", "read_facts", "scoring_alive",
           "scoring_setup", "seeds"]
