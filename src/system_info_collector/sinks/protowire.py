"""Protobuf's wire format, the few pieces the push sinks write themselves (``prompb.py`` for
remote write, ``otlp_wire.py`` for OTLP): varints, length-delimited fields (strings and
messages), and packed fixed-width numbers. A string field at its proto3 default (empty) is left
out by :func:`text`; a caller writes a ``oneof`` member with :func:`field` (always written)."""

from __future__ import annotations

import struct

DOUBLE = struct.Struct("<d").pack  # double (wire type 1)
FIXED64 = struct.Struct("<Q").pack  # fixed64 (wire type 1)
SFIXED64 = struct.Struct("<q").pack  # sfixed64 (wire type 1)

_SMALL = [bytes((n,)) for n in range(0x80)]


def varint(n: int) -> bytes:
    """``n`` as a protobuf varint (negative int64 as its 64-bit two's complement)."""
    if 0 <= n < 0x80:  # lengths of labels and samples: one or two bytes
        return _SMALL[n]
    if 0 <= n < 0x4000:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field: a string's UTF-8 bytes or a message's bytes."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def text(number: int, value: str) -> bytes:
    """A string field, left out when empty (proto3's default)."""
    return field(number, value.encode()) if value else b""
