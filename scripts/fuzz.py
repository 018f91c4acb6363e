"""Fuzz every RPC of the activation, agent and scoring services (``make fuzz``).

Starts the three servers in this process on loopback ports (the embedded model
and SAE plus a random TopK SAE; a small mining index; an LLM endpoint that
refuses connections), sends ``--examples`` generated requests to each service,
spread over its RPCs, and prints the status codes per RPC and a verdict. The
requests come from the same strategies as the pytest quick pass
(``tests/fuzz``), with another seed and many more examples.

A bug is an answer INTERNAL, UNKNOWN or UNIMPLEMENTED, a non-OK status without
a message, such a status inside an OK response, a call still open long after
its deadline, or a server that no longer answers health and a valid request
afterwards. The exit code is 1 if any service had one.

``--bytes N`` adds a byte-level pass (tests/fuzz/bytelevel.py): N serialized valid
requests per service with corrupted, cut, re-tagged, unknown, non-UTF-8 and
overrunning bytes; there bytes that do not parse must also be INVALID_ARGUMENT.

    python scripts/fuzz.py [--examples 10000] [--bytes 10000] [--services activation,agent,scoring] [--seed 1]

Writes benchmarks/results/fuzz_cpu_<machine>.md and, with --bytes,
fuzz_bytes_cpu_<machine>.md (``--out``/``--bytes-out`` to change, '' not to write).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the strategies live with the tests
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import describe  # noqa: E402

from sagex.activation.assets.paths import EMBEDDED_SAE_DIR, EMBEDDED_SAE_ID  # noqa: E402
from sagex.activation.config import ActivationConfig  # noqa: E402
from sagex.activation.server import running_activation_server  # noqa: E402
from sagex.agent.server import running_agent_server  # noqa: E402
from sagex.api.activation.v1 import activation_service_pb2 as apb  # noqa: E402
from sagex.api.activation.v1 import activation_service_pb2_grpc as apb_grpc  # noqa: E402
from sagex.api.common.v1 import types_pb2  # noqa: E402
from sagex.scoring.server import running_scoring_server  # noqa: E402
from sagex.server.lifecycle import channel_options  # noqa: E402
from sagex.server.logging import configure_logging  # noqa: E402
from tests.builders import save_random_sae  # noqa: E402
from tests.fuzz import servers  # noqa: E402
from tests.fuzz.bytelevel import MUTATIONS, ByteTally, fuzz_bytes  # noqa: E402
from tests.fuzz.harness import Tally  # noqa: E402
from tests.fuzz.targets import Facts, Known, agent_setup, fuzz, read_facts, scoring_setup  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
CODE_ORDER = ["OK", "INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED", "UNAVAILABLE",
              "DEADLINE_EXCEEDED", "CANCELLED", "CANCELLED_BY_CLIENT", "INTERNAL_CLIENT_WRITE_RACE", "ABORTED",
              "OUT_OF_RANGE", "PERMISSION_DENIED", "UNAUTHENTICATED", "ALREADY_EXISTS", "DATA_LOSS", "UNIMPLEMENTED",
              "UNKNOWN", "INTERNAL", "HANG"]
# Explaining is the costly path: most agent requests go to the cheap RPCs, and the
# valid explain requests mostly name dead features (triage only, no probing).
AGENT_WEIGHTS = {"ExplainFeature": 2, "BatchExplainFeatures": 2}


def activation_config(tmp: Path) -> ActivationConfig:
    rand = save_random_sae(tmp / "rand-topk", "topk", 576, 256, "model.layers.3", seed=0)
    return ActivationConfig(
        saes={EMBEDDED_SAE_ID: EMBEDDED_SAE_DIR, "rand-topk": rand},
        mining_cache_dir=None,  # the shared cache: indexes are keyed by model, SAE, corpus and size
        max_mining_tokens=12_000,
        window_tokens=32,
        server=servers.SERVER,
    )


def progress_printer(every: int = 500):  # type: ignore[no-untyped-def]
    start = time.perf_counter()

    def show(tally: Tally) -> None:
        if tally.calls % every == 0:
            print(f"  {tally.service}: {tally.calls} calls, {len(tally.problems)} problems, "
                  f"{time.perf_counter() - start:.0f}s", file=sys.stderr, flush=True)

    return show


def table(tally: Tally) -> str:
    codes = sorted({c for _, c in tally.counts}, key=lambda c: (CODE_ORDER.index(c) if c in CODE_ORDER else 99, c))
    lines = ["| RPC | " + " | ".join(codes) + " | total |", "|---|" + "---:|" * (len(codes) + 1)]
    for rpc in tally.rpcs():
        row = [tally.counts.get((rpc, c), 0) for c in codes]
        lines.append(f"| {rpc} | " + " | ".join(f"{n:,}" if n else "" for n in row) + f" | {sum(row):,} |")
    totals = [sum(n for (_, c), n in tally.counts.items() if c == code) for code in codes]
    lines.append("| **all** | " + " | ".join(f"{n:,}" for n in totals) + f" | {sum(totals):,} |")
    return "\n".join(lines)


def verdict(tally: Tally) -> str:
    if tally.ok:
        return ("PASS: no INTERNAL/UNKNOWN/UNIMPLEMENTED, every error has a message, no hang; "
                "health SERVING and a valid request OK afterwards")
    lines = [f"FAIL: {len(tally.problems)} bad answers, {len(tally.server_errors)} errors logged by the servers"
             + ("" if tally.alive in (None, "") else f"; server not alive afterwards: {tally.alive}")]
    lines += [f"- logged: {event[:300]}" for event in dict.fromkeys(tally.server_errors)]
    seen: set[tuple[str, str]] = set()
    for outcome in tally.problems:
        key = (outcome.call.rpc, (outcome.problem or "")[:30])  # one example of each kind
        if key in seen:
            continue
        seen.add(key)
        lines.append(f"- {outcome.problem}\n  request: `{outcome.call.describe(400)}`")
    return "\n".join(lines)


def kinds_table(tally: ByteTally) -> str:
    codes = sorted({c for _, c in tally.kinds}, key=lambda c: (CODE_ORDER.index(c) if c in CODE_ORDER else 99, c))
    lines = ["| mutation | " + " | ".join(codes) + " | total |", "|---|" + "---:|" * (len(codes) + 1)]
    for kind in MUTATIONS:
        row = [tally.kinds.get((kind, c), 0) for c in codes]
        if sum(row):
            lines.append(f"| {kind} | " + " | ".join(f"{n:,}" if n else "" for n in row) + f" | {sum(row):,} |")
    return "\n".join(lines)


def bytes_report(tallies: list[ByteTally], args: argparse.Namespace, wall: float) -> str:
    parts = [
        "# Fuzzing the gRPC services with malformed bytes",
        "",
        f"Machine: {describe()}  ",
        f"Date: {datetime.date.today().isoformat()}  ",
        f"Command: `python scripts/fuzz.py --examples {args.examples} --bytes {args.bytes} --seed {args.seed} "
        f"--concurrency {args.concurrency}` ({wall / 60:.1f} min in all)",
        "",
        "Each request is a valid request of its RPC (tests/fuzz/targets.py `seeds`), serialized and then broken "
        "at the byte level (tests/fuzz/bytelevel.py): `corrupt` (1-3 random bytes), `truncate`, `wire_type` (a "
        "field re-tagged with another or a non-existent wire type), `unknown_field`, `bad_utf8` (a string field, "
        "possibly nested, that is not UTF-8), `overrun` (a length past the end) and `garbage`; client streams "
        "send the mutant among valid messages. Every RPC of every service, the same servers as the generated "
        "pass. A bug is what it is there (INTERNAL, UNKNOWN, UNIMPLEMENTED, no message, a hang, an error logged "
        "by a server, a server not alive afterwards), and also a single request that does not parse answered "
        "anything but INVALID_ARGUMENT (or the caller's own deadline or hang-up).",
    ]
    for tally in tallies:
        parts += ["", f"## {tally.service}: {tally.calls:,} calls in {tally.seconds:.0f}s", "", table(tally), "",
                  kinds_table(tally), "", verdict(tally)]
    ok = all(t.ok for t in tallies)
    parts += ["", f"**Verdict: {'PASS' if ok else 'FAIL'}**", ""]
    return "\n".join(parts)


def report(tallies: list[Tally], args: argparse.Namespace, wall: float) -> str:
    parts = [
        "# Fuzzing the gRPC services",
        "",
        f"Machine: {describe()}  ",
        f"Date: {datetime.date.today().isoformat()}  ",
        f"Command: `python scripts/fuzz.py --examples {args.examples} --seed {args.seed} "
        f"--concurrency {args.concurrency}` ({wall / 60:.1f} min in all)",
        "",
        "Requests are generated with Hypothesis from the protobuf descriptors (tests/fuzz/strategies.py), "
        "biased toward semi-valid values (real SAE ids, feature ids near the valid range, known operation "
        "names), with short deadlines; agent and scoring run on a real activation server, with an LLM "
        "endpoint that refuses connections. A bug is INTERNAL, UNKNOWN or UNIMPLEMENTED, a non-OK status "
        "without a message or with one too large to reach the client (also inside OK responses: operation "
        "and explanation errors), a call open 15 s past its deadline, an error logged by a server (its "
        "bug log: rpc_internal_error, feature_crashed, ...), or a server that stops answering health and a "
        "valid request afterwards. Batch operations that start are cancelled at once and read back (counted "
        "under CancelOperation / GetOperation). CANCELLED_BY_CLIENT: the fuzzer hung up a stream on purpose. "
        "INTERNAL_CLIENT_WRITE_RACE: grpc's asyncio client reports INTERNAL \"Internal error from Core\" "
        "instead of the server's status when the server ends a bidirectional stream (e.g. INVALID_ARGUMENT "
        "for a bad batch) while the client is still writing; the server logged no error for these.",
    ]
    for tally in tallies:
        parts += ["", f"## {tally.service}: {tally.calls:,} calls in {tally.seconds:.0f}s", "", table(tally), "",
                  verdict(tally)]
    ok = all(t.ok for t in tallies)
    parts += ["", f"**Verdict: {'PASS' if ok else 'FAIL'}**", ""]
    return "\n".join(parts)


async def run(args: argparse.Namespace) -> tuple[list[Tally], list[ByteTally]]:
    wanted = args.services.split(",")
    tallies: list[Tally] = []
    byte_tallies: list[ByteTally] = []

    async def both(service: str, ch: grpc.aio.Channel, facts: Facts, known: Known,
                   weights: dict[str, int] | None = None) -> None:
        if args.examples:
            tallies.append(await one(service, ch, facts, known, args, weights))
        if args.bytes:
            print(f"{service}: {args.bytes:,} byte-level mutants ...", file=sys.stderr, flush=True)
            byte_tallies.append(await fuzz_bytes(service, ch, facts, known, args.bytes, seed=args.seed,
                                                 concurrency=args.concurrency, progress=progress_printer()))

    with tempfile.TemporaryDirectory(prefix="sagex-fuzz-") as tmp, servers.refusing_llm_url() as llm_url:
        root = Path(tmp)
        async with running_activation_server(activation_config(root)) as (activation, _):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{activation.port}", options=channel_options()) as ch:
                facts = await read_facts(ch, EMBEDDED_SAE_ID)
                stub = apb_grpc.ActivationServiceStub(ch)
                for split in (types_pb2.CORPUS_SPLIT_HELDOUT,):  # scorers read it; build it before the clock runs
                    await stub.GetFeatureStatistics(apb.GetFeatureStatisticsRequest(
                        sae_id=EMBEDDED_SAE_ID, split=split, feature_ids=[0]), timeout=1800)
                if "activation" in wanted:
                    await both("activation", ch, facts, Known())
            if "agent" in wanted or "scoring" in wanted:
                config = servers.agent_config(activation.port, root / "agent.sqlite3", llm_url)
                async with running_agent_server(config) as (agent, _):
                    async with grpc.aio.insecure_channel(f"127.0.0.1:{agent.port}", options=channel_options()) as ch:
                        if "agent" in wanted:
                            known = await agent_setup(ch, facts)
                            await both("agent", ch, facts, known, AGENT_WEIGHTS)
                    if "scoring" in wanted:
                        config = servers.scoring_config(activation.port, agent.port, llm_url, root / "scoring.sqlite3")
                        async with running_scoring_server(config) as (scoring, _):
                            address = f"127.0.0.1:{scoring.port}"
                            async with grpc.aio.insecure_channel(address, options=channel_options()) as ch:
                                known = await scoring_setup(ch, facts)
                                await both("scoring", ch, facts, known)
    return tallies, byte_tallies


async def one(service: str, channel: grpc.aio.Channel, facts: Facts, known: Known, args: argparse.Namespace,
              weights: dict[str, int] | None = None) -> Tally:
    print(f"{service}: generating {args.examples:,} requests ...", file=sys.stderr, flush=True)
    tally = await fuzz(service, channel, facts, known, args.examples, seed=args.seed, concurrency=args.concurrency,
                       weights=weights, progress=progress_printer())
    print(f"{service}: {tally.calls:,} calls in {tally.seconds:.0f}s, {len(tally.problems)} problems, "
          f"alive: {tally.alive == ''}", file=sys.stderr, flush=True)
    return tally


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=10_000, help="generated requests per service (0: none)")
    parser.add_argument("--bytes", type=int, default=0, help="byte-level mutants per service (0: none)")
    parser.add_argument("--services", default="activation,agent,scoring")
    parser.add_argument("--seed", type=int, default=1, help="the pytest quick pass uses seed 0")
    parser.add_argument("--concurrency", type=int, default=4, help="calls in flight per service")
    parser.add_argument("--out", default=str(RESULTS / f"fuzz_cpu_{platform.machine()}_{os.cpu_count()}cpu.md"))
    parser.add_argument("--bytes-out",
                        default=str(RESULTS / f"fuzz_bytes_cpu_{platform.machine()}_{os.cpu_count()}cpu.md"))
    parser.add_argument("--problems", help="write every bad answer with its whole request to this file")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    configure_logging("error")  # bugs are logged with their tracebacks; client mistakes are not
    start = time.perf_counter()
    tallies, byte_tallies = asyncio.run(run(args))
    wall = time.perf_counter() - start
    for tallied, text, out in ((tallies, report(tallies, args, wall), args.out),
                               (byte_tallies, bytes_report(byte_tallies, args, wall), args.bytes_out)):
        if not tallied:
            continue
        print(text)
        if out:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            Path(out).write_text(text)
    everything = [*tallies, *byte_tallies]
    if args.problems:
        Path(args.problems).write_text("".join(f"{o.problem}\n{o.call.describe(limit=10**9)}\n\n"
                                               for t in everything for o in t.problems))
    return 0 if everything and all(t.ok for t in everything) else 1


if __name__ == "__main__":
    sys.exit(main())
