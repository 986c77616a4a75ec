"""TLS and basic auth for the HTTP endpoint, as node_exporter's ``--web.config.file`` offers them.

* :class:`TlsFiles`: ``SIC_HTTP_TLS_CERT_FILE`` + ``SIC_HTTP_TLS_KEY_FILE`` (PEM), optionally
  ``SIC_HTTP_TLS_CLIENT_CA_FILE`` (then a client must present a certificate that CA signed:
  mutual TLS). TLS 1.2 at least. The files are re-read when they change (cert-manager and
  Kubernetes secret updates rotate them in place): a new connection gets the new certificate;
  a change that does not load keeps the previous one, with an ERROR once.
* :class:`BasicAuth`: ``SIC_HTTP_BASIC_AUTH_FILE``, ``user:bcrypt-hash`` lines as
  ``htpasswd -nbB user password`` prints them (the hashes node_exporter's web config takes).
  A bcrypt check costs tens of ms by design, so the outcome of a check, right or wrong, is
  remembered (keyed by a salted SHA-256 of the password, never in clear) and the next scrape
  costs microseconds; an unknown user is checked against a dummy hash, so the answer time does
  not tell which users exist. Checks run one at a time (as exporter-toolkit's ``bcryptMtx``) and
  spend a budget of CPU time: at most :data:`CHECK_SHARE` of one core on average, with
  :data:`CHECK_BURST` seconds at once, so a client sending new passwords cannot burn the host's
  CPU; beyond it a request whose password is not remembered is answered 429 with
  ``Retry-After`` (:class:`~system_info_collector.httpserver.Throttled`), while remembered ones
  still pass. The file is re-read when it changes.

Neither the password nor the hashes ever reach a log line or an error message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import os
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from system_info_collector.httpserver import Throttled
from system_info_collector.logging import event

if TYPE_CHECKING:
    from system_info_collector.config import HttpSettings

T = TypeVar("T")

BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
REALM = "system-info-collector"
CHECK_SHARE = 0.05  # of one core, on average, that password checks may take
CHECK_BURST = 1.0  # CPU seconds of checks allowed at once (several scrapers after a start)
REMEMBERED = 1024  # check outcomes remembered, the least recently used forgotten first
WARN_EVERY = 60.0  # seconds between two http_auth_throttled WARNINGs (each counts the refusals)


def _stamp(path: str) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


class _Reloading(Generic[T]):
    """A value built from files, rebuilt when one of them changes (checked at most once a
    second); a rebuild that fails keeps the previous value and logs one ERROR until it works."""

    def __init__(self, what: str, paths: tuple[str, ...], build: Callable[[], T]) -> None:
        self._what = what
        self._paths = paths
        self._build = build
        self._lock = threading.Lock()
        self._stamps = self._read_stamps()
        self._value = build()  # at start a failure is the caller's (a configuration error)
        self._checked = _now()
        self._failing = False

    def _read_stamps(self) -> tuple[tuple[int, int, int, int] | None, ...]:
        stamps: list[tuple[int, int, int, int] | None] = []
        for path in self._paths:
            try:
                stamps.append(_stamp(path))
            except OSError:
                stamps.append(None)
        return tuple(stamps)

    def current(self) -> T:
        now = _now()
        with self._lock:
            if now - self._checked < 1.0:
                return self._value
            self._checked = now
            stamps = self._read_stamps()
            if stamps == self._stamps:
                return self._value
            try:
                value = self._build()
            except (OSError, ValueError, ssl.SSLError) as exc:
                if not self._failing:
                    self._failing = True
                    event(
                        "ERROR",
                        "http_reload_failed",
                        f"cannot reload the {self._what}; keeping the previous one",
                        files=list(self._paths),
                        error=f"{type(exc).__name__}: {exc}",
                    )
                return self._value
            self._value, self._stamps, self._failing = value, stamps, False
            event("INFO", "http_reloaded", f"{self._what} reloaded", files=list(self._paths))
            return self._value


def _now() -> float:
    return time.monotonic()


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert_file: str
    key_file: str
    client_ca_file: str | None = None

    def context(self) -> ssl.SSLContext:
        """A server context from the files (raises OSError, ssl.SSLError or ValueError)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert_file, self.key_file)
        if self.client_ca_file:
            ctx.load_verify_locations(cafile=self.client_ca_file)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def paths(self) -> tuple[str, ...]:
        return (self.cert_file, self.key_file) + (
            (self.client_ca_file,) if self.client_ca_file else ()
        )


