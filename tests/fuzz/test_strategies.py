"""The generic strategies reach every kind of field value they promise, the hints and
mutants steer them, generation is reproducible, and the judge and the error log
call bugs bugs."""

from __future__ import annotations

import math

import grpc
import structlog
from google.longrunning import operations_pb2
from google.rpc import code_pb2, status_pb2
from hypothesis import strategies as st

from sagex.api.activation.v1 import activation_service_pb2 as apb
from sagex.api.agent.v1 import agent_service_pb2 as gpb
from tests.fuzz.harness import CLIENT_CANCELLED, Call, ErrorLog, Outcome, judge
from tests.fuzz.strategies import Hints, draw_examples, floats, integers, messages, mutants, strings
from tests.fuzz.targets import SERVICES, Facts, Known, generate, methods

N = 150


def test_scalars_reach_the_edges() -> None:
    values = draw_examples(floats(32), N, 0)
    assert any(math.isnan(x) for x in values) and math.inf in values and -math.inf in values
    assert 0.0 in values and any(x < 0 for x in values)
    # Hypothesis also draws literals it finds in the loaded modules, so what else the run has
    # imported shifts the draws; a larger sample keeps the edges in it whatever ran before.
    ints = draw_examples(integers(-(2**31), 2**31 - 1), 4 * N, 0)
    assert {-(2**31), -1, 0, 2**31 - 1} <= set(ints)
    texts = draw_examples(strings(), N, 0)
    assert "" in texts and any("\x00" in t for t in texts) and any(len(t) > 1000 for t in texts)
    assert any(not t.isascii() for t in texts)


def test_messages_cover_their_structure() -> None:
    stream = draw_examples(messages(apb.StreamActivationsRequest.DESCRIPTOR), N, 1)
    assert {r.WhichOneof("selection") for r in stream} == {None, "features", "top_k", "threshold"}
    assert any(len(r.texts) == 0 for r in stream) and any(len(r.texts) > 256 for r in stream)
    assert any(len(t.ids) for r in stream for t in r.token_ids)  # repeated nested messages
    ids = [i for r in stream for t in r.token_ids for i in t.ids]
    assert min(ids) < 0 and max(ids) >= 2**31 - 1  # int32: negatives and the top of the range

    mine = draw_examples(messages(apb.MineExemplarsRequest.DESCRIPTOR), N, 2)
    assert any(r.split not in (0, 1, 2, 3) for r in mine)  # enum values no .proto declares
    assert max(r.seed for r in mine) >= 2**63  # uint64

    budgets = draw_examples(messages(gpb.Budget.DESCRIPTOR), N, 3)
    assert any(b.max_cost_usd < 0 for b in budgets) and any(math.isnan(b.max_seconds) for b in budgets)

    waits = draw_examples(messages(operations_pb2.WaitOperationRequest.DESCRIPTOR), N, 4)
    assert any(w.HasField("timeout") and w.timeout.nanos < 0 for w in waits)  # nested well-known types


def test_generation_is_reproducible() -> None:
    strategy = messages(gpb.BatchExplainFeaturesRequest.DESCRIPTOR)
    assert draw_examples(strategy, 20, 7) == draw_examples(strategy, 20, 7)
    assert draw_examples(strategy, 20, 7) != draw_examples(strategy, 20, 8)


def test_hints_and_mutants_steer_toward_valid_requests() -> None:
    # Hypothesis leans toward variety (it mutates and splices earlier examples), so hinted
    # values are a good share rather than their nominal 4 in 5.
    hints = Hints(values={"sae_id": st.just("the-sae")}, lists={"feature_ids": st.just([1, 2])})
    batches = draw_examples(messages(gpb.BatchExplainFeaturesRequest.DESCRIPTOR, hints), N, 5)
    assert sum(b.sae_id == "the-sae" for b in batches) > N / 10
    assert sum(list(b.feature_ids) == [1, 2] for b in batches) > N / 10

    seed = gpb.ExplainFeatureRequest(sae_id="the-sae", feature_id=3)
    variants = draw_examples(mutants([seed], hints), N, 6)
    assert sum(v == seed for v in variants) > N / 10 and any(v != seed for v in variants)
    assert sum(v.sae_id == "the-sae" for v in variants) > N / 2  # one or two fields changed, not all


def test_every_method_of_every_service_gets_calls() -> None:
    facts = Facts(saes={"main": 64, "other": 16}, main_sae="main", vocab_size=100, limits=apb.ServerLimits(
        max_texts_per_batch=8, max_top_k=4, max_feature_ids=16), dead=(1, 2), live=(3, 4))
    known = Known(operations=("operations/a",), explanations=("explanations/main/1/x",), page_tokens=("tok",))
    for service, descriptors in SERVICES.items():
        wanted = {m.full_name for d in descriptors for m in d.methods}
        assert {m.full_name for m in methods(service)} == wanted
        calls = generate(service, facts, known, 5 * len(wanted), seed=0)
        assert {c.method.full_name for c in calls} == wanted


def _outcome(code: str, message: str = "", responses: list | None = None) -> Outcome:
    method = apb.DESCRIPTOR.services_by_name["ActivationService"].methods_by_name["GetModelInfo"]
    return Outcome(Call(method, apb.GetModelInfoRequest(), 1.0), code, message, responses or [])


def test_the_judge() -> None:
    assert judge(_outcome("OK")) is None
    assert judge(_outcome("INVALID_ARGUMENT", "texts: send at least one text")) is None
    assert judge(_outcome("DEADLINE_EXCEEDED", "Deadline Exceeded")) is None
    assert judge(_outcome(CLIENT_CANCELLED)) is None
    for code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNIMPLEMENTED):
        assert judge(_outcome(code.name, "boom"))
    assert judge(_outcome("NOT_FOUND", " "))  # no message
    assert judge(_outcome("RESOURCE_EXHAUSTED", "received metadata size exceeds hard limit"))
    bad_op = operations_pb2.Operation(name="operations/1", done=True,
                                      error=status_pb2.Status(code=code_pb2.INTERNAL, message="x"))
    assert judge(_outcome("OK", responses=[bad_op]))
    silent = gpb.ExplainFeatureResponse(explanation=gpb.Explanation(error=status_pb2.Status(code=code_pb2.ABORTED)))
    assert judge(_outcome("OK", responses=[silent]))
    fine = gpb.ExplainFeatureResponse(explanation=gpb.Explanation(
        error=status_pb2.Status(code=code_pb2.UNAVAILABLE, message="cannot reach the LLM")))
    assert judge(_outcome("OK", responses=[fine])) is None


def test_the_error_log_sees_server_bugs_only() -> None:
    log = structlog.get_logger("sagex.test")
    with ErrorLog() as errors:
        log.info("rpc_error", code="INVALID_ARGUMENT")
        log.error("rpc_internal_error", exc_info=ValueError("boom"), method="/x.Y/Z")
    log.error("after the watch")
    assert errors.events == ["rpc_internal_error in /x.Y/Z ValueError: boom"]
