"""Hypothesis strategies for any protobuf message, built from its descriptor.

``messages(descriptor, hints)`` walks the descriptor: integers of every width
(boundaries and negatives included), floats with NaN and infinities, strings
(empty, blank, NUL, unicode, control characters, huge), bytes, enums including
values no ``.proto`` declares, repeated fields of 0..N items (and the odd
thousands), nested messages to a bounded depth, oneofs with none or one member
set. Nothing here knows our services: ``Hints`` steer chosen fields toward
semi-valid values (a real SAE id, feature ids near the valid range), and
``mutants`` take valid requests and change one or two fields, so that generated
requests get past the first validation check while the generic values keep
probing the edges.

``draw_examples`` turns a strategy into a fixed list of examples for a seed, so
the pytest quick pass and ``scripts/fuzz.py`` generate the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

T = TypeVar("T")
FD = FieldDescriptor

# ---------------------------------------------------------------------------------------------
# scalars


def _same(x: T) -> T:
    return x


def weighted(*options: tuple[int, st.SearchStrategy[T]]) -> st.SearchStrategy[T]:
    """One of ``options``, chosen with the given integer weights (roughly: Hypothesis
    leans toward the first option, so put the usual case first)."""
    # one_of drops repeats of one strategy object, so each copy gets its own (no-op) wrapper.
    return st.one_of(*(s.map(_same) if copy else s for w, s in options for copy in range(w)))


def integers(lo: int, hi: int) -> st.SearchStrategy[int]:
    """Any integer in [lo, hi], often a boundary: 0, ±1, the extremes, powers of two."""
    edges = sorted({v for v in (0, 1, 2, -1, -2, lo, lo + 1, hi, hi - 1, 2**7, 2**8, 2**15, 2**16, 2**31 - 1,
                                2**31, 2**32 - 1, 2**53, -(2**31), 2**63 - 1) if lo <= v <= hi})
    return weighted((3, st.sampled_from(edges)), (3, st.integers(max(lo, -300), min(hi, 300))),
                    (2, st.integers(lo, hi)))


INT_RANGES = {
    FD.TYPE_INT32: (-(2**31), 2**31 - 1), FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1), FD.TYPE_UINT32: (0, 2**32 - 1), FD.TYPE_FIXED32: (0, 2**32 - 1),
    FD.TYPE_INT64: (-(2**63), 2**63 - 1), FD.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1), FD.TYPE_UINT64: (0, 2**64 - 1), FD.TYPE_FIXED64: (0, 2**64 - 1),
}


def floats(width: int = 64) -> st.SearchStrategy[float]:
    edges = [0.0, -0.0, 1.0, -1.0, 0.5, math.nan, math.inf, -math.inf, 1e-45, -1e-45,
             3.4e38 if width == 32 else 1.7e308, 2.0**31, 1e9]
    return weighted((3, st.sampled_from(edges)), (2, st.floats(width=width)),
                    (2, st.floats(-1e3, 1e3, width=width)))


STRING_EDGES = [
    "", " ", "\t\n", "\x00", "a\x00b", "\x00" * 8, "é", "naïve café", "日本語のテキスト", "🙂🙃", "\u202eevil",
    "\ufeffbom", "\u200b", "Ω≈ç√", "﷽", "\r\n\r\n", "%s%n%x", "'; DROP TABLE jobs; --", "../../../etc/passwd",
    "a" * 128, "a" * 129, "\\", "{}", "null", "0", "-1", "NaN", "operations/", "explanations/", "/", "//",
]


def huge_strings() -> st.SearchStrategy[str]:
    """Long strings made by repetition (cheap to build): just over typical limits and well beyond."""
    return st.builds(lambda unit, n: (unit * n)[:n], st.sampled_from(["a", "é", "🙂", "\x00", "ab ", "日"]),
                     st.sampled_from([1_001, 20_001, 100_000]))


def strings(max_size: int = 24) -> st.SearchStrategy[str]:
    return weighted((3, st.sampled_from(STRING_EDGES)), (4, st.text(max_size=max_size)),
                    (1, st.text(st.characters(codec="ascii"), max_size=max_size)), (1, huge_strings()))


def binary() -> st.SearchStrategy[bytes]:
    return weighted((3, st.binary(max_size=64)), (1, st.sampled_from([b"", b"\x00", b"\xff" * 4, b"x" * 70_000])))


# ---------------------------------------------------------------------------------------------
# messages


@dataclass(frozen=True)
class Hints:
    """Field-level strategies that steer generation toward semi-valid values.

    Keys are a field's full name (``"sagex.api.agent.v1.Budget.max_rounds"``) or its
    bare name (``"sae_id"``); the full name wins. A repeated field's hint gives one
    element, except under ``lists`` (same keys), which give the whole list. A
    hinted field still gets a generic value about one time in ``share + 1``.
    """

    values: Mapping[str, st.SearchStrategy[Any]] = field(default_factory=dict)
    lists: Mapping[str, st.SearchStrategy[list[Any]]] = field(default_factory=dict)
    share: int = 4  # hinted : generic = share : 1
    max_items: int = 6  # repeated fields: 0..max_items items, now and then thousands
    max_depth: int = 4

    def find(self, table: Mapping[str, T], f: FieldDescriptor) -> T | None:
        return table.get(f.full_name, table.get(f.name))


def _scalar(f: FieldDescriptor) -> st.SearchStrategy[Any]:
    if f.type in INT_RANGES:
        return integers(*INT_RANGES[f.type])
    if f.type == FD.TYPE_FLOAT:
        return floats(32)
    if f.type == FD.TYPE_DOUBLE:
        return floats(64)
    if f.type == FD.TYPE_BOOL:
        return st.booleans()
    if f.type == FD.TYPE_STRING:
        return strings()
    if f.type == FD.TYPE_BYTES:
        return binary()
    if f.type == FD.TYPE_ENUM:
        known = [v.number for v in f.enum_type.values]
        # Unknown numbers are legal on the wire for open (proto3) enums.
        return weighted((4, st.sampled_from(known)), (1, integers(-(2**31), 2**31 - 1)))
    raise TypeError(f"no strategy for field type {f.type} of {f.full_name}")


MANY_BYTES = 2 * 1024 * 1024  # a repeated field of copies stays below this (requests well under 16 MiB)


def _size(value: Any) -> int:
    if isinstance(value, str | bytes):
        return len(value) * (4 if isinstance(value, str) else 1) + 2
    return value.ByteSize() + 2 if isinstance(value, Message) else 8


def _many(element: st.SearchStrategy[T]) -> st.SearchStrategy[list[T]]:
    """Hundreds to thousands of copies of one element: count limits, duplicates, big
    messages (fewer copies of a large element)."""
    return st.builds(lambda x, n: [x] * max(2, min(n, MANY_BYTES // _size(x))), element,
                     st.sampled_from([257, 1_025, 5_000]))


class _Builder:
    def __init__(self, hints: Hints) -> None:
        self.hints = hints
        self._cache: dict[tuple[str, int], st.SearchStrategy[Message]] = {}

    def message(self, d: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
        key = (d.full_name, depth)
        if key not in self._cache:
            self._cache[key] = st.deferred(lambda: self._message(d, depth))
        return self._cache[key]

    def _message(self, d: Descriptor, depth: int) -> st.SearchStrategy[Message]:
        cls = GetMessageClass(d)
        in_oneof = {f.name for o in d.oneofs for f in o.fields}
        plain = [f for f in d.fields if f.name not in in_oneof]
        values = {f.name: self.value(f, depth) for f in d.fields}

        @st.composite
        def build(draw: st.DrawFn) -> Message:
            msg = cls()
            for f in plain:
                if draw(weighted((3, st.just(True)), (1, st.just(False)))):
                    _assign(msg, f, draw(values[f.name]))
            for oneof in d.oneofs:
                chosen = draw(st.sampled_from([None, *oneof.fields]))
                if chosen is not None:
                    _assign(msg, chosen, draw(values[chosen.name]))
            return msg

        return build()

    def value(self, f: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        h = self.hints
        if f.is_repeated:
            whole = h.find(h.lists, f)
            one = self.single(f, depth)
            size = max(h.max_items >> depth, 1)  # nested lists shrink, so messages stay small
            generic: st.SearchStrategy[Any] = st.lists(one, max_size=size)
            if depth <= 1 and not _is_map(f):
                generic = weighted((8, generic), (1, _many(one)))
            return generic if whole is None else weighted((h.share, whole), (1, generic))
        return self.single(f, depth)

    def single(self, f: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        h = self.hints
        if f.type == FD.TYPE_MESSAGE:
            generic = self.message(f.message_type, depth + 1) if depth < h.max_depth else st.just(None)
        else:
            generic = _scalar(f)
        hinted = h.find(h.values, f)
        return generic if hinted is None else weighted((h.share, hinted), (1, generic))


def _is_map(f: FieldDescriptor) -> bool:
    return f.type == FD.TYPE_MESSAGE and f.message_type.GetOptions().map_entry


def _assign(msg: Message, f: FieldDescriptor, value: Any) -> None:
    if value is None:  # a nested message past the depth limit: left unset
        return
    target = getattr(msg, f.name)
    if _is_map(f):
        for entry in value:
            if entry is not None:
                key, val = entry.key, entry.value
                if isinstance(target[key], Message):
                    target[key].CopyFrom(val)
                else:
                    target[key] = val
    elif f.is_repeated and f.type == FD.TYPE_MESSAGE:
        for item in value:
            if item is not None:
                target.add().CopyFrom(item)
    elif f.is_repeated:
        target.extend(value)
    elif f.type == FD.TYPE_MESSAGE:
        target.CopyFrom(value)
    else:
        setattr(msg, f.name, value)


def messages(descriptor: Descriptor, hints: Hints | None = None) -> st.SearchStrategy[Message]:
    """Instances of ``descriptor``'s message class, biased by ``hints``."""
    return _Builder(hints or Hints()).message(descriptor)


