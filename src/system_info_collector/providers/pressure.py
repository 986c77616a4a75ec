"""Pressure stall information (PSI) from ``<proc>/pressure/{cpu,memory,io}``.

A kernel without PSI (``CONFIG_PSI=n``: no directory; booted with ``psi=0``: reading fails with
EOPNOTSUPP) is said once at start (INFO ``collector_source_missing``, and in ``check``); the
collector then reports nothing, without an error every tick. System-wide ``full`` for ``cpu``
exists since Linux 5.13 (always 0 there); before, it is reported as 0.
"""

from __future__ import annotations

import errno
import time

from system_info_collector.collector import (
    Clock,
    Collector,
    Measurement,
    NoSettings,
    percent,
    rate,
    seconds,
)
from system_info_collector.errors import ProviderError
from system_info_collector.hostpaths import HostPaths
from system_info_collector.model import FieldValue, Sample
from system_info_collector.providers._counters import Previous, deltas, say_missing
from system_info_collector.providers._read import ProcFile

RESOURCES = ("cpu", "memory", "io")
_KINDS = ("some", "full")
_WINDOWS = ("avg10", "avg60", "avg300")

MEASUREMENT = Measurement(
    name="pressure",
    entity=("resource",),
    labels=(),
    fields=tuple(
        f
        for kind in _KINDS
        for f in (
            *(
                percent(f"{kind}_{w}_percent", f"share of time {kind} tasks stalled, {w} average")
                for w in _WINDOWS
            ),
            seconds(f"{kind}_stall_seconds_total", f"time {kind} tasks stalled since boot"),
            rate(
                f"{kind}_stall_seconds_per_second",
                f"seconds {kind} tasks stalled per second since the previous reading",
            ),
        )
    ),
    help="pressure stall information per resource (<proc>/pressure/*)",
)

Reading = dict[str, tuple[float, float, float, int]]  # kind -> avg10, avg60, avg300, total µs


def parse_pressure(text: str, path: str = "pressure") -> Reading:
    reading: Reading = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        kind, *pairs = line.split()
        values = dict(p.partition("=")[::2] for p in pairs)
        try:
            reading[kind] = (
                *(float(values[w]) for w in _WINDOWS),
                int(values["total"]),
            )  # type: ignore[assignment]
        except (KeyError, ValueError):
            raise ProviderError(
                f"{path}: line {lineno}: expected 'some|full avg10= avg60= avg300= total=': "
                f"{line!r}"
            ) from None
    if "some" not in reading:
        raise ProviderError(f"{path}: no 'some' line (truncated?)")
    return reading


def unsupported(exc: ProviderError) -> bool:
    """True if ``exc`` says the kernel has no PSI (no file, or EOPNOTSUPP with psi=0)."""
    cause = exc.__cause__
    return isinstance(cause, OSError) and cause.errno in (
        errno.ENOENT,
        errno.EOPNOTSUPP,
        errno.ENOTSUP,
    )


# per kind: the names of its window averages, its total and its rate, in the fields' order
_FIELD_NAMES = tuple(
    (
        kind,
        tuple(f"{kind}_{w}_percent" for w in _WINDOWS),
        f"{kind}_stall_seconds_total",
        f"{kind}_stall_seconds_per_second",
    )
    for kind in _KINDS
)


class PressureProvider:
    name = "pressure"

    def __init__(self, paths: HostPaths, clock: Clock = time.monotonic) -> None:
        self._paths = paths
        self._files: dict[str, ProcFile] | None = None
        self._prev: Previous[Reading] = Previous(clock)

    def _open(self) -> dict[str, ProcFile]:
        """The resources this kernel reports on; the missing ones are said once, here."""
        files, missing = {}, []
        for resource in RESOURCES:
            file = ProcFile(self._paths.proc_path("pressure", resource))
            try:
                file.read()
            except ProviderError as exc:
                file.close()
                if not unsupported(exc):
                    raise
                missing.append((resource, str(exc)))
                continue
            files[resource] = file
        if missing:
            say_missing(
                self.name,
                self._paths.proc_path("pressure"),
                "; ".join(reason for _, reason in missing),
                f"no {', '.join(r for r, _ in missing)} pressure (kernel without PSI: "
                "CONFIG_PSI=n or booted with psi=0); not collected",
            )
        return files

    def _read(self) -> dict[str, Reading]:
        if self._files is None:
            self._files = self._open()
        return {r: parse_pressure(f.read(), f.path) for r, f in self._files.items()}

    def prime(self) -> None:
        self._prev.start(self._read())

    def collect(self) -> list[Sample]:
        elapsed, pairs = self._prev.advance(self._read())
        samples = []
        for resource, prev, reading in pairs:
            fields: dict[str, FieldValue] = {}
            for kind, windows, total, per_second in _FIELD_NAMES:
                cur = reading.get(kind, (0.0, 0.0, 0.0, 0))
                before = prev.get(kind, (0.0, 0.0, 0.0, 0))
                d = deltas((before[3],), (cur[3],))
                if d is None:
                    break  # total went backwards: start again from this reading
                fields.update(zip(windows, cur[:3], strict=True))
                fields[total] = cur[3] / 1e6
                fields[per_second] = d[0] / 1e6 / elapsed
            else:
                samples.append(Sample({"resource": resource}, fields))
        return samples

    def close(self) -> None:
        for file in (self._files or {}).values():
            file.close()


def _probe(paths: HostPaths, settings: NoSettings) -> str:
    found, missing = [], []
    for resource in RESOURCES:
        path = paths.proc_path("pressure", resource)
        file = ProcFile(path)
        try:
            parse_pressure(file.read(), path)
            found.append(resource)
        except ProviderError as exc:
            if not unsupported(exc):
                raise
            missing.append(resource)
        finally:
            file.close()
    if not found:
        return (
            f"{paths.proc_path('pressure')} not available (kernel without PSI: CONFIG_PSI=n or "
            "psi=0): nothing to collect"
        )
    note = f"; not available: {', '.join(missing)}" if missing else ""
    return f"{paths.proc_path('pressure')} readable ({', '.join(found)}){note}"


COLLECTOR = Collector(
    measurement=MEASUREMENT,
    settings=NoSettings,
    factory=lambda paths, settings, clock: PressureProvider(paths, clock),
    probe=("proc pressure", _probe),
)
