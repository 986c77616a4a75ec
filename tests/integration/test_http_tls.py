"""TLS, mutual TLS and basic auth on /metrics, as node_exporter's web config offers them: the
real collector process, certificates made by the real ``openssl``, real handshakes, a real
Prometheus scraping it over HTTPS with basic auth, and the ``health`` command over HTTPS."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from tests.helpers import EXE, clean_env, poll
from tests.integration.pki import make_pki
from tests.integration.promstack import free_port, prometheus

PASSWORD = "s3cret-Pa55word"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1, a second one (rotation) and a client one."""
    d = make_pki(tmp_path_factory.mktemp("pki"))
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    # htpasswd -B writes $2y$: the same hash under the prefix Apache's tools use
    (d / "users").write_text(
        f"# scrapers\nprometheus:{hashed}\n\nother:{hashed.replace('$2b$', '$2y$', 1)}\n"
    )
    return d


def _context(pki: Path, client: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if client:
        ctx.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
    return ctx


def _get(
    port: int, path: str, ctx: ssl.SSLContext, user: str | None = None, password: str = PASSWORD
) -> tuple[int, dict[str, str], bytes, Any]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=ctx)
    headers = {}
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    try:
        conn.connect()
        assert isinstance(conn.sock, ssl.SSLSocket)
        peer = conn.sock.getpeercert()["subject"]
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read(), peer
    finally:
        conn.close()


@contextlib.contextmanager
def collector(
    tmp: Path, pki: Path, *, client_ca: bool = False, **env: str
) -> Iterator[tuple[int, subprocess.Popen[bytes], Path]]:
    port = free_port()
    settings = {
        "SIC_HTTP_LISTEN": f"127.0.0.1:{port}",
        "SIC_SINKS": "csv",
        "SIC_CSV_DIR": str(tmp / "csv"),
        "SIC_INTERVAL": "1s",
        "SIC_HTTP_TLS_CERT_FILE": str(tmp / "tls.crt"),
        "SIC_HTTP_TLS_KEY_FILE": str(tmp / "tls.key"),
        "SIC_HTTP_BASIC_AUTH_FILE": str(pki / "users"),
        **({"SIC_HTTP_TLS_CLIENT_CA_FILE": str(pki / "ca.crt")} if client_ca else {}),
        **env,
    }
    variables = clean_env(**settings)
    (tmp / "tls.crt").write_bytes((pki / "server.crt").read_bytes())
    (tmp / "tls.key").write_bytes((pki / "server.key").read_bytes())
    log = tmp / "collector.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([EXE, "run"], stdout=out, stderr=subprocess.STDOUT, env=variables)
    ctx = _context(pki, client=client_ca)

    def ready() -> bool:
        assert proc.poll() is None, log.read_text()[-2000:]
        try:
            return _get(port, "/healthz", ctx)[0] == 200
        except OSError:
            return False

    try:
        poll(ready, timeout=20, what="the collector's /healthz over HTTPS")
        yield port, proc, log
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)


def _health(tmp: Path, port: int, **env: str) -> subprocess.CompletedProcess[str]:
    """``system-info-collector health`` with the collector's TLS settings."""
    variables = clean_env(
        SIC_HTTP_LISTEN=f"127.0.0.1:{port}",
        SIC_HTTP_TLS_CERT_FILE=str(tmp / "tls.crt"),
        SIC_HTTP_TLS_KEY_FILE=str(tmp / "tls.key"),
        **env,
    )
    return subprocess.run(
        [EXE, "health"], env=variables, capture_output=True, text=True, timeout=30
    )


