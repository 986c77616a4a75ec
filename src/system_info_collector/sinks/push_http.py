"""The HTTP client of the push sinks (``remote_write``, ``otlp``): one keep-alive connection,
a timeout on every request, auth from files, and answers classified by what the caller must do.

* 2xx: acknowledged;
* a status in ``retry_statuses`` (429 and 5xx for remote write; 429, 502, 503, 504 for OTLP),
  a refused or reset connection, a timeout: :class:`TransientSinkError` (the worker retries
  the same batch with the shared backoff);
* any other status: :class:`PermanentSinkError` carrying the status and the start of the
  receiver's answer.

TLS (``https://``) verifies the receiver with the system's CAs, or with a CA file; a client
certificate and key give mutual TLS (:class:`ClientTls`). Auth and TLS files are read at every
(re)connect, so a rotated token or certificate is picked up without a restart. Auth: a bearer
token (``Authorization: Bearer …``), HTTP basic auth (a user and a password file), or a file of
``Name: value`` header lines (OTLP). The secrets never appear in an error,
a log line or a metric: every message goes through
:func:`~system_info_collector.redact.redact_secret`.
"""

from __future__ import annotations

import base64
import http.client
import ssl
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from system_info_collector import __version__
from system_info_collector.clienttls import ClientTls
from system_info_collector.errors import PermanentSinkError, TransientSinkError
from system_info_collector.redact import redact_secret

USER_AGENT = f"system-info-collector/{__version__}"
MAX_ERROR_BODY = 300  # characters of the receiver's answer kept in an error message


@dataclass(frozen=True, slots=True)
class Auth:
    bearer_token_file: str | None = None
    basic_user: str | None = None
    basic_password_file: str | None = None
    headers_file: str | None = None


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read().strip()


def read_auth_headers(auth: Auth) -> tuple[dict[str, str], list[str]]:
    """The headers ``auth`` asks for, and the literal secrets they contain (to mask)."""
    headers: dict[str, str] = {}
    secrets: list[str] = []
    if auth.bearer_token_file:
        token = _read(auth.bearer_token_file)
        headers["Authorization"] = f"Bearer {token}"
        secrets.append(token)
    if auth.basic_user is not None and auth.basic_password_file:
        password = _read(auth.basic_password_file)
        pair = base64.b64encode(f"{auth.basic_user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {pair}"
        secrets += [password, pair]
    if auth.headers_file:
        for number, line in enumerate(_read(auth.headers_file).splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            name, sep, value = line.partition(":")
            if not sep or not name.strip() or any(c.isspace() for c in name.strip()):
                raise ValueError(f"{auth.headers_file}: line {number} is not 'Name: value'")
            headers[name.strip()] = value.strip()
            secrets.append(value.strip())
    return headers, [s for s in secrets if len(s) >= 3]


class PushClient:
    """POSTs bodies to one URL over a reused connection (not thread-safe: one worker thread)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        auth: Auth,
        retry_statuses: Collection[int],
        what: str,
        tls: ClientTls | None = None,
    ) -> None:
        parts = urlsplit(url)
        self._tls = tls or ClientTls()
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout = timeout
        self._auth = auth
        self._retry = frozenset(retry_statuses)
        self._what = what
        self._conn: http.client.HTTPConnection | None = None
        self._headers: dict[str, str] = {}
        self._url_secrets: list[str] = []
        self._userinfo: str | None = None
        if parts.password:
            self._url_secrets.append(parts.password)
        if parts.username is not None:
            pair = f"{parts.username}:{parts.password or ''}"
            self._userinfo = base64.b64encode(pair.encode()).decode()
            self._url_secrets.append(self._userinfo)
        self.secrets = list(self._url_secrets)

    @property
    def target(self) -> str:
        """Scheme, host, port and path (never credentials) for messages."""
        scheme = "https" if self._https else "http"
        return f"{scheme}://{self._host}:{self._port}{self._path.split('?')[0]}"

    def _connect(self) -> http.client.HTTPConnection:
        try:
            headers, secrets = read_auth_headers(self._auth)
        except (OSError, ValueError) as exc:
            raise TransientSinkError(f"{self._what}: cannot read the auth file: {exc}") from exc
        if self._userinfo and "Authorization" not in headers:
            headers["Authorization"] = f"Basic {self._userinfo}"
        self._headers = headers
        self.secrets = [*self._url_secrets, *secrets]
        if self._https:
            try:
                context = self._tls.context()
            except (OSError, ValueError, ssl.SSLError) as exc:
                raise TransientSinkError(
                    f"{self._what}: cannot load the TLS CA, certificate or key: {exc}"
                ) from exc
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout, context=context
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def post(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        """POST ``body``; ``(status, answer)`` for a 2xx, else raise a classified error."""
        if self._conn is None:
            self._conn = self._connect()
        all_headers = {"User-Agent": USER_AGENT, **self._headers, **headers}
        try:
            self._conn.request("POST", self._path, body=body, headers=all_headers)
            response = self._conn.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException) as exc:  # TimeoutError is an OSError
            self.close()
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise TransientSinkError(self._mask(f"{self._what} {self.target}: {detail}")) from exc
        if response.will_close:
            self.close()
        status = response.status
        if 200 <= status < 300:
            return status, answer
        text = " ".join(answer[:MAX_ERROR_BODY].decode("utf-8", "replace").split())
        message = self._mask(f"{self._what} {self.target}: HTTP {status} {response.reason}: {text}")
        if status in self._retry:
            raise TransientSinkError(message)
        raise RejectedError(message, status=status, body=text)

    def _mask(self, text: str) -> str:
        return redact_secret(text, self.secrets)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class RejectedError(PermanentSinkError):
    """The receiver answered a status that must not be retried (a 4xx other than 429)."""

    def __init__(self, message: str, *, status: int, body: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