class TlsContext:
    """The server's SSL context, rebuilt when the certificate, key or CA file changes."""

    def __init__(self, files: TlsFiles) -> None:
        self._reloading = _Reloading("TLS certificate", files.paths(), files.context)

    def __call__(self) -> ssl.SSLContext:
        return self._reloading.current()


def tls_files(http: HttpSettings) -> TlsFiles | None:
    """The endpoint's TLS files (``SIC_HTTP_TLS_*``), or None for plain HTTP."""
    if not (http.tls_cert_file and http.tls_key_file):
        return None
    return TlsFiles(http.tls_cert_file, http.tls_key_file, http.tls_client_ca_file)


def parse_users(text: str) -> dict[str, bytes]:
    """``user:bcrypt-hash`` lines (blank lines and ``#`` comments skipped) -> {user: hash}.
    Raises ValueError naming the line, never its hash."""
    users: dict[str, bytes] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user:
            raise ValueError(f"line {number}: expected user:bcrypt-hash")
        if not hashed.startswith(BCRYPT_PREFIXES) or len(hashed) != 60:
            raise ValueError(
                f"line {number} (user {user!r}): not a bcrypt hash (htpasswd -nbB user password)"
            )
        if user in users:
            raise ValueError(f"line {number}: user {user!r} twice")
        users[user] = hashed.encode("ascii")
    if not users:
        raise ValueError("no user:bcrypt-hash line")
    return users


def read_users(path: str) -> dict[str, bytes]:
    with open(path, encoding="utf-8") as f:
        return parse_users(f.read())


class BasicAuth:
    """Checks ``Authorization: Basic …`` against the users file.

    ``clock`` refills the checking budget (monotonic seconds); what a check spends is the CPU
    time of the thread that ran it."""

    def __init__(
        self,
        path: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        share: float = CHECK_SHARE,
        burst: float = CHECK_BURST,
    ) -> None:
        import bcrypt  # only where basic auth is configured (+0.7 MB)

        self._bcrypt = bcrypt
        self._users = _Reloading("basic auth users", (path,), lambda: read_users(path))
        self._salt = os.urandom(16)
        self._dummy = bcrypt.hashpw(os.urandom(12), bcrypt.gensalt(10))
        # (user, hash, salted digest of the password) -> did it match
        self._outcomes: OrderedDict[tuple[str, bytes, bytes], bool] = OrderedDict()
        self._lock = threading.Lock()
        self._checking = threading.Lock()  # one bcrypt check at a time
        self._clock, self._share, self._burst = clock, share, burst
        self._budget, self._refilled = burst, clock()
        self._warned: float | None = None  # when http_auth_throttled was last logged
        self._refused = 0  # requests refused since then

    def _digest(self, password: bytes) -> bytes:
        return hashlib.sha256(self._salt + password).digest()

    def user(self, authorization: str | None) -> str | None:
        """The user an ``Authorization`` header authenticates, or None. Raises
        :class:`Throttled` when the password is not remembered and the budget is spent."""
        if not authorization:
            return None
        scheme, _, encoded = authorization.strip().partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        name_bytes, sep, password = decoded.partition(b":")
        if not sep:
            return None
        name = name_bytes.decode("utf-8", "replace")
        hashed = self._users.current().get(name)
        key = (name, hashed or self._dummy, self._digest(password))
        with self._lock:
            matched = self._outcomes.get(key)
            if matched is not None:
                self._outcomes.move_to_end(key)
        if matched is None:
            # an unknown user is checked against the dummy: the same time as a known one
            matched = self._check(password, key[1]) and hashed is not None
            with self._lock:
                self._outcomes[key] = matched
                if len(self._outcomes) > REMEMBERED:
                    self._outcomes.popitem(last=False)
        return name if matched else None

    def _check(self, password: bytes, hashed: bytes) -> bool:
        with self._checking:
            now = self._clock()
            self._budget = min(self._burst, self._budget + (now - self._refilled) * self._share)
            self._refilled = now
            if self._budget <= 0:
                retry_after = max(1, math.ceil(-self._budget / self._share))
                self._refused += 1
                if self._warned is None or now - self._warned >= WARN_EVERY:
                    event(
                        "WARNING",
                        "http_auth_throttled",
                        "too many new passwords to check: answering 429 until the checking "
                        "budget refills (remembered passwords still pass)",
                        refused=self._refused,
                        share_of_one_core=self._share,
                        retry_after_seconds=retry_after,
                    )
                    self._warned, self._refused = now, 0
                raise Throttled(retry_after)
            began = time.thread_time()
            try:
                return bool(self._bcrypt.checkpw(password, hashed))
            finally:
                self._budget -= time.thread_time() - began
