"""Saying where a request that protobuf refused to parse went wrong.

protobuf's parser only says "String field had bad UTF-8" or "Wire format was
corrupt". Any client can send such bytes (a non-Python one, or a bug), and the
caller needs to know which field to fix. This walks the bytes against the
message's descriptor, the way the parser does, and names the first field at
fault (``batch.texts[2]``), or the byte where the framing breaks.

It only runs after a parse has failed, so it need not be fast.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor, FieldDescriptor

MAX_DEPTH = 100  # protobuf's own recursion limit

_VARINT, _FIXED64, _LENGTH, _START_GROUP, _END_GROUP, _FIXED32 = 0, 1, 2, 3, 4, 5


@dataclass(frozen=True)
class WireProblem:
    field: str  # the field path, e.g. "texts[0]"; "" when the problem is in the framing itself
    description: str


class _Stop(Exception):
    def __init__(self, problem: WireProblem) -> None:
        self.problem = problem


def find_problem(descriptor: Descriptor, data: bytes) -> WireProblem | None:
    """The first thing in ``data`` that makes it an invalid ``descriptor`` message, or None."""
    try:
        _walk(descriptor, memoryview(data), 0, len(data), "", 0, None)
    except _Stop as stop:
        return stop.problem
    return None


def _varint(data: memoryview, pos: int, end: int, where: str, what: str) -> tuple[int, int]:
    value, shift, start = 0, 0, pos
    while True:
        if pos >= end:
            raise _Stop(WireProblem(where, f"the message ends inside {what} (byte {start}); it is truncated"))
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise _Stop(WireProblem(where, f"{what} at byte {start} is longer than 10 bytes"))


def _walk(descriptor: Descriptor | None, data: memoryview, pos: int, end: int, path: str, depth: int,
          group: int | None) -> int:
    """Walk fields from ``pos`` to ``end`` (or to the end of ``group``); return where it stopped."""
    if depth > MAX_DEPTH:
        raise _Stop(WireProblem(path, f"messages are nested more than {MAX_DEPTH} deep"))
    seen: dict[int, int] = {}
    while pos < end:
        start = pos
        key, pos = _varint(data, pos, end, path, "a field tag")
        number, wire = key >> 3, key & 7
        if wire == _END_GROUP:
            if group == number:
                return pos
            raise _Stop(WireProblem(path, f"an end-group tag at byte {start} closes no group"))
        if number == 0:
            raise _Stop(WireProblem(path, f"field number 0 at byte {start} is not allowed"))
        field = descriptor.fields_by_number.get(number) if descriptor is not None else None
        name = field.name if field is not None else f"<unknown field {number}>"
        index = seen.get(number, 0)
        seen[number] = index + 1
        here = f"{path}.{name}" if path else name
        if field is not None and field.is_repeated:
            here = f"{here}[{index}]"
        if wire == _VARINT:
            _, pos = _varint(data, pos, end, here, "a varint value")
        elif wire in (_FIXED64, _FIXED32):
            pos += 8 if wire == _FIXED64 else 4
            if pos > end:
                raise _Stop(WireProblem(here, f"the message ends inside a fixed-size value (byte {start}); "
                                              "it is truncated"))
        elif wire == _LENGTH:
            length, pos = _varint(data, pos, end, here, "a length")
            if pos + length > end:
                raise _Stop(WireProblem(here, f"declares {length} bytes but only {end - pos} follow; the message "
                                              "is truncated or the length is wrong"))
            _check_value(field, data, pos, pos + length, here, depth)
            pos += length
        elif wire == _START_GROUP:
            pos = _walk(None, data, pos, end, here, depth + 1, number)
        else:
            raise _Stop(WireProblem(here, f"wire type {wire} at byte {start} does not exist (valid: 0-5)"))
    if group is not None:
        raise _Stop(WireProblem(path, "a group is never closed; the message is truncated"))
    return pos


def _check_value(field: FieldDescriptor | None, data: memoryview, pos: int, end: int, where: str, depth: int) -> None:
    # A field sent with another wire type than its own is kept as an unknown field by
    # the parser, not refused; so only length-delimited values of these types matter.
    if field is None:
        return
    if field.type == FieldDescriptor.TYPE_STRING:
        try:
            bytes(data[pos:end]).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Stop(WireProblem(where, f"not valid UTF-8 (byte {exc.start} of the value is 0x"
                                           f"{data[pos + exc.start]:02x}); string fields must be UTF-8, "
                                           "send binary data in a bytes field")) from None
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        _walk(field.message_type, data, pos, end, where, depth + 1, None)


__all__ = ["WireProblem", "find_problem"]
