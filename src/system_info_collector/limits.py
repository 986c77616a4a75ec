"""Sane bounds of the numeric settings, and checks of text that would fail only at run time.

:data:`LIMITS` is the one table of minimums and maximums (the README's variable table quotes
it; a test keeps the two in step). Each bound says *why*: the value outside it does harm an
operator would not expect (a busy loop, a file per write, every rotated file deleted at once).
``config.load_settings`` reports every violation together with the other configuration errors
(exit 2); nothing here reads the environment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from system_info_collector.redact import redact_dsn
from system_info_collector.units import format_duration, format_size


@dataclass(frozen=True, slots=True)
class Limit:
    low: float | None
    high: float | None
    why: str  # what goes wrong outside the bounds
    kind: str = "duration"  # how to print a bound: duration, size or count

    def show(self, value: float) -> str:
        if self.kind == "size":
            return format_size(int(value))
        if self.kind == "count":
            return f"{int(value)}"
        return format_duration(value)


HOUR = 3600.0
PER_SINK_SPOOL_MAX_SIZE = "SIC_<SINK>_SPOOL_MAX_SIZE"
_PER_SINK_SPOOL = re.compile(r"SIC_[A-Z][A-Z_]*_SPOOL_MAX_SIZE")
LIMITS: Mapping[str, Limit] = {
    "SIC_INTERVAL": Limit(
        0.1,
        86400.0,
        "every sample costs a /proc scan; a day is the longest "
        "interval the health probes and retention make sense for",
    ),
    "SIC_SHUTDOWN_TIMEOUT": Limit(
        1.0,
        HOUR,
        "below 1s SIGTERM cannot flush anything; Kubernetes "
        "kills the pod at terminationGracePeriodSeconds anyway",
    ),
    "SIC_LOCK_TIMEOUT": Limit(
        None,
        HOUR,
        "how long a second collector waits for the directory lock; longer is a stuck rollout",
    ),
    "SIC_RETRY_INITIAL": Limit(0.01, HOUR, "0 retries a failing sink in a busy loop"),
    "SIC_RETRY_MAX_WAIT": Limit(
        0.1,
        HOUR,
        "below 100ms a failing sink is probed in a busy loop "
        "(100% CPU, thousands of connection attempts a second)",
    ),
    "SIC_RETRY_MAX": Limit(1, 1000, "attempts before probing every SIC_RETRY_MAX_WAIT", "count"),
    "SIC_CSV_ROTATE_SIZE": Limit(
        4000,
        None,
        "below 4KB a file is rotated on nearly every write (0: hundreds of files a minute)",
        "size",
    ),
    "SIC_CSV_ROTATE_INTERVAL": Limit(
        60.0, None, "below a minute a file is rotated every few ticks (0: on every write)"
    ),
    "SIC_CSV_RETENTION": Limit(
        HOUR,
        None,
        "below an hour rotated files are deleted as soon as "
        "they are written (0: every rotated file at once)",
    ),
    "SIC_CSV_MAX_TOTAL_SIZE": Limit(
        1_000_000, None, "below 1MB retention deletes every rotated file at once", "size"
    ),
    "SIC_CSV_BACKLOG": Limit(
        1,
        10_000_000,
        "records held in memory while the volume fails; 10 million is about 10 GB of RAM",
        "count",
    ),
    "SIC_DB_BATCH_MAX_ROWS": Limit(
        1, 1_000_000, "rows of one INSERT; more is one huge transaction held in memory", "count"
    ),
    "SIC_DB_FLUSH_INTERVAL": Limit(
        0.01,
        HOUR,
        "0 turns every record into its own transaction "
        "and a failing server into a connection storm",
    ),
    "SIC_DB_CONNECT_TIMEOUT": Limit(
        1.0, 300.0, "libpq counts whole seconds; 0 would wait forever for a black-holed server"
    ),
    "SIC_DB_STATEMENT_TIMEOUT": Limit(
        0.1,
        HOUR,
        "0 disables the server-side timeout, so a blocked table would hang the sink forever",
    ),
    "SIC_DB_SPOOL_MAX_SIZE": Limit(
        64_000,
        None,
        "below 64KB the spool holds no outage at all (0: nearly every record dropped)",
        "size",
    ),
    "SIC_BUFFER_MEMORY_MAX_SIZE": Limit(
        64 * 1024,
        None,
        "below 64KiB a sink's in-memory backlog holds a few ticks, no outage",
        "size",
    ),
    # every sink with a disk buffer: SIC_CSV_SPOOL_MAX_SIZE, SIC_REMOTE_WRITE_SPOOL_MAX_SIZE, ...
    PER_SINK_SPOOL_MAX_SIZE: Limit(
        64_000,
        None,
        "below 64KB the spool holds a few ticks, no outage (0: nearly every record dropped)",
        "size",
    ),
}


def limit_problems(values: Mapping[str, float | None], given: Mapping[str, str]) -> list[str]:
    """One problem per parsed value outside its :data:`LIMITS` (unparsed ones are ``None``)."""
    problems = []
    for key, value in values.items():
        limit = limit_of(key)
        if value is None:
            continue
        if limit.low is not None and value < limit.low:
            bound = f"must be at least {limit.show(limit.low)}"
        elif limit.high is not None and value > limit.high:
            bound = f"must be at most {limit.show(limit.high)}"
        else:
            continue
        problems.append(f"{key}={given.get(key)!r}: {bound}; {limit.why}")
    return problems


def limit_of(key: str) -> Limit:
    """The bounds of the variable ``key`` (a per-sink spool size shares one entry)."""
    if key not in LIMITS and _PER_SINK_SPOOL.fullmatch(key):
        return LIMITS[PER_SINK_SPOOL_MAX_SIZE]
    return LIMITS[key]


def limits_text(key: str) -> str:
    """``min 100ms, max 1h`` for the README table."""
    limit = LIMITS[key]
    parts = []
    if limit.low is not None:
        parts.append(f"min `{limit.show(limit.low)}`")
    if limit.high is not None:
        parts.append(f"max `{limit.show(limit.high)}`")
    return ", ".join(parts)


# -- text values -------------------------------------------------------------------------------
def text_problems(source: Mapping[str, str]) -> list[str]:
    """Values that are not text: bytes that are not UTF-8 (``os.environ`` keeps them as lone
    surrogates, which no CSV file, database or log line can hold) or control characters."""
    problems = []
    for key in sorted(source):
        if not key.startswith("SIC_") and key != "NODE_NAME":
            continue
        value = source[key]
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raw = value.encode("utf-8", "surrogateescape")
            shown = raw.decode("ascii", "backslashreplace")
            problems.append(f"{key}='{shown}': not valid UTF-8 text (set it to UTF-8 text)")
            continue
        if key in ("SIC_HOSTNAME", "NODE_NAME") and any(
            ord(c) < 32 or ord(c) == 127 for c in value
        ):
            problems.append(f"{key}={value!r}: contains control characters")
    return problems


# -- PostgreSQL connection strings -----------------------------------------------------------
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_CHOICES = {
    "sslmode": SSLMODES,
    "gssencmode": ("disable", "prefer", "require"),
    "channel_binding": ("disable", "prefer", "require"),
    "target_session_attrs": (
        "any",
        "read-write",
        "read-only",
        "primary",
        "standby",
        "prefer-standby",
    ),
    "load_balance_hosts": ("disable", "random"),
}
_INTEGERS = (
    "connect_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
)
_URI = re.compile(r"^postgres(?:ql)?://(?P<authority>[^/?#]*)", re.IGNORECASE)


def dsn_problems(dsn: str) -> list[str]:
    """What libpq would only report at connect time -- or misread -- as configuration errors.

    A URI password with an unencoded ``@`` is split at the first ``@`` by libpq, and the rest
    of the password becomes the host name (which then shows in every "could not resolve"
    message); bad ports and option values would fail every connection attempt forever.
    """
    name = "SIC_DB_DSN"
    shown = redact_dsn(dsn)
    uri = _URI.match(dsn.strip())
    if uri and uri.group("authority").count("@") > 1:
        return [
            f"{name}={shown!r}: more than one '@' before the host: percent-encode @ as %40 "
            "in the user name or password"
        ]
    from psycopg import Error as PsycopgError
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn)
    except PsycopgError as exc:
        # libpq quotes pieces of what it could not parse: the DSN may be nothing but a
        # password pasted in the wrong place, so neither it nor those pieces are shown.
        text = " ".join(str(exc).split()) or type(exc).__name__
        values = {token.partition("=")[2] or token for token in dsn.split()}
        for piece in sorted(values, key=len, reverse=True):
            if len(piece) >= 3:
                text = text.replace(piece, "***")
        return [
            f"{name} (not shown, it may hold a password): not a libpq connection string "
            f"({redact_dsn(text)})"
        ]
    problems = []
    for port in str(params.get("port") or "").split(","):
        port = unquote(port.strip())
        if port and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            problems.append(f"{name}={shown!r}: port {port!r} is not a number from 1 to 65535")
    for key, allowed in _CHOICES.items():
        value = params.get(key)
        if value is not None and str(value) not in allowed:
            problems.append(
                f"{name}={shown!r}: {key}={value!r}: expected one of {', '.join(allowed)}"
            )
    for key in _INTEGERS:
        value = params.get(key)
        if value is not None and not re.fullmatch(r"\s*-?\d+\s*", str(value)):
            problems.append(f"{name}={shown!r}: {key}={value!r}: expected a whole number")
    return problems
