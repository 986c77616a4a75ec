"""Keep secrets out of logs and error messages."""

from __future__ import annotations

import re

_URI_PASSWORD = re.compile(
    r"(?P<head>[a-z][a-z0-9+.-]*://[^:/?#@\s]*:)(?P<pw>[^@/?#\s]*)(?=@)", re.I
)
_KV_PASSWORD = re.compile(
    r"(?P<head>(?<![?&])\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|[^\s]*)", re.IGNORECASE
)
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<pw>[^&#\s]*)", re.IGNORECASE)


def redact_dsn(text: str) -> str:
    """``text`` with every password of a libpq URI or key=value DSN replaced by ``***``."""
    text = _URI_PASSWORD.sub(r"\g<head>***", text)
    text = _QUERY_PASSWORD.sub(r"\g<head>***", text)
    return _KV_PASSWORD.sub(r"\g<head>***", text)


def redact_secret(text: str, secrets: list[str]) -> str:
    """``text`` with DSN passwords and each literal secret (a password file's content) masked."""
    text = redact_dsn(text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
