"""JSON lines on standard output: one object per record (also the format of ``once``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TextIO

from system_info_collector.errors import TransientSinkError
from system_info_collector.model import Record
from system_info_collector.sinks import CheckResult


def record_json(record: Record) -> str:
    return json.dumps(
        {
            "measurement": record.measurement,
            "ts": record.ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "host": record.host,
            "tags": dict(record.tags),
            "fields": dict(record.fields),
        },
        separators=(",", ":"),
    )


class StdoutSink:
    name = "stdout"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def open(self) -> None:
        pass

    def write(self, batch: Sequence[Record]) -> None:
        stream = self._stream or sys.stdout
        try:
            stream.write("".join(record_json(r) + "\n" for r in batch))
            stream.flush()
        except OSError as exc:
            raise TransientSinkError(f"cannot write to stdout: {exc}") from exc

    def close(self) -> None:
        pass

    def check(self) -> list[CheckResult]:
        return [CheckResult("sink stdout", True, "writes JSON lines to standard output")]
