"""Byte-level mutations of valid requests: what the descriptor-driven generators never
send because they build messages through protobuf, but any client can put on the wire.

Each call takes a valid request of its method (``targets.seeds``), serializes it and
breaks the bytes one way: a corrupted byte, a cut, a field re-tagged with another (or a
non-existent) wire type, an unknown field, a string field that is not UTF-8, a length
that overruns, or plain garbage. Client streams send the mutant among valid messages.
The property is the same as for generated requests (``harness.judge``): never INTERNAL,
UNKNOWN or UNIMPLEMENTED, always a message, never a hang; bytes that do not parse must be
INVALID_ARGUMENT (or UNAUTHENTICATED on a server that wants a token).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

from tests.fuzz.harness import (
    CLIENT_CANCELLED,
    CLIENT_WRITE_RACE,
    Call,
    ErrorLog,
    Outcome,
    Tally,
    cancel_created_operations,
    check_alive,
    run_call,
)
from tests.fuzz.strategies import seed_of
from tests.fuzz.targets import (
    ALIVE,
    EXPENSIVE,
    EXPENSIVE_METHODS,
    QUICK,
    Facts,
    Known,
    health_names,
    methods,
    seeds,
)

MUTATIONS = ("corrupt", "truncate", "wire_type", "unknown_field", "bad_utf8", "overrun", "garbage")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int] | None:
    value, shift = 0, 0
    while pos < len(data) and shift < 70:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    return None


def _tags(data: bytes) -> list[tuple[int, int, int, int]]:
    """Top-level fields of a valid message: (tag start, tag end, field number, wire type)."""
    out, pos = [], 0
    while pos < len(data):
        read = _read_varint(data, pos)
        if read is None:
            break
        key, end = read
        number, wire = key >> 3, key & 7
        out.append((pos, end, number, wire))
        if wire == 0:
            skip = _read_varint(data, end)
            pos = skip[1] if skip else len(data)
        elif wire == 1:
            pos = end + 8
        elif wire == 5:
            pos = end + 4
        elif wire == 2:
            length = _read_varint(data, end)
            pos = length[1] + length[0] if length else len(data)
        else:
            break
    return out


def _string_paths(descriptor: Descriptor, depth: int = 0) -> list[list[int]]:
    """Field-number paths to string fields, through message fields up to two levels down."""
    paths: list[list[int]] = []
    for f in descriptor.fields:
        if f.type == FieldDescriptor.TYPE_STRING:
            paths.append([f.number])
        elif f.type == FieldDescriptor.TYPE_MESSAGE and depth < 2 and not f.message_type.GetOptions().map_entry:
            paths += [[f.number, *p] for p in _string_paths(f.message_type, depth + 1)]
    return paths


def _nested(path: Sequence[int], payload: bytes) -> bytes:
    for number in reversed(path):
        payload = _varint(number << 3 | 2) + _varint(len(payload)) + payload
    return payload


BAD_UTF8 = (b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"ok\x80", b"\xf4\x90\x80\x80")


def mutate(data: bytes, descriptor: Descriptor, rng: random.Random) -> tuple[str, bytes]:
    """One mutation of the serialized valid message ``data``: (its kind, the bytes)."""
    kind = rng.choice(MUTATIONS)
    tags = _tags(data)
    if kind == "corrupt" and data:
        out = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            out[rng.randrange(len(out))] = rng.randrange(256)
        return kind, bytes(out)
    if kind == "truncate" and len(data) > 1:
        return kind, data[: rng.randrange(1, len(data))]
    if kind == "wire_type" and tags:
        start, end, number, wire = rng.choice(tags)
        new = rng.choice([w for w in range(8) if w != wire])
        return kind, data[:start] + _varint(number << 3 | new) + data[end:]
    if kind == "unknown_field":
        number = rng.choice([rng.randint(20, 2000), 536_870_911, rng.randint(19_000, 19_999)])
        wire = rng.choice([0, 1, 2, 5])
        value = {0: _varint(rng.getrandbits(64)), 1: rng.randbytes(8), 5: rng.randbytes(4)}.get(wire)
        if value is None:
            body = rng.randbytes(rng.randint(0, 16))
            value = _varint(len(body)) + body
        field = _varint(number << 3 | wire) + value
        return kind, (field + data) if rng.random() < 0.5 else (data + field)
    if kind == "bad_utf8":
        paths = _string_paths(descriptor)
        if paths:
            return kind, data + _nested(rng.choice(paths), rng.choice(BAD_UTF8))
    if kind == "overrun" and any(w == 2 for *_, w in tags):
        start, end, number, _ = rng.choice([t for t in tags if t[3] == 2])
        length = _read_varint(data, end)
        assert length is not None
        return kind, data[:end] + _varint(length[0] + rng.randint(1, 1000)) + data[length[1]:]
    return "garbage", rng.randbytes(rng.randint(1, 64))


def parses(method: MethodDescriptor, data: bytes) -> bool:
    try:
        GetMessageClass(method.input_type).FromString(data)
    except DecodeError:
        return False
    return True


def byte_calls(methods: Sequence[MethodDescriptor], valid: dict[str, list[Message]], total: int,
               seed: int = 0) -> list[tuple[str, Call]]:
    """About ``total`` calls spread evenly over ``methods``, each a (mutation kind, call);
    deterministic per seed, interleaved across methods."""
    per = max(1, round(total / max(1, len(methods))))
    lists = []
    for method in methods:
        rng = random.Random(seed_of(method.full_name, seed) ^ 0xB17E)
        seeds = valid.get(method.name) or [GetMessageClass(method.input_type)()]
        table = EXPENSIVE if method.name in EXPENSIVE_METHODS else QUICK
        calls = []
        for _ in range(per):
            kind, data = mutate(rng.choice(seeds).SerializeToString(), method.input_type, rng)
            request: bytes | list[bytes] = data
            if method.client_streaming:  # the mutant among valid messages
                others = [m.SerializeToString() for m in rng.sample(seeds, k=min(len(seeds), rng.randint(0, 2)))]
                request = [*others[: rng.randint(0, len(others))], data, *others]
            timeout = rng.choices([t for _, t in table], weights=[w for w, _ in table])[0]
            cancel = rng.choice([None, None, 0, 1]) if method.server_streaming else None
            calls.append((kind, Call(method, request, timeout, None, cancel)))
        lists.append(calls)
    out: list[tuple[str, Call]] = []
    for i in range(per):
        out += [x[i] for x in lists]
    return out


# What bytes that do not parse may get: INVALID_ARGUMENT, or an end the caller chose
# (its deadline, its hang-up) that came first.
UNPARSED_OK = frozenset({"INVALID_ARGUMENT", "DEADLINE_EXCEEDED", CLIENT_CANCELLED, CLIENT_WRITE_RACE})


def judge_bytes(outcome: Outcome) -> str | None:
    """``harness.judge``'s verdict, and for a single request that does not parse, INVALID_ARGUMENT."""
    if outcome.problem is not None:
        return outcome.problem
    call = outcome.call
    if not call.method.client_streaming and not parses(call.method, call.request) \
            and outcome.code not in UNPARSED_OK:
        return f"unparseable request answered {outcome.code}: {outcome.message!r} (want INVALID_ARGUMENT)"
    return None


