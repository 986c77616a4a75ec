"""Connections (PgBouncer-safe), the watchdog that cuts a black-holed socket, and the runner of
one simple query (:func:`run_script`) every write goes through."""

from __future__ import annotations

import contextlib
import math
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

from system_info_collector.config import PostgresSettings

APPLICATION_NAME = "system-info-collector"
WATCHDOG_GRACE = 1.0  # seconds past statement_timeout before the client cuts the socket


def read_password(settings: PostgresSettings) -> str | None:
    if not settings.password_file:
        return None
    with open(settings.password_file, encoding="utf-8") as handle:
        return handle.read().rstrip("\r\n")


def dsn_secrets(settings: PostgresSettings, password: str | None) -> list[str]:
    """Literal strings no message may show: the password (file or DSN), or, when the DSN does
    not even parse (libpq then quotes pieces of it back), the whole DSN."""
    secrets = [password] if password else []
    try:
        from_dsn = conninfo_to_dict(settings.dsn or "").get("password")
    except psycopg.Error:
        if settings.dsn:
            secrets.append(settings.dsn)
            secrets.extend(part for part in settings.dsn.split() if len(part) >= 4)
    else:
        if from_dsn:
            secrets.append(str(from_dsn))
    return secrets


def connect_kwargs(settings: PostgresSettings, password: str | None) -> dict[str, Any]:
    """libpq parameters: ours merged into the DSN (``PG*`` variables fill what is missing)."""
    params = conninfo_to_dict(settings.dsn or "")
    # No startup ``options`` (PgBouncer refuses them): timeouts are SET LOCAL in every
    # transaction (:func:`local_settings`).
    params["application_name"] = APPLICATION_NAME
    params["connect_timeout"] = str(max(1, math.ceil(settings.connect_timeout)))
    params.setdefault("keepalives", "1")
    params.setdefault("keepalives_idle", "10")
    params.setdefault("keepalives_interval", "5")
    params.setdefault("keepalives_count", "3")
    params.setdefault("tcp_user_timeout", str(int((settings.statement_timeout + 5) * 1000)))
    if password is not None:
        params["password"] = password
    return params


def connect(settings: PostgresSettings, password: str | None = None) -> psycopg.Connection[Any]:
    """An autocommit connection (transactions are explicit); raises psycopg errors.

    Safe behind PgBouncer in transaction mode: no server-side prepared statements
    (``prepare_threshold=None``), no session state (every setting is ``SET LOCAL``).
    """
    if password is None:
        password = read_password(settings)
    return psycopg.connect(
        autocommit=True, prepare_threshold=None, **connect_kwargs(settings, password)
    )


def describe(conn: psycopg.Connection[Any]) -> str:
    info = conn.info
    where = info.host if info.host.startswith("/") else f"{info.host}:{info.port}"
    return f"{where}/{info.dbname} as {info.user}"


def abort_socket(conn: psycopg.Connection[Any]) -> None:
    """Shut the connection's socket down from another thread: the blocked call fails at once."""
    with contextlib.suppress(Exception):
        fd = conn.pgconn.socket
        sock = socket.socket(fileno=os.dup(fd))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


class Watchdog:
    """One daemon thread that runs an action if a guarded block outlives its deadline."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._action: Callable[[], None] | None = None
        self._thread: threading.Thread | None = None
        self.fired = False

    @contextlib.contextmanager
    def guard(self, seconds: float, action: Callable[[], None]) -> Iterator[None]:
        with self._cond:
            self._deadline = time.monotonic() + seconds
            self._action = action
            self.fired = False
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pg-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._deadline = None
                self._action = None

    def _run(self) -> None:
        with self._cond:
            while True:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                action, self._action, self._deadline = self._action, None, None
                if action is not None:
                    self.fired = True
                    action()


# -- one transaction, one simple query ------------------------------------------------------
COPY_CHUNK = 1 << 18


def _wait(fd: int, events: int) -> None:
    """Block (GIL released) until the socket is ready; the watchdog's shutdown wakes it."""
    poller = select.poll()
    poller.register(fd, events)
    while not poller.poll():
        pass


def _result(pgconn: Any, fd: int) -> Any:
    """The next result of the running query (None: the query is done)."""
    while pgconn.is_busy():
        _wait(fd, select.POLLIN)
        pgconn.consume_input()
    return pgconn.get_result()


def _flush(pgconn: Any, fd: int) -> None:
    while pgconn.flush():
        _wait(fd, select.POLLIN | select.POLLOUT)
        pgconn.consume_input()


def run_script(conn: psycopg.Connection[Any], query: bytes, data: bytes = b"") -> list[int]:
    """Run ``query`` -- several statements sent as one simple query, so the server runs them
    as ONE implicit transaction (rolled back as a whole on any error) -- streaming ``data``
    into its ``COPY … FROM STDIN`` if it has one. Returns the rows each statement affected.

    One round trip for an INSERT script, two with a COPY, where psycopg's ``BEGIN``,
    ``execute()``…, ``COMMIT`` take four or more. Raises the server's error (the connection is
    then ready for the next query); on any other failure the connection is closed (its
    protocol state is unknown).
    """
    pgconn = conn.pgconn
    error: Any = None
    counts: list[int] = []
    try:
        fd = pgconn.socket
        pgconn.send_query(query)
        _flush(pgconn, fd)
        result = _result(pgconn, fd)
        while result is not None:
            if result.status == pq.ExecStatus.COPY_IN:
                view = memoryview(data)
                for start in range(0, len(view), COPY_CHUNK):
                    while not pgconn.put_copy_data(view[start : start + COPY_CHUNK]):
                        _wait(fd, select.POLLOUT)
                while not pgconn.put_copy_end(None):
                    _wait(fd, select.POLLOUT)
                _flush(pgconn, fd)
            elif result.status == pq.ExecStatus.FATAL_ERROR:
                error = error or result
            elif result.status in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
                tuples = result.command_tuples
                counts.append(tuples if tuples is not None else 0)
            else:
                raise psycopg.OperationalError(f"unexpected result {result.status!r}")
            result = _result(pgconn, fd)
    except BaseException:
        with contextlib.suppress(Exception):
            conn.close()
        raise
    if error is not None:
        raise psycopg.errors.error_from_result(error, encoding=conn.info.encoding)
    return counts