def test_metrics_over_https_ask_for_basic_auth_and_probes_do_not(tmp_path: Path, pki: Path) -> None:
    with collector(tmp_path, pki) as (port, _, log):
        ctx = _context(pki)
        status, _, body, peer = poll(
            lambda: (r := _get(port, "/metrics", ctx, "prometheus"))[2].count(b"node_cpu_") and r,
            what="the first sample on /metrics",
        )
        assert status == 200 and b"node_cpu_seconds_total" in body
        assert peer is not None and (("commonName", "collector-one"),) in peer
        assert _get(port, "/metrics", ctx, "other")[0] == 200  # the $2y$ hash
        for user, password in ((None, PASSWORD), ("prometheus", "wrong"), ("nobody", PASSWORD)):
            status, headers, body, _ = _get(port, "/metrics", ctx, user, password)
            assert status == 401, (user, password)
            assert headers["WWW-Authenticate"] == 'Basic realm="system-info-collector"'
            assert json.loads(body)["error"] == "authentication required (basic auth)"
        assert _get(port, "/healthz", ctx)[0] == 200  # kubelet probes hold no password
        assert _get(port, "/readyz", ctx)[0] in (200, 503)
        # plain HTTP on the TLS port: told to use HTTPS, and the server goes on serving
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            answer = raw.recv(4096)
        assert answer.startswith(b"HTTP/1.0 400 ") and b"use https://" in answer
        assert _get(port, "/metrics", ctx, "prometheus")[0] == 200
        # the health command speaks HTTPS to its own process
        health = _health(tmp_path, port, SIC_HTTP_BASIC_AUTH_FILE=str(pki / "users"))
        assert health.returncode == 0 and health.stdout.startswith("healthy"), health.stdout
    text = log.read_text()
    users = (pki / "users").read_text()
    assert PASSWORD not in text and "wrong" not in text
    assert all(line.split(":", 1)[1] not in text for line in users.splitlines() if ":" in line)
    started = [json.loads(line) for line in text.splitlines() if '"http_listening"' in line]
    assert started and started[0]["url"].startswith("https://") and started[0]["basic_auth"]


def test_a_client_guessing_passwords_is_throttled_and_scrapes_go_on(
    tmp_path: Path, pki: Path
) -> None:
    """Each new password costs a bcrypt check (cost 10 here: tens of ms of CPU). A client
    sending new ones gets 429 + Retry-After once the checks have spent their budget (a second
    of CPU at once, then 5 % of one core), while a scraper whose password was checked before
    is still answered 200; the WARNING names no password."""
    users = tmp_path / "users"
    users.write_text(
        f"prometheus:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()}\n"
    )
    with collector(tmp_path, pki, SIC_HTTP_BASIC_AUTH_FILE=str(users)) as (port, _, log):
        ctx = _context(pki)
        assert _get(port, "/metrics", ctx, "prometheus")[0] == 200  # checked once, remembered
        answers: list[tuple[int, dict[str, str]]] = []
        deadline = time.monotonic() + 60
        while not answers or answers[-1][0] != 429:
            assert time.monotonic() < deadline and len(answers) < 500, answers[-3:]
            status, headers, _, _ = _get(
                port, "/metrics", ctx, "prometheus", f"guess{len(answers)}"
            )
            answers.append((status, headers))
        assert {status for status, _ in answers[:-1]} == {401}  # checked, until the budget ran out
        assert len(answers) >= 3
        assert int(answers[-1][1]["Retry-After"]) >= 1
        assert _get(port, "/metrics", ctx, "prometheus")[0] == 200  # the scraper goes on
        assert _get(port, "/metrics", ctx, "prometheus", "guess0")[0] == 401  # remembered: no 429
    text = log.read_text()
    throttled = [json.loads(line) for line in text.splitlines() if '"http_auth_throttled"' in line]
    assert throttled and throttled[0]["level"] == "WARNING"
    assert PASSWORD not in text and "guess" not in text


def test_a_stalled_handshake_holds_only_its_own_connection(tmp_path: Path, pki: Path) -> None:
    with collector(tmp_path, pki, SIC_HTTP_BASIC_AUTH_FILE="") as (port, _, _):
        ctx = _context(pki)
        stalled = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(5)]
        try:
            started = time.monotonic()
            assert _get(port, "/metrics", ctx)[0] == 200  # no basic auth configured here
            assert time.monotonic() - started < 2.0
        finally:
            for s in stalled:
                s.close()


