"""The push sinks over HTTPS with a private CA and a client certificate: a real Prometheus
receiving remote write behind its own ``--web.config.file`` (TLS, client certificates required),
the real collector process pushing to it."""

from __future__ import annotations

import contextlib
import json
import signal
import ssl
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import EXE, clean_env, poll
from tests.integration.pki import make_pki
from tests.integration.receivers import PROMETHEUS, free_port


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _context(pki: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
    return ctx


def _opener(ctx: ssl.SSLContext) -> urllib.request.OpenerDirector:
    """No proxies, our CA and client certificate."""
    return urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx)
    )


def _query(base: str, ctx: ssl.SSLContext, expr: str) -> list[dict[str, object]]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with _opener(ctx).open(url, timeout=5) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return list(body["data"]["result"])


@contextlib.contextmanager
def tls_receiver(tmp: Path, pki: Path) -> Iterator[str]:
    """Prometheus with the remote-write receiver, HTTPS only, client certificates required."""
    port = free_port()
    web = {
        "tls_server_config": {
            "cert_file": str(pki / "server.crt"),
            "key_file": str(pki / "server.key"),
            "client_auth_type": "RequireAndVerifyClientCert",
            "client_ca_file": str(pki / "ca.crt"),
        }
    }
    (tmp / "web.yml").write_text(json.dumps(web))  # JSON is YAML
    (tmp / "prometheus.yml").write_text("{}")
    cmd = [
        PROMETHEUS,
        f"--config.file={tmp / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--web.config.file={tmp / 'web.yml'}",
        "--web.enable-remote-write-receiver",
        "--log.level=warn",
    ]
    base = f"https://127.0.0.1:{port}"
    ctx = _context(pki)
    with open(tmp / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

    def ready() -> bool:
        assert proc.poll() is None, (tmp / "prometheus.log").read_text()[-2000:]
        try:
            with _opener(ctx).open(f"{base}/-/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    try:
        poll(ready, timeout=30, what="Prometheus over HTTPS")
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


@contextlib.contextmanager
def pushing(tmp: Path, base: str, **tls: str) -> Iterator[Path]:
    env = clean_env(
        SIC_SINKS="csv,remote_write",
        SIC_CSV_DIR=str(tmp / "csv"),
        SIC_HTTP_LISTEN="",
        SIC_INTERVAL="1s",
        SIC_COLLECTORS="cpu,memory",
        SIC_RETRY_MAX_WAIT="1s",
        SIC_REMOTE_WRITE_URL=f"{base}/api/v1/write",
        **tls,
    )
    tmp.mkdir(parents=True, exist_ok=True)
    log = tmp / "collector.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([EXE, "run"], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield log
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def test_remote_write_with_a_private_ca_and_a_client_certificate(tmp_path: Path, pki: Path) -> None:
    with tls_receiver(tmp_path, pki) as base:
        ctx = _context(pki)
        # no client certificate: the receiver refuses the handshake; the sink retries, CSV goes on
        with pushing(
            tmp_path / "no-cert", base, SIC_REMOTE_WRITE_TLS_CA_FILE=str(pki / "ca.crt")
        ) as log:
            poll(lambda: '"sink_write_failed"' in log.read_text(), timeout=30, what="a failed push")
            poll(lambda: (tmp_path / "no-cert" / "csv" / "cpu.csv").exists(), what="CSV rows")
        failed = [json.loads(x) for x in log.read_text().splitlines() if '"sink_write_failed"' in x]
        assert failed[0]["sink"] == "remote_write"
        assert "SSL" in failed[0]["error"] or "certificate" in failed[0]["error"]
        assert not _query(base, ctx, "node_memory_MemTotal_bytes")
        # the system's CAs do not know ours: refused too (the default verifies)
        with pushing(tmp_path / "no-ca", base) as log:
            poll(lambda: '"sink_write_failed"' in log.read_text(), timeout=30, what="a failed push")
        assert "CERTIFICATE_VERIFY_FAILED" in log.read_text()
        # CA, certificate and key: the samples arrive
        tls = {
            "SIC_REMOTE_WRITE_TLS_CA_FILE": str(pki / "ca.crt"),
            "SIC_REMOTE_WRITE_TLS_CERT_FILE": str(pki / "client.crt"),
            "SIC_REMOTE_WRITE_TLS_KEY_FILE": str(pki / "client.key"),
        }
        with pushing(tmp_path / "mutual", base, **tls) as log:
            poll(
                lambda: _query(base, ctx, "node_memory_MemTotal_bytes"),
                timeout=30,
                what="samples pushed over mutual TLS",
            )
        assert "PRIVATE KEY" not in log.read_text()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"SIC_REMOTE_WRITE_TLS_CERT_FILE": "{pki}/client.crt"},
            "go together: set both or neither",
        ),
        (
            {
                "SIC_OTLP_TLS_CERT_FILE": "{pki}/client.crt",
                "SIC_OTLP_TLS_KEY_FILE": "{pki}/server.key",
            },
            "SIC_OTLP_TLS_KEY_FILE: cannot load the CA, certificate or key",
        ),
        ({"SIC_OTLP_TLS_CA_FILE": "{pki}/missing.crt"}, "not a readable file"),
        ({"SIC_REMOTE_WRITE_TLS_INSECURE_SKIP_VERIFY": "yes"}, "expected one of false, true"),
    ],
)
def test_bad_client_tls_settings_are_configuration_errors(
    tmp_path: Path, pki: Path, env: dict[str, str], expected: str
) -> None:
    variables = clean_env(
        SIC_SINKS="csv",
        SIC_CSV_DIR=str(tmp_path / "csv"),
        SIC_HTTP_LISTEN="",
        **{k: v.format(pki=pki) for k, v in env.items()},
    )
    result = subprocess.run([EXE, "run"], env=variables, capture_output=True, text=True, timeout=30)
    out = result.stdout + result.stderr
    assert result.returncode == 2 and expected in out, out
    assert "Traceback" not in out and "PRIVATE KEY" not in out
