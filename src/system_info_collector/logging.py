"""loguru set-up: JSON lines (default) or text on stderr, stable event names, secrets redacted.

Every log call goes through :func:`event`, so each line has a stable ``event`` name plus
structured fields; messages are passed through :func:`redact_dsn` before they are written.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from loguru import logger

from system_info_collector.redact import redact_dsn

if TYPE_CHECKING:
    from loguru import Message


def _json_sink(stream: TextIO) -> Any:
    def write(message: Message) -> None:
        record = message.record
        extra = dict(record["extra"])
        payload: dict[str, Any] = {
            "ts": record["time"].astimezone(UTC).isoformat(timespec="milliseconds"),
            "level": record["level"].name,
            "event": extra.pop("event", "log"),
            "msg": redact_dsn(record["message"]),
        }
        for key, value in extra.items():
            payload[key] = redact_dsn(value) if isinstance(value, str) else value
        if record["exception"] is not None and record["exception"].value is not None:
            exc = record["exception"].value
            payload["error"] = redact_dsn(f"{type(exc).__name__}: {exc}")
        stream.write(json.dumps(payload, default=str, separators=(",", ":")) + "\n")
        stream.flush()

    return write


def _text_sink(stream: TextIO) -> Any:
    def write(message: Message) -> None:
        record = message.record
        extra = dict(record["extra"])
        name = extra.pop("event", "log")
        fields = " ".join(f"{k}={v}" for k, v in extra.items())
        ts = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        line = f"{ts} {record['level'].name:<7} {name}: {record['message']}"
        stream.write(redact_dsn(f"{line} {fields}".rstrip()) + "\n")
        stream.flush()

    return write


def configure(level: str = "INFO", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Replace loguru's default handler; called once, at start-up, by the CLI."""
    logger.remove()
    out = stream or sys.stderr
    sink = _json_sink(out) if fmt == "json" else _text_sink(out)
    logger.add(sink, level=level.upper(), format="{message}", backtrace=False, diagnose=False)


def event(level: str, name: str, message: str, **fields: Any) -> None:
    """Log ``message`` under the stable event ``name`` with structured ``fields``."""
    logger.bind(event=name, **fields).opt(depth=1).log(level, message)