def mutants(seeds: Sequence[Message], hints: Hints | None = None, max_changes: int = 2
            ) -> st.SearchStrategy[Message]:
    """Copies of valid ``seeds`` with up to ``max_changes`` fields cleared, replaced by a
    generated value or (repeated fields) extended: requests with one or two things
    wrong, which get past the checks that a fully random request fails first."""
    builder = _Builder(hints or Hints())
    d = seeds[0].DESCRIPTOR
    cls = GetMessageClass(d)
    values = {f.name: builder.value(f, 1) for f in d.fields}

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        msg = cls()
        msg.CopyFrom(draw(st.sampled_from(list(seeds))))
        changed = draw(st.lists(st.sampled_from(list(d.fields)), max_size=max_changes,
                                unique_by=lambda f: f.name)) if d.fields else []
        for f in changed:
            action = draw(st.sampled_from(["clear", "set", "set", "extend"] if f.is_repeated else
                                          ["clear", "set", "set"]))
            if action != "extend":
                msg.ClearField(f.name)
            if action != "clear":
                _assign(msg, f, draw(values[f.name]))
        return msg

    return build()


# ---------------------------------------------------------------------------------------------
# semi-valid values


def near_range(size: int, slack: int = 4) -> st.SearchStrategy[int]:
    """Ids of a [0, size) range: mostly valid, often right at an edge, sometimes just past it."""
    return weighted((4, st.integers(0, max(size - 1, 0))),
                    (2, st.sampled_from(sorted({0, 1, max(size - 1, 0), size, size + 1}))),
                    (1, st.integers(size, size + slack)))