def test_mutual_tls_wants_a_client_certificate_the_ca_signed(tmp_path: Path, pki: Path) -> None:
    with collector(tmp_path, pki, client_ca=True) as (port, _, _):
        assert _get(port, "/metrics", _context(pki, client=True), "prometheus")[0] == 200
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _get(port, "/healthz", _context(pki))  # no client certificate: no handshake
        health = _health(tmp_path, port, SIC_HTTP_TLS_CLIENT_CA_FILE=str(pki / "ca.crt"))
        assert health.returncode == 0, health.stdout  # its own certificate, the same CA


def test_a_rotated_certificate_is_served_without_a_restart(tmp_path: Path, pki: Path) -> None:
    with collector(tmp_path, pki) as (port, proc, log):
        ctx = _context(pki)
        assert _get(port, "/healthz", ctx)[3] == ((("commonName", "collector-one"),),)
        # a broken pair first (key of one, certificate of the other): the old one stays
        (tmp_path / "tls.crt").write_bytes((pki / "server2.crt").read_bytes())
        # (the files are looked at when a connection comes, at most once a second)
        poll(
            lambda: _get(port, "/healthz", ctx) and "http_reload_failed" in log.read_text(),
            what="the failed reload logged",
        )
        assert _get(port, "/healthz", ctx)[3] == ((("commonName", "collector-one"),),)
        (tmp_path / "tls.key").write_bytes((pki / "server2.key").read_bytes())
        poll(
            lambda: _get(port, "/healthz", ctx)[3] == ((("commonName", "collector-two"),),),
            what="the new certificate served",
        )
        assert proc.poll() is None
        assert "PRIVATE KEY" not in log.read_text()


def test_prometheus_scrapes_over_https_with_basic_auth(tmp_path: Path, pki: Path) -> None:
    (tmp_path / "password").write_text(PASSWORD)
    options = {
        "scheme": "https",
        "tls_config": {"ca_file": str(pki / "ca.crt")},
        "basic_auth": {"username": "prometheus", "password_file": str(tmp_path / "password")},
    }
    with (
        collector(tmp_path, pki) as (port, _, _),
        prometheus(tmp_path, {"sic": f"127.0.0.1:{port}"}, job_options={"sic": options}) as prom,
    ):
        assert prom.values('count(node_cpu_seconds_total{job="sic"}) > 0')


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SIC_HTTP_TLS_CERT_FILE": "{pki}/server.crt"}, "go together: set both or neither"),
        (
            {
                "SIC_HTTP_TLS_CERT_FILE": "{pki}/server.crt",
                "SIC_HTTP_TLS_KEY_FILE": "{pki}/server2.key",
            },
            "cannot load the CA, certificate or key",
        ),
        ({"SIC_HTTP_TLS_CLIENT_CA_FILE": "{pki}/ca.crt"}, "SIC_HTTP_TLS_CLIENT_CA_FILE needs"),
        ({"SIC_HTTP_BASIC_AUTH_FILE": "{pki}/missing"}, "not a readable file"),
        (
            {"SIC_HTTP_BASIC_AUTH_FILE": "{tmp}/plain"},
            "line 1 (user 'prometheus'): not a bcrypt hash",
        ),
    ],
)
def test_bad_tls_and_auth_settings_are_configuration_errors(
    tmp_path: Path, pki: Path, env: dict[str, str], expected: str
) -> None:
    (tmp_path / "plain").write_text(f"prometheus:{PASSWORD}\n")
    variables = clean_env(
        SIC_SINKS="csv",
        SIC_CSV_DIR=str(tmp_path / "csv"),
        SIC_HTTP_LISTEN="127.0.0.1:0",
        **{k: v.format(pki=pki, tmp=tmp_path) for k, v in env.items()},
    )
    result = subprocess.run([EXE, "run"], env=variables, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    out = result.stdout + result.stderr
    assert expected in out
    assert PASSWORD not in out and "Traceback" not in out
