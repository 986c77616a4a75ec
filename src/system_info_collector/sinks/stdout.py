"""JSON lines on standard output: one object per record (also the format of ``once``).

Layout ``columns`` (``SIC_STDOUT_LAYOUT``, the default) is the CSV file's row as an object:
``measurement``, then the CSV columns in their order -- ``ts``, ``host``, the entity and label
columns (``cpu``, ``mountpoint``, …), every field, ``tags`` holding the other labels (the
static ``SIC_TAGS``), exactly what the CSV ``tags`` column holds, and ``interval_ms``. Layout
``nested`` is the earlier shape, ``{"measurement", "ts", "host", "tags": {all labels},
"fields": {…}, "interval_ms"}``, kept for parsers written against it (and used by the
expected-output fixtures).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import TextIO

from system_info_collector.errors import PermanentSinkError, TransientSinkError
from system_info_collector.logging import event
from system_info_collector.model import Record
from system_info_collector.schema import MEASUREMENTS
from system_info_collector.sinks import CheckResult


def _ts(record: Record) -> str:
    return record.ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record_line(record: Record, layout: str = "columns") -> str:
    """One record as one JSON object in ``layout`` (see the module docstring)."""
    spec = MEASUREMENTS.get(record.measurement)
    if layout == "nested" or spec is None:
        return record_json(record)
    tags = record.tags
    labels = spec.label_columns
    obj: dict[str, object] = {
        "measurement": record.measurement,
        "ts": _ts(record),
        "host": record.host,
    }
    for column in labels:
        obj[column] = tags.get(column, "")
    for f in spec.fields:
        obj[f.name] = record.fields.get(f.name)
    obj["tags"] = {k: tags[k] for k in sorted(tags) if k not in labels}
    obj["interval_ms"] = record.interval_ms
    return json.dumps(obj, separators=(",", ":"))


def record_json(record: Record) -> str:
    """The ``nested`` layout."""
    return json.dumps(
        {
            "measurement": record.measurement,
            "ts": _ts(record),
            "host": record.host,
            "tags": dict(record.tags),
            "fields": dict(record.fields),
            "interval_ms": record.interval_ms,
        },
        separators=(",", ":"),
    )


class StdoutSink:
    name = "stdout"

    def __init__(self, stream: TextIO | None = None, *, layout: str = "columns") -> None:
        self._stream = stream
        self._layout = layout
        self._closed = False

    def open(self) -> None:
        pass

    def write(self, batch: Sequence[Record]) -> None:
        stream = self._stream or sys.stdout
        if self._closed:
            raise PermanentSinkError("standard output was closed by its reader")
        try:
            stream.write("".join(record_line(r, self._layout) + "\n" for r in batch))
            stream.flush()
        except BrokenPipeError as exc:
            self._reader_gone(stream)
            raise PermanentSinkError("standard output was closed by its reader") from exc
        except OSError as exc:
            raise TransientSinkError(f"cannot write to stdout: {exc}") from exc

    def _reader_gone(self, stream: TextIO) -> None:
        """Like any Unix filter (``run | head``): the reader left, so the collector stops.

        Nothing written to stdout can ever be read again, so retrying is pointless; the
        process is asked to stop as by SIGTERM (the other sinks still flush), and stdout is
        pointed at /dev/null so the interpreter's final flush does not fail as well.
        """
        self._closed = True
        event("ERROR", "stdout_closed", "standard output closed by its reader; stopping")
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)
        if self._stream is None:  # the process's own stdout, not a test's stream
            os.kill(os.getpid(), signal.SIGTERM)

    def close(self) -> None:
        pass

    def check(self) -> list[CheckResult]:
        return [CheckResult("sink stdout", True, "writes JSON lines to standard output")]
