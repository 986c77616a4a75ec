"""Keep secrets out of logs and error messages."""

from __future__ import annotations

import re

# The password runs to the *last* '@' of the authority: an unencoded '@' in it stays hidden.
_URI_PASSWORD = re.compile(
    r"(?P<head>[a-z][a-z0-9+.-]*://[^:/?#@\s]*:)(?P<pw>[^/?#\s]*)(?=@)", re.I
)
_KV_PASSWORD = re.compile(
    r"(?P<head>(?<![?&])\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|[^\s]*)", re.IGNORECASE
)
# A host name with an '@' in it is the tail of a password libpq split at its first '@'
# (``postgresql://u:pa@ss@host``): hide everything before the last '@' of such a word.
_AT_WORD = re.compile(r"(?:^|(?<=[\s'\"(=,]))[^\s'\"@/=,()]+(?:@[^\s'\"@/=,()]+)*(?=@[^\s@]+)")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<pw>[^&#\s]*)", re.IGNORECASE)


def redact_dsn(text: str) -> str:
    """``text`` with every password of a libpq URI or key=value DSN replaced by ``***``."""
    text = _URI_PASSWORD.sub(r"\g<head>***", text)
    text = _QUERY_PASSWORD.sub(r"\g<head>***", text)
    text = _KV_PASSWORD.sub(r"\g<head>***", text)
    return _AT_WORD.sub("***", text)


def redact_secret(text: str, secrets: list[str]) -> str:
    """``text`` with DSN passwords and each literal secret (a password file's content) masked."""
    text = redact_dsn(text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
