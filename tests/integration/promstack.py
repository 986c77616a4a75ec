"""Debian's prometheus, prometheus-node-exporter and our collector as real processes, each on a
free 127.0.0.1 port, stopped when the context ends; a small client of Prometheus' HTTP API."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers import EXE, clean_env, poll

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
NODE_EXPORTER = shutil.which("prometheus-node-exporter") or "/usr/bin/prometheus-node-exporter"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with NO_PROXY.open(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _answers(url: str, proc: subprocess.Popen[bytes], log: Path) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"{proc.args!r} exited {proc.returncode}: {log.read_text()[-2000:]}")
    try:
        return get(url, timeout=1.0)[0] == 200
    except OSError:
        return False


@contextlib.contextmanager
def process(
    args: Sequence[str], ready_url: str, log: Path, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``args`` (output to ``log``), wait until ``ready_url`` answers 200, stop at exit."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            list(args), stdout=out, stderr=subprocess.STDOUT, env=dict(env or os.environ)
        )
    try:
        poll(lambda: _answers(ready_url, proc, log), timeout=20, what=f"{args[0]} to answer")
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def node_exporter(tmp: Path, *args: str) -> Iterator[str]:
    """node_exporter on a free port: its ``host:port``."""
    address = f"127.0.0.1:{free_port()}"
    cmd = [NODE_EXPORTER, f"--web.listen-address={address}", *args]
    with process(cmd, f"http://{address}/metrics", tmp / "node_exporter.log"):
        yield address


@contextlib.contextmanager
def collector(tmp: Path, **env: str) -> Iterator[str]:
    """``system-info-collector run`` serving /metrics on a free port: its ``host:port``."""
    address = f"127.0.0.1:{free_port()}"
    variables = clean_env(
        SIC_HTTP_LISTEN=address, SIC_SINKS="csv", SIC_CSV_DIR=str(tmp / "csv"), **env
    )
    with process([EXE, "run"], f"http://{address}/healthz", tmp / "collector.log", variables):
        yield address


@dataclass
class Prometheus:
    url: str

    def query(self, expr: str, time: float | None = None) -> list[dict[str, Any]]:
        """An instant query's vector (``[{"metric": {...}, "value": [ts, "1.5"]}, …]``)."""
        params = {"query": expr, **({"time": str(time)} if time is not None else {})}
        status, body = get(f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}")
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", f"{expr}: {answer}"
        result = answer["data"]["result"]
        if answer["data"]["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return list(result)

    def values(self, expr: str, by: Sequence[str] = (), time: float | None = None) -> dict:
        """``{(label values of by…): value}`` of an instant query."""
        return {
            tuple(r["metric"].get(k, "") for k in by): float(r["value"][1])
            for r in self.query(expr, time)
        }

    def targets_up(self, jobs: Sequence[str]) -> bool:
        found = self.values("up", by=("job",))
        return all(found.get((job,)) == 1.0 for job in jobs)


@contextlib.contextmanager
def prometheus(
    tmp: Path,
    jobs: Mapping[str, str],
    *,
    rule_files: Sequence[Path] = (),
    interval: str = "1s",
    job_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> Iterator[Prometheus]:
    """Prometheus scraping each job's ``host:port`` every ``interval``, with ``rule_files``
    (``job_options``: more of a job's scrape config, e.g. scheme, tls_config, basic_auth)."""
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {
                "job_name": job,
                "static_configs": [{"targets": [address]}],
                **(job_options or {}).get(job, {}),
            }
            for job, address in jobs.items()
        ],
    }
    (tmp / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    address = f"127.0.0.1:{free_port()}"
    cmd = [
        PROMETHEUS,
        f"--config.file={tmp / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp / 'tsdb'}",
        f"--web.listen-address={address}",
        "--web.enable-lifecycle",
    ]
    with process(cmd, f"http://{address}/-/ready", tmp / "prometheus.log"):
        server = Prometheus(f"http://{address}")
        poll(lambda: server.targets_up(list(jobs)), timeout=15, what="every target up")
        yield server


def promtool(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *args], input=input, capture_output=True, text=True, timeout=60
    )
