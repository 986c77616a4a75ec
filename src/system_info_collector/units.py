"""Parsing of human durations (``250ms``, ``5m``, ``7d``) and sizes (``512KB``, ``1GiB``)."""

from __future__ import annotations

import re

MAX_DURATION = 3650 * 86400.0  # ten years: beyond that a number is a typo (or infinite)
MAX_SIZE = 1024**6  # 1 EiB
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a number with an optional unit ms, s, m, h or d (default s)."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration (expected e.g. 250ms, 1s, 5m, 24h, 7d)")
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds > MAX_DURATION:
        raise ValueError(f"{text!r} is too long (at most {MAX_DURATION // 86400:g}d)")
    return seconds


def parse_size(text: str) -> int:
    """Bytes in ``text``: KB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB powers of 1024."""
    match = _SIZE.match(text)
    unit = (match.group(2) or "").lower() if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size (expected e.g. 512KB, 100MB, 1GiB)")
    size = float(match.group(1)) * _SIZE_UNITS[unit]
    if size > MAX_SIZE:
        raise ValueError(f"{text!r} is too large (at most 1EiB)")
    return int(size)


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def format_size(size: int) -> str:
    """``4000`` -> ``4KB``, ``1048576`` -> ``1MiB``: the largest unit that divides ``size``."""
    units = (
        ("TiB", 1024**4),
        ("TB", 1000**4),
        ("GiB", 1024**3),
        ("GB", 1000**3),
        ("MiB", 1024**2),
        ("MB", 1000**2),
        ("KiB", 1024),
        ("KB", 1000),
    )
    for unit, factor in units:
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"
