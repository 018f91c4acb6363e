"""The quick fuzz pass of ``make test``: a few generated requests for every RPC of
every service, against real servers, with a fixed seed (``scripts/fuzz.py`` runs
the same generators at 10,000 requests per service).

Property: no INTERNAL, UNKNOWN or UNIMPLEMENTED; every error has a message (and
one small enough to reach the client); no call outlives its deadline; the server
still answers health and a valid request afterwards.
"""

from __future__ import annotations

import grpc
import pytest

from tests.fuzz.bytelevel import MUTATIONS, fuzz_bytes
from tests.fuzz.harness import Tally
from tests.fuzz.targets import Facts, Known, agent_setup, fuzz, methods, scoring_setup

pytestmark = pytest.mark.asyncio(loop_scope="session")

SEED = 0
PER_RPC = 20
BYTES_PER_RPC = 12
CONCURRENCY = 2


def explain(tally: Tally) -> str:
    lines = [f"{tally.service}: {len(tally.problems)} bad answers of {tally.calls}; alive: {tally.alive or 'yes'}"]
    lines += [f"- {o.problem}\n  {o.call.describe(2_000)}" for o in tally.problems[:10]]
    lines += [f"- logged by the server: {event}" for event in tally.server_errors[:10]]
    return "\n".join(lines)


async def run(service: str, channel: grpc.aio.Channel, facts: Facts, known: Known) -> Tally:
    tally = await fuzz(service, channel, facts, known, PER_RPC * len(methods(service)), seed=SEED,
                       concurrency=CONCURRENCY)
    assert {m.name for m in methods(service)} <= set(tally.rpcs()), "every RPC was called"
    ok = sum(n for (_, code), n in tally.counts.items() if code == "OK")
    assert ok >= tally.calls // 10, f"only {ok} of {tally.calls} requests got past validation"
    return tally


async def test_activation_service(activation_channel: grpc.aio.Channel, facts: Facts) -> None:
    tally = await run("activation", activation_channel, facts, Known())
    assert tally.ok, explain(tally)


async def test_agent_service(agent_channel: grpc.aio.Channel, facts: Facts) -> None:
    known = await agent_setup(agent_channel, facts)
    tally = await run("agent", agent_channel, facts, known)
    assert tally.ok, explain(tally)


# The scoring service is owned elsewhere: its findings (oversized error statuses, WaitOperation
# overflowing to INTERNAL) went to issue #7 and are fixed since 4b0c451; this pass then took
# about 25 s. Its owner enables it by removing the mark.
async def test_scoring_service(scoring_channel: grpc.aio.Channel, facts: Facts) -> None:
    known = await scoring_setup(scoring_channel, facts)
    tally = await run("scoring", scoring_channel, facts, known)
    assert tally.ok, explain(tally)


# The byte-level pass: serialized valid requests with corrupted, cut, re-tagged, unknown,
# non-UTF-8 and overrunning bytes, on every RPC of every service.


async def run_bytes(service: str, channel: grpc.aio.Channel, facts: Facts, known: Known) -> Tally:
    tally = await fuzz_bytes(service, channel, facts, known, BYTES_PER_RPC * len(methods(service)), seed=SEED,
                             concurrency=CONCURRENCY)
    assert {m.name for m in methods(service)} <= set(tally.rpcs()), "every RPC was called"
    assert {kind for kind, _ in tally.kinds} >= set(MUTATIONS) - {"overrun"}, tally.kinds
    invalid = sum(n for (_, code), n in tally.counts.items() if code == "INVALID_ARGUMENT")
    assert invalid >= tally.calls // 5, f"only {invalid} of {tally.calls} mutants were INVALID_ARGUMENT"
    return tally


async def test_activation_service_bytes(activation_channel: grpc.aio.Channel, facts: Facts) -> None:
    tally = await run_bytes("activation", activation_channel, facts, Known())
    assert tally.ok, explain(tally)


async def test_agent_service_bytes(agent_channel: grpc.aio.Channel, facts: Facts) -> None:
    known = await agent_setup(agent_channel, facts)
    tally = await run_bytes("agent", agent_channel, facts, known)
    assert tally.ok, explain(tally)


async def test_scoring_service_bytes(scoring_channel: grpc.aio.Channel, facts: Facts) -> None:
    known = await scoring_setup(scoring_channel, facts)
    tally = await run_bytes("scoring", scoring_channel, facts, known)
    assert tally.ok, explain(tally)
