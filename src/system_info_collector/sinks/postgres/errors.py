"""What a PostgreSQL error means for the data: :class:`ErrorKind`, decided by SQLSTATE class.

As Telegraf's PostgreSQL output does (``isTempError``): the class of the SQLSTATE first, then,
for errors that carry none (libpq could not connect), the message.
"""

from __future__ import annotations

from enum import StrEnum

import psycopg


class ErrorKind(StrEnum):
    TRANSIENT = "transient"  # retry as is: connection, timeout, restart, resources, ...
    DATA = "data"  # the server rejects a row: bisect, dead-letter that row
    CONFIG = "config"  # password, database, schema, privilege: log, keep the data, probe


TRANSIENT, DATA, CONFIG = ErrorKind.TRANSIENT, ErrorKind.DATA, ErrorKind.CONFIG

# SQLSTATE class (first two characters) -> kind; every class not listed is transient
# (08 connection, 40 serialization, 53 resources, 55, 57 shutdown/timeout, 58, XX, ...).
BY_SQLSTATE_CLASS: dict[str, ErrorKind] = {
    "22": DATA,  # data exception (out of range, invalid text representation, ...)
    "23": DATA,  # integrity constraint violation (NOT NULL, CHECK, ...)
    "54": DATA,  # program limit exceeded (row too big)
    "28": CONFIG,  # invalid authorization
    "3D": CONFIG,  # invalid catalog name (no such database)
    "3F": CONFIG,  # invalid schema name
    "42": CONFIG,  # syntax error or access rule violation (privilege, undefined object)
    "0A": CONFIG,  # feature not supported
    "0L": CONFIG,  # invalid grantor
    "0P": CONFIG,  # invalid role specification
    "2B": CONFIG,  # dependent privilege descriptors still exist
    "44": CONFIG,  # WITH CHECK OPTION violation
}
_CONFIG_MESSAGES = (
    "password authentication failed",
    "no password supplied",
    "does not exist",  # database / role
    "no pg_hba.conf entry",
    "permission denied",
    "authentication method",
    "ssl is not enabled",
    "server does not support ssl",
    "invalid connection option",
    "invalid uri",
    'missing "="',
)


def classify(exc: BaseException) -> ErrorKind:
    """The :class:`ErrorKind` of a psycopg error (SQLSTATE class first)."""
    state = getattr(exc, "sqlstate", None)
    if state:
        return BY_SQLSTATE_CLASS.get(state[:2], TRANSIENT)
    if isinstance(exc, psycopg.ProgrammingError | psycopg.NotSupportedError):
        return CONFIG
    message = str(exc).lower()
    if "timeout expired" in message or "connection refused" in message:
        return TRANSIENT
    if any(pattern in message for pattern in _CONFIG_MESSAGES):
        return CONFIG
    return TRANSIENT


def error_text(exc: BaseException) -> str:
    """The server's message (with SQLSTATE when there is one), on one line."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    state = getattr(exc, "sqlstate", None)
    text = primary or str(exc).strip() or type(exc).__name__
    text = " ".join(text.split())
    return f"{state}: {text}" if state else text
