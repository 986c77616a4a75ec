"""A real PostgreSQL server for the integration tests, a TCP fault proxy, a collector runner.

The server, in this order:

1. ``SIC_TEST_DSN`` if set (a server the tests may not stop: the stop/restart tests skip);
2. testcontainers' PostgreSQL module when a Docker engine answers (image
   ``SIC_TEST_POSTGRES_IMAGE``, default the official ``postgres:16-alpine``; on a machine
   without a registry, ``.ci/bootstrap.sh`` builds ``local/postgres:15`` from
   ``tests/docker/postgres``);
3. a throwaway cluster from the local server binaries (``initdb``/``pg_ctl`` in a temporary
   directory on a free port, as the unprivileged user ``nobody`` when running as root).

When none is available the tests skip with the reason (a failure under ``CI=true``).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# testcontainers reads these at import time; .ci/run sets them too.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")

from tests.helpers import EXE, clean_env, poll
from tests.integration.faultproxy import FaultProxy

USER, PASSWORD, DBNAME = "sic", "s3cret-test-pw", "sic"
DEFAULT_IMAGE = "postgres:16-alpine"


def _wait_ready(dsn: str, timeout: float = 30.0) -> None:
    import psycopg

    def ok() -> bool:
        try:
            with psycopg.connect(dsn, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    poll(ok, timeout=timeout, interval=0.1, what="PostgreSQL to accept connections")


@dataclass
class PgServer:
    """The server under test; ``stop``/``start`` (and ``pause``/``unpause`` with Docker)."""

    kind: str  # "dsn", "docker" or "local"
    host: str
    port: int
    user: str = USER
    password: str = PASSWORD
    dbname: str = DBNAME
    container: Any = None  # testcontainers PostgresContainer
    datadir: str = ""
    run_as: str | None = None
    log: str = ""
    _bin: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def dsn(self, host: str | None = None, port: int | None = None, **params: str) -> str:
        parts = {
            "host": host or self.host,
            "port": str(port or self.port),
            "user": self.user,
            "password": self.password,
            "dbname": self.dbname,
            **params,
        }
        return " ".join(f"{k}={v}" for k, v in parts.items())

    @property
    def can_stop(self) -> bool:
        return self.kind in ("docker", "local")

    def _wrapped(self) -> Any:
        return self.container.get_wrapped_container()

    def stop(self) -> None:
        if self.kind == "docker":
            self._wrapped().stop(timeout=5)
        elif self.kind == "local":
            self._pg_ctl("stop", "-m", "fast", "-w")
        else:
            pytest.skip("the SIC_TEST_DSN server cannot be stopped by the tests")

    def start(self) -> None:
        if self.kind == "docker":
            self._wrapped().start()
        elif self.kind == "local":
            self._pg_ctl("start", "-w", "-l", self.log, "-o", self.extra["options"])
        self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        if self.kind == "docker":
            wrapped = self._wrapped()
            wrapped.reload()
            self.port = int(wrapped.attrs["NetworkSettings"]["Ports"]["5432/tcp"][0]["HostPort"])
        _wait_ready(self.dsn(), timeout)

    def pause(self) -> None:
        self._wrapped().pause()

    def unpause(self) -> None:
        self._wrapped().unpause()

    def running(self) -> bool:
        if self.kind == "docker":
            wrapped = self._wrapped()
            wrapped.reload()
            return bool(wrapped.status == "running")
        if self.kind == "local":
            return os.path.exists(os.path.join(self.datadir, "postmaster.pid"))
        return True

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [os.path.join(self._bin, "pg_ctl"), "-D", self.datadir, *args],
            check=True,
            capture_output=True,
            user=self.run_as,
            timeout=60,
        )


def _docker_reason() -> str | None:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://"):  # check the socket first: a failed client leaks one
        path = host[len("unix://") :]
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.settimeout(2)
                probe.connect(path)
        except OSError as exc:
            return f"no Docker engine at {path} ({exc.strerror or exc})"
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return f"no Docker engine ({type(exc).__name__}: {exc})"
    return None


def _start_docker() -> PgServer:
    from testcontainers.community.postgres import PostgresContainer

    image = os.environ.get("SIC_TEST_POSTGRES_IMAGE", DEFAULT_IMAGE)
    container = PostgresContainer(
        image, username=USER, password=PASSWORD, dbname=DBNAME, driver=None
    )
    container.start()
    host = container.get_container_host_ip()
    port = int(container.get_exposed_port(5432))
    server = PgServer("docker", host, port, container=container)
    _wait_ready(server.dsn())
    return server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _local_bin() -> str | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(candidate, "initdb")):
            return candidate
    found = shutil.which("initdb")
    return os.path.dirname(found) if found else None


def _start_local(bindir: str) -> PgServer:
    run_as = "nobody" if os.geteuid() == 0 else None
    base = tempfile.mkdtemp(prefix="sic-pg-")
    datadir = os.path.join(base, "data")
    pwfile = os.path.join(base, "pw")
    Path(pwfile).write_text(PASSWORD + "\n")
    if run_as:
        entry = pwd.getpwnam(run_as)
        for path in (base, pwfile):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    subprocess.run(
        [
            os.path.join(bindir, "initdb"),
            "-D",
            datadir,
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
        ],
        check=True,
        capture_output=True,
        user=run_as,
        timeout=120,
    )
    port = _free_port()
    options = (
        f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={base} -c fsync=off"
    )
    server = PgServer(
        "local",
        "127.0.0.1",
        port,
        datadir=datadir,
        run_as=run_as,
        log=os.path.join(base, "server.log"),
        _bin=bindir,
        extra={"options": options, "base": base},
    )
    server._pg_ctl("start", "-w", "-l", server.log, "-o", options)
    import psycopg

    with psycopg.connect(server.dsn(dbname="postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {DBNAME}")
    return server


def start_server() -> tuple[PgServer | None, list[str]]:
    """A server by the rules of the module docstring (2. then 3.), or the reasons for none."""
    reasons: list[str] = []
    docker_problem = _docker_reason()
    if docker_problem is None:
        try:
            return _start_docker(), reasons
        except Exception as exc:
            reasons.append(f"testcontainers failed ({type(exc).__name__}: {exc})")
    else:
        reasons.append(docker_problem)
    bindir = _local_bin()
    if bindir is None:
        reasons.append("no local PostgreSQL server binaries (initdb)")
        return None, reasons
    try:
        return _start_local(bindir), reasons
    except Exception as exc:
        reasons.append(f"local cluster failed ({type(exc).__name__}: {exc})")
    return None, reasons


def stop_server(server: PgServer) -> None:
    if server.kind == "docker":
        with contextlib.suppress(Exception):
            server.container.stop()
    elif server.kind == "local":
        with contextlib.suppress(Exception):
            server._pg_ctl("stop", "-m", "immediate", "-w")
        shutil.rmtree(server.extra["base"], ignore_errors=True)


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    dsn = os.environ.get("SIC_TEST_DSN")
    if dsn:
        from psycopg.conninfo import conninfo_to_dict

        p = conninfo_to_dict(dsn)
        yield PgServer(
            "dsn",
            str(p.get("host", "localhost")),
            int(str(p.get("port", 5432))),
            user=str(p.get("user", "")),
            password=str(p.get("password", "")),
            dbname=str(p.get("dbname", "")),
        )
        return
    server, reasons = start_server()
    if server is None:
        pytest.skip("no PostgreSQL server: " + "; ".join(reasons))
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def pg_up(pg: PgServer) -> Iterator[PgServer]:
    """The server, guaranteed running (and unpaused) before and after the test."""
    _ensure_running(pg)
    yield pg
    _ensure_running(pg)


def _ensure_running(pg: PgServer) -> None:
    if pg.kind == "docker":
        wrapped = pg._wrapped()
        wrapped.reload()
        if wrapped.status == "paused":
            wrapped.unpause()
        elif wrapped.status != "running":
            pg.start()
    elif pg.kind == "local" and not pg.running():
        pg.start()


@pytest.fixture
def db_schema(pg_up: PgServer) -> Iterator[str]:
    """A fresh schema name for this test (dropped afterwards)."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:10]}"
    yield name
    with contextlib.suppress(psycopg.Error), psycopg.connect(pg_up.dsn(), autocommit=True) as c:
        c.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def other_schema(pg_up: PgServer) -> Iterator[str]:
    """A second fresh schema (replays into another schema than the sink's)."""
    import psycopg

    name = f"o_{uuid.uuid4().hex[:10]}"
    yield name
    with contextlib.suppress(psycopg.Error), psycopg.connect(pg_up.dsn(), autocommit=True) as c:
        c.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def query(pg_up: PgServer) -> Callable[..., list[tuple[Any, ...]]]:
    import psycopg

    def run(statement: str, *params: object) -> list[tuple[Any, ...]]:
        with psycopg.connect(pg_up.dsn(), autocommit=True) as conn:
            cur = conn.execute(statement, params or None)
            return cur.fetchall() if cur.description else []

    return run


