"""Real remote-write receivers started by the tests: Debian's ``prometheus`` (with
``--web.enable-remote-write-receiver``) and ``victoria-metrics``, each on a free 127.0.0.1 port
in a temporary directory, and stopped (and waited for) at the end of the test."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.helpers import poll

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
VICTORIA = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 5.0, headers: dict[str, str] | None = None) -> bytes:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return bytes(response.read())


def _answers(url: str) -> bool:
    try:
        _get(url, timeout=1.0)
    except urllib.error.HTTPError:
        return True  # it answers (e.g. 401 when it wants credentials)
    except OSError:
        return False
    return True


class Receiver:
    """One receiver process; ``write_url`` takes remote write, ``samples`` reads it back."""

    kind: str
    rel_tol = 0.0  # how exactly a stored float matches what was sent

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"{self.kind}.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def write_url(self) -> str:
        return f"{self.base}/api/v1/write"

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready_url(self) -> str:
        raise NotImplementedError

    def start(self) -> Receiver:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        proc = self.proc
        poll(
            lambda: proc.poll() is not None or _answers(self.ready_url()),
            timeout=30,
            what=f"{self.kind} to answer",
        )
        assert proc.poll() is None, self.log.read_text()[-2000:]
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def series(self, match: str) -> list[dict[str, Any]]:
        """Every stored sample of the series matching ``match``: ``[{metric, values}]`` with
        ``values`` a list of ``(timestamp_ms, value)`` -- raw samples, duplicates included."""
        raise NotImplementedError


class PrometheusReceiver(Receiver):
    kind = "prometheus"

    def command(self) -> list[str]:
        config = self.workdir / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1h\n")
        return [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-remote-write-receiver",
            "--log.level=warn",
        ]

    def ready_url(self) -> str:
        return f"{self.base}/-/ready"

    def series(self, match: str) -> list[dict[str, Any]]:
        # A range selector at "now" returns the raw samples of the last hour.
        query = urllib.parse.urlencode({"query": f"{match}[1h]"})
        body = json.loads(_get(f"{self.base}/api/v1/query?{query}"))
        assert body["status"] == "success", body
        return [
            {
                "metric": r["metric"],
                "values": [(round(float(t) * 1000), float(v)) for t, v in r["values"]],
            }
            for r in body["data"]["result"]
        ]


class VictoriaReceiver(Receiver):
    kind = "victoria-metrics"
    rel_tol = 1e-11  # VictoriaMetrics keeps 12 significant decimal digits of a float

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        dedup: bool = False,
        basic_auth: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(workdir, port)
        self.dedup = dedup
        self.basic_auth = basic_auth
        self._headers: dict[str, str] = {}
        if basic_auth:
            pair = base64.b64encode(":".join(basic_auth).encode()).decode()
            self._headers["Authorization"] = f"Basic {pair}"

    def command(self) -> list[str]:
        command = [
            VICTORIA,
            f"-storageDataPath={self.workdir / 'vmdata'}",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            "-loggerLevel=WARN",
        ]
        if self.dedup:
            command.append("-dedup.minScrapeInterval=1ms")
        if self.basic_auth:
            user, password = self.basic_auth
            command += [f"-httpAuth.username={user}", f"-httpAuth.password={password}"]
        return command

    def ready_url(self) -> str:
        return f"{self.base}/health"

    def series(self, match: str) -> list[dict[str, Any]]:
        # make just-ingested samples searchable
        _get(f"{self.base}/internal/force_flush", headers=self._headers)
        query = urllib.parse.urlencode({"match[]": match, "start": "-1h"})
        out = []
        for line in _get(f"{self.base}/api/v1/export?{query}", headers=self._headers).splitlines():
            item = json.loads(line)
            out.append(
                {
                    "metric": item["metric"],
                    "values": list(zip(item["timestamps"], item["values"], strict=True)),
                }
            )
        return out


def skip_without(binary: str) -> None:
    if not Path(binary).exists():
        pytest.skip(f"{binary} is not installed (.ci/bootstrap.sh installs it)")


R = TypeVar("R", bound=Receiver)


def _running(kind: type[R], binary: str, workdir: Path) -> Iterator[R]:
    skip_without(binary)
    workdir.mkdir()
    receiver = kind(workdir)
    yield receiver
    receiver.stop()


@pytest.fixture
def prometheus_receiver(tmp_path: Path) -> Iterator[PrometheusReceiver]:
    yield from _running(PrometheusReceiver, PROMETHEUS, tmp_path / "prometheus")


@pytest.fixture
def victoria_receiver(tmp_path: Path) -> Iterator[VictoriaReceiver]:
    yield from _running(VictoriaReceiver, VICTORIA, tmp_path / "victoria")
