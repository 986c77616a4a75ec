"""The kernel clock's discipline state from ``adjtimex(2)`` (read only): one record a tick.

What NTP/chrony/PTP daemons steer and what node_exporter's ``timex`` collector serves, in its
units: the offset from the reference (microseconds, or nanoseconds when ``STA_NANO`` is set),
the frequency correction (parts per million with a 16-bit fraction), the maximum and
estimated errors, the status bits and the PPS counters. ``sync_status`` is 0 when the call
answers ``TIME_ERROR`` (the clock is not synchronised: ``STA_UNSYNC``, or a PPS signal lost),
else 1 -- node-mixin's ``NodeClockNotSynchronising`` watches it, ``NodeClockSkewDetected`` the
offset.

The kernel clock is not namespaced: inside a container this is the host's clock (querying needs
no capability; only setting it would). The call goes through ``ctypes`` to the C library.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields

from system_info_collector.collector import (
    Collector,
    Measurement,
    NoSettings,
    count,
    gauge,
    seconds,
    signed_gauge,
    signed_seconds,
)
from system_info_collector.errors import ProviderError
from system_info_collector.hostpaths import HostPaths
from system_info_collector.model import Sample

MEASUREMENT = Measurement(
    name="timex",
    entity=(),
    labels=(),
    fields=(
        signed_seconds("offset_seconds", "offset of the system clock from its reference"),
        gauge("frequency_adjustment_ratio", "the clock's frequency correction (1 = none)"),
        seconds("maxerror_seconds", "the kernel's maximum error bound"),
        seconds("estimated_error_seconds", "the kernel's estimated error"),
        count("status", "the status bits (STA_*: 64 = STA_UNSYNC, 8192 = STA_NANO, …)"),
        count(
            "sync_status", "1 if synchronised to a reference, 0 if the clock state is TIME_ERROR"
        ),
        count("loop_time_constant", "the phase-locked loop's time constant"),
        seconds("tick_seconds", "time between clock ticks"),
        seconds("tai_offset_seconds", "TAI minus UTC as the kernel knows it (0 if never set)"),
        signed_gauge("pps_frequency_hertz", "PPS frequency correction"),
        seconds("pps_jitter_seconds", "PPS jitter"),
        seconds("pps_shift_seconds", "PPS interval duration (log2 seconds)"),
        gauge("pps_stability_hertz", "PPS stability, average of recent frequency changes"),
        count("pps_jitter_total", "PPS jitter limit exceeded events"),
        count("pps_calibration_total", "PPS calibration intervals"),
        count("pps_error_total", "PPS calibration errors"),
        count("pps_stability_exceeded_total", "PPS stability limit exceeded events"),
    ),
    help="the kernel clock's synchronisation state (adjtimex(2), read only)",
)

TIME_ERROR = 5  # clock state: not synchronised
STA_NANO = 0x2000  # offset and jitter in nanoseconds, not microseconds
_PPM16 = 65536 * 1e6  # frequencies are in ppm with a 16-bit fraction


@dataclass(frozen=True, slots=True)
class TimexReading:
    """The ``struct timex`` fields the collector serves, as the kernel gives them, and the
    call's return value (the clock state, ``TIME_OK`` 0 … ``TIME_ERROR`` 5)."""

    state: int
    offset: int
    freq: int
    maxerror: int
    esterror: int
    status: int
    constant: int
    tick: int
    ppsfreq: int
    jitter: int
    shift: int
    stabil: int
    jitcnt: int
    calcnt: int
    errcnt: int
    stbcnt: int
    tai: int


_STRUCT_FIELDS = tuple(f.name for f in dataclass_fields(TimexReading))[1:]  # all but state


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """``struct timex`` of <sys/timex.h> (64-bit Linux: every field a long but these ints)."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


def kernel_adjtimex() -> Callable[[], TimexReading]:
    """A reader of this kernel's clock state: ``adjtimex`` with ``modes`` 0 (changes nothing)."""
    libc = ctypes.CDLL(None, use_errno=True)
    call = libc.adjtimex
    call.argtypes = [ctypes.POINTER(_Timex)]
    call.restype = ctypes.c_int

    def read() -> TimexReading:
        buf = _Timex()  # zeroed: modes 0 is a query
        state = call(ctypes.byref(buf))
        if state < 0:
            err = ctypes.get_errno()
            raise ProviderError(f"adjtimex: {os.strerror(err)}")
        return TimexReading(state, *(getattr(buf, name) for name in _STRUCT_FIELDS))

    return read


def fields(r: TimexReading) -> dict[str, float | int]:
    """The record's fields, in node_exporter's units."""
    divisor = 1e9 if r.status & STA_NANO else 1e6
    return {
        "offset_seconds": r.offset / divisor,
        "frequency_adjustment_ratio": 1 + r.freq / _PPM16,
        "maxerror_seconds": r.maxerror / 1e6,
        "estimated_error_seconds": r.esterror / 1e6,
        "status": r.status,
        "sync_status": 0 if r.state == TIME_ERROR else 1,
        "loop_time_constant": r.constant,
        "tick_seconds": r.tick / 1e6,
        "tai_offset_seconds": float(r.tai),
        "pps_frequency_hertz": r.ppsfreq / _PPM16,
        "pps_jitter_seconds": r.jitter / divisor,
        "pps_shift_seconds": float(r.shift),
        "pps_stability_hertz": r.stabil / _PPM16,
        "pps_jitter_total": r.jitcnt,
        "pps_calibration_total": r.calcnt,
        "pps_error_total": r.errcnt,
        "pps_stability_exceeded_total": r.stbcnt,
    }


class TimexProvider:
    name = "timex"

    def __init__(self, read: Callable[[], TimexReading]) -> None:
        self._read = read

    def prime(self) -> None:
        pass

    def collect(self) -> list[Sample]:
        return [Sample({}, fields(self._read()))]

    def close(self) -> None:
        pass


def _probe(paths: HostPaths, settings: NoSettings) -> str:
    f = fields(kernel_adjtimex()())
    synced = "synchronised" if f["sync_status"] else "NOT synchronised"
    return (
        f"adjtimex readable: clock {synced}, offset {f['offset_seconds']:+.6f} s, "
        f"max error {f['maxerror_seconds']:g} s"
    )


COLLECTOR = Collector(
    measurement=MEASUREMENT,
    settings=NoSettings,
    factory=lambda paths, settings, clock: TimexProvider(kernel_adjtimex()),
    probe=("clock adjtimex", _probe),
)