@pytest.fixture
def proxy(pg_up: PgServer) -> Iterator[FaultProxy]:
    p = FaultProxy(pg_up.address)
    yield p
    p.close()


# -- the collector as a real process --------------------------------------------------------
class Collector:
    """``system-info-collector run`` in a subprocess; stdout/stderr collected by threads."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.proc = subprocess.Popen(
            [EXE, "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self._threads = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr), daemon=True),
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        with stream:
            for line in stream:
                into.append(line)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        found = []
        for line in list(self.stderr):
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if name is None or item.get("event") == name:
                found.append(item)
        return found

    def records(self) -> list[dict[str, Any]]:
        out = []
        for line in list(self.stdout):
            if not line.endswith("\n"):
                continue  # torn by kill -9
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def wait_records(self, more_than: int, timeout: float = 10.0) -> int:
        return poll(
            lambda: len(self.stdout) if len(self.stdout) > more_than else None,
            timeout=timeout,
            what=f"more than {more_than} stdout records",
        )

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        for t in self._threads:
            t.join(5)
        return rc

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        for t in self._threads:
            t.join(5)


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Callable[..., Collector]]:
    started: list[Collector] = []

    def start(dsn: str, schema: str, **overrides: str) -> Collector:
        env = clean_env(
            SIC_SINKS="stdout,postgres",
            SIC_COLLECTORS="cpu,memory",
            SIC_INTERVAL="100ms",
            SIC_DB_DSN=dsn,
            SIC_DB_SCHEMA=schema,
            SIC_DB_SPOOL_DIR=str(tmp_path / "spool"),
            SIC_DB_FLUSH_INTERVAL="100ms",
            SIC_DB_CONNECT_TIMEOUT="1s",
            SIC_DB_STATEMENT_TIMEOUT="1s",
            SIC_RETRY_INITIAL="50ms",
            SIC_RETRY_MAX_WAIT="300ms",
            SIC_RETRY_MAX="3",
            SIC_SHUTDOWN_TIMEOUT="10s",
            SIC_CSV_DIR=str(tmp_path / "csv"),
            SIC_LOG_LEVEL="info",
        )
        env.update(overrides)
        c = Collector(env)
        started.append(c)
        return c

    yield start
    for c in started:
        if c.proc.poll() is None:
            c.kill9()


# -- PgBouncer in front of the server --------------------------------------------------------
PGBOUNCER = os.environ.get("SIC_TEST_PGBOUNCER", "/usr/sbin/pgbouncer")


@dataclass
class Bouncer:
    """A real ``pgbouncer`` (transaction pooling, otherwise its default settings) in front of
    ``server`` on a free 127.0.0.1 port, started by the test and stopped after it."""

    server: PgServer
    pool_size: int
    base: str
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    run_as: str | None = None
    max_client_conn: int = 100  # PgBouncer's default

    @property
    def ini(self) -> str:
        return os.path.join(self.base, "pgbouncer.ini")

    @property
    def log(self) -> str:
        return os.path.join(self.base, "pgbouncer.log")

    def dsn(self, **params: str) -> str:
        return self.server.dsn(host="127.0.0.1", port=self.port, **params)

    def _write_config(self) -> None:
        s = self.server
        Path(self.ini).write_text(
            "[databases]\n"
            f"{s.dbname} = host={s.host} port={s.port} dbname={s.dbname}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = scram-sha-256\n"
            f"auth_file = {self.base}/userlist.txt\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {self.pool_size}\n"
            f"max_client_conn = {self.max_client_conn}\n"
            "server_login_retry = 1\n"  # the default 15 s would slow the restart test only
            f"logfile = {self.log}\n"
        )
        Path(self.base, "userlist.txt").write_text(f'"{s.user}" "{s.password}"\n')
        if self.run_as:
            entry = pwd.getpwnam(self.run_as)
            for path in (self.base, self.ini, os.path.join(self.base, "userlist.txt")):
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self) -> None:
        self.port = _free_port()
        self._write_config()
        self.proc = subprocess.Popen(
            [PGBOUNCER, self.ini],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=self.run_as,
        )
        _wait_ready(self.dsn(), timeout=15)

    def retarget(self) -> None:
        """After a server restart (Docker may give it a new port): rewrite and reload."""
        self._write_config()
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def bouncer(pg_up: PgServer) -> Iterator[Callable[..., Bouncer]]:
    """``bouncer(pool_size=2)``: a started :class:`Bouncer` in front of the test server."""
    if not os.access(PGBOUNCER, os.X_OK):
        pytest.skip(f"no pgbouncer at {PGBOUNCER} (Debian package pgbouncer)")
    started: list[Bouncer] = []

    def start(pool_size: int = 2) -> Bouncer:
        run_as = "nobody" if os.geteuid() == 0 else None  # pgbouncer refuses to run as root
        b = Bouncer(pg_up, pool_size, tempfile.mkdtemp(prefix="sic-pgb-"), run_as=run_as)
        started.append(b)
        b.start()
        return b

    yield start
    for b in started:
        b.stop()