def id_lists(size: int, max_items: int = 8, limit: int | None = None) -> st.SearchStrategy[list[int]]:
    """Lists of ids for a [0, size) range: distinct and valid, with a duplicate, one past
    the end, empty, or one more than ``limit`` items."""
    valid = st.lists(st.integers(0, max(size - 1, 0)), min_size=1, max_size=max_items, unique=True)
    options: list[tuple[int, st.SearchStrategy[list[int]]]] = [
        (6, valid),
        (1, valid.map(lambda ids: ids + ids[:1])),
        (1, valid.map(lambda ids: ids + [size])),
        (1, st.just([])),
    ]
    if limit is not None:
        options.append((1, st.just(list(range(limit + 1)))))
    return weighted(*options)


def one_of_names(names: Sequence[str], noise: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[str]:
    """A known name most of the time, a near miss sometimes (case, whitespace, a suffix)."""
    if not names:
        return noise or strings()
    known = st.sampled_from(list(names))
    near = known.flatmap(lambda n: st.sampled_from([n.upper(), f" {n}", f"{n} ", f"{n}x", n[:-1], f"{n}\x00"]))
    return weighted((6, known), (2, near), (1, noise if noise is not None else strings()))


# ---------------------------------------------------------------------------------------------
# fixed example lists


def draw_examples(strategy: st.SearchStrategy[T], n: int, seed_value: int) -> list[T]:
    """``n`` examples of ``strategy``, the same list every time for the same seed."""
    out: list[T] = []

    # Hypothesis never runs one choice sequence twice: a branch that is one fixed value
    # (a valid id, a known name) would be used once and then starved, whatever its weight.
    # A throwaway 63-bit nonce at the end makes every example new, so the weights hold.
    @seed(seed_value)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy, st.integers(0, 2**63 - 1))
    def collect(example: T, _nonce: int) -> None:
        out.append(example)

    collect()
    return out


def seed_of(name: str, base: int = 0) -> int:
    """A stable seed per name (``hash`` of a str changes between processes)."""
    return base + sum((i + 1) * ord(c) for i, c in enumerate(name))


__all__: list[str] = ["Hints", "binary", "draw_examples", "floats", "huge_strings", "id_lists", "integers",
                      "messages", "mutants", "near_range", "one_of_names", "seed_of", "strings", "weighted"]