class ByteTally(Tally):
    """A Tally that also counts answers per mutation kind."""

    def __init__(self, service: str) -> None:
        super().__init__(service)
        self.kinds: Counter[tuple[str, str]] = Counter()


async def fuzz_bytes(service: str, channel: grpc.aio.Channel, facts: Facts, known: Known, total: int,
                     seed: int = 0, concurrency: int = 1,
                     progress: Callable[[Tally], None] | None = None) -> ByteTally:
    """About ``total`` byte-level mutants over every RPC of ``service``, then the check that
    the server still answers health and a valid request."""
    todo = list(reversed(byte_calls(methods(service), seeds(service, facts, known), total, seed)))
    tally = ByteTally(service)
    start = time.perf_counter()

    async def worker() -> None:
        while todo:
            kind, call = todo.pop()
            outcome = await run_call(channel, call)
            outcome.problem = judge_bytes(outcome)
            tally.add(outcome)
            tally.kinds[(kind, outcome.code)] += 1
            for extra in await cancel_created_operations(channel, outcome):
                tally.add(extra)
            if progress is not None:
                progress(tally)

    with ErrorLog() as errors:
        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
        tally.seconds = time.perf_counter() - start
        tally.alive = await check_alive(channel, health_names(service), lambda ch: ALIVE[service](ch, facts))
    tally.server_errors = errors.events
    return tally


__all__ = ["MUTATIONS", "ByteTally", "byte_calls", "fuzz_bytes", "judge_bytes", "mutate", "parses"]
